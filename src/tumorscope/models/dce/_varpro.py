"""Compiled variable projection of the (extended) Tofts model over ``kep``.

For a fixed efflux rate ``k`` (1/s) the extended Tofts curve ``C = K F_k + vp cp`` is linear in
``K`` (Ktrans, 1/s) and ``vp``: ``F_k = cp ⊛ e^{-kt}`` is one pass of the exact recursion of
:mod:`tumorscope.models.dce.kinetics` (with its derivative ``G = -∂F/∂k`` in the same pass),
and the best ``(K, vp)`` is a closed-form 2×2 least-squares solve of the sums
``F·F, F·cp, F·y`` (``cp·cp`` is shared by all voxels, ``cp·y`` and ``y·y`` computed once
per voxel). What is left is a one-dimensional problem in ``k``, solved per voxel by:

1. the start: the linearised (Murase 2004, doi:10.1002/mrm.20023) ``kep``, computed in the same
   kernel (one pass over the voxel's curve; its ``K`` and ``vp`` are not needed);
2. Gauss–Newton steps on the projected residual (Kaufman 1975, doi:10.1007/BF01932995;
   Golub & Pereyra 2003, doi:10.1088/0266-5611/19/2/201):
   ``Δk = -Gᵀr / (K ‖P⊥G‖²)`` with ``r`` the residual at the projected ``(K, vp)`` and
   ``‖P⊥G‖² = G·G - gᵀM⁻¹g`` from the same sums (``g = [F·G, cp·G]``, ``M`` the 2×2 normal
   matrix); a step is kept only if it does not raise the residual (halved up to 8 times);
3. stop when ``|Δk| ≤ 1e-5 k``; that last step is applied to first order without another
   pass (``k += Δk``, ``(K, vp) += (∂(K, vp)/∂k) Δk``, the derivative from the same sums), so
   the solution is accurate to ``O(Δk²)``;
4. standard errors from ``JᵀJ`` at the solution, built from the sums and transformed to
   (Ktrans in 1/min, ve, vp): the same ``"scaled"`` estimate as the LM solver
   (``s² = rss/(m - p)``).

The residual is ``y·y - bᵀc``; it loses ~1e-16·``y·y`` to cancellation, so where it is below
``1e-9 y·y`` (near noise-free curves) it is recomputed from the residual in one more pass. A voxel whose solution is not strictly inside the model's bounds (``vp < 0``,
``ve > 1`` ...), whose steps fail, or with no enhancement (``K ≤ 0``) is flagged for the
bounded Levenberg–Marquardt solver (:meth:`ExtendedTofts.fit_block` does that).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._kernels import _g012

__all__ = ["tofts_varpro"]

_TOL = 1e-5  # relative |Δk| at which the iteration stops (measured: docs/dce.md)
_MAX_ITER = 50
_N_HALVE = 8


@nb.njit(cache=True, inline="always")
def _murase_k(t, icp, cp, y, with_vp, aa, ac, cc):
    """Linearised kep (1/s) of one curve, and ``cp·y``, ``y·y`` (one pass)."""
    n = t.size
    ic = 0.0
    ab = 0.0
    bb = 0.0
    bc = 0.0
    ay = 0.0
    by = 0.0
    cy = 0.0
    yy = 0.0
    for j in range(n):
        yj = y[j]
        if j > 0:
            ic += 0.5 * (yj + y[j - 1]) * (t[j] - t[j - 1])
        ab -= icp[j] * ic
        bb += ic * ic
        bc -= cp[j] * ic
        ay += icp[j] * yj
        by -= ic * yj
        cy += cp[j] * yj
        yy += yj * yj
    if not (aa > 0.0 and bb > 0.0 and cc > 0.0):
        return np.nan, cy, yy
    sa = np.sqrt(aa)
    sb = np.sqrt(bb)
    sc = np.sqrt(cc)
    # unit-diagonal normal matrix of the scaled columns, right-hand side scaled the same
    m01 = ab / (sa * sb)
    u0 = ay / sa
    u1 = by / sb
    if with_vp:
        m02 = ac / (sa * sc)
        m12 = bc / (sb * sc)
        u2 = cy / sc
        det = 1.0 + 2.0 * m01 * m02 * m12 - m01 * m01 - m02 * m02 - m12 * m12
        if not det > 1e-12:
            return np.nan, cy, yy
        # Cramer's rule for the second unknown
        x1 = (u1 * (1.0 - m02 * m02) - m01 * u0 + m02 * m12 * u0 + m01 * m02 * u2 - m12 * u2) / det
    else:
        det = 1.0 - m01 * m01
        if not det > 1e-12:
            return np.nan, cy, yy
        x1 = (u1 - m01 * u0) / det
    return x1 / sb, cy, yy


@nb.njit(cache=True, inline="always")
def _sums(t, cp, y, k):
    """One exact-convolution pass at rate ``k``: F·F, F·G, G·G, F·cp, G·cp, F·y, G·y."""
    n = t.size
    ff = fg = gg = fc = gc = fy = gy = 0.0
    fi = 0.0
    gi = 0.0
    dprev = -1.0
    e = g0 = g1 = g2 = 0.0
    for i in range(n):
        ci = cp[i]
        yi = y[i]
        ff += fi * fi
        fg += fi * gi
        gg += gi * gi
        fc += fi * ci
        gc += gi * ci
        fy += fi * yi
        gy += gi * yi
        if i == n - 1:
            break
        seg = t[i + 1] - t[i]
        if seg != dprev:
            e, g0, g1, g2 = _g012(k * seg)
            dprev = seg
        c1 = cp[i + 1]
        gi = e * (gi + seg * fi) + seg * seg * (c1 * g1 + (ci - c1) * g2)
        fi = e * fi + seg * (c1 * g0 + (ci - c1) * g1)
    return ff, fg, gg, fc, gc, fy, gy


@nb.njit(cache=True, inline="always")
def _rss_pass(t, cp, y, k, kk, vp):
    """The residual sum of squares of ``y - K F_k - vp cp`` (one pass, no cancellation)."""
    n = t.size
    fi = 0.0
    dprev = -1.0
    e = g0 = g1 = 0.0
    rss = 0.0
    for i in range(n):
        ci = cp[i]
        r = y[i] - kk * fi - vp * ci
        rss += r * r
        if i == n - 1:
            break
        seg = t[i + 1] - t[i]
        if seg != dprev:
            e, g0, g1, _ = _g012(k * seg)
            dprev = seg
        c1 = cp[i + 1]
        fi = e * fi + seg * (c1 * g0 + (ci - c1) * g1)
    return rss


@nb.njit(cache=True, inline="always")
def _project(with_vp, ff, fc, cc, fy, cy, yy):
    """Best (K, vp) for fixed k, and the residual sum of squares; ok=False if singular."""
    if with_vp:
        det = ff * cc - fc * fc
        if not det > 1e-14 * ff * cc:
            return 0.0, 0.0, np.inf, False
        kk = (cc * fy - fc * cy) / det
        vp = (ff * cy - fc * fy) / det
        phi = yy - kk * fy - vp * cy
    else:
        if not ff > 0.0:
            return 0.0, 0.0, np.inf, False
        kk = fy / ff
        vp = 0.0
        phi = yy - kk * fy
    return kk, vp, max(phi, 0.0), True


@nb.njit(cache=True, inline="always")
def _step(with_vp, kk, vp, ff, fg, gg, fc, gc, gy, cc):
    """Gauss–Newton step in k (Kaufman) and d(K, vp)/dk at fixed sums."""
    rg = gy - kk * fg - vp * gc  # Gᵀ r
    if with_vp:
        det = ff * cc - fc * fc
        # gᵀ M⁻¹ g with g = [fg, gc]
        proj = (cc * fg * fg - 2.0 * fc * fg * gc + ff * gc * gc) / det
        r0 = -gy + 2.0 * fg * kk + gc * vp
        r1 = gc * kk
        dk_k = (cc * r0 - fc * r1) / det
        dk_vp = (ff * r1 - fc * r0) / det
    else:
        proj = fg * fg / ff
        dk_k = (-gy + 2.0 * fg * kk) / ff
        dk_vp = 0.0
    pg = gg - proj
    if not (pg > 0.0 and kk > 0.0):
        return np.nan, dk_k, dk_vp
    return -rg / (kk * pg), dk_k, dk_vp


@nb.njit(cache=True, inline="always")
def _stderr(with_vp, kk, k, ff, fg, gg, fc, gc, cc, phi, m, se):
    """Standard errors of (Ktrans 1/min, ve, vp) from JᵀJ at the solution (LM's estimate)."""
    se[0] = np.nan
    se[1] = np.nan
    se[2] = np.nan
    npar = 3 if with_vp else 2
    if m <= npar or not (kk > 0.0 and k > 0.0):
        return
    ve = kk / k
    # J in (K, k, vp): [F, -K G, cp]; J in (Ktrans/min, ve, vp) = J D with
    # D = [[1/60, 0, 0], [1/(60 ve), -k/ve, 0], [0, 0, 1]]
    h = np.empty((3, 3))
    h[0, 0] = ff
    h[0, 1] = -kk * fg
    h[1, 1] = kk * kk * gg
    h[0, 2] = fc
    h[1, 2] = -kk * gc
    h[2, 2] = cc
    d = np.zeros((3, 3))
    d[0, 0] = 1.0 / 60.0
    d[1, 0] = 1.0 / (60.0 * ve)
    d[1, 1] = -k / ve
    d[2, 2] = 1.0
    for i in range(3):
        for j in range(i):
            h[i, j] = h[j, i]
    a = np.zeros((3, 3))
    for i in range(npar):
        for j in range(npar):
            s = 0.0
            for p in range(npar):
                for q in range(npar):
                    s += d[p, i] * h[p, q] * d[q, j]
            a[i, j] = s
    s2 = phi / (m - npar)
    if npar == 2:
        det = a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0]
        if not det > 0.0:
            return
        inv0 = a[1, 1] / det
        inv1 = a[0, 0] / det
        if inv0 >= 0.0:
            se[0] = np.sqrt(inv0 * s2)
        if inv1 >= 0.0:
            se[1] = np.sqrt(inv1 * s2)
        return
    c00 = a[1, 1] * a[2, 2] - a[1, 2] * a[2, 1]
    c11 = a[0, 0] * a[2, 2] - a[0, 2] * a[2, 0]
    c22 = a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0]
    det = a[0, 0] * c00 - a[0, 1] * (a[1, 0] * a[2, 2] - a[1, 2] * a[2, 0])
    det += a[0, 2] * (a[1, 0] * a[2, 1] - a[1, 1] * a[2, 0])
    if not det > 0.0:
        return
    v0 = c00 / det * s2
    v1 = c11 / det * s2
    v2 = c22 / det * s2
    se[0] = np.sqrt(v0) if v0 >= 0.0 else np.nan
    se[1] = np.sqrt(v1) if v1 >= 0.0 else np.nan
    se[2] = np.sqrt(v2) if v2 >= 0.0 else np.nan


