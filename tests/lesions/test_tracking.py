"""Lesion identity across visits."""

from __future__ import annotations

import numpy as np
import pytest

from tumorscope.errors import DataError
from tumorscope.lesions.tracking import TRACKING_COLUMNS, VisitLabels, track_lesions
from tumorscope.volume import Volume

SHAPE = (60, 60, 20)
AFF = np.diag([1.0, 1.0, 2.0, 1.0])


def _balls(*specs, shift=(0.0, 0.0, 0.0)):
    """Label map with balls (label, centre_mm, radius_mm); the patient shifted by ``shift``."""
    ijk = np.indices(SHAPE).reshape(3, -1).T
    xyz = (ijk @ AFF[:3, :3].T).reshape(*SHAPE, 3) - np.asarray(shift)
    out = np.zeros(SHAPE, np.int32)
    for label, centre, radius in specs:
        out[((xyz - centre) ** 2).sum(-1) <= radius**2] = label
    return Volume(out, AFF)


def _by(df, visit):
    sub = df[df["visit"] == visit]
    return {r.lesion_id: r for r in sub.itertuples()}


def test_matching_by_overlap_and_distance_new_disappeared_reappeared():
    v1 = _balls((1, [15, 15, 10], 5), (2, [40, 20, 20], 6), (3, [30, 45, 16], 4))
    # labels renumbered; L1 shrinks; L2 moved 12 mm without overlap; L3 gone; a new lesion
    v2 = _balls((2, [15, 15, 10], 3), (1, [40, 29 + 3, 20], 2), (3, [50, 50, 30], 3))
    # L3 comes back, the new one stays
    v3 = _balls((1, [15, 15, 10], 3), (5, [30, 45, 16], 3), (2, [50, 50, 30], 3))
    df = track_lesions([VisitLabels("01", v1), VisitLabels("02", v2), VisitLabels("03", v3)])
    assert tuple(df.columns) == TRACKING_COLUMNS
    b = _by(df, "01")
    assert {k: r.label for k, r in b.items()} == {"L1": 1, "L2": 2, "L3": 3}
    assert {r.status for r in b.values()} == {"baseline"}
    s = _by(df, "02")
    assert s["L1"].label == 2 and s["L1"].matched_by == "overlap" and s["L1"].status == "present"
    assert s["L2"].label == 1 and s["L2"].matched_by == "distance"
    assert s["L2"].distance_mm == pytest.approx(12.0, abs=0.5)
    assert s["L3"].status == "disappeared" and s["L3"].label == 0
    assert s["L4"].status == "new" and s["L4"].label == 3
    t = _by(df, "03")
    assert t["L3"].status == "reappeared" and t["L3"].label == 5
    assert t["L4"].status == "present" and t["L4"].label == 2
    assert t["L2"].status == "disappeared"


def test_far_lesion_is_new_not_matched():
    v1 = _balls((1, [15, 15, 10], 4))
    v2 = _balls((1, [45, 45, 30], 4))
    df = track_lesions([VisitLabels("a", v1), VisitLabels("b", v2)], max_distance_mm=15.0)
    s = _by(df, "b")
    assert s["L1"].status == "disappeared" and s["L2"].status == "new"


def test_registration_transform_is_used():
    shift = np.array([20.0, -8.0, 0.0])  # the patient lies 20 mm further right at visit 2
    v1 = _balls((1, [15, 25, 10], 4), (2, [35, 30, 20], 4))
    v2 = _balls((1, [35, 30, 20], 4), (2, [15, 25, 10], 4), shift=shift)
    to_ref = np.eye(4)
    to_ref[:3, 3] = shift  # reference world -> visit-2 world
    with_reg = track_lesions([VisitLabels("1", v1), VisitLabels("2", v2, to_reference=to_ref)])
    s = _by(with_reg, "2")
    assert s["L1"].label == 2 and s["L2"].label == 1
    assert s["L1"].matched_by == "overlap" and s["L1"].dice > 0.95
    # without it, the shifted lesions are mismatched or new
    without = _by(track_lesions([VisitLabels("1", v1), VisitLabels("2", v2)]), "2")
    assert without["L1"].label != 2 or without["L1"].matched_by != "overlap"


def test_ids_from_label_tables_are_kept():
    v1 = _balls((1, [15, 15, 10], 4), (2, [40, 40, 20], 4))
    v2 = _balls((7, [15, 15, 10], 4), (3, [45, 15, 10], 3))
    df = track_lesions(
        [
            VisitLabels("01", v1, ids={1: "T1", 2: "T2"}),
            VisitLabels("02", v2, ids={7: "T1", 3: "N1"}),
        ]
    )
    s = _by(df, "02")
    assert s["T1"].label == 7 and s["T1"].matched_by == "id" and s["T1"].dice == pytest.approx(1.0)
    assert s["N1"].status == "new"
    assert s["T2"].status == "disappeared"


def test_bad_ids_are_errors():
    v = _balls((1, [15, 15, 10], 4), (2, [40, 40, 20], 4))
    with pytest.raises(DataError, match=r"visit 01.*label\(s\) \[2\] have no lesion id"):
        track_lesions([VisitLabels("01", v, ids={1: "A"})])
    with pytest.raises(DataError, match="more than one label"):
        track_lesions([VisitLabels("01", v, ids={1: "A", 2: "A"})])
    with pytest.raises(DataError, match="integer"):
        track_lesions([VisitLabels("01", v.astype(np.float32))])


def test_reference_visit_and_prebaseline():
    v0 = _balls((1, [15, 15, 10], 4))
    v1 = _balls((1, [15, 15, 10], 5), (2, [40, 40, 20], 4))
    v2 = _balls((1, [15, 15, 10], 5), (2, [40, 40, 20], 4), (3, [45, 15, 10], 3))
    df = track_lesions(
        [VisitLabels("00", v0), VisitLabels("01", v1), VisitLabels("02", v2)], reference=1
    )
    assert list(df[df["visit"] == "00"]["status"]) == ["prebaseline"]
    assert set(df[df["visit"] == "01"]["status"]) == {"baseline"}
    b = _by(df, "01")
    assert b["L1"].matched_by == "overlap" and b["L2"].matched_by == ""
    assert _by(df, "02")["L3"].status == "new"
    with pytest.raises(DataError, match="reference index 3"):
        track_lesions([VisitLabels("00", v0)], reference=3)
