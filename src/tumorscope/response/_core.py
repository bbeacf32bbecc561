"""Shared pieces of the size-based criteria: a subject's visits and lesions, and the RECIST 1.1
category rules that iRECIST reuses.

Private module: the public entry points are :func:`tumorscope.response.assess` and the
criterion modules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ResponseError

if TYPE_CHECKING:
    import pandas as pd

#: Relative tolerance of the threshold comparisons, so that a change of exactly 20% or 30%
#: or exactly 5 mm computed in floating point meets the threshold ("at least").
EPS = 1e-9

#: RECIST 1.1 section 4.3.2: a target lesion "too small to measure" counts 5 mm.
TOO_SMALL_MM = 5.0


@dataclass(frozen=True)
class Lesion:
    lesion_id: str
    kind: str
    nodal: bool
    organ: str | None
    enhancing: bool
    first_index: int


@dataclass(frozen=True)
class Obs:
    diameter_mm: float
    perpendicular_mm: float
    status: str | None
    row: str
    density_hu: float = math.nan


@dataclass
class Visit:
    visit: str
    date: Any
    index: int
    obs: dict[str, Obs] = field(default_factory=dict)
    steroid_dose_mg: float = math.nan
    clinical_status: str | None = None


@dataclass
class Subject:
    subject: str
    lesions: dict[str, Lesion]
    visits: list[Visit]  # sorted by date; includes pre-baseline visits (index < 0)

    @property
    def baseline(self) -> Visit:
        return next(v for v in self.visits if v.index == 0)

    def of_kind(self, kind: str) -> list[Lesion]:
        return [les for les in self.lesions.values() if les.kind == kind]


def _organ(value: Any) -> str | None:
    """A lesion's organ, or None when the table leaves it empty (None, NaN, pandas' NA or "").

    A missing organ read from a table is NaN or NA, not None: ``str()`` of it was the organ
    ``"nan"``, which Lo Russo's "spread to a new organ" counted as an organ.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if type(value).__name__ == "NAType":  # pandas.NA, without importing pandas here
        return None
    text = str(value).strip()
    return text or None


def subjects_from_table(df: pd.DataFrame) -> list[Subject]:
    """Group a validated table (:func:`validate_table`) into subjects and visits.

    Subjects, lesions and visits come in the order of a sorted ``groupby`` (subject; lesion
    id; date, then visit id) and the rows of a lesion or visit in table order; the table is
    read once as records (a ``groupby`` per subject, lesion and visit cost ~7 ms a subject).
    """
    records = df.to_dict("records")
    by_subject: dict[Any, list[dict[str, Any]]] = {}
    for rec in records:
        by_subject.setdefault(rec["subject"], []).append(rec)
    out = []
    for subject in sorted(by_subject):
        sub = by_subject[subject]
        by_lesion: dict[Any, list[dict[str, Any]]] = {}
        by_visit: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
        for rec in sub:
            by_lesion.setdefault(rec["lesion_id"], []).append(rec)
            by_visit.setdefault((rec["date"], rec["visit"]), []).append(rec)
        lesions: dict[str, Lesion] = {}
        for lid in sorted(by_lesion):
            rows = by_lesion[lid]
            r = rows[0]
            lesions[str(lid)] = Lesion(
                str(lid),
                str(r["kind"]),
                bool(r["nodal"]),
                _organ(r["organ"]),
                bool(r["enhancing"]),
                int(min(x["visit_index"] for x in rows)),
            )
        visits = []
        for date, visit in sorted(by_visit):
            rows = by_visit[(date, visit)]
            v = Visit(str(visit), rows[0]["date"], int(rows[0]["visit_index"]))
            for rec in rows:
                v.obs[str(rec["lesion_id"])] = Obs(
                    float(rec["diameter_mm"]),
                    float(rec["perpendicular_mm"]),
                    rec["status"],
                    str(rec["row"]),
                    float(rec.get("density_hu", math.nan)),
                )
            doses = [x["steroid_dose_mg"] for x in rows if np.isfinite(x["steroid_dose_mg"])]
            v.steroid_dose_mg = doses[0] if doses else math.nan
            cs = [x["clinical_status"] for x in rows if x["clinical_status"] is not None]
            v.clinical_status = cs[0] if cs else None
            visits.append(v)
        out.append(Subject(str(subject), lesions, visits))
    return out


def lesion_size(obs: Obs | None) -> float | None:
    """Diameter of a measured lesion (mm); 0 if absent, 5 if too small; None if not assessed."""
    if obs is None:
        return None
    if np.isfinite(obs.diameter_mm):
        return obs.diameter_mm
    if obs.status == "absent":
        return 0.0
    if obs.status == "too small to measure":
        return TOO_SMALL_MM
    return None


def at_least(value: float, threshold: float) -> bool:
    """``value >= threshold`` with a relative tolerance of :data:`EPS`."""
    return value >= threshold - EPS * max(1.0, abs(threshold))


def pct(new: float, ref: float) -> float:
    if ref == 0:
        return math.nan if new == 0 else math.inf
    return 100.0 * (new - ref) / ref


