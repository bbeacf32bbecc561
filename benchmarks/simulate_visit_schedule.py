"""What the memory budget costs the default mode on the large visit, simulated.

Runs :func:`tumorscope.pipeline.schedule.simulate` (the rules of ``execute._run_plan``: two
units at a time, requirements, the memory budget) on the large visit's 16 units with each
step's serial warm seconds measured on 2026-12-06 (``benchmarks/bench_visit.py``, serial mode;
edit ``COST`` after a step changes) and each counted step's memory estimate (``Step.memory``
times its largest input, float32 MB), in the order :func:`~tumorscope.pipeline.schedule.
plan_order` picks, for the current estimates, lower ones, and no budget. A simulation, not a
measurement: a unit alone runs at its one-thread speed in the model (on both cores in fact),
so the absolute times are pessimistic; the differences between the rows are the point.

Run::

    python benchmarks/simulate_visit_schedule.py
"""

from __future__ import annotations

from tumorscope.pipeline import steps
from tumorscope.pipeline.schedule import Job, plan_order, simulate

#: Serial warm seconds per step on the large visit (2026-12-06).
COST = {
    "register": 0.37,
    "align": 0.29,
    "fit_dwi": 0.45,
    "fit_dce": 0.45,
    "fit_relax": 0.85,
    "iron": 0.31,
    "hypoxia": 0.01,
    "metabolic": 0.62,
    "pet": 0.13,
    "functional": 0.02,
    "features": 0.08,
    "fit_cest": 1.65,
    "measure": 0.3,
    "assess": 0.3,
    "report_viewer": 0.5,
    "report_subject": 0.29,
}

#: Memory estimates of the counted steps on the large visit (MB): ``Step.memory`` times the
#: largest input held as float32; the budget is 3 × the largest series (the DCE, 98.3 MB).
MEMORY = {
    "fit_dwi": 78.6,
    "fit_dce": 294.9,
    "fit_relax": 106.2,
    "metabolic": 165.2,
    "fit_cest": 206.4,
    "measure": float("inf"),
}
BUDGET = 294.9


def run(memory: dict[str, float]) -> tuple[float, list[str]]:
    """The simulated seconds of the planned order, and its first units."""
    table = {s.name: s for s in steps.STEPS}
    jobs = [
        Job(
            n,
            COST[n],
            memory.get(n, 0.0),
            tuple(r for r in table[n].requires if r in COST),
            table[n].exclusive,
        )
        for n in COST
    ]
    order = plan_order(jobs, BUDGET)
    return simulate(jobs, order, BUDGET), [jobs[i].step for i in order][:9]


def main() -> None:
    print(f"16 units, {sum(COST.values()):.2f} s serial")
    for label, memory in (
        ("current estimates, budget 3x", MEMORY),
        ("fit_dce at 1.7x its series (167 MB)", {**MEMORY, "fit_dce": 167.0}),
        ("fit_dce 1.7x, fit_cest 2.5x (148 MB)", {**MEMORY, "fit_dce": 167.0, "fit_cest": 148.0}),
        ("no budget", {}),
    ):
        seconds, first = run(memory)
        print(f"{label:40s} {seconds:5.2f} s  {first}")


if __name__ == "__main__":
    main()
