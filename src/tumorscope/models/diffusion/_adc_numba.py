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

from ._numba import _AT_BOUND, _CONVERGED, _FAILED, _INVALID, _NOT_FITTED, _exp, _horner, _log_pos


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


@nb.njit(inline="always")
def _put(dst, t0, src, n):
    """``dst[t0:t0 + n] = src[:n]`` (with the dtype conversion), as a loop that vectorises."""
    for j in range(n):
        dst[t0 + j] = src[j]


@nb.njit(inline="always", fastmath={"contract"}, error_model="numpy")
def _adc_tile_sums(v_t, l_t, w_t, acc, nt, b_t, keep, is_base, weighted, zero, one, inf):
    """Validation, weights, logs and the sums of the normal equations of a tile of
    :func:`adc_fit_range`, all in the data's precision (``zero``, ``one``, ``inf`` and
    ``b_t`` of the data's dtype: float32 data run 8 or 16 lanes wide; the engine path, too,
    takes the log of float32 data in float32). ``v_t (m, T)`` data; ``l_t``, ``w_t`` logs and
    weights written.

    ``acc`` rows (zeroed here): ``sw, swb, swbb, swl, swbl`` (weighted sums of 1, b, b², log y,
    b log y), ``npos`` (usable samples), ``bad`` (invalid samples; the same lane width as the
    sums), ``base`` (sum over the lowest b); the solve converts them to float64 per voxel.
    """
    m = v_t.shape[0]
    for q in range(acc.shape[0]):
        for j in range(nt):
            acc[q, j] = zero
    sw, swb, swbb, swl, swbl = acc[0], acc[1], acc[2], acc[3], acc[4]
    npos, bad, base = acc[5], acc[6], acc[7]
    for k in range(m):
        if keep[k]:
            bk = b_t[k]
            for j in range(nt):
                v = v_t[k, j]
                bad[j] += zero if (v >= zero and v < inf) else one
                pos = v > zero
                w = v * v if weighted else one
                w = w if pos else zero
                lv = _log_data(v)
                lv = lv if pos else zero  # log 0 = -inf, 0 * -inf = NaN
                l_t[k, j] = lv
                w_t[k, j] = w
                npos[j] += one if pos else zero
                wb = w * bk
                sw[j] += w
                swb[j] += wb
                swbb[j] += wb * bk
                swl[j] += w * lv
                swbl[j] += wb * lv
        else:
            for j in range(nt):
                v = v_t[k, j]
                bad[j] += zero if (v >= zero and v < inf) else one
        if is_base[k]:
            for j in range(nt):
                base[j] += v_t[k, j]


@nb.njit(inline="always", fastmath={"contract"}, error_model="numpy")
def _adc_tile_solve(l_t, w_t, acc, res, o_st, nt, b, keep, adc_lo, adc_hi):
    """Closed-form 2×2 solve (float64, from the tile's sums), weighted residuals (float64),
    bounds, status, S0 and standard errors of a tile; results in ``res`` rows
    ``s0, adc, se0, se1, rss`` and ``o_st``."""
    m = l_t.shape[0]
    nan = np.nan
    o_s0, o_adc, o_se0, o_se1, o_r = res[0], res[1], res[2], res[3], res[4]
    r = res[5]
    # closed-form 2x2 solve (o_* hold intermediates until the last loop)
    for j in range(nt):
        sw = np.float64(acc[0, j])
        swb = np.float64(acc[1, j])
        swbb = np.float64(acc[2, j])
        swl = np.float64(acc[3, j])
        swbl = np.float64(acc[4, j])
        det = sw * swbb - swb * swb
        inv = 1.0 / det
        o_adc[j] = (sw * swbl - swb * swl) * inv
        o_s0[j] = (swbb * swl - swb * swbl) * inv
        o_se0[j] = inv
        r[j] = 0.0
    # weighted residuals (two-pass: exact zero for data on the line)
    for k in range(m):
        if keep[k]:
            bk = b[k]
            for j in range(nt):
                e = np.float64(l_t[k, j]) - o_s0[j] - o_adc[j] * bk
                r[j] += np.float64(w_t[k, j]) * e * e
    # status, bounds, S0, standard errors
    for j in range(nt):
        slope = o_adc[j]
        icpt = o_s0[j]
        inv = o_se0[j]  # 1 / det
        npos = np.float64(acc[5, j])
        adc = min(max(-slope, adc_lo), adc_hi)
        st = _CONVERGED if adc == -slope else _AT_BOUND
        st = st if (npos >= 2.0 and 0.0 < inv < np.inf and np.isfinite(slope)) else _FAILED
        st = _INVALID if (acc[6, j] > 0 or not (acc[7, j] > 0)) else st
        ok = st < _INVALID
        s0 = _exp(icpt)
        s2 = r[j] / (npos - 2.0) if npos > 2.0 else nan
        o_s0[j] = s0 if ok else nan
        o_adc[j] = adc if ok else nan
        o_r[j] = r[j] if ok else nan
        o_st[j] = st
        q = s2 * inv
        o_se0[j] = s0 * np.sqrt(q * np.float64(acc[2, j])) if ok else nan
        o_se1[j] = np.sqrt(q * np.float64(acc[0, j])) if ok else nan


#: Voxels per tile of :func:`adc_fit_range` (per-tile buffers stay in L1/L2).
ADC_TILE = 256


