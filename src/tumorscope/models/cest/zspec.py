"""Z-spectra: normalisation, ppm axes, B0 (WASSR) and the model-free contrasts.

Every function takes spectra on the last axis (``z`` shaped ``(..., K)``) and the saturation
offsets in ppm (``(K,)``, any order, repeats allowed: repeated offsets are averaged).
``z`` is normalised (unsaturated signal = 1).

* :func:`ppm_from_hz` — offsets in Hz and the field → ppm.
* :func:`normalise` (:func:`normalise_rows`: of some voxels, as rows) — raw series with one or more unsaturated (M0) volumes → Z, the M0
  interpolated linearly in acquisition order between M0 volumes (signal drift), held
  constant beyond the first and last.
* :func:`wassr_b0` — the B0 shift per voxel: the offset of the direct-saturation minimum,
  positive when the water line lies at positive offsets (Kim et al. 2009, WASSR,
  doi:10.1002/mrm.21873; here the minimum is located by a Lorentzian-plus-slope fit on the
  batched Levenberg–Marquardt solver, see the function).
* :func:`mtr_asym` — ``Z(Δ-x) ... `` : ``MTRasym(x) = Z(-x) - Z(+x)`` on the B0-corrected axis.
* :func:`mtr_rex`, :func:`arex` — inverse-metric contrasts (Zaiss et al. 2014,
  doi:10.1002/nbm.3054): ``MTRRex = 1/Z_lab - 1/Z_ref``, ``AREX = MTRRex · R1obs``.
* :func:`b1_correct` — a contrast measured at two or more nominal B1 levels, interpolated
  per voxel at a target B1 using the relative B1 map (Windschuh et al. 2015,
  doi:10.1002/nbm.3299).

Sampling between offsets uses a cubic spline per voxel (``scipy.interpolate.CubicSpline``,
not-a-knot); a value asked for outside the sampled range is NaN (never extrapolated).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt

from ...errors import DataError
from ...fitting.lm import LMOptions, levenberg_marquardt
from ...fitting.status import FitStatus
from .bloch import GAMMA_HZ_PER_T

__all__ = [
    "arex",
    "b1_correct",
    "interpolate_z",
    "mtr_asym",
    "mtr_rex",
    "normalise",
    "normalise_rows",
    "ppm_from_hz",
    "wassr_b0",
]


def ppm_from_hz(offsets_hz: npt.ArrayLike, field_t: float) -> np.ndarray:
    """Saturation offsets in Hz → ppm at the field ``field_t`` (T): ``Hz / (γ/2π · B0)``.

    >>> float(ppm_from_hz(127.7324, 3.0)[()].round(4))
    1.0
    """
    b0 = float(field_t)
    if not np.isfinite(b0) or b0 <= 0:
        raise DataError(f"field strength must be > 0 T, got {field_t!r}", field="field_t")
    return np.asarray(offsets_hz, dtype=float) / (GAMMA_HZ_PER_T * 1e-6 * b0)


def _offsets(offsets_ppm: npt.ArrayLike, k: int) -> np.ndarray:
    off = np.asarray(offsets_ppm, dtype=float)
    if off.ndim != 1 or off.size != k:
        raise DataError(
            f"expected {k} offsets (the last axis of z), got shape {off.shape}",
            field="offsets_ppm",
        )
    if not np.all(np.isfinite(off)):
        raise DataError("offsets must be finite", field="offsets_ppm")
    return off


def normalise(
    series: npt.ArrayLike,
    m0_index: npt.ArrayLike,
    *,
    m0_floor: float = 0.0,
    dtype: npt.DTypeLike = np.float64,
) -> np.ndarray:
    """Divide the saturated volumes by the unsaturated ones.

    Parameters
    ----------
    series : array_like, shape (..., N)
        Raw signal, volumes on the last axis, in acquisition order.
    m0_index : array_like of int or bool, shape (M,) or (N,)
        The unsaturated (M0) volumes: indices, or a boolean mask over the N volumes.
    m0_floor : float, keyword-only
        Voxels whose M0 is not above this are NaN (background).
    dtype : dtype, keyword-only
        Of the result and the arithmetic (default float64; the CEST stage uses float32:
        Z to 1e-7 against a noise of ~1e-2, half the memory, no copy of a float32 series).

    Returns
    -------
    ndarray, shape (..., N - M)
        Z of the saturated volumes in their order. With several M0 volumes, each saturated
        volume is divided by M0 interpolated linearly in acquisition index between the M0
        volumes around it (constant before the first and after the last).

    Raises
    ------
    DataError
        No M0 volume, no saturated volume, indices out of range.
    """
    s = np.asarray(series, dtype=dtype)
    n = s.shape[-1] if s.ndim else 0
    idx, sat, w = _m0_weights(n, m0_index, s.dtype)
    m0 = s[..., idx]
    if idx.size == 1:
        m0_at = m0  # broadcast over the saturated volumes
    else:
        m0_at = m0 @ w
    z = s[..., sat]  # a copy (advanced indexing)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(z, m0_at, out=z)
    bad = ~(m0_at > m0_floor)
    if bad.shape != z.shape:
        bad = np.broadcast_to(bad, z.shape)
    z[bad] = np.nan
    return z


def _m0_weights(
    n: int, m0_index: npt.ArrayLike, dtype: npt.DTypeLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The M0 volumes, the saturated volumes and the weights ``w (M, S)`` of M0 interpolated
    linearly in acquisition index at each saturated volume (constant beyond the ends)."""
    idx = np.asarray(m0_index)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise DataError(f"M0 mask must have {n} entries, got {idx.shape}", field="m0_index")
        idx = np.flatnonzero(idx)
    idx = np.unique(idx.astype(int).ravel())
    if idx.size == 0:
        raise DataError("no unsaturated (M0) volume to normalise by", field="m0_index")
    if idx.min() < 0 or idx.max() >= n:
        raise DataError(f"M0 indices must be in [0, {n - 1}], got {idx.tolist()}", field="m0_index")
    sat = np.setdiff1d(np.arange(n), idx)
    if sat.size == 0:
        raise DataError("every volume is an M0 volume: no saturated image", field="m0_index")
    # linear weights in acquisition index (np.interp per sat position)
    w = np.empty((idx.size, sat.size), dtype=dtype)
    for j in range(idx.size):
        e = np.zeros(idx.size)
        e[j] = 1.0
        w[j] = np.interp(sat, idx, e)
    return idx, sat, w


