"""19F MRI cell quantification with reference tubes and noise-aware detection limits.

Cells labelled ex vivo with a perfluorocarbon (PFC) emulsion carry a known mean number of 19F
spins per cell, ``F_c``, measured by NMR on an aliquot before injection. Because there is no
19F background in tissue, the 19F signal of a region is proportional to the number of 19F
spins in it; a reference tube of known 19F concentration in the field of view fixes the
proportionality. The number of cells in a region is then (Srinivas et al., Magn Reson Med
2007;58:725-734, doi:10.1002/mrm.21352; Ahrens et al., Nat Biotechnol 2005;23:983-987):

.. math:: N_{cells} = \\frac{F_{region}}{F_c},\\qquad
          F_{region} = \\frac{\\sum_{i \\in region} \\hat A_i}{\\kappa},\\qquad
          \\kappa = \\frac{\\bar A_{ref}}{[F]_{ref}\\,V_{voxel}}

``κ`` is the signal per 19F spin in a voxel, fitted through the origin when several tubes of
different concentrations are given (a linearity check the single-tube procedure lacks).

**Noise.** 19F images are low-SNR magnitude images with Rician noise: an empty voxel has the
Rayleigh mean ``σ·sqrt(π/2)``, so summing raw magnitudes counts cells that are not there. This
module (design decisions, see ``docs/cell-imaging.md``):

* estimates ``σ`` from a signal-free background region when it is not given (Rayleigh maximum
  likelihood, ``σ² = mean(M²)/2``; Gudbjartsson & Patz, Magn Reson Med 1995,
  doi:10.1002/mrm.1910340618);
* counts only voxels above a detection threshold ``τ = σ·sqrt(2·ln(n/α))``: the Rayleigh tail
  ``P(M > τ | no signal) = exp(-τ²/2σ²)`` makes the chance of any false-positive voxel in a
  region of ``n`` voxels at most ``α`` (Bonferroni); the classical "SNR > 3.5" rule is the
  ``n/α ≈ 460`` case;
* corrects each counted voxel for the Rician bias with ``Â = sqrt(M² - σ²)`` (Gudbjartsson &
  Patz 1995);
* reports a region with no voxel above ``τ`` as *below detection* (count NaN) together with
  its decision threshold and its detection limit in cells per voxel (Currie, Anal Chem
  1968;40:586-593, doi:10.1021/ac60259a007): the decision threshold is the noise-free voxel
  amplitude detected with 50 % probability (its Rician magnitude exceeds ``τ`` half the time),
  the detection limit the amplitude detected with 95 % probability, both solved from the
  Rician distribution (1.59× apart for one voxel, 1.37× for 343, 1.32× for 10⁴ at α = 0.01);
* flags regions whose counted signal comes largely from voxels near the threshold (estimated
  amplitude under the detection limit): there the count is biased and its standard error
  understates the spread.

Uncertainty: ``Var(Â_i) ≈ σ²`` above threshold, so ``SE(ΣÂ) = σ·sqrt(n_detected)``, combined
in quadrature with the relative standard errors of ``κ`` and (if given) of ``F_c``. Signal
spread thinly over voxels that each stay under ``τ`` is missed, so counts are biased low for
diffuse labelling; that bias is the price of a bounded false-positive rate and is stated in
the output (``n_detected`` versus ``n_voxels``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from ...errors import DataError, FitError

__all__ = [
    "AVOGADRO",
    "FluorineCalibration",
    "calibrate_fluorine",
    "count_cells",
    "detection_amplitude",
    "detection_threshold",
    "rayleigh_sigma",
    "spins_per_voxel",
]

AVOGADRO: Final[float] = 6.02214076e23
BELOW_DETECTION: Final[str] = "below detection"
QUANTIFIED: Final[str] = "quantified"
#: A region is flagged ``near_threshold`` when more than this share of its counted signal comes
#: from voxels whose estimated amplitude is under the detection limit (tumorscope's choice;
#: see ``docs/cell-imaging.md``).
NEAR_THRESHOLD_SHARE: Final[float] = 0.1


def spins_per_voxel(fluorine_mM: npt.ArrayLike, voxel_volume_ml: float) -> np.ndarray:
    """Number of 19F spins in one voxel for a 19F concentration in mM (of 19F atoms).

    ``[F] (mmol/L) × 1e-3 mol/mmol × N_A × V (mL) × 1e-3 L/mL``.
    """
    return np.asarray(fluorine_mM, dtype=float) * 1e-6 * AVOGADRO * float(voxel_volume_ml)


def rayleigh_sigma(background: npt.ArrayLike) -> float:
    """Noise level ``σ`` from magnitude voxels without signal (Rayleigh ML: ``sqrt(mean(M²)/2)``).

    Parameters
    ----------
    background : array_like
        Magnitude values of signal-free voxels (at least 20, finite).
    """
    b = np.asarray(background, dtype=float).ravel()
    b = b[np.isfinite(b)]
    if b.size < 20:
        raise DataError(
            f"background needs at least 20 finite voxels, got {b.size}", field="background"
        )
    return float(np.sqrt(np.mean(b**2) / 2.0))


def detection_threshold(sigma: float, n_voxels: int, *, alpha: float = 0.01) -> float:
    """Magnitude threshold with a family-wise false-positive rate ``alpha`` over ``n_voxels``.

    ``τ = σ sqrt(2 ln(n/α))`` from the Rayleigh tail ``exp(-τ²/2σ²) = α/n``.
    """
    if not 0 < alpha < 1:
        raise FitError(f"must be in (0, 1), got {alpha!r}", field="alpha")
    n = max(int(n_voxels), 1)
    return float(sigma * np.sqrt(2.0 * np.log(n / alpha)))


def detection_amplitude(sigma: float, threshold: float, probability: float) -> float:
    """Noise-free amplitude whose Rician magnitude exceeds ``threshold`` with ``probability``.

    ``P(M > τ | A) = Q₁(A/σ, τ/σ)`` (Marcum Q, the survival function of the Rice
    distribution), solved for ``A``. With ``probability`` 0.5 this is the decision threshold
    in amplitude (≈ ``sqrt(τ² − σ²)``), with 0.95 Currie's detection limit (β = 5 % false
    negatives; Currie, Anal Chem 1968;40:586-593).

    Parameters
    ----------
    sigma : float
        Rician noise level (> 0).
    threshold : float
        Magnitude threshold ``τ`` (> 0).
    probability : float
        Detection probability in (P(M > τ | A = 0), 1).

    Returns
    -------
    float
        The amplitude, in the units of ``sigma``.
    """
    from scipy import optimize, stats

    if not np.isfinite(sigma) or sigma <= 0:
        raise FitError(f"must be > 0, got {sigma!r}", field="sigma")
    t = float(threshold) / float(sigma)
    floor = float(np.exp(-0.5 * t * t))  # the Rayleigh tail: detection of nothing
    if not floor < probability < 1:
        raise FitError(
            f"must be in ({floor:.3g}, 1) at this threshold, got {probability!r}",
            field="probability",
        )

    def excess(b: float) -> float:
        return float(stats.rice.sf(t, b)) - probability

    hi = t + 10.0
    return float(sigma) * float(optimize.brentq(excess, 0.0, hi, xtol=1e-10))


def _corrected(m: np.ndarray, sigma: float) -> np.ndarray:
    return np.sqrt(np.maximum(m**2 - sigma**2, 0.0))


@dataclass(frozen=True)
class FluorineCalibration:
    """Signal per 19F spin from reference tubes.

    Attributes
    ----------
    signal_per_spin : float
        ``κ``: bias-corrected magnitude per 19F spin in a voxel (a.u.).
    signal_per_spin_se : float
        Standard error of ``κ``.
    noise_sigma : float
        Rician noise level used (a.u.).
    voxel_volume_ml : float
    tube_signal : ndarray, shape (n_tubes,)
        Mean bias-corrected magnitude in each tube.
    tube_spins_per_voxel : ndarray, shape (n_tubes,)
    tube_snr : ndarray, shape (n_tubes,)
        ``tube_signal / noise_sigma``.
    """

    signal_per_spin: float
    signal_per_spin_se: float
    noise_sigma: float
    voxel_volume_ml: float
    tube_signal: np.ndarray
    tube_spins_per_voxel: np.ndarray
    tube_snr: np.ndarray


def _mask(m: npt.ArrayLike, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.asarray(m)
    if arr.shape != shape:
        raise DataError(f"{name} shape {arr.shape} does not match the image {shape}", field=name)
    return arr.astype(bool)


def calibrate_fluorine(
    image: npt.ArrayLike,
    tubes: Sequence[npt.ArrayLike],
    fluorine_mM: Sequence[float],
    *,
    voxel_volume_ml: float,
    noise_sigma: float | None = None,
    background: npt.ArrayLike | None = None,
    min_tube_snr: float = 5.0,
) -> FluorineCalibration:
    """Calibrate the signal per 19F spin from reference tubes of known 19F concentration.

    Parameters
    ----------
    image : array_like, shape (X, Y, Z)
        19F magnitude image.
    tubes : sequence of array_like of bool, each shape (X, Y, Z)
        One mask per reference tube (voxels fully inside the tube).
    fluorine_mM : sequence of float
        19F concentration of each tube in mM of 19F atoms (PFC molecules × F atoms each).
    voxel_volume_ml : float
        Voxel volume in mL.
    noise_sigma : float, optional
        Rician noise level; estimated from ``background`` when omitted.
    background : array_like of bool, optional
        Signal-free region (air, tissue without label) for :func:`rayleigh_sigma`.
    min_tube_snr : float, default 5
        A tube whose mean SNR is lower cannot calibrate (its Rician bias correction would
        dominate); it is rejected with an error.

    Returns
    -------
    FluorineCalibration
    """
    img = np.asarray(image, dtype=float)
    if img.ndim != 3:
        raise DataError(f"expected a 3-D 19F image, got shape {img.shape}", field="image")
    tube_list = list(tubes)
    conc = np.asarray(list(fluorine_mM), dtype=float)
    if len(tube_list) == 0:
        raise FitError("at least one reference tube is needed", field="tubes")
    if conc.size != len(tube_list):
        raise FitError(
            f"{len(tube_list)} tube masks but {conc.size} fluorine concentrations; give one "
            "known 19F concentration (mM) per tube",
            field="fluorine_mM",
        )
    bad = np.flatnonzero(~np.isfinite(conc) | (conc <= 0))
    if bad.size:
        raise FitError(
            f"tube concentrations must be finite and > 0 mM, got {float(conc[bad[0]]):g} for "
            f"tube {bad[0] + 1} (in label order)",
            field="fluorine_mM",
        )
    if not np.isfinite(voxel_volume_ml) or voxel_volume_ml <= 0:
        raise FitError(f"must be > 0, got {voxel_volume_ml!r}", field="voxel_volume_ml")
    sigma = _sigma(img, noise_sigma, background)
    x = spins_per_voxel(conc, voxel_volume_ml)
    y = np.empty(conc.size)
    se_y = np.empty(conc.size)
    for i, t in enumerate(tube_list):
        m = _mask(t, img.shape, f"tubes[{i}]")
        vals = img[m & np.isfinite(img)]
        if vals.size == 0:
            raise DataError(f"reference tube {i} mask is empty", field=f"tubes[{i}]")
        a = _corrected(vals, sigma)
        y[i] = a.mean()
        se_y[i] = max(a.std(ddof=1) if a.size > 1 else sigma, sigma) / np.sqrt(a.size)
        if y[i] < min_tube_snr * sigma:
            raise DataError(
                f"reference tube {i} has SNR {y[i] / sigma:.2f} < {min_tube_snr:g}: too close to "
                "the noise floor to calibrate",
                field=f"tubes[{i}]",
            )
    # weighted least squares through the origin: y = kappa * x
    w = 1.0 / se_y**2
    kappa = float(np.sum(w * x * y) / np.sum(w * x * x))
    se_kappa = float(1.0 / np.sqrt(np.sum(w * x * x)))
    if conc.size > 2:
        # inflate by the lack of fit when the tubes scatter more than their noise predicts
        chi2 = float(np.sum(w * (y - kappa * x) ** 2) / (conc.size - 1))
        se_kappa *= np.sqrt(max(chi2, 1.0))
    return FluorineCalibration(
        signal_per_spin=kappa,
        signal_per_spin_se=se_kappa,
        noise_sigma=sigma,
        voxel_volume_ml=float(voxel_volume_ml),
        tube_signal=y,
        tube_spins_per_voxel=x,
        tube_snr=y / sigma,
    )


def _sigma(img: np.ndarray, noise_sigma: float | None, background: npt.ArrayLike | None) -> float:
    if noise_sigma is not None:
        s = float(noise_sigma)
        if not np.isfinite(s) or s <= 0:
            raise FitError(f"must be > 0, got {noise_sigma!r}", field="noise_sigma")
        return s
    if background is None:
        raise FitError(
            "give noise_sigma or a signal-free background mask to estimate it",
            field="noise_sigma",
        )
    bg = _mask(background, img.shape, "background")
    return rayleigh_sigma(img[bg])


def count_cells(
    image: npt.ArrayLike,
    labels: npt.ArrayLike,
    calibration: FluorineCalibration,
    *,
    fluorine_per_cell: float,
    fluorine_per_cell_se: float = 0.0,
    alpha: float = 0.01,
) -> dict[str, np.ndarray]:
    """Number of labelled cells per region, with uncertainty and detection limit.

    Parameters
    ----------
    image : array_like, shape (X, Y, Z)
        The 19F magnitude image the calibration came from (same scaling).
    labels : array_like of int, same shape
        Regions to quantify (0 = none).
    calibration : FluorineCalibration
    fluorine_per_cell : float
        Mean 19F spins per cell ``F_c`` (e.g. ~1e11–1e13 for PFC-labelled immune cells),
        measured by 19F NMR on the labelled cells before injection.
    fluorine_per_cell_se : float, default 0
        Its standard error (adds in quadrature).
    alpha : float, default 0.01
        Family-wise false-positive probability per region for the detection threshold.

    Returns
    -------
    dict of str to ndarray
        Columns, one row per label: ``label``, ``n_voxels``, ``n_detected``,
        ``threshold`` (a.u., the magnitude threshold ``τ``), ``fluorine_spins``, ``cells``,
        ``cells_se``, ``cells_decision_threshold`` (cells in one voxel detected with 50 %
        probability), ``cells_detection_limit`` (Currie: detected with 95 % probability),
        ``near_threshold_fraction`` (share of the counted signal from detected voxels whose
        estimated amplitude is under the detection limit; NaN when nothing is detected),
        ``near_threshold`` (that share above :data:`NEAR_THRESHOLD_SHARE`: the count is biased
        and ``cells_se`` understates its spread) and ``status`` (``"quantified"`` or ``"below
        detection"``; then ``cells`` and ``fluorine_spins`` are NaN, never a number).
    """
    img = np.asarray(image, dtype=float)
    lab = np.asarray(labels)
    if lab.shape != img.shape:
        raise DataError(
            f"labels shape {lab.shape} does not match the image {img.shape}", field="labels"
        )
    if not np.isfinite(fluorine_per_cell) or fluorine_per_cell <= 0:
        raise FitError(
            f"must be > 0 spins per cell, got {fluorine_per_cell!r}", field="fluorine_per_cell"
        )
    if not np.isfinite(fluorine_per_cell_se) or fluorine_per_cell_se < 0:
        raise FitError(f"must be >= 0, got {fluorine_per_cell_se!r}", field="fluorine_per_cell_se")
    sigma = calibration.noise_sigma
    kappa = calibration.signal_per_spin
    rel_k = calibration.signal_per_spin_se / kappa
    rel_f = fluorine_per_cell_se / fluorine_per_cell
    ids = np.unique(lab[lab > 0]).astype(np.int64)
    n = len(ids)
    out: dict[str, np.ndarray] = {
        "label": ids,
        "n_voxels": np.zeros(n, np.int64),
        "n_detected": np.zeros(n, np.int64),
        "threshold": np.zeros(n),
        "fluorine_spins": np.full(n, np.nan),
        "cells": np.full(n, np.nan),
        "cells_se": np.full(n, np.nan),
        "cells_decision_threshold": np.zeros(n),
        "cells_detection_limit": np.zeros(n),
        "near_threshold_fraction": np.full(n, np.nan),
        "near_threshold": np.zeros(n, bool),
        "status": np.empty(n, dtype=object),
    }
    for j, i in enumerate(ids):
        vals = img[(lab == i) & np.isfinite(img)]
        tau = detection_threshold(sigma, vals.size, alpha=alpha)
        det = vals > tau
        out["n_voxels"][j] = vals.size
        out["n_detected"][j] = int(det.sum())
        out["threshold"][j] = tau
        # cells in one voxel detected with 50 % (decision threshold) and 95 % (Currie's
        # detection limit) probability, from the Rician distribution of its magnitude
        a50 = detection_amplitude(sigma, tau, 0.5)
        a95 = detection_amplitude(sigma, tau, 0.95)
        out["cells_decision_threshold"][j] = a50 / kappa / fluorine_per_cell
        out["cells_detection_limit"][j] = a95 / kappa / fluorine_per_cell
        if not det.any():
            out["status"][j] = BELOW_DETECTION
            continue
        amp = _corrected(vals[det], sigma)
        total = float(amp.sum())
        near = float(amp[amp < a95].sum() / total) if total > 0 else 1.0
        out["near_threshold_fraction"][j] = near
        out["near_threshold"][j] = near > NEAR_THRESHOLD_SHARE
        spins = total / kappa
        cells = spins / fluorine_per_cell
        rel_s = sigma * np.sqrt(det.sum()) / total
        out["fluorine_spins"][j] = spins
        out["cells"][j] = cells
        out["cells_se"][j] = cells * float(np.sqrt(rel_s**2 + rel_k**2 + rel_f**2))
        out["status"][j] = QUANTIFIED
    return out
