"""The fused ADC fit (numba): one compiled pass from the data to the float32 maps.

:func:`adc_fit_range_small` (up to :data:`SMALL_M` b-values, each voxel fitted in registers)
and :func:`adc_fit_range` (any number) are the fast path of
:class:`~tumorscope.models.diffusion.adc.ADC` (``"wlls"``/``"lls"``); design in
``docs/fitting.md`` ("The ADC fast path") and ``docs/diffusion.md``. Float32 data are fitted
in float32 (:func:`_log_pos32`), the per-voxel solve in float64. Imported only when numba is
installed.
"""

from __future__ import annotations

import math
from typing import Any

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from ._numba import (
    _AT_BOUND,
    _CONVERGED,
    _EXP_SERIES,
    _FAILED,
    _INVALID,
    _LN2_HI,
    _LN2_LO,
    _NOT_FITTED,
    _bits_f64,
    _horner,
    _log_pos,
)


def _f32_bits_typer(typingctx, x):
    """Reinterpret a float32 as int32 (no conversion)."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


def _bits_f32_typer(typingctx, x):
    """Reinterpret the low 32 bits of an integer as float32 (no conversion)."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        if sig.args[0].bitwidth != 32:
            v = builder.trunc(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())

    return types.float32(x), codegen


_f32_bits: Any = intrinsic(_f32_bits_typer)
_bits_f32: Any = intrinsic(_bits_f32_typer)


_F32_TINY = np.float32(1.1754943508222875e-38)  # smallest normal float32
_F32_2P24 = np.float32(16777216.0)
_F32_SQRT2 = np.float32(1.4142135)
_F32_HALF = np.float32(0.5)
_F32_ONE = np.float32(1.0)
_I32_MANT = np.int32(0x007FFFFF)
_I32_ONE = np.int32(0x3F800000)
_I32_23 = np.int32(23)
_I32_127 = np.int32(127)
_I32_151 = np.int32(151)  # 127 + 24 (a subnormal was scaled by 2^24)
_I32_1 = np.int32(1)
_I32_0 = np.int32(0)
_F32_LN2_HI = np.float32(0.693145751953125)  # 0x3f317200: e * _F32_LN2_HI exact for |e| < 2^8
_F32_LN2_LO = np.float32(1.4286068203094172e-06)
#: ``2 atanh(f) / (2 f)`` to ``f^10`` in float32 (truncation < 2e-10 for ``|f| <= 0.172``)
_LOG32_SERIES = tuple(np.float32(1.0 / k) for k in (11.0, 9.0, 7.0, 5.0, 3.0, 1.0))


@nb.njit(inline="always", fastmath={"contract"})
def _log_pos32(x):
    """log(x) of a finite float32 ``x > 0``, in float32 (any other input: a meaningless value).

    :func:`_log_pos` in float32 arithmetic (twice the SIMD lanes), with ln 2 split so that
    ``e ln 2`` is exact: within 3 float32 ulps of the exact log (measured against float64
    ``np.log`` over 1e-45 .. 3e38; numpy's float32 log: 3.3), tested."""
    small = x < _F32_TINY
    x = x * _F32_2P24 if small else x
    bits = _f32_bits(x)
    e = (bits >> _I32_23) - (_I32_151 if small else _I32_127)
    mm = _bits_f32((bits & _I32_MANT) | _I32_ONE)  # mantissa in [1, 2)
    big = mm > _F32_SQRT2
    mm = mm * _F32_HALF if big else mm
    e = e + (_I32_1 if big else _I32_0)
    f = (mm - _F32_ONE) / (mm + _F32_ONE)
    p = _horner(_LOG32_SERIES, f * f)
    ef = np.float32(e)
    return ef * _F32_LN2_HI + (ef * _F32_LN2_LO + (f + f) * p)


def _log_data(x):  # pragma: no cover - replaced by the overload in compiled code
    """log of a positive data sample in its own precision (see the overload)."""
    return math.log(x)


@overload(_log_data, inline="always")
def _log_data_ol(x):
    """float32 samples: :func:`_log_pos32` (float32); float64: :func:`_log_pos` (float64)."""
    if x == types.float32:
        return lambda x: _log_pos32(x)
    return lambda x: _log_pos(x)


