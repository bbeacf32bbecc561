"""Compiled input-less kPL fit (the default, decaying-substrate form), one voxel per iteration.

The same estimator as the numpy path of :class:`~tumorscope.models.metabolic.hp13c.
PyruvateLactate` (:func:`~tumorscope.models.metabolic.kinetics.inputless_basis` with
``decay``, then ``_solve2``, iterated on the pyruvate loss rate ``k + R1P``), written as
scalar loops so that each voxel's basis, its 2 × 2 non-negative least squares and the next
iteration stay in registers instead of streaming ``(voxels, frames)`` arrays through memory a
dozen times per iteration. The rate factors of an interval are computed once per voxel and
iteration when the frames are evenly spaced (as the numpy path computes them once per
interval length).

Results agree with the numpy path to rounding (``exp``/``expm1`` of LLVM against numpy's,
sums in frame order against numpy's pairwise sums): ~1e-15 relative, tested to 1e-10.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

__all__ = ["fixed_point", "fixed_point_normal", "inputless_basis_decay", "peak_signal"]

_MAX = np.finfo(np.float64).max


@nb.njit(cache=True, inline="always")
def _relax_input(rate: float, t: float) -> float:
    """``(1 - exp(-rate t)) / rate`` (limit ``t`` at rate 0), as ``kinetics._relax_input``."""
    if abs(rate * t) < 1e-8:
        return t
    return -math.expm1(-rate * t) / rate


@nb.njit(cache=True, inline="always")
def _phi(a: float, b: float, t: float) -> float:
    """``(exp(-a t) - exp(-b t)) / (b - a)`` with its limit, as ``kinetics.exchange_phi``."""
    d = b - a
    if abs(d * t) < 1e-6:
        return t * math.exp(-a * t) * (1.0 - 0.5 * d * t)
    return (math.exp(-a * t) - math.exp(-b * t)) / d


@nb.njit(cache=True, nogil=True)
def _basis_row(pz, dts, cos_p, sin_l, cos_l, rl, a, A, B):  # pragma: no cover - compiled
    """One voxel's product signal per unit L0 (``A``) and per unit k (``B``)."""
    n = pz.shape[0]
    a_mz = 1.0
    b_mz = 0.0
    last_dt = -1.0
    eb = ea = ra = phi = a_safe = conv = 0.0
    for j in range(n):
        A[j] = a_mz * sin_l[j]
        B[j] = b_mz * sin_l[j]
        if j + 1 == n:
            break
        dt = dts[j]
        if dt != last_dt:
            eb = math.exp(-rl * dt)
            ea = math.exp(-a * dt)
            ra = _relax_input(a, dt)
            phi = _phi(a, rl, dt)
            a_safe = 1.0 if a == 0.0 else a
            conv = _relax_input(rl, dt) - phi
            last_dt = dt
        p_after = pz[j] * cos_p[j]
        p_next = pz[j + 1]
        u = (p_next - p_after * ea) / ra
        q = p_after * phi + (u / a_safe) * conv
        a_mz = a_mz * cos_l[j] * eb
        b_mz = b_mz * cos_l[j] * eb + q


@nb.njit(cache=True, nogil=True)
def _solve2(A, B, y):  # pragma: no cover - compiled
    """``y ≈ l0 A + k B`` with ``l0, k ≥ 0`` (as ``hp13c._solve2``): (l0, k, rss)."""
    aa = bb = ab = ay = by = 0.0
    for i in range(A.shape[0]):
        aa += A[i] * A[i]
        bb += B[i] * B[i]
        ab += A[i] * B[i]
        ay += A[i] * y[i]
        by += B[i] * y[i]
    det = aa * bb - ab * ab
    k_only = (max(by, 0.0) / bb) if bb > 0 else 0.0
    l_only = (max(ay, 0.0) / aa) if aa > 0 else 0.0
    if det != 0.0:
        l0 = (bb * ay - ab * by) / det
        k = (aa * by - ab * ay) / det
    else:
        l0 = k = math.nan
    bad = (not (det > 1e-300 * aa * bb)) or not math.isfinite(l0) or not math.isfinite(k)
    neg_k = (k < 0) or bad
    neg_l = (l0 < 0) and not neg_k
    if neg_k:
        l0, k = l_only, 0.0
    elif neg_l:
        l0, k = 0.0, k_only
    rss = 0.0
    for i in range(A.shape[0]):
        r = y[i] - l0 * A[i] - k * B[i]
        rss += r * r
    return l0, k, rss


