"""1H MRS of a tumour voxel or an MRSI grid: preprocessing, linear-combination fit, CRLBs.

Arrays in, arrays out (reading NIfTI-MRS is :mod:`tumorscope.io.mrs`). The chain, each step a
function:

1. :func:`coil_combine`: receive channels weighted by ``conj(s_c(0)) / σ_c²`` (the phase of
   each channel's first FID point and its signal-to-noise², Hall et al., NeuroImage 2014;
   86:35-42, doi:10.1016/j.neuroimage.2013.04.077, "S/N² weighting");
2. :func:`align`: frequency and zero-order phase of every transient registered to their
   mean in the time domain over the first ``0.2 s`` (spectral registration, Near et al., Magn
   Reson Med 2015;73:44-50, doi:10.1002/mrm.25094), then averaged;
3. :func:`hlsvd` / :func:`remove_water`: Hankel-SVD (HTLS/ESPRIT: Pijnappel et al., J Magn
   Reson 1992;97:122-134, doi:10.1016/0022-2364(92)90241-X) decomposition into damped
   sinusoids; the components within ``±water_halfwidth_ppm`` of 4.7 ppm (or above the
   metabolite window) are subtracted;
4. :func:`fit_lcm`: LCModel-style linear combination (Provencher, Magn Reson Med 1993;30:
   672-679) of a basis (:mod:`.basis`) in the frequency domain over ``0.2–4.2 ppm``: a common
   zero-order phase, frequency shift, Lorentzian and Gaussian broadening (nonlinear, by
   variable projection), non-negative concentrations and a complex polynomial baseline
   (linear); Cramér–Rao lower bounds from the Fisher information of all parameters with
   the noise variance of the residual (Cavassila et al., NMR Biomed 2001;14:278-283);
5. :func:`water_scaled` (concentrations in mM against a water reference) and
   :func:`mrs_ratios` (tCho/Cr, tCho/NAA, (Cho+Cr)/Cit, Lac/Cr).

Frequency axis: 0 Hz is 4.7 ppm; ``ppm = 4.7 + f / frequency_mhz``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ...errors import DataError, FitError
from .basis import CENTER_PPM, Basis

__all__ = [
    "LCMResult",
    "align",
    "coil_combine",
    "coil_noise",
    "coil_weights",
    "fit_lcm",
    "hlsvd",
    "mrs_ratios",
    "ppm_axis",
    "remove_water",
    "water_scaled",
]

#: Water concentration of the reference (mM of water molecules); LCModel's default WCONC
#: (white matter, 35 880 mM). Tissue-specific values and relaxation corrections are the
#: caller's (``water_conc_mM=``).
WATER_CONC_MM = 35880.0


def _check_fid(fid: np.ndarray, what: str = "fid") -> np.ndarray:
    arr = np.asarray(fid)
    if not np.all(np.isfinite(arr)):
        raise DataError("contains NaN or infinite values", field=what)
    return arr.astype(np.complex128)


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """One BLAS thread for a small SVD: a threaded LAPACK on a busy machine spends 30×
    longer waiting for its threads than computing (measured: 4 s against 0.1 s for a
    256 × 257 complex SVD on two shared cores). Uses threadpoolctl when installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        yield
        return
    with threadpool_limits(1):
        yield


def ppm_axis(n_points: int, dwell_s: float, frequency_mhz: float) -> np.ndarray:
    """ppm of each point of ``np.fft.fftshift(np.fft.fft(fid))``."""
    f = np.fft.fftshift(np.fft.fftfreq(n_points, dwell_s))
    return CENTER_PPM + f / frequency_mhz


def coil_noise(fids: npt.ArrayLike) -> np.ndarray:
    """Noise SD of each channel ``(n_coils, ..., n_points)``: the standard deviation of its
    last 10 % of points (where a water-suppressed FID has decayed)."""
    x = _check_fid(np.asarray(fids), "coils")
    tail = x[..., int(0.9 * x.shape[-1]) :].reshape(x.shape[0], -1)
    return np.asarray(tail.std(axis=1))


