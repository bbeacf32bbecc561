"""Compiled water-line fit of :func:`tumorscope.models.cest.wassr_b0` by variable projection.

The model of ``wassr_b0`` on the grid ``g`` around a voxel's sampled minimum is
``c + s (g - x0) - A L(g - x0; Γ)`` with ``L(d; Γ) = q / (q + d²)``, ``q = Γ²/4``. For a fixed
``θ = (Γ, x0)`` it is linear in ``(c, s, A)`` (``c + s (g - x0)`` spans the same space as
``[1, g]``), so the least-squares problem over the five parameters is the one over ``θ`` of
the variable-projection residual ``r(θ) = P⊥(θ) y``, ``P⊥`` the projector onto the complement
of ``[1, g, L(θ)]`` (Golub & Pereyra 1973, doi:10.1137/0710036): the same minima, found by a
2-parameter Levenberg–Marquardt with the exact (Golub–Pereyra) Jacobian of ``r``.

One compiled loop per voxel does all of it: the knot derivatives of the not-a-knot cubic
spline (``D @ y``, ``D`` from :func:`tumorscope.models.cest.zspec._slope_operator`), the
spline on the grid (Hermite form, as ``zspec._spline_at``), the start (the grid minimum; the
width of the dip at half depth on the grid, else ``window``), the fit. The algebra works on
sums over the grid only: with ``P0`` the projector off ``[1, g]`` (``Σ g = 0`` on the
symmetric grid),
``P0 u · P0 v = u·v - n ū v̄ - (u·g)(v·g) / (g·g)``.

A voxel whose solution leaves the 5-parameter problem's bounds (``A < 0``, ``Γ`` outside
``[1e-3, 20]``, ``|x0| >= window``), or that does not converge, is flagged: ``wassr_b0`` fits
those again with the bounded 5-parameter solver (:func:`._numba.lorentz_slope_lm`).
"""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["wassr_varpro"]

_FM = {"reassoc", "contract", "arcp", "nsz"}


@nb.njit(cache=True, fastmath=_FM, inline="always")
def _rss(tg, tx, g, yt, n, G, L, out):
    """The variable-projection RSS at ``θ = (tg, tx)``, summed from the residuals (not as a
    difference of sums: the convergence test compares RSS to 1e-12); ``L`` receives the line,
    ``out[0] = L̃·L̃``, ``out[1] = L·ỹ``. ``yt`` is ``P0 y``."""
    q = 0.25 * tg * tg
    sL = sLg = sLL = sLy = 0.0
    for i in range(n):
        d = g[i] - tx
        v = q / (q + d * d)
        L[i] = v
        sL += v
        sLg += v * g[i]
        sLL += v * v
        sLy += v * yt[i]
    Lb = sL / n
    cg = sLg / G
    nL = sLL - n * Lb * Lb - sLg * cg
    out[0] = nL
    out[1] = sLy
    out[9] = Lb
    out[10] = cg
    if not (nL > 0.0):
        return np.inf
    b = sLy / nL
    rss = 0.0
    for i in range(n):
        r = yt[i] - b * (L[i] - Lb - cg * g[i])
        rss += r * r
    return rss


