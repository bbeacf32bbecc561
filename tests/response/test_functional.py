"""Functional response: repeatability (Raunig et al. 2015, doi:10.1177/0962280214537344) and
functional diffusion / parametric response maps (Moffat et al. 2005,
doi:10.1073/pnas.0501532102; Galbán et al. 2009, doi:10.1038/nm.1919)."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tumorscope.errors import DataError, ResponseError
from tumorscope.response.functional import (
    functional_change,
    joint_response_map,
    parametric_response_map,
    repeatability,
)


def test_repeatability_known_answer_by_hand():
    """wSD = sqrt(mean(d²)/2); RC = 1.96·√2·wSD; RMS wCV = sqrt(mean(d²/(2m²)))."""
    a, b = np.array([1.0, 2.0, 3.0]), np.array([1.1, 1.8, 3.3])
    d = a - b
    m = (a + b) / 2
    r = repeatability(a, b, method="rms")
    assert r.wsd == pytest.approx(math.sqrt(np.mean(d**2) / 2))
    assert r.wcv == pytest.approx(math.sqrt(np.mean(d**2 / (2 * m**2))))
    assert r.rc == pytest.approx(2.7718 * r.wsd, rel=1e-4)
    assert r.rc_pct == pytest.approx(277.18 * r.wcv, rel=1e-4)
    assert r.limits_pct == pytest.approx((-r.rc_pct, r.rc_pct))
    assert r.n_subjects == 3


def test_repeatability_log_method_recovers_simulated_wcv():
    """With multiplicative log-normal error of SD s, the log method's wCV estimates
    sqrt(exp(s²) − 1) and its limits are exp(±2.77·s) − 1 (asymmetric)."""
    rng = np.random.default_rng(1)
    s = 0.08
    truth = rng.uniform(0.8e-3, 1.6e-3, 4000)
    a = truth * np.exp(rng.normal(0, s, truth.size))
    b = truth * np.exp(rng.normal(0, s, truth.size))
    r = repeatability(a, b)
    assert r.wcv == pytest.approx(math.sqrt(math.expm1(s**2)), rel=0.05)
    lo, hi = r.limits_pct
    assert hi == pytest.approx(100 * math.expm1(2.7718 * s), rel=0.06)
    assert lo == pytest.approx(100 * math.expm1(-2.7718 * s), rel=0.06)
    assert hi > -lo


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        ([1.0], [1.0], "at least 2"),
        ([1.0, 2.0], [1.0], "test has 2"),
        ([1.0, -2.0], [1.0, 2.0], "positive"),
    ],
)
def test_repeatability_rejects_bad_input(a, b, match):
    with pytest.raises(DataError, match=match):
        repeatability(a, b)


def _adc_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "subject": ["1"] * 6,
            "visit": ["1", "1", "2", "2", "3", "3"],
            "date": ["2026-01-05"] * 2 + ["2026-02-02"] * 2 + ["2026-03-02"] * 2,
            "lesion_id": ["L1", "L2"] * 3,
            "ADC_mean": [1.0e-3, 1.0e-3, 1.2e-3, 0.95e-3, np.nan, 0.8e-3],
        }
    )


def test_functional_change_against_relative_rc():
    """A change is real when outside the repeatability limits: +20% > 15% is an increase,
    −5% is no change, −20% a decrease, a missing value NE."""
    fc = functional_change(_adc_table(), statistic="ADC_mean", rc_pct=15.0)
    assert fc["call"].tolist() == ["increase", "no change", "NE", "decrease"]
    assert fc["change_pct"].iloc[0] == pytest.approx(20.0)


def test_functional_change_against_absolute_rc_and_repeatability_object():
    fc = functional_change(_adc_table(), statistic="ADC_mean", rc=0.1e-3)
    assert fc["call"].tolist() == ["increase", "no change", "NE", "decrease"]
    rep = repeatability([1.0, 1.0, 1.0], [1.1, 0.9, 1.0])
    fc = functional_change(_adc_table(), statistic="ADC_mean", repeatability=rep)
    # s_log = 0.058, limits exp(±2.77·s) − 1 = −14.9% / +17.5%
    assert rep.limits_pct == pytest.approx((-14.9, 17.5), abs=0.1)
    assert fc["call"].tolist() == ["increase", "no change", "NE", "decrease"]


def test_functional_change_needs_exactly_one_threshold():
    with pytest.raises(ResponseError, match="exactly one"):
        functional_change(_adc_table(), statistic="ADC_mean", rc=1.0, rc_pct=10.0)
    with pytest.raises(ResponseError, match="no column 'Ktrans_mean'"):
        functional_change(_adc_table(), statistic="Ktrans_mean", rc_pct=10.0)


def test_parametric_response_map_fractions_and_labels():
    """Voxels rising by more than the threshold are "increased", falling "decreased", the
    rest "unchanged"; fractions are over the lesion voxels with finite values."""
    before = np.full((4, 5, 2), 1.0e-3)
    after = before.copy()
    after[0] += 0.6e-3  # 10 voxels up
    after[1] -= 0.6e-3  # 10 voxels down
    after[2, 0, 0] = np.nan  # excluded
    mask = np.ones(before.shape, bool)
    mask[3] = False  # 10 voxels outside
    r = parametric_response_map(before, after, mask, threshold=0.55e-3)
    assert r.n_voxels == 29 and r.n_excluded == 1
    assert r.fractions == pytest.approx(
        {"ADC unchanged": 9 / 29, "ADC increased": 10 / 29, "ADC decreased": 10 / 29}
    )
    assert set(np.unique(r.labels[0])) == {2} and set(np.unique(r.labels[1])) == {3}
    assert r.labels[3].max() == 0 and r.labels[2, 0, 0] == 0


def test_joint_response_map_encodes_combinations(tmp_path):
    shape = (2, 2, 1)
    mask = np.ones(shape, bool)
    adc_b, kt_b = np.ones(shape), np.ones(shape)
    adc_a = np.array([[[1.5], [1.0]], [[0.5], [1.5]]])
    kt_a = np.array([[[0.5], [1.0]], [[1.0], [1.5]]])
    r = joint_response_map(
        {"ADC": adc_b, "Ktrans": kt_b},
        {"ADC": adc_a, "Ktrans": kt_a},
        mask,
        thresholds={"ADC": 0.2, "Ktrans": 0.2},
    )
    assert r.legend[1 + 1 + 2 * 3] == "ADC increased, Ktrans decreased"
    assert r.fractions["ADC increased, Ktrans decreased"] == 0.25
    assert r.fractions["ADC unchanged, Ktrans unchanged"] == 0.25
    assert r.fractions["ADC decreased, Ktrans unchanged"] == 0.25
    assert r.fractions["ADC increased, Ktrans increased"] == 0.25
    assert sum(r.fractions.values()) == pytest.approx(1.0)
    p = r.to_nifti(tmp_path / "prm.nii.gz", affine=np.diag([2.0, 2.0, 4.0, 1.0]))
    img = nib.load(p)
    assert np.array_equal(np.asarray(img.dataobj), r.labels)
    assert img.get_data_dtype() == np.int16


def test_response_map_errors():
    a = np.ones((2, 2, 2))
    with pytest.raises(DataError, match="one shape"):
        parametric_response_map(a, np.ones((2, 2, 3)), a > 0, threshold=0.1)
    with pytest.raises(DataError, match="must be > 0"):
        parametric_response_map(a, a, a > 0, threshold=0.0)
    with pytest.raises(DataError, match="no voxel"):
        parametric_response_map(a, a, a < 0, threshold=0.1)
    with pytest.raises(DataError, match="same maps"):
        joint_response_map({"ADC": a}, {"D": a}, a > 0, thresholds={"ADC": 0.1})
