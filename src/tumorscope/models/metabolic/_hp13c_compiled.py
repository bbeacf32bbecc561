"""The compiled voxel fit of :class:`~.hp13c.PyruvateLactate` with the lactate T1 fixed.

:func:`fit_compiled` runs :func:`._hp13c_numba.fit_range` block by block on threads (numba's
thread count, the block size ``fit_blocks`` would choose): one pass over the signals per
block does what ``fit_blocks`` + ``PyruvateLactate._block`` + ``_peak`` + ``auc_ratio`` did
in six passes and three copies (validation, fixed point, standard errors, status, the lactate
peak of the SNR gate, the AUC ratio). The numbers are theirs (``docs/metabolic.md``; tested
against the numpy engine in ``tests/models/metabolic/test_hp13c.py``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from ...errors import FitError
from ...fitting import progress
from ...fitting.engine import DEFAULT_CHUNK_VOXELS, FlatFit
from ...fitting.status import FitStatus

if TYPE_CHECKING:
    from .hp13c import PyruvateLactate

__all__ = ["fit_compiled"]

#: Frames up to which the kernel sums the AUC ratio as numpy does (numpy halves longer rows).
_AUC_FRAMES = 128


def _chunk(n_voxels: int, workers: int) -> int:
    """Voxels per block: as ``fit_blocks`` chooses them (at least 4 blocks per worker, never
    tiny ones, at most the engine's default)."""
    if workers > 1:
        return min(DEFAULT_CHUNK_VOXELS, max(1024, -(-n_voxels // (4 * workers))))
    return DEFAULT_CHUNK_VOXELS


def fit_compiled(
    model: PyruvateLactate, y: np.ndarray, mask: np.ndarray | None, chunk_voxels: int | None
) -> tuple[FlatFit, np.ndarray, np.ndarray | None]:
    """Fit the flat signals ``y`` (V, 2n) of ``mask`` (flat, or None: every voxel).

    Returns the flat fit, the peak of the fitted lactate signal (NaN where not fitted) and
    the AUC ratio (float32, NaN outside the mask and where a value is not finite), or None
    for the AUC ratio beyond :data:`_AUC_FRAMES` frames (the caller sums). The voxels whose
    2 × 2 normal matrix is near-singular get their standard errors from the pseudo-inverse
    here, as ``hp13c._pinv_diagonal`` gives them to ``_block``.
    """
    from .hp13c import _FIXED_POINT_ITERATIONS, _n_workers, _pinv_diagonal

    kernels = model._kernels()
    assert model.t1_pyruvate_s is not None and kernels is not None
    y = np.ascontiguousarray(y, dtype=np.float64)
    V, n = y.shape[0], model.n_frames
    fmask = np.ones(V, bool) if mask is None else np.ascontiguousarray(mask.reshape(-1))
    params = np.full((V, 2), np.nan, np.float32)
    stderr = np.full((V, 2), np.nan, np.float32)
    rss = np.full(V, np.nan, np.float32)
    status = np.full(V, FitStatus.NOT_FITTED, np.uint8)
    peak = np.full(V, np.nan)
    auc = np.full(V, np.nan, np.float32)
    schedule = model._schedule()
    r1l, r1p = 1.0 / model.t1_lactate_s, 1.0 / model.t1_pyruvate_s
    dof = float(max(n - len(model.parameters), 1))
    workers = _n_workers()
    chunk = int(chunk_voxels) if chunk_voxels is not None else _chunk(V, workers)
    if chunk < 1:
        raise FitError(f"must be >= 1, got {chunk_voxels}", field="chunk_voxels")
    starts = range(0, V, chunk)
    progress.report("planned", len(starts))

    def one(lo: int) -> None:
        kernels.fit_range(
            y, fmask, lo, min(lo + chunk, V), *schedule, r1l, r1p, _FIXED_POINT_ITERATIONS,
            dof, params, stderr, rss, status, peak, auc,
        )  # fmt: skip
        progress.report("done", 1)

    if workers == 1 or len(starts) <= 1:
        for lo in starts:
            one(lo)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, starts))
    fitted = status <= FitStatus.AT_BOUND
    redo = np.flatnonzero(fitted & np.isnan(stderr[:, 0]))
    if redo.size:  # near-singular normal matrices: their pseudo-inverse, as _block takes it
        _, _, rss_r, bb, ab, aa = kernels.fixed_point_normal(
            np.ascontiguousarray(y[redo, :n]), np.ascontiguousarray(y[redo, n:]), *schedule,
            model._per_voxel(r1l, redo.size), r1p, _FIXED_POINT_ITERATIONS,
        )  # fmt: skip
        normal = np.stack([np.stack([bb, ab], 1), np.stack([ab, aa], 1)], 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            var = _pinv_diagonal(normal)
            stderr[redo] = np.sqrt(np.clip(var, 0, None) * (rss_r / dof)[:, None])
    counts = np.bincount(status, minlength=256)
    return (
        FlatFit(params, stderr, status, rss, fmask, counts),
        peak,
        auc if n <= _AUC_FRAMES else None,
    )