def coil_weights(fids: npt.ArrayLike, noise_sigma: npt.ArrayLike | None = None) -> np.ndarray:
    """S/N² weights ``conj(s_c(0)) / σ_c²`` of channels ``(n_coils, ..., n_points)``, shape
    ``(n_coils, ...)``. Computed on the water reference when there is one and applied to both
    (the metabolite and water signals then keep their ratio)."""
    x = _check_fid(np.asarray(fids), "coils")
    sigma = coil_noise(x) if noise_sigma is None else np.asarray(noise_sigma, dtype=float)
    sigma = np.where(sigma > 0, sigma, 1.0).reshape((-1,) + (1,) * (x.ndim - 2))
    return np.asarray(np.conj(x[..., 0]) / sigma**2)


def coil_combine(
    fids: npt.ArrayLike,
    noise_sigma: npt.ArrayLike | None = None,
    *,
    weights: npt.ArrayLike | None = None,
) -> np.ndarray:
    """Combine channels ``(n_coils, ..., n_points)`` → ``(..., n_points)``.

    ``Σ w_c s_c / Σ |w_c|`` with ``weights`` (shape ``(n_coils, ...)``, broadcast over the
    axes after the voxel axes) or :func:`coil_weights` of the data themselves.
    """
    x = _check_fid(np.asarray(fids), "coils")
    w = coil_weights(x, noise_sigma) if weights is None else np.asarray(weights)
    w = w.reshape(w.shape + (1,) * (x.ndim - w.ndim))
    norm = np.abs(w).sum(axis=0)
    return np.asarray((w * x).sum(axis=0) / np.where(norm > 0, norm, 1.0))