def normalise_rows(
    series: np.ndarray,
    voxels: npt.ArrayLike,
    m0_index: npt.ArrayLike,
    *,
    m0_floor: float = 0.0,
) -> np.ndarray:
    """:func:`normalise` (float32) of some voxels of a series, as C-ordered rows.

    Parameters
    ----------
    series : ndarray, shape (..., N)
        Raw signal, volumes on the last axis, in acquisition order.
    voxels : array_like of int, shape (n,)
        Increasing flat indices of the voxels in the series' Fortran (NIfTI) order.
    m0_index, m0_floor
        As :func:`normalise`.

    Returns
    -------
    ndarray, float32, shape (n, N - M), C-ordered
        ``normalise(series, m0_index, m0_floor=m0_floor, dtype=np.float32)`` at the voxels.
        With numba and a float32 series in Fortran order (as read from NIfTI) one compiled
        pass over the voxels' values (:func:`._b0_numba.normalised_rows`; the same float32
        numbers, the interpolated M0 of several M0 volumes to float32 rounding); otherwise a
        gather of the voxels volume by volume, then :func:`normalise`.
    """
    data = np.asarray(series)
    n = data.shape[-1] if data.ndim else 0
    vox = np.asarray(voxels, dtype=np.int64)
    kernel = _kernel("_b0_numba", "normalised_rows")
    if (
        kernel is not None
        and data.dtype == np.float32
        and data.ndim >= 2
        and data.flags.f_contiguous
    ):
        idx, sat, w = _m0_weights(n, m0_index, np.float32)
        out = np.empty((vox.size, sat.size), np.float32)
        kernel(
            data.reshape(-1, n, order="F"),  # a view
            vox,
            idx.astype(np.int64),
            sat.astype(np.int64),
            w,
            float(np.float32(m0_floor)),  # compared as normalise does, in float32
            out,
        )
        return out
    flat = data.reshape(-1, n, order="F")
    rows = np.empty((vox.size, n), np.float32)
    for k in range(n):
        rows[:, k] = flat[:, k][vox]
    return np.ascontiguousarray(normalise(rows, m0_index, m0_floor=m0_floor, dtype=np.float32))


