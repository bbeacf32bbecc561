"""The steps of the study pipeline: the ``STEPS`` table and the fit-step bodies.

The step framework (:class:`Step`, :class:`Context`, :class:`Unit`, :class:`StepOutput`,
:class:`Write`, :func:`_record_maps`, :func:`maps_of_visit`) is in
:mod:`tumorscope.pipeline.step`, the output layout in :mod:`tumorscope.layout`, the run
options in :mod:`tumorscope.pipeline.options`. The other steps have their own modules.

=================  =======  ====================================================================
step               scope    where, and the code it calls
=================  =======  ====================================================================
``register``       subject  :mod:`.register` (reads and checks every series and lesion map)
``align``          visit    :mod:`.align` (:func:`~tumorscope.pipeline.align.align_visit`)
``fit_dwi``        visit    here: :func:`tumorscope.stages.diffusion.fit_dwi` (ADC, IVIM, DKI)
``fit_dce``        visit    here: ``tumorscope.models.dce_stage.fit_dce_visit``
``fit_relax``      visit    here: ``tumorscope.models.relaxometry_stage.fit_relaxometry_visit``
``iron``           visit    here: ``models.relaxometry.T2Star``, ``models.iron`` (ΔR2*, iron mM)
``fluorine``       visit    here: ``models.fluorine.calibrate_fluorine``, ``count_cells``
``hypoxia``        visit    here: ``models.hypoxia.hypoxia_classes``, ``hypoxia_table``
``measure``        subject  :mod:`.measure` (:func:`tumorscope.stages.lesions.measure_subject`)
``assess``         subject  :mod:`.assess` (``tumorscope.response.assess``, patterns)
``report_subject`` subject  :mod:`.reporting` (:mod:`tumorscope.report`)
=================  =======  ====================================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DataError
from ..layout import cells19f_path, hypoxia_path, maps_dir
from ..stages.fluorine import TABLE_COLUMNS as FLUORINE_TABLE_COLUMNS
from .align import align_applies, align_inputs, run_align
from .assess import assess_inputs, run_assess
from .measure import measure_inputs, run_measure
from .options import DEFAULT_OPTIONS, RunOptions
from .register import register_inputs, run_register
from .reporting import report_inputs, run_report_subject
from .step import (
    MAP_STEPS,
    Context,
    Step,
    StepOutput,
    Unit,
    Upstream,
    Write,
    _has_module,
    _lesion_files,
    _manifest_file,
    _MapEntry,
    _record_maps,
    _series_files,
    _visit,
    _with_sidecars,
    maps_of_visit,
)

if TYPE_CHECKING:
    from ..io import Study

__all__ = [
    "CELLS19F_COLUMNS",
    "DEFAULT_OPTIONS",
    "STEPS",
    "Context",
    "RunOptions",
    "Step",
    "StepOutput",
    "Unit",
    "Write",
    "cells19f_path",
    "hypoxia_path",
]

# Names of the steps' bodies before the split (kept for callers and tests).
_register, _register_inputs = run_register, register_inputs
_align, _align_inputs, _align_applies = run_align, align_inputs, align_applies
_measure, _measure_inputs = run_measure, measure_inputs
_assess, _assess_inputs = run_assess, assess_inputs
_report_subject, _report_inputs = run_report_subject, report_inputs
_MAP_STEPS = MAP_STEPS

# ---------------------------------------------------------------------------- fit_dwi


def _dwi_applies(study: Study, unit: Unit) -> bool:
    return "dwi" in _visit(study, unit).series


def _dwi_inputs(ctx: Context, study: Study, unit: Unit) -> list[Path]:
    return _series_files(_visit(study, unit).series["dwi"].path)


def _fit_dwi(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """Fit every diffusion model of ``options["dwi_models"]`` to the visit's DWI series.

    Calls :func:`tumorscope.stages.diffusion.fit_dwi_series` (whole volume, no mask: the maps
    are shown over the anatomy in the report; a voxel's fit does not depend on the others).
    """
    from ..stages.base import SeriesInput
    from ..stages.diffusion import fit_dwi_series

    assert unit.visit is not None
    series = SeriesInput.of(_visit(study, unit).series["dwi"])
    res = fit_dwi_series(
        series,
        out_dir=maps_dir(ctx, unit.subject, unit.visit),
        models=tuple(ctx.options.get("dwi_models", DEFAULT_OPTIONS["dwi_models"])),
        prefix=f"sub-{unit.subject}_ses-{unit.visit}_",
    )
    entries = [_MapEntry(m.model, m.parameter, m.path, m.status, m.fit, "dwi") for m in res.maps]
    return _record_maps(ctx, "fit_dwi", unit, entries, res.files)


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
    from ..stages.relaxometry import RELAXOMETRY_ROLES

    return any(r in _visit(study, unit).series for r in RELAXOMETRY_ROLES)


def _relax_inputs(ctx: Context, study: Study, unit: Unit) -> list[Path]:
    from ..stages.relaxometry import RELAXOMETRY_ROLES

    series = _visit(study, unit).series
    return [p for r in RELAXOMETRY_ROLES if r in series for p in _series_files(series[r].path)]


def _fit_relax(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """T2*, T2 and inversion-recovery T1 of every relaxometry series of the visit.

    Calls :func:`tumorscope.stages.relaxometry.fit_relaxometry` (whole volume).
    """
    from ..stages.base import SeriesInput
    from ..stages.relaxometry import RELAXOMETRY_ROLES, fit_relaxometry

    assert unit.visit is not None
    visit = _visit(study, unit)
    res = fit_relaxometry(
        {r: SeriesInput.of(s) for r, s in visit.series.items() if r in RELAXOMETRY_ROLES},
        out_dir=maps_dir(ctx, unit.subject, unit.visit),
        prefix=f"sub-{visit.subject_id}_ses-{visit.id}_",
    )
    entries = [_MapEntry(m.model, m.parameter, m.path, m.status, m.fit, m.series) for m in res.maps]
    out = _record_maps(ctx, "fit_relax", unit, entries, res.files)
    out.notes += list(res.warnings)
    return out


# ---------------------------------------------------------------------------- iron


def _iron_applies(study: Study, unit: Unit) -> bool:
    series = _visit(study, unit).series
    return "t2star_ferumoxytol" in series and "t2star" in series


def _iron_inputs(ctx: Context, study: Study, unit: Unit) -> list[Path]:
    # the pre-contrast R2* comes from fit_relax (its output hashes join the input hash)
    return _series_files(_visit(study, unit).series["t2star_ferumoxytol"].path)


def _iron(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """T2* of the post-ferumoxytol series, ΔR2* = R2*post − R2*pre and the iron concentration.

    Calls :func:`tumorscope.stages.iron.iron_maps` with the post-contrast MEGRE and the
    pre-contrast ``t2star.R2star`` map of ``fit_relax`` at the same visit (and its status).
    """
    from ..stages.base import SeriesInput
    from ..stages.iron import iron_maps

    assert unit.visit is not None
    visit = _visit(study, unit)
    relax = {"fit_relax": upstream.get("fit_relax", {})}
    pre_maps = maps_of_visit(ctx, relax, unit.subject, unit.visit)
    if "t2star.R2star" not in pre_maps:
        raise DataError(
            "the pre-contrast R2* map (t2star.R2star of the fit_relax step) is missing; run "
            "fit_relax with this step",
            file=visit.series["t2star"].relpath,
            field="t2star",
        )
    pre_path, pre_status, _ = pre_maps["t2star.R2star"]
    res = iron_maps(
        SeriesInput.of(visit.series["t2star_ferumoxytol"]),
        pre_path,
        pre_status,
        out_dir=maps_dir(ctx, unit.subject, unit.visit),
        prefix=f"sub-{unit.subject}_ses-{unit.visit}_",
        pre_label=ctx.out_rel(pre_path),
    )
    entries = [_MapEntry(m.model, m.parameter, m.path, m.status, m.fit, m.series) for m in res.maps]
    out = _record_maps(ctx, "iron", unit, entries, res.files)
    out.notes += res.warnings
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


#: Columns of the 19F table (one row per lesion).
CELLS19F_COLUMNS = ("subject", "visit", *FLUORINE_TABLE_COLUMNS)


def _fluorine(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """Labelled cells per lesion from the 19F image and its reference tubes.

    Calls :func:`tumorscope.stages.fluorine.count_cells_19f` (tubes and spins per cell from
    the sidecar, noise from outside the body in the anatomical image).
    """
    from ..stages.base import SeriesInput
    from ..stages.fluorine import count_cells_19f

    assert unit.visit is not None
    visit = _visit(study, unit)
    s = visit.series
    les = visit.lesions
    res = count_cells_19f(
        SeriesInput.of(s["fluorine"]),
        SeriesInput.of(s["fluorine_tubes"]),
        SeriesInput.of(s["anatomical"]) if "anatomical" in s else None,
        None if les is None else les.load_labels(),
        None if les is None else {r.label: r.lesion_id for r in les.table},
        table_path=cells19f_path(ctx, unit.subject, unit.visit),
        keys={"subject": unit.subject, "visit": unit.visit},
    )
    rows = [{**r, "step": "fluorine"} for r in res.rows["measurements"]]
    where = {"subject": unit.subject, "visit": unit.visit, "step": "fluorine"}
    return StepOutput(
        files=res.files, writes=[Write("measurements", where, rows)], notes=res.warnings
    )


# ---------------------------------------------------------------------------- hypoxia


def _hypoxia_applies(study: Study, unit: Unit) -> bool:
    series = _visit(study, unit).series
    return "t2star" in series and "dce" in series and "t1_vfa" in series


def _hypoxia_inputs(ctx: Context, study: Study, unit: Unit) -> list[Path]:
    return _lesion_files(_visit(study, unit))


def _hypoxia(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """Hypoxia classes from R2* (``fit_relax``) and Ktrans (``fit_dce``) inside the lesions.

    Calls :func:`tumorscope.stages.hypoxia.classify_hypoxia` with the options
    ``hypoxia_r2star_per_s`` and ``hypoxia_ktrans_per_min`` (no defaults: without both the
    unit is done with a note and writes nothing).
    """
    from ..stages.hypoxia import HypoxiaOptions, classify_hypoxia

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
    les = visit.lesions
    prefix = f"sub-{unit.subject}_ses-{unit.visit}_"
    res = classify_hypoxia(
        maps["t2star.R2star"][0],
        maps[ktrans][0],
        None if les is None else les.load_labels(),
        None if les is None else {r.label: r.lesion_id for r in les.table},
        class_path=maps_dir(ctx, unit.subject, unit.visit) / f"{prefix}hypoxia_classes.nii.gz",
        table_path=hypoxia_path(ctx, unit.subject, unit.visit),
        options=HypoxiaOptions(float(r2_thr), float(kt_thr)),
        perfusion_name=ktrans,
        keys={"subject": unit.subject, "visit": unit.visit},
    )
    rows = [{**r, "step": "hypoxia"} for r in res.rows["measurements"]]
    where = {"subject": unit.subject, "visit": unit.visit, "step": "hypoxia"}
    return StepOutput(files=res.files, writes=[Write("measurements", where, rows)])


STEPS: tuple[Step, ...] = (
    Step(
        "register",
        "subject",
        "1",
        "read and check every series and lesion map; record subject, visits, series, lesions",
        run_register,
        register_inputs,
    ),
    Step(
        "align",
        "visit",
        "1",
        "rigid alignment of every series to the anatomical image; lesion motion per series",
        run_align,
        align_inputs,
        requires=("register",),
        applies=align_applies,
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
        missing=lambda: _has_module("tumorscope.stages.relaxometry", "fit_relaxometry"),
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
        missing=lambda: _has_module("tumorscope.stages.iron", "iron_maps"),
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
        missing=lambda: _has_module("tumorscope.stages.fluorine", "count_cells_19f"),
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
        missing=lambda: _has_module("tumorscope.stages.hypoxia", "classify_hypoxia"),
        option_keys=("hypoxia_r2star_per_s", "hypoxia_ktrans_per_min"),
    ),
    Step(
        "measure",
        "subject",
        "3",  # 2: masks follow the alignment of the series; 3: short axis on the hull (fix)
        "lesion geometry and map statistics per lesion and visit",
        run_measure,
        measure_inputs,
        requires=("register", "align", *MAP_STEPS),
        missing=lambda: _has_module("tumorscope.lesions.stats"),
    ),
    Step(
        "assess",
        "subject",
        "2",
        "response under the criteria of study.yaml, and immunotherapy patterns",
        run_assess,
        assess_inputs,
        requires=("measure",),
        missing=lambda: _has_module("tumorscope.response", "assess"),
    ),
    Step(
        "report_subject",
        "subject",
        "2",  # 2: the alignment table
        "the subject's HTML report",
        run_report_subject,
        report_inputs,
        requires=("measure", "assess", "align", *MAP_STEPS, "fluorine"),
    ),
)
