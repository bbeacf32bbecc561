"""RANO 2.0 (Wen et al. 2023, doi:10.1200/JCO.23.01059) and iRANO (Okada et al. 2015,
doi:10.1016/S1470-2045(15)00088-1): one test per rule, the rule quoted in the docstring."""

from __future__ import annotations

import pytest
from _response_helpers import lesion, responses, table

from tumorscope.errors import ResponseError
from tumorscope.response import assess, best_overall_response


def _t(*sizes, steroids=None, clinical=None, weeks=None, extra=None):
    les = {"E1": lesion("target", *sizes)}
    les.update(extra or {})
    cols = {}
    n = len(sizes)
    if steroids is not None:
        cols["steroid_dose_mg"] = list(steroids)
    if clinical is not None:
        cols["clinical_status"] = list(clinical)
    if weeks is None:
        weeks = tuple(8.0 * k for k in range(n))
    return table(les, visit_cols=cols, weeks=weeks)


def test_spd_and_partial_response_50_percent():
    """PR: "≥50% decrease in the sum of products of perpendicular diameters" from baseline.
    20×20 = 400 mm² → 20×10 = 200 mm² is exactly −50%."""
    r = assess(_t((20, 20), (20, 10), (20, 11)), criteria="rano")
    assert responses(r) == ["baseline", "PR", "SD"]
    assert r["spd_mm2"].tolist() == [400, 200, 220]


def test_progression_25_percent_from_nadir():
    """PD: "≥25% increase in the sum of products of perpendicular diameters ... compared with
    the smallest tumour measurement obtained either at baseline (if no decrease) or best
    response". 400 → 200 (nadir) → 250 mm² is +25% from the nadir although −37.5% from
    baseline."""
    r = assess(_t((20, 20), (20, 10), (25, 10)), criteria="rano")
    assert responses(r) == ["baseline", "PR", "PD"]
    assert "SPD rose 25% from nadir 200 mm² (visit V2)" in r["reason"].iloc[2]


def test_complete_response_needs_no_steroids():
    """CR: disappearance of all enhancing disease, "off corticosteroids (or on physiologic
    replacement doses only)"."""
    r = assess(_t((20, 20), "absent", "absent", steroids=[4, 2, 0]), criteria="rano")
    assert responses(r) == ["baseline", "PR", "CR"]  # issue 24: reduced dose is PR, not SD
    assert "on corticosteroids (2 mg/day): not CR" in r["reason"].iloc[1]


def test_partial_response_needs_steroids_not_above_baseline():
    """PR requires a corticosteroid dose "not greater than the dose at time of baseline"."""
    r = assess(_t((20, 20), (10, 10), (10, 10), steroids=[2, 4, 2]), criteria="rano")
    assert responses(r) == ["baseline", "SD", "PR"]
    assert "corticosteroids rose from 2 to 4" in r["reason"].iloc[1]


def test_steroid_increase_alone_is_not_progression():
    """ "An increase in corticosteroid dose alone ... will not be taken into account in
    determining progression"."""
    r = assess(_t((20, 20), (20, 20), steroids=[2, 16]), criteria="rano")
    assert responses(r) == ["baseline", "SD"]


def test_clinical_deterioration_is_progression():
    """PD: "clinical deterioration not attributable to other causes apart from the tumour"."""
    r = assess(_t((20, 20), (20, 20), clinical=["stable", "worse"]), criteria="rano")
    assert responses(r) == ["baseline", "PD"]
    assert r["reason"].iloc[1].startswith("clinical deterioration")


def test_new_lesion_is_progression():
    """PD: "any new lesion"."""
    r = assess(_t((20, 20), (20, 20), extra={"X1": lesion("new", None, (12, 11))}), criteria="rano")
    assert responses(r) == ["baseline", "PD"]


def test_measurable_needs_two_perpendicular_diameters_of_10_mm():
    """Measurable disease: "contrast-enhancing lesions with clearly defined margins ... with
    two perpendicular diameters of at least 10 mm"."""
    with pytest.raises(ResponseError, match=r"E1.*20 x 9 mm.*at least 10 mm"):
        assess(_t((20, 9), (20, 9)), criteria="rano")


def test_rano2_at_most_three_target_lesions():
    """RANO 2.0: at most three target lesions."""
    les = {f"E{k}": lesion("target", (20, 20), (20, 20)) for k in range(4)}
    with pytest.raises(ResponseError, match="RANO uses at most 3"):
        assess(table(les), criteria="rano")
    assert len(assess(table(les), criteria="irano")) == 2


