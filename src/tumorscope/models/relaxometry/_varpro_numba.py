"""Compiled variable projection of the plain exponential (T2, T2*), and the pieces the
inversion recovery kernel (:mod:`._ir_numba`) and the Rician-floor kernel
(:mod:`._rician_numba`) share.

The same estimator as the numpy path (:func:`tumorscope.fitting.varpro.varpro_log` then
:func:`tumorscope.fitting.polish.gauss_newton_polish`), one voxel per loop iteration, compiled
by numba with the GIL released (``nogil``) so that the engine runs blocks in a thread pool:

1. the reduced residual ``rss(θ) = Σy² - (Σey)² / Σe²`` (the amplitude solved in closed
   form, ``>= 0``, ``θ = log R``) on the same log-spaced grid of ``n_grid`` points: the
   grid's basis functions and ``1 / Σe²`` are the same for every voxel, computed once per
   block, so each grid point costs one dot product;
2. in the bracket of the two neighbours of the best grid point, Newton's method on the
   derivative of the reduced residual with its analytic first and second derivatives,
   safeguarded by bisection (:func:`_newton_rate`), started at the vertex of the parabola
   through the three grid points (:func:`vertex`) and ended by a Newton step below
   :data:`_NEWTON_DONE` (the exact minimiser to ~1e-10: no polish needed), never worse than
   the best grid point;
3. standard errors from the Jacobian at the solution (:func:`_stderr`, the ``"scaled"``
   inverse of :func:`tumorscope.fitting.uncertainty.stderr_from_jacobian`).

The exponentials of an echo train are the running product of one exponential's powers
(:func:`exp_plan`, :func:`exp_basis`). Scratch arrays are allocated once per block (an
allocation per voxel cost a third of the time).

Status and bounds are those of the numpy path (``at_bound``: the best grid point is the first
or last). The two paths agree to about 1e-6 relative (tested).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

__all__ = ["monoexp_varpro"]

#: A Newton step shorter than this ends the search (the convergence is quadratic: the point
#: it reaches is the minimiser to ~1e-10, measured on the large phantom's 246,000 voxels);
#: any step (bisection included) shorter than 1e-10 does too.
_NEWTON_DONE = 1e-5


@nb.njit(cache=True)
def exp_plan(t):
    """How :func:`exp_basis` computes ``exp(-t_k r)`` for increasing ``t (m,)``: as the
    running product of ``exp(-(t_k - t_{k-1}) r)`` (``t_{-1} = 0``), one factor per
    *distinct* step (steps equal to 1e-12 relative share one: times given in ms and scaled
    differ by rounding only). When every step is a multiple ``n_j <= 64`` of a common
    ``g`` (to 1e-12 relative), a factor is the power ``b^{n_j}`` of the one exponential
    ``b = exp(-g r)`` (by squaring); otherwise one exponential per distinct step. Echo and
    inversion times are such multiples: ``TE = 10, 20, 30, 45, … 160`` ms (steps 10, 15,
    20, 30 = 5 × 2, 3, 4, 6), ``2, 5, 8, 12, … 30`` (1 × 2, 3, 4, 5), ``TI = 100, 250, 500,
    900, 1500, 2500, 4000`` (50 × 2, 3, 5, 8, 12, 20, 30); an exponential costs ~10
    multiplications. Returns ``(steps (d,), which (m,), powers (d,), g)``, ``powers`` zero
    when there is no common ``g``."""
    m = t.shape[0]
    steps = np.empty(m)
    which = np.empty(m, dtype=np.int64)
    nd = 0
    prev = 0.0
    for k in range(m):
        d = t[k] - prev
        prev = t[k]
        j = 0
        while j < nd and abs(steps[j] - d) > 1e-12 * max(abs(d), abs(steps[j])):
            j += 1
        if j == nd:
            steps[nd] = d
            nd += 1
        which[k] = j
    steps = steps[:nd].copy()
    powers = np.zeros(nd, dtype=np.int64)
    g = 0.0
    smin = np.min(steps)
    if smin > 0.0:
        for q in range(1, 9):
            base = smin / q
            ok = True
            for j in range(nd):
                n = round(steps[j] / base)
                if n < 1 or n > 64 or abs(steps[j] - n * base) > 1e-12 * steps[j]:
                    ok = False
                    break
                powers[j] = n
            if ok:
                tot = 0.0
                cnt = 0
                for j in range(nd):
                    tot += steps[j]
                    cnt += powers[j]
                g = tot / cnt
                break
            powers[:] = 0
    return steps, which, powers, g


@nb.njit(cache=True, inline="always")
def _powi(b, n):
    """``b^n`` for an integer ``n >= 1`` by squaring."""
    out = 1.0
    while n > 0:
        if n & 1:
            out *= b
        b *= b
        n >>= 1
    return out


@nb.njit(cache=True, inline="always")
def exp_basis(plan, r, e, xs):
    """``e_k = exp(-t_k r)`` by the plan of :func:`exp_plan` (``xs (d,)`` scratch): equal to
    the direct exponentials to ~100 ulp (a power ``b^n`` carries ``n`` times ``b``'s
    rounding)."""
    steps, which, powers, g = plan
    if powers[0] > 0:
        b = math.exp(-g * r)
        for j in range(steps.shape[0]):
            xs[j] = _powi(b, powers[j])
    else:
        for j in range(steps.shape[0]):
            xs[j] = math.exp(-steps[j] * r)
    acc = 1.0
    for k in range(e.shape[0]):
        acc *= xs[which[k]]
        e[k] = acc


@nb.njit(cache=True, inline="always")
def _proj1(y, e, nonneg):
    """rss and amplitude of ``y ≈ c e`` (c >= 0 if nonneg)."""
    ff = 0.0
    fy = 0.0
    yy = 0.0
    for k in range(y.shape[0]):
        ff += e[k] * e[k]
        fy += e[k] * y[k]
        yy += y[k] * y[k]
    c = fy / ff if ff > 0.0 else 0.0
    if nonneg and c < 0.0:
        c = 0.0
    rss = yy - 2.0 * c * fy + c * c * ff
    return max(rss, 0.0), c


@nb.njit(cache=True, inline="always")
def _proj2(y, e):
    """rss and coefficients of ``y ≈ c0 + c1 e`` (unconstrained; zeros if degenerate)."""
    m = y.shape[0]
    ff = float(m)
    gg = 0.0
    fg = 0.0
    fy = 0.0
    gy = 0.0
    for k in range(m):
        gg += e[k] * e[k]
        fg += e[k]
        fy += y[k]
        gy += e[k] * y[k]
    det = ff * gg - fg * fg
    if det > 1e-12 * max(ff * gg, 1e-300):
        c0 = (gg * fy - fg * gy) / det
        c1 = (ff * gy - fg * fy) / det
    else:
        c0 = 0.0
        c1 = 0.0
    rss = 0.0
    for k in range(m):
        r = y[k] - c0 - c1 * e[k]
        rss += r * r
    return rss, c0, c1


@nb.njit(inline="always")
def _newton_bracket(x, d1, d2, a, b):
    """One safeguarded Newton step on ``dφ/dθ = 0`` at ``x`` (``d1``, ``d2``: the first and
    second derivatives there) inside the bracket ``[a, b]``: the bracket shrinks to the side
    where the derivative changes sign; the Newton point, or the bracket's midpoint when the
    curvature is not positive or the point falls outside. Returns ``(next x, a, b,
    converged)``: converged when a Newton step is below :data:`_NEWTON_DONE` (quadratic
    convergence: the next point is already the minimiser to ~1e-10) or any step below 1e-10.
    """
    if d1 > 0.0:
        b = x
    else:
        a = x
    newton = False
    if d2 > 0.0:
        xn = x - d1 / d2
        if a < xn < b:
            newton = True
        else:
            xn = 0.5 * (a + b)
    else:
        xn = 0.5 * (a + b)
    step = abs(xn - x)
    return xn, a, b, step < 1e-10 or (newton and step < _NEWTON_DONE)


@nb.njit(cache=True)
def _newton_rate(y, t, a, b, x, plan, e, xs):
    """Minimiser of the reduced rss of ``y ≈ c exp(-t r)`` (``c >= 0``) over ``θ = log r`` in
    ``[a, b]``, from ``x``: Newton's method on ``dφ/dθ = 0`` with the analytic first and second
    derivatives of ``φ = Σy² - (Σ f y)² / Σ f²``, kept inside a bracket that shrinks with the
    sign of the derivative (bisection when a step leaves it or the curvature is not positive;
    as ``rtsafe``, Press et al., *Numerical Recipes*, 3rd ed., 9.4). Converges quadratically
    (:func:`_newton_bracket`); 2–4 evaluations from the vertex of the grid's parabola.
    Returns ``(θ, φ, converged)``; ``φ`` is that of the last point evaluated (the caller
    recomputes the rss at ``θ``), converged False if 60 steps did not get there. ``plan``:
    the :func:`exp_plan` of ``t``; ``e (m,)``, ``xs`` scratch."""
    m = t.shape[0]
    yy = 0.0
    for k in range(m):
        yy += y[k] * y[k]
    phi = yy
    done = False
    for _ in range(60):
        r = math.exp(x)
        exp_basis(plan, r, e, xs)
        A = Ar = Arr = B = Br = Brr = 0.0
        for k in range(m):
            f = e[k]
            fy = f * y[k]
            ff = f * f
            tk = t[k]
            A += fy
            Ar -= tk * fy
            Arr += tk * tk * fy
            B += ff
            Br -= 2.0 * tk * ff
            Brr += 4.0 * tk * tk * ff
        if not (B > 0.0) or not (A > 0.0):
            # the amplitude is clipped to 0 (or no basis): φ is flat here
            phi = yy
            d1 = 0.0
            d2 = 0.0
        else:
            phi = max(yy - A * A / B, 0.0)
            g_r = 2.0 * A * Ar / B - A * A * Br / (B * B)
            g_rr = (
                2.0 * (Ar * Ar + A * Arr) / B
                - 4.0 * A * Ar * Br / (B * B)
                - A * A * Brr / (B * B)
                + 2.0 * A * A * Br * Br / (B * B * B)
            )
            d1 = -r * g_r
            d2 = -r * g_r - r * r * g_rr
        if d1 == 0.0:
            done = True
            break
        x, a, b, done = _newton_bracket(x, d1, d2, a, b)
        if done:
            break
    return x, phi, done


@nb.njit(cache=True)
def _newton_time2(y, t, a, b, x, plan, ex, xs):
    """Minimiser of the reduced rss of ``y ≈ c0 + c1 exp(-t / T)`` (unconstrained) over
    ``θ = log T`` in ``[a, b]``, from ``x``: the safeguarded Newton of :func:`_newton_rate`
    on ``dφ/dθ = 0`` with the analytic derivatives of ``φ = Σy² - N / D``, where for the
    basis ``(1, e)``, ``D = m Σe² - (Σe)²`` and ``N = Σe² (Σy)² - 2 Σe Σy Σey + m (Σey)²``;
    ``de/dθ = e u`` and ``d²e/dθ² = e (u² - u)`` with ``u = t / T``. Converges in a few
    evaluations where Brent needed ~20 for 1e-6 (the inversion recovery search of every
    voxel and polarity candidate). Returns ``(θ, φ, converged)`` as :func:`_newton_rate`;
    ``plan``, ``ex``, ``xs`` as there (the basis ``exp(-t u)`` at ``u = 1 / T``)."""
    m = t.shape[0]
    yy = 0.0
    sy = 0.0
    for k in range(m):
        yy += y[k] * y[k]
        sy += y[k]
    fm = float(m)
    phi = yy
    done = False
    for _ in range(60):
        inv = math.exp(-x)
        exp_basis(plan, inv, ex, xs)
        se = se1 = se2 = 0.0  # Σe and its θ-derivatives
        ee = ee1 = ee2 = 0.0  # Σe²
        ey = ey1 = ey2 = 0.0  # Σey
        for k in range(m):
            u = t[k] * inv
            ek = ex[k]
            e1 = ek * u
            e2 = ek * (u * u - u)
            se += ek
            se1 += e1
            se2 += e2
            ee += ek * ek
            ee1 += 2.0 * ek * e1
            ee2 += 2.0 * (e1 * e1 + ek * e2)
            ey += ek * y[k]
            ey1 += e1 * y[k]
            ey2 += e2 * y[k]
        D = fm * ee - se * se
        if not (D > 1e-12 * max(fm * ee, 1e-300)):
            d1 = 0.0
            d2 = 0.0
        else:
            N = ee * sy * sy - 2.0 * se * sy * ey + fm * ey * ey
            N1 = ee1 * sy * sy - 2.0 * sy * (se1 * ey + se * ey1) + 2.0 * fm * ey * ey1
            N2 = (
                ee2 * sy * sy
                - 2.0 * sy * (se2 * ey + 2.0 * se1 * ey1 + se * ey2)
                + 2.0 * fm * (ey1 * ey1 + ey * ey2)
            )
            D1 = fm * ee1 - 2.0 * se * se1
            D2 = fm * ee2 - 2.0 * (se1 * se1 + se * se2)
            phi = max(yy - N / D, 0.0)
            q1 = (N1 * D - N * D1) / (D * D)
            q2 = (N2 * D - N * D2) / (D * D) - 2.0 * D1 * q1 / D
            d1 = -q1
            d2 = -q2
        if d1 == 0.0:
            done = True
            break
        x, a, b, done = _newton_bracket(x, d1, d2, a, b)
        if done:
            break
    return x, phi, done


@nb.njit(cache=True, inline="always")
def _solve_small(H, g, P, out, d, A):
    """Solve ``H x = g`` (P <= 3) by Gaussian elimination with partial pivoting, after the
    unit-diagonal scaling and the checks of :func:`gauss_newton_polish`; False if singular.
    ``d`` (P,) and ``A`` (P, P + 1) are scratch space."""
    for i in range(P):
        d[i] = math.sqrt(H[i, i]) if H[i, i] > 0.0 else 1.0
    for i in range(P):
        for j in range(P):
            A[i, j] = H[i, j] / (d[i] * d[j]) + (1e-12 if i == j else 0.0)
            if not math.isfinite(A[i, j]):
                return False
        A[i, P] = g[i] / d[i]
        if not math.isfinite(A[i, P]):
            return False
    det = 1.0
    for c in range(P):
        piv = c
        for r in range(c + 1, P):
            if abs(A[r, c]) > abs(A[piv, c]):
                piv = r
        if A[piv, c] == 0.0:
            return False
        if piv != c:
            for j in range(P + 1):
                A[c, j], A[piv, j] = A[piv, j], A[c, j]
            det = -det
        det *= A[c, c]
        for r in range(c + 1, P):
            f = A[r, c] / A[c, c]
            for j in range(c, P + 1):
                A[r, j] -= f * A[c, j]
    if not (det > 1e-14):
        return False
    for i in range(P - 1, -1, -1):
        s = A[i, P]
        for j in range(i + 1, P):
            s -= A[i, j] * out[j]
        out[i] = s / A[i, i]
    for i in range(P):
        out[i] /= d[i]
    return True


@nb.njit(cache=True, inline="always")
def _exp_residual(y, t, p, e, r, J):
    """Residual ``y - S0 e`` into ``r`` and the Jacobian of ``S0 exp(-t R)`` w.r.t.
    ``(S0, R)`` into ``J``, given the basis ``e = exp(-t R)`` at ``p = (S0, R)``; the rss."""
    rss = 0.0
    for i in range(t.shape[0]):
        f = p[0] * e[i]
        J[i, 0] = e[i]
        J[i, 1] = -t[i] * f
        d = y[i] - f
        r[i] = d
        rss += d * d
    return rss


@nb.njit(cache=True, inline="always")
def vertex(grid, q, g_best, kc):
    """Start of a search in the bracket ``grid[kc - 1], grid[kc + 1]``: the vertex of the
    parabola through ``-q`` (the reduced residual up to a constant) at ``kc - 1, kc, kc + 1``
    if it is a minimum inside the bracket, else the best grid point ``g_best``."""
    h = grid[kc + 1] - grid[kc]
    a = -q[kc - 1]
    b = -q[kc]
    c = -q[kc + 1]
    den = a - 2.0 * b + c
    if den > 0.0:
        x = grid[kc] + 0.5 * h * (a - c) / den
        if grid[kc - 1] < x < grid[kc + 1]:
            return x
    return grid[g_best]


@nb.njit(cache=True)
def _workspace(m, P):
    """Scratch arrays of the IR kernel's polish (allocated once per block)."""
    return (
        np.empty((P, P)),
        np.empty(P),
        np.empty(P),
        np.empty(P),
        np.empty(m),
        np.empty(m),
        np.empty((m, P)),
        np.empty(P),
        np.empty((P, P + 1)),
    )