def align(
    transients: npt.ArrayLike,
    dwell_s: float,
    *,
    window_s: float = 0.2,
    reference: npt.ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frequency/phase-align transients ``(n, n_points)`` and average them.

    Returns
    -------
    mean : ndarray, shape (n_points,)
        Average of the aligned transients.
    shift_hz, phase_rad : ndarray, shape (n,)
        The correction applied to each transient (``s · exp(i(2π f t + φ))``).
    """
    from scipy.optimize import least_squares

    x = _check_fid(np.asarray(transients), "transients")
    if x.ndim != 2:
        raise DataError(f"transients must be (n, n_points), got {x.shape}", field="transients")
    t = np.arange(x.shape[1]) * dwell_s
    m = max(8, min(x.shape[1], round(window_s / dwell_s)))
    ref = x.mean(axis=0) if reference is None else _check_fid(np.asarray(reference), "reference")
    shifts = np.zeros(x.shape[0])
    phases = np.zeros(x.shape[0])
    tt = t[:m]
    for i in range(x.shape[0]):
        # start: phase of the correlation at zero shift
        phases[i] = np.angle(np.vdot(x[i, :m], ref[:m]))

        def res(p: np.ndarray, i: int = i) -> np.ndarray:
            d = ref[:m] - x[i, :m] * np.exp(1j * (2 * np.pi * p[0] * tt + p[1]))
            return np.concatenate([d.real, d.imag])

        sol = least_squares(res, [0.0, phases[i]], method="lm", x_scale=[1.0, 0.1])
        shifts[i], phases[i] = sol.x
    corr = x * np.exp(1j * (2 * np.pi * shifts[:, None] * t + phases[:, None]))
    return corr.mean(axis=0), shifts, phases


def hlsvd(
    fid: npt.ArrayLike, dwell_s: float, n_components: int = 25, *, max_points: int = 512
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Damped sinusoids of a FID by Hankel SVD (HTLS).

    Returns
    -------
    freq_hz, damping_per_s, amplitude : ndarray, shape (K,)
        ``fid(t) ≈ Σ a_k exp((i 2π f_k − d_k) t)``.
    """
    from scipy.linalg import hankel, svd

    x = _check_fid(np.asarray(fid))
    n = min(x.size, max_points)
    y = x[:n]
    rows = n // 2
    H = hankel(y[:rows], y[rows - 1 : n])
    with _one_blas_thread():
        U, _, _ = svd(H, full_matrices=False)
    k = min(n_components, U.shape[1] - 1)
    Uk = U[:, :k]
    Z = np.linalg.lstsq(Uk[:-1], Uk[1:], rcond=None)[0]
    poles = np.linalg.eigvals(Z)
    poles = poles[np.abs(poles) > 0]
    V = poles[None, :] ** np.arange(n)[:, None]
    amp = np.linalg.lstsq(V, y, rcond=None)[0]
    freq = np.angle(poles) / (2 * np.pi * dwell_s)
    damp = -np.log(np.abs(poles)) / dwell_s
    return freq, damp, amp


def remove_water(
    fid: npt.ArrayLike,
    dwell_s: float,
    frequency_mhz: float,
    *,
    water_halfwidth_ppm: float = 0.3,
    above_ppm: float = 4.4,
    n_components: int = 25,
) -> np.ndarray:
    """The FID minus its HLSVD components near water (``4.7 ± halfwidth``) or above
    ``above_ppm`` (residual water sidebands); the metabolite window below is untouched."""
    x = _check_fid(np.asarray(fid))
    freq, damp, amp = hlsvd(x, dwell_s, n_components)
    ppm = CENTER_PPM + freq / frequency_mhz
    sel = (np.abs(ppm - CENTER_PPM) < water_halfwidth_ppm) | (ppm > above_ppm)
    t = np.arange(x.size) * dwell_s
    water = (amp[sel, None] * np.exp((2j * np.pi * freq[sel, None] - damp[sel, None]) * t)).sum(0)
    return x - water


@dataclass
class LCMResult:
    """Result of :func:`fit_lcm` (amplitudes in basis units: per proton-normalised FID).

    Attributes
    ----------
    amplitudes, crlb : dict of str to float
        Fitted amplitude of each metabolite and its Cramér–Rao lower bound (same unit).
    crlb_percent : dict of str to float
        ``100 · crlb / amplitude`` (inf where the amplitude is 0).
    phase_rad, shift_hz, lorentz_hz, gauss_hz : float
        Fitted zero-order phase, frequency shift and added line broadenings (FWHM).
    noise_sigma : float
        Noise standard deviation of the spectrum points (from the residual).
    snr : float
        Largest metabolite peak of the fitted spectrum over ``noise_sigma``.
    fitted, residual, ppm : ndarray
        The fitted spectrum, data − fit and the ppm axis, over the fit window.
    """

    amplitudes: dict[str, float]
    crlb: dict[str, float]
    crlb_percent: dict[str, float]
    phase_rad: float
    shift_hz: float
    lorentz_hz: float
    gauss_hz: float
    noise_sigma: float
    snr: float
    fitted: np.ndarray = field(repr=False)
    residual: np.ndarray = field(repr=False)
    ppm: np.ndarray = field(repr=False)


def _broadened(basis: Basis, theta: np.ndarray) -> np.ndarray:
    """Basis FIDs with the phase, shift and broadening of ``theta`` = (φ, δ, lwL, β):
    Lorentzian FWHM ``lwL`` (Hz) and the Gaussian decay ``exp(-β t²)``, ``β = (π lwG)²/(4 ln 2)``
    (β rather than lwG: the gradient in lwG vanishes at lwG = 0 and a solver started there
    would never leave it)."""
    phase, shift, lwl, beta = theta
    t = basis.time()
    env = np.exp(1j * phase + (2j * np.pi * shift - np.pi * lwl) * t - beta * t * t)
    return basis.fids * env


def _beta(gauss_fwhm_hz: float) -> float:
    """Gaussian decay constant ``β`` (1/s²) of a Gaussian line of FWHM ``gauss_fwhm_hz``."""
    return float((np.pi * gauss_fwhm_hz) ** 2 / (4 * np.log(2)))


def fit_lcm(
    fid: npt.ArrayLike,
    basis: Basis,
    *,
    ppm_range: tuple[float, float] = (0.2, 4.2),
    baseline_order: int = 3,
    shift_limit_hz: float = 20.0,
) -> LCMResult:
    """Linear-combination fit of a (water-suppressed) FID with ``basis`` (see the module
    docstring). The FID must share the basis's dwell time, frequency and length.

    Raises
    ------
    DataError
        NaN/inf in the FID, or a FID whose length disagrees with the basis.
    """
    from scipy.optimize import least_squares, lsq_linear

    x = _check_fid(np.asarray(fid))
    if x.shape != (basis.n_points,):
        raise DataError(f"FID has {x.shape} points, the basis {basis.n_points}", field="n_points")
    n = basis.n_points
    ppm = ppm_axis(n, basis.dwell_s, basis.frequency_mhz)
    win = (ppm >= min(ppm_range)) & (ppm <= max(ppm_range))
    if win.sum() < 16:
        raise FitError(f"fit window {ppm_range} holds {int(win.sum())} points", field="ppm_range")
    Y = np.fft.fftshift(np.fft.fft(x))[win]
    pw = ppm[win]
    z = (pw - pw.mean()) / (np.ptp(pw) / 2)
    poly = np.stack([z**k for k in range(baseline_order + 1)], axis=1)
    nb, npoly = len(basis.names), poly.shape[1]
    # real design: metabolite columns [Re; Im], baseline real and imaginary parts separately
    base_cols = np.concatenate(
        [np.vstack([poly, np.zeros_like(poly)]), np.vstack([np.zeros_like(poly), poly])], axis=1
    )
    y_r = np.concatenate([Y.real, Y.imag])
    lb = np.concatenate([np.zeros(nb), np.full(2 * npoly, -np.inf)])
    ub = np.full(nb + 2 * npoly, np.inf)

    def design(theta: np.ndarray) -> np.ndarray:
        S = np.fft.fftshift(np.fft.fft(_broadened(basis, theta), axis=1), axes=1)[:, win].T
        return np.concatenate([np.vstack([S.real, S.imag]), base_cols], axis=1)

    def inner(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = design(theta)
        scale = np.linalg.norm(X, axis=0)
        scale[scale == 0] = 1.0
        sol = lsq_linear(X / scale, y_r, bounds=(lb, ub), method="bvls")
        coef = sol.x / scale
        return coef, y_r - X @ coef

    # start: a shift grid; at each shift the phase is that of the metabolite amplitudes of an
    # unconstrained complex least-squares fit (a zero-order phase rotates them all alike)
    best = (np.inf, np.zeros(4))
    for sh in np.linspace(-shift_limit_hz, shift_limit_hz, 9):
        th = np.array([0.0, sh, 3.0, _beta(3.0)])
        S = np.fft.fftshift(np.fft.fft(_broadened(basis, th), axis=1), axes=1)[:, win].T
        Xc = np.concatenate([S, poly], axis=1)
        c = np.linalg.lstsq(Xc, Y, rcond=None)[0]
        r = float(np.sum(np.abs(Y - Xc @ c) ** 2))
        if r < best[0]:
            total = c[:nb].sum()
            best = (r, np.array([float(np.angle(total)), sh, 3.0, _beta(3.0)]))
    lo = np.array([-2 * np.pi, -shift_limit_hz, 0.0, 0.0])
    hi = np.array([2 * np.pi, shift_limit_hz, 60.0, _beta(60.0)])
    th0 = np.clip(best[1], lo + 1e-9, hi - 1e-9)
    sol = least_squares(
        lambda th: inner(th)[1], th0, bounds=(lo, hi), x_scale=[0.1, 1.0, 1.0, _beta(5.0)]
    )
    theta = sol.x
    coef, resid = inner(theta)
    dof = max(y_r.size - (nb + 2 * npoly + 4), 1)
    sigma = float(np.sqrt(np.sum(resid**2) / dof))
    # Fisher information of all parameters (linear columns exact, nonlinear by differences)
    X = design(theta)
    cols = [X]
    for i, h in enumerate((1e-4, 1e-3, 1e-3, 1e-3 * _beta(5.0))):
        tp, tm = theta.copy(), theta.copy()
        tp[i] += h
        tm[i] -= h
        cols.append(((design(tp) - design(tm)) @ coef / (2 * h))[:, None])
    J = np.concatenate(cols, axis=1)
    cov = np.linalg.pinv(J.T @ J) * sigma**2
    sd = np.sqrt(np.clip(np.diag(cov)[:nb], 0, None))
    amps = {nm: float(coef[i]) for i, nm in enumerate(basis.names)}
    crlb = {nm: float(sd[i]) for i, nm in enumerate(basis.names)}
    pct = {nm: (100 * crlb[nm] / amps[nm] if amps[nm] > 0 else np.inf) for nm in basis.names}
    fitted_r = X @ coef
    fitted = fitted_r[: win.sum()] + 1j * fitted_r[win.sum() :]
    metab = X[:, :nb] @ coef[:nb]
    peak = float(np.max(np.abs(metab[: win.sum()]))) if nb else 0.0
    return LCMResult(
        amplitudes=amps,
        crlb=crlb,
        crlb_percent=pct,
        phase_rad=float(theta[0]),
        shift_hz=float(theta[1]),
        lorentz_hz=float(theta[2]),
        gauss_hz=float(np.sqrt(theta[3] * 4 * np.log(2)) / np.pi),
        noise_sigma=sigma,
        snr=peak / sigma if sigma > 0 else np.inf,
        fitted=fitted,
        residual=Y - fitted,
        ppm=pw,
    )


def water_amplitude(water_fid: npt.ArrayLike, dwell_s: float) -> float:
    """Amplitude of an unsuppressed water reference at ``t = 0`` (magnitude of a one-line
    HLSVD fit, so that the first point's noise does not enter)."""
    _freq, _damp, amp = hlsvd(water_fid, dwell_s, n_components=4)
    return float(np.abs(amp).max())


def water_scaled(
    amplitudes: dict[str, float],
    water_amp: float,
    *,
    water_conc_mM: float = WATER_CONC_MM,
) -> dict[str, float]:
    """Concentrations (mM) from basis amplitudes and a water reference amplitude.

    The basis gives ``n_H`` signal units per unit amplitude, water two protons per molecule,
    so ``[m] = amplitude · 2 · [water] / A_water`` (relaxation and partial-volume corrections
    are not applied: state them when comparing with literature values).
    """
    if not (np.isfinite(water_amp) and water_amp > 0):
        raise DataError(f"water reference amplitude must be > 0, got {water_amp!r}", field="water")
    k = 2.0 * water_conc_mM / water_amp
    return {n: a * k for n, a in amplitudes.items()}


def mrs_ratios(conc: dict[str, float]) -> dict[str, float]:
    """tCho/Cr, tCho/NAA, (Cho+Cr)/Cit and Lac/Cr from amplitudes or concentrations
    (``Cho`` stands for total choline, ``Cr`` for total creatine; NaN where a denominator
    is absent or 0)."""

    def div(a: float, b: float) -> float:
        return a / b if b > 0 else float("nan")

    cho = conc.get("Cho", np.nan)
    cr = conc.get("Cr", np.nan)
    return {
        "tCho/Cr": div(cho, cr),
        "tCho/NAA": div(cho, conc.get("NAA", np.nan)),
        "(Cho+Cr)/Cit": div(cho + cr, conc.get("Cit", np.nan)),
        "Lac/Cr": div(conc.get("Lac", np.nan), cr),
    }
