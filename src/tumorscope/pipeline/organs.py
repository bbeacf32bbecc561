"""The ``fit_mre``, ``fit_cardiac`` and ``organ_watch`` steps (adapters over their stages).

* ``fit_mre`` (visit, role ``mre``): :func:`tumorscope.stages.mre.fit_mre_series`;
* ``fit_cardiac`` (visit, roles ``t1_molli``, ``t1_molli_post``, ``t2_prep``):
  :func:`tumorscope.stages.cardiac.fit_cardiac_visit`;
* ``organ_watch`` (subject): per visit, the organ values
  (:func:`tumorscope.stages.organs.organ_values`) on the organ map beside the lesion map,
  then z-scores against the study's ``organ_reference:``, changes from baseline and flags
  (:func:`tumorscope.response.organs.organ_watch`). Organ values, z-scores and changes go
  to ``measurements`` (``lesion_id`` = organ, ``map`` = measure, ``statistic`` ``"mean"``,
  ``"z"`` or ``"change_from_baseline_pct"``, step ``organ_watch``), flags to ``patterns``,
  everything to ``sub-<id>_organs.json`` for the report.

The steps run only where a visit allows: ``fit_mre`` with an MRE series, ``fit_cardiac``
with a cardiac series, ``organ_watch`` on subjects with at least one organ map.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataError
from ..layout import map_prefix, maps_dir, organ_watch_path
from .step import (
    Context,
    StepOutput,
    Unit,
    Upstream,
    Write,
    _manifest_file,
    _series_files,
    _visit,
    maps_of_visit,
    record_maps,
)

if TYPE_CHECKING:
    from ..io import Study

__all__ = [
    "ORGAN_PATTERNS",
    "cardiac_applies",
    "cardiac_inputs",
    "organ_watch_applies",
    "organ_watch_inputs",
    "run_fit_cardiac",
    "run_fit_mre",
    "run_organ_watch",
]

#: The ``patterns`` rows the organ watch owns (one replace per name).
ORGAN_PATTERNS = (
    "myocarditis_lake_louise",
    "hepatitis_stiffness",
    "colitis_bowel_wall",
    "hypophysitis_pituitary",
)


def run_fit_mre(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """|G*|, φ and confidence of the visit's MRE series."""
    from ..stages.base import SeriesInput
    from ..stages.mre import fit_mre_series

    assert unit.visit is not None
    res = fit_mre_series(
        SeriesInput.of(_visit(study, unit).series["mre"]),
        out_dir=maps_dir(ctx, unit.subject, unit.visit),
        prefix=map_prefix(unit.subject, unit.visit),
    )
    out = record_maps(ctx, "fit_mre", unit, res.maps, res.files)
    out.notes += list(res.warnings)
    return out


def cardiac_applies(study: Study, unit: Unit) -> bool:
    from ..stages.cardiac import CARDIAC_ROLES

    return any(r in _visit(study, unit).series for r in CARDIAC_ROLES)


def cardiac_inputs(ctx: Context, study: Study, unit: Unit) -> list[Path]:
    from ..stages.cardiac import CARDIAC_ROLES

    series = _visit(study, unit).series
    return [p for r in CARDIAC_ROLES if r in series for p in _series_files(series[r].path)]


def run_fit_cardiac(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """MOLLI T1 (native and post-contrast) and T2-prep T2 of the visit, in the voxels of the
    run option ``relax_region`` (default the body, as ``fit_relax``)."""
    from ..stages.base import SeriesInput
    from ..stages.cardiac import CARDIAC_ROLES, fit_cardiac_visit

    assert unit.visit is not None
    series = _visit(study, unit).series
    res = fit_cardiac_visit(
        {r: SeriesInput.of(s) for r, s in series.items() if r in CARDIAC_ROLES},
        out_dir=maps_dir(ctx, unit.subject, unit.visit),
        prefix=map_prefix(unit.subject, unit.visit),
        region=ctx.options.relax_region,
    )
    out = record_maps(ctx, "fit_cardiac", unit, res.maps, res.files)
    out.notes += list(res.warnings)
    return out


def _organ_files(study: Study, subject: str) -> list[tuple[str, Path, Path]]:
    from ..stages.organs import organ_map_paths

    out = []
    for visit in study.subjects[subject]:
        les = visit.lesions
        if les is None:
            continue
        m, t = organ_map_paths(les.map_path)
        if m.is_file():
            out.append((visit.id, m, t))
    return out


def organ_watch_applies(study: Study, unit: Unit) -> bool:
    return bool(_organ_files(study, unit.subject))


def organ_watch_inputs(ctx: Context, study: Study, unit: Unit) -> list[Path]:
    files = [_manifest_file(ctx)]
    for _, m, t in _organ_files(study, unit.subject):
        files += [m, *([t] if t.exists() else [])]
    return files


def run_organ_watch(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """Organ values per visit, z-scores, changes from baseline and flags (module notes)."""
    from ..files import write_json
    from ..response.organs import organ_watch, parse_organ_reference
    from ..stages.organs import organ_values, read_organ_table
    from ..volume import Volume

    s = unit.subject
    subject = study.subjects[s]
    refs, problems = parse_organ_reference(study.manifest.raw.get("organ_reference"))
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise DataError(errors[0].message, file="study.yaml", field=errors[0].field)
    values: list[dict[str, Any]] = []
    notes: list[str] = []
    rel = {v: (m, t) for v, m, t in _organ_files(study, s)}
    for visit in subject:
        if visit.id not in rel:
            continue
        m, t = rel[visit.id]
        label = str(m.relative_to(ctx.study_root)) if m.is_relative_to(ctx.study_root) else str(m)
        names = read_organ_table(t, label)
        maps = {k: v.path for k, v in maps_of_visit(ctx, upstream, s, visit.id).items()}
        post = maps.get("molli_post.T1")
        hct = None
        if "t1_molli_post" in visit.series:
            h = visit.series["t1_molli_post"].sidecar.get("Hematocrit")
            hct = None if h is None else float(h)
        rows, n = organ_values(
            Volume.from_nifti(m), names, maps, post_t1=post, hematocrit=hct, label=label
        )
        values += [{**r, "visit": visit.id} for r in rows]
        notes += [f"{visit.id}: {x}" for x in n]
    visits = [v.id for v in subject]
    res = organ_watch(values, visits, subject.baseline.id, refs)
    notes += res.notes
    mrows = [
        {
            "subject": s,
            "visit": r["visit"],
            "lesion_id": r["organ"],
            "map": r["measure"],
            "statistic": "mean",
            "value": r["value"],
            "unit": r["unit"],
            "step": "organ_watch",
        }
        for r in values
    ] + [{**r, "subject": s, "step": "organ_watch"} for r in res.measurements]
    prows = [{**r, "subject": s} for r in res.patterns]
    path = organ_watch_path(ctx.out_dir, s)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(
        path,
        {
            "values": values,
            "measurements": res.measurements,
            "flags": res.patterns,
            "notes": notes,
            "reference": {f"{o}.{m}": r for (o, m), r in refs.items()},
        },
    )
    writes = [Write("measurements", {"subject": s, "step": "organ_watch"}, mrows)]
    writes += [
        Write(
            "patterns", {"subject": s, "pattern": name}, [r for r in prows if r["pattern"] == name]
        )
        for name in ORGAN_PATTERNS
    ]
    return StepOutput(files=[path], writes=writes, notes=notes)
