"""iRECIST (Seymour et al. 2017, doi:10.1016/S1470-2045(17)30074-8) with the EORTC FAQ
rules where they differ: one test per rule, the rule quoted in the docstring."""

from __future__ import annotations

from _response_helpers import lesion, responses, table

from tumorscope.response import assess, best_overall_response
from tumorscope.response._core import subjects_from_table
from tumorscope.response.irecist import new_target_lesions
from tumorscope.response.table import validate_table


def _ir(t):
    return assess(t, criteria="irecist")


def test_responses_are_recist_categories_with_i_prefix():
    """ "iCR, iPR and iSD ... are assigned using RECIST 1.1 principles"."""
    r = _ir(table({"L1": lesion("target", 50, 30, 0), "L2": lesion("target", 20, 20, 0)}))
    assert responses(r) == ["baseline", "iSD", "iCR"]
    r = _ir(table({"L1": lesion("target", 50, 30)}))
    assert responses(r) == ["baseline", "iPR"]


def test_trap_iupd_then_icpd_by_5_mm_further_growth():
    """ "iUPD ... requires confirmation, which is done at the next assessment"; iCPD is
    confirmed by a further increase of the target sum of at least 5 mm. FAQ: exactly 5 mm
    confirms."""
    r = _ir(table({"L1": lesion("target", 40, 50, 55)}))
    assert responses(r) == ["baseline", "iUPD", "iCPD"]
    assert "rose 5 mm" in r["reason"].iloc[2]
    assert r["iupd_since"].iloc[2] == "V2"


def test_growth_under_5_mm_keeps_iupd():
    """A further increase under 5 mm neither confirms nor resets: the time point stays iUPD."""
    r = _ir(table({"L1": lesion("target", 40, 50, 54.9)}))
    assert responses(r) == ["baseline", "iUPD", "iUPD"]
    assert "needs +5 mm" in r["reason"].iloc[2]


def test_faq_further_increase_is_additive_from_first_iupd_of_run():
    """EORTC FAQ: increases are measured from the first iUPD of the run and add up: +3 mm
    then +2 mm is +5 mm and confirms, although no single step reached 5 mm."""
    r = _ir(table({"L1": lesion("target", 40, 50, 53, 55)}))
    assert responses(r) == ["baseline", "iUPD", "iUPD", "iCPD"]
    assert "from 50 mm at the first iUPD" in r["reason"].iloc[3]


def test_trap_iupd_reset_by_shrinkage_then_new_iupd_needs_confirmation():
    """ "If iUPD is followed at the next assessment by iSD, iPR or iCR, the bar is reset":
    a later progression is again iUPD, and its confirmation is measured from the new iUPD
    (60 mm), not from the first one (50 mm)."""
    r = _ir(table({"L1": lesion("target", 40, 50, 38, 60, 63, 65)}))
    assert responses(r) == ["baseline", "iUPD", "iSD", "iUPD", "iUPD", "iCPD"]
    assert "reset by iSD" in r["reason"].iloc[2]
    assert r["iupd_since"].iloc[4] == "V4"
    assert "from 60 mm at the first iUPD" in r["reason"].iloc[5]


def test_trap_new_lesions_confirm_progression():
    """iCPD is confirmed by "an increase in the number of new lesions" — also when the
    iUPD came from the target lesions (progression in a category not progressed before)."""
    r = _ir(table({"L1": lesion("target", 40, 50, 51), "X1": lesion("new", None, None, 6)}))
    assert responses(r) == ["baseline", "iUPD", "iCPD"]
    assert "more new lesions (X1)" in r["reason"].iloc[2]
    r = _ir(
        table(
            {
                "L1": lesion("target", 40, 40, 40),
                "X1": lesion("new", None, 12, 12),
                "X2": lesion("new", None, None, 6),
            }
        )
    )
    assert responses(r) == ["baseline", "iUPD", "iCPD"]


def test_new_lesions_unchanged_stay_iupd():
    """Seymour Table 3: "If no change in new lesions (size or number) from last time point,
    remains iUPD" — the original targets shrinking does not reset while new lesions persist."""
    r = _ir(table({"L1": lesion("target", 40, 30, 20), "X1": lesion("new", None, 12, 12)}))
    assert responses(r) == ["baseline", "iUPD", "iUPD"]


