"""``tumorscope validate``: what it checks beside the study reader, and its exit codes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tumorscope.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def one_subject(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One subject of the tiny phantom. Read-only."""
    from tumorscope.phantom import make_study

    return make_study(tmp_path_factory.mktemp("cli-validate") / "study", size="tiny", n_subjects=1)


@pytest.fixture
def study(one_subject: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(one_subject, tmp_path / "study"))


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"dwi_models": ["nonsense"]}, "options.dwi_models"),
        ({"align_tolerance_vox": "big"}, "options.align_tolerance_vox"),
        ({"foo": 1}, "options.foo"),
    ],
)
def test_validate_reports_the_run_options_problem_run_stops_on(
    study: Path, tmp_path: Path, options: dict, field: str
) -> None:
    """Each gave validate 0 and run 2: now both name the same field with the same message."""
    manifest = study / "study.yaml"
    doc = yaml.safe_load(manifest.read_text())
    manifest.write_text(yaml.safe_dump({**doc, "options": options}, sort_keys=False))
    res = runner.invoke(app, ["validate", str(study)])
    assert res.exit_code == 1, res.output
    (line,) = [x for x in res.output.splitlines() if x.startswith("ERROR")]
    assert line.startswith(f"ERROR study.yaml: {field}: ")
    out = tmp_path / "out"
    ran = runner.invoke(app, ["run", str(study), "--out", str(out)])
    assert ran.exit_code == 2 and not out.exists()
    assert " ".join(ran.output.split()) == f"error: {line.removeprefix('ERROR ')}"


def test_validate_of_a_missing_folder_exits_2(tmp_path: Path) -> None:
    """It exited 1 ("problems found"), though its help says 2 when it cannot check."""
    res = runner.invoke(app, ["validate", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "study folder does not exist" in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("workers", ["0"])
def test_run_refuses_fewer_than_one_worker(study: Path, tmp_path: Path, workers: str) -> None:
    """``--workers 0`` ran serially while -3 was refused; 0 has no documented meaning."""
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(study), "--out", str(out), "--workers", workers])
    assert res.exit_code == 2, res.output
    assert f"--workers: expected at least 1 worker, got {workers}" in res.output
    assert not out.exists()
