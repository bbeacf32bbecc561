"""A Ctrl-C that Python code below tumorscope swallowed: remembered, and acted on.

Python raises ``KeyboardInterrupt`` in whatever Python code runs when the signal is handled.
During numba's first compilation of a kernel (a fresh install, or after an upgrade) that is
often a ctypes callback of llvmlite (its object cache's notification), whose exceptions
ctypes prints as "Exception ignored" and drops: the command ran on for a minute and exited 0
with every output written (sweep of 2026-12-06, four Ctrl-C of five).

The command line's handler (:func:`install`, called by :func:`tumorscope.cli.main`) therefore
remembers the signal before raising as Python's own handler does; :func:`check` raises it
again where tumorscope decides to deliver what it wrote (the single commands' staging,
:mod:`tumorscope.cli._output`), and :func:`seen` makes the command exit 130, the shell's code
for an interrupted command, whatever swallowed the exception on the way.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["EXIT_CODE", "check", "install", "seen"]

#: The exit code of a command stopped by Ctrl-C (128 + SIGINT).
EXIT_CODE = 128 + int(signal.SIGINT)

_seen = threading.Event()


def _handler(signum: int, frame: FrameType | None) -> None:
    _seen.set()
    raise KeyboardInterrupt


def install() -> None:
    """Handle SIGINT by remembering it and raising ``KeyboardInterrupt`` (in the main thread
    only: Python delivers signals there; elsewhere nothing is installed)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _handler)


def seen() -> bool:
    """Whether a Ctrl-C arrived since :func:`install`."""
    return _seen.is_set()


def check() -> None:
    """Raise ``KeyboardInterrupt`` if a Ctrl-C arrived, even one swallowed since."""
    if _seen.is_set():
        raise KeyboardInterrupt
