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

__all__ = ["tofts_varpro", "two_cxm_varpro"]

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
        # the terms off the loop-carried chains first: each chain is one multiply-add
        u = seg * (c1 * g0 + (ci - c1) * g1)
        w = seg * seg * (c1 * g1 + (ci - c1) * g2) + e * seg * fi
        gi = e * gi + w
        fi = e * fi + u
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


@nb.njit(cache=True, nogil=True, fastmath={"contract"})
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


# --------------------------------------------------------------------------- 2CXM
# C = A F_α + B F_β (α > β > 0, 1/s): linear in the amplitudes (A, B) for fixed rates, so the
# least-squares problem is two-dimensional in (α, β); same scheme as the Tofts models.


@nb.njit(cache=True, inline="always")
def _sums2(t, cp, y, al, be, s):
    """One pass at rates (α, β): the 14 sums of F_α, F_β, G_α, G_β and y into ``s``.

    ``s = [FaFa, FaFb, FbFb, Fay, Fby, FaGa, FbGa, FaGb, FbGb, GaGa, GaGb, GbGb, Gay, Gby]``.
    """
    n = t.size
    for i in range(14):
        s[i] = 0.0
    fa = ga = fb = gb = 0.0
    dprev = -1.0
    ea = a0 = a1 = a2 = eb = b0 = b1 = b2 = 0.0
    for i in range(n):
        yi = y[i]
        s[0] += fa * fa
        s[1] += fa * fb
        s[2] += fb * fb
        s[3] += fa * yi
        s[4] += fb * yi
        s[5] += fa * ga
        s[6] += fb * ga
        s[7] += fa * gb
        s[8] += fb * gb
        s[9] += ga * ga
        s[10] += ga * gb
        s[11] += gb * gb
        s[12] += ga * yi
        s[13] += gb * yi
        if i == n - 1:
            break
        seg = t[i + 1] - t[i]
        if seg != dprev:
            ea, a0, a1, a2 = _g012(al * seg)
            eb, b0, b1, b2 = _g012(be * seg)
            dprev = seg
        ci = cp[i]
        c1 = cp[i + 1]
        dc = ci - c1
        s2 = seg * seg
        # the terms off the loop-carried chains first: each chain is one multiply-add
        wa = s2 * (c1 * a1 + dc * a2) + ea * seg * fa
        ua = seg * (c1 * a0 + dc * a1)
        wb = s2 * (c1 * b1 + dc * b2) + eb * seg * fb
        ub = seg * (c1 * b0 + dc * b1)
        ga = ea * ga + wa
        fa = ea * fa + ua
        gb = eb * gb + wb
        fb = eb * fb + ub


@nb.njit(cache=True, inline="always")
def _project2(s, yy):
    """Amplitudes (A, B) for fixed rates and the residual; ok=False if singular."""
    det = s[0] * s[2] - s[1] * s[1]
    if not det > 1e-12 * s[0] * s[2]:
        return 0.0, 0.0, np.inf, False
    a = (s[2] * s[3] - s[1] * s[4]) / det
    b = (s[0] * s[4] - s[1] * s[3]) / det
    return a, b, max(yy - a * s[3] - b * s[4], 0.0), True


@nb.njit(cache=True, inline="always")
def _step2(s, a, b):
    """Kaufman Gauss–Newton step in (α, β), and d(A, B)/d(α, β) (2×2, rows A, B)."""
    det = s[0] * s[2] - s[1] * s[1]
    i00 = s[2] / det
    i01 = -s[1] / det
    i11 = s[0] / det
    # Γᵀ Φ M⁻¹ Φᵀ Γ with ΦᵀΓ = [[FaGa, FaGb], [FbGa, FbGb]]
    p00, p01, p10, p11 = s[5], s[7], s[6], s[8]
    q00 = i00 * p00 + i01 * p10
    q01 = i00 * p01 + i01 * p11
    q10 = i01 * p00 + i11 * p10
    q11 = i01 * p01 + i11 * p11
    h00 = a * a * (s[9] - (p00 * q00 + p10 * q10))
    h01 = a * b * (s[10] - (p00 * q01 + p10 * q11))
    h11 = b * b * (s[11] - (p01 * q01 + p11 * q11))
    g0 = a * (s[12] - a * s[5] - b * s[6])
    g1 = b * (s[13] - a * s[7] - b * s[8])
    dh = h00 * h11 - h01 * h01
    if not (dh > 1e-14 * h00 * h11 and h00 > 0.0):
        return np.nan, np.nan, 0.0, 0.0, 0.0, 0.0
    d_al = -(h11 * g0 - h01 * g1) / dh
    d_be = -(h00 * g1 - h01 * g0) / dh
    # d(A, B)/dα = M⁻¹ rhs_α, d(A, B)/dβ = M⁻¹ rhs_β
    r0 = -s[12] + 2.0 * s[5] * a + s[6] * b
    r1 = s[6] * a
    da_al = i00 * r0 + i01 * r1
    db_al = i01 * r0 + i11 * r1
    r0 = s[7] * b
    r1 = -s[13] + s[7] * a + 2.0 * s[8] * b
    da_be = i00 * r0 + i01 * r1
    db_be = i01 * r0 + i11 * r1
    return d_al, d_be, da_al, db_al, da_be, db_be


