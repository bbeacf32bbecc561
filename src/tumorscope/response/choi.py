"""Choi criteria: size or density (attenuation) change, for GIST and other targeted therapies.

Choi H, Charnsangavej C, Faria SC, et al. Correlation of computed tomography and positron
emission tomography in patients with metastatic gastrointestinal stromal tumor treated at a
single institution with imatinib mesylate: proposal of new computed tomography response
criteria. J Clin Oncol 2007;25:1753-1759. doi:10.1200/JCO.2006.07.3049

Rules (Choi et al. 2007, Table 3):

* CR: "disappearance of all lesions; no new lesions".
* PR: "a decrease in size of ≥10% or a decrease in tumor density (HU) ≥15% on CT; no new
  lesions; no obvious progression of nonmeasurable disease".
* SD: "does not meet the criteria for CR, PR, or PD".
* PD: "an increase in tumor size of ≥10% and does not meet criteria of PR by tumor density
  (HU) on CT; new lesions; new intratumoral nodules or increase in the size of the existing
  intratumoral nodules".

Design decisions: size is the sum of the longest diameters of the target lesions (RECIST);
density is the unweighted mean of the target lesions' ``density_hu`` (column ``density_hu``:
the visit's own mean). The density change compares like with like: the target lesions with a
density at baseline that are still present at the visit, the same lesions at both times (a
lesion gone is left out of both means; one without a baseline density never counts). When
such a lesion has no density at the visit the density response is not evaluable: the visit
is PR by size when the size meets it, PD by new lesions or non-target progression, and NE
otherwise (it could be PR by density or, when the size grew ≥ 10%, PD). With no baseline
density at all the criteria are applied by size alone, as before. Decreases are measured from
baseline; the 10% increase of PD from the smallest sum on study (the nadir), as in RECIST,
because the paper does not say. Unequivocal non-target progression is PD and an unassessed
target lesion makes the visit NE, as in RECIST 1.1. Intratumoral nodules have no column and
are not assessed.
"""

from __future__ import annotations

import math
from typing import Any

from ._core import (
    Subject,
    at_least,
    blank_row,
    fmt,
    lesion_size,
    new_lesions_present,
    nontarget_category,
    pct,
)
from .recist import COLUMNS as _RECIST_COLUMNS

__all__ = ["COLUMNS", "assess_choi"]

COLUMNS: list[str] = [*_RECIST_COLUMNS, "density_hu", "density_change_pct"]


def assess_choi(subjects: list[Subject]) -> list[dict[str, Any]]:
    """Score every visit with the Choi criteria; one dict per visit (:data:`COLUMNS`)."""
    rows: list[dict[str, Any]] = []
    for s in subjects:
        rows.extend(_subject_rows(s))
    return rows


def _density_change(s: Subject, base: Any, v: Any) -> tuple[float, float, list[str]]:
    """Mean density at baseline and at ``v`` over the same lesions, and those lacking one.

    The lesions are the targets with a baseline density still present at ``v``; a lesion
    without a density (or not assessed) at ``v`` is returned in the list and the means are NaN.
    """
    same, lacking = [], []
    for t in s.of_kind("target"):
        b = base.obs.get(t.lesion_id)
        if b is None or not math.isfinite(b.density_hu):
            continue
        o = v.obs.get(t.lesion_id)
        size = lesion_size(o)
        if size == 0.0:
            continue  # gone: no density, left out of both means
        if o is None or size is None or not math.isfinite(o.density_hu):
            lacking.append(t.lesion_id)
        else:
            same.append((b.density_hu, o.density_hu))
    if lacking or not same:
        return math.nan, math.nan, lacking
    return (
        float(sum(x for x, _ in same) / len(same)),
        float(sum(y for _, y in same) / len(same)),
        [],
    )


def _density(s: Subject, v: Any) -> float:
    vals = [
        v.obs[t.lesion_id].density_hu
        for t in s.of_kind("target")
        if t.lesion_id in v.obs and math.isfinite(v.obs[t.lesion_id].density_hu)
    ]
    return float(sum(vals) / len(vals)) if vals else math.nan


