"""pH from bicarbonate and the fumarate → malate read-outs: simulate → compute → recover."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tumorscope.errors import FitError, TumorscopeWarning
from tumorscope.models.metabolic import two_site_signals
from tumorscope.models.metabolic.fumarate import FumarateMalate, malate_fumarate_ratio, ratio_change
from tumorscope.models.metabolic.ph import bicarbonate_ratio, ph_from_bicarbonate


def test_ph_round_trip_and_published_example() -> None:
    ph = np.array([6.6, 6.9, 7.1, 7.4])
    ratio = bicarbonate_ratio(ph)
    np.testing.assert_allclose(ph_from_bicarbonate(ratio * 100, np.full(4, 100.0)), ph)
    # Gallagher 2008: a ratio of 10 reads pH 7.17 with pKa 6.17
    assert ph_from_bicarbonate(10.0, 1.0) == pytest.approx(7.17)


def test_ph_flip_and_t1_corrections() -> None:
    true_ph, delay, t1h, t1c = 7.0, 10.0, 10.0, 8.0
    hco3_mz = bicarbonate_ratio(true_ph) * np.exp(-delay / t1h)
    co2_mz = np.exp(-delay / t1c)
    s_h = hco3_mz * np.sin(np.deg2rad(10.0))
    s_c = co2_mz * np.sin(np.deg2rad(30.0))
    got = ph_from_bicarbonate(
        s_h,
        s_c,
        flip_bicarbonate_deg=10.0,
        flip_co2_deg=30.0,
        delay_s=delay,
        t1_bicarbonate_s=t1h,
        t1_co2_s=t1c,
    )
    assert got == pytest.approx(true_ph, abs=1e-12)
    assert abs(ph_from_bicarbonate(s_h, s_c) - true_ph) > 0.3  # uncorrected: wrong
    with pytest.raises(FitError, match="both flip angles"):
        ph_from_bicarbonate(1.0, 1.0, flip_co2_deg=10.0)


def test_ph_noise_and_snr_gate() -> None:
    rng = np.random.default_rng(2)
    true_ph = 7.1
    co2, sigma = 50.0, 5.0  # CO2 SNR 10
    hco3 = co2 * bicarbonate_ratio(true_ph)
    n = 2000
    est = ph_from_bicarbonate(
        hco3 + rng.normal(0, sigma, n), co2 + rng.normal(0, sigma, n), noise_sigma=sigma
    )
    assert abs(np.nanmedian(est) - true_ph) < 0.01
    assert 0.03 < np.nanstd(est) < 0.06  # ≈ σ/(S ln 10) = 0.043 pH units at CO2 SNR 10
    low = ph_from_bicarbonate(np.array([100.0]), np.array([2.0]), noise_sigma=1.0)
    assert np.isnan(low[0])


def test_fumarate_ratio_change_and_kfm() -> None:
    t = np.arange(16) * 2.0
    flips = np.deg2rad(np.full((2, 16), 10.0))
    k = np.array([0.002, 0.01])  # untreated vs necrotic tumour
    s = 1e4 * two_site_signals(
        t,
        flips,
        k,
        r1p=1 / 30,
        r1l=1 / 20,
        input_rate=1.0,
        input_start_s=-2.0,
        input_duration_s=4.0,
    )
    ratio = malate_fumarate_ratio(s[:, 0], 0.55 * s[:, 1], 0.45 * s[:, 1])
    assert ratio[1] > 4 * ratio[0]
    np.testing.assert_allclose(ratio_change(ratio[1], ratio[0]), 100 * (ratio[1] / ratio[0] - 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TumorscopeWarning)
        fit = FumarateMalate(t, [10, 10], min_snr=0).fit(s)
    np.testing.assert_allclose(fit["kFM"], k, rtol=1e-4)
    np.testing.assert_allclose(fit["AUC_ratio"], ratio, rtol=1e-6)
    assert "kPL" not in fit
