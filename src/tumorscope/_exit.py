"""A process's exit without the cyclic garbage collector's passes over what it leaves.

Tearing down a process that ran a command (or a Dask worker that ran subjects) cost about a
second: as the interpreter cleared the modules, the collector traversed the ~330,000
objects of numba, pandas, SQLAlchemy and the package again and again (1.1–1.3 s after a
``tumorscope run`` of one visit, 0.2–0.3 s without; ``benchmarks/bench_cli_exit.py``).
:func:`skip_collection_at_exit` registers an ``atexit`` handler that disables the collector and
freezes what is left (``gc.freeze``), so the interpreter's last collections skip it.

What that skips is the finalizers of objects that only a reference cycle still holds at exit.
tumorscope closes its files and its database before a command or a task returns; the
interpreter still flushes ``stdout``/``stderr``, and the other ``atexit`` handlers (logging's
flush, temporary folders, Dask's) run as before. ``TUMORSCOPE_EXIT_GC=1`` keeps the
collection (the benchmark's baseline).
"""

from __future__ import annotations

import atexit
import gc
import os

__all__ = ["skip_collection_at_exit"]

#: Whether this process registered the handler (what a Dask worker reports to the tests).
registered = False


def _freeze() -> None:
    if os.environ.get("TUMORSCOPE_EXIT_GC", "0") == "1":
        return
    gc.disable()
    gc.freeze()


def skip_collection_at_exit() -> None:
    """Register the ``atexit`` handler (once per process, however often it is called)."""
    global registered
    atexit.unregister(_freeze)
    atexit.register(_freeze)
    registered = True
