"""``tumorscope fit t1/t2/t2star`` end to end on small synthetic NIfTI files, and the same
files byte for byte as the pipeline's ``fit_relax`` step for the same series and prefix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tumorscope.cli import app
from tumorscope.models.relaxometry import (
    ir_signal,
    monoexp_signal,
    spgr_signal,
    t2star_rician_signal,
)
from tumorscope.volume import Volume

from ._nifti import read_map as _map
from ._nifti import write_nifti as _write

runner = CliRunner()


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


@pytest.mark.slow
def test_commands_write_the_pipeline_files_byte_for_byte(tmp_path: Path) -> None:
    """``fit t2star``, ``fit t2`` and ``fit t1`` (inversion recovery) on a study's series with
    the pipeline's prefix write the same files, byte for byte (images and sidecars), as the
    pipeline's ``fit_relax`` step on that series: both are adapters over one stage. The step
    fits the body (run option ``relax_region``, default ``body``), the commands the whole
    volume unless given ``--region body``, which they are here."""
    from tumorscope.phantom import make_study
    from tumorscope.pipeline import run_study

    study = make_study(tmp_path / "study", size="tiny", seed=0, n_subjects=1)
    summary = run_study(study, tmp_path / "run", steps=("register", "fit_relax"), report=False)
    assert not summary.failed, summary.failed
    maps = sorted((tmp_path / "run" / "sub-001").glob("ses-*/maps"))
    assert maps
    checked = 0
    for folder in maps:
        visit = folder.parent.name[len("ses-") :]
        for command, model in (("t2star", "t2star"), ("t2", "t2"), ("t1", "irt1")):
            prefix = f"sub-001_ses-{visit}_{model}_"
            ours = sorted(folder.glob(f"{prefix}*"))
            if not ours:
                continue
            side = json.loads(folder.joinpath(f"{prefix}status.json").read_text())
            series = str(study / side["Provenance"]["inputs"]["series"]["path"])  # in the study
            out = tmp_path / "cli" / visit
            res = runner.invoke(
                app,
                ["fit", command, series, "-o", str(out), "--prefix", prefix, "--region", "body"],
            )
            assert res.exit_code == 0, res.output
            theirs = sorted(out.glob(f"{prefix}*"))
            assert [p.name for p in theirs] == [p.name for p in ours]
            for a, b in zip(ours, theirs, strict=True):
                assert a.read_bytes() == b.read_bytes(), a.name
                checked += 1
    assert checked >= 3 * 14  # T2*, T2 and IR T1 maps (images and sidecars) at least once


@pytest.mark.parametrize(("value", "message"), [(np.nan, "non-finite"), (0.0, "zero")])
def test_an_all_nan_or_all_zero_series_exits_2_and_writes_nothing(
    tmp_path: Path, value: float, message: str
) -> None:
    y = np.full((4, 3, 2, 3), value)
    series = _write(tmp_path / "sub-1_MEGRE.nii.gz", y, {"EchoTime": [0.005, 0.01, 0.02]})
    out = tmp_path / "out"
    res = runner.invoke(app, ["fit", "t2star", str(series), "-o", str(out)])
    assert res.exit_code == 2, res.output
    assert "sub-1_MEGRE.nii.gz: data: every voxel value is" in res.output and message in res.output
    assert not out.exists()
