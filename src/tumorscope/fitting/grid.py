"""Grid-search initial guesses with a linear amplitude.

Many MR signal models are ``S = A * s(theta)`` with a linear amplitude ``A`` (S0, M0) and a few
non-linear parameters ``theta``. For a grid of ``G`` candidate ``theta``, the best amplitude of
each voxel is closed-form, ``A_g = <y, s_g> / <s_g, s_g>``, and the residual is
``|y|^2 - <y, s_g>^2 / |s_g|^2``; the best grid point maximises ``<y, s_g>^2 / |s_g|^2`` with
``A_g >= 0``. One matrix product ``y @ S^T`` (n, G) scores every voxel against every grid point
(variable projection, Golub & Pereyra 1973, doi:10.1137/0710036).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import FitError

__all__ = ["grid_search", "product_grid"]


def product_grid(*axes: np.ndarray) -> np.ndarray:
    """All combinations of the given 1-D axes, shape (prod(len), len(axes))."""
    mesh = np.meshgrid(*[np.asarray(a, dtype=float) for a in axes], indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


def grid_search(
    shape_fn: Callable[[np.ndarray], np.ndarray],
    y: np.ndarray,
    grid: np.ndarray,
    *,
    amplitude_index: int = 0,
) -> np.ndarray:
    """Best grid point per voxel, with the amplitude solved in closed form.

    Parameters
    ----------
    shape_fn : callable
        ``shape_fn(theta (G, q)) -> (G, m)``: unit-amplitude signals of the grid points.
    y : ndarray, shape (n, m)
    grid : ndarray, shape (G, q)
        Candidate non-linear parameters.
    amplitude_index : int, keyword-only
        Position of the amplitude in the returned parameter vector.

    Returns
    -------
    ndarray, shape (n, q + 1)
        Parameters with the amplitude inserted at ``amplitude_index``.

    Examples
    --------
    >>> import numpy as np
    >>> b = np.array([0.0, 500.0, 1000.0])
    >>> y = 2.0 * np.exp(-b * 1e-3)[None]
    >>> grid_search(lambda th: np.exp(-np.outer(th[:, 0], b)), y, np.array([[5e-4], [1e-3]]))
    array([[2.   , 0.001]])
    """
    Y = np.asarray(y, dtype=np.float64)
    G = np.asarray(grid, dtype=np.float64)
    if G.ndim != 2:
        raise FitError(f"grid must be 2-D (points, parameters), got shape {G.shape}", field="grid")
    S = np.asarray(shape_fn(G), dtype=np.float64)
    if S.shape != (G.shape[0], Y.shape[1]):
        raise FitError(
            f"shape_fn returned {S.shape}, expected ({G.shape[0]}, {Y.shape[1]})", field="grid"
        )
    norm2 = np.sum(S * S, axis=1)
    norm2 = np.where(norm2 > 0, norm2, np.inf)
    proj = Y @ S.T  # (n, G)
    score = np.where(proj > 0, proj * proj / norm2, -np.inf)
    best = np.argmax(score, axis=1)
    amp = np.maximum(proj[np.arange(Y.shape[0]), best] / norm2[best], 0.0)
    return np.insert(G[best], amplitude_index, amp, axis=1)
