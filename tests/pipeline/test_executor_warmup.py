"""``Executor.warm_up`` on a local Dask cluster: the workers share the kernels' compilation.

Two worker processes on a private, empty ``NUMBA_CACHE_DIR`` (a fresh install) warm up two
cheap kernels of the table: each kernel is compiled by exactly one worker and loaded from the
cache by the other (before, each worker compiled every kernel at its first call). A serial
executor has no workers to warm up; ``TUMORSCOPE_KERNEL_WARM_UP=0`` turns it off.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from tumorscope._compile import KERNELS
from tumorscope.pipeline.executor import Executor

pytest.importorskip("numba")
pytest.importorskip("distributed")

SUBSET = tuple(k for k in KERNELS if k.name in ("fixed_point_normal", "peak_signal"))


def test_two_workers_compile_each_kernel_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))  # inherited by the workers
    monkeypatch.delenv("TUMORSCOPE_KERNEL_WARM_UP", raising=False)
    ex = Executor(workers=2, scheduler=None)
    try:
        ex.warm_up(modules=(), kernels=SUBSET)
        reports = ex.warm_reports()
    finally:
        ex.close()
    assert len(reports) == 2
    keys = sorted(k.key for k in SUBSET)
    for r in reports:
        assert r.failed == {}
        assert sorted(r.warmed) == keys  # every worker has every kernel, compiled or loaded
    compiled = sorted(key for r in reports for key in r.compiled)
    assert compiled == keys  # each compiled once, by one worker
    assert (tmp_path / "numba" / "tumorscope-warm-up-locks").is_dir()


def test_close_soon_stops_the_workers_in_the_background_and_close_waits() -> None:
    ex = Executor(workers=1, scheduler=None)
    client, cluster = ex.client, ex.cluster
    ex.close_soon()
    assert ex.client is None and ex.cluster is None  # no new work can go to it
    assert ex.description == "serial"
    ex.close()  # waits for the background close
    assert ex._closing is None
    assert client.status == "closed" and cluster.status.name == "closed"
    ex.close()  # idempotent


def test_a_background_start_returns_at_once_and_the_client_waits_for_it() -> None:
    ex = Executor(workers=1, scheduler=None, background=True)
    try:
        assert ex._starting is not None  # returned before the cluster is up
        assert ex.distributed and ex.description.startswith("local Dask cluster")
        assert ex.client.submit(pow, 2, 5).result() == 32  # waits for the start
        assert ex._starting is None and ex.cluster is not None
    finally:
        ex.close()
    assert ex.client is None and not ex.distributed


def test_a_failed_background_start_is_raised_where_the_cluster_is_needed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import dask.distributed

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("no free port")

    monkeypatch.setattr(dask.distributed, "LocalCluster", broken)
    ex = Executor(workers=1, scheduler=None, background=True)
    with pytest.raises(OSError, match="no free port"):
        _ = ex.client
    assert ex.client is None  # raised once; nothing left open
    ex.close()


def test_run_study_closes_the_cluster_it_started_when_the_folder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tumorscope.errors import DataError
    from tumorscope.phantom import make_study
    from tumorscope.pipeline import run_study
    from tumorscope.pipeline import runner as runner_mod

    made: list[Executor] = []

    class _Recording(Executor):
        def __init__(self, **kwargs: object) -> None:
            super().__init__(**kwargs)  # type: ignore[arg-type]
            made.append(self)

    monkeypatch.setattr(runner_mod, "Executor", _Recording)
    study = make_study(tmp_path / "s", size="tiny", seed=0, n_subjects=1)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("somebody's file")
    with pytest.raises(DataError):
        run_study(study, theirs, workers=1)
    [ex] = made
    assert ex._starting is None and ex._client is None and ex._cluster is None
    assert (theirs / "notes.txt").read_text() == "somebody's file"


def test_no_warm_up_without_workers_or_when_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    serial = Executor(workers=None, scheduler=None)
    serial.warm_up()
    assert serial.warming == []

    class _Client:
        def __init__(self) -> None:
            self.ran: list[object] = []
            self.submitted: list[object] = []

        def run(self, fn: object, *args: object) -> None:
            self.ran.append(fn)

        def submit(self, *args: object, **kwargs: object) -> None:
            self.submitted.append(args)

        def scheduler_info(self) -> dict[str, dict[str, object]]:
            return {"workers": {"tcp://a": {}, "tcp://b": {}}}

    ex = Executor(workers=None, scheduler=None)
    ex.client = _Client()
    monkeypatch.setenv("TUMORSCOPE_KERNEL_WARM_UP", "0")
    ex.warm_up()
    assert ex.client.ran and ex.client.submitted == []  # modules imported, no kernel task
    monkeypatch.delenv("TUMORSCOPE_KERNEL_WARM_UP")
    ex.warm_up()
    assert [a[1] for a in ex.client.submitted] == [0, 1]  # one task per worker, its index
    ex.client = None


class _FakeExecutor:
    """A serial executor that records what ``tumorscope run --workers`` does with it."""

    made: ClassVar[list[_FakeExecutor]] = []
    events: ClassVar[list[str]] = []

    def __init__(
        self,
        *,
        workers: int | None,
        scheduler: str | None,
        background: bool = False,
        warm: bool = False,
    ) -> None:
        self.workers, self.warmed, self.closed = workers, int(warm), 0
        self.background = background
        self.client, self.cluster, self.threads, self.n_workers = None, None, None, 1
        self.description, self.distributed = "fake", False
        _FakeExecutor.made.append(self)

    def warm_up(self) -> None:
        self.warmed += 1

    def close_soon(self) -> None:
        _FakeExecutor.events.append("close_soon")

    def close(self) -> None:
        self.closed += 1
        _FakeExecutor.events.append("close")


def test_run_with_workers_warms_its_cluster_up_and_closes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from tumorscope.cli import app
    from tumorscope.phantom import make_study
    from tumorscope.pipeline import executor as executor_mod
    from tumorscope.pipeline import runner as runner_mod

    study = make_study(tmp_path / "s", size="tiny", seed=0, n_subjects=1)
    _FakeExecutor.made.clear()
    _FakeExecutor.events.clear()
    # the CLI imports the class from its module when it runs; run_study bound it at import
    monkeypatch.setattr(executor_mod, "Executor", _FakeExecutor)
    monkeypatch.setattr(runner_mod, "Executor", _FakeExecutor)
    publish = runner_mod.publish

    def publishing(*args: object, **kwargs: object) -> object:
        _FakeExecutor.events.append("publish")
        return publish(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(runner_mod, "publish", publishing)
    args = ["run", str(study), "--out", str(tmp_path / "o"), "--steps", "register", "--no-report"]
    res = CliRunner().invoke(app, [*args, "--workers", "2"])
    assert res.exit_code == 0, res.output
    [ex] = _FakeExecutor.made
    assert ex.workers == 2 and ex.warmed == 1 and ex.closed >= 1  # used by the run, closed
    assert ex.background  # started while the run claims its folder and plans
    # the workers are let go before the tables are published, waited for before the end
    assert _FakeExecutor.events[:3] == ["close_soon", "publish", "close"]
    res = CliRunner().invoke(app, args)  # serial: run_study's own executor, not warmed up
    assert res.exit_code == 0, res.output
    assert [(e.workers, e.warmed) for e in _FakeExecutor.made[1:]] == [(None, 0)]


def test_the_local_cluster_runs_with_fewer_periodic_callbacks() -> None:
    """The scheduler and nannies of a local cluster share the client's event loop (and its
    cores) with the recording: no work stealing (a subject is sent only to a free worker),
    ticks every 500 ms, the nannies' memory monitors every 500 ms (``local_worker_config``)."""
    ex = Executor(workers=1, scheduler=None)
    try:
        scheduler = ex.cluster.scheduler
        assert "stealing" not in scheduler.extensions
        assert scheduler.periodic_callbacks["tick"].callback_time == 500
        (nanny,) = ex.cluster.workers.values()
        assert nanny.periodic_callbacks["memory_monitor"].callback_time == 500
        # and the worker process (its settings come with it from the nanny)
        ticks = ex.client.run(
            lambda dask_worker: dask_worker.periodic_callbacks["tick"].callback_time
        )
        assert list(ticks.values()) == [500]
    finally:
        ex.close()
