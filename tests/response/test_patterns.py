"""Immune response patterns: each published definition, with hand-computed growth rates."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from _response_helpers import lesion, table

from tumorscope.errors import ResponseError
from tumorscope.response import assess
from tumorscope.response.patterns import (
    HYPERPROGRESSION_DEFINITIONS,
    durable_response,
    hyperprogression,
    mixed_response,
    pseudoprogression,
    pseudoprogression_candidates,
    tumour_growth_kinetics,
    tumour_growth_rate,
)


def test_pseudoprogression_iupd_then_response_without_icpd():
    """irRC: "response after an initial increase in total tumor burden" (Wolchok et al.
    2009); iRECIST: iUPD followed by iPR/iCR without iCPD."""
    pp = assess(table({"L1": lesion("target", 40, 50, 27)}), criteria="irecist")
    out = pseudoprogression(pp)
    assert out["pseudoprogression"].tolist() == [True]
    assert out["progression_visit"].tolist() == ["V2"] and out["response_visit"].tolist() == ["V3"]
    tp = assess(table({"L1": lesion("target", 40, 50, 55, 20)}), criteria="irecist")
    out = pseudoprogression(tp)
    assert out["pseudoprogression"].tolist() == [False]
    assert "confirmed at visit V3" in out["reason"].iloc[0]
    sd = assess(table({"L1": lesion("target", 40, 50, 38)}), criteria="irecist")
    assert pseudoprogression(sd)["pseudoprogression"].tolist() == [False]
    assert pseudoprogression(sd, include_stable=True)["pseudoprogression"].tolist() == [True]


def test_pseudoprogression_candidate_flag_from_functional_markers():
    """A lesion that grows ≥20% while ADC rises (or Ktrans falls) beyond the repeatability
    coefficient is a candidate; growth with ADC falling is not."""
    t = table({"L1": lesion("target", 20, 25), "L2": lesion("target", 20, 26)})
    t["ADC_mean"] = [1.0e-3, 1.0e-3, 1.3e-3, 0.9e-3]
    t["Ktrans_mean"] = [0.3, 0.3, 0.3, 0.35]
    c = pseudoprogression_candidates(t, rc_pct={"ADC_mean": 15.0, "Ktrans_mean": 25.0})
    assert c["lesion_id"].tolist() == ["L1", "L2"]
    assert c["candidate"].tolist() == [True, False]
    assert c["ADC_mean_change_pct"].iloc[0] == pytest.approx(30.0)
    assert "grew 25%" in c["reason"].iloc[0]
    with pytest.raises(ResponseError, match="no repeatability coefficient"):
        pseudoprogression_candidates(t, rc_pct={"ADC_mean": 15.0})


def test_mixed_response_names_lesions():
    """Dissociated response: "coexistence of responding and non-responding lesions"; per
    lesion ≥30% shrinkage and ≥20% growth from baseline."""
    t = table(
        {
            "L1": lesion("target", 50, 30, 30),
            "L2": lesion("target", 20, 25, 23),
            "NT1": lesion("non-target", (12, "present"), (15, "present"), (12, "present")),
        }
    )
    m = mixed_response(t)
    assert m["mixed"].tolist() == [True, False]
    assert m["shrinking"].iloc[0] == "L1" and m["growing"].iloc[0] == "L2,NT1"
    assert "L1 (-40%)" in m["reason"].iloc[0]


def test_growth_rate_formulas_known_answers():
    """Champiat et al. 2017: TGR = 100·(exp(3·ln(D1/D0)/t) − 1), t in months;
    Saâda-Bouzid et al. 2017: TGK = (D1 − D0)/t. Values computed by hand for 42 days."""
    assert tumour_growth_rate(30, 33, 42) == pytest.approx(23.0246, rel=1e-5)
    assert tumour_growth_rate(33, 50, 42) == pytest.approx(146.7919, rel=1e-5)
    assert tumour_growth_kinetics(33, 50, 42) == pytest.approx(12.31994, rel=1e-5)
    assert math.isnan(tumour_growth_rate(0, 10, 42))


def _hpd_table(pre, base, first, *, new=0) -> pd.DataFrame:
    les = {"L1": lesion("target", pre, base, first, organ="liver")}
    for k in range(new):
        les[f"X{k}"] = lesion("new", None, None, 12, organ="liver")
    return table(les, weeks=(-6, 0, 6), baseline_visit=1)


def test_hyperprogression_champiat_saada_bouzid_ferrara():
    """Champiat: RECIST PD at first evaluation and TGR ratio ≥ 2; Saâda-Bouzid: TGK ratio
    ≥ 2; Ferrara: PD at first evaluation and ΔTGR > 50 %/month. A hyperprogressor
    (30 → 33 → 50 mm) meets all three, a steady progressor (20 → 30 → 37 mm, PD with a
    slower rate than before) none."""
    hpd, steady = _hpd_table(30, 33, 50), _hpd_table(20, 30, 37)
    for definition in ("champiat", "saada-bouzid", "ferrara"):
        assert hyperprogression(hpd, definition=definition)["hyperprogression"].tolist() == [True]
        assert hyperprogression(steady, definition=definition)["hyperprogression"].tolist() == [
            False
        ]
    h = hyperprogression(hpd).iloc[0]
    assert h["tgr_pre_pct_per_month"] == pytest.approx(23.0246, rel=1e-5)
    assert h["tgr_on_pct_per_month"] == pytest.approx(146.7919, rel=1e-5)
    assert h["tgr_ratio"] == pytest.approx(146.7919 / 23.0246, rel=1e-5)
    assert h["tgk_ratio"] == pytest.approx(12.31994 / 2.174107, rel=1e-5)
    assert h["first_response"] == "PD"
    s = hyperprogression(steady).iloc[0]
    assert s["first_response"] == "PD" and s["tgr_ratio"] == pytest.approx(
        57.7679 / 141.4578, rel=1e-5
    )


def test_hyperprogression_kato_and_lo_russo():
    """Kato: TTF < 2 months, > 50% burden increase, > 2-fold pace; Lo Russo: ≥ 3 of 5
    criteria (here TTF < 2 months, ≥ 50% growth, ≥ 2 new lesions in an involved organ)."""
    hpd = _hpd_table(30, 33, 50, new=2)
    assert hyperprogression(hpd, definition="kato", time_to_treatment_failure_days={"S1": 40})[
        "hyperprogression"
    ].tolist() == [True]
    assert hyperprogression(hpd, definition="kato", time_to_treatment_failure_days={"S1": 90})[
        "hyperprogression"
    ].tolist() == [False]
    lr = hyperprogression(hpd, definition="lo-russo", time_to_treatment_failure_days={"S1": 40})
    assert lr["hyperprogression"].tolist() == [True]
    assert lr["reason"].iloc[0].startswith("3 of 5 criteria met")
    lr = hyperprogression(hpd, definition="lo-russo")
    assert lr["hyperprogression"].tolist() == [False]
    assert "2 of 5" in lr["reason"].iloc[0]
    with pytest.raises(ResponseError, match="needs time_to_treatment_failure_days"):
        hyperprogression(hpd, definition="kato")


def test_hyperprogression_needs_pre_baseline_scan_and_known_definition():
    t = table({"L1": lesion("target", 30, 50)})
    h = hyperprogression(t)
    assert h["hyperprogression"].tolist() == [None]
    assert "no pre-baseline scan" in h["reason"].iloc[0]
    with pytest.raises(ResponseError, match="unknown definition"):
        hyperprogression(t, definition="fast")


def test_hyperprogression_infinite_ratio_when_no_growth_before():
    h = hyperprogression(_hpd_table(33, 33, 50)).iloc[0]
    assert math.isinf(h["tgr_ratio"]) and bool(h["hyperprogression"])
    assert "ratio is infinite" in h["reason"]


def test_durable_response_six_months():
    """Durable response: objective response "lasting continuously for at least 6 months"
    (Andtbacka et al. 2015); NE visits neither break nor extend the run."""
    short = assess(table({"L1": lesion("target", 50, 30, 30, 30, 30)}, weeks=(0, 8, 16, 24, 32)))
    d = durable_response(short)
    assert d["durable"].tolist() == [False] and d["duration_days"].tolist() == [168]
    long = table(
        {
            "L1": lesion("target", 50, 30, 30, 30, 30, 30),
            "L2": lesion("target", 20, 10, None, 10, 10, 10),
        },
        weeks=(0, 8, 16, 24, 32, 36),
    )
    r = assess(long)
    assert r["response"].tolist()[2] == "NE"
    d = durable_response(r)
    assert d["durable"].tolist() == [True] and d["duration_days"].tolist() == [196]
    broken = assess(table({"L1": lesion("target", 50, 30, 40, 30, 30)}, weeks=(0, 8, 16, 24, 48)))
    assert durable_response(broken)["duration_days"].tolist() == [168]


def test_durable_response_must_begin_within_12_months():
    """Durable response rate: objective response "lasting continuously for at least 6 months
    and beginning within the first 12 months of therapy" (Kaufman et al. 2016,
    doi:10.1186/s40425-016-0116-y; Andtbacka et al. 2015, doi:10.1200/JCO.2014.58.3377).
    A response beginning 14 months after the start of treatment is not durable."""
    weeks = (0, 30, 61, 70, 80, 90)  # response from week 61 (14 months) to week 90
    late = assess(table({"L1": lesion("target", 50, 45, 30, 30, 30, 30)}, weeks=weeks))
    assert late["response"].tolist()[2] == "PR"
    d = durable_response(late)
    assert d["durable"].tolist() == [False]
    assert "began 427 days after treatment start" in d["reason"].iloc[0]
    assert durable_response(late, begin_within_months=None)["durable"].tolist() == [True]
    early = assess(table({"L1": lesion("target", 50, 30, 30, 30)}, weeks=(0, 48, 60, 80)))
    assert durable_response(early)["durable"].tolist() == [True]  # begins at 11 months


def test_hyperprogression_unmeasured_target_is_not_evaluable():
    """A ratio of growth rates needs the target sums (Champiat et al. 2017: TGR from the sum
    of target diameters, doi:10.1158/1078-0432.CCR-16-1741; Saâda-Bouzid et al. 2017: TGK
    from "the sum of the largest diameters of the target lesions", doi:10.1093/annonc/mdx178).
    A target lesion not measured at the first evaluation makes the call not evaluable
    (``None``, with the reason), not ``False``; Lo Russo (≥ 3 of 5 criteria) stays ``False``
    when the unknown item cannot change the count."""
    les = {
        "L1": lesion("target", 30, 33, 50, organ="liver"),
        "L2": lesion("target", 20, 20, None, organ="lung"),
    }
    t = table(les, weeks=(-6, 0, 6), baseline_visit=1)
    # Lo Russo: 2 of 5 met (TTF, clinical), the unknown target-sum item decides
    kw = {"time_to_treatment_failure_days": {"S1": 40}, "clinical_deterioration": {"S1": True}}
    for definition in HYPERPROGRESSION_DEFINITIONS:
        h = hyperprogression(t, definition=definition, **kw).iloc[0]
        assert h["hyperprogression"] is None, definition
        assert "target lesion(s) L2 not measured at the first evaluation" in h["reason"]
    few = hyperprogression(t, definition="lo-russo")  # 0 of 4 known items met
    assert few["hyperprogression"].tolist() == [False]


def test_hyperprogression_tumour_shrinking_before_treatment():
    """Champiat (TGR ratio ≥ 2), Saâda-Bouzid (TGK ratio ≥ 2) and Kato (> 2-fold pace)
    compare rates as a ratio, defined for a tumour that grew before treatment; one that
    shrank (40 → 33 mm) has a negative denominator: not evaluable. Ferrara's ΔTGR > 50
    %/month (doi:10.1001/jamaoncol.2018.3676) is a difference and applies as published."""
    t = _hpd_table(40, 33, 50)
    for definition in ("champiat", "saada-bouzid", "kato"):
        kw = {"time_to_treatment_failure_days": {"S1": 40}}
        h = hyperprogression(t, definition=definition, **kw).iloc[0]
        assert h["hyperprogression"] is None, definition
        assert "shrank before treatment" in h["reason"]
    assert hyperprogression(t, definition="ferrara")["hyperprogression"].tolist() == [True]
    # a negative call stays negative: no RECIST PD at the first evaluation (33 -> 30 mm)
    assert hyperprogression(_hpd_table(40, 33, 30))["hyperprogression"].tolist() == [False]


def test_lo_russo_does_not_count_a_missing_organ_as_a_new_organ():
    """New lesions whose organ the table leaves empty (NaN in a column other rows fill) are
    not "spread to a new organ": a missing organ once became the organ ``"nan"``."""
    les = {"L1": lesion("target", 30, 33, 50, organ="liver")}
    for k in range(2):
        les[f"X{k}"] = lesion("new", None, None, 12)  # no organ
    t = table(les, weeks=(-6, 0, 6), baseline_visit=1)
    assert t["organ"].isna().sum() == 2
    reason = hyperprogression(t, definition="lo-russo")["reason"].iloc[0]
    assert "nan" not in reason
    named = _hpd_table(30, 33, 50, new=0)
    named_new = table(
        {
            "L1": lesion("target", 30, 33, 50, organ="liver"),
            **{f"X{k}": lesion("new", None, None, 12, organ="lung") for k in range(2)},
        },
        weeks=(-6, 0, 6),
        baseline_visit=1,
    )
    # a named new organ is counted; the same lesions without an organ are not
    n_named = int(hyperprogression(named_new, definition="lo-russo")["reason"].iloc[0][0])
    n_missing = int(reason[0])
    assert n_named == n_missing + 1
    assert hyperprogression(named, definition="lo-russo")["reason"].iloc[0][0] == reason[0]
