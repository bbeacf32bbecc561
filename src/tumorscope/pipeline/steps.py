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

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataError
from ..files import json_default as _json_default  # to be removed at the merge
from ..files import read_sidecar as _sidecar  # to be removed at the merge
from ..layout import cells19f_path, hypoxia_path, maps_dir
from ..stages.lesions import measurement_row as _mrow
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
    "fluorine_background",
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
    from ..models.dce_stage import fit_dce_visit

    assert unit.visit is not None
    model = str(ctx.options.get("dce_model", DEFAULT_OPTIONS["dce_model"]))
    aif = str(ctx.options.get("dce_aif", DEFAULT_OPTIONS["dce_aif"]))
    res = fit_dce_visit(
        _visit(study, unit), out_dir=maps_dir(ctx, unit.subject, unit.visit), model=model, aif=aif
    )
    files = res.files
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
        missing=lambda: _has_module("tumorscope.models.dce_stage", "fit_dce_visit"),
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
