"""Compiled (numba) fits of Z-spectra: the multi-pool Lorentzian (:func:`lorentzian_lm`, its
linear start :func:`lorentzian_start`, the per-voxel model :func:`lorentzian_kernel` for the
generic driver) and the water line of ``wassr_b0`` (:func:`lorentz_slope_lm`), both on one
inlined bounded LM (:func:`_lm_voxel`).

``consts`` layout: ``[n_extra_pools, offset_0, offset_1, ...]`` (offsets in ppm). Parameter
layout: ``[Z0, B0, A_w, G_w, (A_i, G_i, d_i) for each extra pool]``; the model is
``Z = Z0 - A_w L(Δ - B0; G_w) - Σ A_i L(Δ - B0 - d_i; G_i)`` with
``L(x; G) = (G²/4) / (G²/4 + x²)`` (see :mod:`.lorentzian`).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ...fitting._lm_numba import MODEL_SIGNATURE
from ...fitting.status import FitStatus

__all__ = ["lorentz_slope_lm", "lorentzian_kernel", "lorentzian_lm"]


@nb.njit(MODEL_SIGNATURE, cache=True, nogil=True)
def lorentzian_kernel(p, consts, f_out, J_out):
    n_extra = int(consts[0])
    m = f_out.shape[0]
    z0 = p[0]
    b0 = p[1]
    for k in range(m):
        off = consts[1 + k]
        f = z0
        J_out[k, 0] = 1.0
        dsum = 0.0
        for i in range(n_extra + 1):
            if i == 0:
                a = p[2]
                g = p[3]
                x = off - b0
                ja = 2
            else:
                ja = 4 + 3 * (i - 1)
                a = p[ja]
                g = p[ja + 1]
                x = off - b0 - p[ja + 2]
            q = 0.25 * g * g
            den = q + x * x
            L = q / den
            f -= a * L
            J_out[k, ja] = -L
            J_out[k, ja + 1] = -a * 0.5 * g * x * x / (den * den)
            dLdx = -2.0 * a * q * x / (den * den)  # d(A L)/dx
            dsum += dLdx
            if i > 0:
                J_out[k, ja + 2] = dLdx
        J_out[k, 1] = dsum
        f_out[k] = f


# --- the whole bounded LM of this model, compiled (see tumorscope.fitting.lm for the algorithm) ---
#
# The generic driver calls a model function through a pointer for every trial step and works
# on an (m, P) Jacobian. Here the model is inlined, the Jacobian is stored transposed (P, m) so
# that JᵀJ, Jᵀr and the model itself are contiguous, vectorisable loops over the offsets, a
# trial step evaluates the signal only (the Jacobian is computed once a step is accepted), and
# the standard errors reuse one Cholesky factor. Same steps, tests and tolerances; only the
# damping after an accepted step decreases by 5 instead of 10 (:data:`_LAM_DOWN`).

_CONVERGED = int(FitStatus.CONVERGED)
_AT_BOUND = int(FitStatus.AT_BOUND)
_MAX_ITER = int(FitStatus.MAX_ITER)
_FAILED = int(FitStatus.FAILED)
#: Damping divisor after an accepted step (the generic solver: 10; the rejection factor stays
#: 10). With 5, 22 % fewer trial steps on the benchmark spectra, the same minima (docs/cest.md).
_LAM_DOWN = 5.0
_FM = {"reassoc", "contract", "arcp", "nsz"}


@nb.njit(cache=True, fastmath=_FM, inline="always")
def _signal(p, off, n_extra, f):
    m = off.shape[0]
    z0 = p[0]
    b0 = p[1]
    for k in range(m):
        f[k] = z0
    for i in range(n_extra + 1):
        if i == 0:
            a = p[2]
            g = p[3]
            d = b0
        else:
            ja = 4 + 3 * (i - 1)
            a = p[ja]
            g = p[ja + 1]
            d = b0 + p[ja + 2]
        q = 0.25 * g * g
        aq = a * q
        for k in range(m):
            x = off[k] - d
            f[k] -= aq / (q + x * x)


@nb.njit(cache=True, fastmath=_FM, inline="always")
def _signal_jac(p, off, n_extra, f, J):
    """``f (m,)`` and the transposed Jacobian ``J (P, m)``."""
    m = off.shape[0]
    z0 = p[0]
    b0 = p[1]
    for k in range(m):
        f[k] = z0
        J[0, k] = 1.0
        J[1, k] = 0.0
    for i in range(n_extra + 1):
        if i == 0:
            ja = 2
            a = p[2]
            g = p[3]
            d = b0
        else:
            ja = 4 + 3 * (i - 1)
            a = p[ja]
            g = p[ja + 1]
            d = b0 + p[ja + 2]
        q = 0.25 * g * g
        hg = 0.5 * a * g
        tq = 2.0 * a * q
        for k in range(m):
            x = off[k] - d
            r = 1.0 / (q + x * x)
            L = q * r
            f[k] -= a * L
            J[ja, k] = -L
            J[ja + 1, k] = -hg * x * x * r * r
            dx = -tq * x * r * r
            J[1, k] += dx
            if i > 0:
                J[ja + 2, k] = dx


@nb.njit(cache=True, fastmath=_FM, inline="always")
def _normal(J, y, f, H, g, P, m):
    """``g = J (y - f)`` and ``H = J Jᵀ`` of the transposed Jacobian ``J (P, mp)``, one dot
    product per entry of the lower triangle over the ``mp >= m`` columns of ``J`` (the columns
    past ``m`` are zero: :func:`_padded`, a multiple of 8 that the dot products vectorise
    without a remainder loop; 2.5x faster than the 2 x 4 blocks it replaces)."""
    mp = J.shape[1]
    for i in range(P):
        s = 0.0
        for k in range(m):
            s += J[i, k] * (y[k] - f[k])
        g[i] = s
        for j in range(i + 1):
            t = 0.0
            for k in range(mp):
                t += J[i, k] * J[j, k]
            H[i, j] = t
            H[j, i] = t


@nb.njit(cache=True, inline="always")
def _padded(m):
    """Columns of the Jacobian of ``m`` offsets: ``m`` rounded up to a multiple of 8."""
    return (m + 7) // 8 * 8


@nb.njit(cache=True, inline="always")
def _chol(A, L, P):
    """Cholesky factor of ``A`` into the lower triangle of ``L``, its diagonal holding the
    inverses ``1 / L_jj``; ``False`` if ``A`` is not positive definite."""
    for j in range(P):
        s = A[j, j]
        for k in range(j):
            s -= L[j, k] * L[j, k]
        if not (s > 0.0):
            return False
        inv = 1.0 / np.sqrt(s)
        L[j, j] = inv  # the diagonal holds 1 / L_jj (see _chol_back)
        for i in range(j + 1, P):
            t = A[i, j]
            for k in range(j):
                t -= L[i, k] * L[j, k]
            L[i, j] = t * inv
    return True


@nb.njit(cache=True, inline="always")
def _chol_back(L, b, x, P):
    for i in range(P):
        t = b[i]
        for k in range(i):
            t -= L[i, k] * x[k]
        x[i] = t * L[i, i]
    for i in range(P - 1, -1, -1):
        t = x[i]
        for k in range(i + 1, P):
            t -= L[k, i] * x[k]
        x[i] = t * L[i, i]


@nb.njit(cache=True, fastmath=_FM, inline="always")
def _ls_signal(p, g, n_extra, f):
    c = p[0]
    s = p[1]
    a = p[2]
    q = 0.25 * p[3] * p[3]
    x0 = p[4]
    aq = a * q
    for k in range(g.shape[0]):
        d = g[k] - x0
        f[k] = c + s * d - aq / (q + d * d)


@nb.njit(cache=True, fastmath=_FM, inline="always")
def _ls_signal_jac(p, g, n_extra, f, J):
    c = p[0]
    s = p[1]
    a = p[2]
    gam = p[3]
    q = 0.25 * gam * gam
    x0 = p[4]
    hg = 0.5 * a * gam
    tq = 2.0 * a * q
    for k in range(g.shape[0]):
        d = g[k] - x0
        r = 1.0 / (q + d * d)
        L = q * r
        f[k] = c + s * d - a * L
        J[0, k] = 1.0
        J[1, k] = d
        J[2, k] = -L
        J[3, k] = -hg * d * d * r * r
        J[4, k] = -s - tq * d * r * r


#: Models of :func:`_lm_voxel`: the multi-pool Lorentzian, and the water line of ``wassr_b0``.
_LORENTZIAN = 0
_LORENTZ_SLOPE = 1


@nb.njit(cache=True, fastmath=_FM, inline="always")
def _model(model, p, off, n_extra, f):
    if model == _LORENTZIAN:
        _signal(p, off, n_extra, f)
    else:
        _ls_signal(p, off, n_extra, f)


@nb.njit(cache=True, fastmath=_FM, inline="always")
def _model_jac(model, p, off, n_extra, f, J):
    if model == _LORENTZIAN:
        _signal_jac(p, off, n_extra, f, J)
    else:
        _ls_signal_jac(p, off, n_extra, f, J)


@nb.njit(cache=True, nogil=True, fastmath=_FM)
def _lm_voxel(
    model, lam_down, off, n_extra, y, p, lo, hi, scale, max_iter, ftol, xtol,
    out_st, out_rss, se, v, with_se=True,
):  # fmt: skip
    """The bounded LM of one voxel for the model ``model`` (:data:`_LORENTZIAN` or
    :data:`_LORENTZ_SLOPE`, see :func:`_model`; the Jacobian transposed, ``(P, m)``).
    (The model is chosen by a number, not passed as a function: numba does not cache a
    function that takes another one as an argument.)"""
    m = y.shape[0]
    P = p.shape[0]
    f = np.empty(m)
    ft = np.empty(m)
    J = np.zeros((P, _padded(m)))  # the padding stays zero (see _normal)
    pt = np.empty(P)
    g = np.empty(P)
    H = np.empty((P, P))
    A = np.empty((P, P))
    L = np.zeros((P, P))
    delta = np.empty(P)
    frozen = np.zeros(P, dtype=np.bool_)
    _model_jac(model, p, off, n_extra, f, J)
    rss = 0.0
    for k in range(m):
        rss += (y[k] - f[k]) ** 2
    status = _MAX_ITER
    lam = 1e-3
    it = 0
    if not np.isfinite(rss):
        status = _FAILED
    elif rss == 0.0:
        status = _CONVERGED
    else:
        build = True
        while it < max_iter:
            if build:
                _normal(J, y, f, H, g, P, m)
                for i in range(P):
                    frozen[i] = (p[i] <= lo[i] and g[i] < 0.0) or (p[i] >= hi[i] and g[i] > 0.0)
                build = False
            for i in range(P):
                for j in range(P):
                    A[i, j] = 0.0 if (frozen[i] or frozen[j]) else H[i, j]
                if frozen[i]:
                    A[i, i] = 1.0
                    pt[i] = 0.0
                else:
                    A[i, i] += lam * max(H[i, i], 1e-30)
                    pt[i] = g[i]
            it += 1
            ok = _chol(A, L, P)
            rss_t = np.inf
            if ok:
                _chol_back(L, pt, delta, P)
                for i in range(P):
                    w = p[i] + delta[i]
                    if w < lo[i]:
                        w = lo[i]
                    elif w > hi[i]:
                        w = hi[i]
                    pt[i] = w
                _model(model, pt, off, n_extra, ft)
                rss_t = 0.0
                for k in range(m):
                    rss_t += (y[k] - ft[k]) ** 2
            if ok and np.isfinite(rss_t) and rss_t < rss:
                small_step = True
                for i in range(P):
                    if abs(pt[i] - p[i]) > xtol * (abs(p[i]) + scale[i]):
                        small_step = False
                small_gain = (rss - rss_t) <= ftol * rss
                for i in range(P):
                    p[i] = pt[i]
                rss = rss_t
                _model_jac(model, p, off, n_extra, f, J)
                lam = max(lam / lam_down, 1e-12)
                build = True
                if small_step or small_gain or rss == 0.0:
                    status = _CONVERGED
                    break
            else:
                lam *= 10.0
                if lam > 1e10:
                    status = _CONVERGED
                    break
    for i in range(P):
        se[i] = np.nan
    if with_se and m > P and np.isfinite(rss):
        _normal(J, y, f, H, g, P, m)
        if _chol(H, L, P):
            s2 = rss / (m - P)
            for j in range(P):
                for i in range(P):
                    g[i] = 1.0 if i == j else 0.0
                _chol_back(L, g, delta, P)
                w = delta[j] * s2
                se[j] = np.sqrt(w) if w >= 0.0 else np.nan
    finite = np.isfinite(rss)
    for i in range(P):
        if not np.isfinite(p[i]):
            finite = False
    if not finite:
        status = _FAILED
    elif status == _CONVERGED:
        for i in range(P):
            if abs(p[i] - lo[i]) <= 1e-12 * scale[i] or abs(hi[i] - p[i]) <= 1e-12 * scale[i]:
                status = _AT_BOUND
    out_st[v] = status
    out_rss[v] = rss
    return it


@nb.njit(cache=True, parallel=True)
def lorentzian_lm(off, n_extra, y, p, lo, hi, scale, max_iter, ftol, xtol, st, rss, se, nit):
    """Bounded LM of every row of ``y`` (``p`` in: start, out: solution), voxels in parallel."""
    # ``np.int64(v)``: the parallel loop's index is unsigned, its typing pass's signed: passed
    # as is, _lm_voxel was compiled twice per model (about 6 s each on a fresh cache)
    for v in nb.prange(y.shape[0]):
        nit[v] = _lm_voxel(
            _LORENTZIAN, _LAM_DOWN, off, n_extra, y[v], p[v], lo, hi, scale,
            max_iter, ftol, xtol, st, rss, se[v], np.int64(v),
        )  # fmt: skip


@nb.njit(cache=True, nogil=True, fastmath=_FM)
def _start_voxel(off, n_extra, y, p, lo, hi, widths):
    m = y.shape[0]
    na = n_extra + 2  # Z0, water, extra pools
    cols = np.empty((na, m))
    H = np.empty((na, na))
    L = np.zeros((na, na))
    g = np.empty(na)
    a = np.empty(na)
    best = np.empty(na)
    lo_a = np.empty(na)
    hi_a = np.empty(na)
    idx = np.empty(na, dtype=np.int64)
    idx[0] = 0
    idx[1] = 2
    for i in range(n_extra):
        idx[2 + i] = 4 + 3 * i
    for c in range(na):
        lo_a[c] = lo[idx[c]]
        hi_a[c] = hi[idx[c]]
    b0 = p[1]
    for k in range(m):
        cols[0, k] = 1.0
    for i in range(n_extra):
        j = 4 + 3 * i
        q = 0.25 * p[j + 1] * p[j + 1]
        for k in range(m):
            x = off[k] - b0 - p[j + 2]
            cols[2 + i, k] = -q / (q + x * x)
    best_rss = np.inf
    best_w = p[3]
    for gw in widths:
        qw = 0.25 * gw * gw
        for k in range(m):
            x = off[k] - b0
            cols[1, k] = -qw / (qw + x * x)
        for r in range(na):
            s = 0.0
            for k in range(m):
                s += cols[r, k] * y[k]
            g[r] = s
            for c in range(r + 1):
                h = 0.0
                for k in range(m):
                    h += cols[r, k] * cols[c, k]
                H[r, c] = h
                H[c, r] = h
            H[r, r] += 1e-9
        if not _chol(H, L, na):
            continue
        _chol_back(L, g, a, na)
        for c in range(na):
            a[c] = min(max(a[c], lo_a[c]), hi_a[c])
        rss = 0.0
        for k in range(m):
            s = -y[k]
            for c in range(na):
                s += cols[c, k] * a[c]
            rss += s * s
        if rss < best_rss:
            best_rss = rss
            best_w = gw
            for c in range(na):
                best[c] = a[c]
    if best_rss < np.inf:
        p[3] = best_w
        for c in range(na):
            p[idx[c]] = best[c]


@nb.njit(cache=True, parallel=True)
def lorentzian_start(off, n_extra, y, p, lo, hi, widths):
    """The linear step of the start (``Z0`` and the amplitudes by least squares, amplitudes
    clipped into the bounds, for each water width in ``widths``; the best is kept), in place."""
    for v in nb.prange(y.shape[0]):
        _start_voxel(off, n_extra, y[v], p[v], lo, hi, widths)


@nb.njit(cache=True, parallel=True)
def lorentz_slope_lm(g, y, p, lo, hi, scale, max_iter, ftol, xtol, st, rss, se, nit):
    """The water-line fit of :func:`tumorscope.models.cest.wassr_b0` (model of
    ``c + s (g - x0) - A q / (q + (g - x0)²)``, ``q = Γ²/4``, on the grid ``g``): the bounded LM of
    :mod:`tumorscope.fitting.lm` with the model inlined (damping divided by 10 after an
    accepted step, as there), every row of ``y`` in parallel; ``p`` in: start, out: solution."""
    for v in nb.prange(y.shape[0]):
        nit[v] = _lm_voxel(
            _LORENTZ_SLOPE, 10.0, g, 0, y[v], p[v], lo, hi, scale,
            max_iter, ftol, xtol, st, rss, se[v], np.int64(v),
        )  # fmt: skip
