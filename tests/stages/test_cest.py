"""CEST stage and ``tumorscope fit cest`` on small Bloch–McConnell series with sidecars."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tumorscope.cli import app
from tumorscope.errors import DataError, ProtocolError
from tumorscope.io.bids import protocol_from_sidecar
from tumorscope.models.cest import simulate_z
from tumorscope.models.cest.bloch import BMSystem, ExchangePool, MTPool
from tumorscope.stages.base import read_series
from tumorscope.stages.cest import CESTOptions, fit_cest
from tumorscope.volume import Volume

AFF = np.diag([2.0, 2.0, 2.0, 1.0])
OFF = np.r_[-15.0, -10.0, np.arange(-6.0, 6.001, 0.5), 10.0, 15.0]
WOFF = np.linspace(-2.0, 2.0, 21)
FRACTIONS = np.array([3e-4, 9e-4, 1.5e-3])
SHIFTS = np.array([-0.4, 0.0, 0.3])


def _tissue(f: float) -> BMSystem:
    return BMSystem(
        1.3,
        0.07,
        (
            ExchangePool("amide", f, 1.0, 0.1, 50.0, 3.5),
            ExchangePool("noe", 4.5e-3, 1.3, 0.005, 20.0, -3.5),
        ),
        MTPool(0.1, 1.0, 4e-5, 30.0, -3.0),
    )


def _write(path: Path, data: np.ndarray, side: dict) -> Path:
    Volume(np.asarray(data, np.float32), AFF).to_nifti(path)
    path.with_name(path.name.replace(".nii.gz", ".json")).write_text(json.dumps(side))
    return path


def _series(tmp: Path, b1: float, rel_b1: float = 0.9, name: str = "cest") -> Path:
    """3 x 3 x 1: amide fraction along x, B0 shift along y; M0 first and last (drift 2 %)."""
    data = np.zeros((3, 3, 1, OFF.size + 2))
    for i, f in enumerate(FRACTIONS):
        for j, s in enumerate(SHIFTS):
            z = simulate_z(
                _tissue(f), OFF, field_t=3.0, b1_ut=b1, tsat_s=2.0, b0_shift_ppm=s, rel_b1=rel_b1
            )
            data[i, j, 0] = (
                1000.0 * np.r_[1.0, z * np.linspace(1.0, 1.02, OFF.size + 2)[1:-1], 1.02]
            )
    side = {
        "MagneticFieldStrength": 3.0,
        "SaturationOffsets": [-300.0, *OFF.tolist(), 300.0],
        "SaturationB1": b1,
        "SaturationDuration": 2.0,
    }
    return _write(tmp / f"sub-01_ses-01_{name}.nii.gz", data, side)


def _wasabi(tmp: Path, rel_b1: float = 0.9) -> Path:
    data = np.zeros((3, 3, 1, WOFF.size + 1))
    for j, s in enumerate(SHIFTS):
        z = np.abs(
            simulate_z(
                BMSystem(1.3, 0.07),
                WOFF,
                field_t=3.0,
                b1_ut=3.7,
                tsat_s=0.005,
                b0_shift_ppm=s,
                rel_b1=rel_b1,
            )
        )
        data[:, j, 0] = 800.0 * np.r_[1.0, z]
    side = {
        "MagneticFieldStrength": 3.0,
        "SaturationOffsets": [-300.0, *WOFF.tolist()],
        "SaturationB1": 3.7,
        "SaturationDuration": 0.005,
    }
    return _write(tmp / "sub-01_ses-01_WASABI.nii.gz", data, side)


def test_sidecar_protocol_hz_and_errors(tmp_path: Path) -> None:
    img = tmp_path / "x_cest.nii.gz"
    side = {
        "MagneticFieldStrength": 3.0,
        "SaturationOffsets": [-38319.7, *(OFF * 127.7324).tolist()],
        "SaturationOffsetsUnit": "Hz",
        "SaturationB1": 1.0,
        "SaturationDuration": 2.0,
        "SaturationPulseNumber": 20,
        "SaturationDutyCycle": 0.5,
    }
    p = protocol_from_sidecar(img, "cest", side)
    np.testing.assert_allclose(p.saturated_offsets_ppm, OFF, atol=1e-5)
    assert p.n_pulses == 20 and p.pulse_duration_s == pytest.approx(0.05)
    with pytest.raises(DataError, match="SaturationB1"):
        protocol_from_sidecar(img, "cest", {k: v for k, v in side.items() if k != "SaturationB1"})
    with pytest.raises(ProtocolError, match="SaturationDutyCycle"):
        protocol_from_sidecar(img, "cest", {**side, "SaturationDutyCycle": 2})
    with pytest.raises(ProtocolError, match="M0"):
        protocol_from_sidecar(img, "cest", {**side, "SaturationOffsets": [1.0, 2.0, 3.0, 4.0, 5.0]})


def test_stage_writes_b0_asym_lorentzian_arex_and_b1_corrected(tmp_path: Path) -> None:
    series = {
        "cest": read_series(_series(tmp_path, 1.0), "cest", role="cest"),
        "cest_2": read_series(_series(tmp_path, 2.0, name="acq-2_cest"), "cest", role="cest_2"),
        "wasabi": read_series(_wasabi(tmp_path), "WASABI", role="wasabi"),
    }
    t1 = Volume(np.full((3, 3, 1), 1300.0, np.float32), AFF)
    t1.to_nifti(tmp_path / "t1.nii.gz")
    res = fit_cest(series, out_dir=tmp_path / "out", prefix="s_", t1_map=tmp_path / "t1.nii.gz")
    names = {m.name for m in res.maps}
    for want in (
        "cest.B0",
        "cest.MTRasym_3p5ppm",
        "cest.MTRasym_2ppm",
        "cest_lorentzian.amide_amp",
        "wasabi.rB1",
        "cest.AREX_amide",
        "cest.MTRRex_amide",
        "cest.MTRasym_3p5ppm_B1corr",
    ):
        assert want in names, want
    maps = {m.name: Volume.from_nifti(m.path).data for m in res.maps}
    np.testing.assert_allclose(maps["cest.B0"][..., 0], np.tile(SHIFTS, (3, 1)), atol=0.02)
    np.testing.assert_allclose(maps["wasabi.rB1"], 0.9, atol=0.03)
    apt = maps["cest.MTRasym_3p5ppm"][..., 0]
    assert np.all(np.diff(apt, axis=0) > 0)  # rises with the amide fraction at every shift
    assert np.all(np.diff(maps["cest_lorentzian.amide_amp"][..., 0], axis=0) > 0)
    assert np.all(np.diff(maps["cest.AREX_amide"][..., 0], axis=0) > 0)
    # the B1-corrected APT at 1 µT is closer to the APT at true 1 µT than the uncorrected
    ref = np.array(
        [simulate_z(_tissue(f), [-3.5, 3.5], field_t=3.0, b1_ut=1.0, tsat_s=2.0) for f in FRACTIONS]
    )
    truth = ref[:, 0] - ref[:, 1]
    corr = maps["cest.MTRasym_3p5ppm_B1corr"][..., 0]
    err_corr = np.abs(np.median(corr, axis=1) - truth)
    err_raw = np.abs(np.median(apt, axis=1) - truth)
    assert np.all(err_corr < 0.0025), err_corr
    assert np.all(err_corr < err_raw), (err_corr, err_raw)
    sidecar = json.loads((tmp_path / "out" / "s_cest_B0.json").read_text())
    assert sidecar["Units"] == "ppm" and sidecar["Provenance"]["b0_source"] == "wasabi"


def test_stage_refuses_bad_input_before_writing(tmp_path: Path) -> None:
    other = read_series(_series(tmp_path, 1.0), "cest", role="cest")
    with pytest.raises(DataError, match="no 'cest' series"):
        fit_cest({"wassr": other}, out_dir=tmp_path / "o", prefix="s_")
    t1 = Volume(np.ones((2, 2, 1), np.float32), AFF)
    t1.to_nifti(tmp_path / "t1.nii.gz")
    with pytest.raises(DataError, match="grid"):
        fit_cest(
            {"cest": other}, out_dir=tmp_path / "o", prefix="s_", t1_map=tmp_path / "t1.nii.gz"
        )
    assert not (tmp_path / "o").exists()


def test_cli_matches_stage_and_exit_code_2(tmp_path: Path) -> None:
    s = _series(tmp_path, 1.0)
    runner = CliRunner()
    res = runner.invoke(
        app, ["fit", "cest", str(s), "-o", str(tmp_path / "cli"), "--no-lorentzian"]
    )
    assert res.exit_code == 0, res.output
    stage = fit_cest(
        {"cest": read_series(s, "cest")},
        out_dir=tmp_path / "st",
        prefix="sub-01_ses-01_cest_",
        options=CESTOptions(lorentzian=False),
    )
    for m in stage.maps:
        a = Volume.from_nifti(m.path).data
        b = Volume.from_nifti(tmp_path / "cli" / m.path.name).data
        np.testing.assert_array_equal(a, b)
    s.with_name(s.name.replace(".nii.gz", ".json")).write_text(
        json.dumps({"MagneticFieldStrength": 3.0})
    )
    bad = runner.invoke(app, ["fit", "cest", str(s), "-o", str(tmp_path / "bad")])
    assert bad.exit_code == 2
    assert "SaturationOffsets" in bad.output


def test_stage_takes_b0_from_wassr(tmp_path: Path) -> None:
    cest = read_series(_series(tmp_path, 1.0), "cest", role="cest")
    # WASSR as acquired: weak saturation, water line sampled every 0.1 ppm
    woff = np.round(np.arange(-1.5, 1.501, 0.1), 6)
    data = np.zeros((3, 3, 1, woff.size + 1))
    for j, s in enumerate(SHIFTS):
        z = simulate_z(_tissue(9e-4), woff, field_t=3.0, b1_ut=0.2, tsat_s=0.5, b0_shift_ppm=s)
        data[:, j, 0] = 900.0 * np.r_[1.0, z]
    side = {
        "MagneticFieldStrength": 3.0,
        "SaturationOffsets": [-300.0, *woff.tolist()],
        "SaturationB1": 0.2,
        "SaturationDuration": 0.5,
    }
    wpath = _write(tmp_path / "sub-01_ses-01_wassr.nii.gz", data, side)
    wassr = read_series(wpath, "wassr", role="wassr")
    res = fit_cest(
        {"cest": cest, "wassr": wassr},
        out_dir=tmp_path / "o",
        prefix="s_",
        options=CESTOptions(lorentzian=False, mtr_asym_ppm=(3.5,)),
    )
    b0 = next(m for m in res.maps if m.name == "cest.B0")
    np.testing.assert_allclose(
        Volume.from_nifti(b0.path).data[..., 0], np.tile(SHIFTS, (3, 1)), atol=0.005
    )
    prov = json.loads(b0.path.with_name("s_cest_B0.json").read_text())["Provenance"]
    assert prov["b0_source"] == "wassr" and {"series", "wassr"} <= set(prov["inputs"])
    with pytest.raises(DataError, match="expected a wassr series"):
        fit_cest({"cest": cest, "wassr": cest}, out_dir=tmp_path / "x", prefix="s_")
