"""Compiled per-voxel diffusion kernels (numba); imported only when numba is installed.

Signal equations and references are documented in :mod:`tumorscope.models.diffusion.equations`.
Parameter orders: ADC (S0, ADC); IVIM (S0, D, f, D_star); DKI (S0, D, K).
"""

from __future__ import annotations

import math
from typing import Any

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ...fitting._lm_numba import MODEL_SIGNATURE
from ...fitting.status import FitStatus

_CONVERGED = np.uint8(FitStatus.CONVERGED)
_AT_BOUND = np.uint8(FitStatus.AT_BOUND)
_FAILED = np.uint8(FitStatus.FAILED)
_INVALID = np.uint8(FitStatus.INVALID_INPUT)
_NOT_FITTED = np.uint8(FitStatus.NOT_FITTED)


@nb.njit(MODEL_SIGNATURE, cache=True)
def mono_kernel(p, b, f, J):
    """S = S0 exp(-b ADC); consts = b (m,)."""
    for k in range(b.shape[0]):
        e = np.exp(-b[k] * p[1])
        f[k] = p[0] * e
        J[k, 0] = e
        J[k, 1] = -p[0] * b[k] * e


@nb.njit(MODEL_SIGNATURE, cache=True)
def ivim_kernel(p, b, f, J):
    """S = S0 (f exp(-b D*) + (1 - f) exp(-b D)); consts = b (m,)."""
    s0 = p[0]
    d = p[1]
    fr = p[2]
    ds = p[3]
    for k in range(b.shape[0]):
        e1 = np.exp(-b[k] * d)
        e2 = np.exp(-b[k] * ds)
        s = fr * e2 + (1.0 - fr) * e1
        f[k] = s0 * s
        J[k, 0] = s
        J[k, 1] = -s0 * (1.0 - fr) * b[k] * e1
        J[k, 2] = s0 * (e2 - e1)
        J[k, 3] = -s0 * fr * b[k] * e2


@nb.njit(MODEL_SIGNATURE, cache=True)
def ivim_map_kernel(p, c, f, J):
    """IVIM plus three Gaussian prior rows (MAP / empirical Bayes).

    consts = [m, b_1..b_m, w_D, mu_D, w_f, mu_f, w_Ds, mu_logDs]; rows m..m+2 are
    ``w_D (D - mu_D)``, ``w_f (f - mu_f)``, ``w_Ds (log D* - mu_logDs)`` (observed 0).
    """
    m = int(c[0])
    s0 = p[0]
    d = p[1]
    fr = p[2]
    ds = p[3]
    for k in range(m):
        bk = c[1 + k]
        e1 = np.exp(-bk * d)
        e2 = np.exp(-bk * ds)
        s = fr * e2 + (1.0 - fr) * e1
        f[k] = s0 * s
        J[k, 0] = s
        J[k, 1] = -s0 * (1.0 - fr) * bk * e1
        J[k, 2] = s0 * (e2 - e1)
        J[k, 3] = -s0 * fr * bk * e2
    o = 1 + m
    for r in range(3):
        for i in range(4):
            J[m + r, i] = 0.0
    f[m] = c[o] * (d - c[o + 1])
    J[m, 1] = c[o]
    f[m + 1] = c[o + 2] * (fr - c[o + 3])
    J[m + 1, 2] = c[o + 2]
    f[m + 2] = c[o + 4] * (np.log(ds) - c[o + 5])
    J[m + 2, 3] = c[o + 4] / ds


@nb.njit(MODEL_SIGNATURE, cache=True)
def dki_kernel(p, c, f, J):
    """sqrt(w) S0 exp(-b D + b^2 D^2 K / 6) on shells; consts = [b_1..b_S, sqrt(w)_1..sqrt(w)_S]."""
    s0 = p[0]
    d = p[1]
    kk = p[2]
    ns = c.shape[0] // 2
    for k in range(ns):
        bk = c[k]
        sw = c[ns + k]
        e = sw * np.exp(-bk * d + bk * bk * d * d * kk / 6.0)
        f[k] = s0 * e
        J[k, 0] = e
        J[k, 1] = s0 * e * (-bk + bk * bk * d * kk / 3.0)
        J[k, 2] = s0 * e * bk * bk * d * d / 6.0