@nb.njit(inline="always", fastmath={"contract"})
def _exp_sel(x):
    """:func:`~._numba._exp` with its clamps as ``min``/``max`` (selects, not branches: the
    fused voxel loop of :func:`adc_fit_range` stays one vectorisable block); same values."""
    over = x > 709.782712893384
    x = min(max(x, -708.0), 709.0)
    n = np.floor(x * 1.4426950408889634 + 0.5)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = _horner(_EXP_SERIES, r)
    v = p * _bits_f64((np.int64(n) + 1023) << 52)
    return np.inf if over else v


@nb.njit(inline="always", fastmath={"contract"}, error_model="numpy")
def _finish(sw, swb, swbb, npos, bad, base, icpt, slope, r, adc_lo, adc_hi, zero):
    """Status, bounds, S0 and standard errors of one voxel from its sums (any float type),
    intercept, slope and weighted RSS (float64), branch-free: ``(s0, adc, se_s0, se_adc,
    rss, status)``, NaN maps unless the status is CONVERGED or AT_BOUND."""
    a0, a1, a2 = np.float64(sw), np.float64(swb), np.float64(swbb)
    inv = 1.0 / (a0 * a2 - a1 * a1)
    n64 = np.float64(npos)
    adc = min(max(-slope, adc_lo), adc_hi)
    st = _CONVERGED if adc == -slope else _AT_BOUND
    good = (n64 >= 2.0) & (inv > 0.0) & (inv < np.inf) & np.isfinite(slope)
    st = st if good else _FAILED
    invalid = (bad > zero) | (not (base > zero))
    st = _INVALID if invalid else st
    ok = st < _INVALID
    s0 = _exp_sel(icpt)
    s2 = r / (n64 - 2.0)
    q = (s2 if n64 > 2.0 else np.nan) * inv
    se0 = s0 * np.sqrt(q * a2)
    se1 = np.sqrt(q * a0)
    nan = np.nan
    s0 = s0 if ok else nan
    adc = adc if ok else nan
    se0 = se0 if ok else nan
    se1 = se1 if ok else nan
    r = r if ok else nan
    return s0, adc, se0, se1, r, st


@nb.njit(inline="always", fastmath={"contract"}, error_model="numpy")
def _solve(sw, swb, swbb, swl, swbl):
    """Closed-form weighted 2 × 2 solve in float64: ``(intercept, slope)`` of log y on -b."""
    a0, a1, a2 = np.float64(sw), np.float64(swb), np.float64(swbb)
    inv = 1.0 / (a0 * a2 - a1 * a1)
    slope = (a0 * np.float64(swbl) - a1 * np.float64(swl)) * inv
    icpt = (a2 * np.float64(swl) - a1 * np.float64(swbl)) * inv
    return icpt, slope


@nb.njit(inline="always", fastmath={"contract"}, error_model="numpy")
def _sample(v, kw, weighted, zero, one):
    """Weight and log of one sample: ``(w, log v)``; ``(0, 0)`` for ``v <= 0`` (and NaN)."""
    pos = v > zero
    w = v * v if weighted else one
    w = w * kw
    w = w if pos else zero
    lv = _log_data(v)
    lv = lv if pos else zero  # log 0 = -inf, 0 * -inf = NaN
    return w, lv


@nb.njit(inline="always", fastmath={"contract"}, error_model="numpy")
def _fit_voxel(src, o, step, bt, b_t, kw, isb, weighted, adc_lo, adc_hi, zero, one, inf):
    """The whole fit of one voxel whose samples are ``src[o + k step]``, ``k < len(bt)``, in
    registers (:func:`adc_fit_range_small`). ``bt`` (float64), ``b_t``, ``kw``, ``isb`` are
    tuples: the number of samples is a compile-time constant and the loops over them unroll
    (the logs of the second are those of the first, merged by LLVM), so that the loop over
    voxels around this is one vectorised block. ``o``, ``step`` unsigned: no wraparound
    test on the index."""
    m = len(bt)
    bad = zero
    sw = swb = swbb = swl = swbl = npos = base = zero
    for k in range(m):
        v = src[o + np.uint64(k) * step]
        bad += zero if ((v >= zero) & (v < inf)) else one
        base += v * isb[k]
        w, lv = _sample(v, kw[k], weighted, zero, one)
        npos += kw[k] if v > zero else zero
        bk = b_t[k]
        wb = w * bk
        sw += w
        swb += wb
        swbb += wb * bk
        swl += w * lv
        swbl += wb * lv
    icpt, slope = _solve(sw, swb, swbb, swl, swbl)
    r = 0.0  # weighted residuals (two-pass: exact zero for data on the line)
    for k in range(m):
        w, lv = _sample(src[o + np.uint64(k) * step], kw[k], weighted, zero, one)
        e = np.float64(lv) - icpt - slope * bt[k]
        r += np.float64(w) * e * e
    return _finish(sw, swb, swbb, npos, bad, base, icpt, slope, r, adc_lo, adc_hi, zero)


