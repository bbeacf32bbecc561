"""The study pipeline: every step for every subject and visit, serially or on Dask.

>>> from tumorscope.pipeline import run_study
>>> summary = run_study("study", "results", workers=2)        # doctest: +SKIP
>>> summary.exit_code, summary.report                          # doctest: +SKIP

See :mod:`tumorscope.pipeline.runner` (how a run goes, what "up to date" means),
:mod:`tumorscope.pipeline.steps` (the steps, their inputs and outputs),
:mod:`tumorscope.pipeline.step` (the step framework), :mod:`tumorscope.pipeline.options`
(:class:`RunOptions`) and ``docs/pipeline.md``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["STEPS", "Failure", "RunOptions", "RunSummary", "run_study", "write_reports"]


def __getattr__(name: str) -> Any:
    if name in ("run_study", "write_reports", "RunSummary", "Failure"):
        from . import runner

        return getattr(runner, name)
    if name == "RunOptions":
        from .options import RunOptions

        return RunOptions
    if name == "STEPS":
        from .steps import STEPS

        return STEPS
    raise AttributeError(f"module 'tumorscope.pipeline' has no attribute {name!r}")
