"""Compiled (numba) bounded Levenberg–Marquardt, one voxel per loop iteration.

The algorithm is the one documented in :mod:`tumorscope.fitting.lm`. A model supplies a
per-voxel function with the signature :data:`MODEL_SIGNATURE`::

    @numba.njit(MODEL_SIGNATURE, cache=True)
    def my_model(p, consts, f_out, J_out):
        # p: (n_params,), consts: (k,) anything the model needs (b-values, times, AIF ...)
        # f_out: (m,) model signal, J_out: (m, n_params) d f / d p
        ...

The drivers take it as a first-class function value (:data:`MODEL_TYPE`), so they are
compiled once and cached on disk for every model (no per-model compilation of the solver).
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import types

from .status import FitStatus

__all__ = ["MODEL_SIGNATURE", "MODEL_TYPE", "run"]

#: Signature every compiled model function must have.
MODEL_SIGNATURE = types.void(
    types.float64[::1], types.float64[::1], types.float64[::1], types.float64[:, ::1]
)
#: The type of such a function when passed to the solver.
MODEL_TYPE = types.FunctionType(MODEL_SIGNATURE)

_CONVERGED = np.uint8(FitStatus.CONVERGED)
_MAX_ITER = np.uint8(FitStatus.MAX_ITER)
_AT_BOUND = np.uint8(FitStatus.AT_BOUND)
_FAILED = np.uint8(FitStatus.FAILED)

_VOXEL_SIG = types.void(
    MODEL_TYPE,
    types.float64[::1],  # consts
    types.float64[::1],  # y (m,)
    types.float64[::1],  # p (P,) in: start, out: solution
    types.float64[::1],  # lo
    types.float64[::1],  # hi
    types.float64[::1],  # scale
    types.int64,  # max_iter
    types.float64,  # ftol
    types.float64,  # xtol
    types.uint8[::1],  # status out (length 1 view)
    types.float64[::1],  # rss out (length 1)
    types.float64[::1],  # stderr out (P,)
    types.int32[::1],  # n_iter out (length 1)
)


@nb.njit(cache=True, inline="always")
def _chol_solve(A, b, x, L, P):
    for j in range(P):
        s = A[j, j]
        for k in range(j):
            s -= L[j, k] * L[j, k]
        if not (s > 0.0):
            return False
        d = np.sqrt(s)
        L[j, j] = d
        for i in range(j + 1, P):
            t = A[i, j]
            for k in range(j):
                t -= L[i, k] * L[j, k]
            L[i, j] = t / d
    for i in range(P):
        t = b[i]
        for k in range(i):
            t -= L[i, k] * x[k]
        x[i] = t / L[i, i]
    for i in range(P - 1, -1, -1):
        t = x[i]
        for k in range(i + 1, P):
            t -= L[k, i] * x[k]
        x[i] = t / L[i, i]
    return True


@nb.njit(cache=True, inline="always")
def _jtj(J, H, m, P):
    """``H = JᵀJ`` of the ``(m, P)`` Jacobian (both triangles written)."""
    for i in range(P):
        for j in range(i + 1):
            h = 0.0
            for k in range(m):
                h += J[k, i] * J[k, j]
            H[i, j] = h
            H[j, i] = h


@nb.njit(_VOXEL_SIG, cache=True, nogil=True)
def _lm_voxel(fn, consts, y, p, lo, hi, scale, max_iter, ftol, xtol, st, rss_out, se, nit):
    m = y.shape[0]
    P = p.shape[0]
    f = np.empty(m)
    J = np.empty((m, P))
    ft = np.empty(m)
    Jt = np.empty((m, P))
    pt = np.empty(P)
    g = np.empty(P)
    H = np.empty((P, P))
    A = np.empty((P, P))
    L = np.zeros((P, P))
    delta = np.empty(P)
    frozen = np.zeros(P, dtype=np.bool_)
    fn(p, consts, f, J)
    rss = 0.0
    for k in range(m):
        rss += (y[k] - f[k]) ** 2
    status = _MAX_ITER
    lam = 1e-3
    it = 0
    if not np.isfinite(rss):
        status = _FAILED
    elif rss == 0.0:
        status = _CONVERGED
    else:
        build = True
        while it < max_iter:
            if build:
                _jtj(J, H, m, P)
                for i in range(P):
                    s = 0.0
                    for k in range(m):
                        s += J[k, i] * (y[k] - f[k])
                    g[i] = s
                    frozen[i] = (p[i] <= lo[i] and g[i] < 0.0) or (p[i] >= hi[i] and g[i] > 0.0)
                build = False
            for i in range(P):
                for j in range(P):
                    A[i, j] = 0.0 if (frozen[i] or frozen[j]) else H[i, j]
                if frozen[i]:
                    A[i, i] = 1.0
                    pt[i] = 0.0
                else:
                    A[i, i] += lam * max(H[i, i], 1e-30)
                    pt[i] = g[i]
            it += 1
            ok = _chol_solve(A, pt, delta, L, P)
            if ok:
                for i in range(P):
                    v = p[i] + delta[i]
                    if v < lo[i]:
                        v = lo[i]
                    elif v > hi[i]:
                        v = hi[i]
                    pt[i] = v
                fn(pt, consts, ft, Jt)
                rss_t = 0.0
                for k in range(m):
                    rss_t += (y[k] - ft[k]) ** 2
            else:
                rss_t = np.inf
            if ok and np.isfinite(rss_t) and rss_t < rss:
                small_step = True
                for i in range(P):
                    if abs(pt[i] - p[i]) > xtol * (abs(p[i]) + scale[i]):
                        small_step = False
                small_gain = (rss - rss_t) <= ftol * rss
                for i in range(P):
                    p[i] = pt[i]
                for k in range(m):
                    f[k] = ft[k]
                    for i in range(P):
                        J[k, i] = Jt[k, i]
                rss = rss_t
                lam = max(lam / 10.0, 1e-12)
                build = True
                if small_step or small_gain or rss == 0.0:
                    status = _CONVERGED
                    break
            else:
                lam *= 10.0
                if lam > 1e10:
                    status = _CONVERGED
                    break
    # standard errors from J at the solution
    for i in range(P):
        se[i] = np.nan
    if m > P and np.isfinite(rss):
        _jtj(J, H, m, P)
        s2 = rss / (m - P)
        for j in range(P):
            for i in range(P):
                g[i] = 1.0 if i == j else 0.0
            if _chol_solve(H, g, delta, L, P):
                v = delta[j] * s2
                se[j] = np.sqrt(v) if v >= 0.0 else np.nan
    finite = np.isfinite(rss)
    for i in range(P):
        if not np.isfinite(p[i]):
            finite = False
    if not finite:
        status = _FAILED
    elif status == _CONVERGED:
        for i in range(P):
            if abs(p[i] - lo[i]) <= 1e-12 * scale[i] or abs(hi[i] - p[i]) <= 1e-12 * scale[i]:
                status = _AT_BOUND
    st[0] = status
    rss_out[0] = rss
    nit[0] = it


_DRIVER_SIG = types.void(
    MODEL_TYPE,
    types.float64[::1],
    types.float64[:, ::1],
    types.float64[:, ::1],
    types.float64[:, ::1],
    types.float64[:, ::1],
    types.float64[::1],
    types.int64,
    types.float64,
    types.float64,
    types.uint8[::1],
    types.float64[::1],
    types.float64[:, ::1],
    types.int32[::1],
)


@nb.njit(cache=True, inline="always")
def _lm_at(fn, consts, v, y, p, lo, hi, scale, max_iter, ftol, xtol, st, rss, se, nit):
    """:func:`_lm_voxel` on voxel ``v`` of a block: its rows, and its one-element output views."""
    _lm_voxel(
        fn,
        consts,
        y[v],
        p[v],
        lo[v],
        hi[v],
        scale,
        max_iter,
        ftol,
        xtol,
        st[v : v + 1],
        rss[v : v + 1],
        se[v],
        nit[v : v + 1],
    )


@nb.njit(_DRIVER_SIG, parallel=True, cache=True)
def _drive_parallel(fn, consts, y, p, lo, hi, scale, max_iter, ftol, xtol, st, rss, se, nit):
    for v in nb.prange(y.shape[0]):
        _lm_at(fn, consts, v, y, p, lo, hi, scale, max_iter, ftol, xtol, st, rss, se, nit)


@nb.njit(_DRIVER_SIG, cache=True, nogil=True)
def _drive_serial(fn, consts, y, p, lo, hi, scale, max_iter, ftol, xtol, st, rss, se, nit):
    for v in range(y.shape[0]):
        _lm_at(fn, consts, v, y, p, lo, hi, scale, max_iter, ftol, xtol, st, rss, se, nit)


def run(kernel, consts, y, p0, lo, hi, scale, opts, *, parallel):
    """Run the compiled solver; see :func:`tumorscope.fitting.lm.levenberg_marquardt`."""
    from .lm import LMResult

    n, p = p0.shape
    params = np.ascontiguousarray(p0, dtype=np.float64).copy()
    status = np.empty(n, dtype=np.uint8)
    rss = np.empty(n)
    stderr = np.empty((n, p))
    n_iter = np.empty(n, dtype=np.int32)
    drive = _drive_parallel if parallel else _drive_serial
    drive(
        kernel,
        consts,
        y,
        params,
        lo,
        hi,
        np.ascontiguousarray(scale, dtype=np.float64),
        int(opts.max_iter),
        float(opts.ftol),
        float(opts.xtol),
        status,
        rss,
        stderr,
        n_iter,
    )
    return LMResult(params, status, rss, stderr, n_iter)
