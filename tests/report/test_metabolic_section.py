"""The report's metabolic section: from the metabolic step's tables to an HTML block."""

from __future__ import annotations

import pandas as pd

from tumorscope.report.metabolic import metabolic_block


def _rows(visit: str, kpl: float) -> list[dict[str, object]]:
    lead = {"subject": "001", "visit": visit, "lesion_id": "L1"}
    return [
        {**lead, "map": "hp13c.kPL", "statistic": "roi_fit", "value": kpl, "unit": "1/s"},
        {**lead, "map": "hp13c.AUC_ratio", "statistic": "roi_fit", "value": 0.4, "unit": "1"},
        {**lead, "map": "mrs.tCho_over_Cr", "statistic": "mean", "value": 0.59, "unit": "1"},
        {**lead, "map": "mrs.Cho_CRLB_percent", "statistic": "mean", "value": 3.0, "unit": "%"},
    ]


def test_block_has_one_row_per_lesion_and_visit(tmp_path) -> None:
    paths = []
    for visit, kpl in (("01", 0.0588), ("02", 0.0343)):
        p = tmp_path / f"{visit}.parquet"
        pd.DataFrame(_rows(visit, kpl)).to_parquet(p)
        paths.append(p)
    html = metabolic_block(paths, {"01": 0, "02": 21})
    assert 'id="metabolic"' in html and 'id="metabolic-table"' in html
    assert "0.0588" in html and "0.0343" in html and "tCho/Cr" in html
    assert "CRLB" not in html  # only the columns the section names
    assert html.count("<tr>") == 3  # header + two visits


def test_no_tables_no_section(tmp_path) -> None:
    assert metabolic_block([]) == ""
    assert metabolic_block([tmp_path / "missing.parquet"]) == ""
