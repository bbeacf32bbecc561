"""Compiled (numba) kernel of :mod:`tumorscope.models.diffusion._ivim_varpro`: segmented
IVIM's second step (``S0, f, D*`` with D fixed) by variable projection, one voxel per loop
iteration, GIL-free (the engine runs blocks in threads). The algorithm is documented in
:mod:`._ivim_varpro`, whose numpy path (vectorised over the voxels) the tests compare with
this one. Imported only when numba is installed.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from ._ivim_varpro import _CONVERGED, _FAILED, _MAX_ITER
from ._numba import _exp

#: Sums in any order and fused multiply-adds (no assumption on NaN or inf).
_FAST = {"contract", "reassoc"}

__all__ = ["fixed_d_varpro"]


@nb.njit(cache=True, inline="always")
def _qp(s11, s12, s22, q1, q2, cons):
    """Minimise ``tᵀ S t - 2 qᵀ t`` over the polygon ``cons`` (t = (a, c)).

    Returns ``a, c, kind, d1, d2, obj``: ``kind`` 0 interior (the unconstrained solution),
    1 on an edge of direction ``(d1, d2)``, 2 on a vertex; ``obj`` the objective there.
    """
    det = s11 * s22 - s12 * s12
    if det > 0.0:
        a = (s22 * q1 - s12 * q2) / det
        c = (s11 * q2 - s12 * q1) / det
        ok = True
        for k in range(4):
            if cons[k, 0] * a + cons[k, 1] * c < cons[k, 2]:
                ok = False
        if ok:
            return a, c, 0, 0.0, 0.0, -(a * q1 + c * q2)
    best = np.inf
    ba, bc, bkind, bd1, bd2 = 0.0, 0.0, 2, 0.0, 0.0
    for k in range(4):
        g1 = cons[k, 0]
        g2 = cons[k, 1]
        gg = g1 * g1 + g2 * g2
        if gg == 0.0:
            continue
        d1 = -g2
        d2 = g1
        t1 = cons[k, 2] * g1 / gg
        t2 = cons[k, 2] * g2 / gg
        smin = -np.inf
        smax = np.inf
        feasible = True
        for j in range(4):
            if j == k or (cons[j, 0] == 0.0 and cons[j, 1] == 0.0):
                continue
            gd = cons[j, 0] * d1 + cons[j, 1] * d2
            r = cons[j, 2] - (cons[j, 0] * t1 + cons[j, 1] * t2)
            if gd > 1e-300:
                smin = max(smin, r / gd)
            elif gd < -1e-300:
                smax = min(smax, r / gd)
            elif r > 0.0:
                feasible = False
        if not feasible or smin > smax:
            continue
        dsd = d1 * d1 * s11 + 2.0 * d1 * d2 * s12 + d2 * d2 * s22
        num = d1 * (q1 - s11 * t1 - s12 * t2) + d2 * (q2 - s12 * t1 - s22 * t2)
        kind = 1
        if dsd > 0.0:
            s = num / dsd
        else:
            s = smin if np.isfinite(smin) else smax
            kind = 2
        if s < smin:
            s = smin
            kind = 2
        elif s > smax:
            s = smax
            kind = 2
        if not np.isfinite(s):
            continue
        a = t1 + s * d1
        c = t2 + s * d2
        obj = a * a * s11 + 2.0 * a * c * s12 + c * c * s22 - 2.0 * (a * q1 + c * q2)
        if obj < best:
            best = obj
            ba, bc, bkind, bd1, bd2 = a, c, kind, d1, d2
    return ba, bc, bkind, bd1, bd2, best


@nb.njit(cache=True, inline="always", fastmath=_FAST)
def _eval(theta, y, b, v, yv, svv, cons, u):
    """The projected residual at ``D* = theta`` (up to the constant ``yᵀy``), its first two
    derivatives and the amplitudes: ``obj, d1, d2, a, c``; ``u`` receives ``exp(-b theta)``."""
    m = b.shape[0]
    for k in range(m):  # branch-free exp: the loop vectorises
        u[k] = _exp(-b[k] * theta)
    suu = suv = yu = swu = swv = syw = syww = sbbuu = sbbuv = 0.0
    for k in range(m):
        uk = u[k]
        bk = b[k]
        bu = bk * uk
        suu += uk * uk
        suv += uk * v[k]
        yu += y[k] * uk
        swu += bu * uk
        swv += bu * v[k]
        syw += y[k] * bu
        syww += y[k] * bk * bu
        sbbuu += bk * bu * uk
        sbbuv += bk * bu * v[k]
    a, c, kind, e1, e2, obj = _qp(suu, suv, svv, yu, yv, cons)
    h = syw - a * swu - c * swv
    # d(q - S t)/d theta at fixed t: g = dq - dS t
    g1 = -syw + 2.0 * swu * a + swv * c
    g2 = swv * a
    if kind == 0:
        det = suu * svv - suv * suv
        da = (svv * g1 - suv * g2) / det
        dc = (suu * g2 - suv * g1) / det
    elif kind == 1:
        dsd = e1 * e1 * suu + 2.0 * e1 * e2 * suv + e2 * e2 * svv
        ds = (e1 * g1 + e2 * g2) / dsd
        da = ds * e1
        dc = ds * e2
    else:
        da = 0.0
        dc = 0.0
    dh = -syww - da * swu + 2.0 * a * sbbuu - dc * swv + c * sbbuv
    return obj, 2.0 * a * h, 2.0 * da * h + 2.0 * a * dh, a, c


@nb.njit(cache=True, inline="always", fastmath=_FAST)
def _amplitudes(theta, y, b, v, yv, svv, cons, u):
    """The amplitudes at ``D* = theta`` and the projected residual (less ``yᵀy``): ``a, c,
    obj``; ``u`` receives ``exp(-b theta)``."""
    m = b.shape[0]
    for k in range(m):
        u[k] = _exp(-b[k] * theta)
    suu = suv = yu = 0.0
    for k in range(m):
        suu += u[k] * u[k]
        suv += u[k] * v[k]
        yu += y[k] * u[k]
    a, c, _k, _d1, _d2, obj = _qp(suu, suv, svv, yu, yv, cons)
    return a, c, obj


@nb.njit(cache=True, fastmath=_FAST)
def _voxel(y, b, d, grid, e2, suu_grid, cons, lo3, hi3, max_iter, xtol, out, se, u, v, h, inv):
    """Fit one voxel: ``out = (S0, D, f, D*, rss, status)``, ``se`` the four standard errors."""
    m = b.shape[0]
    n_grid = grid.shape[0]
    svv = yv = yy = 0.0
    for k in range(m):
        v[k] = _exp(-b[k] * d)
    for k in range(m):
        svv += v[k] * v[k]
        yv += y[k] * v[k]
        yy += y[k] * y[k]
    # 1. the grid
    best = np.inf
    gi = 0
    for g in range(n_grid):
        suu = suu_grid[g]
        suv = yu = 0.0
        for k in range(m):
            ek = e2[g, k]
            suv += ek * v[k]
            yu += y[k] * ek
        _a, _c, _k, _d1, _d2, obj = _qp(suu, suv, svv, yu, yv, cons)
        if obj < best:
            best = obj
            gi = g
    theta = grid[gi]
    lo = grid[gi - 1] if gi > 0 else lo3
    hi = grid[gi + 1] if gi < n_grid - 1 else hi3
    lo_bound = gi == 0  # the bracket's end is the (not yet evaluated) bound
    hi_bound = gi == n_grid - 1
    best_theta = theta
    status = _MAX_ITER
    # 2. safeguarded Newton on phi'(theta) = 0
    for _ in range(max_iter):
        obj, g1, g2, a, c = _eval(theta, y, b, v, yv, svv, cons, u)
        if not (np.isfinite(obj) and np.isfinite(g1)):
            status = _FAILED
            break
        if obj < best:
            best = obj
            best_theta = theta
        if g1 == 0.0 or (theta <= lo3 and g1 > 0.0) or (theta >= hi3 and g1 < 0.0):
            status = _CONVERGED  # stationary (or flat: a = 0), or the minimum on a bound
            break
        if g1 > 0.0:
            hi = theta
            hi_bound = False
        else:
            lo = theta
            lo_bound = False
        new = theta - g1 / g2 if g2 > 0.0 else np.nan
        if not (lo < new < hi):
            if g1 > 0.0 and lo_bound:
                new = lo
            elif g1 < 0.0 and hi_bound:
                new = hi
            else:
                new = 0.5 * (lo + hi)
        if abs(new - theta) <= xtol * theta:
            # the step is the error's estimate: take it (Newton: the new error is its square)
            status = _CONVERGED
            theta = new
            break
        theta = new
    # 3. the solution: where the search converged, unless a point evaluated before was
    # better beyond the rounding of the projected residual (or the search did not converge)
    if status != _CONVERGED:
        theta = best_theta
    a, c, obj = _amplitudes(theta, y, b, v, yv, svv, cons, u)
    if obj > best + 1e-10 * yy and theta != best_theta:
        theta = best_theta
        a, c, obj = _amplitudes(theta, y, b, v, yv, svv, cons, u)
    s0 = a + c
    f = a / s0 if s0 > 0.0 else max(-cons[2, 1], 0.0)
    rss = 0.0
    for k in range(m):
        r = y[k] - a * u[k] - c * v[k]
        rss += r * r
    if not (np.isfinite(rss) and np.isfinite(s0) and np.isfinite(f)):
        status = _FAILED
    out[0] = s0
    out[1] = d
    out[2] = f
    out[3] = theta
    out[4] = rss
    out[5] = status
    _stderr(b, u, v, s0, f, rss, se, h, inv)


@nb.njit(cache=True)
def _stderr(b, u, v, s0, f, rss, se, h, inv):
    """``sqrt(s² diag((JᵀJ)⁻¹))`` of the four IVIM parameters (S0, D, f, D*), ``s² = rss /
    (m - 4)``, as the bounded LM reports them; NaN where ``JᵀJ`` is singular or m <= 4.
    ``h`` and ``inv``: ``(4, 4)`` scratch arrays."""
    m = b.shape[0]
    for i in range(4):
        se[i] = np.nan
    if m <= 4 or not np.isfinite(rss):
        return
    h[:] = 0.0
    for k in range(m):
        j0 = f * u[k] + (1.0 - f) * v[k]
        j1 = -s0 * (1.0 - f) * b[k] * v[k]
        j2 = s0 * (u[k] - v[k])
        j3 = -s0 * f * b[k] * u[k]
        h[0, 0] += j0 * j0
        h[1, 0] += j1 * j0
        h[1, 1] += j1 * j1
        h[2, 0] += j2 * j0
        h[2, 1] += j2 * j1
        h[2, 2] += j2 * j2
        h[3, 0] += j3 * j0
        h[3, 1] += j3 * j1
        h[3, 2] += j3 * j2
        h[3, 3] += j3 * j3
    # Cholesky h = L Lᵀ (lower triangle), then diag(h⁻¹) = column sums of (L⁻¹)²
    for j in range(4):
        s = h[j, j]
        for k in range(j):
            s -= h[j, k] * h[j, k]
        if not (s > 0.0):
            return
        h[j, j] = math.sqrt(s)
        for i in range(j + 1, 4):
            t = h[i, j]
            for k in range(j):
                t -= h[i, k] * h[j, k]
            h[i, j] = t / h[j, j]
    s2 = rss / (m - 4)
    inv[:] = 0.0  # L⁻¹, lower triangular
    for j in range(4):
        inv[j, j] = 1.0 / h[j, j]
        for i in range(j + 1, 4):
            t = 0.0
            for k in range(j, i):
                t -= h[i, k] * inv[k, j]
            inv[i, j] = t / h[i, i]
    for j in range(4):
        t = 0.0
        for i in range(j, 4):
            t += inv[i, j] * inv[i, j]
        se[j] = math.sqrt(s2 * t)


@nb.njit(cache=True, nogil=True)
def fixed_d_varpro(y, b, d, grid, e2, cons, lo3, hi3, max_iter, xtol, out, se):
    """Every voxel (row) of a block: ``out (n, 6) = (S0, D, f, D*, rss, status)``, ``se (n,
    4)``; ``max_iter`` Newton iterations at most, converged when a step is below ``xtol D*``
    (the search's constants are arguments: a cached kernel does not see a change of another
    module's globals)."""
    m = b.shape[0]
    u = np.empty(m)
    v = np.empty(m)
    suu_grid = np.empty(grid.shape[0])
    h = np.empty((4, 4))
    inv = np.empty((4, 4))
    for g in range(grid.shape[0]):
        t = 0.0
        for k in range(m):
            t += e2[g, k] * e2[g, k]
        suu_grid[g] = t
    for i in range(y.shape[0]):
        _voxel(
            y[i],
            b,
            d[i],
            grid,
            e2,
            suu_grid,
            cons,
            lo3,
            hi3,
            max_iter,
            xtol,
            out[i],
            se[i],
            u,
            v,
            h,
            inv,
        )