@nb.njit(cache=True, inline="always")
def _to_2cxm(al, be, a, b, q):
    """(α, β, A, B) in 1/s → (Fp, PS in mL/100 mL/min, ve, vp) into ``q``; False if invalid."""
    fp = a + b
    den = a * al + b * be
    if not (fp > 0.0 and den > 0.0):
        return False
    vp = fp * fp / den
    e = al * be * vp / fp  # PS / ve
    ps = vp * (al + be) - fp - vp * e
    if not (e > 0.0 and ps > 0.0):
        return False
    q[0] = fp * 6000.0
    q[1] = ps * 6000.0
    q[2] = ps / e
    q[3] = vp
    return True


@nb.njit(cache=True, inline="always")
def _stderr2(al, be, a, b, s, phi, m, se, h, tq, qp, qm):
    """Standard errors of (Fp, PS, ve, vp): (JᵀJ)⁻¹ in (A, B, α, β), mapped by the Jacobian of
    :func:`_to_2cxm` (central differences); the LM solver's ``"scaled"`` estimate."""
    for i in range(4):
        se[i] = np.nan
    if m <= 4:
        return
    # JᵀJ of J = [F_α, F_β, -A G_α, -B G_β]
    h[0, 0] = s[0]
    h[0, 1] = s[1]
    h[1, 1] = s[2]
    h[0, 2] = -a * s[5]
    h[1, 2] = -a * s[6]
    h[0, 3] = -b * s[7]
    h[1, 3] = -b * s[8]
    h[2, 2] = a * a * s[9]
    h[2, 3] = a * b * s[10]
    h[3, 3] = b * b * s[11]
    for i in range(4):
        for j in range(i):
            h[i, j] = h[j, i]
    # scaled Cholesky inverse (in place into h)
    d = np.empty(4)
    for i in range(4):
        if not h[i, i] > 0.0:
            return
        d[i] = 1.0 / np.sqrt(h[i, i])
    for i in range(4):
        for j in range(4):
            h[i, j] *= d[i] * d[j]
    low = np.zeros((4, 4))
    for j in range(4):
        v = h[j, j]
        for k in range(j):
            v -= low[j, k] * low[j, k]
        if not v > 1e-14:
            return
        low[j, j] = np.sqrt(v)
        for i in range(j + 1, 4):
            w = h[i, j]
            for k in range(j):
                w -= low[i, k] * low[j, k]
            low[i, j] = w / low[j, j]
    inv = np.zeros((4, 4))
    z = np.empty(4)
    for c in range(4):
        for i in range(4):
            w = 1.0 if i == c else 0.0
            for k in range(i):
                w -= low[i, k] * z[k]
            z[i] = w / low[i, i]
        for i in range(3, -1, -1):
            w = z[i]
            for k in range(i + 1, 4):
                w -= low[k, i] * inv[k, c]
            inv[i, c] = w / low[i, i]
    for i in range(4):
        for j in range(4):
            inv[i, j] *= d[i] * d[j]
    # Jacobian of the parameter map, θ = (A, B, α, β)
    th = np.array([a, b, al, be])
    for j in range(4):
        hstep = 1e-6 * abs(th[j])
        th[j] += hstep
        ok1 = _to_2cxm(th[2], th[3], th[0], th[1], qp)
        th[j] -= 2.0 * hstep
        ok2 = _to_2cxm(th[2], th[3], th[0], th[1], qm)
        th[j] += hstep
        if not (ok1 and ok2 and hstep > 0.0):
            return
        for i in range(4):
            tq[i, j] = (qp[i] - qm[i]) / (2.0 * hstep)
    s2 = phi / (m - 4)
    for k in range(4):
        v = 0.0
        for i in range(4):
            for j in range(4):
                v += tq[k, i] * inv[i, j] * tq[k, j]
        se[k] = np.sqrt(v * s2) if v >= 0.0 else np.nan