@nb.njit(cache=True, fastmath=_FM, inline="always")
def _derivs(tg, tx, g, yt, n, G, L, out):
    """After :func:`_rss` at the same ``θ``: the products of the derivatives of ``L``
    (``ũ_k`` = ``P0 dL/dθ_k``) with ``L̃``, ``ỹ`` and each other, into ``out[2:9]``."""
    q = 0.25 * tg * tg
    hg = 0.5 * tg
    tq = 2.0 * q
    s1 = s1g = s1L = s1y = s11 = 0.0
    s2 = s2g = s2L = s2y = s22 = s12 = 0.0
    for i in range(n):
        d = g[i] - tx
        r = 1.0 / (q + d * d)
        rr = r * r
        u1 = hg * d * d * rr  # dL/dΓ
        u2 = tq * d * rr  # dL/dx0
        s1 += u1
        s1g += u1 * g[i]
        s1L += u1 * L[i]
        s1y += u1 * yt[i]
        s11 += u1 * u1
        s2 += u2
        s2g += u2 * g[i]
        s2L += u2 * L[i]
        s2y += u2 * yt[i]
        s22 += u2 * u2
        s12 += u1 * u2
    Lb = out[9]
    sLg = out[10] * G
    b1 = s1 / n
    b2 = s2 / n
    out[2] = s1L - n * b1 * Lb - s1g * sLg / G  # ũ1·L̃
    out[3] = s2L - n * b2 * Lb - s2g * sLg / G
    out[4] = s1y  # ũ1·ỹ (ỹ is orthogonal to 1 and g)
    out[5] = s2y
    out[6] = s11 - n * b1 * b1 - s1g * s1g / G  # ũ1·ũ1
    out[7] = s22 - n * b2 * b2 - s2g * s2g / G
    out[8] = s12 - n * b1 * b2 - s1g * s2g / G


@nb.njit(cache=True, inline="always")
def _hermite(x, D, y, m, i, qv):
    """The cubic Hermite spline through the knots ``(x, y)`` at ``qv`` in ``[x[i], x[i + 1]]``;
    the knot derivatives ``m = D @ y`` are computed for the two knots it needs (NaN: not yet)
    and kept in ``m`` for the next points."""
    for a in range(i, i + 2):
        if np.isnan(m[a]):
            s = 0.0
            for b in range(x.shape[0]):
                s += D[a, b] * y[b]
            m[a] = s
    h = x[i + 1] - x[i]
    t = (qv - x[i]) / h
    t1 = 1.0 - t
    return (t1 * t1) * ((1.0 + 2.0 * t) * y[i] + (t * h) * m[i]) + (t * t) * (
        (3.0 - 2.0 * t) * y[i + 1] - (t1 * h) * m[i + 1]
    )


