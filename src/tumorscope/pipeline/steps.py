"""The steps of the study pipeline: the ``STEPS`` table and the modality steps' adapters.

The step framework (:class:`Step`, :class:`Context`, :class:`Unit`, :class:`StepOutput`,
:class:`Write`, :func:`record_maps`, :func:`maps_of_visit`) is in
:mod:`tumorscope.pipeline.step`, the output layout in :mod:`tumorscope.layout`, the run
options in :mod:`tumorscope.pipeline.options`. A modality step here is a thin adapter: it
builds the stage's inputs from the visit (:class:`~tumorscope.stages.base.SeriesInput`), calls
the stage of :mod:`tumorscope.stages` with typed options from the run options, and records
what the stage returns (its ``MapFile``s in the ``maps`` table and the map index, its rows).
The ``tumorscope fit …``, ``iron`` and ``cells19f`` commands call the same stage functions.

=================  =======  ====================================================================
step               scope    where, and the code it calls
=================  =======  ====================================================================
``register``       subject  :mod:`.register` (reads and checks every series and lesion map)
``align``          visit    :mod:`.align` (:func:`~tumorscope.pipeline.align.align_visit`)
``fit_dwi``        visit    :func:`tumorscope.stages.diffusion.fit_dwi_series` (ADC, IVIM, DKI)
``fit_dce``        visit    :func:`tumorscope.stages.dce.fit_dce_visit`
``fit_relax``      visit    :func:`tumorscope.stages.relaxometry.fit_relaxometry`
``fit_dsc``        visit    :func:`tumorscope.stages.dsc.fit_dsc` (CBF, CBV, MTT, Tmax, K2, rCBV)
``iron``           visit    :func:`tumorscope.stages.iron.iron_maps` (post T2*, ΔR2*, iron mM)
``fluorine``       visit    :func:`tumorscope.stages.fluorine.count_cells_19f`
``hypoxia``        visit    :func:`tumorscope.stages.hypoxia.classify_hypoxia`
``fit_mre``        visit    :mod:`.organs` (:func:`tumorscope.stages.mre.fit_mre_series`)
``fit_cardiac``    visit    :mod:`.organs` (:func:`tumorscope.stages.cardiac.fit_cardiac_visit`)
``organ_watch``    subject  :mod:`.organs` (:func:`tumorscope.response.organs.organ_watch`)
``metabolic``      visit    :mod:`tumorscope.stages.metabolic` (hyperpolarised 13C kPL, MRS)
``pet``            visit    :func:`tumorscope.stages.pet.pet_uptake` (SUV/SUL maps, uptake)
``fit_cest``       visit    :func:`tumorscope.stages.cest.fit_cest`
``measure``        subject  :mod:`.measure` (:func:`tumorscope.stages.lesions.measure_subject`)
``assess``         subject  :mod:`.assess` (``tumorscope.response.assess``, patterns)
``report_subject`` subject  :mod:`.reporting` (:mod:`tumorscope.report`)
=================  =======  ====================================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataError
from ..layout import (
    cells19f_path,
    hypoxia_path,
    map_prefix,
    maps_dir,
    metabolic_path,
    pet_path,
)
from ..stages.fluorine import TABLE_COLUMNS as FLUORINE_TABLE_COLUMNS
from .align import align_applies, align_inputs, run_align
from .assess import assess_inputs, run_assess
from .features import features_inputs, run_features
from .functional import functional_inputs, run_functional
from .measure import measure_inputs, run_measure
from .organs import (
    cardiac_applies,
    cardiac_inputs,
    organ_watch_applies,
    organ_watch_inputs,
    run_fit_cardiac,
    run_fit_mre,
    run_organ_watch,
)
from .register import register_inputs, run_register
from .reporting import report_inputs, run_report_subject, run_report_viewer
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
    _series_files,
    _visit,
    applied_alignments,
    maps_of_visit,
    record_maps,
)

if TYPE_CHECKING:
    from ..io import Study
    from ..stages.base import StageResult

__all__ = ["CELLS19F_COLUMNS", "STEPS"]


def _prefix(unit: Unit) -> str:
    assert unit.visit is not None
    return map_prefix(unit.subject, unit.visit)


def _maps_dir(ctx: Context, unit: Unit) -> Path:
    assert unit.visit is not None
    return maps_dir(ctx, unit.subject, unit.visit)


def _recorded(ctx: Context, step: str, unit: Unit, res: StageResult) -> StepOutput:
    """The ``maps`` rows and map index of a fit stage's result, with its warnings as notes."""
    out = record_maps(ctx, step, unit, res.maps, res.files)
    out.notes += list(res.warnings)
    return out


