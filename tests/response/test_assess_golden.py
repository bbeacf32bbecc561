"""The ``assess`` step's tables equal those the code before issue 21's speed-ups computed.

The rows of ``assessments`` and ``patterns`` (every criterion, the immunotherapy patterns,
every hyperprogression definition, best responses and disagreements) of a small lesion table
are compared, as canonical JSON text, with ``data/assess_golden.json``. That file was written
by the code of main at f39b77f (per-cell validation, one ``hyperprogression`` call per
definition, the main criterion assessed twice), an implementation independent of the one
tested here (lists instead of ``DataFrame.at``, :func:`~tumorscope.response.patterns.
hyperprogression_each`). Regenerate only for an intended change of the rules::

    PYTHONPATH=<the reference code>/src python tests/response/test_assess_golden.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

GOLDEN = Path(__file__).parent / "data" / "assess_golden.json"


def lesion_table() -> pd.DataFrame:
    """Two subjects: A with a pre-baseline scan, growth, a new lesion in a new organ and a
    later shrinkage (pseudoprogression under iRECIST); B without one, a response, a lesion
    without an organ and a node."""
    rows: list[dict[str, Any]] = []

    def add(s: str, v: str, d: str, lid: str, target: bool, ld: float, sa: float, **kw: Any):
        rows.append(
            {
                "subject": s,
                "visit": v,
                "date": d,
                "lesion_id": lid,
                "target": target,
                "nodal": kw.get("nodal", False),
                "organ": kw.get("organ", "liver"),
                "longest_diameter_mm": ld,
                "short_axis_mm": sa,
                "volume_ml": kw.get("volume", ld**3 / 2000),
                "present": kw.get("present", True),
            }
        )

    a = [("00", "2025-12-01"), ("01", "2026-01-05"), ("02", "2026-02-16"), ("03", "2026-03-30")]
    a += [("04", "2026-05-11"), ("05", "2026-06-22")]
    t1 = [30.0, 34.0, 48.0, 52.0, 30.0, 22.0]
    t2 = [15.0, 16.0, 21.0, 24.0, 15.0, 10.0]
    for (v, d), x1, x2 in zip(a, t1, t2, strict=True):
        add("A", v, d, "T1", True, x1, 0.7 * x1)
        add("A", v, d, "T2", True, x2, 0.6 * x2, organ="lung")
        add("A", v, d, "N1", False, 12.0, 8.0)
        if v in ("03", "04"):
            add("A", v, d, "X1", False, 9.0 if v == "03" else 6.0, 5.0, organ="bone")
    b = [("01", "2026-01-09"), ("02", "2026-02-20"), ("03", "2026-04-03"), ("04", "2026-05-15")]
    for (v, d), x in zip(b, [40.0, 30.0, 24.0, 25.0], strict=True):
        add("B", v, d, "T1", True, x, 0.8 * x, organ="")
        add("B", v, d, "L7", True, 28.0, 0.6 * x, nodal=True, organ="node")
        if v != "04":
            add("B", v, d, "N2", False, 11.0, 7.0, present=v != "03")
    return pd.DataFrame(rows)


def step_rows() -> dict[str, Any]:
    """The rows ``run_assess`` builds from the measurement table (no files)."""
    from tumorscope import response
    from tumorscope.pipeline.assess import (
        assess_all,
        assessment_rows,
        pattern_rows,
        response_rows,
    )

    table = response.from_lesion_table(
        lesion_table(), baseline={"A": "01", "B": "01"}, missing="absent"
    )
    crits = ["recist1.1", "irecist", "choi"]
    assessed = assess_all(table, crits)
    immune = response.assess(table, criteria="irecist")
    out: dict[str, Any] = {"assessments": assessment_rows(table, crits, assessed=assessed)}
    for s in ("A", "B"):
        prows, notes = pattern_rows(s, table, immune)
        out[f"patterns {s}"] = prows + response_rows(s, assessed, immune)
        out[f"notes {s}"] = notes
    return out


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, indent=1, default=str)


def test_assess_rows_equal_the_reference_implementation() -> None:
    expected = GOLDEN.read_text()
    got = canonical(step_rows())
    assert got == expected
    # the golden rows exercise what the speed-ups touched: every hyperprogression definition
    # evaluated from a pre-baseline scan, Kato's unevaluable note, a new organ
    rows = json.loads(expected)["patterns A"]
    hyper = {r["pattern"]: r["flag"] for r in rows if r["pattern"].startswith("hyperprog")}
    assert len(hyper) == 5 and any(v is not None for v in hyper.values())
    assert any("kato" in n for n in json.loads(expected)["notes A"])


def test_hyperprogression_each_matches_one_definition_at_a_time() -> None:
    from tumorscope import response
    from tumorscope.errors import ResponseError
    from tumorscope.response import patterns as pat

    table = response.from_lesion_table(lesion_table(), baseline={"A": "01", "B": "01"})
    each = pat.hyperprogression_each(table, definitions=(*pat.HYPERPROGRESSION_DEFINITIONS, "x"))
    for d, res in each.items():
        try:
            one = pat.hyperprogression(table, definition=d)
        except ResponseError as exc:
            assert isinstance(res, ResponseError) and str(res) == str(exc)
        else:
            assert isinstance(res, pd.DataFrame) and res.equals(one)
    assert isinstance(each["kato"], ResponseError) and isinstance(each["x"], ResponseError)


if __name__ == "__main__":
    GOLDEN.write_text(canonical(step_rows()))
    print(f"wrote {GOLDEN}")