def _subject_rows(s: Subject) -> list[dict[str, Any]]:
    base = s.baseline
    targets = s.of_kind("target")
    base_sum = float(sum(base.obs[t.lesion_id].diameter_mm for t in targets))
    base_hu = _density(s, base)
    nadir, nadir_visit = base_sum, f"baseline {base.visit}"
    out = []
    for v in s.visits:
        hu = _density(s, v)
        ref_hu, same_hu, hu_lacking = _density_change(s, base, v)
        d_hu = pct(same_hu, ref_hu) if math.isfinite(same_hu) else math.nan
        row = blank_row(s, v, COLUMNS, "choi")
        row.update(nadir_mm=nadir, density_hu=hu, density_change_pct=d_hu)
        if v.index <= 0:
            row.update(
                response="baseline" if v.index == 0 else "pre-baseline",
                reason=f"baseline sum {fmt(base_sum)} mm, density {fmt(base_hu)} HU"
                if v.index == 0
                else "not scored",
                sum_mm=base_sum if v.index == 0 else math.nan,
            )
            out.append(row)
            continue
        sizes = [lesion_size(v.obs.get(t.lesion_id)) for t in targets]
        missing = [t.lesion_id for t, x in zip(targets, sizes, strict=True) if x is None]
        total = float(sum(x for x in sizes if x is not None))
        nt, nt_reason, _ = nontarget_category(s, v)
        new = new_lesions_present(s, v)
        d_size_b = pct(total, base_sum)
        d_size_n = pct(total, nadir)
        pr_size = at_least(-d_size_b, 10.0)
        pr_hu = math.isfinite(d_hu) and at_least(-d_hu, 15.0)
        grew = at_least(d_size_n, 10.0)
        hu_txt = f"density {fmt(d_hu)}% from baseline" if math.isfinite(d_hu) else "density unknown"
        if hu_lacking:
            hu_txt = (
                f"density not evaluable: target lesion(s) {', '.join(hu_lacking)} had a density "
                "at baseline and have none now (Choi compares the same lesions at both times)"
            )
        row.update(
            sum_mm=math.nan if missing else total,
            change_from_baseline_pct=math.nan if missing else d_size_b,
            change_from_nadir_pct=math.nan if missing else d_size_n,
            nontarget_response=nt,
            new_lesions=bool(new),
            new_lesion_ids=",".join(new),
        )
        pd_reasons = []
        if grew and not pr_hu and not hu_lacking:
            pd_reasons.append(
                f"sum rose {fmt(d_size_n)}% from nadir {fmt(nadir)} mm ({nadir_visit}) and {hu_txt} "
                "(PR by density needs -15%)"
            )
        if nt == "PD":
            pd_reasons.append(nt_reason)
        if new:
            pd_reasons.append(f"new lesion(s) {', '.join(new)}")
        if pd_reasons:
            response, reason = "PD", "; ".join(pd_reasons)
            row["target_response"] = "PD" if grew and not pr_hu and not hu_lacking else None
        elif missing:
            response = "NE"
            reason = f"target lesion(s) {', '.join(missing)} not assessed"
        elif hu_lacking and not pr_size and total > 0:
            response = "NE"
            reason = f"sum {fmt(d_size_b)}% from baseline, {fmt(d_size_n)}% from nadir; {hu_txt}"
        elif total == 0 and nt in (None, "CR"):
            response, reason = "CR", "all lesions gone"
        elif pr_size or pr_hu:
            response = "PR"
            why = []
            if pr_size:
                why.append(f"sum fell {fmt(-d_size_b)}% from baseline {fmt(base_sum)} mm")
            if pr_hu:
                why.append(f"density fell {fmt(-d_hu)}% from baseline {fmt(ref_hu)} HU")
            reason = " and ".join(why) + (f"; {hu_txt}" if hu_lacking else "")
        else:
            response = "SD"
            reason = f"sum {fmt(d_size_b)}% from baseline, {fmt(d_size_n)}% from nadir; {hu_txt}"
        row.update(response=response, reason=reason)
        row["target_response"] = row["target_response"] or response
        out.append(row)
        if not missing and total < nadir:
            nadir, nadir_visit = total, f"visit {v.visit}"
    return out
