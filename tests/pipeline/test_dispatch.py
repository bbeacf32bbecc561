"""Dask dispatch of subjects (:func:`tumorscope.pipeline.executor.run_subjects`): the largest
subjects first, at most one running per worker thread and one more sent ahead to it, a worker
that finishes gets the next subject at once (not after another worker's long subject), and
the last subjects go to workers that have nothing left."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from tumorscope.pipeline import executor as ex_mod

pytest.importorskip("dask.distributed")

# seconds each fake subject takes; the number of units sets the dispatch order
SUBJECTS = {"001": (3, 1.2), "002": (2, 0.1), "003": (1, 0.1), "004": (1, 0.1)}
# a cohort long enough for subjects to be sent ahead (more than two per worker thread)
MANY = {f"1{i:02d}": (1, 0.15 + 0.05 * (i % 3)) for i in range(8)}
_LOCK = threading.Lock()
_EVENTS: list[tuple[str, str, float]] = []
_WHERE: dict[str, str] = {}


def _fake_execute_subject(*, items: Any, **_: Any) -> list[Any]:
    """Stands in for a subject's steps (module level: Dask pickles it by reference)."""
    from dask.distributed import get_worker

    sid = items[0][1][0]
    with _LOCK:
        _EVENTS.append(("start", sid, time.perf_counter()))
        _WHERE[sid] = get_worker().address
    time.sleep({**SUBJECTS, **MANY}[sid][1])
    with _LOCK:
        _EVENTS.append(("stop", sid, time.perf_counter()))
    return []


def _dispatch(
    monkeypatch: pytest.MonkeyPatch, subjects: dict[str, tuple[int, float]]
) -> list[float]:
    """Run the fake subjects through ``run_subjects`` on 2 one-thread workers; the times at
    which each subject was submitted."""
    from dask.distributed import Client, LocalCluster

    _EVENTS.clear()
    _WHERE.clear()
    monkeypatch.setattr(ex_mod, "execute_subject", _fake_execute_subject)
    monkeypatch.setattr(ex_mod, "subject_records", lambda store, sid: {})
    step = SimpleNamespace(name="toy")
    plan = {sid: [(step, [sid] * n)] for sid, (n, _) in sorted(subjects.items(), reverse=True)}
    bars = SimpleNamespace(
        progress=None, advance_units=lambda n: None, advance_subject=lambda: None
    )
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        submitted: list[float] = []

        class Counting:  # the client, noting when each subject is submitted
            def __getattr__(self, name: str) -> Any:
                return getattr(client, name)

            def submit(self, *args: Any, **kwargs: Any) -> Any:
                submitted.append(time.perf_counter())
                return client.submit(*args, **kwargs)

        executor = SimpleNamespace(client=Counting(), threads=1, slots=lambda: 2)
        ex_mod.run_subjects(
            plan,
            None,
            None,
            executor,
            None,
            frozenset(),
            frozenset(),
            bars,  # type: ignore[arg-type]
        )
    events = list(_EVENTS)
    assert {sid for kind, sid, _ in events if kind == "start"} == set(subjects)
    return submitted, events, {sid: t for kind, sid, t in events if kind == "start"}


def _peak(events: list[tuple[str, str, float]]) -> int:
    running, peak = 0, 0
    for kind, _, _ in sorted(events, key=lambda e: e[2]):
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    return peak


def test_a_freed_worker_takes_the_next_subject_while_the_big_one_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    submitted, events, starts = _dispatch(monkeypatch, SUBJECTS)
    stops = {sid: t for kind, sid, t in events if kind == "stop"}
    # the two largest first (the plan lists them last)
    assert sorted(starts, key=starts.__getitem__)[:2] == ["001", "002"]
    # the third subject leaves the client only after one of the first two has returned
    assert len(submitted) == 4 and submitted[2] > min(stops["001"], stops["002"])
    # never more than two at once (one per worker thread)
    assert _peak(events) == 2
    # 003 and 004 ran on the freed worker while 001 (1.2 s) was still running
    assert stops["004"] < stops["001"] and stops["003"] < stops["001"]


def test_the_next_subject_waits_on_its_worker_and_the_last_ones_go_to_idle_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    submitted, events, _ = _dispatch(monkeypatch, MANY)
    stops = sorted(t for kind, _, t in events if kind == "stop")
    assert len(submitted) == len(MANY)
    assert _peak(events) == 2  # one running per worker thread
    # one subject per worker sent ahead at the start, before any has returned
    assert submitted[3] < stops[0]
    # each worker runs its subjects one after the other, and starts the next one that was
    # sent ahead at once (no round trip through the client)
    for worker in set(_WHERE.values()):
        mine = sorted((t, kind) for kind, sid, t in events if _WHERE[sid] == worker)
        assert [k for _, k in mine] == ["start", "stop"] * (len(mine) // 2)
    # never more than two subjects held by the two workers beyond the ones running...
    for i, t in enumerate(submitted):
        returned = sum(1 for s in stops if s < t)
        assert i - returned <= 3  # (before this one: at most 2 per worker, with it)
    # ...and the last two go to a worker with nothing left: at most one other outstanding
    for i in (len(submitted) - 2, len(submitted) - 1):
        returned = sum(1 for s in stops if s < submitted[i])
        assert i - returned <= 2