@nb.njit(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy")
def adc_fit_range(
    y,
    yflat,
    mask,
    use_mask,
    lo,
    hi,
    b,
    keep,
    is_base,
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
    """Fused (weighted) log-linear ADC fit of voxels ``lo:hi`` of ``y``, written in place.

    One pass over the data, no copy: ``y (V, m)`` float32 or float64 in any memory layout
    (C order, or the F order of NIfTI data), read tile by tile (:data:`ADC_TILE` voxels,
    gathered and transposed into buffers of the data's dtype so that every following loop
    runs over voxels and vectorises). ``yflat``: ``y.reshape(-1)`` when ``y`` is C-contiguous
    (read instead of ``y``: plain index arithmetic, 3x faster to gather), else empty.
    Per voxel, as :func:`loglinear_block`:

    * ``mask[i]`` false (when ``use_mask``): NaN maps, status NOT_FITTED;
    * a NaN/inf or negative value in any column, or a non-positive sum over the columns
      ``is_base`` (the lowest b used): INVALID_INPUT, NaN maps;
    * columns with ``keep`` false are validated only; kept samples ``<= 0`` get weight 0;
    * ``log y = log S0 - b ADC`` by weighted least squares in closed form (weights ``y^2``
      when ``weighted``, else 1), ADC clipped to ``[adc_lo, adc_hi]`` (AT_BOUND); fewer
      than 2 usable samples or a singular system: FAILED, NaN maps;
    * ``rss`` = the weighted log-domain objective, standard errors from ``(A^T W A)^-1``
      scaled by ``rss / (n_used - 2)``.

    Outputs (float32 maps, uint8 status) are written at ``lo:hi``; ``counts[code]`` is
    incremented per voxel (status histogram for the summary warning).
    """
    m = y.shape[1]
    T = ADC_TILE
    flat = yflat.shape[0] > 0
    # tile buffers in the data's dtype (float32 data: twice the SIMD lanes)
    dt = y.dtype
    zero, one, inf = np.zeros(1, dt)[0], np.ones(1, dt)[0], np.full(1, np.inf, dt)[0]
    b_t = b.astype(dt)
    v_t = np.empty((m, T), dt)
    l_t = np.empty((m, T), dt)
    w_t = np.empty((m, T), dt)
    idx = np.empty(T, np.int64)
    acc = np.empty((8, T), dt)  # per-voxel sums of the tile (see _adc_tile_sums)
    res = np.empty((6, T))  # per-voxel results of the tile (see _adc_tile_solve)
    o_s0, o_adc, o_se0, o_se1, o_r = res[0], res[1], res[2], res[3], res[4]
    o_st = np.empty(T, np.uint8)
    nan = np.nan
    for t0 in range(lo, hi, T):
        t1 = min(t0 + T, hi)
        nt = t1 - t0
        nin = nt
        if use_mask:
            nin = 0
            for i in range(t0, t1):
                nin += 1 if mask[i] else 0
        # a tile at least half in the mask is fitted whole (contiguous, vectorised), and its
        # voxels outside the mask are overwritten after; a sparser one gathers its voxels
        dense = nin * 2 >= nt
        if use_mask and not dense:
            nt = 0
            for i in range(t0, t1):
                if mask[i]:
                    idx[nt] = i
                    nt += 1
                else:
                    s0_out[i] = nan
                    adc_out[i] = nan
                    se0_out[i] = nan
                    se1_out[i] = nan
                    rss_out[i] = nan
                    status_out[i] = _NOT_FITTED
            # gather + transpose (the only access to y)
            if flat:
                for j in range(nt):
                    i = idx[j] * m
                    for k in range(m):
                        v_t[k, j] = yflat[i + k]
            else:
                for j in range(nt):
                    i = idx[j]
                    for k in range(m):
                        v_t[k, j] = y[i, k]
        elif flat:
            i0 = t0 * m
            for k in range(m):
                for j in range(nt):
                    v_t[k, j] = yflat[i0 + j * m + k]
        else:
            for k in range(m):
                for j in range(nt):
                    v_t[k, j] = y[t0 + j, k]
        counts[_NOT_FITTED] += (t1 - t0) - nin
        _adc_tile_sums(v_t, l_t, w_t, acc, nt, b_t, keep, is_base, weighted, zero, one, inf)
        _adc_tile_solve(l_t, w_t, acc, res, o_st, nt, b, keep, adc_lo, adc_hi)
        # write out (contiguous for a whole tile: separate loops vectorise)
        if use_mask and not dense:
            for j in range(nt):
                i = idx[j]
                s0_out[i] = o_s0[j]
                adc_out[i] = o_adc[j]
                se0_out[i] = o_se0[j]
                se1_out[i] = o_se1[j]
                rss_out[i] = o_r[j]
                status_out[i] = o_st[j]
        else:
            if nin < nt:  # voxels outside the mask: not fitted (and not counted below)
                for j in range(nt):
                    if not mask[t0 + j]:
                        o_s0[j] = o_adc[j] = o_se0[j] = o_se1[j] = o_r[j] = nan
                        o_st[j] = _NOT_FITTED
            _put(s0_out, t0, o_s0, nt)
            _put(adc_out, t0, o_adc, nt)
            _put(se0_out, t0, o_se0, nt)
            _put(se1_out, t0, o_se1, nt)
            _put(rss_out, t0, o_r, nt)
            _put(status_out, t0, o_st, nt)
        # status histogram: one vectorised count per code the solve can give (a scattered
        # counts[o_st[j]] += 1 chains every voxel on the previous one's store)
        c0 = c2 = c3 = c4 = 0
        for j in range(nt):
            c0 += 1 if o_st[j] == _CONVERGED else 0
            c2 += 1 if o_st[j] == _AT_BOUND else 0
            c3 += 1 if o_st[j] == _INVALID else 0
            c4 += 1 if o_st[j] == _FAILED else 0
        counts[_CONVERGED] += c0
        counts[_AT_BOUND] += c2
        counts[_INVALID] += c3
        counts[_FAILED] += c4
