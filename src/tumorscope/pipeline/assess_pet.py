"""PET part of the ``assess`` step: PERCIST and imPERCIST calls, the ΔTLG/ΔADCmean changes and
the flare / metabolic-pseudoprogression patterns of a subject with PET.

Reads the per-visit tables of the ``pet`` step (:func:`tumorscope.layout.pet_path`) and the
lesion table of ``measure``; returns rows for the ``assessments`` (criteria ``percist`` and
``impercist``; the ΔTLG, ΔADCmean and their sum in ``details``: there is no validated
cut-off, see :mod:`tumorscope.response.petmri`) and ``patterns`` tables (``PET flare`` per
visit, ``metabolic pseudoprogression``). PERCIST needs PET, so it runs where the subject has
PET, whatever ``study.yaml`` names; a subject without PET gets nothing here.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .. import layout
from .step import Context, Unit

if TYPE_CHECKING:
    import pandas as pd

    from ..io import Study

__all__ = ["PET_CRITERIA", "pet_assessments"]

PET_CRITERIA = ("percist", "impercist")


def _pet_table(
    ctx: Context, study: Study, unit: Unit, lesions: pd.DataFrame
) -> pd.DataFrame | None:
    import pandas as pd

    s = unit.subject
    subject = study.subjects[s]
    parts = []
    for v in subject:
        p = layout.pet_path(ctx.out_dir, s, v.id)
        if p.exists():
            t = pd.read_parquet(p)
            t["date"] = str(v.date)
            t["baseline"] = v.baseline
            parts.append(t)
    if not parts:
        return None
    pet = pd.concat(parts, ignore_index=True)
    base_id = subject.baseline.id
    at_base = set(pet.loc[pet["visit"] == base_id, "lesion_id"])
    target = {}
    if "target" in lesions.columns:
        target = {
            str(k): bool(t) for k, t in zip(lesions["lesion_id"], lesions["target"], strict=True)
        }
    pet["kind"] = [
        "new" if lid not in at_base else ("target" if target.get(lid, True) else "non-target")
        for lid in pet["lesion_id"]
    ]
    # MRI beside PET: size, ADC and Ktrans of the same lesion at the same visit
    if "longest_diameter_mm" in lesions.columns:
        size = lesions[["visit", "lesion_id", "longest_diameter_mm"]].copy()
        size["visit"] = size["visit"].astype(str)
        pet = pet.merge(size, on=["visit", "lesion_id"], how="left")
    from ..stages.pet import mri_beside

    mri = mri_beside(layout.measurements_path(ctx.out_dir, s))
    if mri is not None:
        pet = pet.merge(mri, on=["visit", "lesion_id"], how="left")
    return pet


def pet_assessments(
    ctx: Context, study: Study, unit: Unit, lesions: pd.DataFrame
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """(assessment rows, pattern rows, notes) of the subject's PET; empty without PET."""
    from ..errors import ResponseError
    from ..response import assess
    from ..response.petmri import joint_pet_mri, metabolic_pseudoprogression, pet_flare
    from .assess import _plain

    pet = _pet_table(ctx, study, unit, lesions)
    if pet is None or pet.empty:
        return [], [], []
    s = unit.subject
    rows: list[dict[str, Any]] = []
    prows: list[dict[str, Any]] = []
    notes: list[str] = []
    joint: dict[str, dict[str, Any]] = {}
    if "ADC_mean" in pet.columns:
        # no published cut-off could be verified: the changes are recorded, the call is not
        j = joint_pet_mri(pet, cutoff_pct=0.0, favourable="below")
        joint = {
            str(r["visit"]): {k: r[k] for k in ("delta_tlg_pct", "delta_adc_pct", "joint_pct")}
            for r in j.to_dict("records")
        }
    percist = None
    for crit in PET_CRITERIA:
        try:
            res = assess(pet, criteria=crit)
        except ResponseError as exc:
            notes.append(f"{crit} not assessed: {exc}")
            continue
        if crit == "percist":
            percist = res
        for r in res.to_dict("records"):
            known = {
                "subject",
                "visit",
                "response",
                "criteria",
                "reason",
                "change_from_baseline_pct",
            }
            details = {k: v for k, v in r.items() if k not in known}
            details.update(joint.get(str(r["visit"]), {}))
            rows.append(
                {
                    "subject": s,
                    "visit": str(r["visit"]),
                    "criteria": str(r["criteria"]),
                    "response": r["response"],
                    "target_sum_mm": None,
                    "change_from_baseline_pct": _num(r["change_from_baseline_pct"]),
                    "change_from_nadir_pct": None,
                    "reason": r["reason"],
                    "details": _plain(details),
                }
            )
    if {"ADC_mean", "longest_diameter_mm"} <= set(pet.columns):
        flare = pet_flare(pet, size="longest_diameter_mm")
        for r in flare.to_dict("records"):
            if r["flare"] is None and r["reason"] == "baseline":
                continue
            prows.append(
                {
                    "subject": s,
                    "pattern": "PET flare",
                    "visit": str(r["visit"]),
                    "flag": r["flare"],
                    "reason": r["reason"],
                    "details": _plain({"lesion_ids": r["lesion_ids"]}),
                }
            )
    else:
        notes.append("PET flare not evaluated: no ADC or diameter beside the PET")
    if percist is not None:
        for r in metabolic_pseudoprogression(percist).to_dict("records"):
            prows.append(
                {
                    "subject": s,
                    "pattern": "metabolic pseudoprogression",
                    "visit": r["visit"] if r["flag"] else "",
                    "flag": r["flag"],
                    "reason": r["reason"],
                    "details": {},
                }
            )
    return rows, prows, notes


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None
