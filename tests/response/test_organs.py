"""The organ watch's thresholds and flags, each tested against its quoted rule.

* 2018 Lake Louise criteria (Ferreira et al., JACC 2018;72:3158): "CMR supports myocardial
  inflammation with at least 1 T2-based criterion (myocardial edema: global or regional
  increase of myocardial T2 relaxation time, or an increased signal intensity in
  T2-weighted images) and at least 1 T1-based criterion (myocardial injury: increased
  myocardial T1, extracellular volume, or late gadolinium enhancement)".
* Liver MRE repeatability coefficient 22 % (Serai et al., Radiology 2017): a rise beyond it
  is a real change.
* Bowel-wall thickness > 3 mm is pathological (ECCO-ESGAR 2019, Maaser et al.).
* "Elevated" = above the study's upper limit, else z > 2 (mean + 2 SD); no reference → no
  z-score and no call.
"""

from __future__ import annotations

import pytest

from tumorscope.errors import DataError
from tumorscope.response.organs import (
    BOWEL_WALL_UPPER_MM,
    LAKE_LOUISE_RULE,
    LIVER_STIFFNESS_RC_PCT,
    Reference,
    colitis_bowel_wall,
    elevated,
    hepatitis_stiffness,
    hypophysitis_pituitary,
    lake_louise,
    organ_watch,
    parse_organ_reference,
    z_score,
)

REFS = {
    ("myocardium", "T1"): Reference(mean=1000.0, sd=40.0),
    ("myocardium", "T2"): Reference(mean=50.0, sd=3.0),
    ("myocardium", "ECV"): Reference(mean=0.25, sd=0.03),
    ("liver", "abs_G"): Reference(mean=2.0, sd=0.3),
}


def test_rule_is_quoted() -> None:
    assert "at least 1 T2-based criterion" in LAKE_LOUISE_RULE
    assert "at least 1 T1-based criterion" in LAKE_LOUISE_RULE
    assert LIVER_STIFFNESS_RC_PCT == 22.0 and BOWEL_WALL_UPPER_MM == 3.0


def test_z_and_elevated_at_two_sd() -> None:
    ref = REFS[("myocardium", "T1")]
    assert z_score(1100.0, ref) == pytest.approx(2.5)
    assert elevated(1081.0, ref)[0] is True  # z = 2.025
    assert elevated(1079.0, ref)[0] is False  # z = 1.975
    assert elevated(1079.0, Reference(upper=1050.0))[0] is True  # upper wins over z
    assert elevated(1000.0, None) == (None, "no reference range in study.yaml (organ_reference)")
    assert z_score(1000.0, None) is None


def test_lake_louise_needs_one_t2_and_one_t1_marker() -> None:
    # T2 elevated (z = 3) and T1 elevated (z = 2.5): both criteria met
    f = lake_louise("v2", {"T2": 59.0, "T1": 1100.0}, REFS)
    assert f.flag is True and f.pattern == "myocarditis_lake_louise"
    # T1 and ECV elevated, T2 normal: T1-based only → not met
    f = lake_louise("v2", {"T2": 51.0, "T1": 1100.0, "ECV": 0.35}, REFS)
    assert f.flag is False and "T2-based criterion not met" in f.reason
    # T2 elevated only
    assert lake_louise("v2", {"T2": 59.0, "T1": 1010.0}, REFS).flag is False
    # a T2-weighted ratio ≥ 2.0 counts as the T2-based marker, LGE as the T1-based one
    assert lake_louise("v2", {"T2w_ratio": 2.1, "LGE": 1.0}, REFS).flag is True
    assert lake_louise("v2", {"T2w_ratio": 1.9, "LGE": 1.0}, REFS).flag is False
    # only T1 known: the T2-based criterion cannot be evaluated
    f = lake_louise("v2", {"T1": 1100.0}, REFS)
    assert f.flag is None and "T2" in f.reason
    # no reference: nothing evaluable
    assert lake_louise("v2", {"T2": 59.0, "T1": 1100.0}, {}).flag is None


def test_hepatitis_stiffness_change_and_reference() -> None:
    refs = {("liver", "abs_G"): Reference(mean=2.0, sd=0.5)}
    # 2.0 → 2.5 kPa: +25 % > 22 % (the repeatability coefficient)
    f = hepatitis_stiffness("v3", 2.5, 2.0, refs)
    assert f.flag is True and "rose 25 %" in f.reason
    # 2.0 → 2.4: +20 %, within repeatability, and z = 0.8: not flagged
    assert hepatitis_stiffness("v3", 2.4, 2.0, refs).flag is False
    # the study's change threshold overrides the literature's
    f = hepatitis_stiffness("v3", 2.4, 2.0, {("liver", "abs_G"): Reference(change_pct=15.0)})
    assert f.flag is True
    # no baseline, no reference: cannot be called
    assert hepatitis_stiffness("v1", 2.4, None, {}).flag is None
    # elevated against the reference alone (baseline visit)
    assert hepatitis_stiffness("v1", 3.2, 3.2, refs).flag is True


