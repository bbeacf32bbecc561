"""Progress bars of a run (subjects, units of work, voxel chunks of the fits)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["Bars"]


class Bars:
    """Rich progress bars for subjects and units (no-ops when disabled)."""

    def __init__(self, enabled: bool, console: Console | None, n_subjects: int, n_units: int):
        self.progress: Any = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self.progress = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            )
            self.t_subjects = self.progress.add_task("subjects", total=n_subjects)
            self.t_units = self.progress.add_task("units of work", total=n_units)
            # total grows as fits start: each fit announces its chunks
            self.t_chunks = self.progress.add_task("voxel chunks", total=0)
            self._lock = threading.Lock()

    def __enter__(self) -> Bars:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def advance_units(self, n: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.t_units, n)

    def chunks(self, event: str, n: int) -> None:
        """A fitting-engine chunk event (``"planned"`` n chunks, or ``"done"``)."""
        if self.progress is None:
            return
        with self._lock:
            if event == "planned":
                task = self.progress.tasks[self.t_chunks]
                self.progress.update(self.t_chunks, total=(task.total or 0) + n)
            elif event == "done":
                self.progress.advance(self.t_chunks, n)

    def advance_subject(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.t_subjects, 1)
