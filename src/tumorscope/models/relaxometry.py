"""Relaxometry: T1 (variable flip angle, inversion recovery), T2 and T2*/R2*.

Three layers, as every tumorscope model (see ``docs/relaxometry.md``):

1. pure, vectorised signal equations with analytic Jacobians (parameters on the last axis,
   measurements appended as the last axis of the output);
2. closed-form (linearised) solutions used as starting values and as fits in their own right
   (DESPOT1, two-point VFA, log-linear mono-exponential);
3. registered :class:`~tumorscope.models.base.Model` classes (``VFAT1``, ``IRT1``, ``T2``,
   ``T2Star``) that hold the acquisition and options and fit all voxels at once.

Units: relaxation times in ms, rates in 1/s, echo/inversion/repetition times in ms, flip angles
in degrees at the interface (radians inside). Signals are in the arbitrary units of the data;
nothing is rescaled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from scipy import special

from ..errors import DataError, FitError
from ..fitting.engine import BlockFit
from ..fitting.lm import LMOptions, levenberg_marquardt
from ..fitting.status import FitStatus
from .base import FitResult, Model, ParameterSpec, register_model

__all__ = [
    "IRT1",
    "T2",
    "VFAT1",
    "T2Offset",
    "T2Star",
    "despot1",
    "ir_jacobian",
    "ir_signal",
    "monoexp_jacobian",
    "monoexp_signal",
    "rician_mean",
    "rician_mean_derivative",
    "spgr_jacobian",
    "spgr_signal",
    "t2star_rician_jacobian",
    "t2star_rician_signal",
    "vfa_two_point",
]

_SQRT_PI_2 = float(np.sqrt(np.pi / 2.0))


# --------------------------------------------------------------------------------------------
# spoiled gradient echo (VFA T1)
# --------------------------------------------------------------------------------------------
def _flip_rad(flip_angles_deg: npt.ArrayLike, b1: npt.ArrayLike | None) -> np.ndarray:
    """Actual flip angles in radians, shape ``(..., n_fa)`` (``b1`` broadcast on the left)."""
    a = np.deg2rad(np.asarray(flip_angles_deg, dtype=float))
    if b1 is None:
        return a
    return np.asarray(b1, dtype=float)[..., None] * a


def spgr_signal(
    params: npt.ArrayLike,
    flip_angles_deg: npt.ArrayLike,
    tr_ms: float,
    *,
    b1: npt.ArrayLike | None = None,
) -> np.ndarray:
    """Steady-state spoiled gradient echo signal.

    .. math:: S(\\alpha) = M_0 \\sin\\alpha \\frac{1 - E_1}{1 - E_1\\cos\\alpha},
              \\quad E_1 = e^{-TR/T_1},\\quad \\alpha = B_1\\,\\alpha_{nom}

    (Ernst & Anderson, Rev Sci Instrum 1966, doi:10.1063/1.1719961; Deoni et al., Magn Reson
    Med 2003, doi:10.1002/mrm.10407). ``M0`` absorbs ``exp(-TE/T2*)``.

    Parameters
    ----------
    params : array_like, shape (..., 2)
        ``M0`` (a.u.) and ``T1`` (ms) on the last axis.
    flip_angles_deg : array_like, shape (n_fa,)
        Nominal flip angles in degrees.
    tr_ms : float
        Repetition time in ms.
    b1 : array_like, shape (...), optional
        Relative transmit field (actual / nominal flip angle); 1 when omitted.

    Returns
    -------
    ndarray, shape (..., n_fa)
    """
    p = np.asarray(params, dtype=float)
    m0, t1 = p[..., 0:1], p[..., 1:2]
    a = _flip_rad(flip_angles_deg, b1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        e1 = np.exp(-tr_ms / t1)
        return m0 * np.sin(a) * (1.0 - e1) / (1.0 - e1 * np.cos(a))


def spgr_jacobian(
    params: npt.ArrayLike,
    flip_angles_deg: npt.ArrayLike,
    tr_ms: float,
    *,
    b1: npt.ArrayLike | None = None,
) -> np.ndarray:
    """Analytic Jacobian of :func:`spgr_signal` with respect to ``(M0, T1)``.

    ``dS/dM0 = sin a (1-E1)/(1-E1 cos a)``;
    ``dS/dT1 = M0 sin a (cos a - 1)/(1-E1 cos a)^2 * E1 TR/T1^2``.

    Returns
    -------
    ndarray, shape (..., n_fa, 2)
    """
    p = np.asarray(params, dtype=float)
    m0, t1 = p[..., 0:1], p[..., 1:2]
    a = _flip_rad(flip_angles_deg, b1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        e1 = np.exp(-tr_ms / t1)
        sa, ca = np.sin(a), np.cos(a)
        den = 1.0 - e1 * ca
        d_m0 = sa * (1.0 - e1) / den
        d_e1 = m0 * sa * (ca - 1.0) / den**2
        d_t1 = d_e1 * e1 * tr_ms / t1**2
    d_m0, d_t1 = np.broadcast_arrays(d_m0, d_t1)
    return np.stack([d_m0, d_t1], axis=-1)


def despot1(
    signal: npt.ArrayLike,
    flip_angles_deg: npt.ArrayLike,
    tr_ms: float,
    *,
    b1: npt.ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Linearised variable flip angle T1 (DESPOT1), all voxels at once.

    The SPGR equation rearranges to a straight line (Deoni et al., Magn Reson Med 2003,
    doi:10.1002/mrm.10407):

    .. math:: \\frac{S}{\\sin\\alpha} = E_1 \\frac{S}{\\tan\\alpha} + M_0 (1 - E_1)

    fitted here by ordinary least squares per voxel (closed form, vectorised). With two flip
    angles it is the exact two-point solution.

    Parameters
    ----------
    signal : array_like, shape (..., n_fa)
        SPGR magnitudes, one per flip angle (last axis).
    flip_angles_deg : array_like, shape (n_fa,)
    tr_ms : float
    b1 : array_like, shape (...), optional
        Relative flip-angle scaling map.

    Returns
    -------
    m0 : ndarray, shape (...)
    t1_ms : ndarray, shape (...)
        NaN where the slope ``E1`` falls outside (0, 1) (no physical T1).
    """
    s = np.asarray(signal, dtype=float)
    a = _flip_rad(flip_angles_deg, b1)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = s / np.sin(a)
        x = s / np.tan(a)
        xm = x.mean(axis=-1, keepdims=True)
        ym = y.mean(axis=-1, keepdims=True)
        sxx = ((x - xm) ** 2).sum(axis=-1)
        sxy = ((x - xm) * (y - ym)).sum(axis=-1)
        slope = sxy / sxx
        intercept = ym[..., 0] - slope * xm[..., 0]
        ok = (slope > 0) & (slope < 1) & np.isfinite(slope)
        t1 = np.where(ok, -tr_ms / np.log(np.where(ok, slope, 0.5)), np.nan)
        m0 = np.where(ok, intercept / (1.0 - np.where(ok, slope, 0.5)), np.nan)
    return m0, t1