def test_new_target_lesion_sum_growth_of_5_mm_confirms():
    """iCPD: "an increase in the sum of new target lesions of at least 5 mm"."""
    r = _ir(table({"L1": lesion("target", 40, 40, 40), "X1": lesion("new", None, 12, 17)}))
    assert responses(r) == ["baseline", "iUPD", "iCPD"]
    assert r["new_lesion_target_sum_mm"].tolist()[1:] == [12, 17]
    assert "new target lesion sum rose 5 mm" in r["reason"].iloc[2]


def test_new_nontarget_further_progression_confirms():
    """iCPD: "any increase in new non-target lesions" (a non-measurable new lesion marked
    ``further progression``)."""
    r = _ir(
        table(
            {
                "L1": lesion("target", 40, 40, 40),
                "X1": lesion("new", None, (6, "present"), (7, "further progression")),
            }
        )
    )
    assert responses(r) == ["baseline", "iUPD", "iCPD"]


def test_nontarget_further_progression_confirms_and_persisting_progression_does_not():
    """Non-target iUPD is confirmed by further growth of the non-target disease; non-target
    lesions that stay in unequivocal progression without further growth remain iUPD."""
    t = {"L1": lesion("target", 40, 40, 40, 40)}
    t["NT1"] = lesion(
        "non-target",
        "present",
        "unequivocal progression",
        "unequivocal progression",
        "further progression",
    )
    r = _ir(table(t))
    assert responses(r) == ["baseline", "iUPD", "iUPD", "iCPD"]
    assert "further progression of non-target NT1" in r["reason"].iloc[3]


def test_progression_in_a_new_category_confirms():
    """Seymour Table 3: progression that appears in a lesion category that had not progressed
    at the iUPD confirms it (target iUPD, then unequivocal non-target progression)."""
    r = _ir(
        table(
            {
                "L1": lesion("target", 40, 50, 50),
                "NT1": lesion("non-target", "present", "present", "unequivocal progression"),
            }
        )
    )
    assert responses(r) == ["baseline", "iUPD", "iCPD"]
    assert "non-target lesions now progress" in r["reason"].iloc[2]


def test_icpd_stands_at_later_visits():
    r = _ir(table({"L1": lesion("target", 40, 50, 55, 20)}))
    assert responses(r) == ["baseline", "iUPD", "iCPD", "iCPD"]


def test_new_target_lesions_at_most_5_and_2_per_organ():
    """ "Up to five (but no more than two per organ) measurable new lesions" are new target
    lesions; measurable as in RECIST 1.1 (≥10 mm, nodes ≥15 mm short axis)."""
    les = {"L1": lesion("target", 40, 40)}
    for k, (size, organ) in enumerate([(30, "liver"), (25, "liver"), (20, "liver"), (15, "lung"),
                                       (14, "lung"), (13, "bone"), (12, "brain"), (8, "skin")]):  # fmt: skip
        les[f"X{k}"] = lesion("new", None, size, organ=organ)
    s = subjects_from_table(validate_table(table(les)))[0]
    assert new_target_lesions(s) == ["X0", "X1", "X3", "X4", "X5"]


def test_confirmation_timing_outside_4_to_8_weeks_is_noted():
    """iUPD confirmation "is done at the next assessment (4-8 weeks later)"."""
    r = _ir(table({"L1": lesion("target", 40, 50, 56)}, weeks=(0, 6, 16)))
    assert responses(r) == ["baseline", "iUPD", "iCPD"]
    assert "70 days after the iUPD" in r["reason"].iloc[2]


def test_best_overall_response_irecist():
    """iBOR: the best of iCR, iPR, iSD, iUPD, iCPD; an iUPD later confirmed is iCPD dated from
    the iUPD; iPR after a reset counts."""
    r = _ir(table({"L1": lesion("target", 40, 50, 30, 28)}))
    assert best_overall_response(r)["best_response"].tolist() == ["iPR"]
    r = _ir(table({"L1": lesion("target", 40, 50, 55)}))
    b = best_overall_response(r)
    assert b["best_response"].tolist() == ["iCPD"] and b["visit"].tolist() == ["V2"]
