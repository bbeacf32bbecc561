"""What a ``tumorscope run`` wrote that the DICOM export sends: a visit's maps (from the map
indexes, through :mod:`tumorscope.layout`) and its response."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

from ... import layout
from ...errors import ExportError, TumorscopeWarning
from ...volume import Volume
from .sources import NotFromDicom

__all__ = ["drop_maps_without_sources", "pipeline_results", "with_run_results"]


#: the source series of the maps each pipeline fit step writes
_STEP_SOURCE = {"fit_dwi": "dwi", "fit_dce": "dce", "fit_dsc": "dsc"}


def pipeline_results(
    results_dir: str | Path, *, subject: str, visit: str, criteria: str | None = None
) -> tuple[dict[str, tuple[Path, str, str]], str | None, str | None]:
    """What ``tumorscope run`` wrote for one visit: maps, and the response.

    Parameters
    ----------
    results_dir : path-like
        The run's output folder (default of the pipeline: ``STUDY/derivatives/tumorscope``).
    subject, visit : str
        Ids as in the study.
    criteria : str, optional
        Which criteria's response to take (default: the first in the assessments table).

    Returns
    -------
    maps : dict
        ``{"adc.ADC": (path, unit, source role)}`` from the visit's map indexes
        (``sub-S/ses-V/maps/*_index.json``); the source role is the entry's ``series`` (the
        role of the series the map was fitted from, which every fit step records), else it
        follows the fit step (``fit_dwi`` → ``dwi``, ``fit_dce`` → ``dce``, ``fit_dsc`` →
        ``dsc``; an index written before the ``series`` field).
    response, criteria : str or None
        From ``sub-S/sub-S_assessments.parquet`` (None when absent).
    """
    root = Path(results_dir)
    maps: dict[str, tuple[Path, str, str]] = {}
    mdir = layout.maps_dir(root, subject, visit)
    for index in sorted(mdir.glob(f"*{layout.MAP_INDEX_SUFFIX}")):
        step = index.name[: -len(layout.MAP_INDEX_SUFFIX)].split("_", 2)[-1]
        try:
            entries = json.loads(index.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ExportError(f"cannot parse map index: {exc}", file=index) from exc
        for name, e in sorted(entries.items()):
            if not isinstance(e, dict) or "path" not in e:
                raise ExportError("map entry without a path", file=index, field=name)
            source = e.get("series") or _STEP_SOURCE.get(step, step)
            maps[name] = (root / e["path"], str(e.get("unit", "")), str(source))
    response = None
    table = layout.assessments_path(root, subject)
    if table.exists():
        import pandas as pd

        df = pd.read_parquet(table)
        df = df[(df["subject"].astype(str) == subject) & (df["visit"].astype(str) == visit)]
        if criteria is not None:
            df = df[df["criteria"] == criteria]
        if len(df):
            row = df.iloc[0]
            response = None if pd.isna(row["response"]) else str(row["response"])
            criteria = str(row["criteria"])
    return maps, response, criteria


def with_run_results(
    results: str | Path,
    subject: str,
    visit: str,
    maps: Mapping[str, tuple[str | Path | Volume, str]],
    units: dict[str, str],
    response: str | None,
    criteria: str,
) -> tuple[dict[str, tuple[str | Path | Volume, str]], dict[str, str], set[str], str | None, str]:
    """The maps, units and response of a run's output folder, under those given by the caller;
    and the names of the run's maps that may be skipped when they are not 3-D."""
    found, run_response, run_criteria = pipeline_results(results, subject=subject, visit=visit)
    all_maps: dict[str, tuple[str | Path | Volume, str]] = {
        name: (path, role) for name, (path, _, role) in found.items()
    }
    all_maps.update(maps)
    all_units = dict(units)
    for name, (_, unit, _) in found.items():
        all_units.setdefault(name, unit)
    if response is None and run_response not in (None, "baseline"):
        response, criteria = run_response, run_criteria or criteria
    return all_maps, all_units, set(found) - set(maps), response, criteria


def _parameter_maps(
    maps: Mapping[str, tuple[str | Path | Volume, str]], skippable: set[str]
) -> dict[str, Volume]:
    """The 3-D maps, loaded; a map that is not 3-D is left out if skippable, else an error."""
    loaded: dict[str, Volume] = {}
    for name, (img, _) in maps.items():
        vol = img if isinstance(img, Volume) else Volume.from_nifti(img)
        if vol.data.ndim != 3:
            if name in skippable:
                continue
            raise ExportError(f"map {name} is not 3-D (shape {vol.shape})", file=vol.source)
        loaded[name] = vol
    return loaded


def drop_maps_without_sources(
    loaded: dict[str, Volume],
    maps: Mapping[str, tuple[object, str]],
    run_maps: set[str],
    sources: Callable[[str], object],
) -> None:
    """Leave out of ``loaded`` a run's maps (``run_maps``) whose series was not imported from
    DICOM (``sources(role)`` raises :class:`~tumorscope.io.dicom.sources.NotFromDicom`), with
    one warning per series; maps the caller named stay an error."""
    not_dicom: dict[str, list[str]] = {}  # series file → its maps left out
    no_source: dict[str, str] = {}  # role → its series file (each role looked up once)
    for name in [n for n in loaded if n in run_maps]:
        role = maps[name][1]
        if role not in no_source:
            try:
                sources(role)  # read once, kept for the maps below
                continue
            except NotFromDicom as exc:
                no_source[role] = str(exc.file)
        del loaded[name]
        not_dicom.setdefault(no_source[role], []).append(name)
    for series_file, names in not_dicom.items():
        warnings.warn(
            f"{len(names)} map(s) of {series_file} not exported ({', '.join(names)}): the "
            "series was not imported from DICOM (no Series Instance UID recorded), so there "
            "are no source images to reference",
            TumorscopeWarning,
            stacklevel=3,
        )
