"""Representative frames: the brightest 3-D frame of a series (the one ``align`` registers),
and the frames found while a series was read for another reason, kept for ``align``.

``register``'s check of a run's images (:func:`tumorscope.io.study.validate_visit`) reads
every series whole, frame by frame; ``align`` then needs each series' representative frame.
The check finds it on the way and keeps it here (:func:`keep_frame`), per file identity, and
``align`` takes it (:func:`take_frame`) instead of reading the series a second time. Both use
:func:`frame_mean` and :class:`BrightestFrame`, so the frame is the same either way.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .volume import Volume

__all__ = ["KEPT_FRAME_BYTES", "BrightestFrame", "frame_mean", "keep_frame", "take_frame"]


def frame_mean(f: np.ndarray) -> float:
    """The mean of a frame's finite voxels, accumulated in float64 (-inf if none): what
    picks a series' representative frame (``tumorscope.pipeline.align``)."""
    total = float(np.sum(f, dtype=np.float64))
    if np.isfinite(total):  # every voxel finite (one NaN or infinity would show in the sum)
        return total / f.size if f.size else -np.inf
    fin = np.isfinite(f)
    n = int(np.count_nonzero(fin))
    return float(np.sum(f, where=fin, dtype=np.float64)) / n if n else -np.inf


class BrightestFrame:
    """The frame with the largest :func:`frame_mean` among those offered one at a time (the
    first of equal means, as ``argmax``): a series' representative frame."""

    def __init__(self) -> None:
        self.frame: Any = None
        self.mean = -np.inf

    def offer(self, frame: Any, data: np.ndarray | None = None) -> None:
        """Consider ``frame`` (a Volume, or anything whose values are ``data``)."""
        mean = frame_mean(frame.data if data is None else data)
        if self.frame is None or mean > self.mean:
            self.frame, self.mean = frame, mean

    def offer_stored(self, stored: np.ndarray, make: Any) -> None:
        """Consider a frame given by its stored values (``stored``, any dtype) and made (as
        float32) by ``make()`` only if it is the brightest so far.

        Integers of at most 16 bits are exact in float32 and their float64 sums exact, so
        their integer sum gives :func:`frame_mean` of the float32 frame bit for bit without
        the frame (the check of a run's images reads every frame of every series); other
        dtypes are made and measured."""
        if stored.dtype.kind in "iu" and stored.dtype.itemsize <= 2 and stored.size:
            mean = float(np.sum(stored, dtype=np.int64)) / stored.size
            if self.frame is None or mean > self.mean:
                self.frame, self.mean = make(), mean
            return
        frame = make()
        self.offer(frame, frame)


#: Representative frames found while a series was read for another reason (the check of a
#: run's images, ``tumorscope.io.study``), kept for the step that needs them next
#: (``align``): ``{file identity: frame}``, at most :data:`KEPT_FRAME_BYTES` in all.
_KEPT: dict[tuple[Any, ...], Volume] = {}
_KEPT_LOCK = threading.Lock()

#: The most bytes of frames :func:`keep_frame` holds (the oldest are dropped beyond it).
KEPT_FRAME_BYTES = 64 << 20


def _identity(path: Path) -> tuple[Any, ...] | None:
    """A file's path and what changes when it is rewritten (size, times, inode)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def keep_frame(path: str | os.PathLike[str], frame: Volume) -> None:
    """Keep ``frame`` (a representative frame of the image ``path``) for :func:`take_frame`,
    in this process, while the file is unchanged; the oldest kept frames are dropped once
    they hold more than :data:`KEPT_FRAME_BYTES`."""
    key = _identity(Path(path))
    if key is None or frame.data.nbytes > KEPT_FRAME_BYTES:
        return
    with _KEPT_LOCK:
        _KEPT.pop(key, None)
        _KEPT[key] = frame
        total = sum(v.data.nbytes for v in _KEPT.values())
        while total > KEPT_FRAME_BYTES:
            oldest = next(iter(_KEPT))
            total -= _KEPT.pop(oldest).data.nbytes


def take_frame(path: str | os.PathLike[str]) -> Volume | None:
    """The frame :func:`keep_frame` kept for ``path`` (and forgets it), None if none was kept
    or the file changed since."""
    key = _identity(Path(path))
    if key is None:
        return None
    with _KEPT_LOCK:
        return _KEPT.pop(key, None)
