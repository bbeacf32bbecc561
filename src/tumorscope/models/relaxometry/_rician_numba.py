"""Compiled Rician-floor fit of the mono-exponential decay (T2*, T2 with ``floor="rician"``).

One voxel per loop iteration, compiled by numba with the GIL released (``nogil``; the
engine runs blocks in a thread pool), scratch arrays allocated once per block. For each voxel:

1. the start of :func:`tumorscope.models.relaxometry.decay._loglinear_start`: a log-linear
   fit of the floor-corrected magnitudes ``A = sqrt(max(M² - σ², 0))`` weighted by ``A²``
   (Gudbjartsson & Patz 1995, doi:10.1002/mrm.1910340618), ``S0 = max(M)``, ``R = 0`` where
   fewer than two amplitudes are positive, the rate clipped to the model's rate bounds;
2. the bounded Levenberg–Marquardt of :mod:`tumorscope.fitting._lm_numba` (the same
   algorithm, damping schedule, stopping rules, statuses and standard errors: see
   :mod:`tumorscope.fitting.lm`) on the Rician expected magnitude
   ``E[M] = R_σ(S0 exp(-TE R))`` of :func:`._numba.rician_decay_kernel`, the model inlined
   instead of called through a function pointer per evaluation.

The generic path (``_loglinear_start`` in numpy, then :meth:`Model.solve_nonlinear`) is
what the tests compare it with; the two agree to rounding (the start's sums are taken in
another order).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from ...fitting.status import FitStatus
from ._numba import _SQRT_PI_2, _i0e_i1e
from ._varpro_numba import exp_basis, exp_plan, increasing

__all__ = ["rician_decay_fit"]

_CONVERGED = np.uint8(FitStatus.CONVERGED)
_MAX_ITER = np.uint8(FitStatus.MAX_ITER)
_AT_BOUND = np.uint8(FitStatus.AT_BOUND)
_FAILED = np.uint8(FitStatus.FAILED)


@nb.njit(cache=True, inline="always")
def _poly8(t, c0, c1, c2, c3, c4, c5, c6, c7, c8):
    """``c0 + c1 t + ... + c8 t⁸`` by Estrin's scheme (independent pairs, then powers of
    ``t``: a dependency chain of 4 multiply-adds instead of Horner's 8)."""
    t2 = t * t
    t4 = t2 * t2
    a = c0 + c1 * t
    b = c2 + c3 * t
    c = c4 + c5 * t
    d = c6 + c7 * t
    return (a + b * t2) + (c + d * t2) * t4 + c8 * (t4 * t4)


@nb.njit(cache=True, inline="always")
def _poly_i0e(t):
    """``sqrt(u) i0e(u)`` for ``u > 3.75``, ``t = 3.75 / u`` (Abramowitz & Stegun 9.8.2)."""
    return _poly8(
        t, 0.39894228, 0.01328592, 0.00225319, -0.00157565, 0.00916281, -0.02057706,
        0.02635537, -0.01647633, 0.00392377,
    )  # fmt: skip


@nb.njit(cache=True, inline="always")
def _poly_i1e(t):
    """``sqrt(u) i1e(u)`` for ``u > 3.75``, ``t = 3.75 / u`` (Abramowitz & Stegun 9.8.4)."""
    return _poly8(
        t, 0.39894228, -0.03988024, -0.00362018, 0.00163801, -0.01031555, 0.02282967,
        -0.02895312, 0.01787654, -0.00420059,
    )  # fmt: skip


