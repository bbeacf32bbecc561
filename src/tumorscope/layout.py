"""Where a run puts its files: the output layout, as pure path functions of the output folder.

The pipeline writes these files and the report reads them; both import this module (the
report imports no pipeline). Every function takes the output folder first — a path, or any
object with an ``out_dir`` attribute (the pipeline's ``Context``) — and only computes paths,
except :func:`read_map_index`, which reads the map indexes the fit steps write.

::

    OUT/
      tumorscope.sqlite                          the database (DATABASE_NAME)
      logs/run-<run id>.log
      tables/<table>.parquet, .csv               the database tables, exported
      report/index.html, report/sub-<id>.html    the HTML reports
      sub-<id>/
        sub-<id>_measurements.parquet            measure: tidy per-lesion statistics
        sub-<id>_lesions.parquet                 measure: per-lesion, per-visit geometry
        sub-<id>_assessments.parquet             assess
        sub-<id>_patterns.parquet                assess: immunotherapy patterns
        ses-<id>/
          sub-<id>_ses-<id>_align.json           align
          sub-<id>_ses-<id>_cells19F.parquet     fluorine
          sub-<id>_ses-<id>_hypoxia.parquet      hypoxia
          maps/sub-<id>_ses-<id>_<model>_<parameter>.nii.gz (+ .json)
          maps/sub-<id>_ses-<id>_<step>_index.json   map name -> path, status, unit, series

This is a core module: it imports the standard library only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

__all__ = [
    "DATABASE_NAME",
    "MAP_INDEX_SUFFIX",
    "VisitMap",
    "align_path",
    "assessments_path",
    "cells19f_path",
    "database_path",
    "default_out_dir",
    "features_path",
    "functional_path",
    "hypoxia_path",
    "is_map_index",
    "lesion_table_path",
    "log_path",
    "map_index_files",
    "map_index_path",
    "map_prefix",
    "maps_dir",
    "measurements_path",
    "metabolic_path",
    "organ_watch_path",
    "patterns_path",
    "pet_path",
    "read_map_index",
    "read_map_series",
    "report_dir",
    "study_report_path",
    "subject_dir",
    "subject_report_path",
    "tables_dir",
    "visit_dir",
]

#: File name of the default SQLite database in the output folder.
DATABASE_NAME = "tumorscope.sqlite"

#: Ending of the map index files (:func:`map_index_path`).
MAP_INDEX_SUFFIX = "_index.json"


class _HasOutDir(Protocol):
    @property
    def out_dir(self) -> Path: ...


OutDir = str | os.PathLike[str] | _HasOutDir


def _root(out_dir: OutDir) -> Path:
    """The output folder of a path or of an object with an ``out_dir`` (a pipeline context)."""
    root = getattr(out_dir, "out_dir", out_dir)
    return Path(root)  # type: ignore[arg-type]


def default_out_dir(study_root: str | os.PathLike[str]) -> Path:
    """Where a run puts its results by default: ``STUDY/derivatives/tumorscope``."""
    return Path(study_root) / "derivatives" / "tumorscope"


def database_path(out_dir: OutDir) -> Path:
    """The default SQLite database: ``OUT/tumorscope.sqlite``."""
    return _root(out_dir) / DATABASE_NAME


def log_path(out_dir: OutDir, run_id: str) -> Path:
    """The log of a run: ``OUT/logs/run-<run id>.log``."""
    return _root(out_dir) / "logs" / f"run-{run_id}.log"


def tables_dir(out_dir: OutDir) -> Path:
    """Where the database tables are exported (Parquet and CSV): ``OUT/tables``."""
    return _root(out_dir) / "tables"


def report_dir(out_dir: OutDir) -> Path:
    """The HTML reports: ``OUT/report``."""
    return _root(out_dir) / "report"


def study_report_path(out_dir: OutDir) -> Path:
    """The study report: ``OUT/report/index.html``."""
    return report_dir(out_dir) / "index.html"


def subject_report_path(out_dir: OutDir, subject: str) -> Path:
    """A subject's report: ``OUT/report/sub-<id>.html``."""
    return report_dir(out_dir) / f"sub-{subject}.html"


def subject_dir(out_dir: OutDir, subject: str) -> Path:
    """Output folder of a subject: ``OUT/sub-<id>``."""
    return _root(out_dir) / f"sub-{subject}"


def visit_dir(out_dir: OutDir, subject: str, visit: str) -> Path:
    """Output folder of a visit: ``OUT/sub-<id>/ses-<id>``."""
    return subject_dir(out_dir, subject) / f"ses-{visit}"


def maps_dir(out_dir: OutDir, subject: str, visit: str) -> Path:
    """Where the fitted maps of a visit go: ``OUT/sub-<id>/ses-<id>/maps``."""
    return visit_dir(out_dir, subject, visit) / "maps"


def map_prefix(subject: str, visit: str) -> str:
    """Start of the name of every file of a visit: ``sub-<id>_ses-<id>_``."""
    return f"sub-{subject}_ses-{visit}_"


def map_index_path(out_dir: OutDir, subject: str, visit: str, step: str) -> Path:
    """The index of the maps a step wrote for a visit (map name -> path, status, unit, series)."""
    name = f"{map_prefix(subject, visit)}{step}{MAP_INDEX_SUFFIX}"
    return maps_dir(out_dir, subject, visit) / name


def measurements_path(out_dir: OutDir, subject: str) -> Path:
    """The tidy per-lesion table ``measure`` writes (Parquet)."""
    return subject_dir(out_dir, subject) / f"sub-{subject}_measurements.parquet"


