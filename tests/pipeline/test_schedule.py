"""The planned order of a subject's units two at a time (``pipeline.schedule``): the
simulation follows ``_run_plan``'s rules, and the planned order is never worse than plan
order or longest-chain-first in that simulation."""

from __future__ import annotations

import itertools
import math

import pytest

from tumorscope.pipeline import steps
from tumorscope.pipeline.schedule import PAIR_RATE, Job, chain_ranks, plan_order, simulate


def test_simulate_two_at_a_time_and_requirements() -> None:
    a, b = Job("a", 1.0), Job("b", 1.0)
    assert simulate([a, b], [0, 1], budget=0, width=1) == pytest.approx(2.0)
    assert simulate([a, b], [0, 1], budget=0, width=2) == pytest.approx(1 / PAIR_RATE)
    chain = [Job("a", 1.0), Job("b", 2.0, requires=("a",))]
    assert simulate(chain, [1, 0], budget=0, width=2) == pytest.approx(3.0)  # b waits for a


def test_simulate_memory_and_exclusive() -> None:
    big = [Job("a", 1.0, memory=6.0), Job("b", 1.0, memory=6.0)]
    assert simulate(big, [0, 1], budget=10.0) == pytest.approx(2.0)  # 12 > 10: one at a time
    assert simulate(big, [0, 1], budget=12.0) == pytest.approx(1 / PAIR_RATE)
    inf = [Job("m", 1.0, memory=math.inf), Job("x", 1.0)]  # not counted: beside it
    assert simulate(inf, [0, 1], budget=10.0) == pytest.approx(1 / PAIR_RATE)
    held = [Job("a", 1.0, exclusive=("itk",)), Job("b", 1.0, exclusive=("itk",))]
    assert simulate(held, [0, 1], budget=0) == pytest.approx(2.0)


def test_chain_ranks_count_every_unit_of_a_step() -> None:
    jobs = [Job("r", 1.0), Job("r", 1.0), Job("c", 2.0, requires=("r",)), Job("s", 0.5)]
    assert chain_ranks(jobs) == [4.0, 4.0, 2.0, 0.5]


def _visit_jobs(fill: float) -> list[Job]:
    """The large visit's shape: a long chain (relax → cest), a step filling the whole budget
    (dce) that can only run beside uncounted ones (align), and short fits."""
    return [
        Job("register", 0.3),
        Job("align", 0.75, requires=("register",)),
        Job("fit_dwi", 0.45, 80.0, ("register",)),
        Job("fit_dce", 0.45, fill, ("register",)),
        Job("fit_relax", 0.85, 106.0, ("register",)),
        Job("iron", 0.3, 0.0, ("register", "fit_relax")),
        Job("metabolic", 0.6, 165.0, ("register",)),
        Job("pet", 0.15, 0.0, ("register", "align")),
        Job("fit_cest", 1.75, 206.0, ("register", "align", "fit_relax")),
        Job("measure", 0.3, math.inf, ("fit_dwi", "fit_dce", "fit_relax", "fit_cest")),
    ]


@pytest.mark.parametrize("budget", [295.0, 400.0, 1e9])
def test_planned_order_is_no_worse(budget: float) -> None:
    jobs = _visit_jobs(295.0)
    order = plan_order(jobs, budget)
    assert sorted(order) == list(range(len(jobs)))
    assert plan_order(jobs, budget) == order  # deterministic
    rank = chain_ranks(jobs)
    by_rank = sorted(range(len(jobs)), key=lambda i: (-rank[i], i))
    planned = simulate(jobs, order, budget)
    assert planned <= simulate(jobs, list(range(len(jobs))), budget) + 1e-9
    assert planned <= simulate(jobs, by_rank, budget) + 1e-9
    # the fits in every order: the search finds the best or comes within 5 %
    fits = list(range(1, 9))
    best = min(simulate(jobs, [0, *p, 9], budget) for p in itertools.permutations(fits))
    assert planned <= best * 1.05


def test_planned_order_shortens_the_large_visit() -> None:
    """On the large visit's shape with the real memory rule the planned order is strictly
    shorter than plan order: dce goes beside align, relax beside metabolic."""
    jobs = _visit_jobs(295.0)
    order = plan_order(jobs, 295.0)
    assert simulate(jobs, order, 295.0) < simulate(jobs, list(range(len(jobs))), 295.0) - 0.1


def test_every_step_has_a_cost() -> None:
    assert all(s.cost > 0 for s in steps.STEPS)
