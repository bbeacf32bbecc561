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
def fixed_point_normal(
    pyr, lac, dts, sin_p, cos_p, sin_l, cos_l, r1l, r1p, n_it
):  # pragma: no cover
    """:func:`fixed_point` returning, instead of the bases, the entries of the normal matrix
    ``JᵀJ`` of the Jacobian ``[B, A]`` (kPL, L0) at the last basis: (l0, k, rss, bb, ab, aa).
    No ``(voxels, frames)`` array is written."""
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
    for i in range(v):
        for j in range(n):
            pz[j] = pyr[i, j] / sin_p[j]
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
