"""Segmented IVIM's second step by variable projection: ``S0, f, D*`` with D fixed.

With ``D`` fixed, the signal ``S0 (f exp(-b D*) + (1 - f) exp(-b D)) = a u + c v`` is linear in
the amplitudes ``a = S0 f`` and ``c = S0 (1 - f)`` (``u = exp(-b D*)``, ``v = exp(-b D)``):
for each ``D*`` the best amplitudes are a 2 × 2 least-squares problem over the polygon the
bounds on ``S0`` and ``f`` make in the ``(a, c)`` plane (``_qp``: the unconstrained
solution when it is feasible, else the best point of the polygon's edges). What is left is a
one-dimensional minimisation of the projected residual ``phi(D*)``:

1. a grid of ``D*`` (the 16 geometric points of the LM start it replaces), keeping the best;
2. a safeguarded Newton search on ``phi'(D*) = 0`` inside the bracket of the best grid
   point's neighbours (the bounds at the ends of the grid), with the exact first and
   second derivatives of the projected residual (the amplitudes' derivatives from the
   normal equations of the active set: interior, one edge, or a vertex), bisection where a
   Newton step leaves the bracket or the curvature is not positive, the bound itself where
   the minimum is on it; converged when the step is below ``1e-6 D*``, then taken (its
   error is the step's square).

The standard errors are those the bounded LM reported (its Jacobian of the four parameters
at the solution, ``s² (JᵀJ)⁻¹`` with ``s² = rss / (m - 4)``), so the perfusion correction's
selection and the maps' ``*_stderr`` keep their meaning.
:func:`._ivim_varpro_numba.fixed_d_varpro` (loaded by :func:`kernel`) is the compiled
kernel (one voxel per loop iteration, GIL-free, for the engine's block threads);
:func:`fixed_d_varpro_numpy` the same algorithm vectorised over the voxels (the numpy
backend, which the tests compare with the kernel).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...fitting.status import FitStatus

__all__ = ["constraints", "fixed_d_varpro_numpy", "kernel"]

_CONVERGED = np.uint8(FitStatus.CONVERGED)
_MAX_ITER = np.uint8(FitStatus.MAX_ITER)
_FAILED = np.uint8(FitStatus.FAILED)

#: Newton iterations at most per voxel (a handful are used: quadratic convergence).
MAX_NEWTON = 60
#: Converged when the Newton step is below this fraction of D*.
XTOL = 1e-6


def constraints(s0_lo: float, s0_hi: float, f_lo: float, f_hi: float) -> np.ndarray:
    """The bounds on ``S0`` and ``f`` as four half-planes ``g · (a, c) >= h`` of the
    amplitudes, rows ``(g_a, g_c, h)``; an infinite ``s0_hi`` gives an all-zero row (unused)."""
    rows = np.zeros((4, 3))
    rows[0] = (1.0, 1.0, s0_lo)  # a + c >= S0_lo
    if np.isfinite(s0_hi):
        rows[1] = (-1.0, -1.0, -s0_hi)  # a + c <= S0_hi
    rows[2] = (1.0 - f_lo, -f_lo, 0.0)  # a >= f_lo (a + c)
    rows[3] = (f_hi - 1.0, f_hi, 0.0)  # a <= f_hi (a + c)
    return rows


def _qp_np(
    s11: np.ndarray,
    s12: np.ndarray,
    s22: np.ndarray,
    q1: np.ndarray,
    q2: np.ndarray,
    cons: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """:func:`._ivim_varpro_numba._qp` vectorised over the voxels (arrays ``(n,)``; the
    polygon's edges and their segments do not depend on the voxel)."""
    det = s11 * s22 - s12 * s12
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        a0 = (s22 * q1 - s12 * q2) / det
        c0 = (s11 * q2 - s12 * q1) / det
        inside = det > 0.0
        for k in range(4):
            inside &= ~(cons[k, 0] * a0 + cons[k, 1] * c0 < cons[k, 2])
        best = np.full(s11.shape, np.inf)
        a, c = np.zeros(s11.shape), np.zeros(s11.shape)
        kind = np.full(s11.shape, 2, dtype=np.int64)
        e1, e2 = np.zeros(s11.shape), np.zeros(s11.shape)
        for k in range(4):
            g1, g2, hk = cons[k]
            gg = g1 * g1 + g2 * g2
            if gg == 0.0:
                continue
            d1, d2 = -g2, g1
            t1, t2 = hk * g1 / gg, hk * g2 / gg
            smin, smax, feasible = -np.inf, np.inf, True
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
            pos = dsd > 0.0
            s = np.where(pos, num / dsd, smin if np.isfinite(smin) else smax)
            kk = np.where(pos, 1, 2)
            kk = np.where((s < smin) | (s > smax), 2, kk)
            s = np.clip(s, smin, smax)
            ak, ck = t1 + s * d1, t2 + s * d2
            obj = ak * ak * s11 + 2.0 * ak * ck * s12 + ck * ck * s22 - 2.0 * (ak * q1 + ck * q2)
            obj = np.where(np.isfinite(s), obj, np.inf)
            take = obj < best
            best = np.where(take, obj, best)
            a, c = np.where(take, ak, a), np.where(take, ck, c)
            kind = np.where(take, kk, kind)
            e1, e2 = np.where(take, d1, e1), np.where(take, d2, e2)
        a, c = np.where(inside, a0, a), np.where(inside, c0, c)
        kind = np.where(inside, 0, kind)
        e1, e2 = np.where(inside, 0.0, e1), np.where(inside, 0.0, e2)
        best = np.where(inside, -(a0 * q1 + c0 * q2), best)
    return a, c, kind, e1, e2, best


def _eval_np(
    theta: np.ndarray,
    y: np.ndarray,
    b: np.ndarray,
    v: np.ndarray,
    yv: np.ndarray,
    svv: np.ndarray,
    cons: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """:func:`._ivim_varpro_numba._eval` vectorised: ``obj, d1, d2, a, c``."""
    u = np.exp(-theta[:, None] * b)
    bu = b * u
    suu = np.einsum("nm,nm->n", u, u)
    suv = np.einsum("nm,nm->n", u, v)
    yu = np.einsum("nm,nm->n", y, u)
    swu = np.einsum("nm,nm->n", bu, u)
    swv = np.einsum("nm,nm->n", bu, v)
    syw = np.einsum("nm,nm->n", y, bu)
    syww = np.einsum("nm,nm->n", y * b, bu)
    sbbuu = np.einsum("nm,nm->n", b * bu, u)
    sbbuv = np.einsum("nm,nm->n", b * bu, v)
    a, c, kind, e1, e2, obj = _qp_np(suu, suv, svv, yu, yv, cons)
    h = syw - a * swu - c * swv
    g1 = -syw + 2.0 * swu * a + swv * c
    g2 = swv * a
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        det = suu * svv - suv * suv
        dsd = e1 * e1 * suu + 2.0 * e1 * e2 * suv + e2 * e2 * svv
        ds = (e1 * g1 + e2 * g2) / dsd
        da = np.where(kind == 0, (svv * g1 - suv * g2) / det, np.where(kind == 1, ds * e1, 0.0))
        dc = np.where(kind == 0, (suu * g2 - suv * g1) / det, np.where(kind == 1, ds * e2, 0.0))
    dh = -syww - da * swu + 2.0 * a * sbbuu - dc * swv + c * sbbuv
    return obj, 2.0 * a * h, 2.0 * da * h + 2.0 * a * dh, a, c


def _amplitudes_np(
    theta: np.ndarray,
    y: np.ndarray,
    b: np.ndarray,
    v: np.ndarray,
    yv: np.ndarray,
    svv: np.ndarray,
    cons: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """:func:`._ivim_varpro_numba._amplitudes` vectorised: ``a, c, obj, u``."""
    u = np.exp(-theta[:, None] * b)
    suu, suv, yu = (np.einsum("nm,nm->n", p, q) for p, q in ((u, u), (u, v), (y, u)))
    a, c, _k, _e1, _e2, obj = _qp_np(suu, suv, svv, yu, yv, cons)
    return a, c, obj, u


def fixed_d_varpro_numpy(
    y: np.ndarray,
    b: np.ndarray,
    d: np.ndarray,
    grid: np.ndarray,
    e2: np.ndarray,
    cons: np.ndarray,
    lo3: float,
    hi3: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's algorithm vectorised over the voxels (rows of ``y``): returns ``out
    (n, 6) = (S0, D, f, D*, rss, status)`` and ``se (n, 4)``."""
    n = y.shape[0]
    n_grid = grid.shape[0]
    v = np.exp(-d[:, None] * b)
    svv = np.einsum("nm,nm->n", v, v)
    yv = np.einsum("nm,nm->n", y, v)
    best = np.full(n, np.inf)
    gi = np.zeros(n, dtype=np.int64)
    for g in range(n_grid):
        ek = e2[g]
        obj = _qp_np(np.full(n, ek @ ek), v @ ek, svv, y @ ek, yv, cons)[5]
        take = obj < best
        best = np.where(take, obj, best)
        gi = np.where(take, g, gi)
    theta = grid[gi]
    lo = np.where(gi > 0, grid[np.maximum(gi - 1, 0)], lo3)
    hi = np.where(gi < n_grid - 1, grid[np.minimum(gi + 1, n_grid - 1)], hi3)
    lo_b, hi_b = gi == 0, gi == n_grid - 1
    best_theta = theta.copy()
    status = np.full(n, _MAX_ITER, dtype=np.uint8)
    act = np.arange(n)
    for _ in range(MAX_NEWTON):
        if act.size == 0:
            break
        th = theta[act]
        obj, g1, g2, _a, _c = _eval_np(th, y[act], b, v[act], yv[act], svv[act], cons)
        fail = ~(np.isfinite(obj) & np.isfinite(g1))
        status[act[fail]] = _FAILED
        better = ~fail & (obj < best[act])
        best[act[better]] = obj[better]
        best_theta[act[better]] = th[better]
        conv = ~fail & ((g1 == 0.0) | ((th <= lo3) & (g1 > 0.0)) | ((th >= hi3) & (g1 < 0.0)))
        status[act[conv]] = _CONVERGED
        go = ~(fail | conv)
        act, th, g1, g2 = act[go], th[go], g1[go], g2[go]
        right = g1 > 0.0
        hi[act[right]] = th[right]
        hi_b[act[right]] = False
        lo[act[~right]] = th[~right]
        lo_b[act[~right]] = False
        with np.errstate(divide="ignore", invalid="ignore"):
            new = np.where(g2 > 0.0, th - g1 / g2, np.nan)
        l_, h_ = lo[act], hi[act]
        out_of = ~((l_ < new) & (new < h_))
        fallback = np.where(
            right & lo_b[act], l_, np.where(~right & hi_b[act], h_, 0.5 * (l_ + h_))
        )
        new = np.where(out_of, fallback, new)
        small = np.abs(new - th) <= XTOL * th
        status[act[small]] = _CONVERGED
        theta[act] = new
        act = act[~small]
    # the solution: where the search converged, unless a point evaluated before was better
    # beyond the rounding of the projected residual (or the search did not converge)
    theta = np.where(status == _CONVERGED, theta, best_theta)
    a, c, obj, u = _amplitudes_np(theta, y, b, v, yv, svv, cons)
    worse = (obj > best + 1e-10 * np.einsum("nm,nm->n", y, y)) & (theta != best_theta)
    if worse.any():
        theta = np.where(worse, best_theta, theta)
        a2, c2, _o, u2 = _amplitudes_np(
            theta[worse], y[worse], b, v[worse], yv[worse], svv[worse], cons
        )
        a[worse], c[worse], u[worse] = a2, c2, u2
    s0 = a + c
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(s0 > 0.0, a / s0, max(-cons[2, 1], 0.0))
    rss = np.sum((y - a[:, None] * u - c[:, None] * v) ** 2, axis=1)
    status[~(np.isfinite(rss) & np.isfinite(s0) & np.isfinite(f))] = _FAILED
    out = np.c_[s0, d, f, theta, rss, status.astype(float)]
    return out, _stderr_np(b, u, v, s0, f, rss)


def _stderr_np(
    b: np.ndarray, u: np.ndarray, v: np.ndarray, s0: np.ndarray, f: np.ndarray, rss: np.ndarray
) -> np.ndarray:
    """:func:`._ivim_varpro_numba._stderr` vectorised."""
    n, m = u.shape
    se = np.full((n, 4), np.nan)
    if m <= 4:
        return se
    sf, ff = s0[:, None], f[:, None]
    J = np.stack(
        [ff * u + (1.0 - ff) * v, -sf * (1.0 - ff) * b * v, sf * (u - v), -sf * ff * b * u],
        axis=-1,
    )
    h = np.einsum("nki,nkj->nij", J, J)
    ok = np.isfinite(rss)
    L = np.zeros_like(h)
    with np.errstate(invalid="ignore", divide="ignore"):
        for j in range(4):
            s = h[:, j, j] - np.sum(L[:, j, :j] ** 2, axis=1)
            ok &= s > 0.0
            L[:, j, j] = np.sqrt(np.where(s > 0.0, s, 1.0))
            for i in range(j + 1, 4):
                t = h[:, i, j] - np.sum(L[:, i, :j] * L[:, j, :j], axis=1)
                L[:, i, j] = t / L[:, j, j]
        inv = np.zeros_like(h)
        for j in range(4):
            inv[:, j, j] = 1.0 / L[:, j, j]
            for i in range(j + 1, 4):
                t = -np.sum(L[:, i, j:i] * inv[:, j:i, j], axis=1)
                inv[:, i, j] = t / L[:, i, i]
        diag = np.sum(inv**2, axis=1)  # column sums of (L⁻¹)²
        se[ok] = np.sqrt(rss[ok, None] / (m - 4) * diag[ok])
    return se


_KERNEL: Any = None


def kernel() -> Any:
    """The compiled block kernel ``(y, b, d, grid, e2, cons, lo3, hi3, max_iter, xtol, out,
    se)``, or None
    without numba. The functions above are compiled as they are (numba, ``cache=True``,
    GIL-free): the numpy path is :func:`fixed_d_varpro_numpy`."""
    global _KERNEL
    if _KERNEL is None:
        try:
            from . import _ivim_varpro_numba
        except ImportError:  # pragma: no cover - numba is in the 'fast' extra
            return None
        _KERNEL = _ivim_varpro_numba.fixed_d_varpro
    return _KERNEL
