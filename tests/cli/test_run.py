"""``tumorscope run`` and ``tumorscope report`` on the command line: exit codes and summary."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tumorscope.cli import app

runner = CliRunner()
QUICK = ["--steps", "register,fit_dwi,measure,assess", "--dwi-models", "adc", "--no-report"]


@pytest.fixture(scope="module")
def small_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two subjects of the tiny phantom. Read-only."""
    from tumorscope.phantom import make_study

    return make_study(tmp_path_factory.mktemp("cli-run") / "study", size="tiny", n_subjects=2)


@pytest.fixture
def study2(small_study: Path, tmp_path: Path) -> Path:
    """A private copy of the small study that a test may change."""
    return Path(shutil.copytree(small_study, tmp_path / "study"))


def test_run_exit_codes_and_summary(study2: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    sidecar = study2 / "sub-002/ses-02/dwi/sub-002_ses-02_dwi.json"
    good = sidecar.read_text()
    sidecar.write_text("{not json")  # bad input: exit 2, nothing written
    res = runner.invoke(app, ["run", str(study2), "--out", str(out), *QUICK])
    assert res.exit_code == 2, res.output
    assert "sub-002_ses-02_dwi.json" in res.output and "nothing was written" in res.output
    assert "Traceback" not in res.output and not out.exists()
    # a fault only the image data show (register's read): the subject fails, exit 1
    sidecar.write_text(good)
    image = study2 / "sub-002/ses-02/dwi/sub-002_ses-02_dwi.nii.gz"
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])  # the header stays readable
    res = runner.invoke(app, ["run", str(study2), "--out", str(out), *QUICK])
    assert res.exit_code == 1, res.output
    assert "failures" in res.output and "sub-002_ses-02_dwi.nii.gz" in res.output
    assert "failed subjects: 002" in res.output
    assert f"database: sqlite:///{out.resolve()}" in res.output
    assert list((out / "tables").glob("*.parquet"))


def test_run_refuses_bad_arguments(study2: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["run", str(study2), "--out", str(tmp_path / "o"), "--force", "x"])
    assert res.exit_code == 2 and "--force" in res.output
    res = runner.invoke(app, ["run", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "study folder does not exist" in res.output
    res = runner.invoke(app, ["report", str(study2), "--out", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "tumorscope run" in res.output


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--workers", "99999999999"], {}, "--workers"),
        (["--scheduler", "junk"], {}, "--scheduler"),
        (["--scheduler", "tcp://host:99999"], {}, "--scheduler"),
        (["--db", "sqlite:///"], {}, "--db"),
        (["--db", "sqlite:///:memory:"], {}, "--db"),
        (["--db", "sqlite:////nonexistent/dir/x.sqlite"], {}, "--db"),
        (["--lock-timeout", "nan"], {}, "--lock-timeout"),
        (["--steps", ""], {}, "--steps"),
        (["--steps", ",,,"], {}, "--steps"),
        ([], {"TUMORSCOPE_STEP_CONCURRENCY": "0"}, "TUMORSCOPE_STEP_CONCURRENCY"),
        ([], {"TUMORSCOPE_STEP_CONCURRENCY": "-1"}, "TUMORSCOPE_STEP_CONCURRENCY"),
        ([], {"TUMORSCOPE_MAX_IMAGE_BYTES": "abc"}, "TUMORSCOPE_MAX_IMAGE_BYTES"),
        ([], {"TUMORSCOPE_MAX_IMAGE_BYTES": "-1"}, "TUMORSCOPE_MAX_IMAGE_BYTES"),
        (["--dce-aif", "STUDY/study.yaml"], {}, "--dce-aif"),
        (["--dce-aif", "BINARY"], {}, "--dce-aif"),
    ],
)
def test_run_refuses_bad_options_before_anything_is_written(
    small_study: Path, tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    binary = tmp_path / "aif.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    args = [a.replace("STUDY", str(small_study)).replace("BINARY", str(binary)) for a in args]
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(small_study), "--out", str(out), *args], env=env)
    assert res.exit_code == 2, res.output
    assert named in res.output and "internal error" not in res.output
    assert not out.exists()


def test_steps_without_register_run_it_first(small_study: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["--steps", "fit_dwi", "--dwi-models", "adc", "--no-report"]
    res = runner.invoke(app, ["run", str(small_study), "--out", str(out), *args])
    assert res.exit_code == 0, res.output
    assert "added register" in res.output and "FOREIGN KEY" not in res.output
    assert "units failed           0" in res.output or "FAILED" not in res.output


def test_scheduler_addresses_dask_uses_are_accepted() -> None:
    """Every protocol a Dask scheduler listens on, and an in-process cluster's ``inproc://``
    address (what tests/pipeline/test_distributed.py gives): the check refuses junk only."""
    from tumorscope.errors import DataError
    from tumorscope.pipeline.checks import check_scheduler

    for ok in ("tcp://127.0.0.1:8786", "tls://host:8786", "[::1]:8786", "inproc://10.0.0.2/31/4"):
        check_scheduler(ok)
    for bad in ("junk", "tcp://host", "tcp://host:0", "inproc://"):
        with pytest.raises(DataError, match="--scheduler"):
            check_scheduler(bad)
