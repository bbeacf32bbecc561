"""The steps of the study pipeline, declared with their inputs and outputs.

A :class:`Step` works on one *unit*: a visit (``scope="visit"``) or a subject
(``scope="subject"``). It declares

- ``inputs``: the study files its result depends on (hashed by content),
- ``requires``: the steps whose outputs it reads (their output hashes join its input hash),
- ``run``: the work. It runs on a worker process, writes its files atomically under the
  output folder and *returns* its database rows (:class:`Write`); it never touches the
  database. The runner records the rows and the step's memory in one transaction.

Because the worker only returns rows, the database is written by one process (the client),
which keeps SQLite safe under Dask and makes a unit of work all-or-nothing.

Files are the interface between steps: the maps of a fit step, the per-subject measurement
table of ``measure`` (Parquet), read by ``assess`` and ``report_subject``. Their content hashes
decide what is up to date.

Steps of this module and the code they call:

=================  =======  ====================================================================
step               scope    calls
=================  =======  ====================================================================
``register``       subject  ``tumorscope.io`` (reads and checks every series and lesion map)
``align``          visit    :func:`tumorscope.pipeline.align.align_visit` (rigid, to the T2w)
``fit_dwi``        visit    ``tumorscope.models`` registry (ADC, IVIM, DKI), ``FitResult.to_nifti``
``fit_dce``        visit    ``tumorscope.models.dce_stage.fit_dce_visit``
``fit_relax``      visit    ``tumorscope.models.relaxometry_stage.fit_relaxometry_visit``
``iron``           visit    ``models.relaxometry.T2Star``, ``models.iron`` (ΔR2*, iron mM)
``fluorine``       visit    ``models.fluorine.calibrate_fluorine``, ``count_cells``
``hypoxia``        visit    ``models.hypoxia.hypoxia_classes``, ``hypoxia_table``
``measure``        subject  ``tumorscope.lesions.geometry.measure``, ``lesions.stats``
``assess``         subject  ``tumorscope.response.assess`` (criteria named in ``study.yaml``)
``report_subject`` subject  :mod:`tumorscope.report`
=================  =======  ====================================================================
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import DataError, Problem

if TYPE_CHECKING:
    import pandas as pd

    from ..io import Study, Visit

__all__ = [
    "CELLS19F_COLUMNS",
    "DEFAULT_OPTIONS",
    "STEPS",
    "Context",
    "Step",
    "StepOutput",
    "Unit",
    "Write",
    "assessments_path",
    "cells19f_path",
    "hypoxia_path",
    "lesion_table_path",
    "measurements_path",
    "patterns_path",
]

#: Options of a run and their defaults (they are part of the input hashes).
DEFAULT_OPTIONS: dict[str, Any] = {
    # diffusion models fitted to every DWI series (names of the model registry)
    "dwi_models": ("adc", "ivim"),
    # DCE: pharmacokinetic model and arterial input function (tumorscope.models.dce_stage)
    "dce_model": "extended_tofts",
    "dce_aif": "parker",
    # hypoxia classes (tumorscope.models.hypoxia): R2* above (1/s) and Ktrans below (1/min)
    # this mark hypoxic, poorly perfused voxels. No default: thresholds depend on field
    # strength, sequence and tumour type; the step classifies nothing until both are given.
    "hypoxia_r2star_per_s": None,
    "hypoxia_ktrans_per_min": None,
    # align: lesion masks are resampled onto a series' maps when its alignment to the
    # anatomical image moves the lesion voxels by more than this many voxels on average
    "align_tolerance_vox": 0.5,
}


@dataclass(frozen=True)
class Unit:
    """One unit of work: a step on a subject, on one visit of a subject, or (subject "") the
    whole study."""

    step: str
    subject: str
    visit: str | None = None

    @property
    def key(self) -> str:
        """``sub-001``, ``sub-001/ses-01`` or ``study`` (the ``unit`` column of ``step_runs``)."""
        if not self.subject:
            return "study"
        base = f"sub-{self.subject}"
        return base if self.visit is None else f"{base}/ses-{self.visit}"

    def __str__(self) -> str:
        return f"{self.step} {self.key}"


@dataclass(frozen=True)
class Context:
    """What every step needs to find its inputs and outputs (picklable, sent to workers)."""

    study_root: Path
    out_dir: Path
    options: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_OPTIONS))

    def out_rel(self, path: Path) -> str:
        """Path relative to the output folder (how outputs are named in the database)."""
        return Path(path).resolve().relative_to(self.out_dir.resolve()).as_posix()

    def in_rel(self, path: Path) -> str:
        """Path relative to the study root (how inputs are named in hashes and tables)."""
        return Path(path).resolve().relative_to(self.study_root.resolve()).as_posix()


@dataclass
class Write:
    """Rows a unit of work owns in one table.

    ``mode="replace"`` deletes the rows matching ``where`` then inserts ``rows``;
    ``mode="upsert"`` inserts or updates by primary key (used for subjects and visits, whose
    deletion would cascade to the results of other steps).
    """

    table: str
    where: dict[str, Any]
    rows: list[dict[str, Any]]
    mode: Literal["replace", "upsert"] = "replace"


@dataclass
class StepOutput:
    """What a step returns: the files it wrote, its rows, and log lines."""

    files: list[Path] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


#: Output hashes of the required steps: ``{step: {unit_key: {relative path: sha256}}}``.
Upstream = dict[str, dict[str, dict[str, str]]]


@dataclass(frozen=True)
class Step:
    """A pipeline step (see the module docstring)."""

    name: str
    scope: Literal["subject", "visit"]
    version: str
    description: str
    run: Callable[[Context, Study, Unit, Upstream], StepOutput]
    inputs: Callable[[Context, Study, Unit], list[Path]]
    requires: tuple[str, ...] = ()
    applies: Callable[[Study, Unit], bool] = lambda study, unit: True
    #: None when the step can run here, else why not (a module not installed or not written)
    missing: Callable[[], str | None] = lambda: None
    #: option names that change this step's results
    option_keys: tuple[str, ...] = ()


# ---------------------------------------------------------------------------- helpers


def _visit(study: Study, unit: Unit) -> Visit:
    assert unit.visit is not None
    return study.subjects[unit.subject].visits[unit.visit]


def _series_files(path: Path) -> list[Path]:
    """An image and its sidecars (``.json``, ``.bval``, ``.bvec``) that exist."""
    name = path.name
    stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else path.stem
    extra = [path.with_name(stem + ext) for ext in (".json", ".bval", ".bvec")]
    return [path, *[p for p in extra if p.exists()]]


def _lesion_files(visit: Visit) -> list[Path]:
    les = visit.lesions
    if les is None:
        return []
    return [les.map_path, *([les.table_path] if les.table_path.exists() else [])]


def _manifest_file(ctx: Context) -> Path:
    return ctx.study_root / "study.yaml"


def subject_dir(ctx: Context, subject: str) -> Path:
    """Output folder of a subject: ``OUT/sub-<id>``."""
    return ctx.out_dir / f"sub-{subject}"


def measurements_path(ctx: Context, subject: str) -> Path:
    """The tidy per-lesion table ``measure`` writes (Parquet)."""
    return subject_dir(ctx, subject) / f"sub-{subject}_measurements.parquet"


def lesion_table_path(ctx: Context, subject: str) -> Path:
    """Per-lesion, per-visit geometry ``measure`` writes (Parquet, one row per lesion and visit).

    Columns: ``subject, visit, date, lesion_id, target, nodal, organ, baseline`` and the
    geometry of :data:`tumorscope.lesions.geometry.GEOMETRY_KEYS` (the input of
    :func:`tumorscope.response.from_lesion_table`).
    """
    return subject_dir(ctx, subject) / f"sub-{subject}_lesions.parquet"


def _has_module(module: str, attr: str | None = None) -> str | None:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        return f"{module} cannot be imported ({exc})"
    if attr is not None and not hasattr(mod, attr):
        return f"{module}.{attr} does not exist yet"
    return None


def _problems_error(problems: list[Problem], what: str) -> DataError:
    first = problems[0]
    listing = "; ".join(str(p) for p in problems[:10])
    more = f" (+{len(problems) - 10} more)" if len(problems) > 10 else ""
    return DataError(
        f"{len(problems)} error(s) in {what}: {listing}{more}",
        file=first.file,
        field=first.field or None,
    )


# ---------------------------------------------------------------------------- register


def _register_inputs(ctx: Context, study: Study, unit: Unit) -> list[Path]:
    files = [_manifest_file(ctx)]
    for visit in study.subjects[unit.subject]:
        for series in visit.series.values():
            files += _series_files(series.path)
        files += _lesion_files(visit)
    return files


def _register(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """Check every series and lesion map of the subject; record subject, visits, series."""
    import nibabel as nib

    from ..files import file_sha256
    from ..io.study import validate_visit

    subject = study.subjects[unit.subject]
    problems: list[Problem] = []
    for visit in subject:
        problems += validate_visit(study, visit)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise _problems_error(errors, f"subject {unit.subject}")
    notes = [str(p) for p in problems]

    s = unit.subject
    visits, series_rows, lesions = [], [], {}
    baseline_ids: set[str] = set()
    base = subject.baseline
    if base.lesions is not None:
        baseline_ids = {r.lesion_id for r in base.lesions.table}
    for visit in subject:
        visits.append(
            {
                "subject": s,
                "visit": visit.id,
                "date": visit.date,
                "days_on_treatment": visit.days_on_treatment,
                "baseline": visit.baseline,
                "prebaseline": visit.prebaseline,
            }
        )
        for role, ser in visit.series.items():
            img: Any = nib.load(str(ser.path))
            shape = tuple(int(n) for n in img.shape)
            series_rows.append(
                {
                    "subject": s,
                    "visit": visit.id,
                    "role": role,
                    "suffix": ser.suffix,
                    "path": ser.relpath,
                    "sha256": file_sha256(ser.path),
                    "shape": "x".join(map(str, shape)),
                    "n_measurements": shape[3] if len(shape) > 3 else 1,
                }
            )
        if visit.lesions is not None:
            for info in visit.lesions.table:
                if info.lesion_id in lesions:
                    continue
                kind = (
                    "target"
                    if info.target
                    else ("non-target" if info.lesion_id in baseline_ids else "new")
                )
                if visit.prebaseline:
                    kind = "target" if info.target else "non-target"
                lesions[info.lesion_id] = {
                    "subject": s,
                    "lesion_id": info.lesion_id,
                    "organ": info.organ,
                    "kind": kind,
                    "nodal": info.nodal,
                    "first_visit": visit.id,
                }
    writes = [
        Write(
            "subjects",
            {"subject": s},
            [
                {
                    "subject": s,
                    "treatment_agent": subject.treatment.agent,
                    "treatment_start": subject.treatment.start_date,
                    "n_visits": len(subject.visits),
                }
            ],
            mode="upsert",
        ),
        Write("visits", {"subject": s}, visits, mode="upsert"),
        Write("series", {"subject": s}, series_rows),
        Write("lesions", {"subject": s}, list(lesions.values())),
    ]
    return StepOutput(files=[], writes=writes, notes=notes)


# ---------------------------------------------------------------------------- fit_dwi


def _dwi_applies(study: Study, unit: Unit) -> bool:
    return "dwi" in _visit(study, unit).series


def _dwi_inputs(ctx: Context, study: Study, unit: Unit) -> list[Path]:
    return _series_files(_visit(study, unit).series["dwi"].path)


def _align_applies(study: Study, unit: Unit) -> bool:
    from .align import ALIGN_REFERENCE

    visit = _visit(study, unit)
    return (
        ALIGN_REFERENCE in visit.series
        and visit.lesions is not None
        and any(r != ALIGN_REFERENCE for r in visit.series)
    )


def _align_inputs(ctx: Context, study: Study, unit: Unit) -> list[Path]:
    visit = _visit(study, unit)
    files = [p for ser in visit.series.values() for p in _series_files(ser.path)]
    return files + _lesion_files(visit)


def _align(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """Rigid alignment of every series of the visit to its anatomical image
    (:func:`tumorscope.pipeline.align.align_visit`)."""
    from ..volume import atomic_write
    from .align import align_visit

    assert unit.visit is not None
    tol = float(ctx.options.get("align_tolerance_vox", DEFAULT_OPTIONS["align_tolerance_vox"]))
    result = align_visit(_visit(study, unit), tolerance_vox=tol)
    rows = [a.row(unit.subject, unit.visit) for a in result]
    path = align_path(ctx, unit.subject, unit.visit)
    text = json.dumps(rows, indent=1) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))
    notes = [
        f"{a.series}: lesions move {a.mean_displacement_mm:.2f} mm on average "
        f"(tolerance {a.tolerance_mm:.2f} mm): masks resampled for its maps"
        for a in result
        if a.applied
    ]
    where = {"subject": unit.subject, "visit": unit.visit}
    return StepOutput(files=[path], writes=[Write("alignments", where, rows)], notes=notes)


def maps_dir(ctx: Context, subject: str, visit: str) -> Path:
    """Where the fitted maps of a visit go: ``OUT/sub-<id>/ses-<id>/maps``."""
    return subject_dir(ctx, subject) / f"ses-{visit}" / "maps"


def _sidecar(path: Path) -> dict[str, Any]:
    side = path.with_name(path.name[: -len(".nii.gz")] + ".json")
    try:
        return dict(json.loads(side.read_text()))
    except (OSError, ValueError):
        return {}


@dataclass(frozen=True)
class _MapEntry:
    model: str
    parameter: str
    path: Path
    status: Path | None
    fit: Any = None  # the FitResult the map comes from (quality counts), if any
    series: str | None = None  # role of the series the map was computed on (its grid)


def _record_maps(
    ctx: Context, step: str, unit: Unit, entries: list[_MapEntry], files: list[Path]
) -> StepOutput:
    """Rows of the ``maps`` table and the visit's map index for the maps a fit step wrote.

    The index (``<prefix><step>_index.json``: map name -> path, status map, unit) is how
    the later steps, which never read the database, find the maps; it is one of the step's
    outputs, so its hash makes them re-run when the maps change.
    """
    import numpy as np

    from ..files import file_sha256
    from ..fitting.status import FitStatus
    from ..volume import atomic_write

    assert unit.visit is not None
    rows: list[dict[str, Any]] = []
    index: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    for e in entries:
        side = _sidecar(e.path)
        unit_str = str(side.get("Units", ""))
        n_fitted = n_conv = None
        if e.fit is not None:
            st = np.asarray(e.fit.status)
            n_fitted = int((st != FitStatus.NOT_FITTED).sum())
            n_conv = int((st == FitStatus.CONVERGED).sum())
        name = f"{e.model}.{e.parameter}"
        index[name] = {
            "path": ctx.out_rel(e.path),
            "status": None if e.status is None else ctx.out_rel(e.status),
            "unit": unit_str,
            "series": e.series,
        }
        rows.append(
            {
                "subject": unit.subject,
                "visit": unit.visit,
                "model": e.model,
                "parameter": e.parameter,
                "step": step,
                "unit": unit_str,
                "path": ctx.out_rel(e.path),
                "sha256": file_sha256(e.path),
                "n_fitted": n_fitted,
                "n_converged": n_conv,
                "provenance": json.loads(
                    json.dumps(side.get("Provenance") or {}, default=_json_default)
                ),
            }
        )
    fits = {e.model: e.fit for e in entries if e.fit is not None}
    for model, fit in fits.items():
        st = np.asarray(fit.status)
        n = int((st != FitStatus.NOT_FITTED).sum())
        notes.append(f"{model}: {int((st == FitStatus.CONVERGED).sum())}/{n} voxels converged")
    idx_path = maps_dir(ctx, unit.subject, unit.visit) / (
        f"sub-{unit.subject}_ses-{unit.visit}_{step}_index.json"
    )
    text = json.dumps(index, indent=1, sort_keys=True) + "\n"
    atomic_write(idx_path, lambda tmp: tmp.write_text(text))
    where = {"subject": unit.subject, "visit": unit.visit, "step": step}
    return StepOutput(files=[*files, idx_path], writes=[Write("maps", where, rows)], notes=notes)


def _with_sidecars(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        out.append(p)
        if p.name.endswith(".nii.gz"):
            side = p.with_name(p.name[: -len(".nii.gz")] + ".json")
            if side.exists():
                out.append(side)
    return out


def _fit_dwi(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """Fit every diffusion model of ``options["dwi_models"]`` to the visit's DWI series.

    Calls :func:`tumorscope.stages.diffusion.fit_dwi` (whole volume, no mask: the maps are
    shown over the anatomy in the report; a voxel's fit does not depend on the others).
    """
    from ..stages import diffusion

    assert unit.visit is not None
    series = _visit(study, unit).series["dwi"]
    out = maps_dir(ctx, unit.subject, unit.visit)
    entries: list[_MapEntry] = []
    files: list[Path] = []
    for name in ctx.options.get("dwi_models", DEFAULT_OPTIONS["dwi_models"]):
        prefix = f"sub-{unit.subject}_ses-{unit.visit}_{name}_"
        res = diffusion.fit_dwi(series.path, out_dir=out, model=name, prefix=prefix)
        status = res.files.get("status")
        for param in res.fit.maps:
            entries.append(_MapEntry(name, param, res.files[param], status, res.fit, "dwi"))
        files += _with_sidecars(list(res.files.values()))
    return _record_maps(ctx, "fit_dwi", unit, entries, files)


def _dce_applies(study: Study, unit: Unit) -> bool:
    series = _visit(study, unit).series
    return "dce" in series and "t1_vfa" in series


def _dce_inputs(ctx: Context, study: Study, unit: Unit) -> list[Path]:
    visit = _visit(study, unit)
    return [
        _manifest_file(ctx),
        *_series_files(visit.series["dce"].path),
        *_series_files(visit.series["t1_vfa"].path),
        *_lesion_files(visit),
    ]


def _fit_dce(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """VFA T1, concentration, AIF and the pharmacokinetic model inside the lesions.

    Calls :func:`tumorscope.models.dce_stage.fit_dce_visit` with ``options["dce_model"]``
    and ``options["dce_aif"]``; the study manifest's ``dce:`` defaults apply.
    """
    from ..stages.dce import DCEOptions, fit_dce_visit

    assert unit.visit is not None
    model = str(ctx.options.get("dce_model", DEFAULT_OPTIONS["dce_model"]))
    aif = str(ctx.options.get("dce_aif", DEFAULT_OPTIONS["dce_aif"]))
    res = fit_dce_visit(
        _visit(study, unit),
        out_dir=maps_dir(ctx, unit.subject, unit.visit),
        options=DCEOptions(model=model, aif=aif),
    )
    files = res.outputs
    entries: list[_MapEntry] = []
    for param in res.fit.maps:
        key = f"{model}_{param}"
        if key in files:
            entries.append(
                _MapEntry(model, param, files[key], files.get(f"{model}_status"), res.fit, "dce")
            )
    for key, path in files.items():
        if key.startswith("sq_") and str(path).endswith(".nii.gz"):
            entries.append(_MapEntry("sq", key[3:], path, None, series="dce"))
    for param in ("T1", "R1"):
        if f"vfa_{param}" in files:
            entries.append(
                _MapEntry(
                    "vfa", param, files[f"vfa_{param}"], files.get("vfa_status"), series="t1_vfa"
                )
            )
    out = _record_maps(ctx, "fit_dce", unit, entries, _with_sidecars(list(files.values())))
    out.notes += list(res.warnings)
    return out


def _relax_applies(study: Study, unit: Unit) -> bool:
    from ..models.relaxometry_stage import RELAXOMETRY_ROLES

    return any(r in _visit(study, unit).series for r in RELAXOMETRY_ROLES)


def _relax_inputs(ctx: Context, study: Study, unit: Unit) -> list[Path]:
    from ..models.relaxometry_stage import RELAXOMETRY_ROLES

    series = _visit(study, unit).series
    return [p for r in RELAXOMETRY_ROLES if r in series for p in _series_files(series[r].path)]


def _fit_relax(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """T2*, T2 and inversion-recovery T1 of every relaxometry series of the visit.

    Calls :func:`tumorscope.models.relaxometry_stage.fit_relaxometry_visit` (whole volume).
    """
    from ..models.relaxometry_stage import fit_relaxometry_visit

    assert unit.visit is not None
    res = fit_relaxometry_visit(
        _visit(study, unit), out_dir=maps_dir(ctx, unit.subject, unit.visit)
    )
    entries: list[_MapEntry] = []
    for role, fit in res.fits.items():
        model = str(fit.provenance.get("model", ""))
        for param in fit.maps:
            path = res.files.get(f"{model}_{param}")
            if path is not None:
                status = res.files.get(f"{model}_status")
                entries.append(_MapEntry(model, param, path, status, fit, role))
    out = _record_maps(ctx, "fit_relax", unit, entries, _with_sidecars(list(res.files.values())))
    out.notes += list(res.warnings)
    return out


# ---------------------------------------------------------------------------- iron


def _iron_applies(study: Study, unit: Unit) -> bool:
    series = _visit(study, unit).series
    return "t2star_ferumoxytol" in series and "t2star" in series


def _iron_inputs(ctx: Context, study: Study, unit: Unit) -> list[Path]:
    # the pre-contrast R2* comes from fit_relax (its output hashes join the input hash)
    return _series_files(_visit(study, unit).series["t2star_ferumoxytol"].path)


def _write_derived_map(
    path: Path, like: Any, data: Any, *, units: str, description: str, provenance: Any
) -> list[Path]:
    """Write a derived map (float32 NIfTI) and its sidecar, both atomically."""
    import numpy as np

    from ..volume import atomic_write

    like.with_data(np.asarray(data, dtype=np.float32)).to_nifti(path)
    side = path.with_name(path.name[: -len(".nii.gz")] + ".json")
    meta = {"Units": units, "Description": description, "Provenance": provenance}
    text = json.dumps(meta, indent=1, default=_json_default) + "\n"
    atomic_write(side, lambda tmp: tmp.write_text(text))
    return [path, side]


def _iron(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """T2* of the post-ferumoxytol series, ΔR2* = R2*post − R2*pre and the iron concentration.

    The post-contrast MEGRE is fitted like the pre-contrast one (same model, built from its
    own sidecar; :func:`tumorscope.stages.fit.fit_volume`), the pre-contrast R2* is
    the ``t2star.R2star`` map of ``fit_relax`` at the same visit (same grid: the phantom's
    series share one grid; real data must be co-registered first). ΔR2* and the apparent
    iron concentration go through :func:`tumorscope.models.iron.delta_rate` and
    :func:`~tumorscope.models.iron.iron_concentration_mM` with the ferumoxytol r2* at the
    series' ``MagneticFieldStrength``. A voxel's ΔR2* status is the pre-contrast fit's status
    unless that converged, then the post-contrast one (so the per-lesion statistics of
    ``measure`` keep only voxels where both fits converged).
    """
    import numpy as np

    from .. import __version__
    from ..models import iron
    from ..models.relaxometry import T2Star
    from ..stages.fit import fit_volume
    from ..volume import Volume

    assert unit.visit is not None
    visit = _visit(study, unit)
    post = visit.series["t2star_ferumoxytol"]
    pre_maps = {
        k: v
        for k, v in maps_of_visit(
            ctx, {"fit_relax": upstream.get("fit_relax", {})}, unit.subject, unit.visit
        ).items()
        if k.startswith("t2star.")
    }
    if "t2star.R2star" not in pre_maps:
        raise DataError(
            "the pre-contrast R2* map (t2star.R2star of the fit_relax step) is missing; run "
            "fit_relax with this step",
            file=visit.series["t2star"].relpath,
            field="t2star",
        )
    if post.protocol is None:
        raise DataError(
            "series has no acquisition protocol", file=post.relpath, field="t2star_ferumoxytol"
        )
    side = _sidecar(post.path)
    b0 = side.get("MagneticFieldStrength")
    if b0 is None:
        raise DataError(
            "MagneticFieldStrength is needed to choose the ferumoxytol relaxivity",
            file=post.relpath,
            field="MagneticFieldStrength",
        )
    out_dir = maps_dir(ctx, unit.subject, unit.visit)
    pre = f"sub-{unit.subject}_ses-{unit.visit}_"
    res = fit_volume(
        T2Star.from_protocol(post.protocol),
        post.load(),
        out_dir=out_dir,
        prefix=f"{pre}t2star_post_",
        input_files={"series": post.path},
    )
    post_status = res.files["status"]
    entries = [
        _MapEntry("t2star_post", p, res.files[p], post_status, res.fit, "t2star_ferumoxytol")
        for p in ("R2star", "T2star", "S0")
        if p in res.files
    ]
    files = _with_sidecars(list(res.files.values()))

    pre_path, pre_st_path, _ = pre_maps["t2star.R2star"]
    pre_vol = Volume.from_nifti(pre_path)
    post_vol = Volume.from_nifti(res.files["R2star"])
    if not pre_vol.same_grid(post_vol):
        raise DataError(
            "pre- and post-ferumoxytol MEGRE are not on one grid; register them first",
            file=post.relpath,
            field="t2star_ferumoxytol",
        )
    dr = iron.delta_rate(pre_vol.data, post_vol.data)
    r = iron.resolve_relaxivity(relaxivity=None, field_strength_t=float(b0), rate="r2star")
    fe = iron.iron_concentration_mM(dr, relaxivity=r)
    st_post = Volume.from_nifti(post_status, dtype=np.uint8).data
    st_pre = (
        Volume.from_nifti(pre_st_path, dtype=np.uint8).data
        if pre_st_path is not None
        else np.zeros_like(st_post)
    )
    status = np.where(st_pre == 0, st_post, st_pre).astype(np.uint8)
    st_path = out_dir / f"{pre}iron_status.nii.gz"
    pre_vol.with_data(status).to_nifti(st_path, dtype=np.uint8)
    prov = {
        "model": "iron",
        "options": {
            "method": "delta R2* (post - pre), [Fe] = dR2*/r2*",
            "contrast": side.get("ContrastBolusIngredient"),
            "hours_after_contrast": side.get("HoursAfterContrast"),
            "field_strength_T": float(b0),
            "relaxivity_per_mM_s": r,
            "relaxivity_source": "ferumoxytol in plasma (tumorscope.models.iron)",
        },
        "inputs": {"pre": ctx.out_rel(pre_path), "post": post.relpath},
        "tumorscope_version": __version__,
        "numpy_version": np.__version__,
    }
    dr_path = out_dir / f"{pre}iron_dR2star.nii.gz"
    fe_path = out_dir / f"{pre}iron_Fe.nii.gz"
    files += _write_derived_map(
        dr_path,
        pre_vol,
        dr,
        units="1/s",
        description="dR2* = R2*(post) - R2*(pre)",
        provenance=prov,
    )
    files += _write_derived_map(
        fe_path,
        pre_vol,
        fe,
        units="mM",
        description=f"apparent iron concentration, dR2*/r2* with r2* = {r:g} /(mM s)",
        provenance=prov,
    )
    files.append(st_path)
    entries += [
        _MapEntry("iron", "dR2star", dr_path, st_path, series="t2star_ferumoxytol"),
        _MapEntry("iron", "Fe", fe_path, st_path, series="t2star_ferumoxytol"),
    ]
    out = _record_maps(ctx, "iron", unit, entries, files)
    out.notes += list(res.warnings)
    return out


# ---------------------------------------------------------------------------- fluorine


def _fluorine_applies(study: Study, unit: Unit) -> bool:
    series = _visit(study, unit).series
    return "fluorine" in series and "fluorine_tubes" in series


def _fluorine_inputs(ctx: Context, study: Study, unit: Unit) -> list[Path]:
    visit = _visit(study, unit)
    s = visit.series
    files = [*_series_files(s["fluorine"].path), *_series_files(s["fluorine_tubes"].path)]
    if "anatomical" in s:
        files += _series_files(s["anatomical"].path)
    return [*files, *_lesion_files(visit)]


def cells19f_path(ctx: Context, subject: str, visit: str) -> Path:
    """The per-lesion 19F cell counts the ``fluorine`` step writes (Parquet)."""
    return (
        subject_dir(ctx, subject) / f"ses-{visit}" / f"sub-{subject}_ses-{visit}_cells19F.parquet"
    )


#: Columns of the 19F table (one row per lesion).
CELLS19F_COLUMNS = (
    "subject",
    "visit",
    "lesion_id",
    "status",
    "cells",
    "cells_se",
    "cells_detection_limit",
    "n_voxels",
    "n_detected",
    "threshold",
    "noise_sigma",
    "signal_per_spin",
    "signal_per_spin_se",
    "fluorine_per_cell",
    "background",
)


def fluorine_background(anatomical: Any, exclude: Any) -> Any:
    """Signal-free voxels of a 19F image for the Rician noise estimate.

    19F has no tissue background, but the labelled cells sit in tissue, so the noise is
    estimated *outside the body*: voxels whose anatomical (T2w) signal is below 5 % of its
    99th percentile (air: noise only), minus the reference tubes and the lesions dilated by
    one voxel (``exclude``), so no 19F signal enters the estimate.
    """
    import numpy as np
    from scipy import ndimage

    a = np.asarray(anatomical, dtype=float)
    low = np.isfinite(a) & (a < 0.05 * np.nanpercentile(a, 99.0))
    return low & ~ndimage.binary_dilation(np.asarray(exclude, bool), iterations=1)


def _fluorine(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """Labelled cells per lesion from the 19F image and its reference tubes.

    :func:`tumorscope.models.fluorine.calibrate_fluorine` on the tubes of the sidecar's
    ``ReferenceTubes`` ({label in the tube map: mM 19F}), noise from the out-of-body
    background of :func:`fluorine_background`, then
    :func:`~tumorscope.models.fluorine.count_cells` per lesion with ``FluorinePerCell``.
    Lesions with no voxel above the detection threshold are "below detection" (cells NaN,
    with their detection limit).
    """
    import numpy as np
    import pandas as pd

    from ..models import fluorine
    from ..volume import atomic_write

    assert unit.visit is not None
    visit = _visit(study, unit)
    f_series = visit.series["fluorine"]
    t_series = visit.series["fluorine_tubes"]
    side = _sidecar(f_series.path)
    tubes_mM = side.get("ReferenceTubes")
    if not isinstance(tubes_mM, dict) or not tubes_mM:
        raise DataError(
            "ReferenceTubes ({tube label: mM of 19F}) is missing or empty",
            file=f_series.relpath,
            field="ReferenceTubes",
        )
    per_cell = side.get("FluorinePerCell")
    if per_cell is None:
        raise DataError(
            "FluorinePerCell is missing", file=f_series.relpath, field="FluorinePerCell"
        )
    img_vol = f_series.load()
    img = np.asarray(img_vol.data, dtype=float)
    if img.ndim == 4 and img.shape[3] == 1:
        img = img[..., 0]
    tube_map = np.asarray(t_series.load().data)
    masks, conc = [], []
    for label, mm in sorted(tubes_mM.items(), key=lambda kv: int(kv[0])):
        m = tube_map == int(label)
        if not m.any():
            raise DataError(
                f"reference tube {label} of ReferenceTubes is not in the tube label map",
                file=t_series.relpath,
                field="ReferenceTubes",
            )
        masks.append(m)
        conc.append(float(mm))
    les = visit.lesions
    labels = (
        np.zeros(img.shape, np.int64) if les is None else les.load_labels().data.astype(np.int64)
    )
    if "anatomical" not in visit.series:
        raise DataError(
            "the 19F noise is estimated outside the body, which needs the anatomical image",
            file=f_series.relpath,
            field="anatomical",
        )
    anat = visit.series["anatomical"].load().data
    background = fluorine_background(anat, (tube_map > 0) | (labels > 0))
    cal = fluorine.calibrate_fluorine(
        img, masks, conc, voxel_volume_ml=img_vol.voxel_volume_ml, background=background
    )
    res = fluorine.count_cells(img, labels, cal, fluorine_per_cell=float(per_cell))
    ids = {} if les is None else {r.label: r.lesion_id for r in les.table}
    rows: list[dict[str, Any]] = []
    for j, lab in enumerate(res["label"]):
        rows.append(
            {
                "subject": unit.subject,
                "visit": unit.visit,
                "lesion_id": ids.get(int(lab), str(int(lab))),
                "status": str(res["status"][j]),
                "cells": float(res["cells"][j]),
                "cells_se": float(res["cells_se"][j]),
                "cells_detection_limit": float(res["cells_detection_limit"][j]),
                "n_voxels": int(res["n_voxels"][j]),
                "n_detected": int(res["n_detected"][j]),
                "threshold": float(res["threshold"][j]),
                "noise_sigma": cal.noise_sigma,
                "signal_per_spin": cal.signal_per_spin,
                "signal_per_spin_se": cal.signal_per_spin_se,
                "fluorine_per_cell": float(per_cell),
                "background": f"{int(background.sum())} out-of-body voxels",
            }
        )
    frame = pd.DataFrame(rows, columns=list(CELLS19F_COLUMNS))
    path = cells19f_path(ctx, unit.subject, unit.visit)
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    mrows: list[dict[str, Any]] = []
    for r in rows:
        for stat, unit_str in (
            ("cells", "cells"),
            ("cells_se", "cells"),
            ("cells_detection_limit", "cells"),
            ("n_detected", "voxels"),
        ):
            v = r[stat]
            mrows.append(
                {
                    **_mrow(
                        unit.subject,
                        unit.visit,
                        r["lesion_id"],
                        "19F",
                        stat,
                        None if v != v else v,
                        unit_str,
                    ),
                    "step": "fluorine",
                }
            )
    notes = [
        f"19F: sigma {cal.noise_sigma:.3g} from {int(background.sum())} background voxels, "
        f"tube SNR {', '.join(f'{x:.1f}' for x in cal.tube_snr)}"
    ]
    where = {"subject": unit.subject, "visit": unit.visit, "step": "fluorine"}
    return StepOutput(files=[path], writes=[Write("measurements", where, mrows)], notes=notes)


# ---------------------------------------------------------------------------- hypoxia


def _hypoxia_applies(study: Study, unit: Unit) -> bool:
    series = _visit(study, unit).series
    return "t2star" in series and "dce" in series and "t1_vfa" in series


def _hypoxia_inputs(ctx: Context, study: Study, unit: Unit) -> list[Path]:
    return _lesion_files(_visit(study, unit))


def hypoxia_path(ctx: Context, subject: str, visit: str) -> Path:
    """The per-lesion hypoxia classes the ``hypoxia`` step writes (Parquet)."""
    return subject_dir(ctx, subject) / f"ses-{visit}" / f"sub-{subject}_ses-{visit}_hypoxia.parquet"


def _hypoxia(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """Hypoxia classes from R2* (``fit_relax``) and Ktrans (``fit_dce``) inside the lesions.

    :func:`tumorscope.models.hypoxia.hypoxia_classes` with the options
    ``hypoxia_r2star_per_s`` and ``hypoxia_ktrans_per_min`` (no defaults: without both the
    unit is done with a note and writes nothing), then
    :func:`~tumorscope.models.hypoxia.hypoxia_table` per lesion. Writes the class map
    (uint8, :class:`~tumorscope.models.hypoxia.HypoxiaClass` codes; not a ``maps`` row, its
    mean would mean nothing), a per-lesion Parquet table and ``measurements`` rows (map
    ``hypoxia``).
    """
    import numpy as np
    import pandas as pd

    from .. import __version__
    from ..models import hypoxia
    from ..volume import Volume, atomic_write

    assert unit.visit is not None
    r2_thr = ctx.options.get("hypoxia_r2star_per_s")
    kt_thr = ctx.options.get("hypoxia_ktrans_per_min")
    if r2_thr is None or kt_thr is None:
        return StepOutput(
            notes=[
                "hypoxia not classified: give the options hypoxia_r2star_per_s and "
                "hypoxia_ktrans_per_min (thresholds are study-specific)"
            ]
        )
    visit = _visit(study, unit)
    maps = maps_of_visit(ctx, upstream, unit.subject, unit.visit)
    ktrans = next((k for k in sorted(maps) if k.endswith(".Ktrans")), None)
    if "t2star.R2star" not in maps or ktrans is None:
        raise DataError(
            "hypoxia needs the R2* map of fit_relax and the Ktrans map of fit_dce "
            f"(found {sorted(maps)})",
            file=visit.series["t2star"].relpath,
            field="t2star",
        )
    r2_vol = Volume.from_nifti(maps["t2star.R2star"][0])
    kt = Volume.from_nifti(maps[ktrans][0]).data
    les = visit.lesions
    labels = (
        np.zeros(r2_vol.spatial_shape, np.int64)
        if les is None
        else les.load_labels().data.astype(np.int64)
    )
    classes = hypoxia.hypoxia_classes(
        r2_vol.data,
        r2star_threshold_per_s=float(r2_thr),
        perfusion=kt,
        perfusion_threshold=float(kt_thr),
        mask=labels > 0,
    )
    table = hypoxia.hypoxia_table(classes, labels, voxel_volume_ml=r2_vol.voxel_volume_ml)
    out_dir = maps_dir(ctx, unit.subject, unit.visit)
    cpath = out_dir / f"sub-{unit.subject}_ses-{unit.visit}_hypoxia_classes.nii.gz"
    r2_vol.with_data(classes).to_nifti(cpath, dtype=np.uint8)
    side = cpath.with_name(cpath.name[: -len(".nii.gz")] + ".json")
    meta = {
        "Units": "class",
        "Description": "hypoxia classes: "
        + ", ".join(f"{int(c)}={c.name}" for c in hypoxia.HypoxiaClass),
        "Provenance": {
            "model": "hypoxia",
            "options": {
                "r2star_threshold_per_s": float(r2_thr),
                "ktrans_threshold_per_min": float(kt_thr),
                "perfusion": ktrans,
            },
            "tumorscope_version": __version__,
        },
    }
    text = json.dumps(meta, indent=1) + "\n"
    atomic_write(side, lambda tmp: tmp.write_text(text))
    ids = {} if les is None else {r.label: r.lesion_id for r in les.table}
    rows = []
    for j, lab in enumerate(table["label"]):
        row: dict[str, Any] = {
            "subject": unit.subject,
            "visit": unit.visit,
            "lesion_id": ids.get(int(lab), str(int(lab))),
        }
        row.update({k: v[j].item() for k, v in table.items() if k != "label"})
        rows.append(row)
    frame = pd.DataFrame(rows)
    path = hypoxia_path(ctx, unit.subject, unit.visit)
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    mrows = []
    for r in rows:
        for k, v in r.items():
            if k.startswith("fraction_") or k == "hypoxic_volume_ml":
                unit_str = "mL" if k.endswith("_ml") else "1"
                val = None if v != v else v
                mrows.append(
                    {
                        **_mrow(
                            unit.subject, unit.visit, r["lesion_id"], "hypoxia", k, val, unit_str
                        ),
                        "step": "hypoxia",
                    }
                )
    where = {"subject": unit.subject, "visit": unit.visit, "step": "hypoxia"}
    return StepOutput(files=[cpath, side, path], writes=[Write("measurements", where, mrows)])


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


# ---------------------------------------------------------------------------- measure

#: Steps that write parameter maps (each writes a ``*_index.json`` per visit).
_MAP_STEPS = ("fit_dwi", "fit_dce", "fit_relax", "iron")


def _measure_inputs(ctx: Context, study: Study, unit: Unit) -> list[Path]:
    files = [_manifest_file(ctx)]
    for visit in study.subjects[unit.subject]:
        files += _lesion_files(visit)
    return files


def maps_of_visit(
    ctx: Context, upstream: Upstream, subject: str, visit: str
) -> dict[str, tuple[Path, Path | None, str]]:
    """Maps the fit steps wrote for one visit: ``{"ivim.D": (path, status path, unit)}``.

    Read from the map indexes among the fit steps' outputs (``upstream``).
    """
    key = f"sub-{subject}/ses-{visit}"
    found: dict[str, tuple[Path, Path | None, str]] = {}
    for step in _MAP_STEPS:
        for rel in sorted(upstream.get(step, {}).get(key, {})):
            if not rel.endswith("_index.json"):
                continue
            index = json.loads((ctx.out_dir / rel).read_text())
            for name, e in sorted(index.items()):
                status = None if e.get("status") is None else ctx.out_dir / e["status"]
                found[name] = (ctx.out_dir / e["path"], status, str(e.get("unit", "")))
    return found


def map_series_of_visit(
    ctx: Context, upstream: Upstream, subject: str, visit: str
) -> dict[str, str | None]:
    """Role of the series each map of a visit was computed on: ``{"ivim.D": "dwi"}``."""
    key = f"sub-{subject}/ses-{visit}"
    found: dict[str, str | None] = {}
    for step in _MAP_STEPS:
        for rel in sorted(upstream.get(step, {}).get(key, {})):
            if rel.endswith("_index.json"):
                index = json.loads((ctx.out_dir / rel).read_text())
                for name, e in index.items():
                    found[name] = e.get("series")
    return found


def align_path(ctx: Context, subject: str, visit: str) -> Path:
    """The alignments ``align`` writes for a visit (JSON, one entry per series)."""
    return subject_dir(ctx, subject) / f"ses-{visit}" / f"sub-{subject}_ses-{visit}_align.json"


def applied_alignments(
    ctx: Context, upstream: Upstream, subject: str, visit: str
) -> dict[str, list[list[float]]]:
    """The alignments of a visit that ``measure`` applies: ``{role: 4x4 matrix}``."""
    key = f"sub-{subject}/ses-{visit}"
    out: dict[str, list[list[float]]] = {}
    for rel in upstream.get("align", {}).get(key, {}):
        if rel.endswith("_align.json"):
            for row in json.loads((ctx.out_dir / rel).read_text()):
                if row.get("applied") and row.get("matrix") is not None:
                    out[str(row["series"])] = row["matrix"]
    return out


def _measure(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """Geometry of every lesion at every visit, and statistics of every fitted map in it."""
    import numpy as np
    import pandas as pd

    from ..fitting.status import FitStatus
    from ..lesions.geometry import GEOMETRY_KEYS, measure
    from ..lesions.stats import statistics_table
    from ..volume import Volume, atomic_write

    s = unit.subject
    subject = study.subjects[s]
    tidy: list[dict[str, Any]] = []
    wide: list[dict[str, Any]] = []
    units = {
        "volume_ml": "mL",
        "longest_diameter_mm": "mm",
        "short_axis_mm": "mm",
        "bidimensional_product_mm2": "mm2",
        "max_3d_diameter_mm": "mm",
    }
    notes: list[str] = []
    for visit in subject:
        les = visit.lesions
        infos = {} if les is None else {r.lesion_id: r for r in les.table}
        labels = None if les is None else les.load_labels()
        masks: dict[str, np.ndarray] = {}
        for lid, info in infos.items():
            assert labels is not None
            m = labels.data == info.label
            if m.any():
                masks[lid] = m
        for lid, m in masks.items():
            assert labels is not None
            geo = measure(m, labels.affine, lesion=f"{lid} at visit {visit.id}")
            for k in GEOMETRY_KEYS:
                tidy.append(_mrow(s, visit.id, lid, "", k, geo[k], units[k]))
        maps = maps_of_visit(ctx, upstream, s, visit.id)
        if masks and maps:
            assert labels is not None
            roles = map_series_of_visit(ctx, upstream, s, visit.id)
            moved = applied_alignments(ctx, upstream, s, visit.id)
            # maps grouped by the lesion masks they are measured with: the masks as drawn,
            # or the masks resampled onto the map's grid through the series' alignment
            groups: dict[str | None, list[str]] = {}
            for k in maps:
                role = roles.get(k)
                groups.setdefault(role if role in moved else None, []).append(k)
            table_parts = []
            for role, names in groups.items():
                vols = {k: Volume.from_nifti(maps[k][0]) for k in names}
                values = {k: v.data for k, v in vols.items()}
                status = {
                    k: (
                        Volume.from_nifti(maps[k][1], dtype=np.uint8).data
                        if maps[k][1] is not None
                        else np.full(values[k].shape, int(FitStatus.CONVERGED), np.uint8)
                    )
                    for k in names
                }
                unit_of = {k: maps[k][2] for k in names}
                group_masks = masks
                if role is not None:
                    group_masks = _moved_masks(labels, infos, vols[names[0]], moved[role])
                    notes.append(
                        f"visit {visit.id}: lesion masks resampled onto the {role} maps "
                        "through its alignment"
                    )
                table_parts.append(
                    statistics_table(
                        values, group_masks, visit=visit.id, status=status, units=unit_of
                    )
                )
            table = pd.concat(table_parts, ignore_index=True)
            for r in table.itertuples(index=False):
                tidy.append(
                    _mrow(
                        s,
                        visit.id,
                        str(r.lesion_id),
                        str(r.map),
                        str(r.statistic),
                        r.value,
                        str(r.unit),
                    )
                )
        # the per-lesion, per-visit table (the input of response.from_lesion_table)
        for lid in masks:
            info = infos[lid]
            geo_row = {
                r["statistic"]: r["value"]
                for r in tidy
                if r["visit"] == visit.id and r["lesion_id"] == lid and not r["map"]
            }
            wide.append(
                {
                    "subject": s,
                    "visit": visit.id,
                    "date": visit.date.isoformat() if visit.date else None,
                    "lesion_id": lid,
                    "target": bool(info.target),
                    "nodal": bool(info.nodal),
                    "organ": info.organ,
                    "baseline": bool(visit.baseline),
                    **geo_row,
                }
            )
    if not tidy:
        notes.append(f"subject {s}: no lesion segmentation at any visit")
    out_m, out_r = measurements_path(ctx, s), lesion_table_path(ctx, s)
    frame = pd.DataFrame(tidy, columns=list(_MROW))
    rframe = pd.DataFrame(wide)
    atomic_write(out_m, lambda tmp: frame.to_parquet(tmp, index=False))
    atomic_write(out_r, lambda tmp: rframe.to_parquet(tmp, index=False))
    rows = [{**r, "step": "measure"} for r in tidy]
    return StepOutput(
        files=[out_m, out_r],
        writes=[Write("measurements", {"subject": s, "step": "measure"}, rows)],
        notes=notes,
    )


_MROW = ("subject", "visit", "lesion_id", "map", "statistic", "value", "unit")


def _moved_masks(labels: Any, infos: Mapping[str, Any], onto: Any, matrix: Any) -> dict[str, Any]:
    """Lesion masks on ``onto``'s grid through an alignment (reference -> series world).

    ``resample_mask`` wants the target-world to source-world transform: from the series
    (where the map is) back to the reference (where the lesions were drawn), the inverse.
    """
    import numpy as np

    from ..preprocessing import resample_mask

    back = np.linalg.inv(np.asarray(matrix, dtype=np.float64))
    moved = resample_mask(labels, onto, transform=back).data
    out = {}
    for lid, info in infos.items():
        m = moved == info.label
        if m.any():
            out[lid] = m
    return out


def _mrow(s: str, v: str, lid: str, m: str, stat: str, value: Any, unit: str) -> dict[str, Any]:
    val = None if value is None else float(value)
    return dict(zip(_MROW, (s, v, lid, m, stat, val, unit), strict=True))


# ---------------------------------------------------------------------------- assess


def _assess_inputs(ctx: Context, study: Study, unit: Unit) -> list[Path]:
    return [_manifest_file(ctx)]


def patterns_path(ctx: Context, subject: str) -> Path:
    """The immunotherapy patterns ``assess`` writes for a subject (Parquet)."""
    return subject_dir(ctx, subject) / f"sub-{subject}_patterns.parquet"


def assessments_path(ctx: Context, subject: str) -> Path:
    """The assessments ``assess`` writes for a subject (Parquet, ``details`` as JSON text)."""
    return subject_dir(ctx, subject) / f"sub-{subject}_assessments.parquet"


def _assess(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """Response under every criterion ``study.yaml`` names (default RECIST 1.1).

    The lesion table of ``measure`` goes through :func:`tumorscope.response.from_lesion_table`
    with the manifest's baseline visit (so pre-baseline scans are not taken as baseline) and
    ``missing="absent"`` (a lesion not segmented at a later visit has disappeared).
    """
    import pandas as pd

    from .. import response
    from ..volume import atomic_write

    s = unit.subject
    lesions = pd.read_parquet(lesion_table_path(ctx, s))
    if lesions.empty:
        raise DataError(
            "no lesion was measured at any visit, nothing to assess",
            file=ctx.out_rel(lesion_table_path(ctx, s)),
        )
    baseline = {s: study.subjects[s].baseline.id}
    table = response.from_lesion_table(lesions, baseline=baseline, missing="absent")
    rows: list[dict[str, Any]] = []
    columns = {
        "subject",
        "visit",
        "response",
        "criteria",
        "sum_mm",
        "reason",
        "change_from_baseline_pct",
        "change_from_nadir_pct",
    }
    for crit in study.criteria or ("recist1.1",):
        res = response.assess(table, criteria=crit)
        for r in res.to_dict("records"):
            details = {k: v for k, v in r.items() if k not in columns}
            rows.append(
                {
                    "subject": str(r["subject"]),
                    "visit": str(r["visit"]),
                    "criteria": crit,
                    "response": r.get("response"),
                    "target_sum_mm": r.get("sum_mm"),
                    "change_from_baseline_pct": r.get("change_from_baseline_pct"),
                    "change_from_nadir_pct": r.get("change_from_nadir_pct"),
                    "reason": r.get("reason"),
                    "details": json.loads(json.dumps(details, default=_json_default)),
                }
            )
    crits = list(study.criteria or ("recist1.1",))
    main = "irecist" if "irecist" in crits else crits[0]
    prows, notes = _patterns(s, table, response.assess(table, criteria=main))
    out, pout = assessments_path(ctx, s), patterns_path(ctx, s)
    for path, data in ((out, rows), (pout, prows)):
        frame = pd.DataFrame(data)
        if "details" in frame:
            frame["details"] = [json.dumps(d, sort_keys=True) for d in frame["details"]]
        atomic_write(path, lambda tmp, f=frame: f.to_parquet(tmp, index=False))
    return StepOutput(
        files=[out, pout],
        writes=[
            Write("assessments", {"subject": s}, rows),
            Write("patterns", {"subject": s}, prows),
        ],
        notes=notes,
    )


def _patterns(
    subject: str, table: pd.DataFrame, assessment: pd.DataFrame
) -> tuple[list[dict[str, Any]], list[str]]:
    """Immunotherapy patterns of one subject (``tumorscope.response.patterns``).

    Pseudoprogression and durable response are read from ``assessment`` (iRECIST when the
    manifest names it); mixed response and hyperprogression (Champiat's definition) from the
    measurement table. A pattern the data cannot support (e.g. hyperprogression without a
    pre-baseline scan) gets ``flag=None`` with the reason.
    """
    import pandas as pd

    from ..errors import ResponseError
    from ..response import patterns as pat

    calls = (
        (
            "pseudoprogression",
            lambda: pat.pseudoprogression(assessment),
            "pseudoprogression",
            "progression_visit",
        ),
        ("durable response", lambda: pat.durable_response(assessment), "durable", "response_start"),
        ("mixed response", lambda: pat.mixed_response(table), "mixed", "visit"),
        ("hyperprogression", lambda: pat.hyperprogression(table), "hyperprogression", None),
    )
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for name, call, flag_col, visit_col in calls:
        try:
            res = call()
        except ResponseError as exc:
            notes.append(f"{name} not evaluated: {exc}")
            continue
        for r in res.to_dict("records"):
            if str(r["subject"]) != subject:
                continue
            flag = r.get(flag_col)
            visit = str(r.get(visit_col) or "") if visit_col else ""
            if name != "mixed response" and not flag:
                visit = ""
            known = {"subject", flag_col, "reason", "visit"}
            rows.append(
                {
                    "subject": subject,
                    "pattern": name,
                    "visit": visit,
                    "flag": None if flag is None or pd.isna(flag) else bool(flag),
                    "reason": r.get("reason"),
                    "details": json.loads(
                        json.dumps(
                            {k: v for k, v in r.items() if k not in known}, default=_json_default
                        )
                    ),
                }
            )
    return rows, notes


# ---------------------------------------------------------------------------- report


def _report_subject(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    from ..report import write_subject_report

    path = write_subject_report(ctx, study, unit.subject, upstream)
    return StepOutput(files=[path])


def _report_inputs(ctx: Context, study: Study, unit: Unit) -> list[Path]:
    files = [_manifest_file(ctx)]
    for visit in study.subjects[unit.subject]:
        anat = visit.series.get("anatomical")
        if anat is not None:
            files.append(anat.path)
        files += _lesion_files(visit)
    return files


STEPS: tuple[Step, ...] = (
    Step(
        "register",
        "subject",
        "1",
        "read and check every series and lesion map; record subject, visits, series, lesions",
        _register,
        _register_inputs,
    ),
    Step(
        "align",
        "visit",
        "1",
        "rigid alignment of every series to the anatomical image; lesion motion per series",
        _align,
        _align_inputs,
        requires=("register",),
        applies=_align_applies,
        missing=lambda: _has_module("SimpleITK"),
        option_keys=("align_tolerance_vox",),
    ),
    Step(
        "fit_dwi",
        "visit",
        "2",  # 2: the map index names the series of each map
        "fit the diffusion models to the DWI series",
        _fit_dwi,
        _dwi_inputs,
        requires=("register",),
        applies=_dwi_applies,
        missing=lambda: _has_module("tumorscope.stages.diffusion", "fit_dwi"),
        option_keys=("dwi_models",),
    ),
    Step(
        "fit_dce",
        "visit",
        "3",  # 2: semi-quantitative maps carry their own provenance; 3: series in the index
        "VFA T1, concentration, AIF and the DCE model inside the lesions",
        _fit_dce,
        _dce_inputs,
        requires=("register",),
        applies=_dce_applies,
        missing=lambda: _has_module("tumorscope.stages.dce", "fit_dce_visit"),
        option_keys=("dce_model", "dce_aif"),
    ),
    Step(
        "fit_relax",
        "visit",
        "2",  # 2: the map index names the series of each map
        "T2*, T2 and inversion-recovery T1 maps of the relaxometry series",
        _fit_relax,
        _relax_inputs,
        requires=("register",),
        applies=_relax_applies,
        missing=lambda: _has_module("tumorscope.models.relaxometry_stage", "fit_relaxometry_visit"),
    ),
    Step(
        "iron",
        "visit",
        "2",  # 2: the map index names the series of each map
        "post-ferumoxytol T2*, dR2* and apparent iron concentration",
        _iron,
        _iron_inputs,
        requires=("register", "fit_relax"),
        applies=_iron_applies,
        missing=lambda: _has_module("tumorscope.models.iron", "iron_concentration_mM"),
    ),
    Step(
        "fluorine",
        "visit",
        "1",
        "19F-labelled cells per lesion from the reference tubes, with detection limits",
        _fluorine,
        _fluorine_inputs,
        requires=("register",),
        applies=_fluorine_applies,
        missing=lambda: _has_module("tumorscope.models.fluorine", "count_cells"),
    ),
    Step(
        "hypoxia",
        "visit",
        "1",
        "hypoxia classes from R2* and Ktrans in the lesions (thresholds from the options)",
        _hypoxia,
        _hypoxia_inputs,
        requires=("register", "fit_relax", "fit_dce"),
        applies=_hypoxia_applies,
        missing=lambda: _has_module("tumorscope.models.hypoxia", "hypoxia_classes"),
        option_keys=("hypoxia_r2star_per_s", "hypoxia_ktrans_per_min"),
    ),
    Step(
        "measure",
        "subject",
        "3",  # 2: masks follow the alignment of the series; 3: short axis on the hull (fix)
        "lesion geometry and map statistics per lesion and visit",
        _measure,
        _measure_inputs,
        requires=("register", "align", *_MAP_STEPS),
        missing=lambda: _has_module("tumorscope.lesions.stats"),
    ),
    Step(
        "assess",
        "subject",
        "2",
        "response under the criteria of study.yaml, and immunotherapy patterns",
        _assess,
        _assess_inputs,
        requires=("measure",),
        missing=lambda: _has_module("tumorscope.response", "assess"),
    ),
    Step(
        "report_subject",
        "subject",
        "2",  # 2: the alignment table
        "the subject's HTML report",
        _report_subject,
        _report_inputs,
        requires=("measure", "assess", "align", *_MAP_STEPS, "fluorine"),
    ),
)