def test_rano_best_response_requires_confirmation():
    """RANO 2.0: CR and PR must be sustained on a scan at least 4 weeks later."""
    r = assess(_t((20, 20), (10, 10), (20, 20)), criteria="rano")
    assert best_overall_response(r)["best_response"].tolist() == ["SD"]
    r = assess(_t((20, 20), (10, 10), (10, 10)), criteria="rano")
    assert best_overall_response(r)["best_response"].tolist() == ["PR"]


def test_irano_progression_within_6_months_needs_confirmation():
    """iRANO: for radiographic progression within 6 months of starting immunotherapy
    without significant clinical decline, "confirmation of radiographic progression on
    follow-up imaging" is recommended before calling PD; a follow-up that shows further
    progression confirms it (back-dated), one that does not withdraws it."""
    grow = _t((20, 20), (25, 25), (30, 30), weeks=(0, 8, 20))
    r = assess(grow, criteria="irano")
    assert responses(r) == ["baseline", "preliminary PD", "PD"]
    assert "confirmed" in r["reason"].iloc[2]
    b = best_overall_response(r)
    assert b["best_response"].tolist() == ["PD"] and b["visit"].tolist() == ["V2"]
    shrink = _t((20, 20), (25, 25), (18, 18), weeks=(0, 8, 20))
    r = assess(shrink, criteria="irano")
    assert responses(r) == ["baseline", "preliminary PD", "SD"]
    assert "withdrawn" in r["reason"].iloc[2]
    # RANO without a window: progression at once
    assert responses(assess(grow, criteria="rano")) == ["baseline", "PD", "PD"]


def test_irano_progression_after_6_months_and_clinical_decline_are_immediate():
    """iRANO's confirmation applies within 6 months and without clinical decline."""
    late = _t((20, 20), (20, 20), (25, 25), weeks=(0, 12, 30))
    assert responses(assess(late, criteria="irano")) == ["baseline", "SD", "PD"]
    worse = _t((20, 20), (25, 25), clinical=["stable", "worse"])
    assert responses(assess(worse, criteria="irano")) == ["baseline", "PD"]


def test_enhancing_disease_reappearing_after_zero_spd_is_progression():
    """PD is measured "compared with the smallest tumour measurement ... or best response":
    from an SPD of 0 any reappearing enhancing disease is an unbounded increase."""
    r = assess(_t((20, 20), "absent", (8, 8), steroids=[0, 0, 0]), criteria="rano")
    assert responses(r) == ["baseline", "CR", "PD"]
    assert "reappeared" in r["reason"].iloc[2]


def test_too_small_to_measure_counts_5_by_5_mm():
    """tumorscope decision, by analogy with RECIST 1.1: a lesion too small to measure counts
    5 × 5 mm² rather than making the visit not evaluable."""
    r = assess(_t((20, 20), "too small to measure"), criteria="rano")
    assert r["spd_mm2"].tolist() == [400, 25]
    assert responses(r) == ["baseline", "PR"]


def test_rano_has_no_recist_per_organ_limit():
    """RECIST 1.1 section 3.3.1 allows "a maximum of two lesions per organ"; RANO has no such
    rule (all lesions are in the brain): RANO 2.0 (Wen et al. 2023, doi:10.1200/JCO.23.01059)
    takes up to 3 target lesions and RANO 2010 / iRANO (Wen et al. 2010,
    doi:10.1200/JCO.2009.26.3541; Okada et al. 2015) up to 5. Three targets in the brain are
    accepted by RANO and iRANO, five by iRANO, and still rejected by RECIST 1.1."""
    three = {f"E{k}": lesion("target", (20, 20), (20, 20), organ="brain") for k in range(3)}
    assert responses(assess(table(three), criteria="rano")) == ["baseline", "SD"]
    assert responses(assess(table(three), criteria="irano")) == ["baseline", "SD"]
    with pytest.raises(ResponseError, match="at most 2 per organ"):
        assess(table(three), criteria="recist1.1")
    five = {f"E{k}": lesion("target", (20, 20), (20, 20), organ="brain") for k in range(5)}
    assert responses(assess(table(five), criteria="irano")) == ["baseline", "SD"]
    with pytest.raises(ResponseError, match="RANO uses at most 3"):
        assess(table(five), criteria="rano")
    six = {f"E{k}": lesion("target", (20, 20), (20, 20), organ="brain") for k in range(6)}
    with pytest.raises(ResponseError, match="IRANO uses at most 5"):
        assess(table(six), criteria="irano")