@nb.njit(cache=True, inline="always")
def _rss_pass2(t, cp, y, al, be, a, b):
    """The residual sum of squares of ``y - A F_α - B F_β`` (one pass)."""
    n = t.size
    fa = fb = 0.0
    dprev = -1.0
    ea = a0 = a1 = eb = b0 = b1 = 0.0
    rss = 0.0
    for i in range(n):
        r = y[i] - a * fa - b * fb
        rss += r * r
        if i == n - 1:
            break
        seg = t[i + 1] - t[i]
        if seg != dprev:
            ea, a0, a1, _ = _g012(al * seg)
            eb, b0, b1, _ = _g012(be * seg)
            dprev = seg
        ci = cp[i]
        c1 = cp[i + 1]
        fa = ea * fa + seg * (c1 * a0 + (ci - c1) * a1)
        fb = eb * fb + seg * (c1 * b0 + (ci - c1) * b1)
    return rss


@nb.njit(cache=True, nogil=True, fastmath={"contract"})
def two_cxm_varpro(t, cp, y, start, lo, hi, tol=_TOL):
    """Variable-projection 2CXM fit of every row of ``y`` from the rates ``start`` (N, 2).

    ``start[v] = (α, β)`` in 1/s with α > β > 0 (from the linearised solution); NaN: not
    fitted here (``ok`` False). Returns params (N, 4) (Fp, PS, ve, vp), rss, stderr, ok and
    the passes, as :func:`tofts_varpro`; ``lo``, ``hi``: bounds of the four parameters.
    """
    nv, m = y.shape
    params = np.full((nv, 4), np.nan)
    rss = np.full(nv, np.nan)
    stderr = np.full((nv, 4), np.nan)
    ok = np.zeros(nv, dtype=np.bool_)
    n_iter = np.zeros(nv, dtype=np.int32)
    s = np.empty(14)
    sn = np.empty(14)
    q = np.empty(4)
    h = np.empty((4, 4))
    tq = np.empty((4, 4))
    qp = np.empty(4)
    qm = np.empty(4)
    for v in range(nv):
        al = start[v, 0]
        be = start[v, 1]
        if not (np.isfinite(al) and np.isfinite(be) and al > be > 0.0):
            continue
        yv = y[v]
        yy = 0.0
        for j in range(m):
            yy += yv[j] * yv[j]
        _sums2(t, cp, yv, al, be, s)
        a, b, phi, good = _project2(s, yy)
        converged = False
        it = 0
        d_al = d_be = 0.0
        da_al = db_al = da_be = db_be = 0.0
        while good and it < _MAX_ITER:
            d_al, d_be, da_al, db_al, da_be, db_be = _step2(s, a, b)
            if not (np.isfinite(d_al) and np.isfinite(d_be)):
                break
            if abs(d_al) <= tol * al and abs(d_be) <= tol * be:
                converged = True
                break
            f = 1.0
            accepted = False
            for _ in range(_N_HALVE + 1):
                aln = al + f * d_al
                ben = be + f * d_be
                if not (aln > ben > 0.0):
                    f *= 0.5
                    continue
                _sums2(t, cp, yv, aln, ben, sn)
                it += 1
                an, bn, phin, goodn = _project2(sn, yy)
                if goodn and phin <= phi + 1e-14 * yy:
                    al, be, a, b, phi = aln, ben, an, bn, phin
                    for i in range(14):
                        s[i] = sn[i]
                    accepted = True
                    break
                f *= 0.5
            if not accepted:
                converged = abs(d_al) <= 1e-3 * al and abs(d_be) <= 1e-3 * be
                d_al = d_be = 0.0
                break
        n_iter[v] = it
        if not (good and converged):
            continue
        # the last (tiny) step to first order, without another pass
        al += d_al
        be += d_be
        a += da_al * d_al + da_be * d_be
        b += db_al * d_al + db_be * d_be
        if not _to_2cxm(al, be, a, b, q):
            continue
        inside = True
        for i in range(4):
            params[v, i] = q[i]
            inside = inside and lo[i] < q[i] < hi[i]
        if phi < 1e-9 * yy:  # cancellation in y·y - bᵀc: the residual from one more pass
            phi = _rss_pass2(t, cp, yv, al, be, a, b)
        rss[v] = phi
        _stderr2(al, be, a, b, s, phi, m, stderr[v], h, tq, qp, qm)
        ok[v] = inside
    return params, rss, stderr, ok, n_iter