def _measurements(unit: Unit, step: str, rows: list[dict[str, object]]) -> Write:
    """The ``measurements`` rows a visit step owns (replaced as a whole on a re-run)."""
    where = {"subject": unit.subject, "visit": unit.visit, "step": step}
    return Write("measurements", where, [{**r, "step": step} for r in rows])


def _has_roles(*roles: str) -> Callable[[Study, Unit], bool]:
    """A step's ``applies``: the visit has a series of every one of ``roles``."""

    def applies(study: Study, unit: Unit) -> bool:
        series = _visit(study, unit).series
        return all(r in series for r in roles)

    return applies


def _has_lesion_maps(study: Study, unit: Unit) -> bool:
    """Some visit of the unit's subject has a lesion segmentation."""
    return any(v.lesions is not None for v in study.subjects[unit.subject])


def _files_of(
    *roles: str, optional: tuple[str, ...] = (), manifest: bool = False, lesions: bool = False
) -> Callable[[Context, Study, Unit], list[Path]]:
    """A step's ``inputs``, in this order (it is hashed): the study manifest if ``manifest``,
    the files of the series of ``roles``, then of those of ``optional`` the visit has, then
    the visit's lesion files if ``lesions``."""

    def inputs(ctx: Context, study: Study, unit: Unit) -> list[Path]:
        visit = _visit(study, unit)
        present = [*roles, *(r for r in optional if r in visit.series)]
        return [
            *([_manifest_file(ctx)] if manifest else []),
            *(p for r in present for p in _series_files(visit.series[r].path)),
            *(_lesion_files(visit) if lesions else []),
        ]

    return inputs


# ---------------------------------------------------------------------------- fit_dwi