def test_nonmeasurable_disease_only_is_at_best_stable():
    """RANO: "Patients with nonmeasurable disease only cannot have a complete response; the
    best response possible is stable disease" (Wen et al. 2010, doi:10.1200/JCO.2009.26.3541,
    kept by RANO 2.0, Wen et al. 2023, and iRANO); PR is a decrease of the sum of products of
    measurable lesions. One non-target lesion unchanged for 24 weeks is SD at every visit and
    best response SD, also when it goes; the empty sum of products is not a target CR."""
    nt = {"N1": lesion("non-target", "present", "present", "present", "present", "absent")}
    for criteria in ("rano", "irano"):
        r = assess(table(nt, weeks=(0, 6, 12, 18, 24)), criteria=criteria)
        assert responses(r) == ["baseline", "SD", "SD", "SD", "SD"], criteria
        assert r["target_response"].iloc[1] is None
        assert "non-measurable disease only" in r["reason"].iloc[1]
        assert best_overall_response(r)["best_response"].tolist() == ["SD"]
    # progression is still progression
    grow = {"N1": lesion("non-target", "present", "unequivocal progression")}
    assert responses(assess(table(grow), criteria="rano")) == ["baseline", "PD"]


def test_enhancing_disease_gone_on_reduced_steroids_is_partial_response():
    """RANO PR requires "stable or reduced corticosteroids (compared with baseline)" and CR
    "off corticosteroids (or on physiologic replacement doses only)" (Wen et al. 2010,
    doi:10.1200/JCO.2009.26.3541; RANO 2.0, Wen et al. 2023). All enhancing disease gone with
    steroids 4 → 2 mg/day is PR; off steroids it is CR; with a dose above baseline it is SD."""
    r = assess(_t((20, 20), "absent", "absent", steroids=[4, 2, 2]), criteria="rano")
    assert responses(r) == ["baseline", "PR", "PR"]
    assert "not above baseline (4 mg/day): PR" in r["reason"].iloc[1]
    assert best_overall_response(r)["best_response"].tolist() == ["PR"]
    r = assess(_t((20, 20), "absent", steroids=[4, 8]), criteria="rano")
    assert responses(r) == ["baseline", "SD"]
    r = assess(_t((20, 20), "absent", steroids=[4, 0]), criteria="rano")
    assert responses(r) == ["baseline", "CR"]


def test_rano2_progression_within_12_weeks_after_radiotherapy_needs_confirmation():
    """RANO 2.0 (Wen et al. 2023, doi:10.1200/JCO.23.01059): progression within 12 weeks
    after the end of radiotherapy (pseudoprogression is frequent then) needs confirmation on
    a later scan. Radiotherapy ended 2 weeks before baseline: growth at week 8 (10 weeks after
    radiotherapy) is preliminary PD, confirmed by further growth or withdrawn; at week 12
    (14 weeks after) it is PD at once. The end date comes as a parameter or a table column."""
    from _response_helpers import dates

    rt = {"S1": dates(-2)[0]}
    grow = _t((20, 20), (25, 25), (30, 30), weeks=(0, 8, 20))
    r = assess(grow, criteria="rano", radiotherapy_end=rt)
    assert responses(r) == ["baseline", "preliminary PD", "PD"]
    assert "70 days after the end of radiotherapy" in r["reason"].iloc[1]
    shrink = _t((20, 20), (25, 25), (18, 18), weeks=(0, 8, 20))
    r = assess(shrink, criteria="rano", radiotherapy_end=rt)
    assert responses(r) == ["baseline", "preliminary PD", "SD"]
    late = _t((20, 20), (25, 25), weeks=(0, 12))
    assert responses(assess(late, criteria="rano", radiotherapy_end=rt)) == ["baseline", "PD"]
    # without the date, RANO has no window (unchanged behaviour)
    assert responses(assess(grow, criteria="rano")) == ["baseline", "PD", "PD"]
    # the same from the table column
    col = grow.assign(radiotherapy_end=rt["S1"])
    assert responses(assess(col, criteria="rano")) == ["baseline", "preliminary PD", "PD"]
    with pytest.raises(ResponseError, match="several radiotherapy_end"):
        assess(grow.assign(radiotherapy_end=dates(-2, -3, -4)), criteria="rano")


