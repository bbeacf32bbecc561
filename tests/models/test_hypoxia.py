"""Hypoxia: perfusion-gated R2* classes and the oxygen-challenge response."""

from __future__ import annotations

import numpy as np
import pytest

from tumorscope.errors import DataError, FitError
from tumorscope.models.hypoxia import (
    HypoxiaClass,
    hypoxia_classes,
    hypoxia_table,
    oxygen_challenge,
)


def test_classes_with_perfusion():
    r2 = np.array([20.0, 60.0, 60.0, 20.0, np.nan, 60.0]).reshape(6, 1, 1)
    kt = np.array([0.2, 0.2, 0.01, 0.01, 0.2, np.nan]).reshape(6, 1, 1)
    c = hypoxia_classes(r2, r2star_threshold_per_s=40.0, perfusion=kt, perfusion_threshold=0.05)
    assert c.dtype == np.uint8
    assert list(c.ravel()) == [
        HypoxiaClass.NORMAL,
        HypoxiaClass.HIGH_R2STAR_PERFUSED,
        HypoxiaClass.HIGH_R2STAR_POORLY_PERFUSED,
        HypoxiaClass.LOW_R2STAR_UNPERFUSED,
        HypoxiaClass.UNKNOWN,
        HypoxiaClass.UNKNOWN,
    ]


def test_classes_without_perfusion_and_mask():
    r2 = np.array([20.0, 60.0, 60.0]).reshape(3, 1, 1)
    mask = np.array([True, True, False]).reshape(3, 1, 1)
    c = hypoxia_classes(r2, r2star_threshold_per_s=40.0, mask=mask)
    assert list(c.ravel()) == [0, 1, 255]


def test_oxygen_challenge_with_stderr_is_calibrated():
    """Seeded MC: with no true change, the fraction called significant at z = 1.96 is the
    5 % false-positive rate (binomial SE 0.2 % over 10^4 voxels); a true drop of 4 SE is
    detected in ~98 % of voxels (power of a two-sided z test at 4 SE: 0.979)."""
    rng = np.random.default_rng(0)
    n = 10000
    se = np.full((n, 1, 1), 2.0)
    air = 40 + rng.normal(0, 2.0, (n, 1, 1))
    gas = 40 + rng.normal(0, 2.0, (n, 1, 1))
    res = oxygen_challenge(air, gas, stderr_air_per_s=se, stderr_gas_per_s=se)
    called = res.responding | res.increasing
    assert called.mean() == pytest.approx(0.05, abs=0.008)
    drop = 4 * np.sqrt(8.0)
    gas2 = 40 - drop + rng.normal(0, 2.0, (n, 1, 1))
    res2 = oxygen_challenge(air, gas2, stderr_air_per_s=se, stderr_gas_per_s=se)
    assert res2.responding.mean() == pytest.approx(0.979, abs=0.01)
    assert not res2.increasing.any() or res2.increasing.mean() < 1e-3
    np.testing.assert_allclose(res2.delta_r2star_per_s, gas2 - air)


def test_oxygen_challenge_fixed_threshold():
    air = np.array([40.0, 40.0, 40.0]).reshape(3, 1, 1)
    gas = np.array([30.0, 39.0, 50.0]).reshape(3, 1, 1)
    res = oxygen_challenge(air, gas, threshold_per_s=5.0)
    assert list(res.responding.ravel()) == [True, False, False]
    assert list(res.increasing.ravel()) == [False, False, True]


def test_hypoxia_bad_input():
    r2 = np.ones((3, 1, 1))
    with pytest.raises(FitError, match="perfusion_threshold"):
        hypoxia_classes(r2, r2star_threshold_per_s=1.0, perfusion=r2)
    with pytest.raises(DataError, match="one grid"):
        hypoxia_classes(
            r2, r2star_threshold_per_s=1.0, perfusion=np.ones((2, 1, 1)), perfusion_threshold=0.1
        )
    with pytest.raises(FitError, match=">= 0"):
        hypoxia_classes(r2, r2star_threshold_per_s=-1.0)
    with pytest.raises(FitError, match="fixed"):
        oxygen_challenge(r2, r2)
    with pytest.raises(FitError, match="both maps"):
        oxygen_challenge(r2, r2, stderr_air_per_s=r2)
    with pytest.raises(DataError, match="one grid"):
        oxygen_challenge(r2, np.ones((4, 1, 1)), threshold_per_s=1.0)


