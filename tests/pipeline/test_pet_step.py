"""The pet step and the PET part of assess on the session's complete run of the small study
(001 responder, 002 pseudoprogressor: both have an FDG PET at every visit)."""

from __future__ import annotations

import sqlite3
from typing import Any

import pandas as pd


def _db(full_run: Any) -> sqlite3.Connection:
    return sqlite3.connect(
        f"{(full_run.out_dir / 'tumorscope.sqlite').resolve().as_uri()}?mode=ro", uri=True
    )


def test_percist_follows_the_scenario(full_run: Any) -> None:
    a = pd.read_sql(
        "select subject, visit, criteria, response, details from assessments "
        "where criteria in ('percist', 'impercist') order by subject, criteria, visit",
        _db(full_run),
    )
    calls = {(s, c): list(g["response"]) for (s, c), g in a.groupby(["subject", "criteria"])}
    # responder: uptake falls with cell kill (SUV 8 -> 5 -> 2.5)
    assert calls["001", "percist"] == ["baseline", "PMR", "PMR", "PMR"]
    # pseudoprogressor: the inflammatory flare (SUV 8 -> 11) is PMD, then uptake falls
    assert calls["002", "percist"] == ["baseline", "PMD", "PMR", "PMR"]
    assert calls["002", "impercist"] == ["baseline", "PMD", "PMR", "PMR"]
    details = a[(a["subject"] == "002") & (a["criteria"] == "percist")]["details"]
    assert '"ipercist": "UPMD"' in details.iloc[1]
    assert "delta_tlg_pct" in details.iloc[1] and "delta_adc_pct" in details.iloc[1]


def test_pet_patterns_and_measurements(full_run: Any) -> None:
    con = _db(full_run)
    p = pd.read_sql("select * from patterns where pattern = 'metabolic pseudoprogression'", con)
    flags = dict(zip(p["subject"], p["flag"], strict=True))
    assert flags == {"001": 0, "002": 1}
    m = pd.read_sql("select * from measurements where step = 'pet'", con)
    stats = set(m["statistic"])
    assert {"SUVmax", "SUVpeak", "SULpeak", "MTV41", "TLG41", "MTV_PERCIST", "TLG_PERCIST"} <= stats
    peak = m[(m["statistic"] == "SULpeak") & (m["lesion_id"] == "L1")].pivot(
        index="visit", columns="subject", values="value"
    )
    assert peak.loc["02", "002"] / peak.loc["01", "002"] > 1.3  # flare
    assert peak.loc["04", "001"] / peak.loc["01", "001"] < 0.5  # response
    # the SUV map is measured with every other map (beside ADC in the lesion statistics)
    maps = set(
        pd.read_sql("select distinct map from measurements where step = 'measure'", con)["map"]
    )
    assert {"pet.SUV", "pet.SUL"} <= maps


def test_report_has_the_pet_mri_section(full_run: Any) -> None:
    html = (full_run.out_dir / "report" / "sub-002.html").read_text()
    assert 'id="pet-table"' in html and 'id="fig-pet-scatter"' in html
