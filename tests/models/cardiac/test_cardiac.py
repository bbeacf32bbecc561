"""Cardiac mapping on simulated Look-Locker data: MOLLI T1, ECV, T2-prep T2, AHA segments.

The Look-Locker data are simulated pulse by pulse (not from the fitted equation): an ideal
inversion, then a continuous train of small-angle spoiled readout pulses (TR 3 ms, 4°); the
longitudinal magnetisation before pulse n+1 is ``M0 - (M0 - M_n cos α) exp(-TR/T1)`` and the
signal ``M_n sin α``. The images are the pulses nearest to the effective inversion times of a
MOLLI 5(3)3 scheme at 60 bpm. The Look-Locker correction is then checked against the T1 of
the simulation (Deichmann & Haase 1992), and the apparent T1* against scipy's ``curve_fit``
of the same three-parameter equation (an independent solver).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import curve_fit

from tumorscope.errors import DataError
from tumorscope.models.cardiac import (
    AHA_SEGMENTS,
    MOLLIT1,
    ecv,
    fit_t2prep,
    look_locker_t1,
    segment_means,
)

TR_MS, ALPHA = 3.0, np.deg2rad(4.0)
TI_MS = np.array([100.0, 180.0, 1100.0, 1180.0, 2100.0, 2180.0, 3100.0, 4100.0])


def look_locker_signal(t1_ms: np.ndarray, m0: float = 1000.0) -> np.ndarray:
    """Signal at the pulses nearest ``TI_MS`` (pulse-by-pulse Bloch recursion)."""
    t1 = np.atleast_1d(np.asarray(t1_ms, dtype=float))
    n_pulses = round(float(TI_MS.max()) / TR_MS) + 1
    e1 = np.exp(-TR_MS / t1)
    mz = np.full(t1.shape, -m0)  # ideal inversion
    sig = np.empty((*t1.shape, n_pulses))
    for n in range(n_pulses):
        sig[..., n] = mz * np.sin(ALPHA)
        mz = m0 - (m0 - mz * np.cos(ALPHA)) * e1
    idx = np.round(TI_MS / TR_MS).astype(int)
    return np.abs(sig[..., idx])  # magnitude images


def test_molli_t1_recovered_on_look_locker_simulation() -> None:
    rng = np.random.default_rng(0)
    t1 = np.repeat(np.array([350.0, 600.0, 1000.0, 1200.0, 1600.0]), 40)
    y = look_locker_signal(t1)
    y = np.abs(y + rng.normal(0, 0.005 * 1000 * np.sin(ALPHA), y.shape))
    res = MOLLIT1(TI_MS).fit(y)
    err = res["T1"] / t1 - 1
    for v in np.unique(t1):
        assert abs(np.median(err[t1 == v])) < 0.02, v
    assert np.all(res["T1star"] < t1)  # apparent recovery is faster
    # uncorrected T1* would be 40-50 % low: the correction is what recovers T1
    assert np.median(res["T1star"] / t1) < 0.7


def test_t1star_matches_scipy_curve_fit() -> None:
    y = look_locker_signal(np.array([900.0]))[0]
    sign = np.where(TI_MS < 400, -1.0, 1.0)  # true polarity (the null is between 180 and 1100)

    def model(t: np.ndarray, a: float, b: float, t1s: float) -> np.ndarray:
        return a - b * np.exp(-t / t1s)

    (a, b, t1s), _ = curve_fit(model, TI_MS, y * sign, p0=(50.0, 100.0, 500.0))
    res = MOLLIT1(TI_MS).fit(y[None, :])
    np.testing.assert_allclose(res["T1star"][0], t1s, rtol=1e-4)
    np.testing.assert_allclose(res["B_over_A"][0], b / a, rtol=1e-4)
    np.testing.assert_allclose(res["T1"][0], look_locker_t1(t1s, b / a), rtol=1e-4)


def test_ecv_recovered_from_simulated_molli() -> None:
    # fast exchange: R1 = R1_0 + r1·C, with C_tissue = ECV · C_plasma and
    # ΔR1_blood = r1 · (1 - Hct) · C_plasma
    hct, true_ecv = 0.42, np.array([0.25, 0.35])
    r1_myo0, r1_blood0 = 1000.0 / 1000.0, 1000.0 / 1600.0  # 1/s
    d_blood = 1.6  # 1/s after contrast
    d_myo = true_ecv / (1 - hct) * d_blood
    t1 = np.concatenate(
        [
            [1000.0 / r1_blood0, 1000.0 / (r1_blood0 + d_blood)],
            np.full(2, 1000.0 / r1_myo0),
            1000.0 / (r1_myo0 + d_myo),
        ]
    )
    fit = MOLLIT1(TI_MS).fit(look_locker_signal(t1))["T1"]
    est = ecv(fit[2:4], fit[4:6], fit[0], fit[1], hct)
    np.testing.assert_allclose(est, true_ecv, atol=0.01)
    # and exactly on the true T1 values
    np.testing.assert_allclose(ecv(t1[2:4], t1[4:6], t1[0], t1[1], hct), true_ecv)


def test_ecv_bad_input() -> None:
    with pytest.raises(DataError, match="percentage"):
        ecv(1000.0, 500.0, 1600.0, 300.0, 42.0)
    with pytest.raises(DataError, match="does not shorten"):
        ecv(1000.0, 500.0, 1600.0, 1700.0, 0.4)
    with pytest.raises(DataError, match="positive"):
        ecv(-1000.0, 500.0, 1600.0, 300.0, 0.4)


def test_t2prep_fit() -> None:
    rng = np.random.default_rng(1)
    te = [0.0, 25.0, 55.0]
    t2 = np.repeat([40.0, 50.0, 65.0], 50)
    y = 800.0 * np.exp(-np.asarray(te)[None, :] / t2[:, None])
    y += rng.normal(0, 2.0, y.shape)
    out = fit_t2prep(y, te)
    for v in (40.0, 50.0, 65.0):
        assert abs(np.median(out["T2"][t2 == v]) / v - 1) < 0.02
    with pytest.raises(DataError, match="prep_times_ms"):
        fit_t2prep(y, [0.0, 25.0])


def test_aha_segment_means() -> None:
    seg = np.zeros((4, 4, 3), int)
    seg[0, :, 0] = 1
    seg[1, :, 0] = 2
    seg[2, :, 1] = 9
    seg[3, :, 2] = 16
    vals = np.arange(seg.size, dtype=float).reshape(seg.shape)
    out = segment_means(vals, seg)
    assert list(out) == [1, 2, 9, 16]
    assert out[9] == vals[2, :, 1].mean()
    assert AHA_SEGMENTS[14] == "apical septal" and len(AHA_SEGMENTS) == 16
    seg[0, 0, 0] = 17
    with pytest.raises(DataError, match="AHA segments are 1–16"):
        segment_means(vals, seg)


def test_t2prep_compiled_search_matches_the_numpy_search() -> None:
    """With numba the T2-prep search runs on the spin-echo T2 kernel (grid in R2, Newton);
    the maps agree with the numpy variable projection (grid in T2, golden section) to its
    precision and the voxels at a bound are the same."""
    pytest.importorskip("numba")
    from tumorscope.fitting.varpro import varpro_log

    rng = np.random.default_rng(7)
    te = np.array([0.0, 25.0, 55.0])
    t2 = rng.uniform(20.0, 200.0, 4000)
    y = 800.0 * np.exp(-te[None, :] / t2[:, None]) + rng.normal(0, 5.0, (4000, 3))
    y[:200] = np.abs(rng.normal(0, 5.0, (200, 3))) + 0.1  # noise only: some at a bound
    y[200:210] = 800.0  # no decay: T2 at the upper bound
    out = fit_t2prep(y, te)
    x, coef, _, at_b = varpro_log(
        lambda v: np.exp(-te[None, :] / v[:, None])[..., None], y, 1.0, 2000.0, nonneg=True
    )
    np.testing.assert_array_equal(out["at_bound"], at_b)
    assert at_b[200:210].all() and not at_b[210:].any()
    ok = ~at_b
    np.testing.assert_allclose(out["T2"][ok], x[ok], rtol=2e-5)
    np.testing.assert_allclose(out["M0"][ok], coef[ok, 0], rtol=2e-5, atol=1e-6)
