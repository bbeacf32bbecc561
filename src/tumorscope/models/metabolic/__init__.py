"""Metabolic imaging: hyperpolarised 13C, pH from bicarbonate, fumarate, 1H MRS, deuterium.

* :mod:`.kinetics`: two-site exchange equations under RF excitation (shared);
* :mod:`.hp13c`: :class:`PyruvateLactate` (input-less kPL, Larson 2018), the boxcar-input
  model :class:`PyruvateLactateBoxcar`, the AUC ratio, flip schedules, the SNR gate;
* :mod:`.ph`: extracellular pH from H13CO3⁻/13CO2 (Henderson–Hasselbalch, pKa 6.17);
* :mod:`.fumarate`: [1,4-13C2]fumarate → malate (AUC ratio, its change, kFM);
* :mod:`.mrs`: 1H MRS processing (coil combination, alignment, HLSVD water removal) and the
  linear-combination fit with CRLBs; :mod:`.basis` the simulated basis set;
* :mod:`.deuterium`: 2H spectra (Lorentzian/Voigt amplitudes at known shifts).

Design decisions and measured errors: ``docs/metabolic.md``.
"""

from __future__ import annotations

from .hp13c import PyruvateLactate, PyruvateLactateBoxcar, auc_ratio, flip_schedule
from .kinetics import inputless_basis, two_site_signals

for _cls in (PyruvateLactate, PyruvateLactateBoxcar):
    _cls.__module__ = __name__
del _cls

__all__ = [
    "PyruvateLactate",
    "PyruvateLactateBoxcar",
    "auc_ratio",
    "flip_schedule",
    "inputless_basis",
    "two_site_signals",
]