def test_colitis_bowel_wall_three_mm() -> None:
    assert colitis_bowel_wall("v2", 3.5, {}).flag is True
    assert colitis_bowel_wall("v2", 3.0, {}).flag is False  # > 3 mm, not ≥
    assert "ECCO-ESGAR" in colitis_bowel_wall("v2", 3.5, {}).reason
    study = {("bowel_wall", "thickness_mm"): Reference(upper=4.0)}
    assert colitis_bowel_wall("v2", 3.5, study).flag is False


def test_hypophysitis_needs_the_study_reference() -> None:
    f = hypophysitis_pituitary("v2", 9.0, 6.0, {})
    assert f.flag is None and "+3.0 mm" in f.reason
    refs = {("pituitary", "height_mm"): Reference(upper=10.0, change_abs=2.0)}
    assert hypophysitis_pituitary("v2", 9.0, 6.0, refs).flag is True  # rose 3 mm > 2 mm
    assert hypophysitis_pituitary("v2", 7.0, 6.0, refs).flag is False


def test_organ_watch_rows() -> None:
    rows = []
    for visit, t1, t2, g in (
        ("1", 1000.0, 50.0, 2.0),
        ("2", 1005.0, 51.0, 2.1),
        ("3", 1110.0, 60.0, 2.9),
    ):
        rows += [
            {"visit": visit, "organ": "myocardium", "measure": "T1", "value": t1, "unit": "ms"},
            {"visit": visit, "organ": "myocardium", "measure": "T2", "value": t2, "unit": "ms"},
            {"visit": visit, "organ": "liver", "measure": "abs_G", "value": g, "unit": "kPa"},
            {"visit": visit, "organ": "liver", "measure": "T1", "value": 600.0, "unit": "ms"},
        ]
    out = organ_watch(rows, ["1", "2", "3"], "1", REFS)
    flags = {(p["pattern"], p["visit"]): p["flag"] for p in out.patterns}
    assert flags[("myocarditis_lake_louise", "3")] is True
    assert flags[("myocarditis_lake_louise", "2")] is False
    assert flags[("hepatitis_stiffness", "3")] is True  # +45 %
    assert flags[("hepatitis_stiffness", "2")] is False
    z = {
        (m["visit"], m["lesion_id"], m["map"]): m["value"]
        for m in out.measurements
        if m["statistic"] == "z"
    }
    assert z[("3", "myocardium", "T2")] == pytest.approx(10 / 3)
    assert ("3", "liver", "T1") not in z  # no reference → no z-score …
    assert any("liver.T1" in n for n in out.notes)  # … and it says so
    with pytest.raises(DataError, match="baseline"):
        organ_watch(rows, ["1", "2"], "0", REFS)


def test_parse_organ_reference() -> None:
    refs, problems = parse_organ_reference(
        {"myocardium": {"T1": {"mean": 1000, "sd": 40, "source": "site 3T MOLLI"}}}
    )
    assert not problems and refs[("myocardium", "T1")].sd == 40.0
    _, problems = parse_organ_reference({"myocardium": {"T1": {"mean": 1000}}})
    assert problems and "mean and sd" in problems[0].message
    _, problems = parse_organ_reference({"liver": {"abs_G": {"sd": -1, "mean": 2}}})
    assert problems and problems[0].field == "organ_reference.liver.abs_G.sd"
    _, problems = parse_organ_reference({"liver": {"abs_G": {"mean": "high", "sd": 1}}})
    assert problems and "number" in problems[0].message
    assert parse_organ_reference(None) == ({}, [])


def test_lake_louise_regional_increase_in_an_aha_segment() -> None:
    # global T2 normal (z = 1) but segment 9 (mid inferoseptal) at 58 ms (z = 2.67): the
    # criteria's "regional increase of myocardial T2"; with ECV elevated → met
    segs = {9: {"T2": 58.0, "T1": 1010.0}, 10: {"T2": 51.0, "T1": 1000.0}}
    f = lake_louise("v2", {"T2": 53.0, "ECV": 0.33}, REFS, segs)
    assert f.flag is True and "AHA 9 (mid inferoseptal)" in f.reason
    assert lake_louise("v2", {"T2": 53.0, "ECV": 0.33}, REFS).flag is False
    # through organ_watch: organs named myocardium_aha<n>, z against the myocardium reference
    rows = [
        {"visit": "1", "organ": "myocardium", "measure": "ECV", "value": 0.25, "unit": "1"},
        {"visit": "2", "organ": "myocardium", "measure": "ECV", "value": 0.33, "unit": "1"},
        {"visit": "1", "organ": "myocardium_aha9", "measure": "T2", "value": 50.0, "unit": "ms"},
        {"visit": "2", "organ": "myocardium_aha9", "measure": "T2", "value": 58.0, "unit": "ms"},
    ]
    out = organ_watch(rows, ["1", "2"], "1", REFS)
    flags = {p["visit"]: p["flag"] for p in out.patterns}
    assert flags == {"1": False, "2": True}
    z = [
        m for m in out.measurements if m["lesion_id"] == "myocardium_aha9" and m["statistic"] == "z"
    ]
    assert z and z[-1]["value"] == pytest.approx(8 / 3)
