"""``tumorscope fit t1/t2/t2star`` end to end on small synthetic NIfTI files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from tumorscope.cli import app
from tumorscope.models.relaxometry import (
    ir_signal,
    monoexp_signal,
    spgr_signal,
    t2star_rician_signal,
)
from tumorscope.volume import Volume

runner = CliRunner()
AFF = np.diag([2.0, 2.0, 2.0, 1.0])


def _write(path: Path, data: np.ndarray, sidecar: dict | None = None) -> Path:
    Volume(np.asarray(data, dtype=np.float32), AFF).to_nifti(path)
    if sidecar is not None:
        path.with_name(path.name.replace(".nii.gz", ".json")).write_text(json.dumps(sidecar))
    return path


def _map(path: Path) -> np.ndarray:
    return Volume.from_nifti(path).data


def test_fit_t1_vfa_with_sidecar_and_b1(tmp_path: Path) -> None:
    fa = [2.0, 5.0, 10.0, 15.0]
    t1 = np.linspace(400, 2000, 24).reshape(4, 3, 2)
    b1 = np.linspace(0.85, 1.15, 24).reshape(4, 3, 2)
    y = spgr_signal(np.stack([np.full_like(t1, 1000.0), t1], -1), fa, 5.0, b1=b1)
    series = _write(tmp_path / "sub-1_VFA.nii.gz", y, {"FlipAngle": fa, "RepetitionTime": 0.005})
    b1p = _write(tmp_path / "b1.nii.gz", b1)
    res = runner.invoke(
        app, ["fit", "t1", str(series), "-o", str(tmp_path / "out"), "--b1", str(b1p)]
    )
    assert res.exit_code == 0, res.output
    got = _map(tmp_path / "out" / "sub-1_VFA_vfat1_T1.nii.gz")
    np.testing.assert_allclose(got, t1, rtol=1e-4)
    side = json.loads((tmp_path / "out" / "sub-1_VFA_vfat1_T1.json").read_text())
    assert side["Units"] == "ms"
    assert set(side["Provenance"]["inputs"]) == {"series", "b1"}
    # B1 on another grid is refused before anything is written
    bad = tmp_path / "b1bad.nii.gz"
    Volume(b1.astype(np.float32), np.diag([3.0, 2.0, 2.0, 1.0])).to_nifti(bad)
    res = runner.invoke(
        app, ["fit", "t1", str(series), "-o", str(tmp_path / "o2"), "--b1", str(bad)]
    )
    assert res.exit_code == 2 and "B1 map grid" in res.output
    assert not (tmp_path / "o2").exists()


def test_fit_t1_ir_and_missing_sidecar(tmp_path: Path) -> None:
    ti = [50.0, 150.0, 400.0, 800.0, 1500.0, 3000.0]
    t1 = np.linspace(300, 2500, 8).reshape(2, 2, 2)
    p = np.stack([np.full_like(t1, 1000.0), t1, np.full_like(t1, 1.9)], -1)
    series = _write(
        tmp_path / "ir.nii.gz", np.abs(ir_signal(p, ti)), {"InversionTime": [t / 1000 for t in ti]}
    )
    res = runner.invoke(app, ["fit", "t1", str(series), "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(_map(tmp_path / "out" / "ir_irt1_T1.nii.gz"), t1, rtol=1e-4)
    nos = _write(tmp_path / "nos.nii.gz", np.abs(ir_signal(p, ti)))
    res = runner.invoke(app, ["fit", "t1", str(nos), "-o", str(tmp_path / "o3")])
    assert res.exit_code == 2 and "sidecar" in res.output


def test_fit_t2star_and_t2_from_options(tmp_path: Path) -> None:
    te = [2.0, 4.0, 6.0, 8.0, 12.0, 16.0, 20.0, 25.0]
    r2s = np.linspace(20, 300, 8).reshape(2, 2, 2)
    y = monoexp_signal(np.stack([np.full_like(r2s, 1000.0), r2s], -1), te)
    series = _write(tmp_path / "me.nii.gz", y)
    res = runner.invoke(
        app,
        [
            "fit",
            "t2star",
            str(series),
            "-o",
            str(tmp_path / "o"),
            "--echo-times",
            ",".join(map(str, te)),
            "--floor",
            "none",
        ],
    )
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(_map(tmp_path / "o" / "me_t2star_R2star.nii.gz"), r2s, rtol=1e-4)
    res = runner.invoke(
        app,
        [
            "fit",
            "t2",
            str(series),
            "-o",
            str(tmp_path / "o"),
            "--echo-times",
            ",".join(map(str, te)),
            "--floor",
            "offset",
        ],
    )
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(
        _map(tmp_path / "o" / "me_t2_offset_T2.nii.gz"), 1000 / r2s, rtol=1e-3
    )
    res = runner.invoke(
        app, ["fit", "t2star", str(series), "-o", str(tmp_path / "o4"), "--echo-times", "2,4,x"]
    )
    assert res.exit_code == 2 and "comma-separated numbers" in res.output
    res = runner.invoke(
        app, ["fit", "t2star", str(series), "-o", str(tmp_path / "o4"), "--echo-times", "2,4,6"]
    )
    assert res.exit_code == 2 and "3 echo times" in res.output


def test_fit_t2star_noise_map(tmp_path: Path) -> None:
    te = [2.0, 4.0, 6.0, 8.0, 12.0, 16.0, 20.0, 25.0]
    r2s = np.linspace(20, 600, 8).reshape(2, 2, 2)
    sig = np.linspace(2.0, 30.0, 8).reshape(2, 2, 2)
    y = t2star_rician_signal(np.stack([np.full_like(r2s, 1000.0), r2s], -1), te, sig)
    series = _write(tmp_path / "me2.nii.gz", y)
    nm = _write(tmp_path / "sigma.nii.gz", sig)
    args = ["fit", "t2star", str(series), "--echo-times", ",".join(map(str, te))]
    res = runner.invoke(app, [*args, "-o", str(tmp_path / "o"), "--noise-map", str(nm)])
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(_map(tmp_path / "o" / "me2_t2star_R2star.nii.gz"), r2s, rtol=1e-4)
    bad = _write(tmp_path / "bad.nii.gz", np.ones((3, 2, 2)))
    res = runner.invoke(app, [*args, "-o", str(tmp_path / "o2"), "--noise-map", str(bad)])
    assert res.exit_code == 2 and "noise map grid" in res.output
    assert not (tmp_path / "o2").exists()