def test_radiotherapy_end_from_the_manifest_through_from_lesion_table(tmp_path):
    """RANO 2.0's 12-week post-radiotherapy window with the end of radiotherapy taken from
    the study manifest's treatment history (``treatment.radiotherapy_end_date``) and passed
    through ``from_lesion_table`` to ``assess``."""
    import datetime as dt

    import pandas as pd

    from tumorscope.io.manifest import read_manifest
    from tumorscope.response import from_lesion_table

    (tmp_path / "study.yaml").write_text(
        "subjects:\n"
        '  "001":\n'
        "    treatment: {agent: temozolomide, start_date: 2026-01-05,"
        " radiotherapy_end_date: 2025-12-22}\n"
        "    visits:\n"
        '      "01": {date: 2026-01-05}\n'
        '      "02": {date: 2026-03-02}\n'
    )
    m, problems = read_manifest(tmp_path / "study.yaml")
    assert problems == [] and m is not None
    rt = {sid: s.treatment.radiotherapy_end_date for sid, s in m.subjects.items()}
    assert rt == {"001": dt.date(2025, 12, 22)}
    geometry = pd.DataFrame(
        {
            "subject": ["001", "001"],
            "visit": ["01", "02"],
            "date": ["2026-01-05", "2026-03-02"],
            "lesion_id": ["E1", "E1"],
            "target": [True, True],
            "nodal": [False, False],
            "longest_diameter_mm": [20.0, 25.0],
            "short_axis_mm": [20.0, 25.0],
        }
    )
    table = from_lesion_table(geometry, radiotherapy_end=rt)
    r = assess(table, criteria="rano")
    assert responses(r) == ["baseline", "preliminary PD"]
    assert "70 days after the end of radiotherapy (2025-12-22" in r["reason"].iloc[1]
    (tmp_path / "bad.yaml").write_text(
        'subjects:\n  "001":\n    treatment: {radiotherapy_end_date: 2025-02-30}\n'
        '    visits:\n      "01": {date: 2026-01-05}\n'
    )
    _, problems = read_manifest(tmp_path / "bad.yaml")
    assert [p.field for p in problems] == ["subjects.001.treatment.radiotherapy_end_date"]


def test_complete_response_with_stable_nonenhancing_disease():
    """RANO CR: "complete disappearance of all enhancing measurable and nonmeasurable
    disease ..., stable or improved nonenhancing (FLAIR/T2) lesions, ... off corticosteroids"
    (Wen et al. 2010, doi:10.1200/JCO.2009.26.3541; RANO 2.0, Wen et al. 2023). Enhancing
    target gone, a stable T2/FLAIR non-target lesion, no steroids: CR (was PR). Its
    unequivocal progression is still PD, and an enhancing non-target left still blocks CR."""
    flair = {"F1": lesion("non-target", "present", "present", "unequivocal progression")}
    t = _t((20, 20), "absent", "absent", steroids=[0, 0, 0], extra=flair)
    t["enhancing"] = [x != "F1" for x in t["lesion_id"]]
    r = assess(t, criteria="rano")
    assert responses(r) == ["baseline", "CR", "PD"]
    assert "non-enhancing (T2/FLAIR) F1 stable or improved" in r["reason"].iloc[1]
    t["enhancing"] = True
    assert responses(assess(t, criteria="rano"))[1] == "PR"


# ------------------------------------------------- RANO 2.0: non-enhancing (T2/FLAIR) disease


def _ne(*sizes, enhancing_sizes=None, steroids=None, weeks=None):
    """One non-enhancing target N1 (T2/FLAIR), optionally an enhancing target E1."""
    les = {"N1": lesion("target", *sizes)}
    if enhancing_sizes is not None:
        les["E1"] = lesion("target", *enhancing_sizes)
    n = len(sizes)
    cols = {"steroid_dose_mg": list(steroids)} if steroids is not None else {}
    t = table(les, visit_cols=cols, weeks=weeks or tuple(8.0 * k for k in range(n)))
    t["enhancing"] = t["lesion_id"] != "N1"
    return t


