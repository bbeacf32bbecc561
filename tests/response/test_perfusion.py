"""The "perfusion suggests treatment effect" pattern on hand-made tables (its rules: enlarging
= ≥ 25 % above the lesion's nadir in bidimensional product; low rCBV = mean below the
threshold; None when nothing enlarges or no rCBV was measured)."""

from __future__ import annotations

import pandas as pd
import pytest

from tumorscope.errors import ResponseError
from tumorscope.response.perfusion import PATTERN, perfusion_treatment_effect


def _tables(products: list[float], rcbv: list[float | None]) -> tuple[pd.DataFrame, pd.DataFrame]:
    visits = [f"{i + 1:02d}" for i in range(len(products))]
    les = pd.DataFrame(
        {
            "subject": "001",
            "visit": visits,
            "date": pd.date_range("2026-01-01", periods=len(visits), freq="42D"),
            "lesion_id": "L1",
            "bidimensional_product_mm2": products,
            "longest_diameter_mm": [p**0.5 for p in products],
        }
    )
    meas = pd.DataFrame(
        [
            {
                "subject": "001",
                "visit": v,
                "lesion_id": "L1",
                "map": "dsc.rCBV",
                "statistic": "mean",
                "value": r,
            }
            for v, r in zip(visits, rcbv, strict=True)
            if r is not None
        ]
    )
    return les, meas


def test_enlarging_low_rcbv_is_flagged_with_threshold_and_reference() -> None:
    les, meas = _tables([400.0, 600.0, 450.0], [3.0, 0.9, 0.8])
    rows = perfusion_treatment_effect(les, meas)
    assert [r["visit"] for r in rows] == ["02", "03"]
    assert rows[0]["pattern"] == PATTERN and rows[0]["flag"] is True
    assert "0.90 < 1.75" in rows[0]["reason"] and "Law" in rows[0]["reason"]
    assert rows[0]["details"]["threshold"] == 1.75
    assert rows[0]["details"]["enlarging_lesions"][0]["growth_from_nadir_pct"] == pytest.approx(50)
    assert rows[1]["flag"] is None  # 450 is +12.5 % from the nadir 400: not enlarging


def test_enlarging_high_rcbv_is_not_flagged_and_threshold_is_an_option() -> None:
    les, meas = _tables([400.0, 600.0], [3.0, 2.5])
    assert perfusion_treatment_effect(les, meas)[0]["flag"] is False
    assert perfusion_treatment_effect(les, meas, threshold=3.0)[0]["flag"] is True


def test_nadir_not_baseline_and_missing_rcbv() -> None:
    les, meas = _tables([400.0, 200.0, 260.0], [3.0, 1.0, None])
    rows = perfusion_treatment_effect(les, meas)
    assert rows[1]["flag"] is None and "without an rCBV" in rows[1]["reason"]  # +30 % from 200
    les2, _ = _tables([400.0, 600.0], [None, None])
    assert perfusion_treatment_effect(les2, None) == []  # no DSC in the study: no rows


def test_bad_input() -> None:
    les, meas = _tables([400.0, 600.0], [3.0, 1.0])
    with pytest.raises(ResponseError, match="threshold"):
        perfusion_treatment_effect(les, meas, threshold=0)
    with pytest.raises(ResponseError, match="columns"):
        perfusion_treatment_effect(les.drop(columns="lesion_id"), meas)
