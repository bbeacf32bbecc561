"""The DSC stage with a dual-echo series (tumorscope.phantom.dsc.brain_dsc_dual_echo): rCBV of
leaky lesions closer to the truth than the first echo alone gives, the T1effect map, the
pair's errors before anything is written, and ``tumorscope fit dsc --echo2``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tumorscope.cli import app
from tumorscope.errors import DataError, ProtocolError
from tumorscope.phantom.dsc import DSCLesion, brain_dsc_dual_echo
from tumorscope.stages.base import read_series
from tumorscope.stages.dsc import DSCOptions, fit_dsc
from tumorscope.volume import Volume

AFF = np.diag([2.0, 2.0, 2.0, 1.0])
SHAPE = (32, 28, 3)
#: strongly T1-leaky lesions (K2 0.008 and 0.010 /s: a single echo under-reads rCBV badly)
LESIONS = {1: DSCLesion(rcbv=3.0, k2_per_s=0.008), 2: DSCLesion(rcbv=0.9, k2_per_s=0.010)}


def _write(path: Path, data: np.ndarray, sidecar: dict, affine: np.ndarray = AFF) -> Path:
    Volume(np.asarray(data, dtype=np.float32), affine).to_nifti(path)
    path.with_name(path.name.replace(".nii.gz", ".json")).write_text(json.dumps(sidecar))
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, np.ndarray]:
    tmp = tmp_path_factory.mktemp("dsc2")
    x, y = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    brain = np.repeat((((x - 15.5) / 15) ** 2 + ((y - 13.5) / 13) ** 2 <= 1)[..., None], 3, 2)
    labels = np.zeros(SHAPE, np.int16)
    labels[5:11, 6:12, :] = 1
    labels[5:11, 14:20, :] = 2
    artery = np.zeros(SHAPE, bool)
    artery[15:17, 24:26, :] = True
    s1, s2, side1, side2, _truth = brain_dsc_dual_echo(
        brain, labels, LESIONS, rng=np.random.default_rng(5), rng2=np.random.default_rng(6),
        snr=1000.0, artery=artery,
    )  # fmt: skip
    e1 = _write(tmp / "sub-1_echo-1_dsc.nii.gz", s1, side1)
    e2 = _write(tmp / "sub-1_echo-2_dsc.nii.gz", s2, side2)
    lab = tmp / "sub-1_lesions.nii.gz"
    Volume(labels, AFF).to_nifti(lab)
    return e1, e2, lab, labels


def _fit(pair: tuple, out: Path, leakage: str, dual: bool) -> dict[int, float]:
    e1, e2, lab, labels = pair
    fit_dsc(
        read_series(e1, "dsc"), Volume.from_nifti(lab), {1: "L1", 2: "L2"}, out_dir=out,
        options=DSCOptions(leakage=leakage),
        echo2=read_series(e2, "dsc", role="dsc_echo2") if dual else None,
    )  # fmt: skip
    rcbv = Volume.from_nifti(out / "dsc_rCBV.nii.gz").data
    return {k: float(np.nanmean(rcbv[labels == k])) for k in (1, 2)}


def test_dual_echo_rcbv_is_closer_to_truth_than_the_first_echo_alone(
    pair: tuple, tmp_path: Path
) -> None:
    """Lesions rCBV 3.0 and 0.9, T1-leaky (K2 0.008, 0.010 /s), S0/σ = 1000 (the T1 effect,
    not the noise, under test). Measured: uncorrected, the first echo alone reads 2.44 and 0.23,
    dual echo 3.09 and 0.87; BSW-corrected, the first echo 2.98 and 0.89 (the phantom's leak is
    BSW's own form, which BSW inverts), dual echo 3.03 and 0.90. At S0/σ = 200 the dual-echo
    ΔR2* is twice as noisy (docs/dsc.md): uncorrected 1.87 and 0.46, BSW 3.14 and 0.92."""
    truth = {1: 3.0, 2: 0.9}
    got = {
        (leak, dual): _fit(pair, tmp_path / f"{leak}{dual}", leak, dual)
        for leak in ("none", "bsw")
        for dual in (False, True)
    }
    for k, want in truth.items():
        assert got["none", True][k] == pytest.approx(want, rel=0.08), got
        assert got["bsw", True][k] == pytest.approx(want, rel=0.08), got
        assert abs(got["none", False][k] - want) > 0.15 * want, got  # single echo: biased
        assert abs(got["none", True][k] - want) < abs(got["none", False][k] - want)
    stage = json.loads((tmp_path / "noneTrue" / "dsc_stage.json").read_text())
    de = stage["dual_echo"]
    assert de["echo_times_ms"] == [30.0, 60.0]
    # f_T1 − 1 = exp(TE·K2·∫ref) − 1 ≈ 0.1–0.2 % after the first pass; ~0 in normal tissue
    assert de["T1effect_median_in_lesions"] > 0.001 > 2 * abs(de["T1effect_median_in_brain"])
    assert json.loads((tmp_path / "noneFalse" / "dsc_stage.json").read_text())["dual_echo"] is None
    assert not (tmp_path / "noneFalse" / "dsc_T1effect.nii.gz").exists()
    labels = pair[3]
    t1 = Volume.from_nifti(tmp_path / "noneTrue" / "dsc_T1effect.nii.gz").data
    assert np.nanmedian(t1[labels == 2]) > np.nanmedian(t1[labels == 1]) > 0.001  # K2 order
    side = json.loads((tmp_path / "noneTrue" / "dsc_T1effect.json").read_text())
    assert side["Units"] == "1"
    assert set(side["Provenance"]["inputs"]) >= {"series", "echo2_series"}


@pytest.mark.parametrize(
    ("change", "error", "field"),
    [
        ("te", ProtocolError, "EchoTime"),
        ("frames", ProtocolError, "FrameTimes"),
        ("times", ProtocolError, "FrameTimes"),
        ("tr", ProtocolError, "RepetitionTime"),
        ("shape", DataError, "dim"),
        ("affine", DataError, "affine"),
    ],
)
def test_a_bad_pair_is_refused_naming_the_second_echo_and_field(
    pair: tuple, tmp_path: Path, change: str, error: type, field: str
) -> None:
    e1, e2, _, _ = pair
    data = Volume.from_nifti(e2).data
    side = json.loads(e2.with_name("sub-1_echo-2_dsc.json").read_text())
    affine = AFF
    if change == "te":
        side["EchoTime"] = 0.03  # the first echo's
    elif change == "frames":
        data, side["FrameTimes"] = data[..., :-1], side["FrameTimes"][:-1]
    elif change == "times":
        side["FrameTimes"] = [t * 1.01 for t in side["FrameTimes"]]
    elif change == "tr":
        side["RepetitionTime"] = 1.6
    elif change == "shape":
        data = data[:-1]
    else:
        affine = np.diag([2.0, 2.0, 2.5, 1.0])
    bad = _write(tmp_path / "bad_echo-2_dsc.nii.gz", data, side, affine)
    out = tmp_path / "out"
    with pytest.raises(error) as err:
        fit_dsc(read_series(e1, "dsc"), None, out_dir=out, echo2=read_series(bad, "dsc"))
    assert err.value.field == field
    assert "bad_echo-2_dsc" in str(err.value.file)
    assert not out.exists()


def test_command_with_echo2_writes_what_the_stage_writes(pair: tuple, tmp_path: Path) -> None:
    e1, e2, lab, _ = pair
    res = CliRunner().invoke(
        app,
        ["fit", "dsc", str(e1), "--echo2", str(e2), "--out", str(tmp_path / "cli"),
         "--lesions", str(lab)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "dual echo" in res.output
    stage = fit_dsc(
        read_series(e1, "dsc"), Volume.from_nifti(lab), out_dir=tmp_path / "api",
        echo2=read_series(e2, "dsc", role="dsc_echo2"),
    )  # fmt: skip
    names = {p.name for p in stage.files}
    assert "dsc_T1effect.nii.gz" in names
    for p in stage.files:
        if p.name.endswith(".nii.gz") or p.suffix == ".tsv":
            assert (tmp_path / "cli" / p.name).read_bytes() == p.read_bytes(), p.name
    bad = CliRunner().invoke(
        app, ["fit", "dsc", str(e2), "--echo2", str(e1), "--out", str(tmp_path / "x")]
    )
    assert bad.exit_code == 2, bad.output
    assert "EchoTime" in bad.output and "not longer than the first" in bad.output
    assert not (tmp_path / "x").exists()
