"""Batched, bounded Levenberg–Marquardt.

All voxels of a block are iterated together: each voxel keeps its own damping ``lam`` and its
own convergence test, and leaves the active set as soon as it has converged. Two
implementations share one algorithm:

* :func:`levenberg_marquardt` with ``backend="numpy"`` takes vectorised Python callables
  ``fun(params (a, p)) -> (a, m)`` and ``jac(params (a, p)) -> (a, m, p)`` and works on the
  active voxels as arrays;
* ``backend="numba"`` takes a compiled per-voxel model function (see :mod:`._lm_numba`) and
  runs one voxel per iteration of a ``numba.prange`` loop (both cores), each voxel stopping on
  its own.

Algorithm (Marquardt 1963, doi:10.1137/0111030; bounds by projection with an active set, as in
Kanzow, Yamashita & Fukushima 2004, doi:10.1016/j.cam.2003.12.027):

1. ``r = y - f(p)``, ``g = J^T r``, ``H = J^T J``;
2. a parameter on its lower bound with ``g < 0`` (or on its upper bound with ``g > 0``) is
   frozen for this step;
3. solve ``(H + lam diag(H)) delta = g`` on the free parameters (Cholesky); the trial point is
   ``clip(p + delta, lower, upper)``;
4. accept if the residual sum of squares decreases (``lam /= 10``), otherwise ``lam *= 10``
   and retry (at most ``max_iter`` trials in total);
5. converged when an accepted step decreases the RSS by less than ``ftol * rss`` or moves every
   parameter by less than ``xtol * (|p| + scale)``, or when ``lam`` exceeds ``1e10`` (no
   descent is possible: a local minimum on the feasible set).

Standard errors at the solution are ``sqrt(diag((J^T J)^-1) * rss / (m - p))`` over the free
parameters (NaN when ``m <= p`` or ``J^T J`` is singular; a parameter on a bound gets its
unconstrained value, which is an approximation).

Status: :class:`~tumorscope.fitting.status.FitStatus` ``CONVERGED``, ``AT_BOUND`` (converged
with a parameter within ``1e-12 * scale`` of a bound), ``MAX_ITER`` or ``FAILED``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FitError
from .linear import _cholesky_solve
from .status import FitStatus
from .uncertainty import stderr_from_jacobian

__all__ = ["LMOptions", "LMResult", "levenberg_marquardt"]

_LAM0 = 1e-3
_LAM_MAX = 1e10
_LAM_MIN = 1e-12


@dataclass(frozen=True)
class LMOptions:
    """Solver tolerances.

    Parameters
    ----------
    max_iter : int, default 100
        Maximum number of trial steps per voxel (accepted or rejected).
    ftol : float, default 1e-8
        Relative decrease of the residual sum of squares below which an accepted step ends
        the fit.
    xtol : float, default 1e-8
        Relative parameter change below which an accepted step ends the fit.
    """

    max_iter: int = 100
    ftol: float = 1e-8
    xtol: float = 1e-8

    def __post_init__(self) -> None:
        if int(self.max_iter) < 1:
            raise FitError(f"must be >= 1, got {self.max_iter}", field="max_iter")
        for name in ("ftol", "xtol"):
            v = float(getattr(self, name))
            if not (np.isfinite(v) and v > 0):
                raise FitError(f"must be a positive number, got {v}", field=name)


@dataclass
class LMResult:
    """Result of a batched solve.

    Attributes
    ----------
    params : ndarray, shape (n, p)
    status : ndarray of uint8, shape (n,)
    rss : ndarray, shape (n,)
        Residual sum of squares at ``params``.
    stderr : ndarray, shape (n, p)
    n_iter : ndarray of int32, shape (n,)
        Trial steps used.
    """

    params: np.ndarray
    status: np.ndarray
    rss: np.ndarray
    stderr: np.ndarray
    n_iter: np.ndarray


def _as_bounds(b: Any, n: int, p: int, name: str) -> np.ndarray:
    arr = np.asarray(b, dtype=np.float64)
    if arr.shape == (p,):
        arr = np.broadcast_to(arr, (n, p))
    if arr.shape != (n, p):
        raise FitError(f"expected shape ({p},) or ({n}, {p}), got {arr.shape}", field=name)
    return np.array(arr, dtype=np.float64, order="C")  # writeable, contiguous copy


def levenberg_marquardt(
    y: np.ndarray,
    p0: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    fun: Callable[[np.ndarray], np.ndarray] | None = None,
    jac: Callable[[np.ndarray], np.ndarray] | None = None,
    kernel: Any = None,
    consts: np.ndarray | None = None,
    scale: np.ndarray | None = None,
    options: LMOptions | None = None,
    backend: str = "numpy",
) -> LMResult:
    """Fit every row of ``y`` by bounded Levenberg–Marquardt.

    Parameters
    ----------
    y : ndarray, shape (n, m)
        Measurements, one voxel per row (float64).
    p0 : ndarray, shape (n, p)
        Initial parameters (clipped into the bounds).
    lower, upper : array_like, shape (p,) or (n, p)
        Bounds (``-inf`` / ``inf`` allowed).
    fun, jac : callable, keyword-only
        Vectorised model and its analytic Jacobian (``backend="numpy"``):
        ``fun(params (a, p)) -> (a, m)``, ``jac(params (a, p)) -> (a, m, p)``.
    kernel : numba function, keyword-only
        Compiled per-voxel model ``kernel(p (p,), consts (k,), f_out (m,), J_out (m, p))``
        (``backend="numba"`` or ``"numba-serial"``); see :mod:`tumorscope.fitting._lm_numba`.
    consts : ndarray, shape (k,), keyword-only
        Constants passed to ``kernel`` (b-values, times, an AIF ...).
    scale : ndarray, shape (p,), keyword-only
        Typical magnitude of each parameter (used in the step-size test and the at-bound
        test). Default: 1.
    options : LMOptions, keyword-only
    backend : {"numpy", "numba", "numba-serial"}, keyword-only
        ``"numba"`` runs voxels in parallel over all cores (``prange``); ``"numba-serial"``
        runs them on the calling thread without the GIL (for use inside a thread pool).

    Returns
    -------
    LMResult

    Raises
    ------
    FitError
        Unknown backend, missing callables or inconsistent shapes.
    """
    opts = options or LMOptions()
    y = np.ascontiguousarray(y, dtype=np.float64)
    if y.ndim != 2:
        raise FitError(
            f"expected a 2-D block (voxels, measurements), got shape {y.shape}", field="y"
        )
    n, _m = y.shape
    p0 = np.asarray(p0, dtype=np.float64)
    if p0.ndim != 2 or p0.shape[0] != n:
        raise FitError(f"expected initial parameters of shape ({n}, p), got {p0.shape}", field="p0")
    p = p0.shape[1]
    lo = _as_bounds(lower, n, p, "lower")
    hi = _as_bounds(upper, n, p, "upper")
    if np.any(lo > hi):
        raise FitError("lower bound above upper bound", field="bounds")
    sc = np.ones(p) if scale is None else np.asarray(scale, dtype=np.float64).reshape(p)
    start = np.clip(p0, lo, hi)
    start = np.where(np.isfinite(start), start, np.where(np.isfinite(lo), lo, 0.0))
    if backend == "numpy":
        if fun is None or jac is None:
            raise FitError("backend 'numpy' needs fun= and jac=", field="backend")
        return _lm_numpy(fun, jac, y, start, lo, hi, sc, opts)
    if backend in ("numba", "numba-serial"):
        if kernel is None:
            raise FitError(f"backend {backend!r} needs kernel=", field="backend")
        from . import _lm_numba

        c = np.zeros(1) if consts is None else np.ascontiguousarray(consts, dtype=np.float64)
        return _lm_numba.run(
            kernel,
            c,
            y,
            start,
            np.ascontiguousarray(lo),
            np.ascontiguousarray(hi),
            sc,
            opts,
            parallel=backend == "numba",
        )
    raise FitError(
        f"unknown backend {backend!r}; expected one of 'numpy', 'numba', 'numba-serial'",
        field="backend",
    )


def _lm_numpy(
    fun: Callable[[np.ndarray], np.ndarray],
    jac: Callable[[np.ndarray], np.ndarray],
    y: np.ndarray,
    p: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    scale: np.ndarray,
    opts: LMOptions,
) -> LMResult:
    n, m = y.shape
    npar = p.shape[1]
    p = p.copy()
    f = np.asarray(fun(p), dtype=np.float64)
    rss = np.sum((y - f) ** 2, axis=1)
    lam = np.full(n, _LAM0)
    status = np.full(n, FitStatus.MAX_ITER, dtype=np.uint8)
    status[~np.isfinite(rss)] = FitStatus.FAILED
    n_iter = np.zeros(n, dtype=np.int32)
    active = np.flatnonzero(np.isfinite(rss) & (rss > 0))
    status[np.isfinite(rss) & (rss == 0)] = FitStatus.CONVERGED
    J = None
    need_jac = np.ones(n, dtype=bool)
    Jbuf = np.empty((n, m, npar))
    for _ in range(opts.max_iter):
        if active.size == 0:
            break
        upd = active[need_jac[active]]
        if upd.size:
            Jbuf[upd] = jac(p[upd])
            need_jac[upd] = False
        pa = p[active]
        Ja = Jbuf[active]
        r = y[active] - f[active]
        g = np.einsum("amp,am->ap", Ja, r)
        H = np.einsum("ami,amj->aij", Ja, Ja)
        frozen = ((pa <= lo[active]) & (g < 0)) | ((pa >= hi[active]) & (g > 0))
        diag = np.einsum("aii->ai", H).copy()
        damp = lam[active][:, None] * np.maximum(diag, 1e-30)
        A = H.copy()
        idx = np.arange(npar)
        A[:, idx, idx] += damp
        fz = frozen[:, :, None] | frozen[:, None, :]
        A[fz] = 0.0
        A[:, idx, idx] = np.where(frozen, 1.0, A[:, idx, idx])
        rhs = np.where(frozen, 0.0, g)
        delta, ok = _cholesky_solve(A, rhs)
        trial = np.clip(pa + np.where(ok[:, None], delta, 0.0), lo[active], hi[active])
        f_trial = np.asarray(fun(trial), dtype=np.float64)
        rss_trial = np.sum((y[active] - f_trial) ** 2, axis=1)
        n_iter[active] += 1
        accept = ok & np.isfinite(rss_trial) & (rss_trial < rss[active])
        acc = active[accept]
        old_rss = rss[acc]
        step = np.abs(trial[accept] - pa[accept])
        small_step = np.all(step <= opts.xtol * (np.abs(pa[accept]) + scale), axis=1)
        small_gain = (old_rss - rss_trial[accept]) <= opts.ftol * old_rss
        p[acc] = trial[accept]
        f[acc] = f_trial[accept]
        rss[acc] = rss_trial[accept]
        need_jac[acc] = True
        lam[acc] = np.maximum(lam[acc] / 10.0, _LAM_MIN)
        rej = active[~accept]
        lam[rej] *= 10.0
        done = np.zeros(n, dtype=bool)
        done[acc[small_step | small_gain | (rss_trial[accept] == 0)]] = True
        done[rej[lam[rej] > _LAM_MAX]] = True
        status[done] = FitStatus.CONVERGED
        active = active[~done[active]]
    # standard errors from the Jacobian at the solution
    stale = np.flatnonzero(need_jac & (status != FitStatus.FAILED))
    if stale.size:
        Jbuf[stale] = jac(p[stale])
    J = Jbuf
    stderr = stderr_from_jacobian(J, rss)
    at_bound = np.any((np.abs(p - lo) <= 1e-12 * scale) | (np.abs(hi - p) <= 1e-12 * scale), axis=1)
    status[(status == FitStatus.CONVERGED) & at_bound] = FitStatus.AT_BOUND
    bad = ~np.all(np.isfinite(p), axis=1) | ~np.isfinite(rss)
    status[bad] = FitStatus.FAILED
    return LMResult(p, status, rss, stderr, n_iter)
