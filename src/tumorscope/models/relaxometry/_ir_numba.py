"""Compiled variable projection of inversion recovery T1 (:class:`~.ir.IRT1`, RD-NLS-PR).

The estimator of the numpy path (:meth:`IRT1.fit_block <.ir.IRT1.fit_block>`: for each
polarity candidate the reduced residual on a log grid of ``T1``, a 1-D search in the bracket
of the best grid point's neighbours, the candidate with the smaller rss, two Gauss–Newton
steps on ``(M0, T1, k)``, standard errors at the solution), one voxel per loop iteration,
compiled by numba with the GIL released (``nogil``: the engine runs blocks in a thread pool).
What makes it cheaper than a search per candidate:

1. **One grid pass for both candidates.** They differ in the sign of one point (the minimum
   magnitude), so candidate 1's ``Σ e·y`` is candidate 0's less ``2 e_j y_j``. The
   reduced residual of ``y ≈ c0 + c1 e`` is ``Σy² - q`` with
   ``q = (Σe² (Σy)² - 2 Σe Σy Σey + m (Σey)²) / det`` and ``det = m Σe² - (Σe)²``: the
   grid point's ``Σe² / det``, ``2 Σe / det`` and ``m / det`` are shared by every voxel
   (computed once per block), so a grid point costs one dot product and six multiplications
   for the two candidates, no division.
2. **Newton from the parabola's vertex.** The safeguarded Newton of
   :func:`._varpro_numba._newton_time2` (to ~1e-10 in ``θ``, the exact minimiser in the
   bracket: the result does not depend on where it starts) starts at the vertex of the
   parabola through the best grid point and its neighbours instead of the grid point: a
   step or two fewer (two evaluations per candidate on the large phantom).
3. **No polish after a converged search.** The Gauss–Newton steps polish a search that
   stopped short; after a converged Newton search they changed the estimates by < 1e-10
   relative (measured on the large phantom's 246,158 voxels): they run only where the
   search did not converge or fell back to the grid point.
4. **Fewer exponentials.** ``exp(-TI_k / T1)`` is the running product of powers of one
   exponential (:func:`._varpro_numba.exp_plan`: TIs 100, 250, … 4000 ms are multiples of
   50 ms), and the basis at the solution is reused by the rss, the residuals and the
   standard errors.

The numpy path is what the tests compare it with (same estimates to ~1e-6 relative).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from ._varpro_numba import (
    _grid,
    _newton_time2,
    _proj2,
    _solve_small,
    _stderr,
    _workspace,
    exp_basis,
    exp_plan,
    increasing,
    vertex,
)

__all__ = ["ir_varpro"]


@nb.njit(cache=True, inline="always")
def _basis_at(plan, th, e, xs):
    """``e_k = exp(-t_k / T)`` at ``θ = log T`` (:func:`._varpro_numba.exp_basis`)."""
    exp_basis(plan, math.exp(-th), e, xs)


@nb.njit(cache=True, inline="always")
def _ir_residual(y, t, p, e, r, J):
    """Residual and Jacobian of ``M0 (1 - k e)`` at ``p = (M0, T1, k)`` given the basis ``e``
    at ``T1`` (``_varpro_numba._residual`` with ``ir``, the same arithmetic); the rss."""
    rss = 0.0
    for i in range(t.shape[0]):
        ei = e[i]
        f = p[0] * (1.0 - p[2] * ei)
        J[i, 0] = 1.0 - p[2] * ei
        J[i, 1] = -p[0] * p[2] * ei * t[i] / (p[1] * p[1])
        J[i, 2] = -p[0] * ei
        d = y[i] - f
        r[i] = d
        rss += d * d
    return rss


@nb.njit(cache=True, inline="always")
def _polish_ir(y, t, p, rss, e, et, J, W, plan, xs):
    """Two Gauss–Newton steps (``_varpro_numba._polish`` with ``ir``: the same steps and
    acceptance), starting from the basis ``e`` at ``p``; leaves ``J`` at the final ``p``
    and returns the rss."""
    m, P = J.shape
    H, g, step, trial, r, rt, Jt, d, A = W
    _ir_residual(y, t, p, e, r, J)
    for _ in range(2):
        for i in range(P):
            g[i] = 0.0
            for j in range(P):
                H[i, j] = 0.0
        for k in range(m):
            for i in range(P):
                g[i] += J[k, i] * r[k]
                for j in range(P):
                    H[i, j] += J[k, i] * J[k, j]
        if not _solve_small(H, g, P, step, d, A):
            break
        ok = True
        for i in range(P):
            trial[i] = p[i] + step[i]
            ok = ok and math.isfinite(trial[i])
        if not ok:
            break
        exp_basis(plan, 1.0 / trial[1], et, xs)
        rss_t = _ir_residual(y, t, trial, et, rt, Jt)
        if not (math.isfinite(rss_t) and rss_t < rss):
            break  # the next step would be the same one
        rss = rss_t
        for i in range(P):
            p[i] = trial[i]
        for k in range(m):
            r[k] = rt[k]
            for i in range(P):
                J[k, i] = Jt[k, i]
    return rss


@nb.njit(cache=True, nogil=True)
def _ir_block(y, ti, order, grid, magnitude, params, rss, at_bound, stderr):
    n, m = y.shape
    n_grid = grid.shape[0]
    E = np.empty((n_grid, m))
    Qa = np.empty(n_grid)  # Σe² / det
    Qb = np.empty(n_grid)  # 2 Σe / det
    Qc = np.empty(n_grid)  # m / det
    fm = float(m)
    for gi in range(n_grid):
        x = math.exp(grid[gi])
        gg = 0.0
        fg = 0.0
        for k in range(m):
            ek = math.exp(-ti[k] / x)
            E[gi, k] = ek
            gg += ek * ek
            fg += ek
        det = fm * gg - fg * fg
        if det > 1e-12 * max(fm * gg, 1e-300):
            Qa[gi] = gg / det
            Qb[gi] = 2.0 * fg / det
            Qc[gi] = fm / det
        else:  # a degenerate basis: the reduced residual is Σy² (q = 0), as _proj2's zeros
            Qa[gi] = Qb[gi] = Qc[gi] = 0.0
    rank = np.empty(m, dtype=np.int64)
    for i in range(m):
        rank[order[i]] = i
    q = np.empty((2, n_grid))
    ys = np.empty((2, m))
    e = np.empty(m)
    eb = np.empty(m)
    et = np.empty(m)
    J = np.empty((m, 3))
    p = np.empty(3)
    H, dd, A, inv = np.empty((3, 3)), np.empty(3), np.empty((3, 3)), np.empty((3, 3))
    W = _workspace(m, 3)
    plan = exp_plan(ti)  # ti increasing (ir_varpro)
    xs = np.empty(plan[0].shape[0])
    for v in range(n):
        yv = y[v]
        kmin = 0
        if magnitude:
            for i in range(1, m):
                if yv[order[i]] < yv[order[kmin]]:
                    kmin = i
        n_cand = 2 if magnitude else 1
        # candidate 0: the points before the minimum negated; candidate 1: the minimum too
        jm = order[kmin]
        fy0 = 0.0
        for k in range(m):
            ys[0, k] = -yv[k] if (magnitude and rank[k] < kmin) else yv[k]
            ys[1, k] = ys[0, k]
            fy0 += ys[0, k]
        ys[1, jm] = -ys[0, jm]
        yj2 = 2.0 * ys[0, jm]
        fy1 = fy0 - yj2
        g0 = 0
        g1 = 0
        for g in range(n_grid):
            ey = 0.0
            for k in range(m):
                ey += E[g, k] * ys[0, k]
            q[0, g] = Qa[g] * fy0 * fy0 - Qb[g] * fy0 * ey + Qc[g] * ey * ey
            if q[0, g] > q[0, g0]:
                g0 = g
            if n_cand == 2:
                ey1 = ey - yj2 * E[g, jm]
                q[1, g] = Qa[g] * fy1 * fy1 - Qb[g] * fy1 * ey1 + Qc[g] * ey1 * ey1
                if q[1, g] > q[1, g1]:
                    g1 = g
        best_rss = np.inf
        best_c = 0
        best_th = 0.0
        best_ab = False
        best_conv = False
        for c in range(n_cand):
            g_best = g0 if c == 0 else g1
            ab = g_best == 0 or g_best == n_grid - 1
            kc = min(max(g_best, 1), n_grid - 2)
            yc = ys[c]
            # the grid point's rss as the search computes it (E's row is its basis)
            r_grid = _proj2(yc, E[g_best])[0]
            x0 = vertex(grid, q[c], g_best, kc)
            th, _, conv = _newton_time2(yc, ti, grid[kc - 1], grid[kc + 1], x0, plan, e, xs)
            _basis_at(plan, th, e, xs)
            r = _proj2(yc, e)[0]
            if not (r <= r_grid):
                conv = False
                th = grid[g_best]
                r = r_grid
                for k in range(m):
                    e[k] = E[g_best, k]
            if c == 0 or r < best_rss:
                best_rss = r
                best_c = c
                best_th = th
                best_ab = ab
                best_conv = conv
                for k in range(m):
                    eb[k] = e[k]
        yc = ys[best_c]
        t1 = math.exp(best_th)
        rv, c0, c1 = _proj2(yc, eb)
        p[0] = c0
        p[1] = t1
        p[2] = -c1 / c0 if c0 != 0.0 else np.nan
        free = not best_ab
        for i in range(3):
            if not math.isfinite(p[i]):
                free = False
        polished = free and not best_conv
        if polished:
            # leaves J at the final p (a rejected step does not touch it)
            rv = _polish_ir(yc, ti, p, rv, eb, et, J, W, plan, xs)
        params[v, 0] = p[0]
        params[v, 1] = p[1]
        params[v, 2] = p[2]
        rss[v] = rv
        at_bound[v] = best_ab
        if math.isfinite(p[0]) and math.isfinite(p[1]) and math.isfinite(p[2]):
            if not polished:  # after the polish J is already the Jacobian at p
                _ir_residual(yc, ti, p, eb, et, J)
            _stderr(J, rv, 1.0, stderr[v], H, dd, A, inv)
        else:
            stderr[v, 0] = stderr[v, 1] = stderr[v, 2] = np.nan


def ir_varpro(
    y: np.ndarray, ti_ms: np.ndarray, lo: float, hi: float, *, magnitude: bool, n_grid: int = 48
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``M0 (1 - k exp(-TI/T1))`` by exact least squares with polarity restoration.

    The candidates of :class:`~tumorscope.models.relaxometry.IRT1` (points up to the minimum
    magnitude negated, with and without the minimum; the one with the smaller rss kept, the
    first on a tie), each by grid and Newton search over ``T1`` in ``[lo, hi]`` (ms), then
    two Gauss–Newton steps in ``(M0, T1, k)``.

    Returns
    -------
    params : ndarray, shape (n, 3)
        ``(M0, T1, k)``; ``k`` NaN where ``M0 = 0``.
    rss : ndarray, shape (n,)
    at_bound : ndarray of bool, shape (n,)
    stderr : ndarray, shape (n, 3)
        Of ``(M0, T1, k)`` (:func:`._varpro_numba._stderr`).
    """
    n = y.shape[0]
    params = np.empty((n, 3))
    rss = np.empty(n)
    at_bound = np.empty(n, dtype=np.bool_)
    stderr = np.empty((n, 3))
    y, ti = increasing(y, ti_ms)  # the candidates follow TI order: now the columns' order
    _ir_block(
        y,
        ti,
        np.arange(ti.size, dtype=np.int64),
        _grid(lo, hi, n_grid),
        bool(magnitude),
        params,
        rss,
        at_bound,
        stderr,
    )
    return params, rss, at_bound, stderr
