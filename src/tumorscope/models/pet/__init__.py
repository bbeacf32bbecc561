"""PET uptake: SUV factors (body weight, lean body mass, body-surface area), per-lesion
SUVmax/SUVmean/SULpeak, metabolic tumour volume and total lesion glycolysis, and the liver
reference of PERCIST. Arrays and numbers in, numbers out; no files (see
:mod:`tumorscope.stages.pet` for maps on disk and ``docs/pet.md``).
"""

from __future__ import annotations

from .reference import (
    ReferenceRegion,
    comparable_references,
    liver_reference,
    percist_threshold,
    sphere_mask,
)
from .suv import (
    F18_HALF_LIFE_S,
    body_surface_area_m2,
    decay_factor,
    lean_body_mass_kg,
    sul_factor,
    suv_factor,
    suvbsa_factor,
)
from .uptake import (
    PEAK_VOLUME_ML,
    LesionUptake,
    lesion_uptake,
    mtv_ml,
    peak_kernel,
    sul_peak,
    tlg,
)

__all__ = [
    "F18_HALF_LIFE_S",
    "PEAK_VOLUME_ML",
    "LesionUptake",
    "ReferenceRegion",
    "body_surface_area_m2",
    "comparable_references",
    "decay_factor",
    "lean_body_mass_kg",
    "lesion_uptake",
    "liver_reference",
    "mtv_ml",
    "peak_kernel",
    "percist_threshold",
    "sphere_mask",
    "sul_factor",
    "sul_peak",
    "suv_factor",
    "suvbsa_factor",
    "tlg",
]
