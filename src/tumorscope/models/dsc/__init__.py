"""DSC perfusion: ΔR2*, AIF, deconvolution (sSVD, cSVD, oSVD, Tikhonov), leakage, rCBV.

* :mod:`.signal`: ``ΔR2*(t) = −ln(S/S0)/TE`` (one echo) or the dual-echo ratio, bolus onset, first-pass window, gamma variate;
* :mod:`.aif`: manual ROI, automatic selection (criteria + cluster step), VOF scaling;
* :mod:`.deconvolution`: :class:`DSC` (CBF, CBV, MTT, Tmax), the AIF matrix factorised once;
* :mod:`.leakage`: Boxerman–Schmainda–Weisskoff (K2) and bidirectional (Bjørnerud) correction;
* :mod:`.rcbv`: normalisation to normal-appearing white matter or the contralateral mirror.

Equations, references and the accuracy tables are in ``docs/dsc.md``.
"""

from __future__ import annotations

from .aif import roi_aif, scale_to_vof, select_aif
from .deconvolution import (
    DEFAULT_HEMATOCRIT_FACTOR,
    DEFAULT_TISSUE_DENSITY,
    DSC,
    convolution_matrix,
    oscillation_index,
)
from .leakage import LeakageCorrection, correct_leakage, reference_curve
from .rcbv import mirror_reference, normalise_cbv, reference_mean
from .signal import (
    apparent_s0_change,
    bolus_onset,
    delta_r2star,
    delta_r2star_dual_echo,
    first_pass_window,
    gamma_variate,
)

DSC.__module__ = __name__

__all__ = [
    "DEFAULT_HEMATOCRIT_FACTOR",
    "DEFAULT_TISSUE_DENSITY",
    "DSC",
    "LeakageCorrection",
    "apparent_s0_change",
    "bolus_onset",
    "convolution_matrix",
    "correct_leakage",
    "delta_r2star",
    "delta_r2star_dual_echo",
    "first_pass_window",
    "gamma_variate",
    "mirror_reference",
    "normalise_cbv",
    "oscillation_index",
    "reference_curve",
    "reference_mean",
    "roi_aif",
    "scale_to_vof",
    "select_aif",
]