def fmt(x: float) -> str:
    """Compact number for reasons: 41, 7.5, 0.25."""
    if not np.isfinite(x):
        return str(x)
    return f"{x:.1f}".rstrip("0").rstrip(".") if abs(x) < 1000 else f"{x:.0f}"


@dataclass
class TargetResult:
    """Target-lesion category of one visit."""

    category: str | None  # "CR", "PR", "SD", "PD", "NE", None (no target lesions)
    sum_mm: float  # NaN when not all measured
    partial_sum_mm: float
    missing: list[str]
    reason: str


def target_category(
    subject: Subject,
    visit: Visit,
    *,
    baseline_sum: float,
    nadir: float,
    nadir_visit: str,
    pd_pct: float = 20.0,
    pd_mm: float = 5.0,
    pr_pct: float = 30.0,
) -> TargetResult:
    """RECIST 1.1 section 4.3.1, target lesions (Eisenhauer et al. 2009,
    doi:10.1016/j.ejca.2008.10.026).

    CR: "disappearance of all target lesions. Any pathological lymph nodes (whether target or
    non-target) must have reduction in short axis to <10 mm". PR: "at least a 30% decrease in
    the sum of diameters of target lesions, taking as reference the baseline sum diameters".
    PD: "at least a 20% increase in the sum of diameters of target lesions, taking as
    reference the smallest sum on study (this includes the baseline sum if that is the
    smallest on study). In addition to the relative increase of 20%, the sum must also
    demonstrate an absolute increase of at least 5 mm". A visit with an unmeasured target
    lesion is NE, unless the measured lesions alone already meet PD (section 4.3.4 example:
    "those gave a sum of 80 mm, the patient will have achieved PD status, regardless of the
    missing lesion").
    """
    targets = subject.of_kind("target")
    if not targets:
        return TargetResult(None, math.nan, math.nan, [], "no target lesions")
    sizes: dict[str, float] = {}
    missing = []
    for les in targets:
        s = lesion_size(visit.obs.get(les.lesion_id))
        if s is None:
            missing.append(les.lesion_id)
        else:
            sizes[les.lesion_id] = s
    partial = float(sum(sizes.values()))
    rise = partial - nadir
    rise_pct = pct(partial, nadir)
    pd_met = at_least(rise_pct, pd_pct) and at_least(rise, pd_mm)
    nadir_txt = f"nadir {fmt(nadir)} mm" + (
        " (baseline)" if nadir_visit == subject.baseline.visit else f" (visit {nadir_visit})"
    )
    if missing:
        if pd_met:
            return TargetResult(
                "PD",
                math.nan,
                partial,
                missing,
                f"target lesion(s) {', '.join(missing)} not assessed, but the measured ones "
                f"alone sum {fmt(partial)} mm, {fmt(rise_pct)}% and {fmt(rise)} mm above "
                f"{nadir_txt}",
            )
        return TargetResult(
            "NE",
            math.nan,
            partial,
            missing,
            f"target lesion(s) {', '.join(missing)} not assessed",
        )
    total = partial
    if pd_met:
        return TargetResult(
            "PD",
            total,
            partial,
            [],
            f"sum rose {fmt(rise_pct)}% and {fmt(rise)} mm from {nadir_txt} to {fmt(total)} mm"
            if nadir > 0
            else f"sum rose {fmt(rise)} mm from {nadir_txt} to {fmt(total)} mm",
        )
    nodes_normal = all(sizes[les.lesion_id] < 10.0 for les in targets if les.nodal)
    others_gone = all(sizes[les.lesion_id] == 0 for les in targets if not les.nodal)
    if nodes_normal and others_gone:
        extra = (
            f"; nodes below 10 mm short axis (sum {fmt(total)} mm)"
            if any(les.nodal for les in targets)
            else ""
        )
        return TargetResult("CR", total, partial, [], "all target lesions gone" + extra)
    change_b = pct(total, baseline_sum)
    if at_least(-change_b, pr_pct):
        return TargetResult(
            "PR",
            total,
            partial,
            [],
            f"sum fell {fmt(-change_b)}% from baseline {fmt(baseline_sum)} mm to {fmt(total)} mm",
        )
    why_not_pd = (
        f"{fmt(rise_pct)}% above {nadir_txt} but only {fmt(rise)} mm (PD needs {fmt(pd_mm)} mm)"
        if at_least(rise_pct, pd_pct)
        else f"{fmt(rise)} mm ({fmt(rise_pct)}%) from {nadir_txt}"
    )
    return TargetResult(
        "SD",
        total,
        partial,
        [],
        f"sum {fmt(total)} mm: {fmt(change_b)}% from baseline {fmt(baseline_sum)} mm, {why_not_pd}",
    )


