"""mRECIST (Lencioni & Llovet 2010, doi:10.1055/s-0030-1247132) and Choi (Choi et al. 2007,
doi:10.1200/JCO.2006.07.3049): one test per rule, the rule quoted in the docstring."""

from __future__ import annotations

import pytest
from _response_helpers import lesion, responses, table

from tumorscope.errors import ResponseError
from tumorscope.response import assess


def _viable(total, viable, **kw):
    t = table({"L1": lesion("target", *total)}, **kw)
    t["viable_diameter_mm"] = list(viable)
    return t


def test_mrecist_measures_the_viable_tumour():
    """PR: "at least a 30% decrease in the sum of diameters of viable (enhancement in the
    arterial phase) target lesions": the whole lesion is unchanged (50 mm) while its
    enhancing part shrinks from 40 to 28 mm."""
    r = assess(_viable((50, 50), (40, 28)), criteria="mrecist")
    assert responses(r) == ["baseline", "PR"]
    assert r["sum_mm"].tolist() == [40, 28]
    assert responses(assess(_viable((50, 50), (40, 28)), criteria="recist1.1")) == [
        "baseline",
        "SD",
    ]


def test_mrecist_complete_response_is_no_enhancement_left():
    """CR: "disappearance of any intratumoral arterial enhancement in all target lesions"."""
    r = assess(_viable((50, 45), (40, 0)), criteria="mrecist")
    assert responses(r) == ["baseline", "CR"]


def test_mrecist_progression_has_no_5_mm_minimum():
    """PD: "an increase of at least 20% in the sum of the diameters of viable (enhancing)
    target lesions, taking as reference the smallest sum ... recorded since treatment
    started": 15 → 18 mm (+20%, 3 mm) is PD in mRECIST but SD in RECIST 1.1."""
    t = _viable((20, 20), (15, 18))
    assert responses(assess(t, criteria="mrecist")) == ["baseline", "PD"]
    t2 = table({"L1": lesion("target", 15, 18)})
    assert responses(assess(t2, criteria="recist1.1")) == ["baseline", "SD"]


def test_mrecist_needs_viable_diameters():
    with pytest.raises(ResponseError, match="viable_diameter_mm"):
        assess(table({"L1": lesion("target", 20, 20)}), criteria="mrecist")
    with pytest.raises(ResponseError, match=r"row 0: target lesion L1 .*no viable"):
        assess(_viable((20, 20), (0, 10)), criteria="mrecist")


def _hu(sizes, hu):
    t = table({"L1": lesion("target", *sizes)})
    t["density_hu"] = list(hu)
    return t


def test_choi_partial_response_by_size_10_percent():
    """PR: "a decrease in size of ≥10%" (here with unchanged density)."""
    r = assess(_hu((50, 45, 46), (80, 80, 80)), criteria="choi")
    assert responses(r) == ["baseline", "PR", "SD"]


def test_choi_partial_response_by_density_15_percent():
    """PR: "or a decrease in tumor density (HU) ≥15% on CT": size unchanged, 80 → 68 HU."""
    r = assess(_hu((50, 50, 50), (80, 68, 70)), criteria="choi")
    assert responses(r) == ["baseline", "PR", "SD"]
    assert r["density_change_pct"].iloc[1] == pytest.approx(-15.0)


def test_choi_growth_with_density_response_is_not_progression():
    """PD: "an increase in tumor size of ≥10% and does not meet criteria of PR by tumor
    density (HU) on CT": +10% in size is PD at 80 → 75 HU but PR at 80 → 60 HU (a
    necrotic, growing GIST)."""
    assert responses(assess(_hu((50, 55), (80, 75)), criteria="choi")) == ["baseline", "PD"]
    assert responses(assess(_hu((50, 55), (80, 60)), criteria="choi")) == ["baseline", "PR"]


def test_choi_new_lesion_and_complete_response():
    """PD: "new lesions"; CR: "disappearance of all lesions; no new lesions"."""
    t = table({"L1": lesion("target", 50, 40), "X1": lesion("new", None, 8)})
    t["density_hu"] = [80, 80, None]
    assert responses(assess(t, criteria="choi")) == ["baseline", "PD"]
    assert responses(assess(_hu((50, 0), (80, None)), criteria="choi")) == ["baseline", "CR"]


def _two_hu(l1, l2, hu):
    t = table({"L1": lesion("target", *l1), "L2": lesion("target", *l2)})
    t["density_hu"] = list(hu)  # rows alternate L1, L2 per visit
    return t


def test_choi_density_compares_the_same_lesions():
    """PR: "a decrease in tumor density (HU) ≥15% on CT" (Choi et al. 2007, Table 3,
    doi:10.1200/JCO.2006.07.3049) is a change of the tumour's density, so the means at
    baseline and follow-up are taken over the same lesions. Baseline 100 and 50 HU; at follow-
    up only the 50 HU lesion has a density: not "density fell 33%", the density response is
    not evaluable, and with unchanged size the visit is NE (it could be PR by density)."""
    r = assess(_two_hu((30, 30), (30, 30), (100, 50, None, 50)), criteria="choi")
    assert responses(r) == ["baseline", "NE"]
    assert "density not evaluable: target lesion(s) L1" in r["reason"].iloc[1]
    # size still decides where it can: -10% is PR whatever the density
    r = assess(_two_hu((30, 27), (30, 27), (100, 50, None, 50)), criteria="choi")
    assert responses(r) == ["baseline", "PR"]
    # a lesion gone is left out of both means: L1 gone, L2 50 -> 40 HU is -20% (size -5%)
    r = assess(_two_hu((10, 0), (30, 38), (100, 50, None, 40)), criteria="choi")
    assert r["density_change_pct"].iloc[1] == pytest.approx(-20.0)
    assert responses(r) == ["baseline", "PR"]
    assert "density fell 20% from baseline 50 HU" in r["reason"].iloc[1]
