"""Lesions across visits: size, per-map statistics, radiomics, habitats and tracking.

Modules: :mod:`.geometry` (``measure``), :mod:`.stats`, :mod:`.radiomics` (MIRP),
:mod:`.habitats` and :mod:`.tracking`: measuring code on arrays, no file reading. The study
stage that reads lesion and parameter maps from files (``measure_study``, ``study_radiomics``,
the pipeline's ``measure_subject``) is :mod:`tumorscope.stages.lesions`.
Public names are imported lazily so that ``import tumorscope.lesions`` stays cheap.
"""

from __future__ import annotations

from .._lazy import lazy_attributes

_LAZY: dict[str, str] = {
    "measure": "geometry",
    "GEOMETRY_KEYS": "geometry",
    "lesion_statistics": "stats",
    "statistics_table": "stats",
    "radiomics_features": "radiomics",
    "delta_radiomics": "radiomics",
    "RadiomicsSettings": "radiomics",
    "settings_for": "radiomics",
    "fit_habitats": "habitats",
    "HabitatModel": "habitats",
    "track_lesions": "tracking",
    "VisitLabels": "tracking",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
