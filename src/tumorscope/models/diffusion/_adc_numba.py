"""The fused ADC fit (numba): one compiled pass from the data to the float32 maps.

:func:`adc_fit_range` is the fast path of :class:`~tumorscope.models.diffusion.adc.ADC`
(``"wlls"``/``"lls"``); design in ``docs/fitting.md`` ("The ADC fast path") and
``docs/diffusion.md``. Float32 data are fitted in float32 tiles (:func:`_log_pos32`), the
per-voxel solve in float64. Imported only when numba is installed.
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
    """The fit of one voxel whose samples are ``src[o + k step]``, ``k < len(bt)`` (``o`` and
    ``step`` unsigned: no wraparound test on the index, which would make the loads gathers).

    Branch-free, so that the loop over voxels around it vectorises: ``bt`` (float64), ``b_t``,
    ``kw`` (1 for a used sample, 0 for one outside ``[b_min, b_max]``) and ``isb`` (1 at the
    lowest b used) are tuples, so that the number of samples is a compile-time constant and
    the loops over samples unroll. Sums in the data's precision, the 2 × 2 solve, residuals,
    S0 and standard errors in float64 (see :func:`adc_fit_range`). The logs are taken again
    for the residual pass (measured cheaper than keeping them in a tile buffer). Returns
    ``(s0, adc, se_s0, se_adc, rss, status)``, NaN maps unless the status is CONVERGED or
    AT_BOUND.
    """
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
    sw64, swb64, swbb64 = np.float64(sw), np.float64(swb), np.float64(swbb)
    det = sw64 * swbb64 - swb64 * swb64
    inv = 1.0 / det
    slope = (sw64 * np.float64(swbl) - swb64 * np.float64(swl)) * inv
    icpt = (swbb64 * np.float64(swl) - swb64 * np.float64(swbl)) * inv
    # weighted residuals (two-pass: exact zero for data on the line)
    r = 0.0
    for k in range(m):
        w, lv = _sample(src[o + np.uint64(k) * step], kw[k], weighted, zero, one)
        e = np.float64(lv) - icpt - slope * bt[k]
        r += np.float64(w) * e * e
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
    se0 = s0 * np.sqrt(q * swbb64)
    se1 = np.sqrt(q * sw64)
    nan = np.nan
    s0 = s0 if ok else nan
    adc = adc if ok else nan
    se0 = se0 if ok else nan
    se1 = se1 if ok else nan
    r = r if ok else nan
    return s0, adc, se0, se1, r, st


#: Voxels per tile of :func:`adc_fit_range` (per-tile buffers stay in L1/L2).
ADC_TILE = 256


@nb.njit(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy")
def adc_fit_range(
    src,
    c_order,
    mask,
    use_mask,
    lo,
    hi,
    bt,
    b_t,
    kw,
    isb,
    weighted,
    adc_lo,
    adc_hi,
    s0_out,
    adc_out,
    se0_out,
    se1_out,
    rss_out,
    status_out,
    counts,
):
    """Fused (weighted) log-linear ADC fit of voxels ``lo:hi``, written in place.

    One pass over the data, no copy: ``src`` is the data flattened without a copy, float32 or
    float64: ``y.reshape(-1)`` of C-ordered ``y (V, m)`` (``c_order``; sample ``k`` of voxel
    ``i`` at ``i m + k``), or ``y.T.reshape(-1)`` of F-ordered ``y`` (the order of NIfTI data;
    at ``k V + i``). ``bt`` holds the ``m`` b-values (float64), ``b_t`` the same in the
    data's dtype, ``kw`` 1 for the samples used and 0 for those outside ``[b_min, b_max]``,
    ``isb`` 1 for the samples at the lowest b used (tuples; all but ``bt`` in the data's dtype): as tuples, ``m`` is a compile-time constant (one
    compiled kernel per number of b-values), the loops over samples unroll and the loop over
    the voxels of a tile (:data:`ADC_TILE`) is one vectorised block (:func:`_fit_voxel`:
    float32 data 16 lanes wide with AVX-512), which reads the samples where they lie (C order:
    strided loads the vectoriser turns into shuffles). Per voxel, as :func:`loglinear_block`:

    * ``mask[i]`` false (when ``use_mask``): NaN maps, status NOT_FITTED;
    * a NaN/inf or negative value in any column, or a non-positive sum over the columns
      ``isb`` (the lowest b used): INVALID_INPUT, NaN maps;
    * columns with ``kw`` 0 are validated only; used samples ``<= 0`` get weight 0;
    * ``log y = log S0 - b ADC`` by weighted least squares in closed form (weights ``y^2``
      when ``weighted``, else 1), ADC clipped to ``[adc_lo, adc_hi]`` (AT_BOUND); fewer
      than 2 usable samples or a singular system: FAILED, NaN maps;
    * ``rss`` = the weighted log-domain objective, standard errors from ``(A^T W A)^-1``
      scaled by ``rss / (n_used - 2)``.

    Outputs (float32 maps, uint8 status) are written at ``lo:hi`` from a per-tile buffer
    (contiguous stores); ``counts[code]`` is incremented per voxel (status histogram for the
    summary warning).
    """
    m = len(bt)
    T = ADC_TILE
    dt = src.dtype
    zero, one, inf = np.zeros(1, dt)[0], np.ones(1, dt)[0], np.full(1, np.inf, dt)[0]
    V = src.shape[0] // m
    v_t = np.empty(m * T, dt)  # the tile transposed: sample k of voxel j at k T + j
    idx = np.empty(T, np.int64)
    all_in = np.ones(T, np.bool_)
    nan = np.nan
    c0 = c2 = c3 = c4 = 0
    for t0 in range(lo, hi, T):
        t1 = min(t0 + T, hi)
        nt = t1 - t0
        nin = nt
        mt = all_in  # whether each voxel of the fitted tile is in the mask
        if use_mask:
            mt = mask[t0:t1]
            nin = 0
            for j in range(nt):
                nin += 1 if mt[j] else 0
        # a tile at least half in the mask is fitted whole (contiguous, vectorised), its
        # voxels outside the mask set to NaN / NOT_FITTED in the same loop; a sparser one
        # gathers its voxels
        dense = nin * 2 >= nt
        # the samples of the tile's voxels, sample k of voxel j at yt[j + k step]: F-ordered
        # data where they lie, else transposed into v_t (C order: loads of whole voxels,
        # unrolled over the m samples)
        yt = v_t
        step = np.uint64(T)
        if use_mask and not dense:
            mt = all_in
            nt = 0
            for i in range(t0, t1):
                if mask[i]:
                    idx[nt] = i
                    nt += 1
            for j in range(nt):
                for k in range(m):
                    v_t[k * T + j] = src[idx[j] * m + k] if c_order else src[k * V + idx[j]]
        elif c_order:
            ys = src[t0 * m : t1 * m]
            for j in range(nt):
                for k in range(m):
                    v_t[k * T + j] = ys[j * m + k]
        else:
            yt = src[t0:]
            step = np.uint64(V)
        # results written straight into the maps (a sparse tile: packed at its start first)
        o0, o1, o2, o3 = s0_out[t0:t1], adc_out[t0:t1], se0_out[t0:t1], se1_out[t0:t1]
        o4, o5 = rss_out[t0:t1], status_out[t0:t1]
        for j in range(nt):
            s0, adc, se0, se1, r, st = _fit_voxel(
                yt, np.uint64(j), step, bt, b_t, kw, isb, weighted, adc_lo, adc_hi, zero, one, inf
            )
            inm = mt[j]
            o0[j] = s0 if inm else nan
            o1[j] = adc if inm else nan
            o2[j] = se0 if inm else nan
            o3[j] = se1 if inm else nan
            o4[j] = r if inm else nan
            o5[j] = st if inm else _NOT_FITTED
        # status histogram: vectorised compares (a scattered counts[st] += 1 chains every
        # voxel on the previous one's store)
        for j in range(nt):
            st = o5[j]
            c0 += 1 if st == _CONVERGED else 0
            c2 += 1 if st == _AT_BOUND else 0
            c3 += 1 if st == _INVALID else 0
            c4 += 1 if st == _FAILED else 0
        counts[_NOT_FITTED] += (t1 - t0) - nin
        if use_mask and not dense:
            # unpack in place, from the end (idx[j] - t0 >= j), then the voxels outside
            for j in range(nt - 1, -1, -1):
                i = idx[j] - t0
                o0[i], o1[i], o2[i], o3[i], o4[i], o5[i] = o0[j], o1[j], o2[j], o3[j], o4[j], o5[j]
            mo = mask[t0:t1]
            for i in range(t1 - t0):
                if not mo[i]:
                    o0[i] = o1[i] = o2[i] = o3[i] = o4[i] = nan
                    o5[i] = _NOT_FITTED
    counts[_CONVERGED] += c0
    counts[_AT_BOUND] += c2
    counts[_INVALID] += c3
    counts[_FAILED] += c4
