"""How a run ended: :class:`RunSummary`, :class:`Failure`, and a unit's :class:`Outcome`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .step import Unit, Write

__all__ = ["Failure", "Outcome", "RunSummary", "SummaryPrinter"]


@dataclass(frozen=True)
class Failure:
    """A unit of work that failed, and why."""

    step: str
    unit: str
    subject: str | None
    message: str
    file: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = ": ".join(x for x in (self.file, self.field) if x)
        return f"{self.step} {self.unit}: {where + ': ' if where else ''}{self.message}"


@dataclass
class Outcome:
    """What a worker returns for one unit."""

    unit: Unit
    status: str  # "done", "skipped" or "failed"
    input_hash: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    writes: list[Write] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    error_file: str | None = None
    error_field: str | None = None
    traceback: str | None = None
    duration_s: float = 0.0


@dataclass
class RunSummary:
    """How a run ended.

    Attributes
    ----------
    run_id : str
    out_dir : Path
    db_url : str
    log_file : Path
    report : Path or None
        The study report (``report/index.html``).
    done, skipped : list of str
        Units that ran, units that were up to date (``"step sub-001/ses-01"``).
    failed : list of Failure
    blocked : list of str
        Units not run because an earlier step of the subject failed.
    not_wired : dict of str to str
        Steps that could not run in this installation, and why.
    """

    run_id: str
    out_dir: Path
    db_url: str
    log_file: Path
    report: Path | None = None
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    not_wired: dict[str, str] = field(default_factory=dict)
    n_subjects: int = 0
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no unit failed."""
        return not self.failed

    @property
    def exit_code(self) -> int:
        """0 when everything ran, 1 when some unit failed (the CLI's exit code)."""
        return 0 if self.ok else 1

    @property
    def failed_subjects(self) -> list[str]:
        return sorted({f.subject for f in self.failed if f.subject is not None})


#: Type of a function that prints a summary (the CLI's).
SummaryPrinter = Callable[[RunSummary], None]
