"""Best overall response per criterion, RECIST 1.1 stopping at progression, and the
disagreement of conventional and immune criteria (tumorscope.response.best).

The expected calls follow the published rules by hand: RECIST 1.1 section 4.4.1 (best
response recorded until progression), iRECIST (Seymour et al. 2017: iUPD followed by iPR
without iCPD resets the bar), RANO 2.0 (CR/PR confirmed ≥ 4 weeks later).
"""

from __future__ import annotations

import pandas as pd
import pytest

from tumorscope.response import assess
from tumorscope.response.best import (
    AFTER_PD,
    best_responses,
    disagreements,
    stop_at_progression,
)
from tumorscope.response.patterns import pseudoprogression


def _table(sizes: dict[str, list[float]]) -> pd.DataFrame:
    """One target lesion per subject, visits 8 weeks apart, the first the baseline."""
    rows = []
    for subject, diam in sizes.items():
        for k, d in enumerate(diam):
            rows.append(
                {
                    "subject": subject,
                    "visit": f"0{k + 1}",
                    "date": (pd.Timestamp("2026-01-05") + pd.Timedelta(days=56 * k)).date(),
                    "lesion_id": "L1",
                    "kind": "target",
                    "diameter_mm": d,
                }
            )
    return pd.DataFrame(rows)


def _both(t: pd.DataFrame) -> pd.DataFrame:
    return stop_at_progression(
        pd.concat([assess(t, criteria="recist1.1"), assess(t, criteria="irecist")])
    )


def test_pseudoprogression_is_recist_pd_and_irecist_ipr() -> None:
    # +30 % at visit 02 (PD / iUPD), then -40 % from baseline (would be PR / is iPR)
    a = _both(_table({"002": [50, 65, 30, 28]}))
    rec = a[a["criteria"] == "recist1.1"].set_index("visit")
    assert rec.loc["02", "response"] == "PD"
    assert list(rec.loc[["03", "04"], "response"]) == [AFTER_PD, AFTER_PD]
    assert list(rec.loc[["03", "04"], "rescored_response"]) == ["PR", "PR"]
    assert "stops at progression (PD at visit 02)" in rec.loc["03", "reason"]
    assert "irecist" in rec.loc["03", "reason"]
    irc = a[a["criteria"] == "irecist"].set_index("visit")
    assert irc.loc["02", "response"] == "iUPD" and irc.loc["03", "response"] == "iPR"
    assert (irc["rescored_response"] == "").all()  # immune criteria go on

    best = best_responses(a).set_index("criteria")
    assert best.loc["recist1.1", "best_response"] == "PD"
    assert best.loc["recist1.1", "visit"] == "02"
    assert best.loc["irecist", "best_response"] == "iPR"
    assert best.loc["irecist", "visit"] == "03"

    pp = pseudoprogression(a[a["criteria"] == "irecist"])
    d = disagreements(best.reset_index(), pp)
    assert len(d) == 1 and bool(d["disagree"].iloc[0])
    assert d["conventional_best"].iloc[0] == "PD" and d["immune_best"].iloc[0] == "iPR"
    assert "pseudoprogression: iUPD at visit 02 followed by iPR at visit 03" in d["reason"].iloc[0]


def test_response_before_progression_stays_best() -> None:
    # PR at 02 (-40 %), PD at 03 (+25 % from the nadir), after PD at 04
    a = _both(_table({"001": [50, 30, 37.5, 20]}))
    best = best_responses(a).set_index("criteria")
    assert best.loc["recist1.1", "best_response"] == "PR"
    assert best.loc["irecist", "best_response"] == "iPR"
    d = disagreements(best.reset_index())
    assert not bool(d["disagree"].iloc[0])  # PR and iPR have the same rank
    rec = a[a["criteria"] == "recist1.1"].set_index("visit")
    assert rec.loc["04", "response"] == AFTER_PD


def test_no_progression_nothing_relabelled() -> None:
    a = _both(_table({"003": [50, 45, 44]}))
    assert AFTER_PD not in set(a["response"])
    best = best_responses(a).set_index("criteria")
    assert best.loc["recist1.1", "best_response"] == "SD"
    assert "no confirmation" in best.loc["recist1.1", "confirmation"]


@pytest.mark.parametrize(("confirm", "expected"), [(False, "PR"), (True, "SD")])
def test_confirmation_rule(confirm: bool, expected: str) -> None:
    # PR at 02 only, SD at 03: confirmed PR needs PR or better ≥ 28 days later
    a = stop_at_progression(assess(_table({"004": [50, 30, 45]}), criteria="recist1.1"))
    best = best_responses(a, confirm=confirm)
    assert best["best_response"].iloc[0] == expected
    assert ("confirmed at least 28 days" in best["confirmation"].iloc[0]) is confirm