@nb.njit(cache=True, inline="always")
def _stderr(J, rss, dcol1, se, H, d, A, inv):
    """Standard errors as :func:`tumorscope.fitting.uncertainty.stderr_from_jacobian` with
    ``solver="scaled"``: ``JᵀJ`` scaled to a unit diagonal, NaN if not finite or if its
    condition number (eigenvalue ratio, closed form for 2×2 and 3×3 symmetric matrices) is
    1e12 or more, else ``sqrt(diag(inv) rss / (m - p))``. Column 1 of ``J`` is multiplied by
    ``dcol1`` first (the chain rule of a reparameterisation, e.g. R → T). ``H, A, inv``
    (P, P) and ``d`` (P,) are scratch space."""
    m, P = J.shape
    for i in range(P):
        se[i] = np.nan
    if m <= P or not math.isfinite(rss):
        return
    for i in range(P):
        for j in range(P):
            H[i, j] = 0.0
    for k in range(m):
        for i in range(P):
            ji = J[k, i] * (dcol1 if i == 1 else 1.0)
            for j in range(P):
                H[i, j] += ji * J[k, j] * (dcol1 if j == 1 else 1.0)
    for i in range(P):
        d[i] = math.sqrt(H[i, i]) if H[i, i] > 0.0 else 1.0
    for i in range(P):
        for j in range(P):
            A[i, j] = H[i, j] / (d[i] * d[j])
            if not math.isfinite(A[i, j]):
                return
    if P == 2:
        b = abs(A[0, 1])
        tr = 0.5 * (A[0, 0] + A[1, 1])
        df = 0.5 * (A[0, 0] - A[1, 1])
        rad = math.sqrt(df * df + b * b)
        lmax = abs(tr + rad)
        lmin = abs(tr - rad)
        det = A[0, 0] * A[1, 1] - A[0, 1] * A[1, 0]
        if not (lmin > 0.0 and lmax / lmin < 1e12) or det == 0.0:
            return
        inv[0, 0] = A[1, 1] / det
        inv[1, 1] = A[0, 0] / det
    else:
        c00 = A[1, 1] * A[2, 2] - A[1, 2] * A[2, 1]
        c11 = A[0, 0] * A[2, 2] - A[0, 2] * A[2, 0]
        c22 = A[0, 0] * A[1, 1] - A[0, 1] * A[1, 0]
        det = (
            A[0, 0] * c00
            - A[0, 1] * (A[1, 0] * A[2, 2] - A[1, 2] * A[2, 0])
            + A[0, 2] * (A[1, 0] * A[2, 1] - A[1, 1] * A[2, 0])
        )
        # the eigenvalues (of a positive semi-definite matrix) are needed only near
        # singularity: lmax <= tr and lmin >= det / tr², so lmax / lmin <= tr³ / det, below
        # 1e11 when det > 1e-11 tr³, and the test below passes whatever they are
        tr = A[0, 0] + A[1, 1] + A[2, 2]
        if det > 1e-11 * tr * tr * tr:
            lmax = 1.0
            lmin = 1.0
        else:
            p1 = A[0, 1] ** 2 + A[0, 2] ** 2 + A[1, 2] ** 2
            q = (A[0, 0] + A[1, 1] + A[2, 2]) / 3.0
            if p1 == 0.0:
                a0, a1, a2 = abs(A[0, 0]), abs(A[1, 1]), abs(A[2, 2])
                lmax = max(a0, max(a1, a2))
                lmin = min(a0, min(a1, a2))
            else:
                p2 = (A[0, 0] - q) ** 2 + (A[1, 1] - q) ** 2 + (A[2, 2] - q) ** 2 + 2.0 * p1
                pp = math.sqrt(p2 / 6.0)
                b00 = (A[0, 0] - q) / pp
                b11 = (A[1, 1] - q) / pp
                b22 = (A[2, 2] - q) / pp
                b01 = A[0, 1] / pp
                b02 = A[0, 2] / pp
                b12 = A[1, 2] / pp
                r = 0.5 * (
                    b00 * (b11 * b22 - b12 * b12)
                    - b01 * (b01 * b22 - b12 * b02)
                    + b02 * (b01 * b12 - b11 * b02)
                )
                r = min(1.0, max(-1.0, r))
                phi = math.acos(r) / 3.0
                e1 = q + 2.0 * pp * math.cos(phi)
                e3 = q + 2.0 * pp * math.cos(phi + 2.0 * math.pi / 3.0)
                e2 = 3.0 * q - e1 - e3
                lmax = max(abs(e1), max(abs(e2), abs(e3)))
                lmin = min(abs(e1), min(abs(e2), abs(e3)))
        if not (lmin > 0.0 and lmax / lmin < 1e12) or det == 0.0:
            return
        inv[0, 0] = c00 / det
        inv[1, 1] = c11 / det
        inv[2, 2] = c22 / det
    for i in range(P):
        var = inv[i, i] / (d[i] * d[i]) * rss / (m - P)
        se[i] = math.sqrt(var) if var >= 0.0 else np.nan


