"""Fixtures of the pipeline tests: a two-subject tiny phantom and one complete run of it.

Most tests run a light pipeline (``QUICK``: ADC only, no DCE, no HTML) on a private copy;
the complete run (every step, the report) is made once per session and only read.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

#: A light run: the runner's behaviour without the cost of IVIM, DCE and figures.
QUICK: dict[str, Any] = {
    "steps": ("register", "fit_dwi", "measure", "assess"),
    "options": {"dwi_models": ("adc",)},
    "report": False,
}


@pytest.fixture
def quick() -> dict[str, Any]:
    """Keyword arguments of :func:`run_study` for a light run (see ``QUICK``)."""
    return dict(QUICK)


@pytest.fixture(scope="session")
def small_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two subjects of the tiny phantom (001 responder, 002 pseudoprogressor). Read-only."""
    from tumorscope.phantom import make_study

    return make_study(
        tmp_path_factory.mktemp("pipeline") / "study", size="tiny", seed=0, n_subjects=2
    )


@pytest.fixture
def study2(small_study: Path, tmp_path: Path) -> Path:
    """A private copy of the small study that a test may change."""
    dst = tmp_path / "study"
    shutil.copytree(small_study, dst)
    return dst


@pytest.fixture(scope="session")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Every step and the report on the small study (serial). Read-only.

    Made once per test session even under pytest-xdist: the first worker runs it under a
    file lock in the temporary folder all workers share, the others read its summary.
    """
    import fcntl
    import os
    import pickle

    from tumorscope.phantom import make_study
    from tumorscope.pipeline import run_study

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    run_dir = root / "tumorscope-full-run"
    with (root / "tumorscope-full-run.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = run_dir / "summary.pickle"
        if not done.exists():
            if run_dir.exists():
                shutil.rmtree(run_dir)
            study = make_study(run_dir / "study", size="tiny", seed=0, n_subjects=2)
            summary = run_study(study, run_dir / "out")
            done.write_bytes(pickle.dumps(summary))
        return pickle.loads(done.read_bytes())


def copy_run(out_dir: Path, dst: Path) -> Path:
    """A private copy of a finished run's folder that other xdist workers may be reading.

    Why not ``shutil.copytree``: tests on other workers read the SQLite database of the
    session's run (WAL mode), and SQLite creates and deletes ``tumorscope.sqlite-wal`` /
    ``-shm`` beside it as their connections come and go. A plain copy can list a side file that
    is gone when it gets to it (the flaky ``shutil.Error: ... tumorscope.sqlite-wal: No such
    file or directory``), or pair a main file with a WAL of another moment. So every file is
    copied except the database and its side files, and the database is taken through SQLite's
    online backup API: a consistent snapshot made under a read lock of SQLite itself, whatever
    the other connections do, with no lock or wait of ours. Nothing else in a finished run's
    folder is written by anyone (``full_run`` is read-only).
    """
    shutil.copytree(out_dir, dst, ignore=shutil.ignore_patterns("tumorscope.sqlite*"))
    db = out_dir / "tumorscope.sqlite"
    if db.exists():
        src = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
        copy = sqlite3.connect(dst / db.name)
        try:
            src.backup(copy)
        finally:
            copy.close()
            src.close()
    return dst


@pytest.fixture
def full_run_copy(full_run: Any, tmp_path: Path) -> Path:
    """A private copy of the complete run's output folder (``tmp_path / "out"``) that a test
    may change; made safely while other workers read the session's run (see :func:`copy_run`)."""
    return copy_run(full_run.out_dir, tmp_path / "out")