def test_nonenhancing_minor_response_25_to_50_percent():
    """RANO 2.0 / RANO-LGG (van den Bent et al. 2011): minor response is a decrease of the
    T2/FLAIR SPD "≥25% but <50%" from baseline; PR "≥50%"; SD below 25%. 20×20 = 400 mm² →
    20×15 = 300 (−25%: MR) → 20×10 = 200 (−50%: PR) → 20×9.5 (PR)."""
    r = assess(_ne((20, 20), (20, 15), (20, 10), (20, 9.5)), criteria="rano")
    assert responses(r) == ["baseline", "MR", "PR", "PR"]
    assert r["ne_response"].tolist()[1:] == ["MR", "PR", "PR"]
    assert r["ne_spd_mm2"].tolist() == [400, 300, 200, 190]
    assert "minor response" in r["reason"].iloc[1]
    # −24%: not yet MR
    assert responses(assess(_ne((20, 20), (20, 15.2)), criteria="rano"))[1] == "SD"


def test_nonenhancing_progression_25_percent_from_nadir():
    """RANO 2.0 (non-enhancing): progression is a "≥25% increase" of the T2/FLAIR SPD from the
    smallest measurement (baseline or best response). 400 → 200 (nadir) → 250 mm²: PD."""
    r = assess(_ne((20, 20), (20, 10), (25, 10)), criteria="rano")
    assert responses(r) == ["baseline", "PR", "PD"]
    assert "T2/FLAIR SPD rose 25% from nadir 200 mm² (visit V2)" in r["reason"].iloc[2]


def test_minor_response_needs_confirmation_and_steroids_not_above_baseline():
    """MR, like PR, needs "stable or reduced corticosteroids" and confirmation at least 4 weeks
    later (RANO 2.0); unconfirmed it counts as SD in the best overall response."""
    r = assess(_ne((20, 20), (20, 14), (20, 14), steroids=[2, 4, 2]), criteria="rano")
    assert responses(r) == ["baseline", "SD", "MR"]
    assert "corticosteroids rose from 2 to 4 mg/day: not MR" in r["reason"].iloc[1]
    # MR at V2, T2/FLAIR back to 400 mm² at V3 (+43% from the 280 mm² nadir): PD
    r = assess(_ne((20, 20), (20, 14), (20, 20)), criteria="rano")
    assert responses(r) == ["baseline", "MR", "PD"]
    best = best_overall_response(r)
    assert best["best_response"].iloc[0] == "SD"
    assert "MR at visit V2 not confirmed" in best["reason"].iloc[0]
    r = assess(_ne((20, 20), (20, 14), (20, 14)), criteria="rano")
    assert best_overall_response(r)["best_response"].iloc[0] == "MR"


def test_combined_enhancing_and_nonenhancing_the_less_favourable():
    """Tumours assessed on both components (RANO 2.0): progression of either is progression,
    otherwise the overall category is the less favourable of the two. Enhancing target gone
    (CR) with the T2/FLAIR SPD −30% (MR): MR; both gone: CR; enhancing PR with T2/FLAIR up 25%
    from its nadir: PD."""
    r = assess(
        _ne((20, 20), (20, 14), (0, 0), enhancing_sizes=((20, 20), "absent", "absent")),
        criteria="rano",
    )
    assert responses(r) == ["baseline", "MR", "CR"]
    assert r["ce_response"].tolist()[1:] == ["CR", "CR"]
    assert r["ne_response"].tolist()[1:] == ["MR", "CR"]
    assert "less favourable of enhancing CR and T2/FLAIR MR" in r["reason"].iloc[1]
    r = assess(_ne((20, 20), (25, 20), enhancing_sizes=((20, 20), (10, 10))), criteria="rano")
    assert responses(r) == ["baseline", "PD"]
    assert r["ce_response"].iloc[1] == "PR"
    assert "T2/FLAIR SPD rose 25%" in r["reason"].iloc[1]


def test_nonenhancing_targets_counted_per_component():
    """At most 3 target lesions (RANO 2.0), counted per component here: three enhancing and
    one non-enhancing target are accepted, four non-enhancing ones are not; a non-enhancing
    target must be 10 × 10 mm at baseline."""
    les = {f"E{k}": lesion("target", (20, 20)) for k in range(3)}
    les["N1"] = lesion("target", (20, 20))
    t = table(les)
    t["enhancing"] = t["lesion_id"] != "N1"
    assert responses(assess(t, criteria="rano")) == ["baseline"]
    t = table({f"N{k}": lesion("target", (20, 20)) for k in range(4)})
    t["enhancing"] = False
    with pytest.raises(ResponseError, match=r"4 non-enhancing \(T2/FLAIR\) target lesions"):
        assess(t, criteria="rano")
    with pytest.raises(ResponseError, match=r"non-enhancing \(T2/FLAIR\) target lesion N1"):
        assess(_ne((20, 8)), criteria="rano")
