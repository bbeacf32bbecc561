"""The order in which a subject's units start when they run two at a time (the default mode).

:func:`.execute._run_plan` starts, whenever a thread is free, the first unit of its *order*
whose requirements have finished and whose memory estimate fits beside the running units.
Plan order (the step table's) leaves gaps on the large visit: the longest chain
(register → fit_relax → fit_cest → measure → …) starts late, and ``fit_dce``, whose estimate
fills the whole memory budget, can only run beside steps that are not counted (``align``,
``iron``, ``pet``), which plan order has often used up by then.

So the order is planned: :func:`plan_order` simulates the rules of ``_run_plan`` on each
unit's estimated seconds (``Step.cost``) and memory (``Step.memory`` times its largest
input), starts from the longest-chain-first order (:func:`chain_ranks`), and keeps the swaps
of two units that shorten the simulated run (a bounded local search: a few milliseconds for
a visit). Only the order changes: each unit still starts after every unit it requires, so
input hashes and outputs are those of the one-at-a-time order.

The simulation's model of two units at once: each progresses at :data:`PAIR_RATE` of its
speed alone (measured: the default mode's two units at a time are 1.47–1.62× one at a time
on the large visit, ``benchmarks/bench_visit.py``, ``docs/performance.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "PAIR_RATE",
    "SEARCH_JOBS",
    "SEARCH_RUNS",
    "Job",
    "chain_ranks",
    "plan_order",
    "simulate",
]

#: The speed of each of two units running at once, as a fraction of its speed alone.
PAIR_RATE = 0.8

#: The most simulations :func:`plan_order` runs (a bound on its search, not a clock: the same
#: plan gives the same order on any machine).
SEARCH_RUNS = 400

#: The largest plan :func:`plan_order` searches (a visit's units and its subject's: the
#: subjects of many visits keep the longest-chain-first order).
SEARCH_JOBS = 32


@dataclass(frozen=True)
class Job:
    """One unit as the schedule sees it.

    Attributes
    ----------
    step : str
        Its step; ``requires`` names steps, every unit of which must finish first.
    cost : float
        Estimated seconds alone.
    memory : float
        Estimated peak bytes (0: not counted, ``inf``: beside no other counted unit).
    requires : tuple of str
    exclusive : tuple of str
        What no two running units may hold at once.
    """

    step: str
    cost: float
    memory: float = 0.0
    requires: tuple[str, ...] = ()
    exclusive: tuple[str, ...] = ()


def chain_ranks(jobs: Sequence[Job]) -> list[float]:
    """Each job's rank: the estimated seconds of the longest chain of steps it starts (the
    step's total cost over its units, plus the longest rank among the steps requiring it)."""
    total: dict[str, float] = {}
    for j in jobs:
        total[j.step] = total.get(j.step, 0.0) + j.cost
    after: dict[str, set[str]] = {s: set() for s in total}
    for j in jobs:
        for r in j.requires:
            if r in after and r != j.step:
                after[r].add(j.step)
    rank: dict[str, float] = {}

    def of(step: str) -> float:
        if step not in rank:
            rank[step] = 0.0  # a cycle (none in the step table) cannot recurse forever
            rank[step] = total[step] + max((of(t) for t in after[step]), default=0.0)
        return rank[step]

    return [of(j.step) for j in jobs]


def simulate(jobs: Sequence[Job], order: Sequence[int], budget: float, width: int = 2) -> float:
    """The simulated seconds of running ``jobs`` under ``_run_plan``'s rules, starting the
    first ready job of ``order`` whenever fewer than ``width`` run."""
    left = {s: 0 for s in (j.step for j in jobs)}
    for j in jobs:
        left[j.step] += 1
    remaining = [j.cost for j in jobs]
    waiting = list(order)
    running: list[int] = []
    t = 0.0
    while waiting or running:
        # nothing running and nothing ready (a step requiring one later in the plan): the
        # earliest waiting unit starts, as in _run_plan
        stuck = not running and not any(_ready(jobs, k, running, left, budget) for k in waiting)
        for i in list(waiting):
            if len(running) >= width:
                break
            if _ready(jobs, i, running, left, budget) or (stuck and i == min(waiting)):
                running.append(i)
                waiting.remove(i)
                stuck = False
        if not running:  # pragma: no cover - the stuck rule always starts one
            break
        rate = 1.0 if len(running) == 1 else PAIR_RATE
        dt = min(remaining[i] for i in running) / rate
        t += dt
        for i in list(running):
            remaining[i] -= dt * rate
            if remaining[i] <= 1e-12:
                running.remove(i)
                left[jobs[i].step] -= 1
    return t


def _ready(
    jobs: Sequence[Job], i: int, running: Sequence[int], left: dict[str, int], budget: float
) -> bool:
    job = jobs[i]
    if any(left.get(r, 0) for r in job.requires if r != job.step):
        return False
    held = {g for k in running for g in jobs[k].exclusive}
    if held.intersection(job.exclusive):
        return False
    if job.memory:
        counted = [jobs[k].memory for k in running if jobs[k].memory]
        if counted and (budget <= 0 or sum(counted) + job.memory > budget):
            return False
    return True


def plan_order(jobs: Sequence[Job], budget: float, width: int = 2) -> list[int]:
    """The order in which ``_run_plan`` should start ``jobs``.

    Longest chain first (:func:`chain_ranks`; plan order among equals), then, for a plan of
    at most :data:`SEARCH_JOBS` units, improved by swapping two units of different steps
    while the simulated run gets shorter (first improvement, at most :data:`SEARCH_RUNS`
    simulations). Deterministic: the same plan gives the same order on any machine.
    """
    rank = chain_ranks(jobs)
    order = sorted(range(len(jobs)), key=lambda i: (-rank[i], i))
    if width < 2 or not 3 <= len(jobs) <= SEARCH_JOBS:
        return order
    best = simulate(jobs, order, budget, width)
    runs = 1
    improved = True
    while improved:
        improved = False
        for a in range(len(order) - 1):
            for b in range(a + 1, len(order)):
                if jobs[order[a]].step == jobs[order[b]].step:
                    continue
                if runs >= SEARCH_RUNS:
                    return order
                trial = order.copy()
                trial[a], trial[b] = trial[b], trial[a]
                t = simulate(jobs, trial, budget, width)
                runs += 1
                if t < best - 1e-9:
                    order, best, improved = trial, t, True
    return order