@nb.njit(cache=True, nogil=True)
def tofts_varpro(t, cp, y, with_vp, lo, hi, tol=_TOL):
    """Variable-projection fit of every row of ``y`` (module docstring).

    Parameters
    ----------
    t, cp : float64 (n,)
        Frame times (s) and plasma AIF (mM).
    y : float64 (N, n), C-contiguous
        Concentration curves (mM).
    with_vp : bool
        Extended Tofts (``vp`` fitted) or Tofts (``vp`` = 0).
    lo, hi : float64 (3,)
        Bounds of (Ktrans 1/min, ve, vp) (vp ignored without ``with_vp``): a solution must be
        strictly inside them.

    Returns
    -------
    params : (N, 3)
        Ktrans (1/min), ve, vp.
    rss : (N,)
    stderr : (N, 3)
    ok : (N,) bool
        False where the voxel needs the bounded solver (outside the bounds, no convergence).
    n_iter : (N,) int32
        Convolution passes after the start.
    """
    nv, m = y.shape
    icp = np.zeros(m)
    for j in range(1, m):
        icp[j] = icp[j - 1] + 0.5 * (cp[j] + cp[j - 1]) * (t[j] - t[j - 1])
    aa = 0.0
    ac = 0.0
    cc = 0.0
    for j in range(m):
        aa += icp[j] * icp[j]
        ac += icp[j] * cp[j]
        cc += cp[j] * cp[j]
    params = np.full((nv, 3), np.nan)
    rss = np.full(nv, np.nan)
    stderr = np.full((nv, 3), np.nan)
    ok = np.zeros(nv, dtype=np.bool_)
    n_iter = np.zeros(nv, dtype=np.int32)
    for v in range(nv):
        yv = y[v]
        k, cy, yy = _murase_k(t, icp, cp, yv, with_vp, aa, ac, cc)
        if not (np.isfinite(k) and k > 0.0):
            k = 1.0 / 60.0  # 1/min: the middle of the usual range
        ff, fg, gg, fc, gc, fy, gy = _sums(t, cp, yv, k)
        kk, vp, phi, good = _project(with_vp, ff, fc, cc, fy, cy, yy)
        converged = False
        it = 0
        dk = np.nan
        dk_k = 0.0
        dk_vp = 0.0
        while good and it < _MAX_ITER:
            dk, dk_k, dk_vp = _step(with_vp, kk, vp, ff, fg, gg, fc, gc, gy, cc)
            if not np.isfinite(dk):
                break
            if abs(dk) <= tol * k:
                converged = True
                break
            step = dk
            accepted = False
            for _ in range(_N_HALVE + 1):
                kn = k + step
                if kn <= 0.0:
                    step = 0.5 * step if step > -k else -0.5 * k
                    continue
                s = _sums(t, cp, yv, kn)
                it += 1
                kkn, vpn, phin, goodn = _project(with_vp, s[0], s[3], cc, s[5], cy, yy)
                if goodn and phin <= phi + 1e-14 * yy:
                    k, kk, vp, phi = kn, kkn, vpn, phin
                    ff, fg, gg, fc, gc, fy, gy = s
                    accepted = True
                    break
                step *= 0.5
            if not accepted:
                # no decrease along the step: at the minimum to rounding, or lost
                converged = abs(dk) <= 1e-3 * k
                dk = 0.0
                break
        n_iter[v] = it
        if not (good and converged):
            continue
        # the last (tiny) step to first order, without another pass
        k += dk
        kk += dk_k * dk
        vp += dk_vp * dk
        if not (k > 0.0 and kk > 0.0):
            continue
        ve = kk / k
        params[v, 0] = kk * 60.0
        params[v, 1] = ve
        params[v, 2] = vp
        if phi < 1e-9 * yy:  # y·y - bᵀc has lost more than ~1e-7 of its digits: recompute
            phi = _rss_pass(t, cp, yv, k, kk, vp)
        rss[v] = phi
        _stderr(with_vp, kk, k, ff, fg, gg, fc, gc, cc, phi, m, stderr[v])
        inside = lo[0] < kk * 60.0 < hi[0] and lo[1] < ve < hi[1]
        if with_vp:
            inside = inside and lo[2] < vp < hi[2]
        ok[v] = inside
    return params, rss, stderr, ok, n_iter