def nontarget_category(subject: Subject, visit: Visit) -> tuple[str | None, str, list[str]]:
    """RECIST 1.1 section 4.3.2, non-target lesions.

    CR: "disappearance of all non-target lesions ... All lymph nodes must be non-pathological
    in size (<10 mm short axis)". Non-CR/Non-PD: "persistence of one or more non-target
    lesion(s)". PD: "unequivocal progression of existing non-target lesions". A non-target
    lesion not assessed makes the category NE, unless another is in unequivocal progression.

    Returns the category (``None`` without non-target lesions), a reason and the lesions in
    unequivocal progression.
    """
    nts = subject.of_kind("non-target")
    if not nts:
        return None, "no non-target lesions", []
    progressing, missing, present = [], [], []
    for les in nts:
        o = visit.obs.get(les.lesion_id)
        if o is None or (o.status is None and not np.isfinite(o.diameter_mm)):
            missing.append(les.lesion_id)
        elif o.status in ("unequivocal progression", "further progression"):
            progressing.append(les.lesion_id)
        elif o.status == "absent":
            continue
        elif les.nodal and np.isfinite(o.diameter_mm) and o.diameter_mm < 10.0:
            continue  # a node back to normal size counts as gone
        elif o.status is None and np.isfinite(o.diameter_mm) and o.diameter_mm == 0:
            continue
        else:
            present.append(les.lesion_id)
    if progressing:
        return "PD", f"unequivocal progression of non-target {', '.join(progressing)}", progressing
    if missing:
        return "NE", f"non-target lesion(s) {', '.join(missing)} not assessed", []
    if present:
        return "non-CR/non-PD", f"non-target {', '.join(present)} persist", []
    return "CR", "all non-target lesions gone", []


def new_lesions_present(subject: Subject, visit: Visit) -> list[str]:
    """Ids of the new lesions present at this visit (a ``new`` row not marked absent or
    equivocal)."""
    out = []
    for les in subject.of_kind("new"):
        o = visit.obs.get(les.lesion_id)
        if o is None or o.status in ("absent", "equivocal"):
            continue
        if o.status is None and np.isfinite(o.diameter_mm) and o.diameter_mm == 0:
            continue
        out.append(les.lesion_id)
    return out


def equivocal_since(subject: Subject, visit: Visit, lesion_ids: list[str]) -> list[str]:
    """For new lesions now unequivocal, ``"X1 (equivocal since visit V2)"`` notes.

    RECIST 1.1 section 4.3.2: "If repeat scans confirm there is definitely a new lesion, then
    progression should be declared using the date of the initial scan."
    """
    notes = []
    for lid in lesion_ids:
        first = next(
            (
                v.visit
                for v in subject.visits
                if v.index < visit.index and lid in v.obs and v.obs[lid].status == "equivocal"
            ),
            None,
        )
        if first is not None:
            notes.append(
                f"new lesion {lid} was equivocal at visit {first}: progression dates from there"
            )
    return notes


def reappeared(target: str | None, nontarget: str | None) -> bool:
    """Disease is seen again: measurable target disease (PR/SD) or persisting non-target
    lesions. After a CR this is progression (RECIST 1.1 Table 3, footnote a)."""
    return target in ("PR", "SD") or nontarget == "non-CR/non-PD"


def combine_recist(target: str | None, nontarget: str | None, new: bool) -> str:
    """RECIST 1.1 Tables 1 and 2: the overall response of a time point."""
    if new or target == "PD" or nontarget == "PD":
        return "PD"
    if target is None:
        if nontarget is None:
            return "NE"
        return {"CR": "CR", "NE": "NE"}.get(nontarget, "non-CR/non-PD")
    if target == "CR":
        return "CR" if nontarget in (None, "CR") else "PR"
    if target == "NE":
        return "NE"
    return target  # PR or SD: "Non-PD or not all evaluated"


#: Columns of a time-point row that hold a number (NaN until known).
_NUMERIC = ("sum_mm", "change_from_baseline_pct", "change_from_nadir_pct", "nadir_mm")


def blank_row(s: Subject, v: Visit, columns: list[str], criteria: str) -> dict[str, Any]:
    """A time-point row with the identity filled in, numbers NaN and no new lesion."""
    row: dict[str, Any] = dict.fromkeys(columns)
    row.update(
        subject=s.subject,
        visit=v.visit,
        date=v.date,
        days_from_baseline=int((v.date - s.baseline.date).days),
        criteria=criteria,
        new_lesions=False,
        new_lesion_ids="",
        **dict.fromkeys(_NUMERIC, math.nan),
    )
    return row


def check_measurable(subject: Subject, *, where: str) -> None:
    """RECIST 1.1 section 3.1: target lesions must be measurable at baseline.

    "Tumour lesions: must be accurately measured in at least one dimension (longest diameter
    in the plane of measurement is to be recorded) with a minimum size of 10 mm by CT scan";
    "to be considered pathologically enlarged and measurable, a lymph node must be ≥15 mm in
    short axis".
    """
    base = subject.baseline
    for les in subject.of_kind("target"):
        o = base.obs[les.lesion_id]
        limit = 15.0 if les.nodal else 10.0
        if o.diameter_mm < limit:
            what = "nodal target (short axis)" if les.nodal else "target"
            raise ResponseError(
                f"{o.row}: {what} lesion {les.lesion_id} of subject {subject.subject} measures "
                f"{fmt(o.diameter_mm)} mm at baseline; {where} needs at least {fmt(limit)} mm "
                "for a measurable lesion",
                field="diameter_mm",
            )
