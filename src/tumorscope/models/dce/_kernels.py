"""Compiled (numba) per-voxel kernels of the DCE models, for the engine's compiled solver.

Each model kernel has the engine's signature
(:data:`tumorscope.fitting._lm_numba.MODEL_SIGNATURE`)::

    kernel(p (n_params,), consts (2 + 2n,), f_out (n,), J_out (n, n_params))

with ``consts = [n, fit_delay, t_0 … t_{n-1}, cp_0 … cp_{n-1}]`` (times in s, plasma AIF in
mM; see :func:`pack_consts`). The equations, units and Jacobians are those of the vectorised
functions in :mod:`tumorscope.models.dce.kinetics` (which the tests compare them with); the
convolution is the same exact piecewise-linear recursion, done in one pass per voxel.

This module imports numba; :mod:`tumorscope.models.dce.kinetics` only imports it when numba is
installed.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ...fitting._lm_numba import MODEL_SIGNATURE

__all__ = ["KERNELS", "conv_many", "pack_consts"]

_SERIES_X = 0.05


def pack_consts(times_s: np.ndarray, cp_mM: np.ndarray, fit_delay: bool) -> np.ndarray:
    """Constants vector of the kernels: ``[n, fit_delay, t..., cp...]`` (float64)."""
    t = np.asarray(times_s, dtype=float)
    return np.ascontiguousarray(
        np.concatenate([[t.size, 1.0 if fit_delay else 0.0], t, np.asarray(cp_mM, float)])
    )


@nb.njit("UniTuple(f8, 4)(f8)", cache=True, nogil=True)
def _g012(x):
    e = np.exp(-x)
    if x < _SERIES_X:
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        term = 1.0
        for m in range(9):
            s0 += term / (m + 1)
            s1 += term / (m + 2)
            s2 += term / (m + 3)
            term = term * (-x) / (m + 1)
        return e, s0, s1, s2
    g0 = -np.expm1(-x) / x
    g1 = (1.0 - e * (1.0 + x)) / (x * x)
    g2 = (2.0 - e * (2.0 + 2.0 * x + x * x)) / (x * x * x)
    return e, g0, g1, g2


@nb.njit("void(f8[::1], f8[::1], f8, f8, b1, f8[:], f8[:], f8[:], f8[:])", cache=True, nogil=True)
def _conv_one(t, c, k, d, want_g, f_out, g_out, c_out, s_out):
    """Exact convolution at ``t - d`` for one rate ``k`` (1/s), single forward pass.

    Fills ``f_out`` (F), ``g_out`` (G = -dF/dk, if ``want_g``), ``c_out`` (cp(t - d)) and
    ``s_out`` (dcp/dt at t - d, right derivative).
    """
    n = t.size
    if k < 0.0:
        k = 0.0
    # outputs before the input starts are zero
    j = 0
    while j < n and t[j] - d < t[0]:
        f_out[j] = 0.0
        g_out[j] = 0.0
        c_out[j] = 0.0
        s_out[j] = 0.0
        j += 1
    fi = 0.0
    gi = 0.0
    dprev = -1.0
    e = g0 = g1 = g2 = 0.0
    for i in range(n):
        ci = c[i]
        if i < n - 1:
            seg = t[i + 1] - t[i]
            slope = (c[i + 1] - ci) / seg
            tnext = t[i + 1]
        else:
            seg = 0.0
            slope = 0.0
            tnext = np.inf
        # emit every output whose delayed time falls in [t_i, t_{i+1})
        while j < n and t[j] - d < tnext:
            s = t[j] - d - t[i]
            if s == 0.0:
                f_out[j] = fi
                g_out[j] = gi
            else:
                ct = ci + slope * s
                e2, h0, h1, h2 = _g012(k * s)
                f_out[j] = e2 * fi + s * (ct * h0 + (ci - ct) * h1)
                if want_g:
                    g_out[j] = e2 * (gi + s * fi) + s * s * (ct * h1 + (ci - ct) * h2)
            c_out[j] = ci + slope * s
            s_out[j] = slope
            j += 1
        if i == n - 1 or j >= n:
            break
        # advance the grid recursion to t_{i+1}
        if seg != dprev:
            e, g0, g1, g2 = _g012(k * seg)
            dprev = seg
        c1 = c[i + 1]
        if want_g:
            gi = e * (gi + seg * fi) + seg * seg * (c1 * g1 + (ci - c1) * g2)
        fi = e * fi + seg * (c1 * g0 + (ci - c1) * g1)


@nb.njit("void(f8[::1], f8[::1], f8, f8[:], f8[:])", cache=True, nogil=True)
def _conv_grid(t, c, k, f_out, g_out):
    """:func:`_conv_one` without delay (outputs at the frame times only): ``F`` and ``G``.

    The same recursion; the models' kernels use it when the delay is not fitted (it skips the
    search for each output's interval and the input/slope outputs: ~2x faster).
    """
    n = t.size
    if k < 0.0:
        k = 0.0
    fi = 0.0
    gi = 0.0
    dprev = -1.0
    e = g0 = g1 = g2 = 0.0
    f_out[0] = 0.0
    g_out[0] = 0.0
    for i in range(n - 1):
        seg = t[i + 1] - t[i]
        if seg != dprev:
            e, g0, g1, g2 = _g012(k * seg)
            dprev = seg
        ci = c[i]
        c1 = c[i + 1]
        gi = e * (gi + seg * fi) + seg * seg * (c1 * g1 + (ci - c1) * g2)
        fi = e * fi + seg * (c1 * g0 + (ci - c1) * g1)
        f_out[i + 1] = fi
        g_out[i + 1] = gi


@nb.njit(cache=True, parallel=True)
def conv_many(t, c, k, delay, want_g):
    """:func:`_conv_one` for many (k, delay) pairs in parallel; arrays of shape (N, n)."""
    nv = k.size
    n = t.size
    f = np.zeros((nv, n))
    g = np.zeros((nv, n))
    cp = np.zeros((nv, n))
    sl = np.zeros((nv, n))
    for v in nb.prange(nv):
        _conv_one(t, c, k[v], delay[v], want_g, f[v], g[v], cp[v], sl[v])
    return f, g, cp, sl


@nb.njit(cache=True)
def _unpack(consts):
    n = int(consts[0])
    fit_delay = consts[1] != 0.0
    return n, fit_delay, consts[2 : 2 + n], consts[2 + n : 2 + 2 * n]


# The kernels use the columns of J_out and f_out as scratch space for the convolutions (no
# allocation per call): every row j is read completely before it is overwritten.


@nb.njit(cache=True, nogil=True)
def _tofts_rates(ktrans_per_min, ve):
    """Ktrans (1/s), kep = Ktrans/ve (1/s) and 1/ve; 0 for ve <= 0."""
    kt = ktrans_per_min / 60.0
    if ve > 0.0:
        return kt, kt / ve, 1.0 / ve
    return kt, 0.0, 0.0


@nb.njit(MODEL_SIGNATURE, cache=True, nogil=True)
def tofts_kernel(p, consts, f_out, J_out):
    n, fit_delay, t, c = _unpack(consts)
    kt, k, inv_ve = _tofts_rates(p[0], p[1])
    d = p[2] if fit_delay else 0.0
    if fit_delay:
        _conv_one(t, c, k, d, True, J_out[:, 0], J_out[:, 1], J_out[:, 2], f_out)
    else:
        _conv_grid(t, c, k, J_out[:, 0], J_out[:, 1])
    for j in range(n):
        F = J_out[j, 0]
        G = J_out[j, 1]
        f_out[j] = kt * F
        J_out[j, 0] = (F - kt * G * inv_ve) / 60.0
        J_out[j, 1] = kt * G * k * inv_ve
        if fit_delay:
            J_out[j, 2] = -kt * (J_out[j, 2] - k * F)


@nb.njit(MODEL_SIGNATURE, cache=True, nogil=True)
def extended_tofts_kernel(p, consts, f_out, J_out):
    n, fit_delay, t, c = _unpack(consts)
    kt, k, inv_ve = _tofts_rates(p[0], p[1])
    vp = p[2]
    d = p[3] if fit_delay else 0.0
    if fit_delay:
        _conv_one(t, c, k, d, True, J_out[:, 0], J_out[:, 1], J_out[:, 2], J_out[:, 3])
    else:
        _conv_grid(t, c, k, J_out[:, 0], J_out[:, 1])
    for j in range(n):
        F = J_out[j, 0]
        G = J_out[j, 1]
        cpj = J_out[j, 2] if fit_delay else c[j]
        f_out[j] = kt * F + vp * cpj
        J_out[j, 0] = (F - kt * G * inv_ve) / 60.0
        J_out[j, 1] = kt * G * k * inv_ve
        J_out[j, 2] = cpj
        if fit_delay:
            J_out[j, 3] = -kt * (cpj - k * F) - vp * J_out[j, 3]


@nb.njit(MODEL_SIGNATURE, cache=True, nogil=True)
def patlak_kernel(p, consts, f_out, J_out):
    n, fit_delay, t, c = _unpack(consts)
    kt = p[0] / 60.0
    vp = p[1]
    d = p[2] if fit_delay else 0.0
    if fit_delay:
        _conv_one(t, c, 0.0, d, False, J_out[:, 0], f_out, J_out[:, 1], J_out[:, 2])
    else:
        _conv_one(t, c, 0.0, d, False, J_out[:, 0], f_out, J_out[:, 1], f_out)
    for j in range(n):
        F = J_out[j, 0]
        cpj = J_out[j, 1]
        f_out[j] = kt * F + vp * cpj
        J_out[j, 0] = F / 60.0
        if fit_delay:
            J_out[j, 2] = -kt * cpj - vp * J_out[j, 2]


@nb.njit(MODEL_SIGNATURE, cache=True, nogil=True)
def two_cxm_kernel(p, consts, f_out, J_out):
    n, fit_delay, t, c = _unpack(consts)
    fp, ps = p[0] / 6000.0, p[1] / 6000.0  # mL/100 mL/min -> 1/s
    ve = p[2]
    vp = p[3]
    d = p[4] if fit_delay else 0.0
    s = (fp + ps) / vp + ps / ve
    q = fp * ps / (vp * ve)
    disc = np.sqrt(max(s * s - 4.0 * q, 0.0))
    alpha = 0.5 * (s + disc)
    beta = q / alpha if alpha > 0.0 else 0.0
    a = (fp / vp - beta) / disc if disc > 0.0 else 1.0
    # derivatives of s, q, disc, alpha, beta, a with respect to (fp, ps, ve, vp)
    inv = 1.0 / disc if disc > 0.0 else 0.0
    ds0 = 1.0 / vp
    ds1 = 1.0 / vp + 1.0 / ve
    ds2 = -ps / (ve * ve)
    ds3 = -(fp + ps) / (vp * vp)
    dq0 = ps / (vp * ve)
    dq1 = fp / (vp * ve)
    dq2 = -q / ve
    dq3 = -q / vp
    dd0 = (s * ds0 - 2.0 * dq0) * inv
    dd1 = (s * ds1 - 2.0 * dq1) * inv
    dd2 = (s * ds2 - 2.0 * dq2) * inv
    dd3 = (s * ds3 - 2.0 * dq3) * inv
    dal0 = 0.5 * (ds0 + dd0)
    dal1 = 0.5 * (ds1 + dd1)
    dal2 = 0.5 * (ds2 + dd2)
    dal3 = 0.5 * (ds3 + dd3)
    dbe0 = 0.5 * (ds0 - dd0)
    dbe1 = 0.5 * (ds1 - dd1)
    dbe2 = 0.5 * (ds2 - dd2)
    dbe3 = 0.5 * (ds3 - dd3)
    da0 = (1.0 / vp - dbe0) * inv - a * dd0 * inv
    da1 = (0.0 - dbe1) * inv - a * dd1 * inv
    da2 = (0.0 - dbe2) * inv - a * dd2 * inv
    da3 = (-fp / (vp * vp) - dbe3) * inv - a * dd3 * inv
    # scratch: Fa, Ga, Fb, Gb in J columns 0-3; cp(t - d) in f_out; slope in column 4
    if fit_delay:
        sl = J_out[:, 4]
        _conv_one(t, c, alpha, d, True, J_out[:, 0], J_out[:, 1], f_out, sl)
        _conv_one(t, c, beta, d, True, J_out[:, 2], J_out[:, 3], f_out, sl)
    else:
        _conv_grid(t, c, alpha, J_out[:, 0], J_out[:, 1])
        _conv_grid(t, c, beta, J_out[:, 2], J_out[:, 3])
    b = 1.0 - a
    for j in range(n):
        fa = J_out[j, 0]
        ga = J_out[j, 1]
        fb = J_out[j, 2]
        gb = J_out[j, 3]
        cpj = f_out[j] if fit_delay else c[j]
        core = a * fa + b * fb
        diff = fa - fb
        f_out[j] = fp * core
        J_out[j, 0] = (core + fp * (da0 * diff - a * ga * dal0 - b * gb * dbe0)) / 6000.0
        J_out[j, 1] = fp * (da1 * diff - a * ga * dal1 - b * gb * dbe1) / 6000.0
        J_out[j, 2] = fp * (da2 * diff - a * ga * dal2 - b * gb * dbe2)
        J_out[j, 3] = fp * (da3 * diff - a * ga * dal3 - b * gb * dbe3)
        if fit_delay:
            J_out[j, 4] = -fp * (a * (cpj - alpha * fa) + b * (cpj - beta * fb))


@nb.njit(MODEL_SIGNATURE, cache=True, nogil=True)
def two_cum_kernel(p, consts, f_out, J_out):
    n, fit_delay, t, c = _unpack(consts)
    fp, ps = p[0] / 6000.0, p[1] / 6000.0  # mL/100 mL/min -> 1/s
    vp = p[2]
    d = p[3] if fit_delay else 0.0
    tot = fp + ps
    alpha = tot / vp if vp > 0.0 else 0.0
    inv_vp = 1.0 / vp if vp > 0.0 else 0.0
    amp_a = fp * fp / tot if tot > 0.0 else 0.0
    amp_b = fp * ps / tot if tot > 0.0 else 0.0
    tot2 = tot * tot if tot > 0.0 else np.inf
    da0 = fp * (fp + 2.0 * ps) / tot2
    da1 = -fp * fp / tot2
    db0 = ps * ps / tot2
    db1 = fp * fp / tot2
    # scratch: Fa, Ga, integral in J columns 0-2; cp(t - d) in f_out; slope in column 3
    sl = J_out[:, 3] if fit_delay else f_out
    _conv_one(t, c, alpha, d, True, J_out[:, 0], J_out[:, 1], f_out, sl)
    _conv_one(t, c, 0.0, d, False, J_out[:, 2], sl, f_out, sl)
    for j in range(n):
        fa = J_out[j, 0]
        ga = J_out[j, 1]
        fi = J_out[j, 2]
        cpj = f_out[j]
        f_out[j] = amp_a * fa + amp_b * fi
        J_out[j, 0] = (da0 * fa - amp_a * ga * inv_vp + db0 * fi) / 6000.0
        J_out[j, 1] = (da1 * fa - amp_a * ga * inv_vp + db1 * fi) / 6000.0
        J_out[j, 2] = amp_a * ga * alpha * inv_vp
        if fit_delay:
            J_out[j, 3] = -(amp_a * (cpj - alpha * fa) + amp_b * cpj)


#: Kernel of each model, by registered name.
KERNELS = {
    "tofts": tofts_kernel,
    "extended_tofts": extended_tofts_kernel,
    "patlak": patlak_kernel,
    "2cxm": two_cxm_kernel,
    "2cum": two_cum_kernel,
}


@nb.njit(cache=True, nogil=True)
def _scaled_cholesky_solve(a, b, sc, q, low, z, x):
    """Solve the lower-triangle normal equations ``a x = b`` (first ``q`` rows) in place.

    Column scaling by ``sc`` (``a``, ``b`` are scaled in place), Cholesky into ``low``,
    forward and back substitution through ``z`` into ``x``; ``x`` is returned unscaled in its
    first ``q`` entries. Returns False (``x`` untouched) when ``a`` is not positive definite.
    """
    for r in range(q):
        b[r] /= sc[r]
        for s in range(r + 1):
            a[r, s] /= sc[r] * sc[s]
    for j in range(q):
        d = a[j, j]
        for k in range(j):
            d -= low[j, k] * low[j, k]
        if not d > 1e-12:
            return False
        low[j, j] = np.sqrt(d)
        for i in range(j + 1, q):
            w = a[i, j]
            for k in range(j):
                w -= low[i, k] * low[j, k]
            low[i, j] = w / low[j, j]
    for i in range(q):
        w = b[i]
        for k in range(i):
            w -= low[i, k] * z[k]
        z[i] = w / low[i, i]
    for i in range(q - 1, -1, -1):
        w = z[i]
        for k in range(i + 1, q):
            w -= low[k, i] * x[k]
        x[i] = w / low[i, i]
    for i in range(q):
        x[i] /= sc[i]
    return True


@nb.njit(cache=True, nogil=True)
def murase_many(t, cp, y, with_vp):
    """Linearised (extended) Tofts fit of every row of ``y`` in one pass per voxel.

    Same equations as :func:`tumorscope.models.dce.kinetics.linear_extended_tofts` (Murase
    2004, doi:10.1002/mrm.20023): columns ``∫cp``, ``-∫C`` [, ``cp``] by the trapezoid rule,
    normal equations with column scaling, Cholesky. Returns (N, 3) coefficients
    ``(Ktrans + kep vp, kep, vp)`` in 1/s (``vp`` = 0 without ``with_vp``); NaN if singular.
    """
    nv, n = y.shape
    q = 3 if with_vp else 2
    icp = np.zeros(n)
    for j in range(1, n):
        icp[j] = icp[j - 1] + 0.5 * (cp[j] + cp[j - 1]) * (t[j] - t[j - 1])
    out = np.full((nv, 3), np.nan)
    for v in range(nv):
        a = np.zeros((3, 3))
        b = np.zeros(3)
        col = np.zeros(3)
        ic = 0.0
        for j in range(n):
            if j > 0:
                ic += 0.5 * (y[v, j] + y[v, j - 1]) * (t[j] - t[j - 1])
            col[0] = icp[j]
            col[1] = -ic
            col[2] = cp[j]
            for r in range(q):
                b[r] += col[r] * y[v, j]
                for s in range(r + 1):
                    a[r, s] += col[r] * col[s]
        sc = np.zeros(3)
        for r in range(q):
            sc[r] = np.sqrt(a[r, r]) if a[r, r] > 0.0 else 1.0
        low = np.zeros((3, 3))
        z = np.zeros(3)
        x = np.zeros(3)
        if not _scaled_cholesky_solve(a, b, sc, q, low, z, x):
            continue
        for i in range(q):
            out[v, i] = x[i]
        if not with_vp:
            out[v, 2] = 0.0
    return out


@nb.njit(cache=True, nogil=True)
def flouri_many(t, cp, y):
    """Linearised 2CXM fit of every row of ``y``: coefficients ``(S, P, Fp, Q)`` (1/s units).

    Same equations as :func:`tumorscope.models.dce.kinetics.linear_2cxm` (Flouri et al. 2016,
    doi:10.1002/mrm.25991): columns ``-∫C``, ``-∫∫C``, ``∫cp``, ``∫∫cp`` (trapezoid rule),
    normal equations with column scaling, Cholesky; one pass per voxel and no allocation per
    voxel. Returns (N, 4); NaN where singular.
    """
    nv, n = y.shape
    q = 4
    icp = np.zeros(n)
    iicp = np.zeros(n)
    for j in range(1, n):
        dt = t[j] - t[j - 1]
        icp[j] = icp[j - 1] + 0.5 * (cp[j] + cp[j - 1]) * dt
        iicp[j] = iicp[j - 1] + 0.5 * (icp[j] + icp[j - 1]) * dt
    out = np.full((nv, 4), np.nan)
    a = np.zeros((q, q))
    b = np.zeros(q)
    col = np.zeros(q)
    sc = np.zeros(q)
    low = np.zeros((q, q))
    z = np.zeros(q)
    x = np.zeros(q)
    for v in range(nv):
        a[:] = 0.0
        b[:] = 0.0
        ic = 0.0
        iic = 0.0
        for j in range(n):
            yj = y[v, j]
            if j > 0:
                dt = t[j] - t[j - 1]
                ic_new = ic + 0.5 * (yj + y[v, j - 1]) * dt
                iic += 0.5 * (ic_new + ic) * dt
                ic = ic_new
            col[0] = -ic
            col[1] = -iic
            col[2] = icp[j]
            col[3] = iicp[j]
            for r in range(q):
                b[r] += col[r] * yj
                for s in range(r + 1):
                    a[r, s] += col[r] * col[s]
        ok = True
        for r in range(q):
            if not (np.isfinite(a[r, r]) and np.isfinite(b[r])):
                ok = False
            sc[r] = np.sqrt(a[r, r]) if a[r, r] > 0.0 else 1.0
        if not ok:
            continue
        if not _scaled_cholesky_solve(a, b, sc, q, low, z, x):
            continue
        for i in range(q):
            out[v, i] = x[i]
    return out
