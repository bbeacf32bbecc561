"""The ``assess`` step: response under the criteria of ``study.yaml``, immunotherapy patterns.

Reads the per-lesion, per-visit table of ``measure`` (:func:`tumorscope.layout.
lesion_table_path`), writes the subject's assessments and patterns (Parquet,
:func:`~tumorscope.layout.assessments_path`, :func:`~tumorscope.layout.patterns_path`) and
returns their rows (tables ``assessments`` and ``patterns``).
"""

from __future__ import annotations

import datetime as dt
import json
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
    crits = list(study.criteria or ("recist1.1",))
    rows = assessment_rows(table, crits)
    main = "irecist" if "irecist" in crits else crits[0]
    prows, notes = pattern_rows(s, table, response.assess(table, criteria=main))
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
            Write("patterns", {"subject": s}, prows),
        ],
        notes=notes,
    )


def assessment_rows(table: pd.DataFrame, criteria: list[str]) -> list[dict[str, Any]]:
    """Rows of the ``assessments`` table: every visit under every criterion."""
    from .. import response

    rows: list[dict[str, Any]] = []
    for crit in criteria:
        res = response.assess(table, criteria=crit)
        for r in res.to_dict("records"):
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
    manifest names it); mixed response and hyperprogression (Champiat's definition) from the
    measurement table. A pattern the data cannot support (e.g. hyperprogression without a
    pre-baseline scan) gets ``flag=None`` with the reason.
    """
    import pandas as pd

    from ..errors import ResponseError
    from ..response import patterns as pat

    calls = (
        (
            "pseudoprogression",
            lambda: pat.pseudoprogression(assessment),
            "pseudoprogression",
            "progression_visit",
        ),
        ("durable response", lambda: pat.durable_response(assessment), "durable", "response_start"),
        ("mixed response", lambda: pat.mixed_response(table), "mixed", "visit"),
        ("hyperprogression", lambda: pat.hyperprogression(table), "hyperprogression", None),
    )
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for name, call, flag_col, visit_col in calls:
        try:
            res = call()
        except ResponseError as exc:
            notes.append(f"{name} not evaluated: {exc}")
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