#: Voxels per tile of :func:`adc_fit_range` (per-tile buffers stay in L1/L2).
ADC_TILE = 256
#: Most samples per voxel for :func:`adc_fit_range_small`: beyond, LLVM (numba 0.68) no longer
#: unrolls the loops over samples and the voxel loop runs scalar, 5-10x slower (measured).
SMALL_M = 4


@nb.njit(inline="always")
def _tile_in(src, c_order, mask, use_mask, t0, t1, m, v_t, idx, all_in, by_voxel):
    """The samples of tile ``t0:t1``: ``(yt, step, mt, nt, nin, dense)``, sample ``k`` of the
    ``j``-th fitted voxel at ``yt[k step + j]`` (F order: where they lie; C order or a sparse
    tile: transposed into ``v_t``), ``mt[j]`` whether it is in the mask, ``nt`` voxels to
    fit, ``nin`` in the mask. A tile at least half in the mask (``dense``) is fitted whole,
    contiguous and vectorised, its voxels outside the mask set to NaN / NOT_FITTED as they
    are written; a sparser one gathers its voxels (``idx``) and is unpacked by
    :func:`_tile_out`. ``by_voxel`` (a constant): C-ordered data transposed voxel by voxel
    (for a compile-time ``m``: whole-voxel loads and shuffles, 1.3x the register kernel,
    measured), else sample by sample (strided loads, for a run-time ``m``)."""
    T = ADC_TILE
    V = src.shape[0] // m
    nt = t1 - t0
    nin = nt
    mt = all_in
    if use_mask:
        mt = mask[t0:t1]
        nin = 0
        for j in range(nt):
            nin += 1 if mt[j] else 0
    dense = nin * 2 >= nt
    yt = v_t
    step = np.uint64(T)
    if use_mask and not dense:
        mt = all_in
        nt = 0
        for i in range(t0, t1):
            if mask[i]:
                idx[nt] = i
                nt += 1
        for k in range(m):
            vk = v_t[k * T : (k + 1) * T]
            for j in range(nt):
                vk[j] = src[idx[j] * m + k] if c_order else src[k * V + idx[j]]
    elif c_order and by_voxel:
        ys = src[t0 * m : t1 * m]
        for j in range(nt):
            for k in range(m):
                v_t[k * T + j] = ys[j * m + k]
    elif c_order:
        ys = src[t0 * m : t1 * m]
        for k in range(m):
            vk = v_t[k * T : (k + 1) * T]
            for j in range(nt):
                vk[j] = ys[np.uint64(j * m + k)]
    else:
        yt = src[t0:]
        step = np.uint64(V)
    return yt, step, mt, nt, nin, dense


@nb.njit(inline="always")
def _tile_out(o0, o1, o2, o3, o4, o5, mask, idx, t0, nt, unpack, counts):
    """Count the statuses of the ``nt`` fitted voxels of a tile (vectorised compares: a
    scattered ``counts[st] += 1`` chains every voxel on the previous one's store); a sparse
    tile (``unpack``): unpack its results in place, from the end (``idx[j] - t0 >= j``),
    then mark the voxels outside the mask."""
    c0 = c2 = c3 = c4 = 0
    for j in range(nt):
        st = o5[j]
        c0 += 1 if st == _CONVERGED else 0
        c2 += 1 if st == _AT_BOUND else 0
        c3 += 1 if st == _INVALID else 0
        c4 += 1 if st == _FAILED else 0
    counts[_CONVERGED] += c0
    counts[_AT_BOUND] += c2
    counts[_INVALID] += c3
    counts[_FAILED] += c4
    if unpack:
        nan = np.nan
        for j in range(nt - 1, -1, -1):
            i = idx[j] - t0
            o0[i], o1[i], o2[i], o3[i], o4[i], o5[i] = o0[j], o1[j], o2[j], o3[j], o4[j], o5[j]
        mo = mask[t0 : t0 + o0.shape[0]]
        for i in range(o0.shape[0]):
            if not mo[i]:
                o0[i] = o1[i] = o2[i] = o3[i] = o4[i] = nan
                o5[i] = _NOT_FITTED


