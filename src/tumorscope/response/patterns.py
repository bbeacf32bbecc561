"""Response patterns seen with immunotherapy: pseudoprogression, mixed (dissociated) response,
hyperprogression and durable response.

Each function returns a table with a boolean call and a plain-language ``reason``. The
published definition of each pattern is quoted in its docstring; where the literature has
several definitions (hyperprogression), each is available by name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import ResponseError
from ._core import fmt, subjects_from_table
from .table import validate_table

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "HYPERPROGRESSION_DEFINITIONS",
    "durable_response",
    "hyperprogression",
    "hyperprogression_each",
    "mixed_response",
    "pseudoprogression",
    "pseudoprogression_candidates",
    "tumour_growth_kinetics",
    "tumour_growth_rate",
]

#: Days per month used by the growth rates (365.25 / 12).
DAYS_PER_MONTH = 30.4375

_PROGRESSION = {"PD", "iUPD", "preliminary PD"}
_CONFIRMED = {"iCPD"}
_RESPONSE = {"CR", "PR", "iCR", "iPR"}
_STABLE = {"SD", "iSD"}


def pseudoprogression(assessment: pd.DataFrame, *, include_stable: bool = False) -> pd.DataFrame:
    """Pseudoprogression: apparent progression followed by response, without confirmation.

    Immune-related response criteria: "response after an initial increase in total tumor
    burden" (Wolchok JD, Hoos A, O'Day S, et al. Guidelines for the evaluation of immune
    therapy activity in solid tumors: immune-related response criteria. Clin Cancer Res
    2009;15:7412-7420. doi:10.1158/1078-0432.CCR-09-1624); in iRECIST terms an iUPD that is
    followed by iPR or iCR (the "reset") without iCPD in between (Seymour et al. 2017,
    doi:10.1016/S1470-2045(17)30074-8). RECIST 1.1 PD and RANO "preliminary PD" followed by
    PR/CR are treated alike.

    Parameters
    ----------
    assessment : pandas.DataFrame
        Output of :func:`tumorscope.response.assess` (any criterion).
    include_stable : bool, default False
        Also count progression followed by stable disease (some series call this
        pseudoprogression too).

    Returns
    -------
    pandas.DataFrame
        One row per subject: ``subject``, ``pseudoprogression`` (bool), ``progression_visit``,
        ``response_visit``, ``reason``.
    """
    import pandas as pd

    good = _RESPONSE | (_STABLE if include_stable else set())
    out = []
    for subject, sub in assessment.groupby("subject", sort=True):
        sub = sub.sort_values("days_from_baseline")
        resp, visits = list(sub["response"]), [str(v) for v in sub["visit"]]
        found, pv, rv = False, "", ""
        reason = "no progression followed by response"
        start = None
        for k, r in enumerate(resp):
            if r in _CONFIRMED:
                if start is not None:
                    reason = (
                        f"{resp[start]} at visit {visits[start]} confirmed at visit {visits[k]}"
                    )
                break
            if r in _PROGRESSION and start is None:
                start = k
            elif start is not None and r in good:
                found, pv, rv = True, visits[start], visits[k]
                reason = (
                    f"{resp[start]} at visit {visits[start]} followed by {r} at visit {visits[k]} "
                    "without confirmed progression"
                )
                break
        out.append(
            {
                "subject": subject,
                "pseudoprogression": found,
                "progression_visit": pv,
                "response_visit": rv,
                "reason": reason,
            }
        )
    return pd.DataFrame(
        out,
        columns=["subject", "pseudoprogression", "progression_visit", "response_visit", "reason"],
    )


def pseudoprogression_candidates(
    table: pd.DataFrame,
    *,
    rc_pct: Mapping[str, float],
    markers: Mapping[str, Literal["increase", "decrease"]] | None = None,
    growth_pct: float = 20.0,
    require: Literal["any", "all"] = "any",
) -> pd.DataFrame:
    """Prospective flag: a lesion grows while its functional markers say it responds.

    This is a screening heuristic of tumorscope, not a validated criterion: it marks, at the
    visit itself, lesions that grew by at least ``growth_pct`` in diameter from baseline
    while a functional marker changed beyond its repeatability coefficient in the direction
    of response, for instance a rising ADC (cell death; Moffat et al. 2005,
    doi:10.1073/pnas.0501532102) or a falling Ktrans. Such growth may be inflammation rather
    than tumour, and is worth a confirmation scan before calling progression.

    Parameters
    ----------
    table : pandas.DataFrame
        Measurement table with the marker columns (e.g. from
        :func:`tumorscope.response.from_lesion_table`).
    rc_pct : mapping of marker to float
        Relative repeatability coefficient of each marker, percent.
    markers : mapping of marker to {"increase", "decrease"}, optional
        Direction of response of each marker. Default ``{"ADC_mean": "increase",
        "Ktrans_mean": "decrease"}`` restricted to the columns present.
    growth_pct : float, default 20
        Minimum diameter growth from baseline, percent.
    require : {"any", "all"}, default "any"
        Whether any or all markers must point to response.

    Returns
    -------
    pandas.DataFrame
        One row per growing lesion and visit: ``subject``, ``visit``, ``lesion_id``,
        ``growth_pct``, one ``<marker>_change_pct`` per marker, ``candidate`` (bool),
        ``reason``.
    """
    import pandas as pd

    from .functional import functional_change

    df = validate_table(table)
    if markers is None:
        markers = {
            k: v  # type: ignore[misc]
            for k, v in (("ADC_mean", "increase"), ("Ktrans_mean", "decrease"))
            if k in df.columns
        }
    if not markers:
        raise ResponseError("no functional marker column to judge", field="markers")
    for m in markers:
        if m not in rc_pct:
            raise ResponseError(f"no repeatability coefficient for marker {m!r}", field="rc_pct")
        if m not in df.columns:
            raise ResponseError(f"the table has no column {m!r}", field=m)
    calls: dict[str, dict[tuple[str, str, str], Any]] = {}
    for m in markers:
        fc = functional_change(df, statistic=m, rc_pct=rc_pct[m])
        calls[m] = {
            (str(r["subject"]), str(r["visit"]), str(r["lesion_id"])): r
            for r in fc.to_dict("records")
        }
    base = df[df["visit_index"] == 0].set_index(["subject", "lesion_id"])["diameter_mm"]
    out = []
    for rec in df[df["visit_index"] > 0].to_dict("records"):
        key = (rec["subject"], rec["lesion_id"])
        b = float(base.get(key, math.nan))
        d = float(rec["diameter_mm"])
        if not (math.isfinite(b) and b > 0 and math.isfinite(d)):
            continue
        growth = 100.0 * (d / b - 1.0)
        if growth < growth_pct:
            continue
        row: dict[str, Any] = {
            "subject": rec["subject"],
            "visit": rec["visit"],
            "lesion_id": rec["lesion_id"],
            "growth_pct": growth,
        }
        agree, why = [], []
        for m, direction in markers.items():
            c = calls[m][(str(rec["subject"]), str(rec["visit"]), str(rec["lesion_id"]))]
            row[f"{m}_change_pct"] = float(c["change_pct"])
            ok = c["call"] == direction
            agree.append(ok)
            why.append(f"{m} {float(c['change_pct']):+.0f}% ({c['call']})")
        flag = all(agree) if require == "all" else any(agree)
        row["candidate"] = flag
        row["reason"] = (
            f"lesion {rec['lesion_id']} grew {fmt(growth)}% while "
            + ", ".join(why)
            + ("; markers suggest response" if flag else "; markers do not suggest response")
        )
        out.append(row)
    cols = ["subject", "visit", "lesion_id", "growth_pct", *[f"{m}_change_pct" for m in markers]]
    return pd.DataFrame(out, columns=[*cols, "candidate", "reason"])


def mixed_response(
    table: pd.DataFrame, *, shrink_pct: float = 30.0, grow_pct: float = 20.0
) -> pd.DataFrame:
    """Mixed (dissociated) response: some lesions shrink while others grow, at one visit.

    Dissociated response is "the coexistence of responding and non-responding lesions"
    (Tazdait M, Mezquita L, Lahmar J, et al. Patterns of responses in metastatic NSCLC
    during PD-1 or PDL-1 inhibitor therapy: comparison of RECIST 1.1, irRECIST and iRECIST
    criteria. Eur J Cancer 2018;88:38-47. doi:10.1016/j.ejca.2017.10.017). Per lesion and
    from its baseline diameter, a lesion responds when it shrank by at least ``shrink_pct``
    and progresses when it grew by at least ``grow_pct`` (RECIST 1.1's 30% and 20%
    magnitudes applied to single lesions; options). Target and measured non-target lesions
    count; new lesions are reported in the reason but do not make a visit mixed.

    Returns
    -------
    pandas.DataFrame
        One row per subject and visit after baseline: ``subject``, ``visit``, ``mixed``
        (bool), ``shrinking`` and ``growing`` (comma-separated lesion ids), ``reason``.
    """
    import pandas as pd

    df = validate_table(table)
    out = []
    for s in subjects_from_table(df):
        base = s.baseline
        for v in s.visits:
            if v.index <= 0:
                continue
            shrinking, growing = [], []
            for les in s.lesions.values():
                if les.kind == "new" or les.lesion_id not in v.obs:
                    continue
                b = base.obs[les.lesion_id].diameter_mm
                o = v.obs[les.lesion_id]
                d = 0.0 if o.status == "absent" else o.diameter_mm
                if not (math.isfinite(b) and b > 0 and math.isfinite(d)):
                    continue
                change = 100.0 * (d / b - 1.0)
                if change <= -shrink_pct + 1e-9:
                    shrinking.append(f"{les.lesion_id} ({fmt(change)}%)")
                elif change >= grow_pct - 1e-9:
                    growing.append(f"{les.lesion_id} (+{fmt(change)}%)")
            new = [les.lesion_id for les in s.of_kind("new") if les.lesion_id in v.obs]
            mixed = bool(shrinking and growing)
            reason = (
                f"shrinking: {', '.join(shrinking) or 'none'}; growing: {', '.join(growing) or 'none'}"
                + (f"; new lesion(s) {', '.join(new)}" if new else "")
            )
            out.append(
                {
                    "subject": s.subject,
                    "visit": v.visit,
                    "mixed": mixed,
                    "shrinking": ",".join(x.split(" ")[0] for x in shrinking),
                    "growing": ",".join(x.split(" ")[0] for x in growing),
                    "reason": reason,
                }
            )
    return pd.DataFrame(
        out, columns=["subject", "visit", "mixed", "shrinking", "growing", "reason"]
    )


def tumour_growth_rate(d0: float, d1: float, days: float) -> float:
    """Tumour growth rate TGR, percent volume increase per month.

    Champiat S, Dercle L, Ammari S, et al. Hyperprogressive disease is a new pattern of
    progression in cancer patients treated by anti-PD-1/PD-L1. Clin Cancer Res
    2017;23:1920-1928. doi:10.1158/1078-0432.CCR-16-1741: with the tumour volume taken as
    ``V ∝ D³`` from the sum of target diameters ``D``, ``TG = 3·ln(D1/D0)/t`` (t in months)
    and ``TGR = 100·(exp(TG) - 1)``.
    """
    if not (d0 > 0 and days > 0) or not math.isfinite(d1) or d1 < 0:
        return math.nan
    if d1 == 0:
        return -100.0
    tg = 3.0 * math.log(d1 / d0) / (days / DAYS_PER_MONTH)
    return 100.0 * math.expm1(tg)


def tumour_growth_kinetics(d0: float, d1: float, days: float) -> float:
    """Tumour growth kinetics TGK, mm per month: ``(D1 - D0) / t``.

    Saâda-Bouzid E, Defaucheux C, Karabajakian A, et al. Hyperprogression during anti-PD-1/
    PD-L1 therapy in patients with recurrent and/or metastatic head and neck squamous cell
    carcinoma. Ann Oncol 2017;28:1605-1611. doi:10.1093/annonc/mdx178: the difference of the
    sum of the largest diameters of the target lesions per unit of time.
    """
    if not days > 0 or not (math.isfinite(d0) and math.isfinite(d1)):
        return math.nan
    return (d1 - d0) / (days / DAYS_PER_MONTH)


#: Names accepted by :func:`hyperprogression`.
HYPERPROGRESSION_DEFINITIONS: tuple[str, ...] = (
    "champiat",
    "saada-bouzid",
    "ferrara",
    "kato",
    "lo-russo",
)


def hyperprogression(
    table: pd.DataFrame,
    *,
    definition: str = "champiat",
    time_to_treatment_failure_days: Mapping[str, float] | None = None,
    clinical_deterioration: Mapping[str, bool] | None = None,
) -> pd.DataFrame:
    """Hyperprogressive disease under one of its published definitions.

    The growth before treatment is taken from the last pre-baseline visit to the baseline
    visit, the growth on treatment from the baseline to the first visit after it, both on
    the sum of diameters of the target lesions (the ``baseline`` column of the table marks
    the baseline; a subject without a pre-baseline visit is not evaluable for the ratio
    definitions).

    Not evaluable (``None``, with the reason) rather than ``False``: a target lesion without
    a diameter at the pre-baseline, baseline or first evaluation visit makes the sums, and so
    the growth rates, unknown; the call is ``False`` only when a criterion that is known fails
    (RECIST at the first evaluation is not PD, say) and ``None`` when an unknown one decides.
    The papers define the ratios for a tumour that grew before treatment and are silent on
    one that did not: with no pre-treatment growth (rate 0) and growth on treatment the ratio
    is infinite and meets "≥ 2-fold" (the limit of a small positive rate); a tumour that
    *shrank* before treatment (negative rate) makes the ratio's sign meaningless, so Champiat,
    Saâda-Bouzid and Kato are not evaluable there. Ferrara's ΔTGR is a difference and applies
    as published; Lo Russo uses no pre-treatment growth.

    Definitions
    -----------
    ``"champiat"``
        "RECIST progression at the first evaluation and a ≥2-fold increase of the TGR between
        the reference and the experimental periods" (Champiat et al. 2017,
        doi:10.1158/1078-0432.CCR-16-1741); TGR from :func:`tumour_growth_rate`.
    ``"saada-bouzid"``
        Tumour growth kinetics ratio TGK_on / TGK_pre ≥ 2 (Saâda-Bouzid et al. 2017,
        doi:10.1093/annonc/mdx178); TGK from :func:`tumour_growth_kinetics`.
    ``"ferrara"``
        RECIST progression at the first evaluation and ΔTGR = TGR_on - TGR_pre > 50 (%/month)
        (Ferrara R, Mezquita L, Texier M, et al. Hyperprogressive disease in patients with
        advanced non-small cell lung cancer treated with PD-1/PD-L1 inhibitors or with
        single-agent chemotherapy. JAMA Oncol 2018;4:1543-1552.
        doi:10.1001/jamaoncol.2018.3676).
    ``"kato"``
        Time-to-treatment failure < 2 months, > 50% increase in tumour burden compared with
        the pre-immunotherapy (baseline) imaging and > 2-fold increase in progression pace
        (Kato S, Goodman A, Walavalkar V, et al. Hyperprogressors after immunotherapy:
        analysis of genomic alterations associated with accelerated growth rate. Clin Cancer
        Res 2017;23:4242-4250. doi:10.1158/1078-0432.CCR-16-3133). Pace is the TGK here;
        ``time_to_treatment_failure_days`` is required.
    ``"lo-russo"``
        At least three of: time-to-treatment failure < 2 months; ≥ 50% increase of the target
        sum between baseline and first evaluation; ≥ 2 new lesions in an organ already
        involved; spread to a new organ; clinical deterioration (ECOG PS ≥ 2) in the first
        2 months (Lo Russo G, Moro M, Sommariva M, et al. Antibody-Fc/FcR interaction on
        macrophages as a mechanism for hyperprogressive disease in non-small cell lung cancer
        subsequent to PD-1/PD-L1 blockade. Clin Cancer Res 2019;25:989-999.
        doi:10.1158/1078-0432.CCR-18-1390). New lesions need ``organ``; the clinical items
        come from the two mappings and count as not met when not given (the reason says so).

    Parameters
    ----------
    table : pandas.DataFrame
        Measurement table.
    definition : str, default "champiat"
        One of :data:`HYPERPROGRESSION_DEFINITIONS`.
    time_to_treatment_failure_days : mapping of subject to days, optional
    clinical_deterioration : mapping of subject to bool, optional

    Returns
    -------
    pandas.DataFrame
        One row per subject: ``subject``, ``definition``, ``hyperprogression`` (True, False,
        or None when not evaluable), ``tgr_pre_pct_per_month``, ``tgr_on_pct_per_month``,
        ``tgr_ratio``, ``tgk_pre_mm_per_month``, ``tgk_on_mm_per_month``, ``tgk_ratio``,
        ``first_response`` (RECIST 1.1 at the first evaluation), ``reason``.
    """
    (result,) = hyperprogression_each(
        table,
        definitions=(definition,),
        time_to_treatment_failure_days=time_to_treatment_failure_days,
        clinical_deterioration=clinical_deterioration,
    ).values()
    if isinstance(result, ResponseError):
        raise result
    return result


def hyperprogression_each(
    table: pd.DataFrame,
    *,
    definitions: Sequence[str] = HYPERPROGRESSION_DEFINITIONS,
    time_to_treatment_failure_days: Mapping[str, float] | None = None,
    clinical_deterioration: Mapping[str, bool] | None = None,
) -> dict[str, pd.DataFrame | ResponseError]:
    """:func:`hyperprogression` under each of ``definitions``, from one validation of the
    table and one RECIST 1.1 assessment (what every definition reads).

    Returns
    -------
    dict
        Per definition (as given), its table, or the :class:`~tumorscope.errors.
        ResponseError` that :func:`hyperprogression` raises for it (an unknown name, Kato
        without ``time_to_treatment_failure_days``).

    Raises
    ------
    ResponseError
        If a definition can be evaluated and the table breaks a rule (as
        :func:`hyperprogression`).
    """
    from .assessment import assess_validated

    ttf = dict(time_to_treatment_failure_days or {})
    clin = dict(clinical_deterioration or {})
    out: dict[str, pd.DataFrame | ResponseError] = {}
    names: dict[str, str] = {}
    for definition in definitions:
        name = definition.strip().lower().replace("_", "-").replace("â", "a")
        if name not in HYPERPROGRESSION_DEFINITIONS:
            out[definition] = ResponseError(
                f"unknown definition {definition!r}; expected one of {list(HYPERPROGRESSION_DEFINITIONS)}",
                field="definition",
            )
        elif name == "kato" and not ttf:
            out[definition] = ResponseError(
                "the Kato definition needs time_to_treatment_failure_days", field="definition"
            )
        else:
            names[definition] = name
    if names:
        df = validate_table(table)  # with RECIST 1.1's target limits, as assess checks them
        subjects = subjects_from_table(df)
        recist = assess_validated(df, "recist1.1", subjects=subjects, check_measurability=False)
        for definition, name in names.items():
            out[definition] = _hyperprogression(name, subjects, recist, ttf, clin)
    return {d: out[d] for d in definitions}


def _hyperprogression(
    name: str,
    subjects: list[Any],
    recist: pd.DataFrame,
    ttf: dict[str, float],
    clin: dict[str, bool],
) -> pd.DataFrame:
    """Hyperprogression under the definition ``name`` (:func:`hyperprogression`) of the
    subjects of a validated table, with their RECIST 1.1 assessment ``recist``."""
    import pandas as pd

    out = []
    for s in subjects:
        targets = s.of_kind("target")
        idx = {v.index: v for v in s.visits}

        def tsum(v: Any, targets: list[Any] = targets) -> float:
            vals = [
                v.obs[t.lesion_id].diameter_mm if t.lesion_id in v.obs else math.nan
                for t in targets
            ]
            vals = [0.0 if (t.lesion_id in v.obs and v.obs[t.lesion_id].status == "absent") else x
                    for t, x in zip(targets, vals, strict=True)]  # fmt: skip
            return float(sum(vals)) if vals else math.nan

        row: dict[str, Any] = {"subject": s.subject, "definition": name}
        pre = idx.get(-1)
        base = idx[0]
        first = idx.get(1)
        sub_r = recist[recist["subject"] == s.subject].sort_values("days_from_baseline")
        first_resp = (
            str(sub_r[sub_r["days_from_baseline"] > 0]["response"].iloc[0]) if first else ""
        )
        row["first_response"] = first_resp
        nan = math.nan
        tgr_pre = tgr_on = tgk_pre = tgk_on = nan
        s0 = tsum(base)
        if first is not None:
            s1 = tsum(first)
            t_on = (first.date - base.date).days
            tgr_on, tgk_on = tumour_growth_rate(s0, s1, t_on), tumour_growth_kinetics(s0, s1, t_on)
        if pre is not None:
            sp = tsum(pre)
            t_pre = (base.date - pre.date).days
            tgr_pre, tgk_pre = (
                tumour_growth_rate(sp, s0, t_pre),
                tumour_growth_kinetics(sp, s0, t_pre),
            )
        tgr_ratio, tgk_ratio = _ratio(tgr_on, tgr_pre), _ratio(tgk_on, tgk_pre)
        row.update(
            tgr_pre_pct_per_month=tgr_pre,
            tgr_on_pct_per_month=tgr_on,
            tgr_ratio=tgr_ratio,
            tgk_pre_mm_per_month=tgk_pre,
            tgk_on_mm_per_month=tgk_on,
            tgk_ratio=tgk_ratio,
        )
        pd_first: bool | None = None if first_resp in ("NE", "") else first_resp == "PD"
        unmeasured = _unmeasured(targets, [(lab, v) for lab, v in
                                           (("pre-baseline", pre), ("baseline", base),
                                            ("first evaluation", first)) if v is not None])  # fmt: skip
        shrank = math.isfinite(tgr_pre) and tgr_pre < 0
        call: bool | None
        if first is None:
            call, reason = None, "no evaluation after baseline"
        elif name in ("champiat", "saada-bouzid", "ferrara", "kato") and pre is None:
            call, reason = None, "no pre-baseline scan: the pre-treatment growth is unknown"
        elif name == "champiat":
            call = _and(pd_first, _at_least(tgr_ratio, 2.0, shrank))
            reason = (
                f"first evaluation {first_resp}; TGR {fmt(tgr_pre)} -> {fmt(tgr_on)} %/month, "
                f"ratio {fmt(tgr_ratio)} (needs PD and >= 2)"
            )
        elif name == "saada-bouzid":
            call = _at_least(tgk_ratio, 2.0, shrank)
            reason = (
                f"TGK {fmt(tgk_pre)} -> {fmt(tgk_on)} mm/month, ratio {fmt(tgk_ratio)} (needs >= 2)"
            )
        elif name == "ferrara":
            delta = tgr_on - tgr_pre
            call = _and(pd_first, _at_least(delta, 50.0, False, strict=True))
            reason = (
                f"first evaluation {first_resp}; TGR {fmt(tgr_pre)} -> {fmt(tgr_on)} %/month, "
                f"delta {fmt(delta)} (needs PD and > 50)"
            )
        elif name == "kato":
            burden = 100.0 * (tsum(first) / s0 - 1.0) if s0 > 0 else math.nan
            t = ttf.get(s.subject)
            if t is None:
                call, reason = None, "time to treatment failure not given"
            else:
                call = _and(
                    t < 2 * DAYS_PER_MONTH,
                    _at_least(burden, 50.0, False, strict=True),
                    _at_least(tgk_ratio, 2.0, shrank, strict=True),
                )
                reason = (
                    f"TTF {fmt(t)} days (needs < 2 months), burden {fmt(burden)}% (needs > 50%), "
                    f"pace ratio {fmt(tgk_ratio)} (needs > 2)"
                )
        else:  # lo-russo
            call, reason = _lo_russo(s, base, first, tsum, ttf, clin)
        if call is None and unmeasured:
            reason = f"not evaluable: {unmeasured}; " + reason
        if shrank and name in ("champiat", "saada-bouzid", "kato"):
            reason += (
                "; the tumour shrank before treatment, so the growth ratio is undefined "
                "(not evaluable unless the call is already negative)"
            )
        elif math.isinf(tgr_ratio) or math.isinf(tgk_ratio):
            reason += "; the tumour did not grow before treatment, so the ratio is infinite"
        row["hyperprogression"] = call
        row["reason"] = reason
        out.append(row)
    cols = ["subject", "definition", "hyperprogression", "tgr_pre_pct_per_month",
            "tgr_on_pct_per_month", "tgr_ratio", "tgk_pre_mm_per_month", "tgk_on_mm_per_month",
            "tgk_ratio", "first_response", "reason"]  # fmt: skip
    return pd.DataFrame(out, columns=cols)


def _and(*terms: bool | None) -> bool | None:
    """Three-valued AND: False if any term is False, else None if any is unknown."""
    if any(t is False for t in terms):
        return False
    return None if any(t is None for t in terms) else True


def _at_least(value: float, limit: float, undefined: bool, *, strict: bool = False) -> bool | None:
    """``value >= limit`` (``>`` when strict), None when ``value`` is NaN or ``undefined``."""
    if undefined or math.isnan(value):
        return None
    return bool(value > limit) if strict else bool(value >= limit - 1e-9 * abs(limit))


def _unmeasured(targets: list[Any], visits: list[tuple[str, Any]]) -> str:
    """Name the target lesions without a diameter at each visit ('' when all are measured)."""
    parts = []
    for label, v in visits:
        miss = [
            t.lesion_id
            for t in targets
            if t.lesion_id not in v.obs
            or (v.obs[t.lesion_id].status != "absent"
                and not math.isfinite(v.obs[t.lesion_id].diameter_mm))
        ]  # fmt: skip
        if miss:
            parts.append(f"target lesion(s) {', '.join(miss)} not measured at the {label}")
    return "; ".join(parts)


def _ratio(on: float, pre: float) -> float:
    if not (math.isfinite(on) and math.isfinite(pre)):
        return math.nan
    if pre <= 0:
        return math.inf if on > 0 else math.nan
    return on / pre


def _lo_russo(
    s: Any, base: Any, first: Any, tsum: Any, ttf: dict[str, float], clin: dict[str, bool]
) -> tuple[bool | None, str]:
    items: list[tuple[str, bool]] = []
    t = ttf.get(s.subject)
    items.append(
        (
            "TTF < 2 months" + ("" if t is not None else " (not given)"),
            t is not None and t < 2 * DAYS_PER_MONTH,
        )
    )
    s0 = tsum(base)
    burden = 100.0 * (tsum(first) / s0 - 1.0) if s0 > 0 else math.nan
    unknown = math.isnan(burden)
    items.append((f"target sum +{fmt(burden)}% (>= 50%)", bool(burden >= 50.0)))
    involved = {les.organ for les in s.lesions.values() if les.kind != "new" and les.organ}
    new = [les for les in s.of_kind("new") if les.lesion_id in first.obs]
    per_organ: dict[str, int] = {}
    for les in new:
        if les.organ in involved:
            per_organ[les.organ] = per_organ.get(les.organ, 0) + 1
    items.append(("≥ 2 new lesions in an involved organ", any(n >= 2 for n in per_organ.values())))
    new_organs = {les.organ for les in new if les.organ and les.organ not in involved}
    items.append(
        (
            f"spread to a new organ {sorted(new_organs)}"
            if new_organs
            else "spread to a new organ",
            bool(new_organs),
        )
    )
    c = clin.get(s.subject)
    items.append(("clinical deterioration" + ("" if c is not None else " (not given)"), bool(c)))
    met = [txt for txt, ok in items if ok]
    call: bool | None = len(met) >= 3
    text = f"{len(met)} of 5 criteria met (needs 3): " + ("; ".join(met) or "none")
    if unknown and len(met) == 2:  # the unknown target-sum item decides
        call = None
        text += "; the target-sum change is unknown"
    return call, text


def durable_response(
    assessment: pd.DataFrame, *, months: float = 6.0, begin_within_months: float | None = 12.0
) -> pd.DataFrame:
    """Durable response: an objective response held continuously for at least ``months``.

    "Durable response rate (DRR), defined as the rate of objective response (complete response
    [CR] or partial response [PR]) lasting continuously for at least 6 months and beginning
    within the first 12 months of therapy" (Kaufman HL, Amatruda T, Reid T, et al. Systemic
    versus local responses in melanoma patients treated with talimogene laherparepvec from a
    multi-institutional phase II study. J Immunother Cancer 2016;4:12.
    doi:10.1186/s40425-016-0116-y; Andtbacka RHI, Kaufman HL, Collichio F, et al. Talimogene
    laherparepvec improves durable response rate in patients with advanced melanoma. J Clin
    Oncol 2015;33:2780-2788. doi:10.1200/JCO.2014.58.3377). The duration is measured from the
    first visit with CR/PR (iCR/iPR) to the last visit of the same unbroken run of responses
    (NE visits neither break nor extend it), so it is a lower bound of the true duration.
    Treatment starts at the baseline (``days_from_baseline`` 0): a run counts only when its
    first response visit is within ``begin_within_months`` of it (``None``: no limit).

    Returns
    -------
    pandas.DataFrame
        One row per subject: ``subject``, ``durable`` (bool), ``response_start``,
        ``response_end`` (visits), ``duration_days``, ``reason``.
    """
    import pandas as pd

    need = months * DAYS_PER_MONTH
    latest = math.inf if begin_within_months is None else begin_within_months * DAYS_PER_MONTH
    out = []
    for subject, sub in assessment.groupby("subject", sort=True):
        sub = sub.sort_values("days_from_baseline")
        best: tuple[float, str, str] = (-1.0, "", "")
        late: tuple[float, str, int] | None = None  # longest run that began too late
        start: tuple[int, str] | None = None
        last: tuple[int, str] | None = None
        for rec in sub.to_dict("records"):
            r, d, v = rec["response"], int(rec["days_from_baseline"]), str(rec["visit"])
            if r in _RESPONSE:
                if start is None:
                    start = (d, v)
                last = (d, v)
            elif r == "NE":
                continue
            else:
                start = last = None
            if start is None or last is None:
                continue
            dur_run = float(last[0] - start[0])
            if start[0] > latest + 1e-9:
                if late is None or dur_run > late[0]:
                    late = (dur_run, start[1], start[0])
            elif dur_run > best[0]:
                best = (dur_run, start[1], last[1])
        dur, v0, v1 = best
        durable = dur >= need
        reason = (
            f"response from visit {v0} to {v1}: {fmt(dur)} days (needs {fmt(need)})"
            if dur >= 0
            else "no objective response"
            + ("" if late is None else f" beginning within {fmt(latest)} days of treatment start")
        )
        if late is not None and late[0] >= need and not durable:
            reason += (
                f"; the response from visit {late[1]} lasted {fmt(late[0])} days but began "
                f"{late[2]} days after treatment start (must begin within "
                f"{fmt(latest / DAYS_PER_MONTH)} months; Kaufman et al. 2016)"
            )
        out.append(
            {
                "subject": subject,
                "durable": bool(durable),
                "response_start": v0,
                "response_end": v1,
                "duration_days": dur if dur >= 0 else np.nan,
                "reason": reason,
            }
        )
    return pd.DataFrame(
        out,
        columns=["subject", "durable", "response_start", "response_end", "duration_days", "reason"],
    )
