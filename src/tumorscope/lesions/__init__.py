"""Lesions across visits: size, per-map statistics, radiomics, habitats and tracking.

Modules: :mod:`.geometry` (``measure``), :mod:`.stats`, :mod:`.radiomics` (MIRP),
:mod:`.habitats` and :mod:`.tracking`: measuring code on arrays, no file reading. The study
stage that reads lesion and parameter maps from files (``measure_study``, ``study_radiomics``,
the pipeline's ``measure_subject``) is :mod:`tumorscope.stages.lesions`.
Public names are imported lazily so that ``import tumorscope.lesions`` stays cheap.
"""

from __future__ import annotations

from .._lazy import lazy_attributes

__getattr__, __dir__, __all__ = lazy_attributes(
    __name__,
    globals(),
    geometry=("measure", "GEOMETRY_KEYS"),
    stats=("lesion_statistics", "statistics_table"),
    radiomics=("radiomics_features", "delta_radiomics", "RadiomicsSettings", "settings_for"),
    habitats=("fit_habitats", "HabitatModel"),
    tracking=("track_lesions", "VisitLabels"),
)
