"""Standard errors of least-squares parameters from the Jacobian at the solution."""

from __future__ import annotations

import numpy as np

__all__ = ["stderr_from_jacobian"]


def stderr_from_jacobian(J: np.ndarray, rss: np.ndarray) -> np.ndarray:
    """Asymptotic standard errors ``sqrt(diag((JᵀJ)⁻¹) · rss / (m - p))``, voxel by voxel.

    The residual variance is estimated with ``m - p`` degrees of freedom (``m`` measurements,
    ``p`` fitted parameters): ``s² = rss / (m - p)``, the unbiased estimate for a model that
    is linear near the solution. ``JᵀJ`` is inverted after scaling its rows and columns to a
    unit diagonal (so parameters of very different size do not spoil the conditioning).

    Parameters
    ----------
    J : ndarray, shape (n, m, p)
        Jacobian of the model signal with respect to the parameters at the solution.
    rss : ndarray, shape (n,)
        Residual sum of squares at the solution (NaN gives NaN).

    Returns
    -------
    ndarray, shape (n, p)
        NaN for every voxel when ``m <= p`` (no degrees of freedom left), and for voxels whose
        scaled ``JᵀJ`` is not finite or has a condition number of 1e12 or more.
    """
    n, m, p = J.shape
    if m <= p:
        return np.full((n, p), np.nan)
    H = np.einsum("nmi,nmj->nij", J, J)
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
        var = np.einsum("nii->ni", inv) * (rss / (m - p))[:, None]
        return np.sqrt(np.where(var >= 0, var, np.nan))