@nb.njit(cache=True, nogil=True)
def _decay_of(k: float, r1p: float) -> float:  # pragma: no cover - compiled
    """``np.nan_to_num(k, nan=0.05) + r1p`` (``PyruvateLactate._decay``)."""
    if math.isnan(k):
        k = 0.05
    elif k == math.inf:
        k = _MAX
    elif k == -math.inf:
        k = -_MAX
    return k + r1p


@nb.njit(cache=True, nogil=True)
def fixed_point(pyr, lac, dts, sin_p, cos_p, sin_l, cos_l, r1l, r1p, n_it):  # pragma: no cover
    """Closed-form (L0, kPL) per voxel at lactate rates ``r1l`` (v,), iterated ``n_it`` times
    on the pyruvate loss rate ``k + r1p`` from ``k = 0.05``: (l0, k, rss, A, B) as
    ``PyruvateLactate._fixed``."""
    v, n = pyr.shape
    l0 = np.empty(v)
    k = np.empty(v)
    rss = np.empty(v)
    A = np.empty((v, n))
    B = np.empty((v, n))
    pz = np.empty(n)
    for i in range(v):
        for j in range(n):
            pz[j] = pyr[i, j] / sin_p[j]
        kk = 0.05
        li = 0.0
        ri = 0.0
        for _ in range(n_it):
            _basis_row(pz, dts, cos_p, sin_l, cos_l, r1l[i], _decay_of(kk, r1p), A[i], B[i])
            li, kk, ri = _solve2(A[i], B[i], lac[i])
        l0[i] = li
        k[i] = kk
        rss[i] = ri
    return l0, k, rss, A, B


@nb.njit(cache=True, nogil=True)
def inputless_basis_decay(pyr, dts, sin_p, cos_p, sin_l, cos_l, r1l, decay):  # pragma: no cover
    """``kinetics.inputless_basis(..., decay=decay)`` for ``r1l`` and ``decay`` of shape (v,)."""
    v, n = pyr.shape
    A = np.empty((v, n))
    B = np.empty((v, n))
    pz = np.empty(n)
    for i in range(v):
        for j in range(n):
            pz[j] = pyr[i, j] / sin_p[j]
        _basis_row(pz, dts, cos_p, sin_l, cos_l, r1l[i], decay[i], A[i], B[i])
    return A, B


@nb.njit(cache=True, nogil=True)
def _uniform(dts):  # pragma: no cover - compiled
    """All intervals equal (bit for bit): the rate factors are then the same for every
    interval, and the product basis splits into two decay-independent parts."""
    for j in range(1, dts.shape[0]):
        if dts[j] != dts[0]:
            return False
    return dts.shape[0] > 0


@nb.njit(cache=True, inline="always")
def _weights(a, rl, dt, eb, rel_l):  # pragma: no cover - compiled
    """``(c1, c2)`` of one interval at pyruvate loss rate ``a``: the product gained over it
    is ``c1 P_after + c2 P_next`` (``_basis_row``'s ``q``, with ``u`` substituted)."""
    ea = math.exp(-a * dt)
    ra = _relax_input(a, dt)
    d = rl - a
    if abs(d * dt) < 1e-6:
        phi = dt * ea * (1.0 - 0.5 * d * dt)
    else:
        phi = (ea - eb) / d
    a_safe = 1.0 if a == 0.0 else a
    c2 = (rel_l - phi) / ra / a_safe
    return phi - ea * c2, c2


