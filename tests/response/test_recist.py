"""RECIST 1.1 (Eisenhauer et al. 2009, doi:10.1016/j.ejca.2008.10.026): one test per rule.

Each docstring quotes the rule it checks.
"""

from __future__ import annotations

import pytest
from _response_helpers import lesion, responses, table

from tumorscope.errors import ResponseError
from tumorscope.response import assess, best_overall_response


def _recist(t):
    return assess(t, criteria="recist1.1")


def test_partial_response_is_30_percent_from_baseline():
    """PR: "At least a 30% decrease in the sum of diameters of target lesions, taking as
    reference the baseline sum diameters." Exactly 30% qualifies, 29% does not."""
    r = _recist(table({"L1": lesion("target", 50, 35, 36)}))
    assert responses(r) == ["baseline", "PR", "SD"]
    assert r["change_from_baseline_pct"].iloc[1] == pytest.approx(-30.0)
    assert "fell 30% from baseline 50 mm" in r["reason"].iloc[1]


def test_progression_needs_20_percent_and_5_mm_from_nadir():
    """PD: "At least a 20% increase in the sum of diameters of target lesions, taking as
    reference the smallest sum on study ... the sum must also demonstrate an absolute
    increase of at least 5 mm." 25 → 30 mm is +20% and +5 mm: PD."""
    r = _recist(table({"L1": lesion("target", 25, 30)}))
    assert responses(r) == ["baseline", "PD"]
    assert "rose 20% and 5 mm from nadir 25 mm (baseline)" in r["reason"].iloc[1]


def test_trap_20_percent_rise_under_5_mm_is_not_progression():
    """ "In addition to the relative increase of 20%, the sum must also demonstrate an
    absolute increase of at least 5 mm": 15 → 19 mm is +27% but only 4 mm, so SD."""
    r = _recist(table({"L1": lesion("target", 15, 19)}))
    assert responses(r) == ["baseline", "SD"]
    assert "only 4 mm" in r["reason"].iloc[1]


def test_trap_nadir_below_baseline_progression_while_still_below_baseline():
    """PD is taken "as reference the smallest sum on study (this includes the baseline sum
    if that is the smallest on study)": 100 → 50 (PR) → 62 is still -38% from baseline but
    +24% and +12 mm from the nadir 50 mm: PD, not PR."""
    r = _recist(table({"L1": lesion("target", 60, 30, 30), "L2": lesion("target", 40, 20, 32)}))
    assert responses(r) == ["baseline", "PR", "PD"]
    assert r["change_from_baseline_pct"].iloc[2] == pytest.approx(-38.0)
    assert r["change_from_nadir_pct"].iloc[2] == pytest.approx(24.0)
    assert "nadir 50 mm (visit V2)" in r["reason"].iloc[2]


def test_nadir_ignores_partial_visits():
    """The nadir is "the smallest sum on study": a visit with an unmeasured target lesion
    has no sum and cannot set the nadir."""
    r = _recist(table({"L1": lesion("target", 40, 10, 40), "L2": lesion("target", 40, None, 40)}))
    assert responses(r) == ["baseline", "NE", "SD"]
    assert r["nadir_mm"].iloc[2] == 80


def test_trap_nodes_shrinking_to_9_mm_are_complete_response():
    """CR: "Disappearance of all target lesions. Any pathological lymph nodes (whether target
    or non-target) must have reduction in short axis to <10 mm" — and nodes keep their short
    axis in the sum, so the sum at CR is 9 mm, not 0; 10 mm is not CR."""
    r = _recist(table({"L1": lesion("target", 30, 0), "N1": lesion("target", 20, 9, nodal=True)}))
    assert responses(r) == ["baseline", "CR"]
    assert r["sum_mm"].iloc[1] == 9
    r = _recist(table({"L1": lesion("target", 30, 0), "N1": lesion("target", 20, 10, nodal=True)}))
    assert responses(r) == ["baseline", "PR"]


def test_trap_missing_lesion_makes_visit_not_evaluable():
    """ "If only a subset of lesion measurements are made at an assessment, usually the case
    is also considered NE at that time point"."""
    r = _recist(table({"L1": lesion("target", 30, 20), "L2": lesion("target", 30, None)}))
    assert responses(r) == ["baseline", "NE"]
    assert "L2 not assessed" in r["reason"].iloc[1]


