"""Dask dispatch of subjects (:func:`tumorscope.pipeline.executor.run_subjects`): the largest
subjects first, at most one per worker thread on the cluster, and a worker that finishes
gets the next subject at once (not after another worker's long subject)."""

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
_LOCK = threading.Lock()
_EVENTS: list[tuple[str, str, float]] = []


def _fake_execute_subject(*, items: Any, **_: Any) -> list[Any]:
    """Stands in for a subject's steps (module level: Dask pickles it by reference)."""
    sid = items[0][1][0]
    with _LOCK:
        _EVENTS.append(("start", sid, time.perf_counter()))
    time.sleep(SUBJECTS[sid][1])
    with _LOCK:
        _EVENTS.append(("stop", sid, time.perf_counter()))
    return []


def test_a_freed_worker_takes_the_next_subject_while_the_big_one_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dask.distributed import Client, LocalCluster

    _EVENTS.clear()
    monkeypatch.setattr(ex_mod, "execute_subject", _fake_execute_subject)
    monkeypatch.setattr(ex_mod, "subject_records", lambda store, sid: {})
    step = SimpleNamespace(name="toy")
    plan = {sid: [(step, [sid] * n)] for sid, (n, _) in sorted(SUBJECTS.items(), reverse=True)}
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
    starts = {sid: t for kind, sid, t in events if kind == "start"}
    stops = {sid: t for kind, sid, t in events if kind == "stop"}
    assert set(starts) == set(SUBJECTS)
    # the two largest first (the plan lists them last)
    assert sorted(starts, key=starts.__getitem__)[:2] == ["001", "002"]
    # the third subject leaves the client only after one of the first two has returned
    assert len(submitted) == 4 and submitted[2] > min(stops["001"], stops["002"])
    # never more than two at once (one per worker thread)
    running, peak = 0, 0
    for kind, _, _ in sorted(events, key=lambda e: e[2]):
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 2
    # 003 and 004 ran on the freed worker while 001 (1.2 s) was still running
    assert stops["004"] < stops["001"] and stops["003"] < stops["001"]