def _fit_dwi(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """Every diffusion model of the option ``dwi_models`` on the visit's DWI series, in the
    voxels of the option ``dwi_region`` (default the body: the maps are shown over the anatomy
    in the report; the background is noise)."""
    from ..stages.base import SeriesInput
    from ..stages.diffusion import DWIOptions, fit_dwi_series

    res = fit_dwi_series(
        SeriesInput.of(_visit(study, unit).series["dwi"]),
        out_dir=_maps_dir(ctx, unit),
        models=ctx.options.dwi_models,
        prefix=_prefix(unit),
        options=DWIOptions(region=ctx.options.dwi_region),
    )
    return _recorded(ctx, "fit_dwi", unit, res)


# ---------------------------------------------------------------------------- fit_dce


def _fit_dce(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """VFA T1, concentration, AIF and the pharmacokinetic model inside the lesions, with the
    options ``dce_model`` and ``dce_aif`` (the study manifest's ``dce:`` defaults apply)."""
    from ..stages.dce import DCEOptions, fit_dce_visit

    res = fit_dce_visit(
        _visit(study, unit),
        out_dir=_maps_dir(ctx, unit),
        options=DCEOptions(model=ctx.options.dce_model, aif=ctx.options.dce_aif),
    )
    return _recorded(ctx, "fit_dce", unit, res)


# ---------------------------------------------------------------------------- fit_relax


def _relax_applies(study: Study, unit: Unit) -> bool:
    from ..stages.relaxometry import RELAXOMETRY_ROLES

    return any(r in _visit(study, unit).series for r in RELAXOMETRY_ROLES)


def _relax_inputs(ctx: Context, study: Study, unit: Unit) -> list[Path]:
    from ..stages.relaxometry import RELAXOMETRY_ROLES

    return _files_of(optional=tuple(RELAXOMETRY_ROLES))(ctx, study, unit)


def _fit_relax(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """T2*, T2 and inversion-recovery T1 of every relaxometry series of the visit, in the
    voxels of the option ``relax_region`` (default the body, as ``fit_dwi``)."""
    from ..stages.base import SeriesInput
    from ..stages.relaxometry import RELAXOMETRY_ROLES, RelaxometryOptions, fit_relaxometry

    series = _visit(study, unit).series
    res = fit_relaxometry(
        {r: SeriesInput.of(s) for r, s in series.items() if r in RELAXOMETRY_ROLES},
        out_dir=_maps_dir(ctx, unit),
        prefix=_prefix(unit),
        options=RelaxometryOptions(region=ctx.options.relax_region),
    )
    return _recorded(ctx, "fit_relax", unit, res)


# ---------------------------------------------------------------------------- fit_dsc


def _fit_dsc(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """DSC deconvolution, leakage correction and rCBV (normalised to the contralateral mirror
    of the lesions), with the options ``dsc_method`` and ``dsc_leakage``; with the second echo
    of a dual-echo DSC (role ``dsc_echo2``) when the visit has it."""
    from ..stages.base import SeriesInput
    from ..stages.dsc import DSCOptions, fit_dsc

    visit = _visit(study, unit)
    les = visit.lesions
    res = fit_dsc(
        SeriesInput.of(visit.series["dsc"]),
        None if les is None else les.load_labels(),
        None if les is None else {r.label: r.lesion_id for r in les.table},
        out_dir=_maps_dir(ctx, unit),
        prefix=_prefix(unit),
        options=DSCOptions(method=ctx.options.dsc_method, leakage=ctx.options.dsc_leakage),
        echo2=SeriesInput.of(visit.series["dsc_echo2"]) if "dsc_echo2" in visit.series else None,
    )
    return _recorded(ctx, "fit_dsc", unit, res)


# ---------------------------------------------------------------------------- iron


def _iron(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """Post-ferumoxytol T2*, ΔR2* against the pre-contrast ``t2star.R2star`` map of
    ``fit_relax`` at the same visit (and its status), and the iron concentration."""
    from ..stages.base import SeriesInput
    from ..stages.iron import iron_maps

    assert unit.visit is not None
    visit = _visit(study, unit)
    relax = {"fit_relax": upstream.get("fit_relax", {})}
    pre = maps_of_visit(ctx, relax, unit.subject, unit.visit).get("t2star.R2star")
    if pre is None:
        raise DataError(
            "the pre-contrast R2* map (t2star.R2star of the fit_relax step) is missing; run "
            "fit_relax with this step",
            file=visit.series["t2star"].relpath,
            field="t2star",
        )
    res = iron_maps(
        SeriesInput.of(visit.series["t2star_ferumoxytol"]),
        pre.path,
        pre.status,
        out_dir=_maps_dir(ctx, unit),
        prefix=_prefix(unit),
        pre_label=ctx.out_rel(pre.path),
    )
    return _recorded(ctx, "iron", unit, res)


# ---------------------------------------------------------------------------- fluorine


#: Columns of the 19F table (one row per lesion).
CELLS19F_COLUMNS = ("subject", "visit", *FLUORINE_TABLE_COLUMNS)


def _fluorine(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """Labelled cells per lesion from the 19F image and its reference tubes (tubes and spins
    per cell from the sidecar, noise from outside the body in the anatomical image)."""
    from ..stages.base import SeriesInput
    from ..stages.fluorine import count_cells_19f

    assert unit.visit is not None
    visit = _visit(study, unit)
    s, les = visit.series, visit.lesions
    res = count_cells_19f(
        SeriesInput.of(s["fluorine"]),
        SeriesInput.of(s["fluorine_tubes"]),
        SeriesInput.of(s["anatomical"]) if "anatomical" in s else None,
        None if les is None else les.load_labels(),
        None if les is None else {r.label: r.lesion_id for r in les.table},
        table_path=cells19f_path(ctx, unit.subject, unit.visit),
        keys={"subject": unit.subject, "visit": unit.visit},
    )
    rows = _measurements(unit, "fluorine", res.rows["measurements"])
    return StepOutput(files=res.files, writes=[rows], notes=res.warnings)


# ---------------------------------------------------------------------------- hypoxia


def _hypoxia(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """Hypoxia classes from R2* (``fit_relax``) and Ktrans (``fit_dce``) inside the lesions,
    with the options ``hypoxia_r2star_per_s`` and ``hypoxia_ktrans_per_min`` (no defaults:
    without both the unit is done with a note and writes nothing)."""
    from ..stages.hypoxia import HypoxiaOptions, classify_hypoxia

    assert unit.visit is not None
    r2_thr, kt_thr = ctx.options.hypoxia_r2star_per_s, ctx.options.hypoxia_ktrans_per_min
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
    res = classify_hypoxia(
        maps["t2star.R2star"].path,
        maps[ktrans].path,
        None if les is None else les.load_labels(),
        None if les is None else {r.label: r.lesion_id for r in les.table},
        class_path=_maps_dir(ctx, unit) / f"{_prefix(unit)}hypoxia_classes.nii.gz",
        table_path=hypoxia_path(ctx, unit.subject, unit.visit),
        options=HypoxiaOptions(float(r2_thr), float(kt_thr)),
        perfusion_name=ktrans,
        keys={"subject": unit.subject, "visit": unit.visit},
    )
    rows = _measurements(unit, "hypoxia", res.rows["measurements"])
    return StepOutput(files=res.files, writes=[rows])


# ---------------------------------------------------------------------------- metabolic

_METABOLIC_ROLES = ("hp13c_pyruvate", "hp13c_lactate", "mrs", "mrs_water")


def _metabolic_applies(study: Study, unit: Unit) -> bool:
    series = _visit(study, unit).series
    return ("hp13c_pyruvate" in series and "hp13c_lactate" in series) or "mrs" in series


def _metabolic(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """kPL maps and per-lesion values from the 13C series (lesion labels moved onto the 13C
    grid by nearest neighbour), and the MRS fit with its maps on the lesion grid."""
    from ..preprocessing.registration import resample_mask
    from ..stages.base import StageResult
    from ..stages.metabolic import fit_hp13c, fit_mrs

    assert unit.visit is not None
    visit = _visit(study, unit)
    s, les = visit.series, visit.lesions
    labels = None if les is None else les.load_labels()
    ids = None if les is None else {r.label: r.lesion_id for r in les.table}
    keys = {"subject": unit.subject, "visit": unit.visit}
    res = StageResult()
    if "hp13c_pyruvate" in s and "hp13c_lactate" in s:
        import nibabel as nib
        import numpy as np

        from ..volume import Volume

        # the 13C grid from the header (fit_hp13c reads and checks the data)
        head: Any = nib.load(str(s["hp13c_pyruvate"].path))
        grid = Volume(np.zeros(head.shape[:3], np.uint8), head.affine)
        lab13 = labels
        if labels is not None and not labels.same_grid(grid):
            lab13 = resample_mask(labels, grid)
        res.extend(
            fit_hp13c(
                s["hp13c_pyruvate"].path,
                s["hp13c_lactate"].path,
                out_dir=_maps_dir(ctx, unit),
                prefix=_prefix(unit),
                labels=lab13,
                lesion_ids=ids,
                keys=keys,
            )
        )
    if "mrs" in s:
        res.extend(
            fit_mrs(
                s["mrs"].path,
                water=s["mrs_water"].path if "mrs_water" in s else None,
                out_dir=_maps_dir(ctx, unit),
                prefix=_prefix(unit),
                onto=labels,
                onto_role="anatomical",  # the lesion map is drawn on the anatomical image
                labels=labels,
                lesion_ids=ids,
                keys=keys,
            )
        )
    from ..stages._tables import write_parquet

    rows = res.rows.get("measurements", [])
    table = write_parquet(metabolic_path(ctx, unit.subject, unit.visit), rows)
    out = _recorded(ctx, "metabolic", unit, res)
    out.files.append(table)
    out.writes.append(_measurements(unit, "metabolic", rows))
    return out


# ---------------------------------------------------------------------------- pet


def _pet(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """SUV, SUL and SUVbsa maps and per-lesion uptake (SULpeak, MTV, TLG) of the visit's PET,
    the lesion masks moved through the alignment ``align`` applied to the PET, the liver and
    blood-pool references from the ``pet_liver`` / ``pet_bloodpool`` masks."""
    from ..stages.base import SeriesInput
    from ..stages.pet import pet_uptake

    assert unit.visit is not None
    visit = _visit(study, unit)
    s, les = visit.series, visit.lesions
    matrix = applied_alignments(ctx, upstream, unit.subject, unit.visit).get("pet")
    res = pet_uptake(
        SeriesInput.of(s["pet"]),
        labels=None if les is None else les.load_labels(),
        lesion_ids=None if les is None else {r.label: r.lesion_id for r in les.table},
        liver=s["pet_liver"].load() if "pet_liver" in s else None,
        blood_pool=s["pet_bloodpool"].load() if "pet_bloodpool" in s else None,
        alignment=matrix,
        out_dir=_maps_dir(ctx, unit),
        prefix=_prefix(unit),
        table_path=pet_path(ctx, unit.subject, unit.visit),
        keys={"subject": unit.subject, "visit": unit.visit},
    )
    out = _recorded(ctx, "pet", unit, res)
    out.writes.append(_measurements(unit, "pet", res.rows["measurements"]))
    return out


# ---------------------------------------------------------------------------- fit_cest


def _fit_cest(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """CEST maps of the visit (B0 from WASABI, WASSR or the spectrum; MTRasym at the option
    ``cest_mtr_asym_ppm``; 5-pool Lorentzian in the region of the option ``cest_fit_region``:
    the lesions, moved through the alignment ``align`` applied to the CEST series, dilated;
    AREX where ``fit_relax`` mapped T1 on the same grid)."""
    from ..stages.base import SeriesInput
    from ..stages.cest import CESTOptions, fit_cest, t1_on_grid

    assert unit.visit is not None
    visit = _visit(study, unit)
    series = visit.series
    inputs = {
        r: SeriesInput.of(s)
        for r, s in series.items()
        if r in ("cest", "wassr", "wasabi") or r.startswith("cest_")
    }
    t1 = next(
        (
            m.path
            for k, m in sorted(
                maps_of_visit(
                    ctx, {"fit_relax": upstream.get("fit_relax", {})}, unit.subject, unit.visit
                ).items()
            )
            if k.endswith(".T1")
        ),
        None,
    )
    region = ctx.options.cest_fit_region
    les = visit.lesions if region == "lesions" else None
    res = fit_cest(
        inputs,
        out_dir=_maps_dir(ctx, unit),
        prefix=_prefix(unit),
        options=CESTOptions(mtr_asym_ppm=ctx.options.cest_mtr_asym_ppm, fit_region=region),
        t1_map=t1_on_grid(t1, inputs["cest"]),
        t1_label=None if t1 is None else ctx.out_rel(t1),
        lesions=None if les is None else les.load_labels(),
        lesion_alignment=applied_alignments(ctx, upstream, unit.subject, unit.visit).get("cest"),
    )
    return _recorded(ctx, "fit_cest", unit, res)


STEPS: tuple[Step, ...] = (
    Step(
        "register",
        "subject",
        "1",
        "read and check every series and lesion map; record subject, visits, series, lesions",
        run_register,
        register_inputs,
        cost=0.3,
    ),
    Step(
        "align",
        "visit",
        "2",  # 2: gradients at the sampled points (faster, not the same last digits)
        "rigid alignment of every series to the anatomical image; lesion motion per series",
        run_align,
        align_inputs,
        requires=("register",),
        applies=align_applies,
        missing=lambda: _has_module("SimpleITK"),
        option_keys=("align_tolerance_vox", "align_skip_same_geometry"),
        cost=0.55,
    ),
    Step(
        "fit_dwi",
        "visit",
        "3",  # 2: the map index names the series of each map; 3: inputs relative to the study
        "fit the diffusion models to the DWI series",
        _fit_dwi,
        _files_of("dwi"),
        requires=("register",),
        applies=_has_roles("dwi"),
        missing=lambda: _has_module("tumorscope.stages.diffusion", "fit_dwi"),
        option_keys=("dwi_models", "dwi_region"),
        memory=5.0,
        cost=0.4,
    ),
    Step(
        "fit_dce",
        "visit",
        # 2: semi-quantitative maps carry their own provenance; 3: series in the index;
        # 4: no absolute path (inputs relative to the study), an empty mask is not an error
        "4",
        "VFA T1, concentration, AIF and the DCE model inside the lesions",
        _fit_dce,
        _files_of("dce", "t1_vfa", manifest=True, lesions=True),
        requires=("register",),
        applies=_has_roles("dce", "t1_vfa"),
        missing=lambda: _has_module("tumorscope.stages.dce", "fit_dce_visit"),
        option_keys=("dce_model", "dce_aif"),
        memory=3.0,
        cost=0.45,
    ),
    Step(
        "fit_relax",
        "visit",
        # 2: the map index names the series of each map; 3: inputs relative to the study;
        # 4: fitted in the body (option relax_region)
        "4",
        "T2*, T2 and inversion-recovery T1 maps of the relaxometry series",
        _fit_relax,
        _relax_inputs,
        requires=("register",),
        applies=_relax_applies,
        missing=lambda: _has_module("tumorscope.stages.relaxometry", "fit_relaxometry"),
        option_keys=("relax_region",),
        memory=6.0,
        cost=0.85,
    ),
    Step(
        "fit_dsc",
        "visit",
        "2",  # 2: dual-echo DSC (role dsc_echo2): T1effect map, dual_echo in dsc_stage.json
        "DSC perfusion: CBF, CBV, MTT, Tmax, leakage K2 and rCBV",
        _fit_dsc,
        _files_of("dsc", optional=("dsc_echo2",), lesions=True),
        requires=("register",),
        applies=_has_roles("dsc"),
        missing=lambda: _has_module("tumorscope.stages.dsc", "fit_dsc"),
        option_keys=("dsc_method", "dsc_leakage"),
        cost=0.45,
    ),
    Step(
        "iron",
        "visit",
        "4",  # 2: map index names series; 3: inputs relative to study; 4: plasma r2* (#24)
        "post-ferumoxytol T2*, dR2* and apparent iron concentration",
        _iron,
        # the pre-contrast R2* comes from fit_relax (its output hashes join the input hash)
        _files_of("t2star_ferumoxytol"),
        requires=("register", "fit_relax"),
        applies=_has_roles("t2star_ferumoxytol", "t2star"),
        missing=lambda: _has_module("tumorscope.stages.iron", "iron_maps"),
        cost=0.3,
    ),
    Step(
        "fluorine",
        "visit",
        "2",  # 2: Currie detection limit, decision threshold, near-threshold flag (#24)
        "19F-labelled cells per lesion from the reference tubes, with detection limits",
        _fluorine,
        _files_of("fluorine", "fluorine_tubes", optional=("anatomical",), lesions=True),
        requires=("register",),
        applies=_has_roles("fluorine", "fluorine_tubes"),
        missing=lambda: _has_module("tumorscope.stages.fluorine", "count_cells_19f"),
        cost=0.5,
    ),
    Step(
        "hypoxia",
        "visit",
        "2",  # 2: OE-MRI logic, class 2 renamed, hypoxic volume NaN without a challenge (#24)
        "hypoxia classes from R2* and Ktrans in the lesions (thresholds from the options)",
        _hypoxia,
        _files_of(lesions=True),
        requires=("register", "fit_relax", "fit_dce"),
        applies=_has_roles("t2star", "dce", "t1_vfa"),
        missing=lambda: _has_module("tumorscope.stages.hypoxia", "classify_hypoxia"),
        option_keys=("hypoxia_r2star_per_s", "hypoxia_ktrans_per_min"),
        cost=0.01,
    ),
    Step(
        "fit_mre",
        "visit",
        "1",
        "MR elastography: |G*| (kPa), phase angle and confidence maps",
        run_fit_mre,
        _files_of("mre"),
        requires=("register",),
        applies=_has_roles("mre"),
        missing=lambda: _has_module("tumorscope.stages.mre", "fit_mre_series"),
        cost=0.2,
    ),
    Step(
        "fit_cardiac",
        "visit",
        "2",  # 2: fitted in the body (option relax_region)
        "MOLLI T1 (native, post-contrast) and T2-prep T2 maps",
        run_fit_cardiac,
        cardiac_inputs,
        requires=("register",),
        applies=cardiac_applies,
        missing=lambda: _has_module("tumorscope.stages.cardiac", "fit_cardiac_visit"),
        option_keys=("relax_region",),
        cost=0.8,
    ),
    Step(
        "organ_watch",
        "subject",
        "1",
        "organ values per visit, z-scores against the study's reference, irAE flags",
        run_organ_watch,
        organ_watch_inputs,
        requires=("register", "fit_mre", "fit_cardiac"),
        applies=organ_watch_applies,
        missing=lambda: _has_module("tumorscope.response.organs", "organ_watch"),
        cost=0.25,
    ),
    Step(
        "metabolic",
        "visit",
        "1",
        "hyperpolarised 13C kPL and 1H/2H spectroscopy: maps and per-lesion values",
        _metabolic,
        _files_of(optional=_METABOLIC_ROLES, lesions=True),
        requires=("register",),
        applies=_metabolic_applies,
        missing=lambda: _has_module("tumorscope.stages.metabolic", "fit_hp13c"),
        memory=7.0,
        cost=0.55,
    ),
    Step(
        "pet",
        "visit",
        "1",
        "SUV/SUL maps, SULpeak, MTV and TLG per lesion, liver and blood-pool references (PET)",
        _pet,
        _files_of("pet", optional=("pet_liver", "pet_bloodpool"), lesions=True),
        requires=("register", "align"),
        applies=_has_roles("pet"),
        missing=lambda: _has_module("tumorscope.stages.pet", "pet_uptake"),
        cost=0.12,
    ),
    Step(
        "functional",
        "subject",
        "1",
        "functional diffusion / parametric response maps on registered follow-ups (issue 22)",
        run_functional,
        functional_inputs,
        requires=("register", *MAP_STEPS),
        cost=0.6,
    ),
    Step(
        "features",
        "subject",
        "1",
        "habitat fractions over time; radiomics and delta-radiomics (option radiomics)",
        run_features,
        features_inputs,
        requires=("register", *MAP_STEPS),
        option_keys=("radiomics",),
        cost=0.2,
    ),
    Step(
        "fit_cest",
        "visit",
        # 2: the Lorentzian (and AREX) in the lesions dilated by 3 mm (option cest_fit_region)
        "2",
        "CEST: B0/B1, MTRasym, 5-pool Lorentzian and AREX maps of the Z-spectra",
        _fit_cest,
        # the T1 map comes from fit_relax, the CEST alignment from align (their output
        # hashes join the input hash)
        _files_of("cest", optional=("wassr", "wasabi"), lesions=True),
        requires=("register", "align", "fit_relax"),
        applies=_has_roles("cest"),
        missing=lambda: _has_module("tumorscope.stages.cest", "fit_cest"),
        option_keys=("cest_mtr_asym_ppm", "cest_fit_region"),
        memory=3.5,
        cost=1.65,
    ),
    Step(
        "measure",
        "subject",
        # 2: masks follow the alignment of the series; 3: short axis on the hull (fix);
        # 4: a lesion gone at a segmented visit measures 0 mm (``present`` false)
        "4",
        "lesion geometry and map statistics per lesion and visit",
        run_measure,
        measure_inputs,
        requires=("register", "align", *MAP_STEPS),
        missing=lambda: _has_module("tumorscope.lesions.stats"),
        memory=math.inf,
        cost=0.3,
    ),
    Step(
        "assess",
        "subject",
        # 3: a visit where every lesion is gone is assessed (CR); 4: the rules of issue 24
        # (RANO, Choi, durable response, hyperprogression) and the radiotherapy end date;
        # 5: PERCIST/imPERCIST and the PET patterns (issue 17), RANO 2.0 non-enhancing disease
        # and "after PD", best overall response, disagreements, all hyperprogression defs (#22)
        "5",
        "response under the criteria of study.yaml, and immunotherapy patterns",
        run_assess,
        assess_inputs,
        requires=("measure", "pet", "functional"),  # pet: the PET tables of PERCIST
        # a subject without a lesion segmentation at any visit (maps only) has nothing to
        # assess: the step is not planned (register warns of each such visit); segmentations
        # that hold no lesion at all stay an error of assess
        applies=_has_lesion_maps,
        option_keys=("perfusion_rcbv_threshold",),
        missing=lambda: _has_module("tumorscope.response", "assess"),
        cost=0.17,
    ),
    Step(
        "report_viewer",
        "subject",
        "1",
        "the subject's interactive viewer (every map of every visit)",
        run_report_viewer,
        report_inputs,
        # the maps and the follow-ups' registrations only: it runs beside measure and assess
        requires=("register", "align", *MAP_STEPS, "functional", "hypoxia", "metabolic"),
        cost=0.43,
    ),
    Step(
        "report_subject",
        "subject",
        # 2: the alignment table; 3: viewer, best response, registered fDM (#22), the
        # metabolic, PET and organ-watch sections; 4: the viewer is report_viewer's
        "4",
        "the subject's HTML report",
        run_report_subject,
        report_inputs,
        requires=(
            "measure",
            "assess",
            "align",
            *MAP_STEPS,
            "fluorine",
            "functional",
            "features",
            "hypoxia",
            "organ_watch",
            "metabolic",
            "report_viewer",
        ),
        cost=0.17,
    ),
)