def test_missing_lesion_with_progression_of_the_others_is_progression():
    """ "...unless a convincing argument can be made that the contribution of the individual
    missing lesion(s) would not change the assigned time point response. This would be most
    likely to happen in the case of PD": measured lesions alone 80 mm vs baseline 50 mm."""
    r = _recist(
        table(
            {
                "L1": lesion("target", 20, 45),
                "L2": lesion("target", 20, 35),
                "L3": lesion("target", 10, None),
            }
        )
    )
    assert responses(r) == ["baseline", "PD"]
    assert "L3 not assessed" in r["reason"].iloc[1]


def test_too_small_to_measure_counts_5_mm_and_absent_0():
    """ "If the radiologist is able to provide an actual measure, that should be recorded ...
    if it is believed to be present and is faintly seen but too small to measure, a default
    value of 5 mm should be assigned" and 0 mm when it has disappeared."""
    r = _recist(
        table(
            {
                "L1": lesion("target", 30, "too small to measure"),
                "L2": lesion("target", 20, "absent"),
            }
        )
    )
    assert r["sum_mm"].iloc[1] == 5
    assert responses(r) == ["baseline", "PR"]


def test_new_lesion_is_progression():
    """Table 1: any target and non-target response with "New lesions: Yes" → PD."""
    r = _recist(table({"L1": lesion("target", 30, 15), "X1": lesion("new", None, 8)}))
    assert responses(r) == ["baseline", "PD"]
    assert bool(r["new_lesions"].iloc[1])
    assert "new lesion(s) X1" in r["reason"].iloc[1]


def test_unequivocal_nontarget_progression_is_progression():
    """Non-target PD: "Unequivocal progression of existing non-target lesions" → overall PD
    even when the target lesions respond."""
    r = _recist(
        table(
            {
                "L1": lesion("target", 30, 15),
                "NT1": lesion("non-target", "present", "unequivocal progression"),
            }
        )
    )
    assert responses(r) == ["baseline", "PD"]
    assert r["nontarget_response"].iloc[1] == "PD"


def test_target_cr_with_persisting_nontarget_is_pr():
    """Table 1: target CR + non-target "Non-CR/non-PD" → PR; target CR + non-target "Not
    evaluated" → PR; CR + CR → CR."""
    r = _recist(
        table(
            {
                "L1": lesion("target", 30, 0, 0, 0),
                "NT1": lesion("non-target", "present", "present", None, "absent"),
            }
        )
    )
    assert responses(r) == ["baseline", "PR", "PR", "CR"]


def test_pr_with_nontarget_not_evaluated_stays_pr():
    """Table 1: target PR + non-target "Non-PD or not all evaluated" → PR."""
    r = _recist(
        table({"L1": lesion("target", 30, 20), "NT1": lesion("non-target", "present", None)})
    )
    assert responses(r) == ["baseline", "PR"]


def test_nontarget_only_disease():
    """Table 2 (non-target disease only): Non-CR/non-PD → "Non-CR/non-PD"; CR → CR;
    unequivocal PD → PD."""
    r = _recist(
        table(
            {"NT1": lesion("non-target", "present", "present", "absent", "unequivocal progression")}
        )
    )
    assert responses(r) == ["baseline", "non-CR/non-PD", "CR", "PD"]


def test_disease_reappearing_after_cr_is_progression():
    """Table 3 footnote: "If a CR is truly met at first time point, then any disease seen at a
    subsequent time point, even disease meeting PR criteria relative to baseline, makes the
    disease PD at that point"."""
    r = _recist(table({"L1": lesion("target", 40, 0, 3)}))  # 3 mm: under the 5 mm of the sum rule
    assert responses(r) == ["baseline", "CR", "PD"]
    assert "reappeared after a complete response" in r["reason"].iloc[2]


def test_target_lesions_must_be_measurable_at_baseline():
    """Measurable lesions: "minimum size of 10 mm by CT scan"; "to be considered
    pathologically enlarged and measurable, a lymph node must be ≥15 mm in short axis"."""
    with pytest.raises(ResponseError, match=r"row 0.*L1.*9 mm at baseline.*at least 10 mm"):
        _recist(table({"L1": lesion("target", 9, 9)}))
    with pytest.raises(ResponseError, match=r"nodal target \(short axis\).*at least 15 mm"):
        _recist(table({"N1": lesion("target", 14, 9, nodal=True)}))
    r = assess(
        table({"L1": lesion("target", 9, 9)}), criteria="recist1.1", check_measurability=False
    )
    assert responses(r) == ["baseline", "SD"]