@nb.njit(cache=True, nogil=True)
def _fixed_point_uniform(
    pz, y, dt, cos_p, sin_l, cos_l, rl, eb, rel_l, c_start, r1p, n_it, A, U, W, B
):  # pragma: no cover - compiled
    """One voxel's fixed point when every interval is ``dt``.

    With equal intervals the product basis is ``B = c1(a) U + c2(a) W``: ``U`` and ``W``
    (the lactate-relaxed sums of the pyruvate before and after each interval) do not depend
    on the loss rate ``a = k + R1P``, so they and their inner products with ``A``, ``y`` and
    each other are formed once; each iteration but the last is then a 2 × 2 solve from those
    sums (two ``exp`` instead of six plus three passes over the frames). The last iteration
    forms ``B`` and solves as :func:`fixed_point_normal` does (its residual and normal matrix
    summed directly). ``eb`` and ``rel_l``: ``exp(-rl dt)`` and ``_relax_input(rl, dt)``;
    ``c_start``: the ``_weights`` of the starting ``k = 0.05`` (the same for every voxel).
    Returns (l0, k, rss); ``A`` and ``B`` hold the last basis.
    """
    n = pz.shape[0]
    a_mz = 1.0
    u_mz = 0.0
    w_mz = 0.0
    for j in range(n):
        A[j] = a_mz * sin_l[j]
        U[j] = u_mz * sin_l[j]
        W[j] = w_mz * sin_l[j]
        if j + 1 == n:
            break
        g = cos_l[j] * eb
        a_mz = a_mz * g
        u_mz = u_mz * g + pz[j] * cos_p[j]
        w_mz = w_mz * g + pz[j + 1]
    aa = au = aw = uu = uw = ww = ay = uy = wy = 0.0
    for j in range(n):
        aa += A[j] * A[j]
        au += A[j] * U[j]
        aw += A[j] * W[j]
        uu += U[j] * U[j]
        uw += U[j] * W[j]
        ww += W[j] * W[j]
        ay += A[j] * y[j]
        uy += U[j] * y[j]
        wy += W[j] * y[j]
    kk = 0.05
    for it in range(n_it - 1):
        c1, c2 = c_start if it == 0 else _weights(_decay_of(kk, r1p), rl, dt, eb, rel_l)
        bb = c1 * c1 * uu + 2.0 * c1 * c2 * uw + c2 * c2 * ww
        ab = c1 * au + c2 * aw
        by = c1 * uy + c2 * wy
        det = aa * bb - ab * ab
        k_only = (max(by, 0.0) / bb) if bb > 0 else 0.0
        if det != 0.0:
            l0 = (bb * ay - ab * by) / det
            k = (aa * by - ab * ay) / det
        else:
            l0 = k = math.nan
        bad = (not (det > 1e-300 * aa * bb)) or not math.isfinite(l0) or not math.isfinite(k)
        if (k < 0) or bad:
            kk = 0.0
        elif l0 < 0:
            kk = k_only
        else:
            kk = k
    c1, c2 = c_start if n_it == 1 else _weights(_decay_of(kk, r1p), rl, dt, eb, rel_l)
    for j in range(n):
        B[j] = c1 * U[j] + c2 * W[j]
    return _solve2(A, B, y)


