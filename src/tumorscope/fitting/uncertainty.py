"""Standard errors of least-squares estimates from the Jacobian at the solution.

For a model ``f(p)`` with ``p`` parameters fitted to ``m`` measurements, the asymptotic
covariance of the least-squares estimate is ``(JᵀJ)⁻¹ σ²`` with ``J`` the Jacobian at the
solution and the noise variance estimated as ``σ² = rss / (m - p)`` (``m - p`` degrees of
freedom, the unbiased estimate for a model that is linear near the solution). For weighted
least squares pass the weighted Jacobian and the weighted RSS (``sqrt(w) J``, ``Σ w r²``).

Two ways to invert ``JᵀJ``, one function:

- ``"cholesky"`` (default; the LM engine, DKI): a batched Cholesky solve; a voxel whose
  ``JᵀJ`` is not positive definite gets NaN.
- ``"scaled"`` (relaxometry): ``JᵀJ`` scaled to a unit diagonal, then inverted; a voxel whose
  scaled matrix has a condition number of 1e12 or more gets NaN. Parameters of very different
  size (an amplitude of 10³ beside a rate of 10⁻²) keep the problem well conditioned this way.

The two agree to rounding on well-conditioned voxels; each model keeps the one its maps were
validated with (changing it changes the last bits of the standard-error maps).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .linear import _cholesky_solve

__all__ = ["stderr_from_jacobian"]


def stderr_from_jacobian(
    J: np.ndarray, rss: np.ndarray, *, solver: Literal["cholesky", "scaled"] = "cholesky"
) -> np.ndarray:
    """``sqrt(diag((JᵀJ)⁻¹) · rss / (m - p))`` for every voxel of a batch.

    Parameters
    ----------
    J : ndarray, shape (n, m, p)
        Jacobian of the (weighted) model at the estimate, per voxel.
    rss : ndarray, shape (n,)
        (Weighted) residual sum of squares at the estimate (NaN gives NaN).
    solver : {"cholesky", "scaled"}, keyword-only, default "cholesky"
        How ``JᵀJ`` is inverted (see the module docstring).

    Returns
    -------
    ndarray, shape (n, p)
        Standard errors, with ``m - p`` degrees of freedom for the noise variance; NaN for
        every voxel when ``m <= p``, and for a voxel whose ``JᵀJ`` cannot be inverted by the
        chosen solver or whose ``rss`` is NaN.

    Examples
    --------
    >>> import numpy as np
    >>> J = np.ones((1, 4, 1))  # a constant fitted to 4 samples
    >>> stderr_from_jacobian(J, np.array([3.0]))  # sqrt(1/4 * 3/3)
    array([[0.5]])
    """
    n, m, p = J.shape
    if m <= p:
        return np.full((n, p), np.nan)
    H = np.einsum("nmi,nmj->nij", J, J)
    if solver == "cholesky":
        inv = _cholesky_inverse(H)
    elif solver == "scaled":
        inv = _scaled_inverse(H)
    else:
        raise ValueError(f"unknown solver {solver!r}; expected 'cholesky' or 'scaled'")
    with np.errstate(invalid="ignore"):
        var = np.einsum("nii->ni", inv) * (rss / (m - p))[:, None]
        return np.sqrt(np.where(var >= 0, var, np.nan))


def _cholesky_inverse(H: np.ndarray) -> np.ndarray:
    n, p, _ = H.shape
    inv = np.full_like(H, np.nan)
    eye = np.eye(p)
    for j in range(p):
        x, ok = _cholesky_solve(H, np.broadcast_to(eye[j], (n, p)).copy())
        inv[ok, :, j] = x[ok]
    return inv


def _scaled_inverse(H: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d = np.sqrt(np.einsum("nii->ni", H))
        d = np.where(d > 0, d, 1.0)
        Hs = H / (d[:, :, None] * d[:, None, :])
        ok = np.all(np.isfinite(Hs), axis=(1, 2))
        inv = np.full_like(H, np.nan)
        if ok.any():
            cond = np.linalg.cond(Hs[ok])
            good = np.flatnonzero(ok)[cond < 1e12]
            if good.size:
                inv[good] = np.linalg.inv(Hs[good]) / (d[good, :, None] * d[good, None, :])
    return inv
