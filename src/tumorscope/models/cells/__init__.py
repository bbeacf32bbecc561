"""Cell imaging: iron-oxide labels (ΔR2* → iron, MPIO signal voids) and 19F cell counts.

Signal equations and functions over arrays only (no file reading, no pipeline); the stages
:mod:`tumorscope.stages.iron` and :mod:`tumorscope.stages.fluorine` turn series on disk into
maps and tables with them.

=========================  ==================================================================
module                     what
=========================  ==================================================================
``models.cells.iron``      ΔR2* (or ΔR2, ΔR1), apparent iron concentration with the
                           ferumoxytol relaxivity table, per-region uptake, MPIO signal voids
``models.cells.fluorine``  19F calibration on reference tubes, Rician noise, detection
                           threshold and limit, cells per region
=========================  ==================================================================

The public names of both modules are available here.
"""

from __future__ import annotations

from .fluorine import (
    AVOGADRO,
    FluorineCalibration,
    calibrate_fluorine,
    count_cells,
    detection_amplitude,
    detection_threshold,
    rayleigh_sigma,
    spins_per_voxel,
)
from .iron import (
    FERUMOXYTOL_RELAXIVITY,
    FERUMOXYTOL_RELAXIVITY_SD,
    IRON_MOLAR_MASS_G_PER_MOL,
    SignalVoids,
    delta_rate,
    iron_concentration_mM,
    iron_uptake_table,
    resolve_relaxivity,
    signal_voids,
)

__all__ = [
    "AVOGADRO",
    "FERUMOXYTOL_RELAXIVITY",
    "FERUMOXYTOL_RELAXIVITY_SD",
    "IRON_MOLAR_MASS_G_PER_MOL",
    "FluorineCalibration",
    "SignalVoids",
    "calibrate_fluorine",
    "count_cells",
    "delta_rate",
    "detection_amplitude",
    "detection_threshold",
    "iron_concentration_mM",
    "iron_uptake_table",
    "rayleigh_sigma",
    "resolve_relaxivity",
    "signal_voids",
    "spins_per_voxel",
]