@nb.njit(inline="always")
def _dki_wlls_row(ysi, ng, bs):
    """``(S0, D, K)`` of one voxel's shell means by weighted log-quadratic least squares
    (weights ``ng ys²``, samples ``<= 0`` left out); NaN when fewer than 3 samples are usable
    or the system is singular."""
    S = bs.shape[0]
    # normal equations A^T W A c = A^T W l, A = [1, -b, b^2/6] (scalars: no allocation)
    n00 = n01 = n02 = n11 = n12 = n22 = 0.0
    r0 = r1 = r2 = 0.0
    npos = 0
    for s in range(S):
        v = ysi[s]
        if v > 0.0:
            w = ng[s] * v * v
            a1 = -bs[s]
            a2 = bs[s] * bs[s] / 6.0
            lv = np.log(v)
            n00 += w
            n01 += w * a1
            n02 += w * a2
            n11 += w * a1 * a1
            n12 += w * a1 * a2
            n22 += w * a2 * a2
            r0 += w * lv
            r1 += w * a1 * lv
            r2 += w * a2 * lv
            npos += 1
    # Cramer's rule on the symmetric 3x3 system
    c00 = n11 * n22 - n12 * n12
    c01 = n02 * n12 - n01 * n22
    c02 = n01 * n12 - n02 * n11
    det = n00 * c00 + n01 * c01 + n02 * c02
    ok = npos >= 3 and det != 0.0 and np.isfinite(det)
    s0 = np.nan
    d = np.nan
    kk = np.nan
    if ok:
        c11 = n00 * n22 - n02 * n02
        c12 = n01 * n02 - n00 * n12
        c22 = n00 * n11 - n01 * n01
        x0 = (c00 * r0 + c01 * r1 + c02 * r2) / det
        x1 = (c01 * r0 + c11 * r1 + c12 * r2) / det
        x2 = (c02 * r0 + c12 * r1 + c22 * r2) / det
        s0 = np.exp(x0)
        d = x1
        kk = x2 / (d * d) if d != 0.0 else np.nan
    return s0, d, kk


@nb.njit(inline="always")
def _dki_row_rss_stderr(ysi, ng, bs, s0, d, kk, se):
    """Signal-domain weighted RSS at ``(S0, D, K)`` (returned) and the Jacobian standard
    errors written to ``se`` (NaN with 3 shells or a singular ``JᵀWJ``)."""
    S = bs.shape[0]
    # signal-domain weighted residuals and J^T W J at the estimate
    h00 = h01 = h02 = h11 = h12 = h22 = 0.0
    rs = 0.0
    for s in range(S):
        bk = bs[s]
        e = np.exp(-bk * d + bk * bk * d * d * kk / 6.0)
        j0 = e
        j1 = s0 * e * (-bk + bk * bk * d * kk / 3.0)
        j2 = s0 * e * bk * bk * d * d / 6.0
        w = ng[s]
        rs += w * (ysi[s] - s0 * e) ** 2
        h00 += w * j0 * j0
        h01 += w * j0 * j1
        h02 += w * j0 * j2
        h11 += w * j1 * j1
        h12 += w * j1 * j2
        h22 += w * j2 * j2
    g00 = h11 * h22 - h12 * h12
    g11 = h00 * h22 - h02 * h02
    g22 = h00 * h11 - h01 * h01
    hd = h00 * g00 + h01 * (h02 * h12 - h01 * h22) + h02 * (h01 * h12 - h02 * h11)
    if S > 3 and hd > 0.0:
        s2 = rs / (S - 3)
        se[0] = np.sqrt(s2 * g00 / hd) if g00 >= 0.0 else np.nan
        se[1] = np.sqrt(s2 * g11 / hd) if g11 >= 0.0 else np.nan
        se[2] = np.sqrt(s2 * g22 / hd) if g22 >= 0.0 else np.nan
    else:
        se[0] = np.nan
        se[1] = np.nan
        se[2] = np.nan
    return rs