def lesion_table_path(out_dir: OutDir, subject: str) -> Path:
    """Per-lesion, per-visit geometry ``measure`` writes (Parquet, one row per lesion and visit).

    Columns: ``subject, visit, date, lesion_id, target, nodal, organ, baseline`` and the
    geometry of :data:`tumorscope.lesions.geometry.GEOMETRY_KEYS` (the input of
    :func:`tumorscope.response.from_lesion_table`).
    """
    return subject_dir(out_dir, subject) / f"sub-{subject}_lesions.parquet"


def patterns_path(out_dir: OutDir, subject: str) -> Path:
    """The immunotherapy patterns ``assess`` writes for a subject (Parquet)."""
    return subject_dir(out_dir, subject) / f"sub-{subject}_patterns.parquet"


def organ_watch_path(out_dir: OutDir, subject: str) -> Path:
    """The organ watch ``organ_watch`` writes for a subject (JSON: values, z-scores, flags)."""
    return subject_dir(out_dir, subject) / f"sub-{subject}_organs.json"


def assessments_path(out_dir: OutDir, subject: str) -> Path:
    """The assessments ``assess`` writes for a subject (Parquet, ``details`` as JSON text)."""
    return subject_dir(out_dir, subject) / f"sub-{subject}_assessments.parquet"


def align_path(out_dir: OutDir, subject: str, visit: str) -> Path:
    """The alignments ``align`` writes for a visit (JSON, one entry per series)."""
    return visit_dir(out_dir, subject, visit) / f"{map_prefix(subject, visit)}align.json"


def cells19f_path(out_dir: OutDir, subject: str, visit: str) -> Path:
    """The per-lesion 19F cell counts the ``fluorine`` step writes (Parquet)."""
    return visit_dir(out_dir, subject, visit) / f"{map_prefix(subject, visit)}cells19F.parquet"


def metabolic_path(out_dir: OutDir, subject: str, visit: str) -> Path:
    """The per-lesion metabolic values the ``metabolic`` step writes (Parquet, tidy rows)."""
    return visit_dir(out_dir, subject, visit) / f"{map_prefix(subject, visit)}metabolic.parquet"


def pet_path(out_dir: OutDir, subject: str, visit: str) -> Path:
    """The per-lesion PET uptake table the ``pet`` step writes (Parquet)."""
    return visit_dir(out_dir, subject, visit) / f"{map_prefix(subject, visit)}pet.parquet"


def functional_path(out_dir: OutDir, subject: str) -> Path:
    """The ``functional`` step's per-lesion table (Parquet; its thresholds in a ``.json``
    beside it, its label maps in the same folder)."""
    return subject_dir(out_dir, subject) / "functional" / f"sub-{subject}_functional.parquet"


def features_path(out_dir: OutDir, subject: str) -> Path:
    """The ``features`` step's habitat fractions and radiomics (Parquet)."""
    return subject_dir(out_dir, subject) / f"sub-{subject}_features.parquet"


def hypoxia_path(out_dir: OutDir, subject: str, visit: str) -> Path:
    """The per-lesion hypoxia classes the ``hypoxia`` step writes (Parquet)."""
    return visit_dir(out_dir, subject, visit) / f"{map_prefix(subject, visit)}hypoxia.parquet"


# ---------------------------------------------------------------------------- map indexes


class VisitMap(NamedTuple):
    """A map of a visit as its index names it (unpacks as ``path, status, unit``)."""

    path: Path
    status: Path | None
    unit: str


def is_map_index(rel: str | os.PathLike[str]) -> bool:
    """Whether a file (name or path) is a map index (:func:`map_index_path`)."""
    return os.fspath(rel).endswith(MAP_INDEX_SUFFIX)


def _entries(out_dir: OutDir, indexes: Iterable[str | os.PathLike[str]]) -> Iterable[Any]:
    root = _root(out_dir)
    for rel in indexes:
        if is_map_index(rel):
            yield from json.loads((root / rel).read_text(encoding="utf-8")).items()


def read_map_index(
    out_dir: OutDir, indexes: Iterable[str | os.PathLike[str]]
) -> dict[str, VisitMap]:
    """The maps named by map index files: ``{"ivim.D": VisitMap(path, status path, unit)}``.

    Parameters
    ----------
    out_dir : path-like
        The output folder (the indexes name files relative to it).
    indexes : iterable of path-like
        Index files relative to ``out_dir``, in order (a later index wins on a name clash);
        other files among them are ignored.
    """
    root = _root(out_dir)
    found: dict[str, VisitMap] = {}
    for rel in indexes:
        if not is_map_index(rel):
            continue
        index = json.loads((root / rel).read_text(encoding="utf-8"))
        for name, e in sorted(index.items()):
            status = None if e.get("status") is None else root / e["status"]
            found[name] = VisitMap(root / e["path"], status, str(e.get("unit", "")))
    return found


def read_map_series(
    out_dir: OutDir, indexes: Iterable[str | os.PathLike[str]]
) -> dict[str, str | None]:
    """Role of the series each indexed map was computed on: ``{"ivim.D": "dwi"}``."""
    return {name: e.get("series") for name, e in _entries(out_dir, indexes)}


def map_index_files(outputs: Mapping[str, Any]) -> list[str]:
    """The map indexes among a unit's outputs (relative path -> hash), sorted."""
    return sorted(rel for rel in outputs if is_map_index(rel))
