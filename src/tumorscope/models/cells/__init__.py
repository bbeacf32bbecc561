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

The public names of both modules are available here (imported lazily).
"""

from __future__ import annotations

from ..._lazy import lazy_attributes

_LAZY: dict[str, str] = {
    # iron oxide
    "FERUMOXYTOL_RELAXIVITY": "iron",
    "IRON_MOLAR_MASS_G_PER_MOL": "iron",
    "SignalVoids": "iron",
    "delta_rate": "iron",
    "iron_concentration_mM": "iron",
    "iron_uptake_table": "iron",
    "resolve_relaxivity": "iron",
    "signal_voids": "iron",
    # 19F
    "AVOGADRO": "fluorine",
    "FluorineCalibration": "fluorine",
    "calibrate_fluorine": "fluorine",
    "count_cells": "fluorine",
    "detection_threshold": "fluorine",
    "rayleigh_sigma": "fluorine",
    "spins_per_voxel": "fluorine",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