@nb.njit(cache=True, nogil=True)
def fixed_point_normal(
    pyr, lac, dts, sin_p, cos_p, sin_l, cos_l, r1l, r1p, n_it
):  # pragma: no cover
    """:func:`fixed_point` returning, instead of the bases, the entries of the normal matrix
    ``JᵀJ`` of the Jacobian ``[B, A]`` (kPL, L0) at the last basis: (l0, k, rss, bb, ab, aa).
    No ``(voxels, frames)`` array is written. Equal intervals (the usual protocol) take
    :func:`_fixed_point_uniform` (the same iteration, summed in another order: results
    agree to rounding)."""
    v, n = pyr.shape
    l0 = np.empty(v)
    k = np.empty(v)
    rss = np.empty(v)
    bb = np.empty(v)
    ab = np.empty(v)
    aa = np.empty(v)
    pz = np.empty(n)
    A = np.empty(n)
    B = np.empty(n)
    U = np.empty(n)
    W = np.empty(n)
    uniform = _uniform(dts) and n_it >= 1
    for i in range(v):
        for j in range(n):
            pz[j] = pyr[i, j] / sin_p[j]
        if uniform:
            rl = r1l[i]
            eb = math.exp(-rl * dts[0])
            rel_l = _relax_input(rl, dts[0])
            c_start = _weights(_decay_of(0.05, r1p), rl, dts[0], eb, rel_l)
            li, kk, ri = _fixed_point_uniform(
                pz,
                lac[i],
                dts[0],
                cos_p,
                sin_l,
                cos_l,
                rl,
                eb,
                rel_l,
                c_start,
                r1p,
                n_it,
                A,
                U,
                W,
                B,
            )
        else:
            kk = 0.05
            li = 0.0
            ri = 0.0
            for _ in range(n_it):
                _basis_row(pz, dts, cos_p, sin_l, cos_l, r1l[i], _decay_of(kk, r1p), A, B)
                li, kk, ri = _solve2(A, B, lac[i])
        l0[i] = li
        k[i] = kk
        rss[i] = ri
        sbb = sab = saa = 0.0
        for j in range(n):
            sbb += B[j] * B[j]
            sab += A[j] * B[j]
            saa += A[j] * A[j]
        bb[i] = sbb
        ab[i] = sab
        aa[i] = saa
    return l0, k, rss, bb, ab, aa


@nb.njit(cache=True, nogil=True)
def peak_signal(pyr, dts, sin_p, cos_p, sin_l, cos_l, r1l, decay, l0, k):  # pragma: no cover
    """``max_j |l0 A_j + k B_j|`` per voxel (NaN if any term is), the basis at ``decay``: the
    peak of ``PyruvateLactate.lactate_signal`` without building it."""
    v, n = pyr.shape
    out = np.empty(v)
    pz = np.empty(n)
    A = np.empty(n)
    B = np.empty(n)
    for i in range(v):
        for j in range(n):
            pz[j] = pyr[i, j] / sin_p[j]
        _basis_row(pz, dts, cos_p, sin_l, cos_l, r1l[i], decay[i], A, B)
        m = 0.0
        for j in range(n):
            val = abs(l0[i] * A[j] + k[i] * B[j])
            if math.isnan(val):
                m = math.nan
                break
            if j == 0 or val > m:
                m = val
        out[i] = m
    return out


@nb.njit(cache=True, nogil=True)
def _frame_sum(y, i, start, n):  # pragma: no cover - compiled
    """``y[i, start:start + n].sum()`` as numpy adds a contiguous row of up to 128 values:
    from 0, one by one below 8 values, else 8 partial sums (combined as a tree) and the
    rest one by one (numpy's pairwise summation; the same numbers, tested)."""
    if n < 8:
        res = 0.0
        for j in range(n):
            res += y[i, start + j]
        return res
    r0 = y[i, start]
    r1 = y[i, start + 1]
    r2 = y[i, start + 2]
    r3 = y[i, start + 3]
    r4 = y[i, start + 4]
    r5 = y[i, start + 5]
    r6 = y[i, start + 6]
    r7 = y[i, start + 7]
    j = 8
    while j < n - (n % 8):
        r0 += y[i, start + j]
        r1 += y[i, start + j + 1]
        r2 += y[i, start + j + 2]
        r3 += y[i, start + j + 3]
        r4 += y[i, start + j + 4]
        r5 += y[i, start + j + 5]
        r6 += y[i, start + j + 6]
        r7 += y[i, start + j + 7]
        j += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while j < n:
        res += y[i, start + j]
        j += 1
    return 0.0 + res


