"""Property tests over random valid measurement tables (Hypothesis)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tumorscope.response import assess

CRITERIA = ("recist1.1", "irecist", "rano", "irano", "mrecist", "choi")
PROGRESSION = {"PD", "iUPD", "iCPD", "preliminary PD"}
ALLOWED = {
    "baseline", "pre-baseline", "CR", "PR", "SD", "PD", "NE", "non-CR/non-PD", "iCR", "iPR",
    "iSD", "iUPD", "iCPD", "non-iCR/non-iUPD", "preliminary PD",
}  # fmt: skip

SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


@st.composite
def tables(draw: Any, *, shrinking: bool = False, max_targets: int = 5) -> pd.DataFrame:
    """A valid table of 1-2 subjects; with ``shrinking`` every lesion only shrinks."""
    rows = []
    for s in range(draw(st.integers(1, 2))):
        n_visits = draw(st.integers(2, 5))
        gaps = draw(st.lists(st.integers(14, 90), min_size=n_visits - 1, max_size=n_visits - 1))
        days = [0]
        for g in gaps:
            days.append(days[-1] + g)
        dates = [(date(2026, 1, 5) + timedelta(days=d)).isoformat() for d in days]
        n_t = draw(st.integers(1, max_targets))
        for k in range(n_t):
            nodal = draw(st.booleans())
            d = draw(st.floats(15.0 if nodal else 10.0, 80.0)).__round__(1)
            p = draw(st.floats(10.0, 80.0)).__round__(1)
            for v in range(n_visits):
                if v > 0:
                    if shrinking:
                        f = draw(st.floats(0.0, 1.0))
                        d, p = round(d * f, 1), round(p * f, 1)
                    else:
                        d = round(draw(st.floats(0.0, 120.0)), 1)
                        p = round(draw(st.floats(0.0, 120.0)), 1)
                        if draw(st.integers(0, 9)) == 0:
                            continue  # not assessed
                row = _row(s, v, dates[v], f"T{k}", "target", nodal, d, p, None)
                row["organ"] = f"organ{k}"
                rows.append(row)
        for k in range(draw(st.integers(0, 2))):
            gone = False
            for v in range(n_visits):
                if v == 0:
                    status = "present"
                elif shrinking:
                    gone = gone or draw(st.booleans())
                    status = "absent" if gone else "present"
                else:
                    status = draw(
                        st.sampled_from(["present", "absent", "unequivocal progression", None])
                    )
                    if status is None:
                        continue
                rows.append(_row(s, v, dates[v], f"NT{k}", "non-target", False, None, None, status))
        if not shrinking:
            for k in range(draw(st.integers(0, 2))):
                first = draw(st.integers(1, n_visits - 1))
                for v in range(first, n_visits):
                    size = round(draw(st.floats(3.0, 40.0)), 1)
                    rows.append(_row(s, v, dates[v], f"X{k}", "new", False, size, size, "present"))
    return pd.DataFrame(rows)


def _row(s, v, d, lid, kind, nodal, diam, perp, status) -> dict[str, Any]:
    return {
        "subject": f"S{s}",
        "visit": f"V{v}",
        "date": d,
        "lesion_id": lid,
        "kind": kind,
        "nodal": nodal,
        "diameter_mm": diam,
        "perpendicular_mm": perp,
        "status": status,
    }


def _run(t: pd.DataFrame, criteria: str) -> pd.DataFrame:
    if criteria == "mrecist":  # the whole lesion is viable
        t = t.assign(viable_diameter_mm=t["diameter_mm"])
    return assess(t, criteria=criteria, check_measurability=True)


@SETTINGS
@given(tables(max_targets=3), st.sampled_from(CRITERIA))
def test_every_visit_gets_exactly_one_known_response(t, criteria):
    r = _run(t, criteria)
    expected = t[["subject", "visit"]].drop_duplicates()
    assert len(r) == len(expected)
    assert not r.duplicated(["subject", "visit"]).any()
    assert set(r["response"]) <= ALLOWED
    assert r["reason"].map(lambda x: isinstance(x, str) and len(x) > 0).all()


@SETTINGS
@given(tables(shrinking=True, max_targets=3), st.sampled_from(CRITERIA))
def test_shrinking_every_lesion_never_yields_progression(t, criteria):
    r = _run(t, criteria)
    assert not set(r["response"]) & PROGRESSION, r[["visit", "response", "reason"]].to_string()


@settings(SETTINGS, max_examples=15)
@given(tables(max_targets=3), st.sampled_from(CRITERIA), st.randoms(use_true_random=False))
def test_responses_do_not_depend_on_row_order(t, criteria, rnd):
    order = list(range(len(t)))
    rnd.shuffle(order)
    a = _run(t, criteria)
    b = _run(t.iloc[order].reset_index(drop=True), criteria)
    pd.testing.assert_frame_equal(a, b)
