"""Relaxometry signal equations with analytic Jacobians, and their closed-form solutions.

Pure, vectorised functions (parameters on the last axis, measurements appended as the last axis
of the output): spoiled gradient echo (SPGR) with DESPOT1 and two-point VFA T1, inversion
recovery, mono-exponential decay (with an optional offset), the Rician expected magnitude and
the T2* signal under Rician noise.

Units: relaxation times in ms, rates in 1/s, echo/inversion/repetition times in ms, flip angles
in degrees at the interface (radians inside).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import special

__all__ = [
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