@nb.njit(cache=True, nogil=True, inline="always")
def _auc(y, i, n, auc):  # pragma: no cover - compiled
    """``auc_ratio`` of voxel ``i`` into ``auc[i]`` (float32; NaN unless the pyruvate sum is
    > 0); nothing for more than 128 frames (numpy then sums by halves: the caller sums)."""
    if n > 128:
        return
    num = _frame_sum(y, i, n, n)
    den = _frame_sum(y, i, 0, n)
    auc[i] = np.float32(num / den) if den > 0 else np.float32(np.nan)


@nb.njit(cache=True, nogil=True)
def fit_range(
    y,
    fit_mask,
    lo,
    hi,
    dts,
    sin_p,
    cos_p,
    sin_l,
    cos_l,
    r1l,
    r1p,
    n_it,
    dof,
    params,
    stderr,
    rss,
    status,
    peak,
    auc,
):  # pragma: no cover - compiled
    """The whole voxel fit of ``PyruvateLactate`` (lactate T1 fixed) for voxels ``lo:hi``.

    ``y`` (V, 2n): pyruvate frames then lactate frames; ``fit_mask`` (V,): voxels to fit.
    Written in place, as ``fit_blocks`` + ``PyruvateLactate._block`` + ``_peak`` would: a
    voxel with a non-finite value gets status 3 (``INVALID_INPUT``), NaN numbers; a fitted
    voxel its (kPL, L0) in ``params`` (float32), their standard errors in ``stderr`` (float32,
    from the closed-form inverse of the 2 × 2 normal matrix; left NaN where that matrix is
    near-singular: the caller takes the pseudo-inverse there), the residual sum of squares
    in ``rss`` (float32), status 0 (``CONVERGED``), 2 (``AT_BOUND``: kPL or L0 at 0) or 4
    (``FAILED``: non-finite parameters, NaN numbers), and the peak of the absolute fitted
    lactate signal at the float32 parameters in ``peak`` (float64); every finite voxel its
    AUC ratio in ``auc`` (float32; :func:`_frame_sum`: ``hp13c.auc_ratio``'s numbers) when
    ``2n <= 256``. Voxels outside the mask are left as they are.
    """
    n = y.shape[1] // 2
    if _uniform(dts) and n_it >= 1:
        _fit_uniform(
            y, fit_mask, lo, hi, dts[0], sin_p, cos_p, sin_l, cos_l, r1l, r1p, n_it, dof,
            params, stderr, rss, status, peak, auc,
        )  # fmt: skip
        return
    pz = np.empty(n)
    A = np.empty(n)
    B = np.empty(n)
    for i in range(lo, hi):
        if not fit_mask[i]:
            continue
        finite = True
        for j in range(2 * n):
            if not math.isfinite(y[i, j]):
                finite = False
        if not finite:
            status[i] = 3  # FitStatus.INVALID_INPUT
            continue
        _auc(y, i, n, auc)
        for j in range(n):
            pz[j] = y[i, j] / sin_p[j]
        lac = y[i, n:]
        kk = 0.05
        li = 0.0
        ri = 0.0
        for _ in range(n_it):
            _basis_row(pz, dts, cos_p, sin_l, cos_l, r1l, _decay_of(kk, r1p), A, B)
            li, kk, ri = _solve2(A, B, lac)
        rss[i] = ri
        if not (math.isfinite(kk) and math.isfinite(li)):
            status[i] = 4  # FitStatus.FAILED
            continue
        k32 = np.float32(kk)
        l32 = np.float32(li)
        params[i, 0] = k32
        params[i, 1] = l32
        status[i] = 2 if (kk <= 0 or li <= 0) else 0  # AT_BOUND, CONVERGED
        # the normal matrix [[bb, ab], [ab, aa]] of the Jacobian [B, A] at the last basis
        bb = ab = aa = 0.0
        for j in range(n):
            bb += B[j] * B[j]
            ab += A[j] * B[j]
            aa += A[j] * A[j]
        det = bb * aa - ab * ab
        if math.isfinite(det) and det > 1e-8 * bb * aa and bb > 0 and aa > 0:
            s2 = ri / dof
            vk = aa / det
            vl = bb / det
            stderr[i, 0] = np.float32(math.sqrt((vk if vk > 0 else 0.0) * s2))
            stderr[i, 1] = np.float32(math.sqrt((vl if vl > 0 else 0.0) * s2))
        # the peak at the stored (float32) parameters, the basis at their decay
        kp = float(k32)
        lp = float(l32)
        _basis_row(pz, dts, cos_p, sin_l, cos_l, r1l, _decay_of(kp, r1p), A, B)
        m = 0.0
        for j in range(n):
            val = abs(lp * A[j] + kp * B[j])
            if math.isnan(val):
                m = math.nan
                break
            if j == 0 or val > m:
                m = val
        peak[i] = m


