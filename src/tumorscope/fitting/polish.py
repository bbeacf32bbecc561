"""Gauss–Newton polish of a search result (all voxels of a block at once).

A 1-D search (:func:`tumorscope.fitting.varpro.varpro_log`) locates the minimum to about
``sqrt(eps)`` relative (the residual is flat there); Gauss–Newton from that point converges
quadratically to full precision in one or two steps.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["gauss_newton_polish"]


def gauss_newton_polish(
    params: np.ndarray,
    y: np.ndarray,
    fun: Callable[[np.ndarray], np.ndarray],
    jac: Callable[[np.ndarray], np.ndarray],
    rss: np.ndarray,
    *,
    steps: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """A few Gauss–Newton steps, each kept only in the voxels where it lowers the RSS.

    The normal equations are solved with the Jacobian columns scaled to unit norm (a tiny
    ridge of 1e-12 keeps them solvable); voxels whose scaled ``JᵀJ`` is not finite or is
    numerically singular (determinant below 1e-14) are left where they are.

    Parameters
    ----------
    params : ndarray, shape (n, p)
        Starting parameters; must be finite.
    y : ndarray, shape (n, m)
    fun : callable
        ``fun(params (n, p)) -> (n, m)``, the model signal.
    jac : callable
        ``jac(params (n, p)) -> (n, m, p)``, its Jacobian.
    rss : ndarray, shape (n,)
        Residual sum of squares at ``params``.
    steps : int, keyword-only, default 2

    Returns
    -------
    params : ndarray, shape (n, p)
        A copy; never with a larger RSS than the start.
    rss : ndarray, shape (n,)
    """
    p = params.copy()
    r_best = rss.copy()
    n_par = p.shape[1]
    for _ in range(steps):
        J = jac(p)
        r = y - fun(p)
        H = np.einsum("nmi,nmj->nij", J, J)
        g = np.einsum("nmi,nm->ni", J, r)
        with np.errstate(all="ignore"):
            d = np.sqrt(np.einsum("nii->ni", H))
            d = np.where(d > 0, d, 1.0)
            Hs = H / (d[:, :, None] * d[:, None, :]) + 1e-12 * np.eye(n_par)
            good = np.all(np.isfinite(Hs), axis=(1, 2)) & np.all(np.isfinite(g), axis=1)
            good[good] &= np.linalg.det(Hs[good]) > 1e-14
            step = np.zeros_like(g)
            if good.any():
                step[good] = np.linalg.solve(Hs[good], (g / d)[good][..., None])[..., 0] / d[good]
            trial = p + step
            rt = np.sum((y - fun(trial)) ** 2, axis=1)
        better = good & np.isfinite(rt) & (rt < r_best) & np.all(np.isfinite(trial), axis=1)
        p[better] = trial[better]
        r_best[better] = rt[better]
    return p, r_best