def _prepare(
    z: npt.ArrayLike, offsets_ppm: npt.ArrayLike, *, keep_float32: bool = False
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Flatten to (V, K'), average repeated offsets, sort by offset (float64; float32 input
    stays float32 with ``keep_float32``: the callers convert it block by block)."""
    arr = np.asarray(z)
    if not (keep_float32 and arr.dtype == np.float32):
        arr = np.asarray(arr, dtype=float)
    if arr.ndim < 1:
        raise DataError("z must have the spectrum on its last axis", field="z")
    off = _offsets(offsets_ppm, arr.shape[-1])
    u, inv = np.unique(off, return_inverse=True)
    flat = arr.reshape(-1, arr.shape[-1])
    if u.size != off.size:
        acc = np.zeros((flat.shape[0], u.size))
        np.add.at(acc.T, inv, flat.T)
        flat = acc / np.bincount(inv)[None, :]
    elif np.any(np.diff(off) < 0):
        flat = np.take(flat, np.argsort(off), axis=1)
    if u.size < 4:
        raise DataError(f"need at least 4 distinct offsets, got {u.size}", field="offsets_ppm")
    return flat, u, arr.shape[:-1]


#: Rows of spectra per block of the spline evaluation (bounds the temporary arrays).
_BLOCK_ROWS = 32768


@functools.lru_cache(maxsize=16)
def _slope_operator(x: tuple[float, ...]) -> np.ndarray:
    """``D (K, K)``: the knot derivatives of the not-a-knot cubic spline through ``y`` on the
    knots ``x`` are ``D @ y`` (the spline is linear in ``y``; built once per axis from
    ``scipy.interpolate.CubicSpline`` of the identity)."""
    from scipy.interpolate import CubicSpline  # here: its import costs ~0.5 s

    xa = np.asarray(x, dtype=float)
    d = CubicSpline(xa, np.eye(xa.size), axis=0)(xa, 1)  # (K knots, K basis)
    d.setflags(write=False)
    return d


def _spline_at(flat: np.ndarray, x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Cubic spline of each row of ``flat`` (on ``x``) at per-row points ``q`` (V, Q); NaN outside.

    The not-a-knot spline of ``scipy.interpolate.CubicSpline``, evaluated in its Hermite form
    from the values and the knot derivatives (``flat @ Dᵀ``, one matrix product for all rows,
    :func:`_slope_operator`): the same numbers to rounding, without a spline object per call.
    Rows with a non-finite value give NaN. From :data:`_COMPILED_MIN_ROWS` rows with numba
    installed, one compiled loop over the rows (:func:`._b0_numba.spline_rows`, the same
    formulas); else numpy in blocks of :data:`_BLOCK_ROWS` rows.
    """
    V = flat.shape[0]
    out = np.full(q.shape, np.nan)
    if V == 0:
        return out
    D = _slope_operator(tuple(float(v) for v in x))
    kernel = _compiled_spline()
    if kernel is not None and V >= _COMPILED_MIN_ROWS:
        z = np.ascontiguousarray(flat)
        if z.dtype not in (np.float32, np.float64):
            z = z.astype(np.float64)
        kernel(
            np.ascontiguousarray(x, dtype=np.float64),
            np.array(D),  # writable (the cached operator is not): one compiled signature
            z,
            np.ascontiguousarray(q, dtype=np.float64),
            out,
        )
        return out
    h_all = np.diff(x)
    for a in range(0, V, _BLOCK_ROWS):
        b = min(a + _BLOCK_ROWS, V)
        y = np.asarray(flat[a:b], dtype=np.float64)
        qq = q[a:b]
        ok_rows = np.all(np.isfinite(y), axis=1)
        inside = (qq >= x[0]) & (qq <= x[-1]) & ok_rows[:, None]
        qc = np.where(inside, qq, x[0])
        i = np.clip(np.searchsorted(x, qc, side="right") - 1, 0, x.size - 2)
        m = np.where(ok_rows[:, None], y, 0.0) @ D.T  # knot derivatives (rows, K)
        h = h_all[i]
        t = (qc - x[i]) / h
        t1 = 1.0 - t
        y0 = np.take_along_axis(y, i, 1)
        y1 = np.take_along_axis(y, i + 1, 1)
        m0 = np.take_along_axis(m, i, 1)
        m1 = np.take_along_axis(m, i + 1, 1)
        val = (t1 * t1) * ((1.0 + 2.0 * t) * y0 + (t * h) * m0) + (t * t) * (
            (3.0 - 2.0 * t) * y1 - (t1 * h) * m1
        )
        out[a:b] = np.where(inside, val, np.nan)
    return out


#: From this many rows :func:`_spline_at` runs compiled (:func:`._b0_numba.spline_rows`).
_COMPILED_MIN_ROWS = 64


def _kernel(module: str, name: str) -> Any:
    """The compiled kernel ``name`` of this package's ``module`` (imported at first use), or
    None without numba."""
    import importlib

    try:
        return getattr(importlib.import_module(f"{__package__}.{module}"), name)
    except ImportError:  # pragma: no cover - numba is in the 'fast' extra
        return None


def _compiled_spline() -> Any:
    return _kernel("_b0_numba", "spline_rows")


def _spline_on_grids(flat: np.ndarray, x: np.ndarray, k0: np.ndarray, g: np.ndarray) -> np.ndarray:
    """:func:`_spline_at` of each row at ``x[k0] + g`` (``k0`` a knot index per row).

    Rows sharing a knot share the points, and the spline is linear in the data: for each knot
    the weights ``W (len(g), K)`` are built once and the rows' values are one matrix product
    (the same numbers to rounding; NaN outside the sampled range)."""
    out = np.empty((flat.shape[0], g.size))
    eye = np.eye(x.size)
    for k in np.unique(k0):
        rows = np.flatnonzero(k0 == k)
        q = np.broadcast_to(x[k] + g, (x.size, g.size))
        w = _spline_at(eye, x, q)  # (K, Q): the spline of the unit vector e_k at the points
        out[rows] = flat[rows] @ w
    return out


def interpolate_z(
    z: npt.ArrayLike,
    offsets_ppm: npt.ArrayLike,
    at_ppm: npt.ArrayLike,
    *,
    b0_ppm: npt.ArrayLike | None = None,
) -> np.ndarray:
    """Z at the offsets ``at_ppm`` of the B0-corrected axis (``Δ - b0``), per voxel.

    Returns an array shaped ``z.shape[:-1] + np.shape(at_ppm)``; NaN outside the sampled range.
    """
    flat, x, spatial = _prepare(z, offsets_ppm, keep_float32=True)
    at = np.asarray(at_ppm, dtype=float)
    b0 = _b0_flat(b0_ppm, spatial, flat.shape[0])
    q = at.reshape(1, -1) + b0[:, None]
    return _spline_at(flat, x, q).reshape(spatial + at.shape)


def _b0_flat(b0_ppm: npt.ArrayLike | None, spatial: tuple[int, ...], v: int) -> np.ndarray:
    if b0_ppm is None:
        return np.zeros(v)
    b = np.asarray(b0_ppm, dtype=float)
    if b.shape not in ((), spatial):
        raise DataError(
            f"B0 map shape {b.shape} does not match the spectra's spatial shape {spatial}",
            field="b0_ppm",
        )
    return np.broadcast_to(b, spatial).reshape(v).astype(float)


def _lorentz_slope(p: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``c + s (g - x0) - A q / (q + (g - x0)²)`` with ``q = Γ²/4``; value and Jacobian."""
    c, s, a, gam, x0 = (p[:, i : i + 1] for i in range(5))
    d = g[None, :] - x0
    q = gam**2 / 4
    den = q + d**2
    L = q / den
    f = c + s * d - a * L
    J = np.empty((*f.shape, 5))
    J[..., 0] = 1.0
    J[..., 1] = d
    J[..., 2] = -L
    J[..., 3] = -a * (gam / 2) * d**2 / den**2
    J[..., 4] = -s - a * 2 * q * d / den**2
    return f, J


def _compiled_solver() -> Any:
    return _kernel("_numba", "lorentz_slope_lm")


def wassr_b0(
    z: npt.ArrayLike,
    offsets_ppm: npt.ArrayLike,
    *,
    window_ppm: float = 1.0,
    n_grid: int = 21,
    adaptive: bool = True,
    backend: str = "auto",
) -> np.ndarray:
    """B0 shift (ppm) per voxel: the offset of the direct-saturation (water) minimum.

    Positive when the water line lies at positive offsets. Works on WASSR spectra (weak,
    short saturation, densely sampled around water: 0.1–0.25 ppm steps; a line narrower than
    the sampling cannot be located) and on CEST spectra alike (noisier: ``docs/cest.md``).

    Method: (1) the sampled minimum within ±2 ppm of 0 (or anywhere if none lies there);
    (2) each spectrum is resampled by its cubic spline on ``n_grid`` points spanning
    ``±window_ppm`` around that minimum; (3) a Lorentzian dip plus a constant and a slope
    (the slope absorbs the asymmetric MT/NOE background) is fitted to all voxels at once by
    the batched bounded Levenberg–Marquardt solver (:mod:`tumorscope.fitting.lm`); the B0 is
    the Lorentzian centre. Voxels whose fit fails keep the spline minimum on the grid.

    Parameters
    ----------
    z : array_like, shape (..., K)
    offsets_ppm : array_like, shape (K,)
    window_ppm : float, keyword-only
        Half-width of the fitted window (ppm); at least 4 sampled offsets should lie in it.
    n_grid : int, keyword-only
    adaptive : bool, keyword-only
        Widen the window to the dip's half width (broad lines of strong saturation).
    backend : {"auto", "numba", "numpy"}, keyword-only
        The solver of steps (2)–(3): with numba (``"auto"`` when installed) one compiled loop
        per voxel that solves the same least-squares problem by variable projection over
        (width, centre) (:func:`._b0_numba.wassr_varpro`), handing the voxels outside the
        bounds of the 5-parameter problem to the bounded LM of :mod:`tumorscope.fitting.lm`
        compiled with the model inlined (:func:`._numba.lorentz_slope_lm`); or the numpy
        bounded LM for every voxel. The same tolerances and minima (the two agree to 1e-7
        ppm, tested).

    Returns
    -------
    ndarray, shape z.shape[:-1]
        NaN where the spectrum has non-finite values.
    """
    if backend not in ("auto", "numba", "numpy"):
        raise DataError(
            f"unknown backend {backend!r}; expected 'auto', 'numba' or 'numpy'", field="backend"
        )
    flat, x, spatial = _prepare(z, offsets_ppm, keep_float32=True)
    V = flat.shape[0]
    out = np.full(V, np.nan)
    ok = np.all(np.isfinite(flat), axis=1)
    if not ok.any():
        return out.reshape(spatial)
    rows = np.flatnonzero(ok)
    near = np.abs(x) <= 2.0
    cand = np.flatnonzero(near) if near.sum() >= 3 else np.arange(x.size)
    # per row, in blocks (bounded temporaries): the sampled minimum, and the dip's half width
    k0 = np.empty(rows.size, dtype=np.intp)
    half = np.empty(rows.size)
    compiled = (
        _kernel("_b0_numba", "minimum_and_half")
        if backend != "numpy" and rows.size == V and flat.flags.c_contiguous
        else None
    )
    if compiled is not None:
        # the same numbers in one compiled pass over the rows (no float64 block copies)
        compiled(flat, x, cand.astype(np.int64), k0, half)
    for a in range(0, rows.size if compiled is None else 0, _BLOCK_ROWS):
        fl = np.asarray(flat[rows[a : a + _BLOCK_ROWS]], dtype=np.float64)
        k = cand[np.argmin(fl[:, cand], axis=1)]
        k0[a : a + k.size] = k
        if adaptive:
            # widen the window to the dip's half width at half depth (broad lines of strong
            # saturation have flat bottoms that a narrow window cannot locate)
            depth = 0.5 * (np.max(fl, axis=1) + fl[np.arange(fl.shape[0]), k])
            dist = np.where(fl <= depth[:, None], np.abs(x[None, :] - x[k, None]), 0.0)
            half[a : a + k.size] = np.max(dist, axis=1)
    if adaptive:
        window_ppm = float(max(window_ppm, np.median(half) * 1.2))
    # the fewest offsets within the window of any row's minimum (rows share the knots)
    uk = np.unique(k0)
    n_in = np.sum(np.abs(x[None, :] - x[uk, None]) <= window_ppm, axis=1)
    if np.min(n_in) < 4:
        raise DataError(
            f"fewer than 4 offsets within ±{window_ppm:g} ppm of the water minimum; "
            "sample the water line more densely or widen window_ppm",
            field="offsets_ppm",
        )
    g = np.linspace(-window_ppm, window_ppm, int(n_grid))
    varpro = _compiled_varpro() if backend == "auto" else None
    if backend == "numba":
        varpro = _compiled_varpro()
        if varpro is None:  # pragma: no cover - numba is in 'fast'
            raise DataError("backend 'numba' needs numba installed", field="backend")
    if varpro is not None:
        # the compiled variable-projection fit (the same least-squares problem, see
        # _b0_numba); the voxels it leaves to the bounded 5-parameter fit are refitted below
        z = np.ascontiguousarray(flat if rows.size == V else flat[rows])
        if z.dtype not in (np.float32, np.float64):
            z = z.astype(np.float64)
        shift = np.empty(rows.size)
        flag = np.empty(rows.size, dtype=np.uint8)
        D = np.array(_slope_operator(tuple(float(v) for v in x)))  # writable: one signature
        varpro(x, D, z, k0, g, float(window_ppm), 200, 1e-12, 1e-10, shift, flag)
        out[rows] = x[k0] + shift
        left = np.flatnonzero(flag != 0)
        rows, k0 = rows[left], k0[left]
    _fit_lines(flat, rows, k0, x, g, float(window_ppm), backend, out)
    return out.reshape(spatial)


def _compiled_varpro() -> Any:
    return _kernel("_b0_numba", "wassr_varpro")


def _fit_lines(
    flat: np.ndarray,
    rows: np.ndarray,
    k0: np.ndarray,
    x: np.ndarray,
    g: np.ndarray,
    window_ppm: float,
    backend: str,
    out: np.ndarray,
) -> None:
    """Step (3) of :func:`wassr_b0` on the bounded 5-parameter solver, into ``out[rows]``."""
    lo = np.array([-np.inf, -np.inf, 0.0, 1e-3, -window_ppm])
    hi = np.array([np.inf, np.inf, np.inf, 20.0, window_ppm])
    scale = np.array([1.0, 1.0, 1.0, 1.0, 0.1])
    opts = LMOptions(max_iter=200, ftol=1e-12, xtol=1e-10)
    solver = _compiled_solver() if backend in ("auto", "numba") else None
    if backend == "numba" and solver is None:  # pragma: no cover - numba is in 'fast'
        raise DataError("backend 'numba' needs numba installed", field="backend")
    for a in range(0, rows.size, _BLOCK_ROWS):
        r = rows[a : a + _BLOCK_ROWS]
        kb = k0[a : a + r.size]
        y = _spline_on_grids(np.asarray(flat[r], dtype=np.float64), x, kb, g)
        # outside the sampled range: hold the edge value (rare: a minimum at the border)
        y = np.where(np.isfinite(y), y, np.nanmax(y, axis=1, keepdims=True))
        # refine the start on the fine grid
        j = np.argmin(y, axis=1)
        top = np.max(y, axis=1)
        p0 = np.stack(
            [
                top,
                np.zeros_like(top),
                np.maximum(top - y[np.arange(y.shape[0]), j], 1e-3),
                np.full_like(top, window_ppm),
                g[j],
            ],
            axis=1,
        )
        if solver is not None:
            params = np.ascontiguousarray(np.clip(p0, lo, hi), dtype=np.float64)
            status = np.empty(params.shape[0], dtype=np.uint8)
            solver(
                np.ascontiguousarray(g, dtype=np.float64),
                np.ascontiguousarray(y, dtype=np.float64),
                params,
                lo,
                hi,
                scale,
                opts.max_iter,
                opts.ftol,
                opts.xtol,
                status,
                np.empty(params.shape[0]),
                np.empty_like(params),
                np.empty(params.shape[0], dtype=np.int32),
            )
        else:
            res = levenberg_marquardt(
                y,
                p0,
                lo,
                hi,
                fun=lambda p: _lorentz_slope(p, g)[0],
                jac=lambda p: _lorentz_slope(p, g)[1],
                scale=scale,
                options=opts,
            )
            params, status = res.params, res.status
        shift = params[:, 4]
        good = (status != FitStatus.FAILED) & (np.abs(shift) < window_ppm) & np.isfinite(shift)
        out[r] = x[kb] + np.where(good, shift, g[j])


def mtr_asym(
    z: npt.ArrayLike,
    offsets_ppm: npt.ArrayLike,
    at_ppm: npt.ArrayLike,
    *,
    b0_ppm: npt.ArrayLike | None = None,
) -> np.ndarray:
    """Magnetisation transfer ratio asymmetry ``Z(-x) - Z(+x)`` after B0 correction.

    Parameters
    ----------
    z : array_like, shape (..., K)
        Normalised Z-spectra (0–1), spectra on the last axis.
    offsets_ppm : array_like, shape (K,)
    at_ppm : float or array_like
        The offset(s) ``x`` (e.g. 3.5 for APT; 2.0 amines; 1.2/2.0/3.0 glucose; 3.7 LRP).
    b0_ppm : float or array_like shaped z.shape[:-1], keyword-only
        B0 shift per voxel (as from :func:`wassr_b0`). Default None: estimated from the
        spectra themselves with :func:`wassr_b0` (pass ``0`` to skip the correction).

    Returns
    -------
    ndarray, shape z.shape[:-1] + np.shape(at_ppm)
        NaN where ``±x`` (shifted by B0) falls outside the sampled offsets.
    """
    flat, x, spatial = _prepare(z, offsets_ppm, keep_float32=True)
    b0 = wassr_b0(flat, x) if b0_ppm is None else _b0_flat(b0_ppm, spatial, flat.shape[0])
    at = np.asarray(at_ppm, dtype=float)
    if not np.all(np.isfinite(at)):
        raise DataError("offsets for MTRasym must be finite", field="at_ppm")
    a = np.abs(at.reshape(1, -1))
    bb = np.asarray(b0).reshape(-1, 1)
    both = _spline_at(flat, x, np.concatenate([-a + bb, a + bb], axis=1))  # one pass
    neg, pos = both[:, : a.shape[1]], both[:, a.shape[1] :]
    return (neg - pos).reshape(spatial + at.shape)


def mtr_rex(z_lab: npt.ArrayLike, z_ref: npt.ArrayLike) -> np.ndarray:
    """``MTRRex = 1/Z_lab - 1/Z_ref`` (Zaiss et al. 2014): the exchange-dependent relaxation
    contrast, free of the water direct saturation to first order. ``Z_ref`` is the label-free
    reference: the mirror offset (``Z(-x)``) or the Lorentzian background without the pool."""
    zl = np.asarray(z_lab, dtype=float)
    zr = np.asarray(z_ref, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 1.0 / zl - 1.0 / zr
    return np.where((zl > 0) & (zr > 0), out, np.nan)


def arex(z_lab: npt.ArrayLike, z_ref: npt.ArrayLike, t1_ms: npt.ArrayLike) -> np.ndarray:
    """Apparent exchange-dependent relaxation ``AREX = MTRRex · R1obs`` in 1/s, with
    ``R1obs = 1000 / T1`` (T1 in ms, mapped in the same visit); NaN where T1 is not > 0."""
    t1 = np.asarray(t1_ms, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        r1 = np.where(t1 > 0, 1000.0 / t1, np.nan)
    return mtr_rex(z_lab, z_ref) * r1


def b1_correct(
    contrast: npt.ArrayLike,
    b1_levels_ut: npt.ArrayLike,
    rel_b1: npt.ArrayLike,
    target_ut: float,
) -> np.ndarray:
    """B1 correction of a contrast acquired at two or more B1 levels.

    In a voxel with relative B1 ``r``, the level nominally ``B1_i`` was really ``r·B1_i``;
    the contrast at the target B1 is interpolated linearly between the two actual levels
    around it (Windschuh et al. 2015). Outside the range of actual levels the value is NaN
    (no extrapolation: acquire a level above and below the target).

    Parameters
    ----------
    contrast : array_like, shape (..., L)
        The contrast (MTRasym, a Lorentzian amplitude ...) at each nominal level.
    b1_levels_ut : array_like, shape (L,)
        Nominal B1 levels in µT (distinct, L >= 2).
    rel_b1 : array_like, shape contrast.shape[:-1] or scalar
        Relative B1 (actual / nominal), e.g. from WASABI.
    target_ut : float
        The B1 at which the corrected contrast is reported.

    Returns
    -------
    ndarray, shape contrast.shape[:-1]
    """
    c = np.asarray(contrast, dtype=float)
    lv = np.asarray(b1_levels_ut, dtype=float).ravel()
    if lv.size < 2 or np.unique(lv).size != lv.size:
        raise DataError(
            f"need at least 2 distinct B1 levels, got {lv.tolist()}", field="b1_levels_ut"
        )
    if c.ndim < 1 or c.shape[-1] != lv.size:
        raise DataError(
            f"the last axis of the contrast must have {lv.size} levels, got shape {c.shape}",
            field="contrast",
        )
    order = np.argsort(lv)
    lv = lv[order]
    c = c[..., order]
    r = np.broadcast_to(np.asarray(rel_b1, dtype=float), c.shape[:-1])
    actual = r[..., None] * lv  # (..., L), increasing where r > 0
    t = float(target_ut)
    i = np.sum(actual <= t, axis=-1) - 1  # interval index
    valid = (r > 0) & (i >= 0) & (i <= lv.size - 1) & np.isfinite(r)
    i0 = np.clip(i, 0, lv.size - 2)
    a0 = np.take_along_axis(actual, i0[..., None], -1)[..., 0]
    a1 = np.take_along_axis(actual, i0[..., None] + 1, -1)[..., 0]
    c0 = np.take_along_axis(c, i0[..., None], -1)[..., 0]
    c1 = np.take_along_axis(c, i0[..., None] + 1, -1)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        w = (t - a0) / (a1 - a0)
    out = c0 + w * (c1 - c0)
    # exactly at the highest actual level: i == L-1 means t == actual[-1]
    valid &= (w >= -1e-12) & (w <= 1 + 1e-12)
    return np.where(valid, out, np.nan)
