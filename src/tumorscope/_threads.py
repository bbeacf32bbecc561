"""The calling thread's share of the cores, and work mapped onto it.

The pipeline's executor sets numba's thread count per unit of work (one in a serial run or
on a one-thread Dask worker, two when a unit runs alone on two cores), so that count is the
unit's share of the cores: the compiled kernels use it, and so do the parts that read or
write many images on threads (decompression and compression release the GIL).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["map_threads", "share_of_cores"]

T = TypeVar("T")
R = TypeVar("R")


def share_of_cores(*, load: bool = False) -> int:
    """This thread's share of the cores: numba's thread count in this thread, else one
    (without numba nothing says what the share is).

    ``load``: import numba if it is not loaded yet (the pipeline's first step, before any
    kernel ran); by default a process that never loaded numba (e.g. a report written on its
    own) does not pay its import to learn the count, and gets one.
    """
    numba = sys.modules.get("numba")
    if numba is None and load:
        try:
            import numba
        except ImportError:  # pragma: no cover - the fast extra is installed wherever tests run
            return 1
    if numba is None:
        return 1
    return max(1, int(numba.get_num_threads()))


def map_threads(fn: Callable[[T], R], items: Iterable[T], *, name: str = "tumorscope") -> list[R]:
    """``[fn(x) for x in items]``, on :func:`share_of_cores` threads when that is more than
    one (results in the order of ``items``; the first exception is raised, as in the loop)."""
    todo = list(items)
    threads = min(share_of_cores(), len(todo))
    if threads <= 1:
        return [fn(x) for x in todo]
    with ThreadPoolExecutor(threads, thread_name_prefix=name) as pool:
        return list(pool.map(fn, todo))
