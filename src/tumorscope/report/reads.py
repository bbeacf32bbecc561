"""Files of a run read once per subject page: the maps, lesion labels, anatomical images and
measurement tables that several blocks of the page show (the map grids, the viewer, the CEST
and DSC sections ... each read a visit's labels and anatomical image: up to four times).

Inside :func:`once` (``write_subject_report`` wraps the page in it) the readers below keep
what they read until the page is written; outside it they just read. The cache lives in a
context variable, so two pages written at once in two threads do not share it. What they
return is shared by the blocks: read-only (a table is copied for each caller, as pandas
code tends to add columns).
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import pandas as pd

    from ..volume import Volume

__all__ = ["anatomical", "labels", "once", "parquet", "volume"]

_CACHE: contextvars.ContextVar[dict[tuple[str, str], Any] | None] = contextvars.ContextVar(
    "tumorscope_report_reads", default=None
)
T = TypeVar("T")


@contextmanager
def once() -> Iterator[None]:
    """Keep what the readers read until the block ends."""
    token = _CACHE.set({})
    try:
        yield
    finally:
        _CACHE.reset(token)


def _cached(kind: str, key: str, read: Callable[[], T], *, keep: bool = True) -> T:
    cache = _CACHE.get()
    if cache is None:
        return read()
    k = (kind, key)
    if k in cache:
        return cache[k]
    value = read()
    if keep:
        cache[k] = value
    return value


def volume(path: str | os.PathLike[str], *, keep: bool = True) -> Volume:
    """A map (``Volume.from_nifti``); ``keep=False``: taken from the cache if another block
    kept it, else read and not kept (the viewer reads every map once: keeping them all would
    hold a subject's maps in memory until the page is written)."""
    from ..volume import Volume

    key = str(Path(path).resolve())
    return _cached("nifti", key, lambda: Volume.from_nifti(path), keep=keep)


def labels(visit: Any) -> Volume | None:
    """The visit's lesion labels (``visit.lesions.load_labels()``), None without lesions."""
    if visit.lesions is None:
        return None
    return _cached("labels", str(visit.lesions.map_path), visit.lesions.load_labels)


def anatomical(visit: Any) -> Volume | None:
    """The visit's anatomical image (``visit.series["anatomical"].load()``), or None."""
    series = visit.series.get("anatomical")
    if series is None:
        return None
    return _cached("anatomical", str(series.path), series.load)


def parquet(path: str | os.PathLike[str]) -> pd.DataFrame | None:
    """A table of the run (a copy for each caller), None if the file does not exist."""
    import pandas as pd

    p = Path(path)
    if not p.exists():
        return None
    frame = _cached("parquet", str(p.resolve()), lambda: pd.read_parquet(p))
    return frame.copy()
