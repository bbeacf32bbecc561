"""Rician noise level of multi-echo magnitude data: from the background, or from the decays.

Used by :meth:`tumorscope.models.relaxometry.T2Star.estimate_noise` (which documents the
procedure and when each method applies); a σ measured elsewhere is always better.
"""

from __future__ import annotations

import numpy as np

from ...fitting.lm import LMOptions, levenberg_marquardt
from ...fitting.status import FitStatus
from .equations import (
    monoexp_jacobian,
    monoexp_signal,
    rician_mean,
    rician_mean_derivative,
    t2star_rician_signal,
)

__all__ = ["background_sigma", "background_sigma_rows", "decay_sigma", "valid_rows"]


def background_sigma(y: np.ndarray) -> float | None:
    """σ from the signal-free voxels of ``y (n, m)``, or None if there are too few.

    Starting from the 5 % quantile of the first echo read as a Rayleigh quantile, voxels whose
    first echo is below ``3σ`` are selected and σ is re-estimated by Rayleigh maximum
    likelihood, ``σ² = mean(M²)/2``, over their *later* echoes (the selection truncates only
    the first), until it settles. The selection is accepted only if it holds at least 2 % of
    the voxels (and 50) and its mean magnitude does not decay across the later echoes (within
    10 %): tissue decays, noise does not (Gudbjartsson & Patz 1995,
    doi:10.1002/mrm.1910340618).

    Parameters
    ----------
    y : ndarray, shape (n, m)
        Finite, non-negative magnitudes, echoes on the last axis.
    """
    return background_sigma_rows(y, None)


def valid_rows(flat: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    """Rows of ``flat (n, m)`` (within ``keep``) whose values are all finite and >= 0, one
    echo (a column) at a time: no copy of the rows, no float64 temporary of the series."""
    ok = np.ones(flat.shape[0], dtype=bool) if keep is None else np.array(keep, dtype=bool)
    for k in range(flat.shape[1]):
        col = flat[:, k]
        if col.dtype.kind == "f":
            ok &= np.isfinite(col)
        ok &= col >= 0
    return ok


def background_sigma_rows(flat: np.ndarray, rows: np.ndarray | None) -> float | None:
    """:func:`background_sigma` of the rows ``flat[rows]`` (all rows if None), read one echo
    (a column) at a time: ``flat`` can be a view of a Fortran-ordered series (a NIfTI volume's
    ``data.reshape(-1, m, order="F")``, whose echoes are contiguous), in any number type.

    The Rayleigh estimate over the selection needs each voxel's sum of squares over the later
    echoes, computed once (float64) instead of gathering the selected rows at every step.
    """
    n_all, m = flat.shape
    idx = None if rows is None else np.flatnonzero(rows)
    n = n_all if idx is None else idx.size
    if n < 200 or m < 3:
        return None

    def col(k: int) -> np.ndarray:
        c = flat[:, k] if idx is None else flat[idx, k]
        return np.asarray(c, dtype=np.float64)

    m1 = col(0)
    ss = np.zeros(n)
    for k in range(1, m):
        c = col(k)
        ss += c * c
    q = 0.05
    s = float(np.quantile(m1, q)) / float(np.sqrt(-2.0 * np.log(1.0 - q)))
    if not s > 0:
        return None
    sel = np.zeros(n, dtype=bool)
    for _ in range(20):
        sel = m1 < 3.0 * s
        count = int(sel.sum())
        if count < max(50, 0.02 * n):
            return None
        s_new = float(np.sqrt(ss[sel].sum() / (count * (m - 1)) / 2.0))
        done = abs(s_new / s - 1.0) < 1e-4
        s = s_new
        if done:
            break
    where = np.flatnonzero(sel) if idx is None else idx[sel]
    mu = np.array([np.mean(flat[where, k], dtype=np.float64) for k in range(1, m)])
    if mu.min() < 0.9 * mu.max():
        return None  # the selection decays: tissue, not background
    return s


def _sigma_jacobian(p: np.ndarray, te: np.ndarray) -> np.ndarray:
    """Jacobian of ``R_σ(S0 e^{-TE R})`` w.r.t. ``(S0, R, σ)``, shape (n, m, 3)."""
    a = monoexp_signal(p[:, :2], te)
    sig = p[:, 2:3]
    e = rician_mean(a, sig)
    da = rician_mean_derivative(a, sig)
    j2 = monoexp_jacobian(p[:, :2], te) * da[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        ds = np.where(sig > 0, (e - a * da) / np.where(sig > 0, sig, 1.0), np.sqrt(np.pi / 2))
    return np.concatenate([j2, ds[..., None]], axis=-1)


def decay_sigma(
    y: np.ndarray, echo_times_ms: np.ndarray, start: np.ndarray, rate_bounds: tuple[float, float]
) -> float:
    """σ fitted as a third parameter of every decay, median over the voxels that identify it.

    ``E[M] = R_σ(S0 e^{-TE R})`` is fitted by Levenberg–Marquardt from a small σ (1 % of S0:
    a large one explains a slow decay as a fast decay onto a high floor, a spurious local
    optimum). σ is identifiable where the decay is seen going from clearly above the floor
    (fitted amplitude > 5σ at the first echo) onto it (< 2σ at the last), σ's standard error
    is below 30 % and the residuals are as large as σ says (mean square > 0.15 σ²).

    Parameters
    ----------
    y : ndarray, shape (n, m)
    echo_times_ms : ndarray, shape (m,)
    start : ndarray, shape (n, 2)
        ``(S0, R)`` of a plain mono-exponential fit (R in 1/s).
    rate_bounds : (float, float)
        Bounds of ``R`` (1/s).

    Returns
    -------
    float
        0 when fewer than 10 voxels identify σ.
    """
    te = echo_times_ms
    lo_r, hi_r = rate_bounds
    s0 = np.where(start[:, 0] > 0, start[:, 0], y.max(axis=1))
    r0 = np.clip(np.nan_to_num(start[:, 1], nan=lo_r), lo_r, hi_r)
    sig0 = 0.01 * s0
    p0 = np.stack([s0, r0, sig0], axis=1)
    res = levenberg_marquardt(
        y,
        p0,
        np.array([0.0, 0.0, 0.0]),
        np.array([np.inf, hi_r, np.inf]),
        fun=lambda p: t2star_rician_signal(p[:, :2], te, p[:, 2]),
        jac=lambda p: _sigma_jacobian(p, te),
        scale=np.array([float(np.median(s0)), 50.0, float(np.median(sig0))]),
        options=LMOptions(max_iter=200),
    )
    p = res.params
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_se = res.stderr[:, 2] / p[:, 2]
    ok = (res.status <= FitStatus.AT_BOUND) & np.all(np.isfinite(p), axis=1) & (p[:, 2] > 0)
    a_first = p[:, 0] * np.exp(-te[0] * 1e-3 * p[:, 1])
    a_last = p[:, 0] * np.exp(-te[-1] * 1e-3 * p[:, 1])
    # the residuals must be as large as the fitted noise says (their variance lies
    # between 0.43 σ² on the floor and σ² above it; 0.15 σ² is below the 5th percentile
    # of that spread for the smallest residual dof): a large σ that turns a slow decay
    # into a fast decay onto a high floor, with residuals far smaller than σ, is rejected
    dof = max(y.shape[1] - 3, 1)
    consistent = res.rss / dof > 0.15 * p[:, 2] ** 2
    good = ok & (a_first > 5.0 * p[:, 2]) & (a_last < 2.0 * p[:, 2]) & (rel_se < 0.3) & consistent
    if good.sum() < 10:
        return 0.0
    return float(np.median(p[good, 2]))
