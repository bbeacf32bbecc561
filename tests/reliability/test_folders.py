"""Folders and concurrency (issue 14, items 1-3 and the battery's kill and concurrency runs).

tumorscope removes only its own temporary files, writes only into its own (or an adopted)
output folder, lets one run at a time write a folder, replaces only a phantom study with
``phantom --overwrite``, and a run killed at random points resumes to the same results as an
uninterrupted one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tumorscope.cli import app
from tumorscope.phantom import make_study
from tumorscope.pipeline import run_study
from tumorscope.study import default_url, open_store

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
MARKER = ".tumorscope-output.json"
HOLDER = ".tumorscope.lock.json"
#: The cheapest run that writes something: registration of one subject.
REGISTER = ["--steps", "register", "--no-report"]
#: A run of a few seconds: registration and ADC fits.
SHORT = ["--steps", "register,fit_dwi", "--dwi-models", "adc", "--no-report"]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One subject of the tiny phantom (four visits). Read-only."""
    return make_study(tmp_path_factory.mktemp("folders") / "study", size="tiny", n_subjects=1)


def _run(study: Path, out: Path, *args: str) -> Result:
    return runner.invoke(app, ["run", str(study), "--out", str(out), *args])


def _spawn(study: Path, out: Path, *args: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "tumorscope", "run", str(study), "--out", str(out), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_lock(proc: subprocess.Popen[bytes], out: Path, limit: float = 60.0) -> bool:
    """Wait until the run holds the folder (its holder record appears); False if it ended."""
    deadline = time.monotonic() + limit
    while not (out / HOLDER).is_file():
        if proc.poll() is not None:
            return False
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the run did not take the lock within {limit:g} s")
        time.sleep(0.01)
    return True


def _listing(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _done_units(out: Path) -> int:
    """Units of work done so far by the runs into ``out`` (from their logs)."""
    return sum(p.read_text().count(" done: ") for p in out.glob("logs/run-*.log"))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------ 1. only our own files


def test_run_removes_only_its_own_temporaries(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _run(study, out, *REGISTER).exit_code == 0
    theirs = {
        "notes/.my-private-notes.txt": b"private",
        ".python-version": b"3.11\n",
        ".pre-commit-config.yaml": b"repos: []\n",
        ".git/objects/.pack-tmp-1": b"git",
        "sub-001/.my-notes-1.txt": b"mine",
        "sub-001/ses-01/.scratch-a.nii.gz": b"scratch",
        "notes/.tumorscope-tmp-x-1.txt": b"not in a folder tumorscope made",
    }
    ours = ["sub-001/ses-01/maps/.tumorscope-tmp-a-1.nii.gz", "tables/.tumorscope-tmp-b-2.csv"]
    for rel, data in theirs.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    for rel in ours:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(b"half-written")

    res = _run(study, out, *REGISTER)
    assert res.exit_code == 0, res.output
    for rel, data in theirs.items():
        assert (out / rel).read_bytes() == data, rel
    assert not any((out / rel).exists() for rel in ours)


def test_run_refuses_a_folder_that_is_not_a_tumorscope_output(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "thesis"
    (out / ".git").mkdir(parents=True)
    (out / ".git" / "config").write_text("[core]\n")
    (out / "chapter-1.tex").write_text("\\chapter{}\n")
    before = _listing(out)
    res = _run(study, out, *REGISTER)
    assert res.exit_code == 2, res.output
    assert str(out.resolve()) in res.output and "--adopt-folder" in res.output
    assert "Traceback" not in res.output
    assert _listing(out) == before  # nothing written


@pytest.mark.parametrize(
    ("inside", "adopt"),
    [(".", True), ("sub-002", False), ("derivatives", True), ("derivatives/lesions/out", False)],
)
def test_run_refuses_an_output_folder_inside_the_study(
    study: Path, inside: str, adopt: bool
) -> None:
    """Found by the sweep of 2026-12-06: ``--out STUDY/sub-002`` made a subject folder the
    manifest does not list (the study no longer validated), ``--out STUDY --adopt-folder``
    mixed 1,142 files into it. Only a folder below ``derivatives/`` (not the segmentations)
    may hold a run's output inside the study."""
    before = _listing(study)
    out = study / inside
    res = _run(study, out, *REGISTER, *(["--adopt-folder"] if adopt else []))
    assert res.exit_code == 2, res.output
    assert "inside it" in res.output and "--out" in res.output and "Traceback" not in res.output
    assert _listing(study) == before and (inside in (".", "derivatives") or not out.exists())


def test_run_does_not_write_through_a_linked_folder(study: Path, tmp_path: Path) -> None:
    """Found by the sweep of 2026-12-06: a folder of the output replaced by a link to a
    user's folder had the run write its tables into it (the user's ``subjects.csv``
    replaced) before it failed. A linked folder anywhere in the output: exit 2, nothing
    written."""
    out = tmp_path / "out"
    assert _run(study, out, *REGISTER).exit_code == 0
    users = tmp_path / "user_tables"
    users.mkdir()
    (users / "subjects.csv").write_text("the user's own list\n")
    (out / "tables").rename(tmp_path / "old-tables")
    (out / "tables").symlink_to(users, target_is_directory=True)
    before = _listing(out)
    res = _run(study, out, *REGISTER, "--force", "register")
    assert res.exit_code == 2, res.output
    assert "symbolic link" in res.output and "tables" in res.output
    assert (users / "subjects.csv").read_text() == "the user's own list\n"
    assert sorted(p.name for p in users.iterdir()) == ["subjects.csv"]
    assert _listing(out) == before


def test_run_adopts_a_folder_when_told_and_keeps_its_files(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "README.txt").write_text("my analysis\n")
    res = _run(study, out, *REGISTER, "--adopt-folder")
    assert res.exit_code == 0, res.output
    assert "adopting" in res.output
    assert (out / "README.txt").read_text() == "my analysis\n"
    marker = json.loads((out / MARKER).read_text())
    assert marker["adopted"] is True and marker["tumorscope_version"] and marker["created"]
    assert _run(study, out, *REGISTER).exit_code == 0  # now it is a tumorscope output


def test_output_folder_of_an_older_tumorscope_is_adopted(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _run(study, out, *REGISTER).exit_code == 0  # a new folder is marked as ours
    marker = json.loads((out / MARKER).read_text())
    assert marker["adopted"] is False and marker["tumorscope_version"] and marker["created"]
    (out / MARKER).unlink()  # as an output written before the marker existed
    res = _run(study, out, *REGISTER)
    assert res.exit_code == 0, res.output
    assert "adopting" in res.output and "earlier tumorscope" in res.output
    assert (out / MARKER).is_file()


# ------------------------------------------------------------------ 2. one run per folder


def test_second_run_on_a_busy_folder_exits_2_naming_the_holder(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _spawn(study, out, *SHORT)
    try:
        deadline = time.monotonic() + 60
        while not list(out.glob("logs/run-*.log")):  # the first run is under way
            assert first.poll() is None, first.communicate()[1].decode()
            assert time.monotonic() < deadline, "the first run did not start within 60 s"
            time.sleep(0.01)
        res = _run(study, out, *REGISTER)
        first_ended = first.poll() is not None
    finally:
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err.decode()
    if not first_ended:
        assert res.exit_code == 2, res.output
        assert f"pid {first.pid}" in res.output and "running since" in res.output
        assert "--lock-timeout" in res.output and "Traceback" not in res.output
    else:  # the first run ended before the second looked: it finds everything up to date
        assert res.exit_code == 0, res.output


def test_two_runs_started_together_one_waits_and_finds_all_up_to_date(
    study: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    procs = [_spawn(study, out, *SHORT, "--lock-timeout", "60") for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err.decode()
    store = open_store(default_url(out))
    try:
        runs = store.read_table("runs")
        step_runs = store.read_table("step_runs")
    finally:
        store.close()
    assert sorted(runs["status"]) == ["ok", "ok"]
    n_units = len(step_runs)
    assert sorted(runs["n_done"]) == [0, n_units]  # nothing done twice
    assert sorted(runs["n_skipped"]) == [0, n_units]


def test_stale_lock_of_a_killed_run_is_taken_over(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _spawn(study, out, *SHORT)
    assert _wait_for_lock(proc, out), "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    res = _run(study, out, *REGISTER)
    assert res.exit_code == 0, res.output
    assert "stale lock" in res.output and f"pid {proc.pid}" in res.output
    assert not (out / HOLDER).exists()  # released at the end


def test_lock_kept_open_after_its_run_died_is_taken_over(study: Path, tmp_path: Path) -> None:
    """A process that inherited the lock outlives the run that took it (the run's pid is dead)."""
    out = tmp_path / "out"
    assert _run(study, out, *REGISTER).exit_code == 0
    keeper = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, filelock; lock = filelock.FileLock(sys.argv[1]); "
            "lock.acquire(); print('held', flush=True); time.sleep(60)",
            str(out / ".tumorscope.lock"),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert keeper.stdout is not None and keeper.stdout.readline() == b"held\n"
        dead = _dead_pid()
        holder = {"pid": dead, "host": socket.gethostname(), "started": "2026-01-01T00:00:00"}
        (out / HOLDER).write_text(json.dumps({**holder, "command": "tumorscope run"}))
        res = _run(study, out, *REGISTER)
    finally:
        keeper.kill()
        keeper.communicate()
    assert res.exit_code == 0, res.output
    assert f"pid {dead}" in res.output and "no longer runs" in res.output


def test_lock_timeout_must_not_be_negative(study: Path, tmp_path: Path) -> None:
    res = _run(study, tmp_path / "out", *REGISTER, "--lock-timeout", "-1")
    assert res.exit_code == 2 and "--lock-timeout" in res.output
    assert not (tmp_path / "out").exists()


def test_lock_timeout_must_be_a_finite_number(study: Path, tmp_path: Path) -> None:
    res = _run(study, tmp_path / "out", *REGISTER, "--lock-timeout", "nan")
    assert res.exit_code == 2 and "--lock-timeout" in res.output, res.output
    assert not (tmp_path / "out").exists()
    res = runner.invoke(
        app, ["report", str(study), "--out", str(tmp_path), "--lock-timeout", "nan"]
    )
    assert res.exit_code == 2 and "--lock-timeout" in res.output, res.output


# ------------------------------------------------------------------ 2b. one study per folder


@pytest.fixture(scope="module")
def other_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another one-subject phantom (same subject ids, another seed). Read-only."""
    root = tmp_path_factory.mktemp("folders-other") / "other"
    return make_study(root, size="tiny", n_subjects=1, seed=5)


def test_run_or_report_of_another_study_into_an_output_folder_is_refused(
    study: Path, other_study: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert _run(study, out, *REGISTER).exit_code == 0
    before = _listing(out)
    res = _run(other_study, out, *REGISTER)
    assert res.exit_code == 2, res.output
    assert str(study) in res.output and str(other_study) in res.output
    assert "--out" in res.output and "nothing was written" in res.output
    assert _listing(out) == before  # marker, database and logs untouched
    res = runner.invoke(app, ["report", str(other_study), "--out", str(out)])
    assert res.exit_code == 2 and str(study) in res.output, res.output
    assert _listing(out) == before


def test_a_moved_study_is_still_the_owner_of_its_output(study: Path, tmp_path: Path) -> None:
    first = Path(shutil.copytree(study, tmp_path / "first"))
    out = tmp_path / "out"
    assert _run(first, out, *REGISTER).exit_code == 0
    moved = first.rename(tmp_path / "moved")
    res = _run(moved, out, *REGISTER)
    assert res.exit_code == 0, res.output
    assert "moved" in res.output
    assert json.loads((out / MARKER).read_text())["study"] == str(moved.resolve())


def test_report_refuses_an_empty_database_and_a_later_format(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _run(study, out, *REGISTER).exit_code == 0
    marker = (out / MARKER).read_text()
    (out / MARKER).write_text(
        json.dumps({**json.loads(marker), "tumorscope_output": 99, "tumorscope_version": "9.9"})
    )
    for cmd in (["report", str(study), "--out", str(out)], ["run", str(study), "--out", str(out)]):
        res = runner.invoke(app, cmd)
        assert res.exit_code == 2, res.output
        assert "format 99" in res.output and "9.9" in res.output and MARKER in res.output
    (out / MARKER).write_text("{garbage")
    res = runner.invoke(app, ["report", str(study), "--out", str(out)])
    assert res.exit_code == 2 and "damaged" in res.output, res.output
    (out / MARKER).write_text(marker)
    (out / "tumorscope.sqlite").write_bytes(b"")
    before = _listing(out)
    res = runner.invoke(app, ["report", str(study), "--out", str(out)])
    assert res.exit_code == 2 and "tumorscope.sqlite" in res.output, res.output
    assert "not the database of a run" in res.output
    assert _listing(out) == before and not (out / "report").exists()


def test_report_after_an_unfinished_run_says_so(study: Path, tmp_path: Path) -> None:
    import sqlite3

    out = tmp_path / "out"
    assert _run(study, out, *REGISTER).exit_code == 0
    with sqlite3.connect(out / "tumorscope.sqlite") as con:  # as a run killed with SIGKILL
        con.execute("UPDATE runs SET status = 'running', finished_at = NULL")
    res = runner.invoke(app, ["report", str(study), "--out", str(out)])
    assert res.exit_code == 1, res.output
    assert "did not finish" in res.output or "never recorded its end" in res.output
    page = (out / "report" / "index.html").read_text()
    assert 'id="run-incomplete"' in page and "incomplete" in page


# ------------------------------------------------------------------ 3. phantom --overwrite


def test_phantom_overwrite_refuses_a_folder_that_is_not_a_phantom(tmp_path: Path) -> None:
    folder = tmp_path / "real-study"
    (folder / "sub-01").mkdir(parents=True)
    (folder / "study.yaml").write_text("subjects: {}\n")
    (folder / "sub-01" / "notes.txt").write_text("patient data\n")
    before = _listing(folder)
    res = runner.invoke(app, ["phantom", str(folder), "--overwrite", "--size", "tiny"])
    assert res.exit_code == 2, res.output
    assert str(folder) in res.output and "Traceback" not in res.output
    assert _listing(folder) == before


def test_phantom_overwrite_replaces_a_phantom(tmp_path: Path) -> None:
    folder = make_study(tmp_path / "phantom", size="tiny", n_subjects=1)
    (folder / "sub-001/ses-01/dwi/sub-001_ses-01_dwi.nii.gz").unlink()  # ours: may go
    res = runner.invoke(
        app, ["phantom", str(folder), "--overwrite", "--size", "tiny", "--subjects", "1"]
    )
    assert res.exit_code == 0, res.output
    assert (folder / "sub-001/ses-01/dwi/sub-001_ses-01_dwi.nii.gz").is_file()


@pytest.mark.parametrize(
    "added",
    ["NOTES.md", "derivatives/mine.txt", "derivatives/tumorscope/tables/subjects.csv", "empty/"],
)
def test_phantom_overwrite_keeps_a_phantom_that_holds_the_users_files(
    tmp_path: Path, added: str
) -> None:
    """A user's notes, a run's results under derivatives/, even an empty folder: what the
    phantom did not write is never deleted by --overwrite (found by the sweep of
    2026-12-06: NOTES.md and derivatives/mine.txt were deleted, exit 0)."""
    folder = make_study(tmp_path / "phantom", size="tiny", n_subjects=1)
    target = folder / added
    target.parent.mkdir(parents=True, exist_ok=True)
    if added.endswith("/"):
        target.mkdir()
    else:
        target.write_text("the user's\n")
    before = _listing(folder)
    res = runner.invoke(
        app, ["phantom", str(folder), "--overwrite", "--size", "tiny", "--subjects", "1"]
    )
    assert res.exit_code == 2, res.output
    assert added.rstrip("/") in res.output and "nothing was replaced" in res.output
    assert _listing(folder) == before


def test_phantom_overwrite_keeps_a_phantom_file_the_user_changed(tmp_path: Path) -> None:
    folder = make_study(tmp_path / "phantom", size="tiny", n_subjects=1)
    edited = folder / "derivatives/lesions/sub-001/ses-01/sub-001_ses-01_lesions.tsv"
    edited.write_text(edited.read_text() + "# reviewed by the reader\n")
    res = runner.invoke(
        app, ["phantom", str(folder), "--overwrite", "--size", "tiny", "--subjects", "1"]
    )
    assert res.exit_code == 2 and "sub-001_ses-01_lesions.tsv" in res.output, res.output
    assert edited.read_text().endswith("# reviewed by the reader\n")


# ------------------------------------------------------------------ battery: killed runs


def test_runs_killed_at_random_points_resume_to_identical_results(
    study: Path, tmp_path: Path
) -> None:
    steps = ("register", "fit_dwi", "measure", "assess")
    args = ["--steps", ",".join(steps), "--dwi-models", "adc", "--no-report"]
    reference = tmp_path / "reference"
    quick = {"steps": steps, "options": {"dwi_models": ("adc",)}, "report": False}
    assert run_study(study, reference, **quick).ok

    killed = tmp_path / "killed"
    rng = random.Random(14)
    for _ in range(3):
        # a random point: after 0-2 more units are done, then 0-0.5 s into the next one
        target, delay = _done_units(killed) + rng.randint(0, 2), rng.uniform(0.0, 0.5)
        proc = _spawn(study, killed, *args)
        if _wait_for_lock(proc, killed):
            while _done_units(killed) < target and proc.poll() is None:
                time.sleep(0.01)
            time.sleep(delay)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        assert proc.returncode in (0, -signal.SIGKILL), err.decode()
    assert run_study(study, killed, **quick).ok

    cmp = subprocess.run(
        [sys.executable, str(REPO / "tools" / "compare_runs.py"), str(reference), str(killed)],
        capture_output=True,
        text=True,
    )
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    assert not list(killed.rglob(".tumorscope-tmp-*"))


# ------------------------------------------------------------------ import-dicom --overwrite


def test_import_overwrite_replaces_an_import_but_not_a_folder_of_other_files(
    tmp_path: Path,
) -> None:
    """``import-dicom --overwrite`` deleted any folder before (like ``phantom --overwrite``);
    now only an empty folder or a study an import wrote, holding nothing else."""
    import numpy as np

    from tumorscope.phantom.dicom import write_series
    from tumorscope.volume import Volume

    t2w = Volume(np.arange(8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3), np.eye(4))
    write_series(t2w, tmp_path / "dicom", suffix="T2w", echo_time_ms=90)
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("years of work")
    res = runner.invoke(app, ["import-dicom", str(tmp_path / "dicom"), str(thesis), "--overwrite"])
    assert res.exit_code == 2 and "replaces only a study written by import-dicom" in res.output
    assert (thesis / "chapter1.tex").read_text() == "years of work"
    assert sorted(p.name for p in thesis.iterdir()) == ["chapter1.tex"]

    study = tmp_path / "study"
    first = runner.invoke(app, ["import-dicom", str(tmp_path / "dicom"), str(study)])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["import-dicom", str(tmp_path / "dicom"), str(study), "--overwrite"])
    assert again.exit_code == 0, again.output
    (study / "notes.txt").write_text("mine")  # something the import did not write
    third = runner.invoke(app, ["import-dicom", str(tmp_path / "dicom"), str(study), "--overwrite"])
    assert third.exit_code == 2 and "notes.txt" in third.output
    assert (study / "notes.txt").read_text() == "mine"


def test_schema_changes_of_an_interrupted_transaction_are_rolled_back(tmp_path: Path) -> None:
    """Found by the kill test above: a run killed while it created the schema left the tables
    without Alembic's stamp, and every later run failed ("table runs already exists"), because
    Python's sqlite3 runs DDL outside the transaction. Now DDL is transactional too."""
    from sqlalchemy import text

    store = open_store(default_url(tmp_path))
    try:
        with pytest.raises(RuntimeError, match="killed"), store.engine.begin() as conn:
            conn.execute(text("CREATE TABLE half_done (x INTEGER)"))
            raise RuntimeError("killed")
        with store.engine.connect() as conn:
            names = conn.execute(text("SELECT name FROM sqlite_master")).scalars().all()
        assert "half_done" not in names and "runs" in names
    finally:
        store.close()
    store = open_store(default_url(tmp_path))  # and the database still opens
    store.close()
