"""Hyperpolarised 13C pyruvate → lactate: simulate → fit → recover (noise, flip schedules, T1).

The forward simulator is checked against scipy's ODE solver (``solve_ivp``, an independent
integration of the same equations with the RF pulses applied between integrations).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from tumorscope.errors import FitError, ProtocolError, TumorscopeWarning
from tumorscope.fitting import FitStatus
from tumorscope.models import PyruvateLactate, PyruvateLactateBoxcar
from tumorscope.models.metabolic import auc_ratio, two_site_signals

T = np.arange(20) * 3.0
FA = np.deg2rad(np.full((2, 20), 20.0))


def _sim(k, *, flips=FA, t=T, r1p=1 / 30, r1l=1 / 25, start=-3.0, dur=6.0, scale=1e3):
    return scale * two_site_signals(
        t,
        flips,
        np.asarray(k, float),
        r1p=r1p,
        r1l=r1l,
        input_rate=1.0,
        input_start_s=start,
        input_duration_s=dur,
    )


def test_forward_model_matches_scipy_ode() -> None:
    k, r1p, r1l, u, on, off = 0.07, 1 / 30, 1 / 25, 2.0, 1.0, 9.0
    flips = np.deg2rad(np.vstack([np.linspace(10, 30, 20), np.full(20, 35.0)]))
    ours = two_site_signals(
        T, flips, [k], r1p=r1p, r1l=r1l, input_rate=u, input_start_s=on, input_duration_s=off - on
    )[0]

    def rhs(t, y):
        inp = u if on <= t < off else 0.0
        return [-(k + r1p) * y[0] + inp, k * y[0] - r1l * y[1]]

    y = np.zeros(2)
    ref = np.zeros((2, T.size))
    for j, tj in enumerate(T):
        ref[:, j] = y * np.sin(flips[:, j])
        y = y * np.cos(flips[:, j])
        if j + 1 < T.size:
            sol = solve_ivp(rhs, (tj, T[j + 1]), y, rtol=1e-10, atol=1e-12, max_step=0.05)
            y = sol.y[:, -1]
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-9)


def test_noise_free_recovery_is_exact_for_a_frame_aligned_bolus() -> None:
    k = np.array([0.005, 0.02, 0.05, 0.1, 0.3])
    fit = PyruvateLactate(T, [20, 20]).fit(_sim(k))
    np.testing.assert_allclose(fit["kPL"], k, rtol=1e-4)
    assert np.all(fit.status == FitStatus.CONVERGED) or np.all(fit.status <= FitStatus.AT_BOUND)
    np.testing.assert_allclose(fit["AUC_ratio"], auc_ratio(_sim(k)), rtol=1e-6)


def test_variable_flip_schedules_and_fitted_t1() -> None:
    k = np.array([0.02, 0.08, 0.15])
    n = T.size
    # progressive pyruvate flip angles, constant larger lactate flips (metabolite-specific)
    flips_deg = np.vstack([np.linspace(8, 40, n), np.full(n, 30.0)])
    sig = _sim(k, flips=np.deg2rad(flips_deg), r1l=1 / 18)
    fixed = PyruvateLactate(T, flips_deg, t1_lactate_s=18.0).fit(sig)
    np.testing.assert_allclose(fixed["kPL"], k, rtol=1e-4)
    free = PyruvateLactate(T, flips_deg, fit_t1_lactate=True).fit(sig)
    np.testing.assert_allclose(free["kPL"], k, rtol=1e-3)
    np.testing.assert_allclose(free["T1_lactate"], 18.0, rtol=1e-3)
    # a wrong flip schedule biases kPL: the correction is doing work
    wrong = PyruvateLactate(T, [20, 30], t1_lactate_s=18.0).fit(sig)
    assert np.max(np.abs(wrong["kPL"] / k - 1)) > 0.05


def test_noisy_recovery_is_unbiased_and_stderr_calibrated() -> None:
    rng = np.random.default_rng(3)
    k = np.full(400, 0.05)
    clean = _sim(k)
    sigma = 0.02 * clean[:, 1].max()  # peak lactate SNR 50
    noisy = clean + rng.normal(0, sigma, clean.shape)
    fit = PyruvateLactate(T, [20, 20], noise_sigma=sigma).fit(noisy)
    est = fit["kPL"]
    assert abs(np.nanmean(est) / 0.05 - 1) < 0.02
    ratio = np.nanstd(est) / np.nanmean(fit.stderr["kPL"])
    assert 0.7 < ratio < 1.4


def test_snr_gate_hides_kpl_and_keeps_auc() -> None:
    rng = np.random.default_rng(5)
    clean = _sim([0.05, 0.05])
    sigma = np.array([clean[0, 1].max() / 50, clean[1, 1].max() / 2])  # SNR 50 and 2
    noisy = clean + rng.normal(0, 1, clean.shape) * sigma[:, None, None]
    with pytest.warns(TumorscopeWarning, match="1 of 2 voxels below the lactate SNR gate"):
        fit = PyruvateLactate(T, [20, 20]).fit(noisy, noise_sigma=sigma)
    assert np.isfinite(fit["kPL"][0]) and np.isnan(fit["kPL"][1])
    assert fit.status[1] == FitStatus.INVALID_INPUT
    assert np.isfinite(fit["AUC_ratio"][1])
    assert abs(fit["SNR_lactate"][0] / 50 - 1) < 0.2 and fit["SNR_lactate"][1] < 5


def test_bad_input_raises_with_the_field() -> None:
    with pytest.raises(ProtocolError, match="flip_angles_deg"):
        PyruvateLactate(T, [20, 20, 20])
    with pytest.raises(ProtocolError) as e:
        PyruvateLactate(T[::-1], [20, 20])
    assert e.value.field == "times_s"
    with pytest.raises(ProtocolError, match="tr_s"):
        PyruvateLactate(T, [20, 20], tr_s=2.0)
    model = PyruvateLactate(None, np.full((2, 20), 20.0), tr_s=3.0)
    np.testing.assert_array_equal(model.times_s, T)
    with pytest.raises(FitError, match=r"\(\.\.\., 2, 20\)"):
        model.fit(np.zeros((4, 40)))
    sig = _sim([0.05, 0.05])
    sig[1, 0, 3] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TumorscopeWarning)
        fit = model.fit(sig)
    assert fit.status[1] == FitStatus.INVALID_INPUT and np.isnan(fit["AUC_ratio"][1])


def test_boxcar_model_recovers_and_agrees_with_inputless() -> None:
    k = np.array([0.02, 0.1])
    sig = _sim(k, start=0.0, dur=9.0)
    box = PyruvateLactateBoxcar(T, [20, 20], bolus_start_s=0.0, bolus_duration_s=9.0).fit(sig)
    np.testing.assert_allclose(box["kPL"], k, rtol=1e-4)
    np.testing.assert_allclose(box["Rin"], 1e3, rtol=1e-4)
    inputless = PyruvateLactate(T, [20, 20]).fit(sig)
    np.testing.assert_allclose(inputless["kPL"], k, rtol=1e-3)


def test_forward_model_matches_the_phantoms_matrix_exponential() -> None:
    # the phantom computes its 13C curves with its own code (scipy expm of the augmented
    # system): two implementations of the same physics must agree
    from tumorscope.phantom.metabolic import hp13c_curves

    t = np.arange(12) * 4.0
    for k, on, off in ((0.06, 0.0, 8.0), (0.02, 2.0, 11.0)):
        ref = hp13c_curves(t, (10.0, 30.0), k, 1000.0, bolus_s=(on, off))
        ours = two_site_signals(t, np.deg2rad(np.vstack([np.full(12, 10.0), np.full(12, 30.0)])),
                                [k], r1p=1 / 30, r1l=1 / 25, input_rate=1000.0,
                                input_start_s=on, input_duration_s=off - on)[0]  # fmt: skip
        np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("fit_t1", [False, True])
def test_compiled_fixed_point_agrees_with_the_numpy_path(fit_t1) -> None:
    # numba kernels (_hp13c_numba) against the vectorised numpy path on noisy curves with
    # uneven frame spacing and per-frame flips (rounding only: exp/expm1 and sum order)
    pytest.importorskip("numba")
    rng = np.random.default_rng(7)
    t = np.concatenate([np.arange(10) * 3.0, 30 + np.arange(6) * 4.5])
    flips = np.vstack([np.linspace(10, 35, t.size), np.full(t.size, 25.0)])
    k = rng.uniform(0.0, 0.3, 300)
    clean = _sim(k, flips=np.deg2rad(flips), t=t)
    noisy = clean + rng.normal(0, 0.03 * clean[:, 1].max(), clean.shape)
    noisy[:20] = rng.normal(0, 5.0, noisy[:20].shape)  # background: noise only
    fits = [
        PyruvateLactate(t, flips, fit_t1_lactate=fit_t1, engine=e, min_snr=3).fit(noisy)
        for e in ("numba", "numpy")
    ]
    np.testing.assert_array_equal(fits[0].status, fits[1].status)
    for name in fits[1].maps:
        np.testing.assert_allclose(fits[0][name], fits[1][name], rtol=1e-10, atol=1e-14)
    for name in fits[1].stderr:
        np.testing.assert_allclose(
            fits[0].stderr[name], fits[1].stderr[name], rtol=1e-10, atol=1e-14
        )


def test_closed_form_covariance_diagonal_is_the_pseudo_inverse() -> None:
    from tumorscope.models.metabolic.hp13c import _pinv_diagonal

    rng = np.random.default_rng(0)
    J = rng.normal(size=(500, 12, 2)) * np.array([1e-3, 1e3])
    J[:5, :, 1] = J[:5, :, 0] * 2.0  # singular: pinv's answer
    J[5:10, :, 1] = J[5:10, :, 0] * 2.0 + 1e-9 * rng.normal(size=(5, 12))  # near-singular
    m = np.einsum("vmi,vmj->vij", J, J)
    ref = np.einsum("vii->vi", np.linalg.pinv(m))
    np.testing.assert_allclose(_pinv_diagonal(m), ref, rtol=1e-9)
    m3 = np.einsum("vmi,vmj->vij", *(rng.normal(size=(2, 50, 12, 3))))
    np.testing.assert_allclose(_pinv_diagonal(m3), np.einsum("vii->vi", np.linalg.pinv(m3)))
    with pytest.raises(FitError, match="engine"):
        PyruvateLactate(T, [20, 20], engine="cuda")  # type: ignore[arg-type]


@pytest.mark.parametrize("chunk", [None, 7])
def test_compiled_whole_fit_agrees_with_the_numpy_path_on_even_frames(chunk) -> None:
    # the one-pass compiled voxel fit (_hp13c_numba.fit_range: validation, the fixed point on
    # evenly spaced frames by its decay-independent basis parts, standard errors, status,
    # the lactate peak of the SNR gate) against fit_blocks over the numpy block solver:
    # noisy curves, noise-only voxels, a non-finite voxel, a voxel without pyruvate (singular
    # normal matrix: the pseudo-inverse), a mask, blocks of 7 voxels on two threads
    pytest.importorskip("numba")
    import numba

    rng = np.random.default_rng(11)
    t = np.arange(12) * 4.0
    flips = np.vstack([np.full(12, 10.0), np.full(12, 30.0)])
    k = rng.uniform(0.0, 0.3, 200)
    clean = _sim(k, flips=np.deg2rad(flips), t=t)
    noisy = clean + rng.normal(0, 0.03 * clean[:, 1].max(), clean.shape)
    noisy[:20] = rng.normal(0, 5.0, noisy[:20].shape)  # background: noise only
    noisy[20, 1, 4] = np.inf
    noisy[21, 0] = 0.0
    noisy[21, 1] = 1e3 * np.exp(-t / 10)  # lactate decaying from L0 only
    mask = np.ones(200, bool)
    mask[30:40] = False
    before = numba.get_num_threads()
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:
        fits = [
            PyruvateLactate(t, flips, engine=e, min_snr=3).fit(noisy, mask, chunk_voxels=chunk)
            for e in ("numba", "numpy")
        ]
    finally:
        numba.set_num_threads(before)
    assert fits[0].status[20] == FitStatus.INVALID_INPUT
    assert np.isfinite(fits[0].stderr["L0"][21]) and fits[0].status[21] != FitStatus.FAILED
    assert np.all(fits[0].status[30:40] == FitStatus.NOT_FITTED)
    np.testing.assert_array_equal(fits[0].status, fits[1].status)
    np.testing.assert_array_equal(fits[0].mask, fits[1].mask)
    np.testing.assert_allclose(fits[0].rss, fits[1].rss, rtol=1e-6)  # float32 maps
    for name in fits[1].maps:
        np.testing.assert_allclose(fits[0][name], fits[1][name], rtol=1e-6, atol=1e-12)
    for name in fits[1].stderr:
        np.testing.assert_allclose(fits[0].stderr[name], fits[1].stderr[name], rtol=1e-6)


@pytest.mark.parametrize("n", [3, 7, 8, 12, 17, 130])
def test_compiled_auc_ratio_is_numpys_bit_for_bit(n) -> None:
    # the compiled fit sums the frames as numpy's pairwise summation does (up to 128 frames;
    # beyond, numpy's sums): the AUC ratio map equals auc_ratio's, cast to float32, exactly
    pytest.importorskip("numba")
    rng = np.random.default_rng(n)
    sig = rng.gamma(2.0, 1.0, (300, 2, n)) * rng.uniform(1, 1e4, (300, 1, 1))
    sig[:5, 0] *= -1.0  # pyruvate sum <= 0: NaN
    fit = PyruvateLactate(np.arange(n) * 2.0, [20, 20], min_snr=0).fit(sig)
    np.testing.assert_array_equal(fit["AUC_ratio"], auc_ratio(sig).astype(np.float32))
    if n <= 128:  # the float64 sums themselves (the float32 map would hide an ulp)
        from tumorscope.models.metabolic._hp13c_numba import _frame_sum

        y = np.ascontiguousarray(sig.reshape(300, 2 * n))
        sums = np.array([[_frame_sum(y, i, c * n, n) for c in (0, 1)] for i in range(300)])
        np.testing.assert_array_equal(sums, sig.sum(axis=-1))