@nb.njit(parallel=True, cache=True)
def dki_wlls_block(y, shell, ng, bs, d_max, k_max, ys, params, stderr, rss, status, refit):
    """Fused powder average + weighted log-quadratic DKI fit of every row of ``y``.

    Shell means ``ys`` (written out), validation (NaN/inf/negative anywhere or a
    non-positive first shell: INVALID_INPUT), WLS of ``log ys = log S0 - b D + b² (D² K) / 6``
    with weights ``ng ys²``, then ``K = c2 / D²``. Estimates inside ``0 <= D <= d_max``,
    ``0 <= K <= k_max`` get status CONVERGED with the signal-domain weighted RSS and Jacobian
    standard errors; others are flagged in ``refit`` (start values clipped) for bounded LM.
    """
    n, m = y.shape
    S = bs.shape[0]
    for i in nb.prange(n):
        bad = False
        for s in range(S):
            ys[i, s] = 0.0
        for k in range(m):
            v = np.float64(y[i, k])
            if not (v >= 0.0) or v == np.inf:
                bad = True
            ys[i, shell[k]] += v
        for s in range(S):
            ys[i, s] /= ng[s]
        refit[i] = False
        if bad or not (ys[i, 0] > 0.0):
            for j in range(3):
                params[i, j] = np.nan
                stderr[i, j] = np.nan
            rss[i] = np.nan
            status[i] = _INVALID
            continue
        s0, d, kk = _dki_wlls_row(ys[i], ng, bs)  # NaN if the system cannot be solved
        inside = np.isfinite(s0) and 0.0 <= d <= d_max and 0.0 <= kk <= k_max
        if not inside:
            refit[i] = True
            params[i, 0] = s0 if (np.isfinite(s0) and s0 > 0.0) else ys[i, 0]
            params[i, 1] = min(max(d, 0.0), d_max) if np.isfinite(d) else 1e-3
            params[i, 2] = min(max(kk, 0.0), k_max) if np.isfinite(kk) else 0.5
            status[i] = _CONVERGED
            continue
        params[i, 0] = s0
        params[i, 1] = d
        params[i, 2] = kk
        status[i] = _CONVERGED
        rss[i] = _dki_row_rss_stderr(ys[i], ng, bs, s0, d, kk, stderr[i])


# no "nnan"/"ninf": the NaN/inf checks must survive optimisation
_FAST = {"reassoc", "contract", "nsz", "arcp"}


@nb.njit(parallel=True, cache=True, fastmath=_FAST, error_model="numpy")
def loglinear_block(y, logy, b, base_idx, weighted, adc_lo, adc_hi, params, stderr, rss, status):
    """Fused (weighted) log-linear mono-exponential fit of every row of ``y``.

    ``log y = log S0 - b ADC`` with weights ``y^2`` (``weighted``) or 1; samples ``<= 0`` get
    weight 0. ``logy`` holds ``log(y)`` (numpy's vectorised log, several times faster than a
    scalar log here; its values at samples ``<= 0`` are ignored). A voxel with a NaN/inf or negative value,
    or a non-positive mean over ``base_idx`` (the lowest b), gets status INVALID_INPUT and NaN.
    ADC is clipped to ``[adc_lo, adc_hi]`` (status AT_BOUND). ``rss`` is the weighted
    log-domain objective (with ``y^2`` weights it approximates the signal RSS).
    Works for float32 and float64 ``y``; sums are accumulated in float64. Branch-free body
    (selects instead of ``continue``), 1.2-1.8x faster than the branching version.
    """
    n, m = y.shape
    for i in nb.prange(n):
        bad = False
        sw = 0.0
        swb = 0.0
        swbb = 0.0
        swl = 0.0
        swbl = 0.0
        npos = 0
        for k in range(m):
            v = np.float64(y[i, k])
            bad |= not (v >= 0.0) or v == np.inf
            w = v * v if weighted else 1.0
            w = w if v > 0.0 else 0.0
            npos += 1 if v > 0.0 else 0
            lv = np.float64(logy[i, k]) if v > 0.0 else 0.0  # log 0 = -inf, 0 * -inf = NaN
            bk = b[k]
            wb = w * bk
            sw += w
            swb += wb
            swbb += wb * bk
            swl += w * lv
            swbl += wb * lv
        base = 0.0
        for j in range(base_idx.shape[0]):
            base += np.float64(y[i, base_idx[j]])
        det = sw * swbb - swb * swb
        slope = (sw * swbl - swb * swl) / det
        icpt = (swl - slope * swb) / sw
        r = 0.0
        for k in range(m):
            v = np.float64(y[i, k])
            w = v * v if weighted else 1.0
            w = w if v > 0.0 else 0.0
            lv = np.float64(logy[i, k]) if v > 0.0 else 0.0
            e = lv - icpt - slope * b[k]
            r += w * e * e
        adc = min(max(-slope, adc_lo), adc_hi)
        st = _CONVERGED if adc == -slope else _AT_BOUND
        if bad or not (base > 0.0):
            st = _INVALID
        elif npos < 2 or not (det > 0.0) or not np.isfinite(slope):
            st = _FAILED
        ok = st < _INVALID
        s0 = np.exp(icpt)
        s2 = r / (npos - 2) if npos > 2 else np.nan
        params[i, 0] = s0 if ok else np.nan
        params[i, 1] = adc if ok else np.nan
        rss[i] = r if ok else np.nan
        status[i] = st
        stderr[i, 0] = s0 * np.sqrt(s2 * swbb / det) if ok else np.nan
        stderr[i, 1] = np.sqrt(s2 * sw / det) if ok else np.nan


