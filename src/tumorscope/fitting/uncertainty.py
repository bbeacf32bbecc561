"""Standard errors of least-squares estimates from the Jacobian at the solution.

For a model ``f(p)`` with ``p`` parameters fitted to ``m`` measurements, the asymptotic
covariance of the least-squares estimate is ``(JᵀJ)⁻¹ σ²`` with ``J`` the Jacobian at the
solution and the noise variance estimated as ``σ² = rss / (m - p)`` (``m - p`` degrees of
freedom). For weighted least squares pass the weighted Jacobian and the weighted RSS
(``sqrt(w) J``, ``Σ w r²``).
"""

from __future__ import annotations

import numpy as np

from .linear import _cholesky_solve

__all__ = ["stderr_from_jacobian"]


def stderr_from_jacobian(J: np.ndarray, rss: np.ndarray) -> np.ndarray:
    """``sqrt(diag((JᵀJ)⁻¹) · rss / (m - p))`` for every voxel of a batch.

    Parameters
    ----------
    J : ndarray, shape (n, m, p)
        Jacobian of the (weighted) model at the estimate, per voxel.
    rss : ndarray, shape (n,)
        (Weighted) residual sum of squares at the estimate.

    Returns
    -------
    ndarray, shape (n, p)
        Standard errors, with ``m - p`` degrees of freedom for the noise variance; NaN for
        every voxel when ``m <= p``, and for a voxel whose ``JᵀJ`` is not positive definite
        (batched Cholesky) or whose ``rss`` is NaN.

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
    inv = np.full_like(H, np.nan)
    eye = np.eye(p)
    for j in range(p):
        x, ok = _cholesky_solve(H, np.broadcast_to(eye[j], (n, p)).copy())
        inv[ok, :, j] = x[ok]
    var = np.einsum("nii->ni", inv) * (rss / (m - p))[:, None]
    with np.errstate(invalid="ignore"):
        return np.sqrt(np.where(var >= 0, var, np.nan))