@nb.njit(cache=True, inline="always")
def _model(s0, q, te_s, sigma, mode, f, J, plan, ex, xs):
    """:func:`._numba.rician_decay_kernel` at ``(S0, q)`` (``q`` = R in 1/s, or T in ms
    with ``mode`` 1), into ``f (m,)`` and ``J (m, 2)``: the same approximations, with the
    divisions of the usual regime ``3.75 < u <= 1e6`` (``u = A² / 4σ²``, the amplitude above
    the noise: tissue) folded into one. There ``i0e(u) = P0(t) / sqrt(u)`` and
    ``i1e(u) = P1(t) / sqrt(u)`` with ``t = 3.75 / u`` and ``sqrt(u) = |A| / 2σ``, so
    ``E[M] = 2σ² sqrt(π/2) ((1 + 2u) P0 + 2u P1) / |A|`` and
    ``dE[M]/dA = sign(A) sqrt(π/2) (P0 + P1)``: equal to the kernel's values to rounding."""
    if mode == 0.0:
        r = q
        drdq = 1.0
    else:
        r = 1000.0 / q
        drdq = -1000.0 / (q * q)
    s2 = sigma * sigma
    c_u = 1.0 / (4.0 * s2)
    c_t = 15.0 * s2  # 3.75 × 4σ²
    c_v = 2.0 * s2 * _SQRT_PI_2
    exp_basis(plan, r, ex, xs)
    for k in range(te_s.shape[0]):
        te = te_s[k]
        e = ex[k]
        a = s0 * e
        if sigma <= 0.0:
            val = abs(a)
            g = 1.0
        else:
            u = a * a * c_u
            if u > 1e6:
                val = a + s2 / (2.0 * a)
                g = 1.0 - s2 / (2.0 * a * a)
            elif u > 3.75:
                ia = 1.0 / abs(a)
                t = c_t * ia * ia
                p0 = _poly_i0e(t)
                p1 = _poly_i1e(t)
                val = c_v * ia * ((1.0 + 2.0 * u) * p0 + 2.0 * u * p1)
                g = _SQRT_PI_2 * (p0 + p1)
                if a < 0.0:
                    g = -g
            else:
                i0e, i1e = _i0e_i1e(u)
                val = sigma * _SQRT_PI_2 * ((1.0 + 2.0 * u) * i0e + 2.0 * u * i1e)
                g = a / (2.0 * sigma) * _SQRT_PI_2 * (i0e + i1e)
        f[k] = val
        J[k, 0] = g * e
        J[k, 1] = -g * te * s0 * e * drdq


@nb.njit(cache=True, inline="always")
def _start(y, x, sigma, w, z):
    """``(S0, R)`` of the weighted log-linear fit of the floor-corrected magnitudes (the
    numpy ``_loglinear_start``; ``w``, ``z`` (m,) are scratch). Returns ``(S0, R, ok)``."""
    m = y.shape[0]
    npos = 0
    ymax = y[0]
    sw = 0.0
    for k in range(m):
        if y[k] > ymax:
            ymax = y[k]
        # A² = max(M² - σ², 0) and log A = log(A²) / 2: no square root
        a2 = max(y[k] * y[k] - sigma * sigma, 0.0)
        if a2 > 0.0:
            npos += 1
            w[k] = a2
            z[k] = 0.5 * math.log(a2)
        else:
            w[k] = 0.0
            z[k] = 0.0
        sw += w[k]
    swx = 0.0
    swz = 0.0
    for k in range(m):
        swx += w[k] * x[k]
        swz += w[k] * z[k]
    xm = swx / sw if sw != 0.0 else np.nan
    zm = swz / sw if sw != 0.0 else np.nan
    sxx = 0.0
    sxz = 0.0
    for k in range(m):
        dx = x[k] - xm
        sxx += w[k] * dx * dx
        sxz += w[k] * dx * (z[k] - zm)
    r = -(sxz / sxx) if sxx != 0.0 else np.nan
    s0 = math.exp(zm + r * xm) if math.isfinite(r) and math.isfinite(zm) else np.nan
    ok = npos >= 2 and math.isfinite(r) and math.isfinite(s0) and sxx > 0.0
    if ok:
        return s0, r
    return ymax, 0.0