@nb.njit(cache=True, nogil=True, fastmath=_FM)
def _voxel(x, D, zrow, k, g, window, max_iter, ftol, xtol, yk, m, out):
    """The water line of one spectrum; returns ``(shift, flag)``: flag 0 = solved here,
    1 = outside the bounded problem or not converged, 2 = no finite spline value on the grid
    (``wassr_b0`` hands both to the bounded 5-parameter fit)."""
    K = x.shape[0]
    n = g.shape[0]
    for a in range(K):
        yk[a] = zrow[a]
        m[a] = np.nan  # the knot derivatives (D @ y), computed for the knots the grid needs
    # the spline on the grid x[k] + g (NaN outside the knots: the row's largest value)
    xk = x[k]
    yv = np.empty(n)
    iv = 0
    top = -np.inf
    any_out = False
    for i in range(n):
        qv = xk + g[i]
        if qv < x[0] or qv > x[K - 1]:
            yv[i] = np.nan
            any_out = True
            continue
        while iv < K - 2 and x[iv + 1] <= qv:
            iv += 1
        val = _hermite(x, D, yk, m, iv, qv)
        yv[i] = val
        if val > top:
            top = val
    if top == -np.inf:
        return 0.0, 2
    if any_out:
        for i in range(n):
            if np.isnan(yv[i]):
                yv[i] = top
    j = 0
    for i in range(1, n):
        if yv[i] < yv[j]:
            j = i
    # ỹ = P0 y (off the constant and the slope)
    G = 0.0
    sy = syg = 0.0
    for i in range(n):
        G += g[i] * g[i]
        sy += yv[i]
        syg += yv[i] * g[i]
    yb = sy / n
    cy = syg / G
    yt = np.empty(n)
    L = np.empty(n)
    for i in range(n):
        yt[i] = yv[i] - yb - cy * g[i]
    # start: the grid minimum, the width at half depth on the grid (else the window)
    tx = g[j]
    half = 0.5 * (top + yv[j])
    il = j
    while il > 0 and yv[il] < half:
        il -= 1
    ir = j
    while ir < n - 1 and yv[ir] < half:
        ir += 1
    tg = window
    if yv[il] >= half and yv[ir] >= half and ir > il:
        tg = min(max(g[ir] - g[il], 1e-2), 20.0)
    rss = _rss(tg, tx, g, yt, n, G, L, out)
    if not np.isfinite(rss):
        return 0.0, 1
    _derivs(tg, tx, g, yt, n, G, L, out)
    lam = 1e-3
    it = 0
    converged = False
    build = True
    H11 = H22 = H12 = g1 = g2 = 0.0
    while it < max_iter:
        if build:
            nL = out[0]
            bcoef = out[1] / nL  # ỹ ≈ bcoef L̃ (bcoef = -A)
            # Golub–Pereyra Jacobian columns: -b P⊥ũ_k - (ũ_k·r) L̃ / nL, r = ỹ - b L̃
            t1 = out[4] - bcoef * out[2]  # ũ1·r
            t2 = out[5] - bcoef * out[3]
            w11 = out[6] - out[2] * out[2] / nL
            w22 = out[7] - out[3] * out[3] / nL
            w12 = out[8] - out[2] * out[3] / nL
            H11 = bcoef * bcoef * w11 + t1 * t1 / nL
            H22 = bcoef * bcoef * w22 + t2 * t2 / nL
            H12 = bcoef * bcoef * w12 + t1 * t2 / nL
            g1 = bcoef * t1  # -Jᵀr
            g2 = bcoef * t2
            build = False
        it += 1
        a11 = H11 + lam * max(H11, 1e-30)
        a22 = H22 + lam * max(H22, 1e-30)
        det = a11 * a22 - H12 * H12
        rss_t = np.inf
        ok = det > 0.0
        d1 = d2 = 0.0
        if ok:
            d1 = (a22 * g1 - H12 * g2) / det
            d2 = (a11 * g2 - H12 * g1) / det
            rss_t = _rss(tg + d1, tx + d2, g, yt, n, G, L, out)
        if ok and np.isfinite(rss_t) and rss_t < rss:
            small_step = abs(d1) <= xtol * (abs(tg) + 1.0) and abs(d2) <= xtol * (abs(tx) + 0.1)
            small_gain = (rss - rss_t) <= ftol * rss
            tg += d1
            tx += d2
            rss = rss_t
            _derivs(tg, tx, g, yt, n, G, L, out)
            lam = max(lam / 10.0, 1e-12)
            build = True
            if small_step or small_gain or rss == 0.0:
                converged = True
                break
        else:
            if ok and abs(d1) <= xtol * (abs(tg) + 1.0) and abs(d2) <= xtol * (abs(tx) + 0.1):
                # the step the rejected trial proposed is below the step tolerance: at the
                # minimum to within xtol (rounding makes the RSS no smaller; raising the
                # damping to 1e10 would end here too, a dozen trials later)
                converged = True
                break
            lam *= 10.0
            if lam > 1e10:
                converged = True
                break
    if not converged:
        return 0.0, 1
    if not build:  # the last trial was rejected: out holds its sums
        _rss(tg, tx, g, yt, n, G, L, out)
    nL = out[0]
    amp = -out[1] / nL
    gam = abs(tg)
    if not (amp >= 0.0 and 1e-3 <= gam <= 20.0 and abs(tx) < window and np.isfinite(tx)):
        return 0.0, 1
    return tx, 0


@nb.njit(cache=True, parallel=True)
def wassr_varpro(x, D, z, k0, g, window, max_iter, ftol, xtol, shift, flag):
    """The water-line offset ``x0`` (relative to ``x[k0]``) of every row of ``z`` (see the
    module); ``flag``: 0 solved, 1 to be solved by the bounded 5-parameter fit, 2 no finite
    value on the grid."""
    K = x.shape[0]
    for v in nb.prange(z.shape[0]):
        yk = np.empty(K)
        m = np.empty(K)
        out = np.empty(11)
        s, f = _voxel(x, D, z[v], k0[v], g, window, max_iter, ftol, xtol, yk, m, out)
        shift[v] = s
        flag[v] = f


