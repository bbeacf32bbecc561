"""Warnings caught per thread: :func:`capture_warnings`.

``warnings.catch_warnings(record=True)`` swaps process-wide state (the filters and the
function that shows a warning) and puts it back on exit. Two threads inside it at once see
each other's warnings, and the one that leaves first puts back a state the other still
relies on: its warnings go to the wrong list, or are lost. The pipeline runs independent
steps of a subject in threads at once (:func:`tumorscope.pipeline.execute.execute_subject`),
and each step's :class:`~tumorscope.errors.TumorscopeWarning` messages become that step's
notes and the provenance of its maps, so they must reach the step that raised them.

:func:`capture_warnings` installs one dispatcher for the whole process while any capture is
open (the first to enter saves the filters and ``warnings.showwarning``; the last to leave
puts them back, as ``catch_warnings`` does), with the filter ``"always"`` for
:class:`~tumorscope.errors.TumorscopeWarning`. A warning is appended to the innermost
capture open *in the thread that raised it*; a thread without one (a thread some library
started) shows it as before. Nested captures in one thread see only their own warnings.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import TumorscopeWarning

__all__ = ["capture_warnings"]

_local = threading.local()
_lock = threading.Lock()
_users = 0
_saved: tuple[Any, list[Any]] | None = None  # showwarning and filters before the first capture


def _dispatch(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    stack = getattr(_local, "stack", None)
    if stack:
        stack[-1].append(warnings.WarningMessage(message, category, filename, lineno, file, line))
        return
    show = _saved[0] if _saved is not None else warnings._showwarning_orig  # type: ignore[attr-defined]
    if show is _dispatch:  # pragma: no cover - defensive: never show through ourselves
        show = warnings._showwarning_orig  # type: ignore[attr-defined]
    show(message, category, filename, lineno, file, line)


@contextmanager
def capture_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Catch the warnings raised in this thread inside the block (every category; each
    :class:`~tumorscope.errors.TumorscopeWarning` always, not once per place).

    Yields
    ------
    list of warnings.WarningMessage
        Filled as warnings are raised, like ``catch_warnings(record=True)``.
    """
    global _users, _saved
    with _lock:
        if _users == 0:
            _saved = (warnings.showwarning, list(warnings.filters))
            warnings.showwarning = _dispatch
            warnings.simplefilter("always", TumorscopeWarning)
        _users += 1
    stack = _local.__dict__.setdefault("stack", [])
    caught: list[warnings.WarningMessage] = []
    stack.append(caught)
    try:
        yield caught
    finally:
        stack.pop()
        with _lock:
            _users -= 1
            if _users == 0 and _saved is not None:
                show, filters = _saved
                _saved = None
                if warnings.showwarning is _dispatch:
                    warnings.showwarning = show
                warnings.filters[:] = filters  # type: ignore[index]
                warnings._filters_mutated()  # type: ignore[attr-defined]
