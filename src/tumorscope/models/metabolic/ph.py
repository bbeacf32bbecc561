"""Extracellular pH from hyperpolarised H13CO3⁻ and 13CO2 (Henderson–Hasselbalch).

After injection of hyperpolarised H13CO3⁻, carbonic anhydrase keeps bicarbonate and CO2 in
fast exchange, so their signal ratio reads the pH (Gallagher et al., Nature 2008;
453:940-943, doi:10.1038/nature07017)::

    pH = pKa + log10([H13CO3⁻] / [13CO2]),        pKa = 6.17 (37 °C, physiological ionic
                                                    strength; Gallagher 2008)

Corrections (stated, all optional; defaults are the published assumptions):

* **flip angle**: each signal is divided by ``sin θ`` of its own excitation (different flips
  for the two resonances; equal flips cancel);
* **polarisation / T1**: in fast exchange the two pools share one polarisation and one
  effective T1 (the exchange, ~10 s⁻¹, is far faster than relaxation), so no correction is
  needed and none is made by default. When the pools were read at a time ``delay_s`` after
  they were last in equilibrium and are known to relax differently, each amplitude is
  back-extrapolated by ``exp(delay / T1)`` of its own pool (``t1_bicarbonate_s``,
  ``t1_co2_s``);
* **SNR**: the CO2 peak is about a tenth of bicarbonate's at pH 7.2; voxels whose CO2 SNR
  (amplitude / ``noise_sigma``) is below ``min_snr`` get NaN (the log of a noisy ratio is
  biased and unbounded).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ...errors import FitError

__all__ = ["PKA_BICARBONATE", "bicarbonate_ratio", "ph_from_bicarbonate"]

#: pKa of the bicarbonate / CO2 pair (Gallagher et al. 2008).
PKA_BICARBONATE = 6.17


def bicarbonate_ratio(ph: npt.ArrayLike, *, pka: float = PKA_BICARBONATE) -> np.ndarray:
    """``[HCO3⁻]/[CO2] = 10**(pH − pKa)`` (the forward model)."""
    return np.power(10.0, np.asarray(ph, dtype=float) - pka)


def ph_from_bicarbonate(
    bicarbonate: npt.ArrayLike,
    co2: npt.ArrayLike,
    *,
    pka: float = PKA_BICARBONATE,
    flip_bicarbonate_deg: float | None = None,
    flip_co2_deg: float | None = None,
    delay_s: float = 0.0,
    t1_bicarbonate_s: float | None = None,
    t1_co2_s: float | None = None,
    noise_sigma: npt.ArrayLike | None = None,
    min_snr: float = 3.0,
) -> np.ndarray:
    """pH map from bicarbonate and CO2 amplitudes (any matching shapes; e.g. summed over time).

    Parameters
    ----------
    bicarbonate, co2 : array_like
        Signal amplitudes (areas) of H13CO3⁻ (161 ppm) and 13CO2 (125 ppm).
    pka : float, default 6.17
    flip_bicarbonate_deg, flip_co2_deg : float, optional
        Flip angles of the two resonances (both or neither).
    delay_s, t1_bicarbonate_s, t1_co2_s : float, optional
        Differential-relaxation correction (see the module docstring; both T1s or neither).
    noise_sigma : float or array_like, optional
        Noise level of the amplitudes, for the CO2 SNR gate.
    min_snr : float, default 3

    Returns
    -------
    ndarray of float
        pH; NaN where an amplitude is not positive or the CO2 SNR is below ``min_snr``.
    """
    hco3 = np.asarray(bicarbonate, dtype=float)
    c = np.asarray(co2, dtype=float)
    if hco3.shape != c.shape:
        raise FitError(f"bicarbonate {hco3.shape} and co2 {c.shape} shapes differ", field="co2")
    if (flip_bicarbonate_deg is None) != (flip_co2_deg is None):
        raise FitError("give both flip angles or neither", field="flip_co2_deg")
    if (t1_bicarbonate_s is None) != (t1_co2_s is None):
        raise FitError("give both T1s or neither", field="t1_co2_s")
    ratio_scale = 1.0
    if flip_bicarbonate_deg is not None and flip_co2_deg is not None:
        for f, v in (
            ("flip_bicarbonate_deg", flip_bicarbonate_deg),
            ("flip_co2_deg", flip_co2_deg),
        ):
            if not 0 < v <= 90:
                raise FitError(f"must be in (0, 90] degrees, got {v!r}", field=f)
        ratio_scale *= np.sin(np.deg2rad(flip_co2_deg)) / np.sin(np.deg2rad(flip_bicarbonate_deg))
    if t1_bicarbonate_s is not None and t1_co2_s is not None:
        if t1_bicarbonate_s <= 0 or t1_co2_s <= 0:
            raise FitError("T1s must be > 0 s", field="t1_co2_s")
        ratio_scale *= np.exp(delay_s / t1_bicarbonate_s - delay_s / t1_co2_s)
    ok = (hco3 > 0) & (c > 0)
    if noise_sigma is not None:
        ok &= c / np.asarray(noise_sigma, dtype=float) >= min_snr
    with np.errstate(divide="ignore", invalid="ignore"):
        ph = pka + np.log10(ratio_scale * hco3 / np.where(ok, c, 1.0))
    return np.where(ok, ph, np.nan)