def vfa_two_point(
    signal: npt.ArrayLike,
    flip_angles_deg: npt.ArrayLike,
    tr_ms: float,
    *,
    b1: npt.ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Two-point VFA T1 from the first and last flip angle only (exact, closed form).

    The two-point special case of :func:`despot1` (Deoni et al., Magn Reson Med 2003,
    doi:10.1002/mrm.10407; Wang et al., Magn Reson Med 1987;5:399-416), kept because it is
    what short clinical protocols acquire.

    Returns
    -------
    m0, t1_ms : ndarray, shape (...)
    """
    s = np.asarray(signal, dtype=float)
    fa = np.asarray(flip_angles_deg, dtype=float)
    return despot1(s[..., [0, -1]], fa[[0, -1]], tr_ms, b1=b1)


# --------------------------------------------------------------------------------------------
# inversion recovery (IR T1)
# --------------------------------------------------------------------------------------------
def ir_signal(params: npt.ArrayLike, inversion_times_ms: npt.ArrayLike) -> np.ndarray:
    """Signed inversion recovery signal, three-parameter form.

    .. math:: S(TI) = M_0 \\left(1 - k\\, e^{-TI/T_1}\\right)

    ``k`` = 2 for a perfect inversion with full recovery (TR >> T1); the free ``k`` absorbs
    imperfect inversion and incomplete recovery (Barral et al., Magn Reson Med 2010,
    doi:10.1002/mrm.22497). Magnitude data are ``abs`` of this; the fit restores the polarity.

    Parameters
    ----------
    params : array_like, shape (..., 3)
        ``M0`` (a.u.), ``T1`` (ms), ``k`` (1).
    inversion_times_ms : array_like, shape (n_ti,)

    Returns
    -------
    ndarray, shape (..., n_ti)
    """
    p = np.asarray(params, dtype=float)
    ti = np.asarray(inversion_times_ms, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return p[..., 0:1] * (1.0 - p[..., 2:3] * np.exp(-ti / p[..., 1:2]))


def ir_jacobian(params: npt.ArrayLike, inversion_times_ms: npt.ArrayLike) -> np.ndarray:
    """Analytic Jacobian of :func:`ir_signal` w.r.t. ``(M0, T1, k)``, shape (..., n_ti, 3)."""
    p = np.asarray(params, dtype=float)
    ti = np.asarray(inversion_times_ms, dtype=float)
    m0, t1, k = p[..., 0:1], p[..., 1:2], p[..., 2:3]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        e = np.exp(-ti / t1)
        d_m0 = 1.0 - k * e
        d_t1 = -m0 * k * e * ti / t1**2
        d_k = -m0 * e
    return np.stack(np.broadcast_arrays(d_m0, d_t1, d_k), axis=-1)


# --------------------------------------------------------------------------------------------
# mono-exponential decay (T2, T2*) and the Rician noise floor
# --------------------------------------------------------------------------------------------
def monoexp_signal(params: npt.ArrayLike, echo_times_ms: npt.ArrayLike) -> np.ndarray:
    """Mono-exponential decay with an optional constant offset.

    .. math:: S(TE) = S_0\\, e^{-TE\\,R_2} + c

    with ``R2`` in 1/s and ``TE`` in ms (``TE·R2/1000``). The offset ``c`` models a noise
    floor or a long-T2 background crudely (Milford et al., PLoS One 2015,
    doi:10.1371/journal.pone.0145255 discuss its bias); see :func:`t2star_rician_signal` for the
    statistically exact floor.

    Parameters
    ----------
    params : array_like, shape (..., 2) or (..., 3)
        ``S0`` (a.u.), ``R2`` (1/s) and optionally ``c`` (a.u.).
    echo_times_ms : array_like, shape (n_te,)

    Returns
    -------
    ndarray, shape (..., n_te)
    """
    p = np.asarray(params, dtype=float)
    te_s = np.asarray(echo_times_ms, dtype=float) * 1e-3
    s = p[..., 0:1] * np.exp(-te_s * p[..., 1:2])
    if p.shape[-1] > 2:
        s = s + p[..., 2:3]
    return s


def monoexp_jacobian(params: npt.ArrayLike, echo_times_ms: npt.ArrayLike) -> np.ndarray:
    """Jacobian of :func:`monoexp_signal` w.r.t. ``(S0, R2[, c])``, shape (..., n_te, 2|3)."""
    p = np.asarray(params, dtype=float)
    te_s = np.asarray(echo_times_ms, dtype=float) * 1e-3
    e = np.exp(-te_s * p[..., 1:2])
    cols = [e, -te_s * p[..., 0:1] * e]
    if p.shape[-1] > 2:
        cols.append(np.ones_like(e))
    return np.stack(np.broadcast_arrays(*cols), axis=-1)


def rician_mean(amplitude: npt.ArrayLike, sigma: npt.ArrayLike) -> np.ndarray:
    """Expected magnitude of a Rician variable (the noise floor of magnitude images).

    .. math:: E[M] = \\sigma\\sqrt{\\pi/2}\\; e^{-u}\\left[(1 + 2u) I_0(u) + 2u\\, I_1(u)\\right],
              \\quad u = \\frac{A^2}{4\\sigma^2}

    i.e. :math:`\\sigma\\sqrt{\\pi/2}\\,L_{1/2}(-A^2/2\\sigma^2)` (Gudbjartsson & Patz, Magn Reson
    Med 1995, doi:10.1002/mrm.1910340618), evaluated with the exponentially scaled Bessel
    functions so that it is stable for any SNR. It tends to ``sigma*sqrt(pi/2)`` (the Rayleigh
    mean) as ``A -> 0`` and to ``A`` as ``A/sigma -> inf``; ``sigma = 0`` returns ``|A|``.

    Parameters
    ----------
    amplitude : array_like
        Underlying noise-free amplitude ``A`` (>= 0).
    sigma : array_like
        Standard deviation of the Gaussian noise in each of the real and imaginary channels.

    Returns
    -------
    ndarray, broadcast shape of the inputs
    """
    a = np.abs(np.asarray(amplitude, dtype=float))
    sig = np.asarray(sigma, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = a**2 / (4.0 * sig**2)
        val = sig * _SQRT_PI_2 * ((1.0 + 2.0 * u) * special.i0e(u) + 2.0 * u * special.i1e(u))
        # For u > 1e6 the float64 Bessel ratio loses nothing but the series A + sigma^2/(2A)
        # is exact to 1e-12 relative and avoids 0*inf when sigma == 0.
        big = u > 1e6
        approx = a + np.where(a > 0, sig**2 / (2.0 * np.where(a > 0, a, 1.0)), 0.0)
        return np.where(big | (sig <= 0), np.where(sig <= 0, a, approx), val)


def rician_mean_derivative(amplitude: npt.ArrayLike, sigma: npt.ArrayLike) -> np.ndarray:
    """``d E[M] / dA`` of :func:`rician_mean`.

    Differentiating the closed form gives
    :math:`\\frac{A}{2\\sigma}\\sqrt{\\pi/2}\\,e^{-u}\\left[I_0(u) + I_1(u)\\right]`, which tends to
    0 at ``A = 0`` and to 1 at high SNR.
    """
    a = np.abs(np.asarray(amplitude, dtype=float))
    sig = np.asarray(sigma, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = a**2 / (4.0 * sig**2)
        val = a / (2.0 * sig) * _SQRT_PI_2 * (special.i0e(u) + special.i1e(u))
        big = u > 1e6
        approx = 1.0 - np.where(a > 0, sig**2 / (2.0 * np.where(a > 0, a, 1.0) ** 2), 0.0)
        return np.where(big | (sig <= 0), np.where(sig <= 0, 1.0, approx), val)


def t2star_rician_signal(
    params: npt.ArrayLike, echo_times_ms: npt.ArrayLike, sigma: npt.ArrayLike
) -> np.ndarray:
    """Expected magnitude of a mono-exponential decay under Rician noise.

    .. math:: E[M(TE)] = \\mathcal{R}_\\sigma\\!\\left(S_0 e^{-TE\\,R_2^*}\\right)

    with :math:`\\mathcal{R}_\\sigma` = :func:`rician_mean`. Fitting this "first-moment noise
    corrected" model removes the bias that the noise floor puts on short T2* (high R2*) in
    iron-laden tissue (Feng et al., Magn Reson Med 2013, doi:10.1002/mrm.24607).

    Parameters
    ----------
    params : array_like, shape (..., 2)
        ``S0`` (a.u.) and ``R2star`` (1/s).
    echo_times_ms : array_like, shape (n_te,)
    sigma : array_like, shape (...) or scalar
        Rician noise level (same units as the signal).

    Returns
    -------
    ndarray, shape (..., n_te)
    """
    a = monoexp_signal(np.asarray(params, dtype=float)[..., :2], echo_times_ms)
    return rician_mean(a, np.asarray(sigma, dtype=float)[..., None])


def t2star_rician_jacobian(
    params: npt.ArrayLike, echo_times_ms: npt.ArrayLike, sigma: npt.ArrayLike
) -> np.ndarray:
    """Jacobian of :func:`t2star_rician_signal` w.r.t. ``(S0, R2star)``, shape (..., n_te, 2)."""
    p = np.asarray(params, dtype=float)[..., :2]
    a = monoexp_signal(p, echo_times_ms)
    g = rician_mean_derivative(a, np.asarray(sigma, dtype=float)[..., None])
    return monoexp_jacobian(p, echo_times_ms) * g[..., None]


# --------------------------------------------------------------------------------------------
# validation helpers shared by the models
# --------------------------------------------------------------------------------------------
def _check_times(
    values: Sequence[float] | npt.ArrayLike,
    name: str,
    *,
    minimum: int,
    increasing: bool,
    allow_zero: bool = False,
) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError) as exc:
        raise FitError(f"expected a sequence of numbers, got {values!r}", field=name) from exc
    if arr.size < minimum:
        raise FitError(f"need at least {minimum} values, got {arr.size}", field=name)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise FitError(f"values must be finite, got {arr[bad[0]]} at index {bad[0]}", field=name)
    bad = np.flatnonzero(arr < 0) if allow_zero else np.flatnonzero(arr <= 0)
    if bad.size:
        op = ">= 0" if allow_zero else "> 0"
        raise FitError(f"values must be {op}, got {arr[bad[0]]:g} at index {bad[0]}", field=name)
    if increasing:
        d = np.flatnonzero(np.diff(arr) <= 0)
        if d.size:
            i = int(d[0])
            raise FitError(
                f"values must be strictly increasing, got {arr[i]:g} then {arr[i + 1]:g} "
                f"at index {i + 1}",
                field=name,
            )
    elif np.unique(arr).size < minimum:
        raise FitError(
            f"need at least {minimum} distinct values, got {np.unique(arr).size}", field=name
        )
    return arr


def _check_last_axis(data: np.ndarray, n: int, name: str) -> None:
    if data.ndim < 1 or data.shape[-1] != n:
        raise DataError(
            f"expected {n} measurements on the last axis to match {name}, got shape {data.shape}",
            field="data",
        )


# --------------------------------------------------------------------------------------------
# shared solver pieces: variable projection over one non-linear parameter
# --------------------------------------------------------------------------------------------
_GOLD = 0.5 * (np.sqrt(5.0) - 1.0)


def _project(basis: np.ndarray, y: np.ndarray, *, nonneg: bool) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form linear coefficients and residual for basis ``(n, m, q)``, ``q`` in {1, 2}.

    With ``nonneg`` the first coefficient (the amplitude) is constrained to be >= 0 (for
    ``q = 1`` exactly; for ``q = 2`` by falling back to the best one-column fit).
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


def _varpro_log(
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

    ``y ≈ B(x) c``: for every ``x`` the coefficients ``c`` are solved in closed form (variable
    projection, Golub & Pereyra, SIAM J Numer Anal 1973, doi:10.1137/0710036), so only the
    1-D reduced residual ``rss(x)`` is searched: a log-spaced grid finds the basin (global,
    no starting value needed), golden-section search (Kiefer 1953, doi:10.2307/2032161)
    then narrows the bracket around the best grid point by ``0.618**n_golden`` (1e-5 of the
    bracket, about 4e-6 relative in ``x``, with the defaults), all voxels at once. Callers
    finish with :func:`_gn_polish` (Gauss–Newton converges quadratically from there).

    Parameters
    ----------
    basis_fn : callable
        ``basis_fn(x (n,)) -> (n, m, q)``.
    y : ndarray, shape (n, m)

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
        _, r = _project(basis_fn(np.full(n, np.exp(th))), y, nonneg=nonneg)
        better = r < best
        best = np.where(better, r, best)
        k = np.where(better, g, k)
    at_bound = (k == 0) | (k == n_grid - 1)
    kc = np.clip(k, 1, n_grid - 2)
    a, b = grid[kc - 1], grid[kc + 1]
    c = b - _GOLD * (b - a)
    d = a + _GOLD * (b - a)

    def rss_at(th: np.ndarray) -> np.ndarray:
        return _project(basis_fn(np.exp(th)), y, nonneg=nonneg)[1]

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
    coef, rss = _project(basis_fn(x), y, nonneg=nonneg)
    # never worse than the best grid point
    worse = rss > best
    if worse.any():
        xg = np.exp(grid[k])
        cg, rg = _project(basis_fn(xg), y, nonneg=nonneg)
        x = np.where(worse, xg, x)
        coef = np.where(worse[:, None], cg, coef)
        rss = np.where(worse, rg, rss)
    return x, coef, rss, at_bound


def _stderr_from_jacobian(J: np.ndarray, rss: np.ndarray) -> np.ndarray:
    """``sqrt(diag((JᵀJ)⁻¹) · rss / (m - p))`` per voxel; NaN when ``m <= p`` or singular."""
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


def _gn_polish(
    params: np.ndarray,
    y: np.ndarray,
    fun: Callable[[np.ndarray], np.ndarray],
    jac: Callable[[np.ndarray], np.ndarray],
    rss: np.ndarray,
    *,
    steps: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """A few Gauss-Newton steps from a search result, each kept only where it lowers the RSS.

    ``params`` must be finite (rows of a block, all fitted together).

    The golden-section search locates the minimum to about ``sqrt(eps)`` relative (the
    residual is flat there); Gauss-Newton from that point converges quadratically to full
    precision.
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


def _loglinear_start(a: np.ndarray, te_ms: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(S0, R)`` from a weighted log-linear fit of amplitudes ``a (n, m)`` (weights ``a²``).

    Voxels with fewer than two positive amplitudes fall back to ``S0 = max(y)``, ``R = 0``.
    """
    x = np.asarray(te_ms, dtype=float) * 1e-3
    pos = a > 0
    w = np.where(pos, a * a, 0.0)
    z = np.log(np.where(pos, a, 1.0))
    sw = w.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        xm = (w * x).sum(axis=1) / sw
        zm = (w * z).sum(axis=1) / sw
        sxx = (w * (x - xm[:, None]) ** 2).sum(axis=1)
        sxz = (w * (x - xm[:, None]) * (z - zm[:, None])).sum(axis=1)
        slope = sxz / sxx
        r = -slope
        s0 = np.exp(zm + r * xm)
    ok = (pos.sum(axis=1) >= 2) & np.isfinite(r) & np.isfinite(s0) & (sxx > 0)
    return np.stack([np.where(ok, s0, y.max(axis=1)), np.where(ok, r, 0.0)], axis=1)


def _status(ok: np.ndarray, at_bound: np.ndarray) -> np.ndarray:
    st = np.where(at_bound, FitStatus.AT_BOUND, FitStatus.CONVERGED).astype(np.uint8)
    st[~ok] = FitStatus.FAILED
    return st


def _invalid_magnitude(y: np.ndarray) -> np.ndarray:
    """Voxels that cannot be fitted: non-finite, negative or all-zero magnitudes."""
    return ~np.all(np.isfinite(y), axis=1) | np.any(y < 0, axis=1) | ~np.any(y > 0, axis=1)


def _check_backend(backend: str) -> str:
    if backend not in ("auto", "numpy", "numba"):
        raise FitError(
            f"unknown backend {backend!r}; expected 'auto', 'numba' or 'numpy'", field="backend"
        )
    return backend


# --------------------------------------------------------------------------------------------
# VFA T1
# --------------------------------------------------------------------------------------------
@register_model
class VFAT1(Model):
    """Variable flip angle T1 mapping from spoiled gradient echo (SPGR) magnitudes.

    Fits :func:`spgr_signal` to one signal per flip angle. Methods:

    ``"nonlinear"`` (default)
        Exact least squares on the magnitudes: ``M0`` is linear and solved in closed form for
        every ``T1``, and ``T1`` is found by a global log-grid plus golden-section search of
        the 1-D reduced residual (variable projection). No starting value, no local minima
        within the grid, per-voxel B1 supported.
    ``"despot1"``
        The linearised DESPOT1 regression of :func:`despot1` (Deoni et al. 2003,
        doi:10.1002/mrm.10407): fast, but it weights the angles unevenly, so it is noisier.
    ``"two_point"``
        DESPOT1 on the first and last flip angle only (what two-angle protocols give).

    Parameters
    ----------
    flip_angles_deg : sequence of float, shape (n_fa,)
        Nominal flip angles in degrees, at least two distinct, each in (0, 180).
    tr_ms : float
        Repetition time in ms.
    method : {"nonlinear", "despot1", "two_point"}, keyword-only
    backend : {"auto", "numpy", "numba"}, keyword-only
        Accepted for a uniform interface; every method here is closed-form or a vectorised
        1-D search and runs in numpy.

    Notes
    -----
    Maps: ``"M0"`` (a.u.), ``"T1"`` (ms), derived ``"R1"`` (1/s). Pass a B1 map (relative
    flip angle, 1 = nominal) to :meth:`fit` as ``b1=``; the actual flip angles are
    ``b1 * flip_angles_deg`` voxel by voxel. Without it T1 is biased by roughly
    ``(actual/nominal)^2`` (Stikov et al., Magn Reson Med 2015, doi:10.1002/mrm.25135).

    Examples
    --------
    >>> import numpy as np
    >>> m = VFAT1([2, 5, 12], 5.4)
    >>> y = spgr_signal(np.array([[1000.0, 1100.0]]), [2, 5, 12], 5.4)
    >>> fit = m.fit(y)
    >>> round(float(fit["T1"][0]), 3)
    1100.0
    """

    name = "vfat1"
    parameters = (
        ParameterSpec(
            "M0",
            "a.u.",
            0.0,
            np.inf,
            typical=(500.0, 5000.0),
            description="equilibrium signal (includes receive gain and T2* decay)",
        ),
        ParameterSpec(
            "T1",
            "ms",
            5.0,
            50000.0,
            typical=(300.0, 3000.0),
            description="longitudinal relaxation time",
        ),
    )
    derived = (ParameterSpec("R1", "1/s", 0.0, np.inf, description="1000 / T1"),)
    methods = ("nonlinear", "despot1", "two_point")
    measurement_name = "flip angles"

    def __init__(
        self,
        flip_angles_deg: Sequence[float] | npt.ArrayLike,
        tr_ms: float,
        *,
        method: Literal["nonlinear", "despot1", "two_point"] = "nonlinear",
        backend: str = "auto",
    ) -> None:
        from ..protocol import VFAProtocol

        proto = VFAProtocol(flip_angles_deg=flip_angles_deg, tr_ms=tr_ms)  # type: ignore[arg-type]
        self.flip_angles_deg = np.asarray(proto.flip_angles_deg)
        self.tr_ms = float(proto.tr_ms)
        self.method = self._check_method(method)
        self.backend = _check_backend(backend)
        self._b1_column = False

    @classmethod
    def from_protocol(cls, protocol: Any, **options: Any) -> VFAT1:
        """Build from a :class:`~tumorscope.protocol.VFAProtocol`."""
        return cls(protocol.flip_angles_deg, protocol.tr_ms, **options)

    @property
    def n_measurements(self) -> int:
        return int(self.flip_angles_deg.size) + (1 if self._b1_column else 0)

    def signal(self, params: np.ndarray) -> np.ndarray:
        return spgr_signal(params, self.flip_angles_deg, self.tr_ms)

    def jacobian(self, params: np.ndarray) -> np.ndarray:
        return spgr_jacobian(params, self.flip_angles_deg, self.tr_ms)

    def initial_guess(self, y: np.ndarray) -> np.ndarray:
        m0, t1 = despot1(y[:, : self.flip_angles_deg.size], self.flip_angles_deg, self.tr_ms)
        return np.stack(
            [np.nan_to_num(m0, nan=float(np.max(y))), np.nan_to_num(t1, nan=1000.0)], axis=1
        )

    def invalid_voxels(self, y: np.ndarray) -> np.ndarray:
        bad = _invalid_magnitude(y[:, : self.flip_angles_deg.size])
        if self._b1_column:
            b1 = y[:, -1]
            bad |= ~np.isfinite(b1) | (b1 <= 0)
        return bad

    def derive(self, maps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"R1": _rate(maps["T1"])}

    def options(self) -> dict[str, Any]:
        return {
            "flip_angles_deg": self.flip_angles_deg.tolist(),
            "tr_ms": self.tr_ms,
            "method": self.method,
        }

    @classmethod
    def example(cls) -> VFAT1:
        return cls([2.0, 5.0, 10.0, 15.0], 5.0)

    def fit(
        self,
        data: npt.ArrayLike,
        mask: npt.ArrayLike | None = None,
        *,
        b1: npt.ArrayLike | None = None,
        chunk_voxels: int | None = None,
    ) -> FitResult:
        """Fit every voxel (within ``mask``); see :meth:`Model.fit`.

        Parameters
        ----------
        data : array_like, shape (..., n_fa)
        mask : array_like of bool, shape data.shape[:-1], optional
        b1 : array_like, shape data.shape[:-1], optional, keyword-only
            Relative flip angle map (actual / nominal, 1 = perfect). Voxels with a non-finite
            or non-positive B1 get status ``INVALID_INPUT``.
        chunk_voxels : int, optional, keyword-only
        """
        if b1 is None:
            return super().fit(
                np.asarray(data),
                None if mask is None else np.asarray(mask),
                chunk_voxels=chunk_voxels,
            )
        from ..fitting.engine import validate_inputs

        arr, m = validate_inputs(
            data, mask, n_measurements=self.flip_angles_deg.size, what=self.measurement_name
        )
        b = np.asarray(b1, dtype=float)
        if b.shape != arr.shape[:-1]:
            raise FitError(
                f"B1 map shape {b.shape} does not match the data's spatial shape {arr.shape[:-1]}",
                field="b1",
            )
        sel = b[m] if m is not None else b
        sel = sel[np.isfinite(sel)]
        if sel.size and float(np.median(sel)) > 3.0:
            raise DataError(
                f"B1 map median is {float(np.median(sel)):g}; expected a relative flip-angle "
                "scale near 1 (divide a map in percent by 100)",
                field="b1",
            )
        aug = np.concatenate([arr.astype(np.float64, copy=False), b[..., None]], axis=-1)
        variant = _copy_model(self)
        variant._b1_column = True
        res = Model.fit(variant, aug, m, chunk_voxels=chunk_voxels)
        res.provenance["options"]["b1_map"] = True
        return res

    def fit_block(self, y: np.ndarray) -> BlockFit:
        nfa = self.flip_angles_deg.size
        if self._b1_column:
            s, b1 = y[:, :nfa], y[:, nfa]
        else:
            s, b1 = y, None
        n = s.shape[0]
        if self.method == "nonlinear":
            a = _flip_rad(self.flip_angles_deg, b1)
            a = np.broadcast_to(a, (n, nfa))
            sa, ca = np.sin(a), np.cos(a)

            def basis(t1: np.ndarray) -> np.ndarray:
                e1 = np.exp(-self.tr_ms / t1)[:, None]
                return (sa * (1.0 - e1) / (1.0 - e1 * ca))[..., None]

            lo, hi = self.parameters[1].lower, self.parameters[1].upper
            t1, coef, rss, at_bound = _varpro_log(basis, s, lo, hi)
            params = np.stack([coef[:, 0], t1], axis=1)
            free = ~at_bound & (coef[:, 0] > 0)
            if free.any():
                b1f = None if b1 is None else b1[free]
                pol, rss_f = _gn_polish(
                    params[free],
                    s[free],
                    lambda p: spgr_signal(p, self.flip_angles_deg, self.tr_ms, b1=b1f),
                    lambda p: spgr_jacobian(p, self.flip_angles_deg, self.tr_ms, b1=b1f),
                    rss[free],
                )
                params[free], rss[free] = pol, rss_f
            at_bound |= params[:, 0] <= 0
        else:
            fn = despot1 if self.method == "despot1" else vfa_two_point
            m0, t1 = fn(s, self.flip_angles_deg, self.tr_ms, b1=b1)
            params = np.stack([m0, t1], axis=1)
            with np.errstate(invalid="ignore"):
                pred = spgr_signal(params, self.flip_angles_deg, self.tr_ms, b1=b1)
                rss = np.sum((s - pred) ** 2, axis=1)
            at_bound = np.zeros(n, dtype=bool)
        ok = np.all(np.isfinite(params), axis=1)
        J = spgr_jacobian(
            np.where(ok[:, None], params, 1.0), self.flip_angles_deg, self.tr_ms, b1=b1
        )
        stderr = _stderr_from_jacobian(J, np.where(ok, rss, np.nan))
        if self.method != "nonlinear":
            # the linearised estimators are not least-squares solutions of the magnitudes:
            # Jacobian-based errors would be those of another estimator
            stderr[:] = np.nan
        return BlockFit(params, _status(ok, at_bound), rss, stderr)


def _rate(t_ms: np.ndarray) -> np.ndarray:
    t = np.asarray(t_ms, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(t > 0, 1000.0 / t, np.nan)


def _copy_model(model: Any) -> Any:
    import copy

    return copy.copy(model)


# --------------------------------------------------------------------------------------------
# inversion recovery T1
# --------------------------------------------------------------------------------------------
@register_model
class IRT1(Model):
    """Inversion recovery T1 mapping, magnitude data with polarity restoration.

    Fits the three-parameter :func:`ir_signal` ``M0 (1 - k exp(-TI/T1))``. For magnitude
    data the sign of the points before the null is unknown: following the RD-NLS-PR method
    of Barral et al. (Magn Reson Med 2010, doi:10.1002/mrm.22497), the points up to the
    minimum magnitude are negated (two candidates: with and without the minimum itself), each
    candidate is fitted and the one with the smaller residual is kept. Every fit is exact least
    squares: ``M0`` and ``M0·k`` are linear and solved in closed form for each ``T1``, ``T1``
    by a global log-grid and golden-section search (variable projection), then polished by
    Gauss–Newton.

    Parameters
    ----------
    inversion_times_ms : sequence of float, shape (n_ti,)
        Inversion times in ms (> 0, at least three distinct; any order).
    magnitude : bool, default True, keyword-only
        False for phase-corrected real (signed) data: no polarity restoration.
    backend : str, keyword-only
        Accepted for a uniform interface (numpy only).

    Notes
    -----
    Maps: ``"M0"`` (a.u.), ``"T1"`` (ms), ``"k"`` (1; 2 for an ideal inversion with full
    recovery, lower for imperfect inversion or short TR) and derived ``"R1"`` (1/s).
    """

    name = "irt1"
    parameters = (
        ParameterSpec(
            "M0",
            "a.u.",
            -np.inf,
            np.inf,
            typical=(500.0, 5000.0),
            description="signal at full recovery",
        ),
        ParameterSpec(
            "T1",
            "ms",
            5.0,
            50000.0,
            typical=(300.0, 3000.0),
            description="longitudinal relaxation time",
        ),
        ParameterSpec(
            "k",
            "1",
            -np.inf,
            np.inf,
            typical=(1.8, 2.0),
            description="inversion factor (2 = ideal inversion, full recovery)",
        ),
    )
    derived = (ParameterSpec("R1", "1/s", 0.0, np.inf, description="1000 / T1"),)
    methods = ("rdnls",)
    measurement_name = "inversion times"

    def __init__(
        self,
        inversion_times_ms: Sequence[float] | npt.ArrayLike,
        *,
        magnitude: bool = True,
        backend: str = "auto",
    ) -> None:
        from ..protocol import InversionRecoveryProtocol

        proto = InversionRecoveryProtocol(inversion_times_ms=inversion_times_ms)  # type: ignore[arg-type]
        self.inversion_times_ms = np.asarray(proto.inversion_times_ms)
        self.magnitude = bool(magnitude)
        self.method = "rdnls"
        self.backend = _check_backend(backend)

    @classmethod
    def from_protocol(cls, protocol: Any, **options: Any) -> IRT1:
        """Build from an :class:`~tumorscope.protocol.InversionRecoveryProtocol`."""
        return cls(protocol.inversion_times_ms, **options)

    @property
    def n_measurements(self) -> int:
        return int(self.inversion_times_ms.size)

    def signal(self, params: np.ndarray) -> np.ndarray:
        s = ir_signal(params, self.inversion_times_ms)
        return np.abs(s) if self.magnitude else s

    def jacobian(self, params: np.ndarray) -> np.ndarray:
        J = ir_jacobian(params, self.inversion_times_ms)
        if self.magnitude:
            J = J * np.sign(ir_signal(params, self.inversion_times_ms))[..., None]
        return J

    def invalid_voxels(self, y: np.ndarray) -> np.ndarray:
        if self.magnitude:
            return _invalid_magnitude(y)
        return ~np.all(np.isfinite(y), axis=1) | ~np.any(y != 0, axis=1)

    def derive(self, maps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"R1": _rate(maps["T1"])}

    def options(self) -> dict[str, Any]:
        return {
            "inversion_times_ms": self.inversion_times_ms.tolist(),
            "magnitude": self.magnitude,
            "method": self.method,
        }

    @classmethod
    def example(cls) -> IRT1:
        return cls([50.0, 150.0, 400.0, 800.0, 1500.0, 3000.0])

    def sample_parameters(self, n: int, *, rng: np.random.Generator) -> np.ndarray:
        m0 = rng.uniform(500.0, 5000.0, n)
        t1 = rng.uniform(300.0, 2000.0, n)
        k = rng.uniform(1.8, 2.0, n)
        return np.stack([m0, t1, k], axis=1)

    def fit_block(self, y: np.ndarray) -> BlockFit:
        ti = self.inversion_times_ms
        order = np.argsort(ti, kind="stable")
        m = y.shape[1]
        lo, hi = self.parameters[1].lower, self.parameters[1].upper

        def basis(t1: np.ndarray) -> np.ndarray:
            e = np.exp(-ti[None, :] / t1[:, None])
            return np.stack([np.ones_like(e), e], axis=-1)

        if self.magnitude:
            # candidates: negate the first j points in TI order, j = argmin and argmin + 1
            kmin = np.argmin(y[:, order], axis=1)
            best = None
            for extra in (0, 1):
                j = kmin + extra
                rank = np.empty(m, dtype=np.int64)
                rank[order] = np.arange(m)
                sign = np.where(rank[None, :] < j[:, None], -1.0, 1.0)
                ys = y * sign
                t1, coef, rss, at_bound = _varpro_log(basis, ys, lo, hi, nonneg=False)
                cand = (t1, coef, rss, at_bound, ys)
                if best is None:
                    best = cand
                else:
                    take = rss < best[2]
                    best = tuple(
                        np.where(take.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
                        for a, b in zip(cand, best, strict=True)
                    )  # type: ignore[assignment]
            assert best is not None
            t1, coef, rss, at_bound, ys = best
        else:
            ys = y
            t1, coef, rss, at_bound = _varpro_log(basis, ys, lo, hi, nonneg=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            m0 = coef[:, 0]
            k = np.where(m0 != 0, -coef[:, 1] / m0, np.nan)
        params = np.stack([m0, t1, k], axis=1)
        ok = np.all(np.isfinite(params), axis=1)
        free = ok & ~at_bound
        if free.any():
            pol, rss_f = _gn_polish(
                params[free],
                ys[free],
                lambda p: ir_signal(p, ti),
                lambda p: ir_jacobian(p, ti),
                rss[free],
            )
            params[free], rss[free] = pol, rss_f
        J = ir_jacobian(np.where(ok[:, None], params, 1.0), ti)
        stderr = _stderr_from_jacobian(J, np.where(ok, rss, np.nan))
        return BlockFit(params, _status(ok, at_bound), rss, stderr)


# --------------------------------------------------------------------------------------------
# mono-exponential decay: T2 (spin echo), T2* (gradient echo)
# --------------------------------------------------------------------------------------------
_FLOORS = ("none", "rician", "offset")


class _DecayModel(Model):
    """Shared machinery of :class:`T2`, :class:`T2Offset` and :class:`T2Star`.

    The solver works in ``(S0, R)`` with ``R`` in 1/s; subclasses state how their second
    parameter maps to ``R`` (:meth:`_rate_of`, :meth:`_drate`).
    """

    measurement_name = "echo times"
    methods = ("nlls",)
    _rate_bounds: tuple[float, float] = (0.2, 1000.0)

    def __init__(
        self,
        echo_times_ms: Sequence[float] | npt.ArrayLike,
        *,
        floor: str,
        noise_sigma: float | None,
        backend: str,
    ) -> None:
        from ..protocol import MultiEchoProtocol

        proto = MultiEchoProtocol(echo_times_ms=echo_times_ms)  # type: ignore[arg-type]
        self.echo_times_ms = np.asarray(proto.echo_times_ms)
        if floor not in _FLOORS:
            raise FitError(f"unknown floor {floor!r}; expected one of {_FLOORS}", field="floor")
        self.floor = floor
        n_par = len(self.parameters)
        if self.echo_times_ms.size < n_par:
            raise FitError(
                f"{self.echo_times_ms.size} echoes cannot determine {n_par} parameters "
                f"({', '.join(self.parameter_names)}); need at least {n_par}",
                field="echo_times_ms",
            )
        if noise_sigma is not None:
            if floor != "rician":
                raise FitError(
                    f"noise_sigma is only used with floor='rician', not {floor!r}",
                    field="noise_sigma",
                )
            s = float(noise_sigma)
            if not np.isfinite(s) or s < 0:
                raise FitError(
                    f"must be a finite number >= 0, got {noise_sigma!r}", field="noise_sigma"
                )
            noise_sigma = s
        self.noise_sigma = noise_sigma
        self.method = "nlls"
        self.backend = _check_backend(backend)
        self._sigma_estimated: str | bool = False

    # -- parameterisation ---------------------------------------------------------------
    def _rate_of(self, q: np.ndarray) -> np.ndarray:
        return q

    def _drate(self, q: np.ndarray) -> np.ndarray:
        return np.ones_like(q)

    def _from_rate(self, r: np.ndarray) -> np.ndarray:
        return r

    def _rate_params(self, params: np.ndarray) -> np.ndarray:
        p = np.array(params, dtype=float, copy=True)
        p[..., 1] = self._rate_of(p[..., 1])
        return p

    # -- model ----------------------------------------------------------------------------
    @property
    def n_measurements(self) -> int:
        return int(self.echo_times_ms.size)

    def _sigma(self) -> float:
        return 0.0 if self.noise_sigma is None else float(self.noise_sigma)

    def signal(self, params: np.ndarray) -> np.ndarray:
        pr = self._rate_params(params)
        if self.floor == "rician":
            return t2star_rician_signal(pr, self.echo_times_ms, self._sigma())
        return monoexp_signal(pr, self.echo_times_ms)

    def jacobian(self, params: np.ndarray) -> np.ndarray:
        pr = self._rate_params(params)
        if self.floor == "rician":
            J = t2star_rician_jacobian(pr, self.echo_times_ms, self._sigma())
        else:
            J = monoexp_jacobian(pr, self.echo_times_ms)
        J[..., 1] *= self._drate(np.asarray(params, dtype=float)[..., 1:2])
        return J

    def invalid_voxels(self, y: np.ndarray) -> np.ndarray:
        return _invalid_magnitude(y)

    _time_parameter: ClassVar[bool] = False

    def kernel(self) -> Any:
        """The compiled Rician decay kernel (numba), used when ``floor="rician"``."""
        if self.floor != "rician":
            return None
        try:
            from ._relaxometry_numba import rician_decay_kernel
        except ImportError:  # pragma: no cover - numba is in the 'fast' extra
            return None
        return rician_decay_kernel

    def consts(self) -> np.ndarray:
        mode = 1.0 if self._time_parameter else 0.0
        return np.concatenate([[self._sigma(), mode], self.echo_times_ms * 1e-3])

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "echo_times_ms": self.echo_times_ms.tolist(),
            "floor": self.floor,
            "method": self.method,
        }
        if self.floor == "rician":
            out["noise_sigma"] = self.noise_sigma
            out["noise_sigma_estimated"] = self._sigma_estimated
        return out

    # -- fitting ----------------------------------------------------------------------------
    def _varpro(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact least-squares mono-exponential (+ offset) in rate space."""
        te_s = self.echo_times_ms * 1e-3
        offset = self.floor == "offset"

        def basis(r: np.ndarray) -> np.ndarray:
            e = np.exp(-te_s[None, :] * r[:, None])
            if offset:
                return np.stack([e, np.ones_like(e)], axis=-1)
            return e[..., None]

        lo, hi = self._rate_bounds
        r, coef, rss, at_bound = _varpro_log(basis, y, lo, hi, nonneg=True)
        pr = np.column_stack([coef[:, 0], r] + ([coef[:, 1]] if offset else []))
        free = ~at_bound & (coef[:, 0] > 0)
        if free.any():
            pol, rss_f = _gn_polish(
                pr[free],
                y[free],
                lambda p: monoexp_signal(p, self.echo_times_ms),
                lambda p: monoexp_jacobian(p, self.echo_times_ms),
                rss[free],
            )
            pr[free], rss[free] = pol, rss_f
        at_bound |= pr[:, 0] <= 0
        return pr, rss, at_bound

    def fit_block(self, y: np.ndarray) -> BlockFit:
        sigma = self._sigma()
        if self.floor == "rician" and sigma > 0:
            # start: log-linear fit of floor-corrected magnitudes (Gudbjartsson & Patz 1995:
            # A ≈ sqrt(M² - σ²)) weighted by A² (the delta-method variance of log A), then the
            # Rician-mean model by LM
            yc = np.sqrt(np.maximum(y**2 - sigma**2, 0.0))
            pr0 = _loglinear_start(yc, self.echo_times_ms, y)
            lo_r, hi_r = self._rate_bounds
            pr0[:, 1] = np.clip(pr0[:, 1], lo_r, hi_r)
            p0 = pr0.copy()
            p0[:, 1] = self._from_rate(pr0[:, 1])
            return self.solve_nonlinear(y, p0)
        pr, rss, at_bound = self._varpro(y)
        params = pr.copy()
        with np.errstate(divide="ignore", invalid="ignore"):
            params[:, 1] = self._from_rate(pr[:, 1])
        ok = np.all(np.isfinite(params), axis=1)
        safe = np.where(ok[:, None], params, 1.0)
        J = self.jacobian(safe)
        stderr = _stderr_from_jacobian(J, np.where(ok, rss, np.nan))
        return BlockFit(params, _status(ok, at_bound), rss, stderr)

    def fit(
        self,
        data: npt.ArrayLike,
        mask: npt.ArrayLike | None = None,
        *,
        noise_sigma_map: npt.ArrayLike | None = None,
        chunk_voxels: int | None = None,
    ) -> FitResult:
        """Fit every voxel (within ``mask``); see :meth:`Model.fit`.

        With ``floor="rician"`` and no ``noise_sigma``, the noise level is first estimated
        from the data (:meth:`estimate_noise_sigma`) and recorded in the provenance.

        Parameters
        ----------
        data : array_like, shape (..., n_echoes)
        mask : array_like of bool, shape data.shape[:-1], optional
        noise_sigma_map : array_like, shape data.shape[:-1], optional, keyword-only
            A spatially varying Rician noise level (parallel imaging, coil sensitivity),
            with ``floor="rician"`` and no scalar ``noise_sigma``. Because
            ``E[M](A, σ) = σ E[M](A/σ, 1)``, each voxel is divided by its σ, fitted with
            σ = 1 and scaled back (``S0`` × σ, ``rss`` × σ²): exact, and the fast kernel
            is kept. Voxels with a non-finite or non-positive σ get ``INVALID_INPUT``.
        chunk_voxels : int, optional, keyword-only
        """
        arr = np.asarray(data)
        msk = None if mask is None else np.asarray(mask)
        if noise_sigma_map is not None:
            return self._fit_sigma_map(arr, msk, noise_sigma_map, chunk_voxels)
        if self.floor == "rician" and self.noise_sigma is None:
            sigma, how = self.estimate_noise(arr, msk)
            model = _copy_model(self)
            model.noise_sigma = sigma
            model._sigma_estimated = how
            return Model.fit(model, arr, msk, chunk_voxels=chunk_voxels)
        return super().fit(arr, msk, chunk_voxels=chunk_voxels)

    def _fit_sigma_map(
        self,
        arr: np.ndarray,
        msk: np.ndarray | None,
        noise_sigma_map: npt.ArrayLike,
        chunk_voxels: int | None,
    ) -> FitResult:
        from ..fitting.engine import validate_inputs

        if self.floor != "rician" or self.noise_sigma is not None:
            raise FitError(
                "noise_sigma_map needs floor='rician' and no scalar noise_sigma",
                field="noise_sigma_map",
            )
        arr, m = validate_inputs(
            arr, msk, n_measurements=self.n_measurements, what=self.measurement_name
        )
        sig = np.asarray(noise_sigma_map, dtype=float)
        if sig.shape != arr.shape[:-1]:
            raise FitError(
                f"noise_sigma_map shape {sig.shape} does not match the data's spatial shape "
                f"{arr.shape[:-1]}",
                field="noise_sigma_map",
            )
        good = np.isfinite(sig) & (sig > 0)
        safe = np.where(good, sig, 1.0)
        scaled = np.asarray(arr, dtype=np.float64) / safe[..., None]
        scaled[~good] = np.nan  # -> INVALID_INPUT
        model = _copy_model(self)
        model.noise_sigma = 1.0
        res = Model.fit(model, scaled, m, chunk_voxels=chunk_voxels)
        res.maps["S0"] = (res.maps["S0"] * safe).astype(np.float32)
        res.stderr["S0"] = (res.stderr["S0"] * safe).astype(np.float32)
        res.rss = (res.rss * safe**2).astype(np.float32)
        res.provenance["options"]["noise_sigma"] = "map"
        res.provenance["options"]["noise_sigma_map_median"] = (
            float(np.median(sig[good])) if good.any() else None
        )
        return res

    def estimate_noise_sigma(
        self, data: npt.ArrayLike, mask: npt.ArrayLike | None = None, *, max_voxels: int = 5000
    ) -> float:
        """Rician noise level of multi-echo magnitude data (see :meth:`estimate_noise`)."""
        return self.estimate_noise(data, mask, max_voxels=max_voxels)[0]

    def estimate_noise(
        self, data: npt.ArrayLike, mask: npt.ArrayLike | None = None, *, max_voxels: int = 5000
    ) -> tuple[float, str]:
        """Rician noise level of multi-echo magnitude data, and how it was obtained.

        1. ``"background"``: signal-free voxels, when the data hold enough of them. Starting
           from the 5 % quantile of the first echo read as a Rayleigh quantile, voxels whose
           first echo is below ``3σ`` are selected and σ is re-estimated by Rayleigh maximum
           likelihood, ``σ² = mean(M²)/2``, over their *later* echoes (the selection
           truncates only the first), until it settles. The selection is accepted as
           background only if it holds at least 2 % of the voxels (and 50) and its mean
           magnitude does not decay across the later echoes (within 10 %): tissue decays,
           noise does not (Gudbjartsson & Patz 1995, doi:10.1002/mrm.1910340618).
        2. ``"decays"``: otherwise every voxel (an evenly spaced subset of ``max_voxels``) is
           fitted with σ as a third parameter, ``E[M] = R_σ(S0 e^{-TE R})``, from a small
           starting σ, and the median σ is taken over the voxels in which it is identifiable:
           the decay is seen going from clearly above the floor (fitted amplitude > 5σ at
           the first echo) onto it (< 2σ at the last), σ's standard error is below 30 % and
           the residuals are as large as σ says (mean square > 0.15 σ²: a large σ that turns
           a slow decay into a fast decay onto a high floor fits with residuals far below σ).
        3. ``"none"``: fewer than 10 such voxels: no voxel decays onto the floor, so the floor
           cannot bias the fits; σ = 0 (a plain mono-exponential fit).

        A σ measured elsewhere (e.g. :func:`tumorscope.models.fluorine.rayleigh_sigma` over a
        chosen background region) is always better: pass it as ``noise_sigma``.

        Parameters
        ----------
        data : array_like, shape (..., n_echoes)
        mask : array_like of bool, shape data.shape[:-1], optional
            Voxels to use (the background step needs signal-free voxels: a tight tissue mask
            removes them).

        Returns
        -------
        sigma : float
            In signal units.
        method : {"background", "decays", "none"}
        """
        from ..fitting.engine import validate_inputs

        arr, m = validate_inputs(
            data, mask, n_measurements=self.n_measurements, what=self.measurement_name
        )
        if self.echo_times_ms.size < 4:
            raise FitError(
                f"estimating the noise level needs at least 4 echoes, got "
                f"{self.echo_times_ms.size}; pass noise_sigma",
                field="noise_sigma",
            )
        flat = arr.reshape(-1, arr.shape[-1])
        if m is not None:
            flat = flat[m.reshape(-1)]
        y = np.asarray(flat, dtype=np.float64)
        y = y[np.all(np.isfinite(y), axis=1) & np.all(y >= 0, axis=1)]
        if y.shape[0] == 0:
            return 0.0, "none"
        bg = _background_sigma(y)
        if bg is not None:
            return bg, "background"
        y = y[np.any(y > 0, axis=1)]
        if y.shape[0] > max_voxels:
            y = y[np.linspace(0, y.shape[0] - 1, max_voxels).astype(np.int64)]
        if y.shape[0] == 0:
            return 0.0, "none"
        sigma = self._decay_sigma(y)
        return (sigma, "decays") if sigma > 0 else (0.0, "none")

    def _decay_sigma(self, y: np.ndarray) -> float:
        te = self.echo_times_ms
        plain = _copy_model(self)
        plain.floor = "none"
        pr, _, _ = plain._varpro(y)
        lo_r, hi_r = self._rate_bounds
        s0 = np.where(pr[:, 0] > 0, pr[:, 0], y.max(axis=1))
        r0 = np.clip(np.nan_to_num(pr[:, 1], nan=lo_r), lo_r, hi_r)
        # start with a small floor: a large one explains a slow decay as a fast decay onto a
        # high floor, a spurious local optimum
        sig0 = 0.01 * s0
        p0 = np.stack([s0, r0, sig0], axis=1)

        def fun(p: np.ndarray) -> np.ndarray:
            return t2star_rician_signal(p[:, :2], te, p[:, 2])

        def jac(p: np.ndarray) -> np.ndarray:
            a = monoexp_signal(p[:, :2], te)
            sig = p[:, 2:3]
            e = rician_mean(a, sig)
            da = rician_mean_derivative(a, sig)
            j2 = monoexp_jacobian(p[:, :2], te) * da[..., None]
            with np.errstate(divide="ignore", invalid="ignore"):
                ds = np.where(
                    sig > 0, (e - a * da) / np.where(sig > 0, sig, 1.0), np.sqrt(np.pi / 2)
                )
            return np.concatenate([j2, ds[..., None]], axis=-1)

        res = levenberg_marquardt(
            y,
            p0,
            np.array([0.0, 0.0, 0.0]),
            np.array([np.inf, hi_r, np.inf]),
            fun=fun,
            jac=jac,
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
        good = (
            ok & (a_first > 5.0 * p[:, 2]) & (a_last < 2.0 * p[:, 2]) & (rel_se < 0.3) & consistent
        )
        if good.sum() < 10:
            return 0.0
        return float(np.median(p[good, 2]))


def _background_sigma(y: np.ndarray) -> float | None:
    """σ from the signal-free voxels of ``y (n, m)``, or None if there are too few (see
    :meth:`_DecayModel.estimate_noise`)."""
    n = y.shape[0]
    if n < 200 or y.shape[1] < 3:
        return None
    m1 = y[:, 0]
    q = 0.05
    s = float(np.quantile(m1, q)) / float(np.sqrt(-2.0 * np.log(1.0 - q)))
    if not s > 0:
        return None
    sel = np.zeros(n, dtype=bool)
    for _ in range(20):
        sel = m1 < 3.0 * s
        if sel.sum() < max(50, 0.02 * n):
            return None
        s_new = float(np.sqrt(np.mean(y[sel, 1:] ** 2) / 2.0))
        done = abs(s_new / s - 1.0) < 1e-4
        s = s_new
        if done:
            break
    mu = y[sel, 1:].mean(axis=0)
    if mu.min() < 0.9 * mu.max():
        return None  # the selection decays: tissue, not background
    return s


@register_model
class T2Star(_DecayModel):
    """Multi-echo gradient echo T2*/R2*, noise-floor aware.

    With the default ``floor="rician"`` the model is the expected magnitude of a
    mono-exponential decay under Rician noise (:func:`t2star_rician_signal`; Gudbjartsson &
    Patz 1995, doi:10.1002/mrm.1910340618; Feng et al. 2013, doi:10.1002/mrm.24607). Short T2*
    (iron-laden tissue) reaches the noise floor within a few echoes; a plain exponential fit
    then mistakes the floor for slow decay and underestimates R2*, the Rician model does not.

    Parameters
    ----------
    echo_times_ms : sequence of float, shape (n_echoes,)
        Echo times in ms, > 0, strictly increasing, at least 2 (4 to estimate the noise).
    noise_sigma : float, optional, keyword-only
        Rician noise level (SD of each of the real and imaginary channels, signal units),
        e.g. from a background region. Estimated from the decays when omitted
        (:meth:`estimate_noise_sigma`); the value used is recorded in the provenance.
    floor : {"rician", "none"}, default "rician", keyword-only
        ``"none"`` fits a plain exponential (exact least squares, variable projection).
    backend : {"auto", "numba", "numpy"}, keyword-only
        Solver of the Rician model: the compiled per-voxel LM (``"numba"``, the default when
        numba is installed) or the vectorised numpy LM. The plain fit is closed-form.

    Notes
    -----
    Maps: ``"S0"`` (a.u.), ``"R2star"`` (1/s), derived ``"T2star"`` (ms).
    """

    name = "t2star"
    parameters = (
        ParameterSpec(
            "S0",
            "a.u.",
            0.0,
            np.inf,
            typical=(500.0, 5000.0),
            description="signal extrapolated to TE = 0",
        ),
        ParameterSpec(
            "R2star",
            "1/s",
            0.0,
            5000.0,
            typical=(10.0, 300.0),
            description="transverse relaxation rate (gradient echo)",
        ),
    )
    derived = (ParameterSpec("T2star", "ms", 0.0, np.inf, description="1000 / R2star"),)
    _rate_bounds = (0.1, 5000.0)

    def __init__(
        self,
        echo_times_ms: Sequence[float] | npt.ArrayLike,
        *,
        noise_sigma: float | None = None,
        floor: Literal["rician", "none"] = "rician",
        backend: str = "auto",
    ) -> None:
        if floor == "offset":
            raise FitError(
                "T2Star has floor 'rician' or 'none'; use T2Offset for an offset", field="floor"
            )
        super().__init__(echo_times_ms, floor=floor, noise_sigma=noise_sigma, backend=backend)

    @classmethod
    def from_protocol(cls, protocol: Any, **options: Any) -> T2Star:
        """Build from a :class:`~tumorscope.protocol.MultiEchoProtocol`."""
        return cls(protocol.echo_times_ms, **options)

    def derive(self, maps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"T2star": _rate(maps["R2star"])}

    @classmethod
    def example(cls) -> T2Star:
        return cls([2.0, 4.0, 6.0, 8.0, 12.0, 16.0, 20.0, 25.0], noise_sigma=1.0)

    def sample_parameters(self, n: int, *, rng: np.random.Generator) -> np.ndarray:
        return np.stack([rng.uniform(500.0, 5000.0, n), rng.uniform(10.0, 300.0, n)], axis=1)


@register_model
class T2(_DecayModel):
    """Multi-echo spin echo T2 (mono-exponential).

    ``S0 exp(-TE/T2)`` by exact least squares (variable projection). ``floor="rician"`` fits
    the Rician expected magnitude instead (as :class:`T2Star`), with ``noise_sigma`` given or
    estimated. For an additive offset use :class:`T2Offset`. Stimulated echoes from imperfect
    refocusing (multi-echo CPMG) are not modelled: drop the first echo, or use sequences
    with crushers, when they matter (Milford et al. 2015, doi:10.1371/journal.pone.0145255).

    Parameters
    ----------
    echo_times_ms : sequence of float, shape (n_echoes,)
    floor : {"none", "rician"}, default "none", keyword-only
    noise_sigma : float, optional, keyword-only
        Only with ``floor="rician"``.
    backend : str, keyword-only

    Notes
    -----
    Maps: ``"S0"`` (a.u.), ``"T2"`` (ms), derived ``"R2"`` (1/s).
    """

    name = "t2"
    parameters: ClassVar[tuple[ParameterSpec, ...]] = (
        ParameterSpec(
            "S0",
            "a.u.",
            0.0,
            np.inf,
            typical=(500.0, 5000.0),
            description="signal extrapolated to TE = 0",
        ),
        ParameterSpec(
            "T2", "ms", 1.0, 5000.0, typical=(30.0, 300.0), description="transverse relaxation time"
        ),
    )
    derived = (ParameterSpec("R2", "1/s", 0.0, np.inf, description="1000 / T2"),)
    _rate_bounds = (0.2, 1000.0)
    _time_parameter = True

    def __init__(
        self,
        echo_times_ms: Sequence[float] | npt.ArrayLike,
        *,
        floor: Literal["none", "rician"] = "none",
        noise_sigma: float | None = None,
        backend: str = "auto",
    ) -> None:
        if floor == "offset" and type(self) is T2:
            raise FitError("use T2Offset for a mono-exponential with an offset", field="floor")
        super().__init__(echo_times_ms, floor=floor, noise_sigma=noise_sigma, backend=backend)

    @classmethod
    def from_protocol(cls, protocol: Any, **options: Any) -> T2:
        """Build from a :class:`~tumorscope.protocol.MultiEchoProtocol`."""
        return cls(protocol.echo_times_ms, **options)

    def _rate_of(self, q: np.ndarray) -> np.ndarray:
        return _rate(q)

    def _drate(self, q: np.ndarray) -> np.ndarray:
        return -1000.0 / np.asarray(q, dtype=float) ** 2

    def _from_rate(self, r: np.ndarray) -> np.ndarray:
        return _rate(r)

    def derive(self, maps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"R2": _rate(maps["T2"])}

    @classmethod
    def example(cls) -> T2:
        return cls([10.0, 20.0, 30.0, 40.0, 60.0, 80.0, 120.0, 160.0])

    def sample_parameters(self, n: int, *, rng: np.random.Generator) -> np.ndarray:
        return np.stack([rng.uniform(500.0, 5000.0, n), rng.uniform(30.0, 300.0, n)], axis=1)


@register_model
class T2Offset(T2):
    """Mono-exponential T2 with a constant offset, ``S0 exp(-TE/T2) + offset``.

    The offset absorbs a noise floor or a long-T2 background crudely (it biases T2 less than
    ignoring the floor, more than the Rician model; Milford et al. 2015,
    doi:10.1371/journal.pone.0145255). Exact least squares: ``S0`` and the offset are linear.
    At least three echoes.

    Notes
    -----
    Maps: ``"S0"``, ``"T2"`` (ms), ``"offset"`` (a.u.), derived ``"R2"`` (1/s).
    """

    name = "t2_offset"
    parameters = (
        *T2.parameters,
        ParameterSpec(
            "offset",
            "a.u.",
            -np.inf,
            np.inf,
            typical=(0.0, 50.0),
            description="constant added to the decay",
        ),
    )

    def __init__(
        self, echo_times_ms: Sequence[float] | npt.ArrayLike, *, backend: str = "auto"
    ) -> None:
        _DecayModel.__init__(self, echo_times_ms, floor="offset", noise_sigma=None, backend=backend)

    @classmethod
    def example(cls) -> T2Offset:
        return cls([10.0, 20.0, 30.0, 40.0, 60.0, 80.0, 120.0, 160.0])

    def sample_parameters(self, n: int, *, rng: np.random.Generator) -> np.ndarray:
        base = super().sample_parameters(n, rng=rng)
        return np.column_stack([base, rng.uniform(0.0, 50.0, n)])
