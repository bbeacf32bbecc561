"""Deuterium metabolic imaging (DMI): 2H spectra after [6,6'-2H2]glucose.

Amplitudes of the four resolved 2H resonances at their known shifts (De Feyter et al., Sci
Adv 2018;4:eaat7314, doi:10.1126/sciadv.aat7314): water 4.7, glucose 3.8, Glx 2.36 and lactate
1.33 ppm, by a Voigt fit (Lorentzian ⊗ Gaussian; the Gaussian part may vanish, leaving a
Lorentzian) with a common phase, shift and broadening: the linear-combination machinery of
:func:`~.mrs.fit_lcm` with a basis of unit singlets (:func:`~.basis.singlet_basis`) and a
linear baseline. 2H lines are broad (T2 of tens of ms) and the peaks overlap at 3 T
(1 ppm ≈ 20 Hz), which is why the shifts are fixed rather than found.

Ratios: lactate/Glx (the Warburg read-out of De Feyter 2018) and lactate/glucose; CRLBs of
each amplitude come with the fit. The 2H Larmor frequency is 6.536 MHz/T.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .basis import DEUTERIUM_SHIFTS_PPM, singlet_basis
from .mrs import LCMResult, fit_lcm

__all__ = ["GAMMA_2H_MHZ_PER_T", "DeuteriumFit", "fit_deuterium"]

#: 2H gyromagnetic ratio / 2π (MHz/T).
GAMMA_2H_MHZ_PER_T = 6.536


@dataclass
class DeuteriumFit:
    """Amplitudes (a.u.), their CRLBs and the lactate ratios of one 2H spectrum."""

    amplitudes: dict[str, float]
    crlb: dict[str, float]
    lactate_glx: float
    lactate_glucose: float
    lcm: LCMResult


def fit_deuterium(
    fid: npt.ArrayLike,
    dwell_s: float,
    frequency_mhz: float,
    *,
    shifts_ppm: dict[str, float] | None = None,
    ppm_range: tuple[float, float] = (0.0, 6.5),
) -> DeuteriumFit:
    """Fit a 2H FID (see the module docstring).

    Parameters
    ----------
    fid : array_like of complex, shape (n_points,)
    dwell_s : float
    frequency_mhz : float
        2H frequency (19.6 MHz at 3 T, 45.8 at 7 T).
    shifts_ppm : dict, optional
        Default :data:`~.basis.DEUTERIUM_SHIFTS_PPM`.
    """
    x = np.asarray(fid)
    basis = singlet_basis(shifts_ppm or DEUTERIUM_SHIFTS_PPM, frequency_mhz, dwell_s, x.shape[-1])
    res = fit_lcm(x, basis, ppm_range=ppm_range, baseline_order=1, shift_limit_hz=10.0)
    a = res.amplitudes

    def div(p: float, q: float) -> float:
        return p / q if q > 0 else float("nan")

    return DeuteriumFit(
        amplitudes=a,
        crlb=res.crlb,
        lactate_glx=div(a.get("lactate", np.nan), a.get("Glx", np.nan)),
        lactate_glucose=div(a.get("lactate", np.nan), a.get("glucose", np.nan)),
        lcm=res,
    )
