"""19F cell quantification: calibration, counts within the noise-predicted uncertainty,
detection limits and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from tumorscope.errors import DataError, FitError
from tumorscope.models.cells.fluorine import (
    AVOGADRO,
    calibrate_fluorine,
    count_cells,
    detection_amplitude,
    detection_threshold,
    rayleigh_sigma,
    spins_per_voxel,
)

SHAPE = (40, 40, 12)
VOX_ML = 0.001  # 1 mm^3
F_PER_CELL = 2e12  # 19F spins per cell (order of magnitude of PFC-labelled immune cells)
KAPPA = 1e-15  # a.u. of signal per 19F spin in a voxel (scanner gain of the simulation)
SIGMA = 1.0


def _rician(a: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.abs(
        a + sigma * rng.standard_normal(a.shape) + 1j * sigma * rng.standard_normal(a.shape)
    )


def _scene(rng: np.random.Generator, cells_blob: float, cells_faint: float):
    """A 19F image with two reference tubes, a compact labelled blob, a faint region, an
    empty region and background. Returns image, tubes, conc, labels, background, truth."""
    amp = np.zeros(SHAPE)
    tubes = []
    conc = [20.0, 60.0]  # mM 19F
    for k, c in enumerate(conc):
        m = np.zeros(SHAPE, bool)
        m[2 + 10 * k : 8 + 10 * k, 2:8, 2:10] = True
        amp[m] = KAPPA * spins_per_voxel(c, VOX_ML)
        tubes.append(m)
    labels = np.zeros(SHAPE, np.int32)
    # region 1: compact blob of 27 voxels holding the cells evenly, inside a 7^3 region
    labels[20:27, 20:27, 2:9] = 1
    blob = np.zeros(SHAPE, bool)
    blob[22:25, 22:25, 4:7] = True
    amp[blob] = cells_blob * F_PER_CELL * KAPPA / blob.sum()
    # region 2: the faint one, cells spread over 27 voxels
    labels[30:37, 20:27, 2:9] = 2
    faint = np.zeros(SHAPE, bool)
    faint[32:35, 22:25, 4:7] = True
    amp[faint] = cells_faint * F_PER_CELL * KAPPA / faint.sum()
    # region 3: no cells
    labels[20:27, 30:37, 2:9] = 3
    background = np.zeros(SHAPE, bool)
    background[:, 32:, :] = True
    background[labels > 0] = False
    img = _rician(amp, SIGMA, rng)
    return img, tubes, conc, labels, background


def test_spins_per_voxel_worked_example():
    # 1 mM of 19F in 1 uL holds 1e-3 mol/L * 1e-6 L * N_A = 6.022e14 spins
    assert spins_per_voxel(1.0, 0.001) == pytest.approx(1e-9 * AVOGADRO, rel=1e-12)
    assert spins_per_voxel(1.0, 0.001) == pytest.approx(6.02214076e14, rel=1e-9)


def test_detection_threshold_matches_rayleigh_tail():
    # P(M > tau | no signal) = exp(-tau^2 / 2 sigma^2) = alpha / n
    tau = detection_threshold(2.0, 100, alpha=0.05)
    assert np.exp(-(tau**2) / (2 * 4.0)) == pytest.approx(0.05 / 100, rel=1e-12)


def test_rayleigh_sigma_recovers_noise():
    rng = np.random.default_rng(1)
    m = _rician(np.zeros(20000), 3.0, rng)
    assert rayleigh_sigma(m) == pytest.approx(3.0, rel=0.02)  # SE ~ 0.35 %


def test_calibration_recovers_kappa():
    rng = np.random.default_rng(2)
    img, tubes, conc, _labels, bg = _scene(rng, 1e6, 0.0)
    cal = calibrate_fluorine(img, tubes, conc, voxel_volume_ml=VOX_ML, background=bg)
    assert cal.noise_sigma == pytest.approx(SIGMA, rel=0.03)
    # tubes: 20 and 60 mM * 6.02e14 spins/mM/uL * 1e-15 -> SNR 12 and 36
    assert np.all(cal.tube_snr > 5)
    assert cal.signal_per_spin == pytest.approx(KAPPA, rel=4 * cal.signal_per_spin_se / KAPPA)


def test_counts_within_noise_predicted_uncertainty():
    """Monte Carlo over 40 seeds: the count's z-score against the truth has mean ~0 and SD ~1
    (the predicted SE is honest). With 40 draws the SE of the mean z is 0.16 and of the SD
    about 0.11, so |mean| < 0.5 and 0.6 < SD < 1.5 are 3-sigma-wide checks."""
    truth = 5e5
    zs = []
    for seed in range(40):
        rng = np.random.default_rng(100 + seed)
        img, tubes, conc, labels, _bg = _scene(rng, truth, 0.0)
        cal = calibrate_fluorine(img, tubes, conc, voxel_volume_ml=VOX_ML, noise_sigma=SIGMA)
        tab = count_cells(img, labels, cal, fluorine_per_cell=F_PER_CELL)
        i = int(np.flatnonzero(tab["label"] == 1)[0])
        assert tab["status"][i] == "quantified"
        zs.append((tab["cells"][i] - truth) / tab["cells_se"][i])
    zs_a = np.asarray(zs)
    assert abs(zs_a.mean()) < 0.5
    assert 0.6 < zs_a.std(ddof=1) < 1.5


def test_below_detection_is_not_a_number():
    rng = np.random.default_rng(7)
    # faint: 2e3 cells * 2e12 spins * 1e-15 = 4 a.u. over 27 voxels -> 0.15 sigma per voxel
    img, tubes, conc, labels, _bg = _scene(rng, 5e5, 2e3)
    cal = calibrate_fluorine(img, tubes, conc, voxel_volume_ml=VOX_ML, noise_sigma=SIGMA)
    tab = count_cells(img, labels, cal, fluorine_per_cell=F_PER_CELL)
    by = {int(lab): j for j, lab in enumerate(tab["label"])}
    for lab in (2, 3):
        j = by[lab]
        assert tab["status"][j] == "below detection"
        assert np.isnan(tab["cells"][j]) and np.isnan(tab["fluorine_spins"][j])
        # the decision threshold: cells in one voxel giving an amplitude at the threshold
        # (detected half the time); the detection limit is higher (Currie, 95 %)
        tau = detection_threshold(SIGMA, int(tab["n_voxels"][j]), alpha=0.01)
        expected = np.sqrt(tau**2 - SIGMA**2) / KAPPA / F_PER_CELL
        assert tab["cells_decision_threshold"][j] == pytest.approx(expected, rel=0.05)
        assert tab["cells_detection_limit"][j] > 1.3 * tab["cells_decision_threshold"][j]
        assert np.isnan(tab["near_threshold_fraction"][j]) and not tab["near_threshold"][j]
    assert tab["status"][by[1]] == "quantified"


def test_bad_input():
    rng = np.random.default_rng(3)
    img, tubes, conc, labels, _bg = _scene(rng, 1e6, 0.0)
    with pytest.raises(FitError, match="one known 19F concentration"):
        calibrate_fluorine(img, tubes, conc[:1], voxel_volume_ml=VOX_ML, noise_sigma=1.0)
    with pytest.raises(FitError, match="at least one reference tube"):
        calibrate_fluorine(img, [], [], voxel_volume_ml=VOX_ML, noise_sigma=1.0)
    with pytest.raises(FitError, match="fluorine_mM"):
        calibrate_fluorine(
            img, tubes, [20.0, float("nan")], voxel_volume_ml=VOX_ML, noise_sigma=1.0
        )
    with pytest.raises(FitError, match="noise_sigma or a signal-free background"):
        calibrate_fluorine(img, tubes, conc, voxel_volume_ml=VOX_ML)
    with pytest.raises(DataError, match="empty"):
        calibrate_fluorine(
            img, [np.zeros(SHAPE, bool)], [10.0], voxel_volume_ml=VOX_ML, noise_sigma=1.0
        )
    with pytest.raises(DataError, match="too close to the noise floor"):
        calibrate_fluorine(img, [labels == 3], [10.0], voxel_volume_ml=VOX_ML, noise_sigma=1.0)
    with pytest.raises(DataError, match="does not match"):
        calibrate_fluorine(
            img, [tubes[0][:, :, :5]], [10.0], voxel_volume_ml=VOX_ML, noise_sigma=1.0
        )
    cal = calibrate_fluorine(img, tubes, conc, voxel_volume_ml=VOX_ML, noise_sigma=1.0)
    with pytest.raises(FitError, match="fluorine_per_cell"):
        count_cells(img, labels, cal, fluorine_per_cell=0.0)
    with pytest.raises(DataError, match="labels shape"):
        count_cells(img, labels[:5], cal, fluorine_per_cell=F_PER_CELL)


def test_worked_example_by_hand():
    """The arithmetic of docs/cell-imaging.md: a 50 mM 19F tube in 1 µL voxels holds
    50 × 6.022e14 = 3.011e16 spins per voxel; its (noise-corrected) signal 30.11 gives
    κ = 1e-15 per spin. A region whose 10 detected voxels sum to 500 (after correction)
    holds 5e17 spins = 5e5 cells of 1e12 spins each; SE from noise σ·sqrt(10)/500 = 0.63 %."""
    sigma = 1.0
    img = np.zeros((10, 10, 10))
    tube = np.zeros(img.shape, bool)
    tube[:3, :3, :3] = True
    a_tube = 50 * 6.02214076e14 * 1e-15
    img[tube] = np.sqrt(a_tube**2 + sigma**2)  # magnitude whose corrected value is a_tube
    region = np.zeros(img.shape, np.int32)
    region[5:9, 5:9, 5:9] = 1
    hot = np.zeros(img.shape, bool)
    hot[6, 6, 5:10] = True
    hot[7, 7, 5:10] = True
    img[hot & (region == 1)] = np.sqrt(50.0**2 + sigma**2)  # 8 voxels in the region...
    img[6, 5, 6] = img[6, 5, 7] = np.sqrt(50.0**2 + sigma**2)  # ...plus 2 -> 10 x 50 = 500
    cal = calibrate_fluorine(img, [tube], [50.0], voxel_volume_ml=0.001, noise_sigma=sigma)
    assert cal.signal_per_spin == pytest.approx(1e-15, rel=1e-12)
    tab = count_cells(img, region, cal, fluorine_per_cell=1e12)
    assert tab["n_detected"][0] == 10
    assert tab["fluorine_spins"][0] == pytest.approx(5e17, rel=1e-12)
    assert tab["cells"][0] == pytest.approx(5e5, rel=1e-12)
    rel_k = cal.signal_per_spin_se / cal.signal_per_spin
    expected_se = 5e5 * np.sqrt((np.sqrt(10) / 500) ** 2 + rel_k**2)
    assert tab["cells_se"][0] == pytest.approx(expected_se, rel=1e-9)


def test_decision_threshold_and_currie_detection_limit_from_the_rician_distribution():
    """Issue 24, item 11. Currie, Anal Chem 1968;40:586-593 (doi:10.1021/ac60259a007): the
    decision threshold (critical level L_C) bounds false positives (here α family-wise per
    region, ``τ``), the detection limit L_D is the true amount detected with probability
    1 − β = 95 %. A signal exactly at the decision threshold is detected only 50 % of the time.
    For a Rician magnitude both amplitudes solve ``P(M > τ | A) = p`` (Marcum Q); L_D is
    1.35-1.6× the old ``sqrt(τ² − σ²)`` for regions of 1-343 voxels at α = 0.01."""
    rng = np.random.default_rng(11)
    for n in (1, 27, 343):
        tau = detection_threshold(SIGMA, n, alpha=0.01)
        a50 = detection_amplitude(SIGMA, tau, 0.5)
        a95 = detection_amplitude(SIGMA, tau, 0.95)
        assert a50 == pytest.approx(np.sqrt(tau**2 - SIGMA**2), rel=0.005)
        assert 1.35 <= a95 / np.sqrt(tau**2 - SIGMA**2) <= 1.6
        for a, p in ((a50, 0.5), (a95, 0.95)):
            m = np.abs(a + rng.standard_normal(200_000) + 1j * rng.standard_normal(200_000))
            assert float((m > tau).mean()) == pytest.approx(p, abs=0.004)
    # in the table: cells per voxel = amplitude / κ / F_c
    img, tubes, conc, labels, _bg = _scene(rng, 5e5, 0.0)
    cal = calibrate_fluorine(img, tubes, conc, voxel_volume_ml=VOX_ML, noise_sigma=SIGMA)
    tab = count_cells(img, labels, cal, fluorine_per_cell=F_PER_CELL)
    tau = float(tab["threshold"][0])
    k = cal.signal_per_spin * F_PER_CELL
    assert tab["cells_detection_limit"][0] == pytest.approx(
        detection_amplitude(SIGMA, tau, 0.95) / k
    )
    assert tab["cells_decision_threshold"][0] == pytest.approx(
        detection_amplitude(SIGMA, tau, 0.5) / k
    )
    with pytest.raises(FitError, match="probability"):
        detection_amplitude(SIGMA, tau, 1.0)


def test_regions_near_the_threshold_are_flagged():
    """Issue 24, item 11: where a region's voxels sit near the threshold, the count is biased
    low (voxels of the same amplitude fall under τ) and ``SE = σ sqrt(n_detected)`` understates
    the spread (selection by the threshold). tumorscope flags a region when more than 10 % of
    its counted signal comes from detected voxels whose estimated amplitude is under the
    detection limit. Simulated: 27 voxels at 5σ in a 343-voxel region (limit ≈ 6.1σ) are
    flagged, with z-scores spread > 2 SD and a bias; a compact blob at 37σ is not, and its
    z-scores are standard normal."""
    cal_kw = {"voxel_volume_ml": VOX_ML, "noise_sigma": SIGMA}
    per_voxel_faint = 5.0  # σ
    faint_cells = per_voxel_faint * 27 / (F_PER_CELL * KAPPA)
    z_faint, z_blob, flags_faint, flags_blob = [], [], [], []
    for seed in range(40):
        rng = np.random.default_rng(300 + seed)
        img, tubes, conc, labels, _bg = _scene(rng, 5e5, faint_cells)
        tab = count_cells(
            img,
            labels,
            calibrate_fluorine(img, tubes, conc, **cal_kw),
            fluorine_per_cell=F_PER_CELL,
        )
        by = {int(lab): j for j, lab in enumerate(tab["label"])}
        b, f = by[1], by[2]
        z_blob.append((tab["cells"][b] - 5e5) / tab["cells_se"][b])
        flags_blob.append(bool(tab["near_threshold"][b]))
        flags_faint.append(bool(tab["near_threshold"][f]))
        if tab["status"][f] == "quantified":
            z_faint.append((tab["cells"][f] - faint_cells) / tab["cells_se"][f])
    assert not any(flags_blob) and all(flags_faint)
    assert 0.6 < np.std(z_blob, ddof=1) < 1.5
    assert np.std(z_faint, ddof=1) > 2.0 and np.mean(z_faint) < -2.0
