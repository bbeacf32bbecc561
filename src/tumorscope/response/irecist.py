"""iRECIST: RECIST 1.1 for immunotherapy trials, with unconfirmed and confirmed progression.

Seymour L, Bogaerts J, Perrone A, et al. iRECIST: guidelines for response criteria for use in
trials testing immunotherapeutics. Lancet Oncol 2017;18:e143-e152.
doi:10.1016/S1470-2045(17)30074-8. Where the paper's tables and the EORTC iRECIST FAQ
(https://recist.eortc.org/irecist-faqs/) differ, the FAQ is followed (see below).

Rules implemented
-----------------
* Time-point categories are those of RECIST 1.1 (:mod:`tumorscope.response.recist`), prefixed
  ``i``: ``iCR``, ``iPR``, ``iSD``, ``non-iCR/non-iUPD`` (non-target disease only), ``NE``.
* RECIST 1.1 progression of target or non-target lesions, or any new lesion, is unconfirmed
  progression ``iUPD``: "iUPD ... requires confirmation, which is done at the next
  assessment (4-8 weeks later)".
* "iCPD is confirmed if further increase in tumour burden" is seen: a further increase of
  the target sum of at least 5 mm, "any increase in" (further unequivocal progression of)
  non-target lesions, an increase of at least 5 mm in the sum of new target lesions, further
  progression of new non-target lesions, or "an increase in the number of new lesions"; and
  progression (RECIST 1.1 criteria met) in a lesion category that had not progressed at the
  iUPD also confirms (Seymour et al. 2017, Table 3).
* FAQ rules followed: further increases are additive and measured from the *first* iUPD of
  the current run (not from the previous assessment), and an increase of exactly 5 mm
  confirms. An iUPD followed by iSD, iPR or iCR "resets" the bar: the run ends and a later
  progression is again an iUPD needing confirmation. An iUPD not confirmed and not reset
  stays iUPD and can be confirmed at any later assessment of the run.
* New lesions are "assessed and categorised as measurable or non-measurable using RECIST 1.1
  principles"; "up to five (but no more than two per organ) measurable new lesions" are new
  target lesions, in order of appearance (largest first within a visit); the others are new
  non-target lesions. Their sum is kept apart from the original target sum.
* Table convention: a non-target or new lesion that shows *further* unequivocal growth
  after the iUPD is marked ``further progression``; one still progressed relative to
  baseline but not further grown stays ``unequivocal progression`` (neither confirms nor
  resets).
* After iCPD every later visit is ``iCPD`` (the progression stands).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ._core import (
    Subject,
    at_least,
    blank_row,
    check_measurable,
    combine_recist,
    equivocal_since,
    fmt,
    lesion_size,
    new_lesions_present,
    nontarget_category,
    pct,
    reappeared,
    target_category,
)
from .recist import COLUMNS as _RECIST_COLUMNS

__all__ = ["COLUMNS", "assess_irecist", "new_target_lesions"]

COLUMNS: list[str] = [
    *_RECIST_COLUMNS,
    "new_lesion_target_sum_mm",
    "new_target_ids",
    "iupd_since",
]

_PREFIX = {"CR": "iCR", "PR": "iPR", "SD": "iSD", "non-CR/non-PD": "non-iCR/non-iUPD", "NE": "NE"}


@dataclass
class _Run:
    visit: str
    days: int
    triggers: set[str]
    target_sum: float
    nlt_sum: float
    new_ids: set[str] = field(default_factory=set)


def new_target_lesions(
    subject: Subject, *, max_total: int = 5, max_per_organ: int = 2
) -> list[str]:
    """New lesions that iRECIST records as new target lesions (measurable, ≤5, ≤2 per organ).

    Measurable follows RECIST 1.1 section 3.1: at least 10 mm, lymph nodes at least 15 mm short
    axis, at the visit where the lesion is first unequivocally present. Lesions are taken in
    order of appearance, largest first within a visit, then by ``lesion_id``.
    """
    chosen: list[str] = []
    per_organ: dict[str, int] = {}
    seen: set[str] = set()
    for v in subject.visits:
        if v.index <= 0:
            continue
        first_here = [
            subject.lesions[lid] for lid in new_lesions_present(subject, v) if lid not in seen
        ]
        seen.update(les.lesion_id for les in first_here)
        first_here.sort(key=lambda les: (-_diam(v.obs[les.lesion_id].diameter_mm), les.lesion_id))
        for les in first_here:
            d = v.obs[les.lesion_id].diameter_mm
            if not (math.isfinite(d) and d >= (15.0 if les.nodal else 10.0)):
                continue
            organ = les.organ or f"?{les.lesion_id}"
            if len(chosen) < max_total and per_organ.get(organ, 0) < max_per_organ:
                chosen.append(les.lesion_id)
                per_organ[organ] = per_organ.get(organ, 0) + 1
    return chosen


def _diam(x: float) -> float:
    return x if math.isfinite(x) else -1.0


def assess_irecist(
    subjects: list[Subject], *, check_measurability: bool = True
) -> list[dict[str, Any]]:
    """Score every visit of every subject with iRECIST; one dict per visit (:data:`COLUMNS`)."""
    rows: list[dict[str, Any]] = []
    for s in subjects:
        if check_measurability:
            check_measurable(s, where="iRECIST")
        rows.extend(_subject_rows(s))
    return rows


def _subject_rows(s: Subject) -> list[dict[str, Any]]:
    base = s.baseline
    targets = s.of_kind("target")
    base_sum = float(sum(base.obs[t.lesion_id].diameter_mm for t in targets))
    nadir, nadir_visit = base_sum, base.visit
    nlt_ids = new_target_lesions(s)
    run: _Run | None = None
    cpd_visit: str | None = None
    had_cr = False
    out: list[dict[str, Any]] = []
    for v in s.visits:
        days = int((v.date - base.date).days)
        row = blank_row(s, v, COLUMNS, "irecist")
        row.update(
            new_lesion_target_sum_mm=math.nan,
            new_target_ids=",".join(nlt_ids),
            iupd_since="",
        )
        if v.index < 0:
            row.update(response="pre-baseline", reason="before the baseline visit: not scored")
            out.append(row)
            continue
        if v.index == 0:
            row.update(
                response="baseline",
                reason=f"baseline sum {fmt(base_sum)} mm" if targets else "baseline",
                sum_mm=base_sum if targets else math.nan,
                nadir_mm=base_sum if targets else math.nan,
            )
            out.append(row)
            continue
        t = target_category(s, v, baseline_sum=base_sum, nadir=nadir, nadir_visit=nadir_visit)
        nt, nt_reason, _ = nontarget_category(s, v)
        new = new_lesions_present(s, v)
        nlt_now, _ = _nlt_sum(s, v, nlt_ids)
        further_nt = [
            les.lesion_id
            for les in s.of_kind("non-target")
            if (o := v.obs.get(les.lesion_id)) is not None and o.status == "further progression"
        ]
        further_new = [
            lid for lid in new if lid not in nlt_ids and v.obs[lid].status == "further progression"
        ]
        row.update(
            sum_mm=t.sum_mm,
            change_from_baseline_pct=pct(t.sum_mm, base_sum) if targets else math.nan,
            change_from_nadir_pct=pct(t.sum_mm, nadir) if targets else math.nan,
            nadir_mm=nadir if targets else math.nan,
            target_response=_PREFIX.get(t.category, "iUPD") if t.category else None,
            nontarget_response=(
                None if nt is None else "iUPD" if nt == "PD" else _PREFIX.get(nt, nt)
            ),
            new_lesions=bool(new),
            new_lesion_ids=",".join(new),
            new_lesion_target_sum_mm=nlt_now if nlt_ids else math.nan,
        )
        recist = combine_recist(t.category, nt, False)
        if cpd_visit is not None:
            row.update(response="iCPD", reason=f"progression confirmed (iCPD) at visit {cpd_visit}")
        elif run is None:
            triggers: dict[str, str] = {}
            if t.category == "PD":
                triggers["target"] = t.reason
            if nt == "PD":
                triggers["nontarget"] = nt_reason
            if new:
                triggers["new"] = "; ".join(
                    [f"new lesion(s) {', '.join(new)}", *equivocal_since(s, v, new)]
                )
            if not triggers and had_cr and reappeared(t.category, nt):
                key = "target" if t.category != "CR" else "nontarget"
                triggers[key] = "disease reappeared after iCR"
            if triggers:
                run = _Run(
                    v.visit,
                    days,
                    set(triggers),
                    t.partial_sum_mm,
                    nlt_now,
                    set(new),
                )
                row.update(
                    response="iUPD",
                    reason="unconfirmed progression: " + "; ".join(triggers.values()),
                    iupd_since=v.visit,
                )
            else:
                response = _PREFIX[recist]
                reasons = [t.reason] if t.category else []
                if nt is not None and (nt == "NE" or response in ("iCR", "iPR")):
                    reasons.append(nt_reason)
                row.update(response=response, reason="; ".join(reasons) or nt_reason)
                had_cr = had_cr or response == "iCR"
        else:
            confirm = _confirmations(
                run,
                t.category,
                t.partial_sum_mm,
                nt,
                further_nt,
                new,
                nlt_now,
                further_new,
                nlt_ids,
            )
            timing = _timing_note(run, out, days)
            if confirm:
                cpd_visit = v.visit
                row.update(
                    response="iCPD",
                    reason=f"progression confirmed (iUPD since visit {run.visit}): "
                    + "; ".join(confirm)
                    + timing,
                    iupd_since=run.visit,
                )
            elif t.category != "PD" and nt != "PD" and not new and recist != "NE":
                response = _PREFIX[recist]
                row.update(
                    response=response,
                    reason=f"iUPD of visit {run.visit} reset by {response}: {t.reason}"
                    if t.category
                    else f"iUPD of visit {run.visit} reset by {response}: {nt_reason}",
                )
                had_cr = had_cr or response == "iCR"
                run = None
            elif recist == "NE" and t.category != "PD" and nt != "PD" and not new:
                row.update(
                    response="NE",
                    reason=f"{t.reason}; iUPD of visit {run.visit} neither confirmed nor reset",
                    iupd_since=run.visit,
                )
            else:
                row.update(
                    response="iUPD",
                    reason=f"iUPD since visit {run.visit} not confirmed: "
                    + _why_not(run, t.partial_sum_mm, nlt_now, t, nt, new)
                    + timing,
                    iupd_since=run.visit,
                )
        out.append(row)
        if targets and math.isfinite(t.sum_mm) and t.sum_mm < nadir:
            nadir, nadir_visit = t.sum_mm, v.visit
    return out


def _nlt_sum(s: Subject, v: Any, nlt_ids: list[str]) -> tuple[float, list[str]]:
    total, missing = 0.0, []
    for lid in nlt_ids:
        if s.lesions[lid].first_index > v.index:
            continue
        size = lesion_size(v.obs.get(lid))
        if size is None:
            if lid in v.obs or s.lesions[lid].first_index <= v.index:
                missing.append(lid)
            continue
        total += size
    return total, missing


def _confirmations(
    run: _Run,
    target: str | None,
    partial_sum: float,
    nt: str | None,
    further_nt: list[str],
    new: list[str],
    nlt_now: float,
    further_new: list[str],
    nlt_ids: list[str],
) -> list[str]:
    why = []
    if "target" in run.triggers:
        rise = partial_sum - run.target_sum
        if at_least(rise, 5.0):
            why.append(
                f"target sum rose {fmt(rise)} mm (>= 5 mm) from {fmt(run.target_sum)} mm at "
                f"the first iUPD"
            )
    elif target == "PD":
        why.append("target lesions now meet progression, a category not progressed at the iUPD")
    if "nontarget" in run.triggers:
        if further_nt:
            why.append(f"further progression of non-target {', '.join(further_nt)}")
    elif nt == "PD":
        why.append("non-target lesions now progress, a category not progressed at the iUPD")
    more = sorted(set(new) - run.new_ids)
    if more:
        why.append(f"more new lesions ({', '.join(more)})")
    if "new" in run.triggers:
        rise = nlt_now - run.nlt_sum
        if any(lid in run.new_ids for lid in nlt_ids) and at_least(rise, 5.0):
            why.append(
                f"new target lesion sum rose {fmt(rise)} mm (>= 5 mm) from "
                f"{fmt(run.nlt_sum)} mm at the first iUPD"
            )
        if further_new:
            why.append(f"further progression of new non-target {', '.join(further_new)}")
    return why


def _why_not(
    run: _Run, partial_sum: float, nlt_now: float, t: Any, nt: str | None, new: list[str]
) -> str:
    parts = []
    if "target" in run.triggers:
        parts.append(
            f"target sum {fmt(partial_sum)} mm, {fmt(partial_sum - run.target_sum)} mm from "
            f"{fmt(run.target_sum)} mm at the first iUPD (needs +5 mm)"
        )
    if "nontarget" in run.triggers:
        parts.append("no further non-target progression")
    if "new" in run.triggers:
        parts.append(
            f"no more new lesions, new target sum {fmt(nlt_now)} mm (was {fmt(run.nlt_sum)})"
        )
    still = []
    if t.category == "PD":
        still.append("target")
    if nt == "PD":
        still.append("non-target")
    if new:
        still.append("new lesions present")
    if still:
        parts.append("still progressed: " + ", ".join(still))
    return "; ".join(parts)


def _timing_note(run: _Run, out: list[dict[str, Any]], days: int) -> str:
    # only the first assessment after the iUPD is the planned confirmation scan
    if out and out[-1]["visit"] == run.visit:
        gap = days - run.days
        if not 28 <= gap <= 56:
            return f" (assessed {gap} days after the iUPD; iRECIST plans 4-8 weeks)"
    return ""