@nb.njit(cache=True, inline="always")
def _solve2(a00, a01, a11, b0, b1):
    """``A x = b`` for a symmetric 2 × 2 ``A`` by its Cholesky factor (the operations of
    :func:`_lm_numba._chol_solve` with ``P = 2``); ``(ok, x0, x1)``, ok False if ``A`` is not
    positive definite."""
    if not (a00 > 0.0):
        return False, 0.0, 0.0
    l00 = np.sqrt(a00)
    l10 = a01 / l00
    s = a11 - l10 * l10
    if not (s > 0.0):
        return False, 0.0, 0.0
    l11 = np.sqrt(s)
    x0 = b0 / l00
    x1 = (b1 - l10 * x0) / l11
    x1 = x1 / l11
    x0 = (x0 - l10 * x1) / l00
    return True, x0, x1


@nb.njit(cache=True, inline="always")
def _normal(y, f, J, m):
    """``JᵀJ`` (its three entries) and ``Jᵀ(y - f)``."""
    h00 = h01 = h11 = g0 = g1 = 0.0
    for k in range(m):
        j0 = J[k, 0]
        j1 = J[k, 1]
        h00 += j0 * j0
        h01 += j1 * j0
        h11 += j1 * j1
        d = y[k] - f[k]
        g0 += j0 * d
        g1 += j1 * d
    return h00, h01, h11, g0, g1


@nb.njit(cache=True, nogil=True)
def _rician_block(
    y, te_s, sigma, mode, rate_lo, rate_hi, lo, hi, scale, max_iter, ftol, xtol,
    params, status, rss_out, stderr,
):  # fmt: skip
    n, m = y.shape
    w = np.empty(m)
    z = np.empty(m)
    fa = np.empty(m)
    Ja = np.empty((m, 2))
    fb = np.empty(m)
    Jb = np.empty((m, 2))
    plan = exp_plan(te_s)
    ex = np.empty(m)
    xs = np.empty(plan[0].shape[0])
    lo0, lo1, hi0, hi1 = lo[0], lo[1], hi[0], hi[1]
    sc0, sc1 = scale[0], scale[1]
    for v in range(n):
        yv = y[v]
        f, J, ft, Jt = fa, Ja, fb, Jb
        s0, r0 = _start(yv, te_s, sigma, w, z)
        r0 = min(max(r0, rate_lo), rate_hi)
        p0 = s0
        p1 = r0 if mode == 0.0 else (1000.0 / r0 if r0 > 0.0 else np.nan)
        # -- the LM of _lm_numba._lm_voxel with P = 2, on scalars --
        _model(p0, p1, te_s, sigma, mode, f, J, plan, ex, xs)
        rss = 0.0
        for k in range(m):
            rss += (yv[k] - f[k]) ** 2
        st = _MAX_ITER
        lam = 1e-3
        it = 0
        h00 = h01 = h11 = g0 = g1 = 0.0
        fr0 = fr1 = False
        if not np.isfinite(rss):
            st = _FAILED
        elif rss == 0.0:
            st = _CONVERGED
        else:
            build = True
            while it < max_iter:
                if build:
                    h00, h01, h11, g0, g1 = _normal(yv, f, J, m)
                    fr0 = (p0 <= lo0 and g0 < 0.0) or (p0 >= hi0 and g0 > 0.0)
                    fr1 = (p1 <= lo1 and g1 < 0.0) or (p1 >= hi1 and g1 > 0.0)
                    build = False
                a01 = 0.0 if (fr0 or fr1) else h01
                a00 = 1.0 if fr0 else h00 + lam * max(h00, 1e-30)
                a11 = 1.0 if fr1 else h11 + lam * max(h11, 1e-30)
                it += 1
                ok, d0, d1 = _solve2(a00, a01, a11, 0.0 if fr0 else g0, 0.0 if fr1 else g1)
                rss_t = np.inf
                t0 = t1 = 0.0
                if ok:
                    t0 = min(max(p0 + d0, lo0), hi0)
                    t1 = min(max(p1 + d1, lo1), hi1)
                    _model(t0, t1, te_s, sigma, mode, ft, Jt, plan, ex, xs)
                    rss_t = 0.0
                    for k in range(m):
                        rss_t += (yv[k] - ft[k]) ** 2
                if ok and np.isfinite(rss_t) and rss_t < rss:
                    small_step = abs(t0 - p0) <= xtol * (abs(p0) + sc0) and abs(t1 - p1) <= xtol * (
                        abs(p1) + sc1
                    )
                    small_gain = (rss - rss_t) <= ftol * rss
                    p0 = t0
                    p1 = t1
                    f, ft = ft, f
                    J, Jt = Jt, J
                    rss = rss_t
                    lam = max(lam / 10.0, 1e-12)
                    build = True
                    if small_step or small_gain or rss == 0.0:
                        st = _CONVERGED
                        break
                else:
                    lam *= 10.0
                    if lam > 1e10:
                        st = _CONVERGED
                        break
        # standard errors from J at the solution: the diagonal of (JᵀJ)⁻¹ as _lm_voxel
        # obtains it (a Cholesky solve per unit vector)
        se = stderr[v]
        se[0] = np.nan
        se[1] = np.nan
        if m > 2 and np.isfinite(rss):
            h00, h01, h11, _, _ = _normal(yv, f, J, m)
            s2 = rss / (m - 2)
            ok, d0, _ = _solve2(h00, h01, h11, 1.0, 0.0)
            if ok:
                var = d0 * s2
                se[0] = np.sqrt(var) if var >= 0.0 else np.nan
            ok, _, d1 = _solve2(h00, h01, h11, 0.0, 1.0)
            if ok:
                var = d1 * s2
                se[1] = np.sqrt(var) if var >= 0.0 else np.nan
        if not (np.isfinite(rss) and np.isfinite(p0) and np.isfinite(p1)):
            st = _FAILED
        elif st == _CONVERGED:
            if (
                abs(p0 - lo0) <= 1e-12 * sc0
                or abs(hi0 - p0) <= 1e-12 * sc0
                or abs(p1 - lo1) <= 1e-12 * sc1
                or abs(hi1 - p1) <= 1e-12 * sc1
            ):
                st = _AT_BOUND
        params[v, 0] = p0
        params[v, 1] = p1
        status[v] = st
        rss_out[v] = rss