#: Voxels whose fixed points are iterated side by side (independent dependency chains the
#: processor overlaps: each iteration of one voxel is a chain of exp, divisions and a solve).
_BATCH = 16


@nb.njit(cache=True, nogil=True)
def _fit_uniform(
    y, fit_mask, lo, hi, dt, sin_p, cos_p, sin_l, cos_l, r1l, r1p, n_it, dof,
    params, stderr, rss, status, peak, auc,
):  # fmt: skip  # pragma: no cover - compiled
    """:func:`fit_range` when every interval is ``dt`` (and ``n_it >= 1``): the operations of
    :func:`_fixed_point_uniform` and of :func:`fit_range`'s outputs, in the same order for
    each voxel (the same numbers), voxels taken :data:`_BATCH` at a time so that their
    iterations interleave; the lactate basis ``A`` (one lactate T1) is formed once."""
    n = y.shape[1] // 2
    eb = math.exp(-r1l * dt)
    rel_l = _relax_input(r1l, dt)
    c_start = _weights(_decay_of(0.05, r1p), r1l, dt, eb, rel_l)
    A = np.empty(n)
    a_mz = 1.0
    for j in range(n):
        A[j] = a_mz * sin_l[j]
        if j + 1 == n:
            break
        a_mz = a_mz * (cos_l[j] * eb)
    aa = 0.0
    for j in range(n):
        aa += A[j] * A[j]
    idx = np.empty(_BATCH, np.int64)
    U = np.empty((_BATCH, n))
    W = np.empty((_BATCH, n))
    S = np.empty((8, _BATCH))  # au, aw, uu, uw, ww, ay, uy, wy
    kk = np.empty(_BATCH)
    c1s = np.empty(_BATCH)
    c2s = np.empty(_BATCH)
    B = np.empty(n)
    i = lo
    while i < hi:
        nv = 0
        while i < hi and nv < _BATCH:
            if fit_mask[i]:
                finite = True
                for j in range(2 * n):
                    if not math.isfinite(y[i, j]):
                        finite = False
                if not finite:
                    status[i] = 3  # FitStatus.INVALID_INPUT
                else:
                    _auc(y, i, n, auc)
                    idx[nv] = i
                    u_mz = 0.0
                    w_mz = 0.0
                    for j in range(n):
                        U[nv, j] = u_mz * sin_l[j]
                        W[nv, j] = w_mz * sin_l[j]
                        if j + 1 == n:
                            break
                        g = cos_l[j] * eb
                        u_mz = u_mz * g + (y[i, j] / sin_p[j]) * cos_p[j]
                        w_mz = w_mz * g + y[i, j + 1] / sin_p[j + 1]
                    au = aw = uu = uw = ww = ay = uy = wy = 0.0
                    for j in range(n):
                        uj = U[nv, j]
                        wj = W[nv, j]
                        yj = y[i, n + j]
                        au += A[j] * uj
                        aw += A[j] * wj
                        uu += uj * uj
                        uw += uj * wj
                        ww += wj * wj
                        ay += A[j] * yj
                        uy += uj * yj
                        wy += wj * yj
                    S[0, nv] = au
                    S[1, nv] = aw
                    S[2, nv] = uu
                    S[3, nv] = uw
                    S[4, nv] = ww
                    S[5, nv] = ay
                    S[6, nv] = uy
                    S[7, nv] = wy
                    kk[nv] = 0.05
                    nv += 1
            i += 1
        for it in range(n_it - 1):
            for v in range(nv):
                if it == 0:
                    c1, c2 = c_start
                else:
                    c1, c2 = _weights(_decay_of(kk[v], r1p), r1l, dt, eb, rel_l)
                uu, uw, ww = S[2, v], S[3, v], S[4, v]
                bb = c1 * c1 * uu + 2.0 * c1 * c2 * uw + c2 * c2 * ww
                ab = c1 * S[0, v] + c2 * S[1, v]
                by = c1 * S[6, v] + c2 * S[7, v]
                ay = S[5, v]
                det = aa * bb - ab * ab
                k_only = (max(by, 0.0) / bb) if bb > 0 else 0.0
                if det != 0.0:
                    l0 = (bb * ay - ab * by) / det
                    k = (aa * by - ab * ay) / det
                else:
                    l0 = k = math.nan
                bad = (
                    (not (det > 1e-300 * aa * bb)) or not math.isfinite(l0) or not math.isfinite(k)
                )
                if (k < 0) or bad:
                    kk[v] = 0.0
                elif l0 < 0:
                    kk[v] = k_only
                else:
                    kk[v] = k
        for v in range(nv):
            if n_it == 1:
                c1s[v], c2s[v] = c_start
            else:
                c1s[v], c2s[v] = _weights(_decay_of(kk[v], r1p), r1l, dt, eb, rel_l)
        for v in range(nv):
            i_v = idx[v]
            c1 = c1s[v]
            c2 = c2s[v]
            for j in range(n):
                B[j] = c1 * U[v, j] + c2 * W[v, j]
            li, kv, ri = _solve2(A, B, y[i_v, n:])
            rss[i_v] = ri
            kk[v] = math.nan  # no peak unless fitted
            if not (math.isfinite(kv) and math.isfinite(li)):
                status[i_v] = 4  # FitStatus.FAILED
                continue
            k32 = np.float32(kv)
            l32 = np.float32(li)
            params[i_v, 0] = k32
            params[i_v, 1] = l32
            status[i_v] = 2 if (kv <= 0 or li <= 0) else 0  # AT_BOUND, CONVERGED
            bb = ab = a2 = 0.0
            for j in range(n):
                bb += B[j] * B[j]
                ab += A[j] * B[j]
                a2 += A[j] * A[j]
            det = bb * a2 - ab * ab
            if math.isfinite(det) and det > 1e-8 * bb * a2 and bb > 0 and a2 > 0:
                s2 = ri / dof
                vk = a2 / det
                vl = bb / det
                stderr[i_v, 0] = np.float32(math.sqrt((vk if vk > 0 else 0.0) * s2))
                stderr[i_v, 1] = np.float32(math.sqrt((vl if vl > 0 else 0.0) * s2))
            kk[v] = float(k32)
            S[0, v] = float(l32)
        for v in range(nv):
            if not math.isnan(kk[v]):
                c1s[v], c2s[v] = _weights(_decay_of(kk[v], r1p), r1l, dt, eb, rel_l)
        for v in range(nv):
            if math.isnan(kk[v]):
                continue
            kp = kk[v]
            lp = S[0, v]
            m = 0.0
            for j in range(n):
                val = abs(lp * A[j] + kp * (c1s[v] * U[v, j] + c2s[v] * W[v, j]))
                if math.isnan(val):
                    m = math.nan
                    break
                if j == 0 or val > m:
                    m = val
            peak[idx[v]] = m