def increasing(y: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``y (n, m)`` and ``t (m,)`` as C-ordered float64 with the columns in increasing ``t``
    (the order :func:`exp_plan` needs; a voxel's fit does not depend on it)."""
    t = np.asarray(t, dtype=np.float64)
    if np.all(np.diff(t) > 0):
        return np.ascontiguousarray(y, dtype=np.float64), np.ascontiguousarray(t)
    order = np.argsort(t, kind="stable")
    return np.ascontiguousarray(np.asarray(y)[:, order], dtype=np.float64), t[order].copy()


def _grid(lo: float, hi: float, n_grid: int) -> np.ndarray:
    return np.linspace(np.log(lo), np.log(hi), n_grid)


@nb.njit(cache=True, nogil=True)
def _monoexp_block(y, te_s, grid, time_mode, params, rss, at_bound, stderr):
    n, m = y.shape
    n_grid = grid.shape[0]
    E = np.empty((n_grid, m))
    inv_gg = np.empty(n_grid)
    for gi in range(n_grid):
        x = math.exp(grid[gi])
        gg = 0.0
        for k in range(m):
            E[gi, k] = math.exp(-te_s[k] * x)
            gg += E[gi, k] * E[gi, k]
        inv_gg[gi] = 1.0 / gg if gg > 0.0 else 0.0
    q = np.empty(n_grid)
    e = np.empty(m)
    plan = exp_plan(te_s)
    xs = np.empty(plan[0].shape[0])
    res = np.empty(m)
    J = np.empty((m, 2))
    p = np.empty(2)
    H, dd, A, inv = np.empty((2, 2)), np.empty(2), np.empty((2, 2)), np.empty((2, 2))
    for v in range(n):
        yv = y[v]
        # the grid: rss = Σy² - q with q = (Σey)² / Σe² where Σey > 0 (c >= 0), else 0
        g_best = 0
        for g in range(n_grid):
            ey = 0.0
            for k in range(m):
                ey += E[g, k] * yv[k]
            q[g] = ey * ey * inv_gg[g] if ey > 0.0 else 0.0
            if q[g] > q[g_best]:
                g_best = g
        ab = g_best == 0 or g_best == n_grid - 1
        kc = min(max(g_best, 1), n_grid - 2)
        r_grid = _proj1(yv, E[g_best], True)[0]
        x0 = vertex(grid, q, g_best, kc)
        th = _newton_rate(yv, te_s, grid[kc - 1], grid[kc + 1], x0, plan, e, xs)[0]
        r = math.exp(th)
        exp_basis(plan, r, e, xs)
        rv, c = _proj1(yv, e, True)
        if not (rv <= r_grid):  # rare: never worse than the best grid point
            r = math.exp(grid[g_best])
            for k in range(m):
                e[k] = E[g_best, k]
            c = _proj1(yv, e, True)[1]
        p[0] = c
        p[1] = r
        # the rss as a sum of squared residuals (the projected form cancels near zero)
        rv = _exp_residual(yv, te_s, p, e, res, J)
        params[v, 0] = p[0]
        params[v, 1] = p[1]
        rss[v] = rv
        at_bound[v] = ab or p[0] <= 0.0
        if math.isfinite(p[0]) and math.isfinite(p[1]):
            # d R / d T = -1000 / T² = -R² / 1000 (T in ms)
            _stderr(J, rv, -p[1] * p[1] / 1000.0 if time_mode else 1.0, stderr[v], H, dd, A, inv)
        else:
            stderr[v, 0] = stderr[v, 1] = np.nan


def monoexp_varpro(
    y: np.ndarray,
    te_s: np.ndarray,
    lo: float,
    hi: float,
    *,
    time_mode: bool = False,
    n_grid: int = 48,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``S0 exp(-TE R)`` by exact least squares, ``S0 >= 0``, ``R`` in ``[lo, hi]`` (1/s).

    Parameters
    ----------
    y : ndarray, shape (n, m)
        Valid voxels (float64).
    te_s : ndarray, shape (m,)
        Echo times in s.
    lo, hi : float
        Search interval of ``R`` (1/s).
    time_mode : bool, keyword-only
        Standard errors of ``T = 1000 / R`` (ms) instead of ``R``.
    n_grid : int, keyword-only, default 48

    Returns
    -------
    params : ndarray, shape (n, 2)
        ``(S0, R)``.
    rss : ndarray, shape (n,)
    at_bound : ndarray of bool, shape (n,)
    stderr : ndarray, shape (n, 2)
        Of ``(S0, R)``, or ``(S0, T)`` with ``time_mode`` (:func:`_stderr`).
    """
    n = y.shape[0]
    params = np.empty((n, 2))
    rss = np.empty(n)
    at_bound = np.empty(n, dtype=np.bool_)
    stderr = np.empty((n, 2))
    y, te_s = increasing(y, te_s)
    _monoexp_block(
        y,
        te_s,
        _grid(lo, hi, n_grid),
        bool(time_mode),
        params,
        rss,
        at_bound,
        stderr,
    )
    return params, rss, at_bound, stderr