_DOC = """Fused (weighted) log-linear ADC fit of voxels ``lo:hi``, written in place.

    One pass over the data, no copy: ``src`` is the data flattened without a copy, float32 or
    float64: ``y.reshape(-1)`` of C-ordered ``y (V, m)`` (``c_order``; sample ``k`` of voxel
    ``i`` at ``i m + k``), or ``y.T.reshape(-1)`` of F-ordered ``y`` (the order of NIfTI data;
    at ``k V + i``). ``b`` holds the ``m`` b-values (float64), ``b_t`` the same in the data's
    dtype, ``kw`` 1 for the samples used and 0 for those outside ``[b_min, b_max]``, ``isb``
    1 for the samples at the lowest b used (``b_t``, ``kw``, ``isb`` in the data's dtype).

    Tile by tile (:data:`ADC_TILE` voxels, :func:`_tile_in`), every loop runs over the
    voxels of the tile and is branch-free, so that it vectorises (float32 data 16 lanes wide
    with AVX-512): sums of the normal equations in the data's precision, the 2 × 2 solve,
    the residuals, S0 and the standard errors in float64; the maps, RSS and status are
    written straight into the outputs. Per voxel, as :func:`loglinear_block`:

    * ``mask[i]`` false (when ``use_mask``): NaN maps, status NOT_FITTED;
    * a NaN/inf or negative value in any column, or a non-positive sum over the columns
      ``isb`` (the lowest b used): INVALID_INPUT, NaN maps;
    * columns with ``kw`` 0 are validated only; used samples ``<= 0`` get weight 0;
    * ``log y = log S0 - b ADC`` by weighted least squares in closed form (weights ``y^2``
      when ``weighted``, else 1), ADC clipped to ``[adc_lo, adc_hi]`` (AT_BOUND); fewer
      than 2 usable samples or a singular system: FAILED, NaN maps;
    * ``rss`` = the weighted log-domain objective, standard errors from ``(A^T W A)^-1``
      scaled by ``rss / (n_used - 2)``.

    ``counts[code]`` is incremented per voxel (status histogram for the summary warning).
    """


@nb.njit(inline="always")
def _put_voxel(o0, o1, o2, o3, o4, o5, j, inm, s0, adc, se0, se1, r, st, nan):
    """Voxel ``j``'s results into the tile's outputs (S0, ADC, their standard errors, rss,
    status), or NaN and :data:`_NOT_FITTED` outside the mask; branch-free selects."""
    o0[j] = s0 if inm else nan
    o1[j] = adc if inm else nan
    o2[j] = se0 if inm else nan
    o3[j] = se1 if inm else nan
    o4[j] = r if inm else nan
    o5[j] = st if inm else _NOT_FITTED