def test_hypoxia_is_perfused_and_oxygen_refractory():
    """Issue 24, item 12. Oxygen-enhanced MRI (O'Connor et al., Cancer Res 2016;76:787-795;
    O'Connor, Robinson & Waterton, Br J Radiol 2019;92:20180642) defines hypoxic tissue as
    perfused (enhancing on DCE) and oxygen-refractory (no significant response to breathing
    oxygen); poorly perfused tissue is not called hypoxic. Without the challenge no voxel is
    hypoxic; with it, perfused voxels split by their response whatever their R2*, and the
    poorly perfused keep their descriptive R2* classes."""
    r2 = np.array([20.0, 60.0, 20.0, 60.0, 60.0, 20.0, 60.0]).reshape(7, 1, 1)
    kt = np.array([0.2, 0.2, 0.2, 0.2, 0.01, 0.01, 0.2]).reshape(7, 1, 1)
    air = np.full((7, 1, 1), 40.0)
    gas = np.array([30.0, 30.0, 40.0, 40.0, 40.0, 40.0, np.nan]).reshape(7, 1, 1)
    ch = oxygen_challenge(air, gas, threshold_per_s=5.0)
    kw = {"r2star_threshold_per_s": 40.0, "perfusion": kt, "perfusion_threshold": 0.05}
    without = hypoxia_classes(r2, **kw)
    assert HypoxiaClass.HYPOXIC_PERFUSED_REFRACTORY not in without
    c = hypoxia_classes(r2, challenge=ch, **kw)
    assert list(c.ravel()) == [
        HypoxiaClass.PERFUSED_OXYGEN_ENHANCING,  # perfused, responds
        HypoxiaClass.PERFUSED_OXYGEN_ENHANCING,  # high R2* but responds: not hypoxic
        HypoxiaClass.HYPOXIC_PERFUSED_REFRACTORY,  # low R2*, perfused, refractory
        HypoxiaClass.HYPOXIC_PERFUSED_REFRACTORY,
        HypoxiaClass.HIGH_R2STAR_POORLY_PERFUSED,  # poorly perfused: never hypoxic
        HypoxiaClass.LOW_R2STAR_UNPERFUSED,
        HypoxiaClass.UNKNOWN,  # no oxygen response measured
    ]
    lab = np.ones((7, 1, 1), int)
    t = hypoxia_table(c, lab, voxel_volume_ml=0.5)
    np.testing.assert_allclose(t["hypoxic_volume_ml"], [1.0])
    np.testing.assert_allclose(t["fraction_hypoxic_perfused_refractory"], [2 / 6])
    assert np.isnan(hypoxia_table(without, lab)["hypoxic_volume_ml"][0])
    with pytest.raises(FitError, match="perfusion map"):
        hypoxia_classes(r2, r2star_threshold_per_s=40.0, challenge=ch)
    with pytest.raises(DataError, match="one grid"):
        hypoxia_classes(r2, challenge=oxygen_challenge(air[:3], gas[:3], threshold_per_s=5.0), **kw)


def test_hypoxia_table():
    c = np.array([0, 2, 2, 1, 255, 3, 0, 0], np.uint8).reshape(8, 1, 1)
    lab = np.array([1, 1, 1, 1, 1, 2, 2, 0]).reshape(8, 1, 1)
    t = hypoxia_table(c, lab, voxel_volume_ml=0.5)
    assert list(t["label"]) == [1, 2]
    assert list(t["n_voxels"]) == [5, 2] and list(t["n_classified"]) == [4, 2]
    np.testing.assert_allclose(t["fraction_high_r2star_poorly_perfused"], [0.5, 0.0])
    np.testing.assert_allclose(t["fraction_normal"], [0.25, 0.5])
    # perfused voxels classified without an oxygen challenge: hypoxia not assessed
    np.testing.assert_allclose(t["hypoxic_volume_ml"], [np.nan, np.nan])
    np.testing.assert_allclose(t["volume_ml"], [2.5, 1.0])
    with pytest.raises(DataError, match="labels shape"):
        hypoxia_table(c, lab[:4])