@nb.njit(
    types.void(
        types.float64[:, ::1],
        types.float64[::1],
        types.float64[::1],
        types.float64[:, ::1],
        types.float64[::1],
        types.float64[:, ::1],
    ),
    parallel=True,
    cache=True,
)
def ivim_grid_init(y, b, d, e2_grid, dstar_grid, out):
    """IVIM start values: D given; for each grid D*, ``y ≈ a e^{-b D*} + c e^{-b D}`` with
    ``(a, c) >= 0`` by 2×2 least squares; keep the best. out[i] = (S0, D, f, D*)."""
    n, m = y.shape
    G = dstar_grid.shape[0]
    for i in nb.prange(n):
        e1 = np.empty(m)
        s11 = 0.0
        y1 = 0.0
        for k in range(m):
            e1[k] = np.exp(-b[k] * d[i])
            s11 += e1[k] * e1[k]
            y1 += y[i, k] * e1[k]
        best = np.inf
        bs0 = 0.0
        bf = 0.1
        bds = 0.02
        for g in range(G):
            s22 = 0.0
            s12 = 0.0
            y2 = 0.0
            for k in range(m):
                e2 = e2_grid[g, k]
                s22 += e2 * e2
                s12 += e1[k] * e2
                y2 += y[i, k] * e2
            det = s11 * s22 - s12 * s12
            if not (det > 0.0):
                continue
            a = (s11 * y2 - s12 * y1) / det
            c = (s22 * y1 - s12 * y2) / det
            if a < 0.0:
                a = 0.0
                c = max(y1 / s11, 0.0)
            elif c < 0.0:
                c = 0.0
                a = max(y2 / s22, 0.0)
            r = 0.0
            for k in range(m):
                e = y[i, k] - a * e2_grid[g, k] - c * e1[k]
                r += e * e
            if r < best:
                best = r
                bs0 = a + c
                bf = a / (a + c) if a + c > 0.0 else 0.0
                bds = dstar_grid[g]
        out[i, 0] = bs0
        out[i, 1] = d[i]
        out[i, 2] = bf
        out[i, 3] = bds


# ---------------------------------------------------------------------- fused ADC fit
# Branch-free float64 log and exp built from bit operations and polynomials, so that LLVM
# vectorises the loops that call them (numba has no vector libm without Intel's SVML; a
# scalar libm call per sample would cost more than the whole fit).


def _f64_bits_typer(typingctx, x):
    """Reinterpret a float64 as int64 (no conversion)."""
    if x != types.float64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


def _bits_f64_typer(typingctx, x):
    """Reinterpret an int64 as float64 (no conversion)."""
    if x != types.int64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


