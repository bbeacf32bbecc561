"""RECIST 1.1 time-point responses and best overall response.

Eisenhauer EA, Therasse P, Bogaerts J, et al. New response evaluation criteria in solid
tumours: revised RECIST guideline (version 1.1). Eur J Cancer 2009;45:228-247.
doi:10.1016/j.ejca.2008.10.026

Design decisions
----------------
* Progression of the target sum is measured from the nadir, the smallest *fully measured*
  sum on study including baseline, over the visits *before* the one assessed. Partial
  (NE) visits never set the nadir.
* A visit with an unassessed target lesion is NE, unless the measured lesions alone meet PD
  (section 4.3.4). A non-target lesion not assessed makes the non-target category NE.
* Target lesions marked "too small to measure" count 5 mm, "absent" 0 mm (section 4.3.2);
  lymph nodes keep their short axis in the sum even below 10 mm, and all nodes < 10 mm
  with every other target gone is CR although the sum is not zero (section 4.3.1).
* After an overall CR, any reappearing disease is PD "even disease meeting PR criteria
  relative to baseline" (Table 3 footnote a).
* Visits before the baseline visit (``baseline`` column) are reported as ``pre-baseline``
  and the baseline visit as ``baseline``; neither is scored.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ._core import (
    Subject,
    blank_row,
    check_measurable,
    combine_recist,
    equivocal_since,
    fmt,
    new_lesions_present,
    nontarget_category,
    pct,
    reappeared,
    target_category,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["COLUMNS", "assess_recist", "best_overall_response"]

COLUMNS: list[str] = [
    "subject",
    "visit",
    "date",
    "days_from_baseline",
    "response",
    "sum_mm",
    "change_from_baseline_pct",
    "change_from_nadir_pct",
    "nadir_mm",
    "target_response",
    "nontarget_response",
    "new_lesions",
    "new_lesion_ids",
    "reason",
    "criteria",
]


def assess_recist(
    subjects: list[Subject],
    *,
    check_measurability: bool = True,
    pd_mm: float = 5.0,
    criteria: str = "recist1.1",
) -> list[dict[str, Any]]:
    """Score every visit of every subject with RECIST 1.1; one dict per visit (:data:`COLUMNS`).

    ``pd_mm`` is the absolute increase that progression needs besides the 20% (5 mm in
    RECIST 1.1, none in mRECIST); ``criteria`` names the criterion in the output.
    """
    rows: list[dict[str, Any]] = []
    for s in subjects:
        if check_measurability:
            check_measurable(s, where="RECIST 1.1" if criteria == "recist1.1" else criteria)
        rows.extend(_subject_rows(s, pd_mm=pd_mm, criteria=criteria))
    return rows


def _blank(
    s: Subject, v: Any, response: str, reason: str, criteria: str = "recist1.1"
) -> dict[str, Any]:
    row = blank_row(s, v, COLUMNS, criteria)
    row.update(response=response, reason=reason)
    return row


def _subject_rows(s: Subject, *, pd_mm: float, criteria: str) -> list[dict[str, Any]]:
    base = s.baseline
    targets = s.of_kind("target")
    base_sum = float(sum(base.obs[t.lesion_id].diameter_mm for t in targets))
    nadir, nadir_visit = base_sum, base.visit
    had_cr = False
    out = []
    for v in s.visits:
        if v.index < 0:
            row = _blank(s, v, "pre-baseline", "before the baseline visit: not scored", criteria)
            row["sum_mm"] = _plain_sum(s, v)
            out.append(row)
            continue
        if v.index == 0:
            base_reason = f"baseline sum {fmt(base_sum)} mm" if targets else "baseline"
            row = _blank(s, v, "baseline", base_reason, criteria)
            row["sum_mm"] = base_sum if targets else math.nan
            row["nadir_mm"] = base_sum if targets else math.nan
            out.append(row)
            continue
        t = target_category(
            s, v, baseline_sum=base_sum, nadir=nadir, nadir_visit=nadir_visit, pd_mm=pd_mm
        )
        nt, nt_reason, _ = nontarget_category(s, v)
        new = new_lesions_present(s, v)
        response = combine_recist(t.category, nt, bool(new))
        reasons = []
        if t.category is not None:
            reasons.append(t.reason)
        if nt is not None and (nt in ("PD", "NE") or response in ("CR", "PR")):
            reasons.append(nt_reason)
        if new:
            reasons.append(f"new lesion(s) {', '.join(new)}")
            reasons.extend(equivocal_since(s, v, new))
        if had_cr and response != "PD" and reappeared(t.category, nt):
            response = "PD"
            reasons.insert(0, "disease reappeared after a complete response")
        row = _blank(s, v, response, "; ".join(reasons), criteria)
        row.update(
            sum_mm=t.sum_mm,
            change_from_baseline_pct=pct(t.sum_mm, base_sum) if targets else math.nan,
            change_from_nadir_pct=pct(t.sum_mm, nadir) if targets else math.nan,
            nadir_mm=nadir if targets else math.nan,
            target_response=t.category,
            nontarget_response=nt,
            new_lesions=bool(new),
            new_lesion_ids=",".join(new),
        )
        out.append(row)
        if response == "CR":
            had_cr = True
        if targets and math.isfinite(t.sum_mm) and t.sum_mm < nadir:
            nadir, nadir_visit = t.sum_mm, v.visit
    return out


def _plain_sum(s: Subject, v: Any) -> float:
    vals = [v.obs[t.lesion_id].diameter_mm for t in s.of_kind("target") if t.lesion_id in v.obs]
    if len(vals) != len(s.of_kind("target")) or not vals:
        return math.nan
    return float(sum(vals))


# ---------------------------------------------------------------- best overall response

_RANK = {
    "CR": 6,
    "iCR": 6,
    "PR": 5,
    "iPR": 5,
    "MR": 4.5,  # RANO 2.0 minor response (non-enhancing disease)
    "SD": 4,
    "iSD": 4,
    "non-CR/non-PD": 3,
    "non-iCR/non-iUPD": 3,
    "iUPD": 2,
    "preliminary PD": 2,
    "PD": 1,
    "iCPD": 1,
    "NE": 0,
}
_FINAL = {"PD", "iCPD"}


def best_overall_response(
    assessment: pd.DataFrame,
    *,
    confirm: bool | None = None,
    confirm_days: int = 28,
    min_sd_days: int = 0,
) -> pd.DataFrame:
    """Best overall response of each subject from the time-point responses of :func:`assess`.

    RECIST 1.1 section 4.4.1: "the best overall response is the best response recorded from
    the start of the study treatment until the end of treatment taking into account any
    requirement for confirmation", recorded until progression. With confirmation, CR and PR
    need "a subsequent time point" at least ``confirm_days`` later ("no less than 4 weeks",
    section 4.6) with the same or a better response and nothing worse than that in between
    (NE visits are skipped); an unconfirmed CR or PR counts as SD (Table 3). SD counts only
    if it was "met at least once after study entry at a minimum interval" of ``min_sd_days``
    from baseline (section 4.4.1), otherwise the best response is PD if progression followed,
    else NE. iRECIST labels are scored the same way (Seymour et al. 2017,
    doi:10.1016/S1470-2045(17)30074-8), up to iCPD; RANO/iRANO likewise (Wen et al. 2023,
    doi:10.1200/JCO.23.01059: CR and PR must be confirmed at least 4 weeks later).

    Parameters
    ----------
    assessment : pandas.DataFrame
        Output of :func:`tumorscope.response.assess` (columns ``subject``, ``visit``,
        ``days_from_baseline``, ``response``, ``criteria``).
    confirm : bool, optional
        Require confirmation of CR/PR. Default: true for RANO and iRANO (the criteria
        require it), false for RECIST 1.1 and iRECIST (needed only in non-randomised trials).
    confirm_days : int, default 28
        Minimum interval between a response and its confirmation, days.
    min_sd_days : int, default 0
        Minimum interval from baseline for SD to count, days (protocol specific, often 42).

    Returns
    -------
    pandas.DataFrame
        One row per subject: ``subject``, ``best_response``, ``visit`` (where it was
        recorded), ``confirmed_at`` (visit of the confirmation, empty if none),
        ``reason``.
    """
    import pandas as pd

    out = []
    for subject, sub in assessment.groupby("subject", sort=True):
        sub = sub.sort_values("days_from_baseline")
        criteria = str(sub["criteria"].iloc[0])
        need_confirm = confirm if confirm is not None else criteria in ("rano", "irano")
        scored = sub[~sub["response"].isin(["baseline", "pre-baseline"])]
        resp = list(scored["response"])
        days = [int(d) for d in scored["days_from_baseline"]]
        visits = [str(v) for v in scored["visit"]]
        # stop at the first final progression
        end = next((k for k, r in enumerate(resp) if r in _FINAL), len(resp) - 1)
        best, best_k, conf_k, reason = "NE", -1, -1, "no assessment after baseline"
        for k in range(end + 1):
            r = resp[k]
            label, ck, why = _judge(k, resp, days, visits, end, need_confirm, confirm_days)
            if (
                label in ("SD", "iSD", "non-CR/non-PD", "non-iCR/non-iUPD")
                and days[k] < min_sd_days
            ):
                label, why = (
                    "NE",
                    (
                        f"{r} at visit {visits[k]} on day {days[k]}, before the minimum "
                        f"{min_sd_days} days for stable disease"
                    ),
                )
            if _RANK.get(label, 0) > _RANK.get(best, 0) or best_k < 0:
                best, best_k, conf_k, reason = label, k, ck, why
        if best in ("iUPD", "preliminary PD") and any(r in _FINAL for r in resp[best_k:]):
            k = next(j for j in range(best_k, len(resp)) if resp[j] in _FINAL)
            conf_k = k
            reason = (
                f"{best} at visit {visits[best_k]} confirmed as {resp[k]} at visit {visits[k]} "
                "(progression dated from the first scan)"
            )
            best = resp[k]
        if best == "NE" and any(r in _FINAL for r in resp):
            k = resp.index(next(r for r in resp if r in _FINAL))
            best, best_k, conf_k = resp[k], k, -1
            reason = f"progression at visit {visits[k]} and no earlier qualifying response"
        out.append(
            {
                "subject": subject,
                "best_response": best,
                "visit": visits[best_k] if best_k >= 0 else "",
                "confirmed_at": visits[conf_k] if conf_k >= 0 else "",
                "reason": reason,
            }
        )
    return pd.DataFrame(
        out, columns=["subject", "best_response", "visit", "confirmed_at", "reason"]
    )


def _judge(
    k: int,
    resp: list[str],
    days: list[int],
    visits: list[str],
    end: int,
    need_confirm: bool,
    confirm_days: int,
) -> tuple[str, int, str]:
    r = resp[k]
    if r not in ("CR", "PR", "MR", "iCR", "iPR") or not need_confirm:
        return r, -1, f"{r} at visit {visits[k]}"
    floor = _RANK[r]
    for j in range(k + 1, end + 1):
        rj = resp[j]
        if rj == "NE":
            continue
        if _RANK.get(rj, 0) < floor:
            break
        if days[j] - days[k] >= confirm_days:
            return r, j, f"{r} at visit {visits[k]} confirmed at visit {visits[j]}"
    sd = "iSD" if r.startswith("i") else "SD"
    return (
        sd,
        -1,
        f"{r} at visit {visits[k]} not confirmed {confirm_days} days later: counts as {sd}",
    )
