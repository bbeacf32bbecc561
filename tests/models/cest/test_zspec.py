"""Z-spectrum tools: the "Done when" figures of issue 19 on Bloch–McConnell spectra
(:mod:`tumorscope.models.cest.bloch`, itself checked against bmctool in test_bloch.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _cest_sim import OFFSETS, tissue

from tumorscope.errors import DataError
from tumorscope.models.cest import (
    CESTLorentzian,
    arex,
    b1_correct,
    mtr_asym,
    mtr_rex,
    normalise,
    ppm_from_hz,
    simulate_z,
    wassr_b0,
)
from tumorscope.models.cest.bloch import BMSystem, ExchangePool

SHIFTS = (-0.5, -0.25, 0.0, 0.25, 0.5)


def test_ppm_from_hz() -> None:
    np.testing.assert_allclose(ppm_from_hz([-447.06, 127.732], 3.0), [-3.5, 1.0], atol=1e-4)
    np.testing.assert_allclose(ppm_from_hz(298.05, 7.0), 1.0, atol=1e-4)
    with pytest.raises(DataError, match="field"):
        ppm_from_hz(1.0, 0.0)


def test_normalise_interpolates_m0_in_acquisition_order() -> None:
    # signal drifts linearly from 100 to 110 over the series; M0 first and last
    drift = np.linspace(100.0, 110.0, 6)
    z_true = np.array([1.0, 0.8, 0.5, 0.7, 0.9, 1.0])
    series = (drift * z_true)[None, :]
    z = normalise(series, [0, 5])
    np.testing.assert_allclose(z[0], z_true[1:5], rtol=1e-12)
    # a single M0 cannot follow the drift
    assert not np.allclose(normalise(series, [0])[0], z_true[1:])
    np.testing.assert_array_equal(normalise(np.zeros((1, 6)), [0, 5]), np.full((1, 4), np.nan))
    with pytest.raises(DataError, match="M0"):
        normalise(series, [])
    with pytest.raises(DataError, match="M0 indices"):
        normalise(series, [9])


def test_wassr_b0_within_002_ppm_at_snr100() -> None:
    # WASSR: weak (0.2 µT) saturation; ±0.5 ppm shifts; Gaussian noise sigma = 0.01 (SNR 100)
    rng = np.random.default_rng(3)
    sysm = tissue()
    for s in SHIFTS:
        z = simulate_z(sysm, OFFSETS, field_t=3.0, b1_ut=0.2, tsat_s=2.0, b0_shift_ppm=s)
        b0 = wassr_b0(z + rng.normal(0, 0.01, (200, OFFSETS.size)), OFFSETS)
        assert b0.shape == (200,)
        assert np.max(np.abs(b0 - s)) < 0.02, s


def test_wassr_b0_on_cest_spectra_is_unbiased() -> None:
    # the CEST spectrum itself (1 µT): a broad flat-bottomed line, per-voxel spread larger
    rng = np.random.default_rng(4)
    for s in (-0.5, 0.5):
        z = simulate_z(tissue(), OFFSETS, field_t=3.0, b1_ut=1.0, tsat_s=2.0, b0_shift_ppm=s)
        b0 = wassr_b0(z + rng.normal(0, 0.01, (300, OFFSETS.size)), OFFSETS)
        assert abs(np.mean(b0) - s) < 0.01
        assert np.sqrt(np.mean((b0 - s) ** 2)) < 0.03
    # noise-free, the minimum is found exactly enough
    z = simulate_z(tissue(), OFFSETS, field_t=3.0, b1_ut=1.0, tsat_s=2.0, b0_shift_ppm=0.37)
    assert abs(float(wassr_b0(z, OFFSETS)) - 0.37) < 0.005


def _spectra(param: str, values: tuple[float, ...], s: float) -> np.ndarray:
    out = []
    for v in values:
        sysm = tissue(amide_f=v) if param == "f" else tissue(amide_k=v)
        out.append(simulate_z(sysm, OFFSETS, field_t=3.0, b1_ut=1.0, tsat_s=2.0, b0_shift_ppm=s))
    return np.array(out)


FRACTIONS = (3e-4, 6e-4, 9e-4, 1.2e-3, 1.5e-3)
RATES = (10.0, 30.0, 60.0, 120.0, 240.0)


@pytest.mark.parametrize(("param", "values"), [("f", FRACTIONS), ("k", RATES)])
def test_apt_mtrasym_rises_with_amide_after_b0_shifts(param: str, values: tuple) -> None:
    ref = None
    for s in SHIFTS:
        z = _spectra(param, values, s)
        m = mtr_asym(z, OFFSETS, 3.5)  # B0 estimated from the spectra themselves
        assert np.all(np.diff(m) > 0), (s, m)
        given = mtr_asym(z, OFFSETS, 3.5, b0_ppm=np.full(len(values), s))
        if ref is None:
            ref = given
        # with the true B0 the asymmetry is the same whatever the shift
        np.testing.assert_allclose(given, ref, atol=2e-3)
        np.testing.assert_allclose(m, given, atol=3e-3)
    assert np.isnan(mtr_asym(z, OFFSETS, 20.0, b0_ppm=np.zeros(len(values)))).all()


@pytest.mark.parametrize(("param", "values"), [("f", FRACTIONS), ("k", RATES)])
def test_lorentzian_amide_amplitude_rises_after_b0_shifts(param: str, values: tuple) -> None:
    model = CESTLorentzian(OFFSETS)
    for s in (-0.5, 0.5):
        z = _spectra(param, values, s)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = model.fit(z)
        amp = fit["amide_amp"]
        assert np.all(np.diff(amp) > 0), (s, amp)
        np.testing.assert_allclose(fit["B0"], s, atol=0.02)


def test_lorentzian_with_noise_keeps_the_order_on_average() -> None:
    rng = np.random.default_rng(5)
    z = _spectra("f", (3e-4, 9e-4, 1.5e-3), 0.3)
    noisy = z[:, None, :] + rng.normal(0, 0.005, (3, 40, OFFSETS.size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = CESTLorentzian(OFFSETS).fit(noisy, b0=wassr_b0(noisy, OFFSETS))
    med = np.median(fit["amide_amp"], axis=1)
    assert np.all(np.diff(med) > 0)


def test_mtr_asym_shapes_and_errors() -> None:
    z = np.ones((2, 3, OFFSETS.size))
    assert mtr_asym(z, OFFSETS, [2.0, 3.5], b0_ppm=0.0).shape == (2, 3, 2)
    np.testing.assert_allclose(mtr_asym(z, OFFSETS, 3.5, b0_ppm=0.0), 0.0, atol=1e-12)
    with pytest.raises(DataError, match="offsets"):
        mtr_asym(z, OFFSETS[:-1], 3.5)
    with pytest.raises(DataError, match="B0 map"):
        mtr_asym(z, OFFSETS, 3.5, b0_ppm=np.zeros(4))


def test_mtr_rex_and_arex() -> None:
    # water + amide only: AREX ~ f·k·(labelling) (Zaiss 2014) doubles with the fraction
    vals = []
    for f in (5e-4, 1e-3):
        sysm = BMSystem(1.3, 0.07, (ExchangePool("amide", f, 1.0, 0.1, 30.0, 3.5),))
        z = simulate_z(sysm, [-3.5, 3.5], field_t=3.0, b1_ut=1.0, tsat_s=5.0)
        vals.append(float(arex(z[1], z[0], 1300.0)))
    assert 0 < vals[0] < vals[1]
    assert vals[1] / vals[0] == pytest.approx(2.0, rel=0.25)
    assert np.isnan(mtr_rex(0.0, 0.5))
    assert np.isnan(arex(0.5, 0.6, 0.0))


def test_b1_correction_recovers_the_contrast_at_the_target_b1() -> None:
    # contrast(B1) of a BM tissue; a voxel at rel B1 0.8 acquired at nominal 1.0 and 2.0 µT
    sysm = tissue()

    def apt(b1: float) -> float:
        z = simulate_z(sysm, [-3.5, 3.5], field_t=3.0, b1_ut=b1, tsat_s=2.0)
        return float(z[0] - z[1])

    measured = np.array([apt(0.8 * 1.0), apt(0.8 * 2.0)])
    corrected = b1_correct(measured, [1.0, 2.0], 0.8, 1.2)
    truth = apt(1.2)
    # linear interpolation between 0.8 and 1.6 µT: within 10 % of the true contrast
    assert corrected == pytest.approx(truth, rel=0.1)
    assert abs(corrected - truth) < abs(apt(0.8 * 1.2) - truth)
    assert np.isnan(b1_correct(measured, [1.0, 2.0], 0.8, 2.0))  # above 1.6 µT: no extrapolation
    with pytest.raises(DataError, match="B1 levels"):
        b1_correct(measured[:1], [1.0], 1.0, 1.0)


def test_single_pool_wassr_exact() -> None:
    z = simulate_z(
        BMSystem(1.0, 0.1), OFFSETS, field_t=3.0, b1_ut=0.3, tsat_s=1.0, b0_shift_ppm=-0.42
    )
    assert float(wassr_b0(z, OFFSETS)) == pytest.approx(-0.42, abs=2e-3)
