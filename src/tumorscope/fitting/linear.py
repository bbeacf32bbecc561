"""Batched (weighted) linear least squares over ``(n_voxels, n_measurements)`` blocks.

Solves, for every voxel ``i``, ``min_c sum_k w_ik (y_ik - (A c)_k)^2`` with one design matrix
``A`` (m, p) shared by all voxels and per-voxel weights. The normal equations
``(A^T W_i A) c_i = A^T W_i y_i`` are formed for all voxels with two matrix products
(``w @ (A_j * A_k)`` and ``(w * y) @ A``) and solved by a batched Cholesky factorisation, so
the cost is a few BLAS calls whatever the number of voxels.

Used for log-linear fits such as the mono-exponential ADC (weights ``S^2``, which make the
log-transformed problem approximate the original least squares; Salvador et al. 2005,
doi:10.1002/hbm.20076; Veraart et al. 2013, doi:10.1016/j.neuroimage.2013.05.028).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FitError

__all__ = ["LinearResult", "weighted_lls"]


def _cholesky_solve(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve a batch of small SPD systems ``a x = b``; ``ok`` is False where not SPD.

    a : (n, p, p), b : (n, p). Plain loops over ``p`` (small) with vector ops over ``n``.
    """
    n, p, _ = a.shape
    L = np.zeros_like(a)
    ok = np.ones(n, dtype=bool)
    for j in range(p):
        d = a[:, j, j] - np.einsum("nk,nk->n", L[:, j, :j], L[:, j, :j])
        ok &= d > 0
        dj = np.sqrt(np.where(d > 0, d, 1.0))
        L[:, j, j] = dj
        for i in range(j + 1, p):
            L[:, i, j] = (a[:, i, j] - np.einsum("nk,nk->n", L[:, i, :j], L[:, j, :j])) / dj
    z = np.empty_like(b)
    for i in range(p):
        z[:, i] = (b[:, i] - np.einsum("nk,nk->n", L[:, i, :i], z[:, :i])) / L[:, i, i]
    x = np.empty_like(b)
    for i in range(p - 1, -1, -1):
        x[:, i] = (z[:, i] - np.einsum("nk,nk->n", L[:, i + 1 :, i], x[:, i + 1 :])) / L[:, i, i]
    return x, ok


@dataclass
class LinearResult:
    """Coefficients of a batched linear fit.

    Attributes
    ----------
    coef : ndarray, shape (n, p)
        NaN where the (weighted) normal matrix is singular.
    rss : ndarray, shape (n,)
        Weighted residual sum of squares.
    stderr : ndarray, shape (n, p)
        ``sqrt(diag((A^T W A)^-1) * rss / (m - p))``; NaN when ``m <= p``.
    ok : ndarray of bool, shape (n,)
        False where the normal matrix was singular.
    """

    coef: np.ndarray
    rss: np.ndarray
    stderr: np.ndarray
    ok: np.ndarray


def weighted_lls(
    design: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None
) -> LinearResult:
    """Solve many weighted linear least-squares problems sharing one design matrix.

    Parameters
    ----------
    design : ndarray, shape (m, p)
        Design matrix ``A``.
    y : ndarray, shape (n, m)
        Observations, one voxel per row.
    weights : ndarray, shape (n, m) or (m,), optional
        Non-negative weights (inverse variances). Default: ordinary least squares.

    Returns
    -------
    LinearResult

    Raises
    ------
    FitError
        If the shapes disagree or a weight is negative.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.c_[np.ones(3), [0.0, 1.0, 2.0]]
    >>> weighted_lls(A, np.array([[1.0, 3.0, 5.0]])).coef
    array([[1., 2.]])
    """
    A = np.asarray(design, dtype=np.float64)
    Y = np.asarray(y, dtype=np.float64)
    if A.ndim != 2 or Y.ndim != 2 or Y.shape[1] != A.shape[0]:
        raise FitError(
            f"design {A.shape} and data {Y.shape} disagree: expected (m, p) and (n, m)",
            field="design",
        )
    n, m = Y.shape
    p = A.shape[1]
    if weights is None:
        W = None
    else:
        W = np.asarray(weights, dtype=np.float64)
        if W.shape == (m,):
            W = np.broadcast_to(W, (n, m))
        if W.shape != (n, m):
            raise FitError(f"expected weights of shape ({n}, {m}), got {W.shape}", field="weights")
        if np.any(W < 0):
            raise FitError("weights must be >= 0", field="weights")
    outer = (A[:, :, None] * A[:, None, :]).reshape(m, p * p)
    if W is None:
        N = np.broadcast_to((np.ones((1, m)) @ outer).reshape(1, p, p), (n, p, p)).copy()
        rhs = Y @ A
    else:
        N = (W @ outer).reshape(n, p, p)
        rhs = (W * Y) @ A
    coef, ok = _cholesky_solve(N, rhs)
    coef[~ok] = np.nan
    res = Y - coef @ A.T
    rss = np.sum(res * res if W is None else W * res * res, axis=1)
    if m > p:
        var = np.full((n, p), np.nan)
        eye = np.eye(p)
        for j in range(p):
            x, okj = _cholesky_solve(N, np.broadcast_to(eye[j], (n, p)).copy())
            var[okj, j] = x[okj, j]
        with np.errstate(invalid="ignore"):
            stderr = np.sqrt(var * (rss / (m - p))[:, None])
    else:
        stderr = np.full((n, p), np.nan)
    return LinearResult(coef, rss, stderr, ok)
