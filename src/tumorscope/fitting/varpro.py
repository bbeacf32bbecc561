"""Variable projection over one non-linear parameter with linear amplitudes.

Models of the form ``y ≈ B(x) c`` (one non-linear parameter ``x``, one or two linear
coefficients ``c``) are solved exactly: for every ``x`` the coefficients are solved in closed
form (:func:`project`), so only the 1-D reduced residual ``rss(x)`` is searched
(:func:`varpro_log`; Golub & Pereyra, SIAM J Numer Anal 1973, doi:10.1137/0710036). All voxels
of a block are searched at once. The relaxometry models (VFA and inversion recovery T1, T2,
T2*) use it; finish with :func:`tumorscope.fitting.polish.gauss_newton_polish`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["project", "varpro_log"]

_GOLD = 0.5 * (np.sqrt(5.0) - 1.0)


def project(basis: np.ndarray, y: np.ndarray, *, nonneg: bool) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form linear coefficients and residual of ``y ≈ basis @ c``, voxel by voxel.

    Parameters
    ----------
    basis : ndarray, shape (n, m, q), q in {1, 2}
        The columns of the linear model of every voxel.
    y : ndarray, shape (n, m)
    nonneg : bool, keyword-only
        Constrain the first coefficient (the amplitude) to be >= 0: exactly for ``q = 1``; for
        ``q = 2`` by falling back to the best fit of the second column alone.

    Returns
    -------
    coef : ndarray, shape (n, q)
        Zero where the basis is degenerate.
    rss : ndarray, shape (n,)
        Residual sum of squares (>= 0).
    """
    yy = np.einsum("nm,nm->n", y, y)
    f = basis[..., 0]
    ff = np.einsum("nm,nm->n", f, f)
    fy = np.einsum("nm,nm->n", f, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        if basis.shape[-1] == 1:
            c = np.where(ff > 0, fy / ff, 0.0)
            if nonneg:
                c = np.maximum(c, 0.0)
            rss = yy - 2 * c * fy + c * c * ff
            return c[:, None], np.maximum(rss, 0.0)
        g = basis[..., 1]
        gg = np.einsum("nm,nm->n", g, g)
        fg = np.einsum("nm,nm->n", f, g)
        gy = np.einsum("nm,nm->n", g, y)
        det = ff * gg - fg * fg
        ok = det > 1e-12 * np.maximum(ff * gg, 1e-300)
        c0 = np.where(ok, (gg * fy - fg * gy) / np.where(ok, det, 1.0), 0.0)
        c1 = np.where(ok, (ff * gy - fg * fy) / np.where(ok, det, 1.0), 0.0)
        if nonneg:
            bad = c0 < 0
            c0 = np.where(bad, 0.0, c0)
            c1 = np.where(bad, np.where(gg > 0, gy / gg, 0.0), c1)
        r = y - c0[:, None] * f - c1[:, None] * g
        rss = np.einsum("nm,nm->n", r, r)
    return np.stack([c0, c1], axis=1), rss


def varpro_log(
    basis_fn: Callable[[np.ndarray], np.ndarray],
    y: np.ndarray,
    lo: float,
    hi: float,
    *,
    nonneg: bool = True,
    n_grid: int = 48,
    n_golden: int = 24,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Least squares over one non-linear parameter ``x`` in ``[lo, hi]`` with linear amplitudes.

    ``y ≈ B(x) c``: the coefficients ``c`` are solved in closed form for every ``x``
    (:func:`project`), and the reduced residual ``rss(x)`` is searched: a log-spaced grid of
    ``n_grid`` points finds the basin (global, no starting value needed), then golden-section
    search (Kiefer 1953, doi:10.2307/2032161) narrows the bracket around the best grid point
    by ``0.618**n_golden`` (1e-5 of the bracket, about 4e-6 relative in ``x``, with the
    defaults). The result is never worse than the best grid point. Finish with
    :func:`tumorscope.fitting.polish.gauss_newton_polish` (Gauss–Newton converges
    quadratically from there).

    Parameters
    ----------
    basis_fn : callable
        ``basis_fn(x (n,)) -> (n, m, q)``, q in {1, 2}.
    y : ndarray, shape (n, m)
    lo, hi : float
        Search interval of ``x`` (both > 0).
    nonneg : bool, keyword-only, default True
        Amplitude (first coefficient) >= 0 (see :func:`project`).
    n_grid, n_golden : int, keyword-only
        Grid points and golden-section steps.

    Returns
    -------
    x : ndarray, shape (n,)
    coef : ndarray, shape (n, q)
    rss : ndarray, shape (n,)
    at_bound : ndarray of bool, shape (n,)
        The best grid point was the first or last (the optimum may lie beyond the bounds).
    """
    n = y.shape[0]
    grid = np.linspace(np.log(lo), np.log(hi), n_grid)
    best = np.full(n, np.inf)
    k = np.zeros(n, dtype=np.int64)
    for g, th in enumerate(grid):
        _, r = project(basis_fn(np.full(n, np.exp(th))), y, nonneg=nonneg)
        better = r < best
        best = np.where(better, r, best)
        k = np.where(better, g, k)
    at_bound = (k == 0) | (k == n_grid - 1)
    kc = np.clip(k, 1, n_grid - 2)
    a, b = grid[kc - 1], grid[kc + 1]
    c = b - _GOLD * (b - a)
    d = a + _GOLD * (b - a)

    def rss_at(th: np.ndarray) -> np.ndarray:
        return project(basis_fn(np.exp(th)), y, nonneg=nonneg)[1]

    fc, fd = rss_at(c), rss_at(d)
    for _ in range(n_golden):
        left = fc < fd  # minimum in [a, d]
        b = np.where(left, d, b)
        a = np.where(left, a, c)
        new_c = b - _GOLD * (b - a)
        new_d = a + _GOLD * (b - a)
        # reuse the surviving interior point, evaluate the other one
        th_new = np.where(left, new_c, new_d)
        f_new = rss_at(th_new)
        fd, fc = np.where(left, fc, f_new), np.where(left, f_new, fd)
        c, d = new_c, new_d
    th = 0.5 * (a + b)
    x = np.exp(th)
    coef, rss = project(basis_fn(x), y, nonneg=nonneg)
    # never worse than the best grid point
    worse = rss > best
    if worse.any():
        xg = np.exp(grid[k])
        cg, rg = project(basis_fn(xg), y, nonneg=nonneg)
        x = np.where(worse, xg, x)
        coef = np.where(worse[:, None], cg, coef)
        rss = np.where(worse, rg, rss)
    return x, coef, rss, at_bound