_f64_bits: Any = intrinsic(_f64_bits_typer)
_bits_f64: Any = intrinsic(_bits_f64_typer)


_LN2_HI = 0.6931471803691238  # ln 2 split so that n * _LN2_HI is exact for |n| < 2**21
_LN2_LO = 1.9082149292705877e-10


#: Coefficients, highest power first: ``2 atanh(f) / (2 f) = sum f^(2k) / (2k + 1)`` to
#: ``f^16`` (:func:`_log_pos`), and ``exp(r) = sum r^k / k!`` to ``r^13`` (:func:`_exp`).
_LOG_SERIES = tuple(1.0 / k for k in (17.0, 15.0, 13.0, 11.0, 9.0, 7.0, 5.0, 3.0, 1.0))
_EXP_SERIES = tuple(1.0 / math.factorial(k) for k in range(13, -1, -1))


@nb.njit(inline="always", fastmath={"contract"})
def _horner(coefs, x):
    """``coefs[0] x^(n-1) + ... + coefs[n-1]`` by Horner's rule (``p = p x + c``)."""
    p = coefs[0]
    for i in range(1, len(coefs)):
        p = p * x + coefs[i]
    return p


@nb.njit(inline="always", fastmath={"contract"})
def _log_pos(x):
    """log(x) for finite ``x > 0`` (any other input: a meaningless finite or NaN value).

    ``x = 2^e m`` with ``m`` in ``[sqrt(1/2), sqrt(2))``; ``log m = 2 atanh(f)``,
    ``f = (m - 1) / (m + 1)``, ``|f| <= 0.172``, by its series to ``f^17`` (truncation
    below 4e-16). Measured error <= 1 ulp against numpy's log over 1e-308 .. 1e308.
    """
    small = x < 2.2250738585072014e-308  # subnormal: scale by 2^54 first
    x = x * 18014398509481984.0 if small else x
    bits = _f64_bits(x)
    e = (bits >> 52) - (1077 if small else 1023)
    mm = _bits_f64((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)  # mantissa in [1, 2)
    big = mm > 1.4142135623730951
    mm = mm * 0.5 if big else mm
    ef = np.float64(e + (1 if big else 0))
    f = (mm - 1.0) / (mm + 1.0)
    p = _horner(_LOG_SERIES, f * f)
    return ef * _LN2_HI + (ef * _LN2_LO + 2.0 * f * p)


@nb.njit(inline="always", fastmath={"contract"})
def _exp(x):
    """exp(x), branch-free: ``2^n exp(r)``, ``|r| <= ln2 / 2``, Taylor series to ``r^13``.

    ``x > 709.78`` gives inf; ``x < -708`` gives exp(-708) (~3e-308, 0 in float32); NaN gives
    a finite value (callers discard it). Measured error <= 1 ulp against numpy's exp.
    """
    over = x > 709.782712893384
    x = x if x < 709.0 else 709.0
    x = x if x > -708.0 else -708.0
    n = np.floor(x * 1.4426950408889634 + 0.5)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = _horner(_EXP_SERIES, r)
    scale = _bits_f64((np.int64(n) + 1023) << 52)
    return np.inf if over else p * scale


def _serial(kernel, name, **options):
    """A cached, GIL-free, single-threaded copy of a ``prange`` kernel (``prange`` runs as
    ``range``), for the engine's thread pool over blocks. The copy gets its own name so that
    its on-disk cache does not collide with the parallel version's."""
    import types as pytypes

    src = kernel.py_func
    fn = pytypes.FunctionType(
        src.__code__, src.__globals__, name, src.__defaults__, src.__closure__
    )
    fn.__qualname__ = name
    fn.__doc__ = src.__doc__
    return nb.njit(nogil=True, cache=True, **options)(fn)


loglinear_block_serial = _serial(
    loglinear_block, "loglinear_block_serial", fastmath=_FAST, error_model="numpy"
)
dki_wlls_block_serial = _serial(dki_wlls_block, "dki_wlls_block_serial")
ivim_grid_init_serial = _serial(ivim_grid_init, "ivim_grid_init_serial")
