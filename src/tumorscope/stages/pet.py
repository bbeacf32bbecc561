"""PET stage: a PET series in Bq/mL (+ its BIDS-PET sidecar), lesion masks and reference
regions → SUV and SUL maps and the per-lesion uptake measures.

Backs the pipeline's ``pet`` step (only visits with a ``pet`` series). What it does:

1. The SUVbw factor comes from the sidecar (``SUVbwFactor``, written at DICOM import from the
   dose, the decay to scan start and the weight: :mod:`tumorscope.io.dicom.pet`; or computed
   here from ``InjectedRadioactivity``, ``ScanStart``, ``RadionuclideHalfLife``,
   ``BodyWeight`` and ``DecayCorrection`` when it is missing). SUL scales it by the lean body
   mass over the weight (Janmahasatian; needs ``BodyHeight`` and ``Sex``), SUVbsa by the
   body-surface area (Du Bois). A dynamic series is measured on its last frame (the late
   static uptake), with a warning.
2. Maps: ``pet.SUV`` and ``pet.SUL`` (g/mL), ``pet.SUVbsa`` (cm²/mL), float32, through
   :func:`tumorscope.files.write_map`, on the PET grid.
3. Lesion masks (on the anatomical grid) are resampled onto the PET grid (nearest label,
   :func:`tumorscope.preprocessing.resample_mask`) through the ``align`` step's transform
   when it applied one, in world coordinates otherwise (a PET/MR scanner shares the frame of
   reference).
4. The liver reference: a ``pet_liver`` mask (role ``label-liver_mask``: the whole liver,
   where the automatic 3 cm sphere is placed in the right lobe) or, with
   ``liver_as_drawn``, the reference VOI itself; the blood pool from a ``pet_bloodpool`` mask
   as drawn. Both on the PET grid (they are drawn there). Quality problems become warnings.
5. Per lesion: SUVmax, SUVmean, SUVpeak (1 mL sphere), MTV and TLG at 41 % of SUVmax and at
   SUV ≥ 2.5 on the SUV map; SULmax, SULpeak, and MTV/TLG at the PERCIST threshold
   (1.5 × liver SULmean + 2 SD) on the SUL map; the visit's liver and blood-pool SUL. Rows
   go to the ``measurements`` table (maps ``SUV``, ``SUL``; statistics ``SUVmax`` …) and to
   a per-visit Parquet table (``table_path``) with one row per lesion: the input of
   PERCIST (:func:`tumorscope.response.assess` with ``criteria="percist"``).
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..files import file_sha256, write_map
from ..volume import Volume
from ._tables import measurement_row, write_parquet
from .base import MapFile, SeriesInput, StageResult

__all__ = ["TABLE_COLUMNS", "PetOptions", "mri_beside", "pet_uptake", "suv_factor_of"]

#: Columns of the per-lesion PET table after the caller's keys.
TABLE_COLUMNS = (
    "lesion_id",
    "suv_max",
    "suv_mean",
    "suv_peak",
    "sul_max",
    "sul_peak",
    "peak_truncated",
    "mtv41_ml",
    "tlg41_g",
    "mtv25_ml",
    "tlg25_g",
    "mtv_percist_ml",
    "tlg_percist_g",
    "volume_ml",
    "liver_sul_mean",
    "liver_sul_sd",
    "blood_pool_sul_mean",
    "blood_pool_sul_sd",
    "percist_threshold",
)

#: (column, map, statistic, unit) of the measurements rows.
_MEASURED = (
    ("suv_max", "SUV", "SUVmax", "g/mL"),
    ("suv_mean", "SUV", "SUVmean", "g/mL"),
    ("suv_peak", "SUV", "SUVpeak", "g/mL"),
    ("mtv41_ml", "SUV", "MTV41", "mL"),
    ("tlg41_g", "SUV", "TLG41", "g"),
    ("mtv25_ml", "SUV", "MTV2.5", "mL"),
    ("tlg25_g", "SUV", "TLG2.5", "g"),
    ("sul_max", "SUL", "SULmax", "g/mL"),
    ("sul_peak", "SUL", "SULpeak", "g/mL"),
    ("mtv_percist_ml", "SUL", "MTV_PERCIST", "mL"),
    ("tlg_percist_g", "SUL", "TLG_PERCIST", "g"),
    ("liver_sul_mean", "SUL", "liver_mean", "g/mL"),
    ("liver_sul_sd", "SUL", "liver_sd", "g/mL"),
    ("blood_pool_sul_mean", "SUL", "blood_pool_mean", "g/mL"),
)


@dataclass(frozen=True)
class PetOptions:
    """Options of the PET stage.

    relative_threshold : fraction of SUVmax for MTV41 (EANM 2015: 0.41)
    fixed_threshold : absolute SUV for MTV2.5
    liver_sphere_mm : diameter of the automatic liver sphere (PERCIST: 30 mm)
    liver_as_drawn : use the ``pet_liver`` mask as the reference VOI (no sphere)
    """

    relative_threshold: float = 0.41
    fixed_threshold: float = 2.5
    liver_sphere_mm: float = 30.0
    liver_as_drawn: bool = False


def suv_factor_of(side: Mapping[str, Any], frame: int, label: str) -> float:
    """The SUVbw factor of a frame from a BIDS-PET sidecar (see the module docstring)."""
    from ..models.pet import suv_factor

    f = side.get("SUVbwFactor")
    if isinstance(f, list | tuple) and len(f) > frame and f[frame] is not None:
        return float(f[frame])
    if isinstance(f, int | float):
        return float(f)

    def need(key: str) -> Any:
        v = side.get(key)
        if v is None:
            raise DataError(
                f"{key} is missing from the sidecar (needed for the SUV without SUVbwFactor)",
                file=label,
                field=key,
            )
        return v

    def positive(key: str) -> float:
        """A positive number of the sidecar, named by its sidecar field (not the DICOM one
        :func:`tumorscope.units.suvbw_factor` would name)."""
        v = need(key)
        if (
            isinstance(v, bool)
            or not isinstance(v, int | float)
            or not (math.isfinite(v) and v > 0)
        ):
            raise DataError(f"expected a positive number, got {v!r}", file=label, field=key)
        return float(v)

    t0 = dt.datetime(2000, 1, 1)
    decay = str(
        side.get("DecayCorrection") or ("START" if side.get("ImageDecayCorrected") else "NONE")
    )
    starts = side.get("FrameTimesStart") or [need("ScanStart")]
    durs = side.get("FrameDuration") or [None]
    scan = float(starts[frame]) if decay == "NONE" else float(need("ScanStart"))
    return suv_factor(
        injected_activity_bq=positive("InjectedRadioactivity") * 1e6,
        injection_time=t0 + dt.timedelta(seconds=float(side.get("InjectionStart") or 0.0)),
        scan_time=t0 + dt.timedelta(seconds=scan),
        half_life_s=positive("RadionuclideHalfLife"),
        weight_kg=positive("BodyWeight"),
        decay_correction=decay,
        frame_duration_s=None if decay != "NONE" or durs[frame] is None else float(durs[frame]),
    )


def _mask_on(mask: Volume | None, onto: Volume, transform: Any, name: str) -> np.ndarray | None:
    if mask is None:
        return None
    from ..preprocessing import resample_mask

    if mask.same_grid(onto) and transform is None:
        return np.asarray(mask.data)
    return np.asarray(resample_mask(mask, onto, transform=transform).data)


def pet_uptake(
    pet: SeriesInput,
    *,
    labels: Volume | None,
    lesion_ids: Mapping[int, str] | None,
    liver: Volume | None = None,
    blood_pool: Volume | None = None,
    alignment: Any = None,
    out_dir: str | os.PathLike[str],
    prefix: str = "",
    table_path: str | os.PathLike[str] | None = None,
    keys: Mapping[str, Any] | None = None,
    options: PetOptions = PetOptions(),
) -> StageResult:
    """SUV/SUL maps and per-lesion uptake of one PET series (module docstring).

    Raises
    ------
    DataError
        The sidecar's unit is not Bq/mL, the SUV factor cannot be formed, or the image has
        NaN/negative values inside a lesion (naming the file and field).
    """
    from ..io.bids import check_pet_sidecar, sidecar_path
    from ..models.pet import (
        body_surface_area_m2,
        lean_body_mass_kg,
        lesion_uptake,
        liver_reference,
        percist_threshold,
    )

    keys = dict(keys or {})
    side = pet.sidecar
    # Units, the factor or what forms it, weight and height: as validate checks them
    check_pet_sidecar(side, sidecar_path(pet.path))
    vol = pet.load()
    warnings: list[str] = []
    frame = 0
    if vol.data.ndim == 4:
        frame = vol.data.shape[3] - 1
        warnings.append(f"{pet.label}: dynamic PET, measured on its last frame ({frame + 1})")
        vol = vol.frame(frame)
    bq = np.asarray(vol.data, dtype=np.float64)
    f_bw = suv_factor_of(side, frame, pet.label)
    weight = side.get("BodyWeight")
    height, sex = side.get("BodyHeight"), side.get("Sex")
    f_sul = f_bsa = math.nan
    if weight and height and sex in ("M", "F"):
        f_sul = f_bw * lean_body_mass_kg(float(weight), float(height), str(sex)) / float(weight)
        f_bsa = (
            f_bw * body_surface_area_m2(float(weight), float(height)) * 1e4 / (float(weight) * 1e3)
        )
    else:
        warnings.append(
            f"{pet.label}: BodyHeight/Sex missing, no SUL (PERCIST needs it) and no SUVbsa"
        )
    suv = bq * f_bw
    sul = bq * f_sul
    out = Path(out_dir)
    prov = {
        "stage": "tumorscope.stages.pet.pet_uptake",
        "options": asdict(options),
        "SUVbwFactor": f_bw,
        "SULFactor": f_sul,
        "inputs": {k: file_sha256(p) for k, p in pet.files.items()},
    }
    res = StageResult(warnings=warnings)
    for name, data, unit, desc in (
        ("SUV", suv, "g/mL", "standardised uptake value by body weight"),
        ("SUL", sul, "g/mL", "SUV by lean body mass (Janmahasatian)"),
        ("SUVbsa", bq * f_bsa, "cm2/mL", "SUV by body-surface area (Du Bois)"),
    ):
        if name != "SUV" and not math.isfinite(f_sul):
            continue
        path = out / f"{prefix}pet_{name}.nii.gz"
        res.files += write_map(
            path, data.astype(np.float32), vol.affine, units=unit, description=desc, provenance=prov
        )
        res.maps.append(MapFile("pet", name, path, None, pet.role))
    # references (on the PET grid)
    world_x = (vol.affine @ np.vstack([*np.indices(bq.shape).reshape(3, -1), np.ones(bq.size)]))[0]
    liver_m = _mask_on(liver, vol, None, "pet_liver")
    lm = ls = bm = bs = math.nan
    if liver_m is not None and math.isfinite(f_sul) and (liver_m > 0).any():
        ref = liver_reference(
            sul,
            liver_m > 0,
            vol.voxel_sizes,
            automatic=not options.liver_as_drawn,
            diameter_mm=options.liver_sphere_mm,
            world_x_mm=world_x.reshape(bq.shape),
        )
        lm, ls = ref.mean, ref.sd
        res.warnings += [f"{pet.label}: liver reference: {p}" for p in ref.problems]
        if not ref.ok:
            lm = ls = math.nan  # PERCIST then uses the blood pool
    elif math.isfinite(f_sul):
        res.warnings.append(f"{pet.label}: no liver mask (pet_liver): no PERCIST liver reference")
    bp_m = _mask_on(blood_pool, vol, None, "pet_bloodpool")
    if bp_m is not None and math.isfinite(f_sul) and (bp_m > 0).sum() >= 2:
        vals = sul[bp_m > 0]
        bm, bs = float(vals.mean()), float(vals.std(ddof=1))
    thr = percist_threshold(lm, ls) if math.isfinite(lm) else math.nan
    rows: list[dict[str, Any]] = []
    if labels is not None and lesion_ids:
        # align's matrix maps reference world to series world; resample_mask wants the
        # inverse (target world to source world), as measure's moved_masks does
        back = None if alignment is None else np.linalg.inv(np.asarray(alignment, dtype=float))
        lab = _mask_on(labels, vol, back, "lesions")
        assert lab is not None
        for label, lid in sorted(lesion_ids.items()):
            m = lab == label
            if not m.any():
                res.warnings.append(f"{pet.label}: lesion {lid} has no voxel on the PET grid")
                continue
            u = lesion_uptake(
                suv,
                m,
                vol.voxel_sizes,
                fixed_threshold=options.fixed_threshold,
                relative_threshold=options.relative_threshold,
            )
            row: dict[str, Any] = {
                **keys,
                "lesion_id": lid,
                "suv_max": u.suv_max,
                "suv_mean": u.suv_mean,
                "suv_peak": u.suv_peak,
                "peak_truncated": u.peak_truncated,
                "mtv41_ml": u.mtv41_ml,
                "tlg41_g": u.tlg41_g,
                "mtv25_ml": u.mtv25_ml,
                "tlg25_g": u.tlg25_g,
                "volume_ml": u.volume_ml,
                "liver_sul_mean": lm,
                "liver_sul_sd": ls,
                "blood_pool_sul_mean": bm,
                "blood_pool_sul_sd": bs,
                "percist_threshold": thr,
                "sul_max": math.nan,
                "sul_peak": math.nan,
                "mtv_percist_ml": math.nan,
                "tlg_percist_g": math.nan,
            }
            if math.isfinite(f_sul):
                us = lesion_uptake(
                    sul, m, vol.voxel_sizes, percist_threshold=thr if math.isfinite(thr) else None
                )
                row.update(
                    sul_max=us.suv_max,
                    sul_peak=us.suv_peak,
                    mtv_percist_ml=us.mtv_percist_ml,
                    tlg_percist_g=us.tlg_percist_g,
                )
            rows.append(row)
    res.rows["pet"] = rows
    res.rows["measurements"] = [
        measurement_row(keys, r["lesion_id"], mp, stat, r[col], unit)
        for r in rows
        for col, mp, stat, unit in _MEASURED
    ]
    if table_path is not None:
        res.files.append(write_parquet(table_path, rows, [*keys, *TABLE_COLUMNS]))
    return res


#: (column, map name ending, statistic) of the MRI values put beside the PET
_BESIDE = (
    ("ADC_mean", "adc.ADC", "mean"),
    ("ADC_min", "adc.ADC", "min"),
    ("Ktrans_mean", ".Ktrans", "mean"),
)


def mri_beside(measurements: Path) -> Any:
    """ADCmean, ADCmin and Ktrans mean per visit and lesion from ``measure``'s long table
    (:func:`tumorscope.layout.measurements_path`), a DataFrame, or None without it."""
    import pandas as pd

    if not measurements.exists():
        return None
    m = pd.read_parquet(measurements, columns=["visit", "lesion_id", "map", "statistic", "value"])
    names = m["map"].astype(str)
    parts = []
    for col, ending, stat in _BESIDE:
        ends = {n for n in names.unique() if n.endswith(ending)}  # a few dozen maps
        sel = m[names.isin(ends) & (m["statistic"] == stat)]
        if sel.empty:
            continue
        sel = sel.drop_duplicates(["visit", "lesion_id"])[["visit", "lesion_id", "value"]]
        parts.append(sel.rename(columns={"value": col}).set_index(["visit", "lesion_id"]))
    if not parts:
        return None
    out = pd.concat(parts, axis=1).reset_index()
    out["visit"] = out["visit"].astype(str)
    return out