@nb.njit(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy")
def adc_fit_range_small(
    src, c_order, mask, use_mask, lo, hi, b, b_t, kw, isb, weighted, adc_lo, adc_hi,
    s0_out, adc_out, se0_out, se1_out, rss_out, status_out, counts,
):  # fmt: skip
    m = len(b)
    T = ADC_TILE
    dt = src.dtype
    zero, one, inf = np.zeros(1, dt)[0], np.ones(1, dt)[0], np.full(1, np.inf, dt)[0]
    v_t = np.empty(m * T, dt)
    idx = np.empty(T, np.int64)
    all_in = np.ones(T, np.bool_)
    nan = np.nan
    for t0 in range(lo, hi, T):
        t1 = min(t0 + T, hi)
        yt, step, mt, nt, nin, dense = _tile_in(
            src, c_order, mask, use_mask, t0, t1, m, v_t, idx, all_in, True
        )
        o0, o1, o2, o3 = s0_out[t0:t1], adc_out[t0:t1], se0_out[t0:t1], se1_out[t0:t1]
        o4, o5 = rss_out[t0:t1], status_out[t0:t1]
        for j in range(nt):
            s0, adc, se0, se1, r, st = _fit_voxel(
                yt, np.uint64(j), step, b, b_t, kw, isb, weighted, adc_lo, adc_hi, zero, one, inf
            )
            _put_voxel(o0, o1, o2, o3, o4, o5, j, mt[j], s0, adc, se0, se1, r, st, nan)
        counts[_NOT_FITTED] += (t1 - t0) - nin
        _tile_out(o0, o1, o2, o3, o4, o5, mask, idx, t0, nt, use_mask and not dense, counts)


adc_fit_range_small.__doc__ = f"""{_DOC}
    For at most :data:`SMALL_M` samples, given as tuples (``b``, ``b_t``, ``kw``, ``isb``):
    one compiled kernel per number of samples, each voxel fitted in registers
    (:func:`_fit_voxel`), 1.2-1.6x :func:`adc_fit_range` for 4 samples (measured)."""


@nb.njit(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy")
def adc_fit_range(
    src, c_order, mask, use_mask, lo, hi, b, b_t, kw, isb, weighted, adc_lo, adc_hi,
    s0_out, adc_out, se0_out, se1_out, rss_out, status_out, counts,
):  # fmt: skip
    m = b.shape[0]
    T = ADC_TILE
    dt = src.dtype
    zero, one, inf = np.zeros(1, dt)[0], np.ones(1, dt)[0], np.full(1, np.inf, dt)[0]
    v_t = np.empty(m * T, dt)  # a tile transposed: sample k of voxel j at k T + j
    l_t = np.empty(m * T, dt)  # logs and weights of the tile's samples, same layout
    w_t = np.empty(m * T, dt)
    acc = np.empty((8, T), dt)  # per voxel: sw, swb, swbb, swl, swbl, npos, bad, base
    sol = np.empty((3, T))  # per voxel: intercept, slope, rss
    idx = np.empty(T, np.int64)
    all_in = np.ones(T, np.bool_)
    nan = np.nan
    for t0 in range(lo, hi, T):
        t1 = min(t0 + T, hi)
        yt, step, mt, nt, nin, dense = _tile_in(
            src, c_order, mask, use_mask, t0, t1, m, v_t, idx, all_in, False
        )
        # validation, weights, logs and the sums of the normal equations
        for q in range(8):
            for j in range(nt):
                acc[q, j] = zero
        sw, swb, swbb, swl, swbl = acc[0], acc[1], acc[2], acc[3], acc[4]
        npos, bad, base = acc[5], acc[6], acc[7]
        for k in range(m):
            yk = yt[np.uint64(k) * step :]
            lk = l_t[k * T : (k + 1) * T]
            wk = w_t[k * T : (k + 1) * T]
            bk, kk, ik = b_t[k], kw[k], isb[k]
            for j in range(nt):
                v = yk[j]
                bad[j] += zero if ((v >= zero) & (v < inf)) else one
                base[j] += v * ik
                w, lv = _sample(v, kk, weighted, zero, one)
                lk[j] = lv
                wk[j] = w
                npos[j] += kk if v > zero else zero
                wb = w * bk
                sw[j] += w
                swb[j] += wb
                swbb[j] += wb * bk
                swl[j] += w * lv
                swbl[j] += wb * lv
        icpt, slope, rss = sol[0], sol[1], sol[2]
        for j in range(nt):
            icpt[j], slope[j] = _solve(sw[j], swb[j], swbb[j], swl[j], swbl[j])
            rss[j] = 0.0
        # weighted residuals (two-pass: exact zero for data on the line)
        for k in range(m):
            lk = l_t[k * T : (k + 1) * T]
            wk = w_t[k * T : (k + 1) * T]
            bk = b[k]
            for j in range(nt):
                e = np.float64(lk[j]) - icpt[j] - slope[j] * bk
                rss[j] += np.float64(wk[j]) * e * e
        o0, o1, o2, o3 = s0_out[t0:t1], adc_out[t0:t1], se0_out[t0:t1], se1_out[t0:t1]
        o4, o5 = rss_out[t0:t1], status_out[t0:t1]
        for j in range(nt):
            s0, adc, se0, se1, r, st = _finish(
                sw[j], swb[j], swbb[j], npos[j], bad[j], base[j], icpt[j], slope[j], rss[j],
                adc_lo, adc_hi, zero,
            )  # fmt: skip
            _put_voxel(o0, o1, o2, o3, o4, o5, j, mt[j], s0, adc, se0, se1, r, st, nan)
        counts[_NOT_FITTED] += (t1 - t0) - nin
        _tile_out(o0, o1, o2, o3, o4, o5, mask, idx, t0, nt, use_mask and not dense, counts)


adc_fit_range.__doc__ = f"""{_DOC}
    Any number of samples (arrays ``b``, ``b_t``, ``kw``, ``isb``): one loop over the
    voxels of the tile per sample and step, per-voxel sums in tile buffers."""
