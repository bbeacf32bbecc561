"""``tumorscope demo`` uses the machine's cores by default."""

from __future__ import annotations

import os
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from tumorscope.cli import study as study_cli


def test_default_workers_follows_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert study_cli.default_workers() == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert study_cli.default_workers() == 1


def test_default_workers_is_serial_without_dask(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "distributed" else real(name)
    )
    assert study_cli.default_workers() == 1


@pytest.mark.parametrize("n", ["0", "99999999999"])  # the huge count hung (sweep s14 H2)
def test_demo_refuses_zero_workers(tmp_path, n) -> None:  # type: ignore[no-untyped-def]
    from tumorscope.cli import app

    res = CliRunner().invoke(
        app, ["demo", "--out", str(tmp_path / "d"), "--size", "tiny", "--workers", n]
    )
    assert res.exit_code == 2, res.output
    assert "--workers" in res.output
    assert not (tmp_path / "d").exists()  # refused before anything is written


class _FakeExecutor:
    """Stands in for the Dask executor: records what the demo does with it."""

    made: ClassVar[list[_FakeExecutor]] = []

    def __init__(self, *, workers: int | None, scheduler: str | None) -> None:
        self.workers, self.warmed, self.closed = workers, False, 0
        _FakeExecutor.made.append(self)

    def warm_up(self) -> None:
        self.warmed = True

    def close(self) -> None:
        self.closed += 1


def test_demo_starts_its_workers_early_and_closes_them_on_failure(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """The workers start (and import) while the phantom is written; a failure before the run
    (here an unknown phantom size) still closes them, once."""
    from tumorscope.cli import app
    from tumorscope.pipeline import executor as executor_mod

    _FakeExecutor.made.clear()
    monkeypatch.setattr(executor_mod, "Executor", _FakeExecutor)
    res = CliRunner().invoke(
        app, ["demo", "--out", str(tmp_path / "d"), "--size", "bogus", "--workers", "2"]
    )
    assert res.exit_code == 2, res.output
    assert "size" in res.output
    [ex] = _FakeExecutor.made
    assert ex.workers == 2 and ex.warmed and ex.closed == 1


def test_run_study_uses_a_given_executor_and_leaves_it_open(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tumorscope.phantom import make_study
    from tumorscope.pipeline import run_study
    from tumorscope.pipeline.executor import Executor

    study = make_study(tmp_path / "s", size="tiny", seed=0, n_subjects=1)
    ex = Executor(workers=None, scheduler=None)  # serial: no Dask needed
    closed = []
    ex.close = lambda: closed.append(1)  # type: ignore[method-assign]
    summary = run_study(study, tmp_path / "out", steps=["register"], executor=ex, report=False)
    assert summary.ok and "register sub-001" in summary.done
    assert closed == []  # the caller's to close


@pytest.mark.parametrize("users", ["study", "results"])
def test_demo_refuses_a_users_folder_before_writing_anything(tmp_path, users: str) -> None:  # type: ignore[no-untyped-def]
    """Found by the sweep of 2026-12-06: a user's ``OUT/results`` was refused only after the
    phantom study had been written beside it; a user's ``OUT/study`` was validated as if it
    were the demo's (exit 1). Both: exit 2, naming the folder, nothing written."""
    from tumorscope.cli import app

    out = tmp_path / "d"
    (out / users).mkdir(parents=True)
    (out / users / "mine.txt").write_text("the user's\n")
    res = CliRunner().invoke(app, ["demo", "--out", str(out), "--size", "tiny", "--workers", "1"])
    assert res.exit_code == 2, res.output
    assert users in res.output and "Traceback" not in res.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        users,
        f"{users}/mine.txt",
    ]
