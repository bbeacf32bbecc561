"""Progress of the voxel chunks of fits, for whoever shows it (the pipeline's progress bars).

The fitting engine reports two events: ``("planned", n)`` when a fit is about to process
``n`` chunks of voxels, and ``("done", 1)`` after each chunk. Nobody listens by default.
The pipeline installs a hook for the duration of a run: in a serial run it advances a Rich
progress bar directly; on a Dask worker it forwards the events to the client as Dask worker
events (topic :data:`TOPIC`), and the client advances the bar.

A hook must be cheap and must not raise; an exception in it is swallowed (progress never
breaks a fit).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["TOPIC", "ProgressHook", "chunk_progress", "report", "set_hook"]

#: Dask event topic of the chunk events sent from workers.
TOPIC = "tumorscope-chunks"

#: ``hook(event, n)`` with event ``"planned"`` or ``"done"``.
ProgressHook = Callable[[str, int], None]

_lock = threading.Lock()
_hook: ProgressHook | None = None


def set_hook(hook: ProgressHook | None) -> ProgressHook | None:
    """Install ``hook`` for every fit in this process; returns the previous hook."""
    global _hook
    with _lock:
        prev, _hook = _hook, hook
    return prev


@contextmanager
def chunk_progress(hook: ProgressHook) -> Iterator[None]:
    """Install ``hook`` for the duration of a ``with`` block."""
    prev = set_hook(hook)
    try:
        yield
    finally:
        set_hook(prev)


def report(event: str, n: int) -> None:
    """Send one event to the installed hook, if any (called by the fitting engine)."""
    hook = _hook
    if hook is None:
        return
    try:
        hook(event, int(n))
    except Exception:  # a progress display must never break a fit
        pass
