"""``tumorscope fit dce``: a thin adapter over :func:`tumorscope.stages.dce.fit_dce`.

The command and the pipeline's step (:func:`~tumorscope.stages.dce.fit_dce_visit`) write the
same files, byte for byte, given the same series, mask, prefix and options.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tumorscope.cli import app
from tumorscope.io import open_study
from tumorscope.stages.dce import DCEOptions, fit_dce_visit


@pytest.fixture(scope="module")
def visit(tmp_path_factory: pytest.TempPathFactory):
    from tumorscope.phantom.generate import make_study

    root = make_study(tmp_path_factory.mktemp("dce_cli") / "study", size="tiny", n_subjects=1)
    return next(iter(open_study(root).visits()))


def _invoke(*args: str):
    return CliRunner().invoke(app, ["fit", "dce", *args])


def test_help_lists_the_command() -> None:
    assert "dce" in CliRunner().invoke(app, ["fit", "--help"]).output


def test_fit_with_one_t1_and_a_population_aif(visit, tmp_path: Path) -> None:
    dce = str(visit.series["dce"].path)
    res = _invoke(
        dce, "--t1-ms", "1400", "--out", str(tmp_path), "--model", "patlak",
        "--aif", "georgiou", "--aif-delay", "10", "--no-semiquant", "--prefix", "x_",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "fitted patlak" in res.output and "delay 10.0 s" in res.output
    assert (tmp_path / "x_patlak_Ktrans.nii.gz").exists()
    assert not list(tmp_path.glob("x_sq_*"))


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["--aif", "nope"],
            "error: t1: give exactly one of a VFA series (vfa=, --vfa) or a T1 value "
            "(t1_ms=, --t1-ms)",
        ),
        (
            ["--t1-ms", "1000", "--aif", "nope"],
            "error: aif: unknown AIF 'nope': expected one of ('parker', 'georgiou', 'mcgrath', "
            "'auto') or an existing CSV/TSV file",
        ),
        (
            ["--t1-ms", "1000", "--aif-delay", "nan"],
            "error: --aif-delay: must be a finite delay within ±600 s, got nan",
        ),
        (
            ["--t1-ms", "1e300"],
            "error: --t1-ms: must be a T1 of 5 to 50000 ms, got 1e+300",
        ),
        (
            ["--t1-ms", "1000", "--prefix", "../x_"],
            "error: --prefix: must be a file-name prefix (no folder, no '/', not '..'), got "
            "'../x_'; choose the folder with --out",
        ),
        (
            ["--t1-ms", "1000", "--model", "ivim"],
            "error: model: unknown DCE model 'ivim'; expected one of ('tofts', "
            "'extended_tofts', 'patlak', '2cxm', '2cum')",
        ),
    ],
)
def test_bad_options_exit_2_with_one_error(visit, tmp_path: Path, args, error: str) -> None:
    out = tmp_path / "never"
    res = _invoke(str(visit.series["dce"].path), "--out", str(out), *args)
    assert res.exit_code == 2
    assert " ".join(res.output.split()) == error
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left


def test_command_and_pipeline_step_write_identical_files(visit, tmp_path: Path) -> None:
    """Same series, lesion mask, prefix and options: same file names, same bytes."""
    out = tmp_path / "maps"  # the same folder for both: the stage record lists the paths
    prefix = f"sub-{visit.subject_id}_ses-{visit.id}_"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        step = fit_dce_visit(visit, out_dir=out, options=DCEOptions(model="tofts"))
    by_step = tmp_path / "by_step"
    shutil.move(out, by_step)
    res = _invoke(
        str(visit.series["dce"].path), "--vfa", str(visit.series["t1_vfa"].path),
        "--mask", str(visit.lesions.map_path), "--model", "tofts", "--relaxivity", "4.5",
        "--hematocrit", "0.42", "--prefix", prefix, "--out", str(out),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in by_step.iterdir())
    assert names == sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in step.files)
    assert len(names) > 40
    for name in names:
        assert (out / name).read_bytes() == (by_step / name).read_bytes(), name