@nb.njit(cache=True, parallel=True)
def spline_rows(x, D, z, q, out):
    """``zspec._spline_at`` compiled: the not-a-knot cubic spline of each row of ``z`` (knots
    ``x``, knot derivatives ``D @ z[v]``, only those of the knots around a point) at the row's
    points ``q[v]``, in Hermite form; NaN outside ``[x[0], x[-1]]`` and on rows with a
    non-finite value."""
    K = x.shape[0]
    Q = q.shape[1]
    for v in nb.prange(z.shape[0]):
        y = np.empty(K)
        m = np.empty(K)
        fin = True
        for a in range(K):
            y[a] = z[v, a]
            if not np.isfinite(y[a]):
                fin = False
        if not fin:
            for c in range(Q):
                out[v, c] = np.nan
            continue
        for a in range(K):
            m[a] = np.nan  # the knot derivatives, computed when a point needs them
        for c in range(Q):
            qv = q[v, c]
            if not (qv >= x[0] and qv <= x[K - 1]):
                out[v, c] = np.nan
                continue
            lo = 0
            hi = K - 1  # x[lo] <= qv, the interval [lo, lo + 1] (the last one at x[-1])
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if x[mid] <= qv:
                    lo = mid
                else:
                    hi = mid
            i = min(lo, K - 2)
            out[v, c] = _hermite(x, D, y, m, i, qv)


@nb.njit(cache=True, parallel=True)
def minimum_and_half(z, x, cand, k0, half):
    """Per row of ``z`` (finite rows): ``k0``, the index in ``cand`` of the smallest value
    (the first on ties, as ``np.argmin``) mapped to an offset index, and ``half``, the largest
    ``|x - x[k0]|`` over the offsets whose value lies at or below half depth (midway between
    the row's largest value and its minimum): the numpy loop of ``wassr_b0``, one pass."""
    K = x.shape[0]
    for v in nb.prange(z.shape[0]):
        k = cand[0]
        best = np.float64(z[v, k])
        for c in range(1, cand.shape[0]):
            val = np.float64(z[v, cand[c]])
            if val < best:
                best = val
                k = cand[c]
        top = np.float64(z[v, 0])
        for a in range(1, K):
            val = np.float64(z[v, a])
            if val > top:
                top = val
        depth = 0.5 * (top + best)
        h = 0.0
        for a in range(K):
            if np.float64(z[v, a]) <= depth:
                d = abs(x[a] - x[k])
                if d > h:
                    h = d
        k0[v] = k
        half[v] = h


@nb.njit(cache=True, parallel=True, nogil=True)
def normalised_rows(flat, vox, m0i, sat, w, floor, out):
    """:func:`tumorscope.models.cest.normalise` of some voxels of a series, as rows: ``flat``
    the series ``(V, N)`` in NIfTI (Fortran) order (each volume contiguous), ``vox`` the rows
    to take (increasing), ``m0i``/``sat`` the M0 and saturated volumes, ``w (M, S)`` the M0
    interpolation weights (float32, as ``normalise``); ``out (n, S)`` float32, C-ordered: the
    saturated signal divided by M0 (one M0 volume: by it; several: ``Σ_j M0_j w[j, s]``), NaN
    where that M0 is not above ``floor``. One pass over the voxels' values, in blocks of
    consecutive voxels (each volume read near-sequentially), float32 arithmetic as ``normalise``.
    """
    n = vox.shape[0]
    S = sat.shape[0]
    M = m0i.shape[0]
    bs = 512
    for b in nb.prange((n + bs - 1) // bs):
        m0 = np.empty(M, np.float32)
        for i in range(b * bs, min(n, (b + 1) * bs)):
            v = vox[i]
            for j in range(M):
                m0[j] = flat[v, m0i[j]]
            for s in range(S):
                d = m0[0]
                if M > 1:
                    d = np.float32(0.0)
                    for j in range(M):
                        d += m0[j] * w[j, s]
                if d > floor:
                    out[i, s] = flat[v, sat[s]] / d
                else:
                    out[i, s] = np.nan