def rician_decay_fit(
    y: np.ndarray,
    te_s: np.ndarray,
    sigma: float,
    *,
    time_mode: bool,
    rate_bounds: tuple[float, float],
    lower: np.ndarray,
    upper: np.ndarray,
    scale: np.ndarray,
    max_iter: int,
    ftol: float,
    xtol: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The Rician-floor mono-exponential of every voxel: log-linear start, then LM.

    Parameters
    ----------
    y : ndarray, shape (n, m)
        Valid magnitudes.
    te_s : ndarray, shape (m,)
        Echo times in s.
    sigma : float
        Rician noise level (> 0).
    time_mode : bool, keyword-only
        Parameters ``(S0, T)`` with ``T = 1000 / R`` in ms (T2) instead of ``(S0, R)``.
    rate_bounds : (float, float), keyword-only
        Clip of the start's rate (1/s).
    lower, upper, scale : ndarray, shape (2,), keyword-only
        The model's bounds and typical scales (in its parameters).
    max_iter : int, keyword-only
    ftol, xtol : float, keyword-only
        The LM's options (:class:`tumorscope.fitting.lm.LMOptions`).

    Returns
    -------
    params : ndarray, shape (n, 2)
    status : ndarray of uint8, shape (n,)
    rss : ndarray, shape (n,)
    stderr : ndarray, shape (n, 2)
    """
    n = y.shape[0]
    params = np.empty((n, 2))
    status = np.empty(n, dtype=np.uint8)
    rss = np.empty(n)
    stderr = np.empty((n, 2))
    f8 = np.float64
    y, te_s = increasing(y, te_s)
    _rician_block(
        y,
        te_s,
        float(sigma),
        1.0 if time_mode else 0.0,
        float(rate_bounds[0]),
        float(rate_bounds[1]),
        np.ascontiguousarray(lower, dtype=f8),
        np.ascontiguousarray(upper, dtype=f8),
        np.ascontiguousarray(scale, dtype=f8),
        int(max_iter),
        float(ftol),
        float(xtol),
        params,
        status,
        rss,
        stderr,
    )
    return params, status, rss, stderr