def test_pre_baseline_visit_is_not_scored():
    """RECIST scores visits from baseline on; a pre-treatment scan (before the visit marked
    ``baseline``) is reported but not scored and does not set the nadir."""
    t = table({"L1": lesion("target", 20, 40, 44)}, baseline_visit=1)
    r = _recist(t)
    assert responses(r) == ["pre-baseline", "baseline", "SD"]
    assert r["days_from_baseline"].tolist() == [-42, 0, 42]


def test_unknown_criteria_is_an_error():
    with pytest.raises(ResponseError, match="unknown criteria 'recist2'"):
        assess(table({"L1": lesion("target", 20, 20)}), criteria="recist2")


# ----------------------------------------------------------- best overall response


def test_best_overall_response_unconfirmed_by_default():
    """Section 4.4.1: "The best overall response is the best response recorded from the
    start of the study treatment until the end of treatment", recorded until progression."""
    r = _recist(table({"L1": lesion("target", 50, 30, 45, 0)}))
    assert responses(r) == ["baseline", "PR", "PD", "CR"]
    bor = best_overall_response(r)
    assert bor["best_response"].tolist() == ["PR"]  # the CR after PD does not count


def test_best_overall_response_with_confirmation():
    """Section 4.6 / Table 3: CR or PR must be confirmed at a subsequent time point "no less
    than 4 weeks after the criteria for response are first met"; "PR then SD" → SD,
    "PR then PR" → PR, "CR then CR" → CR."""
    pr_sd = _recist(table({"L1": lesion("target", 50, 30, 40)}))
    assert best_overall_response(pr_sd, confirm=True)["best_response"].tolist() == ["SD"]
    pr_pr = _recist(table({"L1": lesion("target", 50, 30, 31)}))
    b = best_overall_response(pr_pr, confirm=True)
    assert b["best_response"].tolist() == ["PR"] and b["confirmed_at"].tolist() == ["V3"]
    # too early: 3 weeks later does not confirm
    early = _recist(table({"L1": lesion("target", 50, 30, 31)}, weeks=(0, 6, 9)))
    assert best_overall_response(early, confirm=True)["best_response"].tolist() == ["SD"]
    cr_cr = _recist(table({"L1": lesion("target", 50, 0, 0)}))
    assert best_overall_response(cr_cr, confirm=True)["best_response"].tolist() == ["CR"]


def test_best_overall_response_minimum_stable_disease_duration():
    """Section 4.4.1: SD must be "met at least once after study entry at a minimum interval
    (in general not less than 6-8 weeks)"; otherwise the best response is PD if progression
    followed."""
    r = _recist(table({"L1": lesion("target", 50, 50, 70)}, weeks=(0, 4, 8)))
    assert best_overall_response(r, min_sd_days=42)["best_response"].tolist() == ["PD"]
    assert best_overall_response(r)["best_response"].tolist() == ["SD"]


def test_not_assessed_nontarget_after_cr_is_not_reappearance():
    """Table 1: target CR with non-target "Not evaluated" → PR; an unassessed lesion is not
    disease seen again, so the CR footnote does not make it PD."""
    t = table(
        {"L1": lesion("target", 30, 0, 0), "NT1": lesion("non-target", "present", "absent", None)}
    )
    assert responses(_recist(t)) == ["baseline", "CR", "PR"]
    assert responses(assess(t, criteria="irecist")) == ["baseline", "iCR", "iPR"]


def test_equivocal_new_lesion_is_progression_only_once_confirmed():
    """Section 4.3.2: "If a new lesion is equivocal ... continued therapy and follow-up
    evaluation will clarify if it represents truly new disease. If repeat scans confirm there
    is definitely a new lesion, then progression should be declared using the date of the
    initial scan"."""
    r = _recist(
        table({"L1": lesion("target", 30, 25, 25), "X1": lesion("new", None, "equivocal", 9)})
    )
    assert responses(r) == ["baseline", "SD", "PD"]
    assert "X1 was equivocal at visit V2: progression dates from there" in r["reason"].iloc[2]
    r = _recist(
        table(
            {"L1": lesion("target", 30, 25, 25), "X1": lesion("new", None, "equivocal", "absent")}
        )
    )
    assert responses(r) == ["baseline", "SD", "SD"]
