"""The ``assess`` step: response under the criteria of ``study.yaml``, immunotherapy patterns.

Reads the per-lesion, per-visit table of ``measure`` (:func:`tumorscope.layout.
lesion_table_path`), writes the subject's assessments and patterns (Parquet,
:func:`~tumorscope.layout.assessments_path`, :func:`~tumorscope.layout.patterns_path`) and
returns their rows (tables ``assessments`` and ``patterns``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import layout
from ..errors import DataError
from ..files import json_default
from .step import Context, StepOutput, Unit, Upstream, Write, _manifest_file

if TYPE_CHECKING:
    import pandas as pd

    from ..io import Study

__all__ = ["assess_inputs", "assessment_rows", "pattern_rows", "run_assess"]

#: Columns of ``response.assess`` that are columns of the ``assessments`` table; the others go
#: into its ``details``.
_ASSESSMENT_COLUMNS = {
    "subject",
    "visit",
    "response",
    "criteria",
    "sum_mm",
    "reason",
    "change_from_baseline_pct",
    "change_from_nadir_pct",
}


def assess_inputs(ctx: Context, study: Study, unit: Unit) -> list[Path]:
    """The manifest (criteria, baseline); the lesion table comes from ``measure``."""
    return [_manifest_file(ctx)]


def run_assess(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """Response under every criterion ``study.yaml`` names (default RECIST 1.1).

    The lesion table of ``measure`` goes through :func:`tumorscope.response.from_lesion_table`
    with the manifest's baseline visit (so pre-baseline scans are not taken as baseline) and
    ``missing="absent"`` (a lesion not segmented at a later visit has disappeared).
    """
    import pandas as pd

    from .. import response
    from ..volume import atomic_write

    s = unit.subject
    lesions = pd.read_parquet(layout.lesion_table_path(ctx.out_dir, s))
    if lesions.empty:
        raise DataError(
            "no lesion was measured at any visit, nothing to assess",
            file=ctx.out_rel(layout.lesion_table_path(ctx.out_dir, s)),
        )
    baseline = {s: study.subjects[s].baseline.id}
    rt_end = study.subjects[s].treatment.radiotherapy_end_date  # RANO 2.0's window
    table = response.from_lesion_table(
        lesions,
        baseline=baseline,
        missing="absent",
        radiotherapy_end=None if rt_end is None else {s: rt_end},
    )
    from ..study.store import NotIn
    from .assess_pet import PET_CRITERIA, pet_assessments
    from .organs import ORGAN_PATTERNS

    # PERCIST reads the PET tables (assess_pet.py), the other criteria the MRI lesion table
    crits = [c for c in (study.criteria or ("recist1.1",)) if c not in PET_CRITERIA]
    crits = crits or ["recist1.1"]
    raw = {c: response.assess(table, criteria=c) for c in crits}
    assessed = assess_all(table, crits, raw=raw)
    rows = assessment_rows(table, crits, assessed=assessed)
    main = "irecist" if "irecist" in crits else crits[0]
    immune = raw[main]  # as assessed above, before the visits after PD are relabelled
    prows, notes = pattern_rows(s, table, immune)
    prows += response_rows(s, assessed, immune)
    crows, cnotes = candidate_rows(ctx, s, lesions, baseline, rt_end)
    prows += crows
    notes += cnotes
    pet_rows, pet_prows, pet_notes = pet_assessments(ctx, study, unit, lesions)
    rows, prows, notes = rows + pet_rows, prows + pet_prows, notes + pet_notes
    # DSC perfusion as supporting evidence (a pattern; the call stays the criteria's)
    from ..response.perfusion import perfusion_treatment_effect

    tidy = pd.read_parquet(layout.measurements_path(ctx.out_dir, s))
    thr = ctx.options.perfusion_rcbv_threshold
    prows += [_plain_row(r) for r in perfusion_treatment_effect(lesions, tidy, threshold=thr)]
    out = layout.assessments_path(ctx.out_dir, s)
    pout = layout.patterns_path(ctx.out_dir, s)
    for path, data in ((out, rows), (pout, prows)):
        frame = pd.DataFrame(data)
        if "details" in frame:
            frame["details"] = [json.dumps(d, sort_keys=True) for d in frame["details"]]
        atomic_write(path, lambda tmp, f=frame: f.to_parquet(tmp, index=False))
    return StepOutput(
        files=[out, pout],
        writes=[
            Write("assessments", {"subject": s}, rows),
            # every pattern of the subject but the organ watch's (its own step owns them)
            Write("patterns", {"subject": s, "pattern": NotIn(ORGAN_PATTERNS)}, prows),
        ],
        notes=notes,
    )


def assess_all(
    table: pd.DataFrame,
    criteria: list[str],
    *,
    raw: Mapping[str, pd.DataFrame] | None = None,
) -> dict[str, pd.DataFrame]:
    """Every visit under every criterion, the visits after a conventional criterion's
    progression labelled ``"after PD"`` (:func:`tumorscope.response.best.
    stop_at_progression`, which returns a copy). ``raw``: the criteria's
    :func:`tumorscope.response.assess` of ``table`` when the caller has them already."""
    from .. import response
    from ..response.best import stop_at_progression

    def of(c: str) -> pd.DataFrame:
        return raw[c] if raw is not None else response.assess(table, criteria=c)

    return {c: stop_at_progression(of(c)) for c in criteria}


def assessment_rows(
    table: pd.DataFrame,
    criteria: list[str],
    *,
    assessed: Mapping[str, pd.DataFrame] | None = None,
) -> list[dict[str, Any]]:
    """Rows of the ``assessments`` table: every visit under every criterion.

    Visits after RECIST 1.1 (RANO, mRECIST, Choi) progression read ``"after PD"``; the call
    the rules would have made is kept in ``details["rescored_response"]``.
    """
    if assessed is None:
        assessed = assess_all(table, criteria)
    rows: list[dict[str, Any]] = []
    for crit in criteria:
        for r in assessed[crit].to_dict("records"):
            if not r.get("rescored_response"):
                r.pop("rescored_response", None)
            details = {k: v for k, v in r.items() if k not in _ASSESSMENT_COLUMNS}
            rows.append(
                {
                    "subject": str(r["subject"]),
                    "visit": str(r["visit"]),
                    "criteria": crit,
                    "response": r.get("response"),
                    "target_sum_mm": r.get("sum_mm"),
                    "change_from_baseline_pct": r.get("change_from_baseline_pct"),
                    "change_from_nadir_pct": r.get("change_from_nadir_pct"),
                    "reason": r.get("reason"),
                    "details": _plain(details),
                }
            )
    return rows


def pattern_rows(
    subject: str, table: pd.DataFrame, assessment: pd.DataFrame
) -> tuple[list[dict[str, Any]], list[str]]:
    """Immunotherapy patterns of one subject (``tumorscope.response.patterns``).

    Pseudoprogression and durable response are read from ``assessment`` (iRECIST when the
    manifest names it); mixed response and hyperprogression from the measurement table,
    hyperprogression under each of its published definitions (``"hyperprogression"`` is
    Champiat's, the others ``"hyperprogression <definition>"``, :data:`tumorscope.response.
    patterns.HYPERPROGRESSION_DEFINITIONS`). A pattern the data cannot support (e.g.
    hyperprogression without a pre-baseline scan, Kato's without the time to treatment
    failure) gets ``flag=None`` with the reason.
    """
    import functools

    import pandas as pd

    from ..errors import ResponseError
    from ..response import patterns as pat

    # every hyperprogression definition from one validation and RECIST assessment
    each = functools.cache(lambda: pat.hyperprogression_each(table))

    def hyper(definition: str) -> pd.DataFrame:
        try:
            result = each()[definition]
        except ResponseError as exc:  # the table breaks a rule: no definition is evaluated
            result = exc
        if isinstance(result, ResponseError):
            raise result
        return result

    calls = (
        (
            "pseudoprogression",
            lambda: pat.pseudoprogression(assessment),
            "pseudoprogression",
            "progression_visit",
        ),
        ("durable response", lambda: pat.durable_response(assessment), "durable", "response_start"),
        ("mixed response", lambda: pat.mixed_response(table), "mixed", "visit"),
        ("hyperprogression", lambda: hyper("champiat"), "hyperprogression", None),
        *(
            (
                f"hyperprogression {d}",
                lambda d=d: hyper(d),
                "hyperprogression",
                None,
            )
            for d in pat.HYPERPROGRESSION_DEFINITIONS
            if d != "champiat"
        ),
    )
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for name, call, flag_col, visit_col in calls:
        try:
            res = call()
        except ResponseError as exc:
            notes.append(f"{name} not evaluated: {exc}")
            if name.startswith("hyperprogression"):  # every definition gets its verdict
                rows.append(
                    {
                        "subject": subject,
                        "pattern": name,
                        "visit": "",
                        "flag": None,
                        "reason": f"not evaluable: {exc}",
                        "details": {},
                    }
                )
            continue
        for r in res.to_dict("records"):
            if str(r["subject"]) != subject:
                continue
            flag = r.get(flag_col)
            visit = str(r.get(visit_col) or "") if visit_col else ""
            if name != "mixed response" and not flag:
                visit = ""
            known = {"subject", flag_col, "reason", "visit"}
            rows.append(
                {
                    "subject": subject,
                    "pattern": name,
                    "visit": visit,
                    "flag": None if flag is None or pd.isna(flag) else bool(flag),
                    "reason": r.get("reason"),
                    "details": _plain({k: v for k, v in r.items() if k not in known}),
                }
            )
    return rows, notes


def response_rows(
    subject: str, assessed: Mapping[str, pd.DataFrame], immune: pd.DataFrame
) -> list[dict[str, Any]]:
    """Best overall response per criterion and the conventional-vs-immune disagreements, as
    rows of the ``patterns`` table (subject level, ``visit`` "").

    ``pattern`` is ``"best response <criteria>"`` (``flag`` true, ``reason`` how it was
    reached, ``details``: ``best_response``, ``visit``, ``confirmed_at``, ``confirmation``)
    or ``"disagreement <conventional>/<immune>"`` (``flag``: the best responses differ; the
    reason names the pseudoprogression where the immune criterion found one), from
    :mod:`tumorscope.response.best`.
    """
    import pandas as pd

    from ..response import patterns as pat
    from ..response.best import (
        BEST_PREFIX,
        DISAGREEMENT_PREFIX,
        best_responses,
        disagreements,
    )

    cols = ["subject", "visit", "days_from_baseline", "response", "reason", "criteria"]
    stacked = pd.concat([a[cols] for a in assessed.values()], ignore_index=True)
    best = best_responses(stacked[stacked["subject"].astype(str) == subject])
    rows: list[dict[str, Any]] = []
    for r in best.to_dict("records"):
        rows.append(
            {
                "subject": subject,
                "pattern": f"{BEST_PREFIX}{r['criteria']}",
                "visit": "",
                "flag": True,
                "reason": r["reason"],
                "details": _plain(
                    {
                        k: r[k]
                        for k in (
                            "criteria",
                            "best_response",
                            "visit",
                            "confirmed_at",
                            "confirmation",
                        )
                    }
                ),
            }
        )
    for r in disagreements(best, pat.pseudoprogression(immune)).to_dict("records"):
        rows.append(
            {
                "subject": subject,
                "pattern": f"{DISAGREEMENT_PREFIX}{r['conventional']}/{r['immune']}",
                "visit": "",
                "flag": bool(r["disagree"]),
                "reason": r["reason"],
                "details": _plain(
                    {
                        k: r[k]
                        for k in ("conventional", "immune", "conventional_best", "immune_best")
                    }
                ),
            }
        )
    return rows


#: Functional markers of a pseudoprogression candidate: map, statistic column of the
#: measurement table, direction of response.
CANDIDATE_MARKERS = (
    ("adc.ADC", "ADC_mean", "increase"),
    ("extended_tofts.Ktrans", "Ktrans_mean", "decrease"),
)


def candidate_rows(
    ctx: Context, subject: str, lesions: pd.DataFrame, baseline: dict[str, str], rt_end: Any
) -> tuple[list[dict[str, Any]], list[str]]:
    """Pseudoprogression candidates (:func:`tumorscope.response.patterns.
    pseudoprogression_candidates`) as ``patterns`` rows ``"pseudoprogression candidate"``,
    one per visit and lesion that grew ≥ 20 % while a marker changed beyond its repeatability
    in the direction of response.

    The markers are the lesion means of ADC (rise) and Ktrans (fall) from ``measure``; the
    relative repeatability of each is the ``functional`` step's threshold (its RC, mm²/s or
    1/min) over the mean of the subject's baseline lesion means, so the same evidence rule
    as the functional maps. A marker without a threshold is left out (noted).
    """
    import pandas as pd

    from .. import response
    from ..errors import ResponseError
    from ..response.patterns import pseudoprogression_candidates
    from .functional import functional_table_path

    tidy_path = layout.measurements_path(ctx.out_dir, subject)
    meta_path = functional_table_path(ctx.out_dir, subject).with_suffix(".json")
    if not tidy_path.exists() or not meta_path.exists():
        return [], ["pseudoprogression candidates not evaluated: no functional thresholds"]
    thresholds = json.loads(meta_path.read_text()).get("thresholds", {})
    tidy = pd.read_parquet(tidy_path)
    table = lesions.copy()
    base_visit = baseline[subject]
    rc_pct: dict[str, float] = {}
    markers: dict[str, Any] = {}
    for name, col, direction in CANDIDATE_MARKERS:
        thr = thresholds.get(name)
        means = tidy[(tidy["map"] == name) & (tidy["statistic"] == "mean")]
        if thr is None or means.empty:
            continue
        ref = means[means["visit"] == base_visit]["value"].astype(float)
        if not len(ref) or not float(ref.mean()) > 0:
            continue
        rc_pct[col] = 100.0 * float(thr["threshold"]) / float(ref.mean())
        markers[col] = direction
        key = dict(
            zip(zip(means["visit"], means["lesion_id"], strict=True), means["value"], strict=True)
        )
        table[col] = [
            key.get((v, lid)) for v, lid in zip(table["visit"], table["lesion_id"], strict=True)
        ]
    if not markers:
        return [], ["pseudoprogression candidates not evaluated: no marker with a threshold"]
    mt = response.from_lesion_table(
        table,
        baseline=baseline,
        missing="absent",
        radiotherapy_end=None if rt_end is None else {subject: rt_end},
    )
    try:
        cands = pseudoprogression_candidates(mt, rc_pct=rc_pct, markers=markers)
    except ResponseError as exc:
        return [], [f"pseudoprogression candidates not evaluated: {exc}"]
    rows = []
    for r in cands.to_dict("records"):
        rows.append(
            {
                "subject": subject,
                "pattern": f"pseudoprogression candidate {r['lesion_id']}"[:64],
                "visit": str(r["visit"]),
                "flag": bool(r["candidate"]),
                "reason": r["reason"],
                "details": _plain(
                    {k: v for k, v in r.items() if k not in ("subject", "visit", "reason")}
                    | {"rc_pct": rc_pct}
                ),
            }
        )
    return rows, []


def _plain_row(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "details": _plain(row["details"])}


def _details_default(obj: Any) -> Any:
    """:func:`tumorscope.files.json_default`, and dates and timestamps of the response tables
    as their text (``2024-01-02 00:00:00``; ``NaT``)."""
    if isinstance(obj, dt.date):  # datetime, pandas Timestamp and NaT too
        return str(obj)
    return json_default(obj)


def _plain(details: dict[str, Any]) -> Any:
    """Details as plain JSON values (what the database's JSON column stores)."""
    return json.loads(json.dumps(details, default=_details_default))
