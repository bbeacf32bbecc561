"""T2 mapping from T2-prepared bSSFP images.

After a T2 preparation of duration ``TE_prep`` the bSSFP image is ``S = M0 exp(-TE_prep/T2)``
(Giri et al., J Cardiovasc Magn Reson 2009, doi:10.1186/1532-429X-11-56; typically three
images, ``TE_prep`` 0, 25 and 55 ms, the first without preparation). The fit is exact least
squares: ``M0`` is linear and solved in closed form for every ``T2``, which is searched on a
log grid and by golden section (:func:`tumorscope.fitting.varpro.varpro_log`). A preparation
of 0 ms is allowed (the multi-echo protocol of the spin-echo T2 model refuses it).

With numba installed the same search runs compiled
(:func:`tumorscope.models.relaxometry._varpro_numba.monoexp_varpro`, the spin-echo T2 model's
kernel: the same 48-point log grid, in ``R2 = 1000 / T2``, then a safeguarded Newton to
``|Δ log R2| < 1e-10`` instead of 24 golden-section steps): the maps agree with the numpy
search to its precision (~4e-6 relative) and the voxels at a bound are the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import DataError
from ...fitting.varpro import varpro_log

__all__ = ["fit_t2prep"]

#: Search interval of T2 (ms).
T2_BOUNDS_MS = (1.0, 2000.0)


def fit_t2prep(
    data: np.ndarray, prep_times_ms: Sequence[float], mask: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """T2 (ms) and M0 (a.u.) per voxel from T2-prepared images on the last axis.

    Returns ``{"T2", "M0", "at_bound"}`` shaped like ``data`` minus its last axis; NaN
    outside ``mask``, where a signal is not finite or not positive, and where the search
    ended on its bounds (1–2000 ms).
    """
    te = np.asarray(prep_times_ms, dtype=float)
    y = np.asarray(data, dtype=float)
    if te.ndim != 1 or len(set(te.tolist())) < 2 or np.any(te < 0) or not np.all(np.isfinite(te)):
        raise DataError(
            f"prep_times_ms must be >= 0 with at least 2 distinct values, got {te.tolist()}",
            field="prep_times_ms",
        )
    if y.shape[-1] != te.size:
        raise DataError(
            f"data has {y.shape[-1]} images on its last axis, prep_times_ms {te.size}",
            field="prep_times_ms",
        )
    shape = y.shape[:-1]
    flat = y.reshape(-1, te.size)
    ok = np.all(np.isfinite(flat), axis=1) & np.all(flat > 0, axis=1)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != shape:
            raise DataError(f"mask shape {m.shape} differs from data {shape}", field="mask")
        ok &= m.reshape(-1)
    t2 = np.full(flat.shape[0], np.nan)
    m0 = np.full(flat.shape[0], np.nan)
    bound = np.zeros(flat.shape[0], bool)
    if ok.any():
        x, c, at_b = _search(flat[ok], te)
        t2[ok] = np.where(at_b, np.nan, x)
        m0[ok] = np.where(at_b, np.nan, c)
        bound[ok] = at_b
    return {"T2": t2.reshape(shape), "M0": m0.reshape(shape), "at_bound": bound.reshape(shape)}


def _search(y: np.ndarray, te: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T2 (ms), M0 and at-bound of each row of ``y``: compiled if numba is installed."""
    lo, hi = T2_BOUNDS_MS
    try:
        from ..relaxometry._varpro_numba import monoexp_varpro
    except ImportError:  # pragma: no cover - numba is in the 'fast' extra

        def basis(x: np.ndarray) -> np.ndarray:
            return np.exp(-te[None, :] / x[:, None])[..., None]

        x, coef, _rss, at_b = varpro_log(basis, y, lo, hi, nonneg=True)
        return x, coef[:, 0], at_b
    # R2 = 1000 / T2 in 1/s, TE in s: the grid of log R2 is that of log T2, reversed
    params, _rss, at_b, _se = monoexp_varpro(y, te * 1e-3, 1000.0 / hi, 1000.0 / lo)
    with np.errstate(divide="ignore"):
        t2 = 1000.0 / params[:, 1]
    # a zero amplitude (no decay to fit) is at its bound, as the numpy search's is
    return t2, params[:, 0], at_b
