"""Diffusion models: simulate → fit → recover, Monte Carlo bias/precision, bad input.

Noisy tests add Gaussian noise of SD ``S0 / SNR`` (the estimators are least squares, i.e.
Gaussian maximum likelihood; at SNR >= 20 relative to S0 and with the signal kept >= 0.3 S0 the
Rician bias is second order and is not what is tested). Precision is judged against the
Cramér–Rao lower bound (CRLB) computed from the model's analytic Jacobian at the truth,
``sd_CRLB = sigma * sqrt(diag((J^T J)^-1))``: a least-squares fit is asymptotically efficient
and unbiased, so at high SNR its Monte Carlo SD must be close to the CRLB and its bias a small
fraction of it. Robust statistics (median, IQR/1.349) are used because bounded bi-exponential
fits have heavy tails at low SNR. All generators are seeded; N = 2000 voxels per case keeps the
sampling error of the SD estimate near 3%.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tumorscope.errors import FitError, ProtocolError, TumorscopeWarning
from tumorscope.fitting import FitStatus
from tumorscope.models import ADC, DKI, IVIM
from tumorscope.models.diffusion import adc_signal, dki_signal, ivim_signal

B_IVIM = np.array([0, 10, 20, 30, 50, 80, 100, 150, 200, 300, 400, 500, 600, 800, 1000.0])
B_ADC = np.array([0, 50, 400, 800, 1000.0])
B_DKI = np.array([0, 500, 1000, 1500, 2000, 2500.0])
N_MC = 2000


def _quiet_fit(model, data, mask=None):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TumorscopeWarning)
        return model.fit(data, mask)


def _crlb(model, truth: np.ndarray, sigma: float) -> np.ndarray:  # type: ignore[no-untyped-def]
    J = model.jacobian(truth[None])[0]
    return sigma * np.sqrt(np.diag(np.linalg.inv(J.T @ J)))


def _robust(x: np.ndarray) -> tuple[float, float]:
    """Median and IQR/1.349 of the fitted voxels (Gaussian noise can make a sample negative:
    such voxels are INVALID_INPUT with NaN maps; at most 0.5% of them are allowed)."""
    ok = np.isfinite(x)
    assert ok.mean() >= 0.995
    x = x[ok]
    q75, q25 = np.percentile(x, [75, 25])
    return float(np.median(x)), float((q75 - q25) / 1.349)


def _stack(fit, names) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.stack([fit[n] for n in names], axis=-1).astype(np.float64)


# ---------------------------------------------------------------------- noise-free
@pytest.mark.parametrize("method", ["wlls", "lls", "nlls"])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_adc_noise_free(method: str, backend: str, rng: np.random.Generator) -> None:
    m = ADC(B_ADC, method=method, backend=backend)
    P = m.sample_parameters(500, rng=rng)
    fit = m.fit(adc_signal(B_ADC, P).reshape(10, 50, -1))
    np.testing.assert_allclose(_stack(fit, ["S0", "ADC"]).reshape(-1, 2), P, rtol=1e-6)
    assert np.all(fit.status == FitStatus.CONVERGED)


@pytest.mark.parametrize("method", ["full", "bayes", "segmented"])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_ivim_noise_free(method: str, backend: str, rng: np.random.Generator) -> None:
    """Full and Bayes recover exactly. Segmented is exact when the perfusion signal is gone at
    b_threshold (D* >= 0.04 mm²/s, threshold 400: exp(-16) < 1e-6)."""
    m = IVIM(
        B_IVIM,
        method=method,
        backend=backend,
        b_threshold=400.0 if method == "segmented" else 200.0,
    )
    P = m.sample_parameters(500, rng=rng)
    if method == "segmented":
        P[:, 3] = rng.uniform(0.04, 0.1, 500)
    fit = m.fit(ivim_signal(B_IVIM, P))
    rtol = 1e-5 if method != "segmented" else 2e-3
    np.testing.assert_allclose(_stack(fit, ["S0", "D", "f", "D_star"]), P, rtol=rtol)
    assert np.all(fit.status == FitStatus.CONVERGED)


@pytest.mark.parametrize("method", ["wlls", "nlls"])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_dki_noise_free(method: str, backend: str, rng: np.random.Generator) -> None:
    m = DKI(B_DKI, method=method, backend=backend)
    P = m.sample_parameters(500, rng=rng)
    fit = m.fit(dki_signal(B_DKI, P))
    np.testing.assert_allclose(_stack(fit, ["S0", "D", "K"]), P, rtol=1e-6)
    assert np.all(fit.status == FitStatus.CONVERGED)


def test_dki_directional_data_equal_powder_average(rng: np.random.Generator) -> None:
    """Directions of a shell (b within b_tolerance) are averaged before fitting."""
    shells = [0, 1000, 2000]
    b_dir = np.array([0, 0, 995, 1000, 1005, 1000, 2000, 2010, 1990, 2000.0])
    P = np.array([[500.0, 1.1e-3, 0.9]])
    y_shell = dki_signal(np.array(shells, float), P)
    noise = rng.normal(0, 3.0, (1, b_dir.size))
    idx = np.array([0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    y_dir = y_shell[:, idx] + noise  # noisy directions
    avg = np.array([y_dir[0, idx == s].mean() for s in range(3)])[None]
    a = DKI(b_dir).fit(y_dir)
    bb = DKI(np.array([0, 1000, 2000.0])).fit(avg)
    # shells are fitted at their mean b-value (1000 and 2000 exactly here)
    for k in ("S0", "D", "K"):
        np.testing.assert_allclose(a[k], bb[k], rtol=1e-5)


def test_dki_kurtosis_constrained_to_physical_range() -> None:
    """Data with negative apparent kurtosis: K is held at 0 (AT_BOUND), never negative."""
    b = B_DKI
    y = np.exp(-b * 1e-3 - (b * 1e-3) ** 2 * 0.3 / 6)[None] * 100
    fit = _quiet_fit(DKI(b), y)
    assert fit["K"][0] == 0.0
    assert fit.status[0] == FitStatus.AT_BOUND
    y_hi = dki_signal(b, np.array([[100.0, 5e-4, 2.9]]))
    fit = _quiet_fit(DKI(b, k_max=2.0), y_hi)
    assert fit["K"][0] == pytest.approx(2.0)
    assert fit.status[0] == FitStatus.AT_BOUND


def test_adc_low_b_exclusion_ignores_perfusion() -> None:
    """With b_min=200 the ADC of IVIM data equals a fit of the b >= 200 samples alone and is
    close to D (the perfusion compartment has decayed by exp(-200*0.05) = 5e-5)."""
    P = np.array([[1000.0, 1.0e-3, 0.2, 0.05]])
    y = ivim_signal(B_IVIM, P)
    full = ADC(B_IVIM, method="nlls").fit(y)
    excl = ADC(B_IVIM, b_min=200, method="nlls").fit(y)
    sub = ADC(B_IVIM[B_IVIM >= 200], method="nlls").fit(y[:, B_IVIM >= 200])
    np.testing.assert_allclose(excl["ADC"], sub["ADC"], rtol=1e-6)
    assert abs(excl["ADC"][0] - 1e-3) < 2e-5
    assert full["ADC"][0] > 1.1e-3  # perfusion inflates the all-b ADC


@pytest.mark.parametrize(
    ("model", "names"),
    [
        (IVIM(B_IVIM, method="full"), ["S0", "D", "f", "D_star"]),
        (IVIM(B_IVIM, method="segmented"), ["S0", "D", "f", "D_star"]),
        (ADC(B_ADC, method="nlls"), ["S0", "ADC"]),
        (DKI(B_DKI, method="nlls"), ["S0", "D", "K"]),
        (DKI(np.repeat(B_DKI, 3)), ["S0", "D", "K"]),
        (ADC(B_ADC), ["S0", "ADC"]),
    ],
    ids=["ivim-full", "ivim-segmented", "adc-nlls", "dki-nlls", "dki-wlls-3dirs", "adc-wlls"],
)
def test_backends_agree_on_noisy_data(model, names, rng: np.random.Generator) -> None:  # type: ignore[no-untyped-def]
    P = model.sample_parameters(400, rng=rng)
    y = model.signal(P) + rng.normal(0, P[:, :1] / 50, (400, model.n_measurements))
    y = np.abs(y)
    a = _quiet_fit(model, y)
    other = type(model).__new__(type(model))
    other.__dict__.update(model.__dict__)
    other.backend = "numpy"
    b = _quiet_fit(other, y)
    np.testing.assert_allclose(_stack(a, names), _stack(b, names), rtol=1e-4)
    assert np.mean(a.status == b.status) > 0.99
    same = a.status == b.status
    for n in names:
        np.testing.assert_allclose(a.stderr[n][same], b.stderr[n][same], rtol=1e-3)
    np.testing.assert_allclose(a.rss[same], b.rss[same], rtol=1e-3)


# ---------------------------------------------------------------------- Monte Carlo
@pytest.mark.parametrize("snr", [20, 50, 100])
@pytest.mark.parametrize("method", ["wlls", "nlls"])
def test_adc_monte_carlo(snr: int, method: str, rng: np.random.Generator) -> None:
    """ADC: bias within 1% and 0.2 CRLB SD + MC error; SD within [0.9, 1.25] x CRLB.

    WLLS is not exactly efficient (the log transform), hence the 1.25 upper band at SNR 20.
    """
    truth = np.array([1.0, 1.2e-3])
    m = ADC(B_ADC, method=method)
    y = adc_signal(B_ADC, np.tile(truth, (N_MC, 1)))
    y = y + rng.normal(0, 1 / snr, y.shape)
    fit = _quiet_fit(m, y)
    crlb = _crlb(m, truth, 1 / snr)
    med, sd = _robust(fit["ADC"].astype(float))
    assert abs(med - truth[1]) <= 0.01 * truth[1] + 0.2 * crlb[1] + 3 * sd / np.sqrt(N_MC)
    assert 0.9 * crlb[1] <= sd <= 1.25 * crlb[1]


@pytest.mark.parametrize("snr", [50, 100])
def test_ivim_full_is_efficient_at_high_snr(snr: int, rng: np.random.Generator) -> None:
    """Full IVIM at SNR 50/100 (tumour-like f = 0.15, D* = 0.03): D and f unbiased (< 0.25
    CRLB SD) with SD within [0.8, 1.3] x CRLB; D* SD within 1.5 x CRLB (its likelihood is
    skewed, so only an upper band)."""
    truth = np.array([1.0, 1.2e-3, 0.15, 0.03])
    m = IVIM(B_IVIM, method="full")
    y = ivim_signal(B_IVIM, np.tile(truth, (N_MC, 1)))
    y = y + rng.normal(0, 1 / snr, y.shape)
    est = _stack(_quiet_fit(m, y), ["S0", "D", "f", "D_star"])
    crlb = _crlb(m, truth, 1 / snr)
    for j in (1, 2):
        med, sd = _robust(est[:, j])
        assert abs(med - truth[j]) <= 0.25 * crlb[j], (j, med, crlb[j])
        assert 0.8 * crlb[j] <= sd <= 1.3 * crlb[j], (j, sd, crlb[j])
    assert _robust(est[:, 3])[1] <= 1.5 * crlb[3]


@pytest.mark.parametrize("snr", [20, 50, 100])
def test_ivim_segmented_d_accuracy(snr: int, rng: np.random.Generator) -> None:
    """Segmented D: relative bias <= 4% (its known perfusion leakage at b = 200-300 plus the
    noise-induced bias at SNR 20) and SD <= 1.6 x the CRLB of the full model."""
    truth = np.array([1.0, 1.2e-3, 0.15, 0.03])
    m = IVIM(B_IVIM, method="segmented")
    y = ivim_signal(B_IVIM, np.tile(truth, (N_MC, 1)))
    y = y + rng.normal(0, 1 / snr, y.shape)
    est = _stack(_quiet_fit(m, y), ["S0", "D", "f", "D_star"])
    crlb = _crlb(IVIM(B_IVIM, method="full"), truth, 1 / snr)
    med, sd = _robust(est[:, 1])
    assert abs(med / truth[1] - 1) <= 0.04
    assert sd <= 1.6 * crlb[1]


@pytest.mark.parametrize("snr", [20, 50])
def test_ivim_bayes_tames_d_star(snr: int, rng: np.random.Generator) -> None:
    """Heterogeneous tumour-like population: the empirical-Bayes MAP has a lower median
    absolute error than the full fit for D* (by >= 20%), no worse for f and D (within 5%),
    and pushes fewer voxels to a D* bound."""
    m_full = IVIM(B_IVIM, method="full")
    P = np.c_[
        np.full(N_MC, 1.0),
        rng.uniform(0.8e-3, 1.6e-3, N_MC),
        rng.uniform(0.08, 0.25, N_MC),
        rng.uniform(0.015, 0.05, N_MC),
    ]
    y = ivim_signal(B_IVIM, P) + rng.normal(0, 1 / snr, (N_MC, B_IVIM.size))
    names = ["S0", "D", "f", "D_star"]
    full = _quiet_fit(m_full, y)
    bay = _quiet_fit(IVIM(B_IVIM, method="bayes"), y)
    ef = np.median(np.abs(_stack(full, names) - P) / P, axis=0)
    eb = np.median(np.abs(_stack(bay, names) - P) / P, axis=0)
    assert eb[3] <= 0.8 * ef[3], (eb, ef)
    assert eb[2] <= 1.05 * ef[2], (eb, ef)
    assert eb[1] <= 1.05 * ef[1], (eb, ef)
    lo, hi = m_full.bounds()
    at_b = lambda f: np.mean((f["D_star"] <= lo[3] * 1.0001) | (f["D_star"] >= hi[3] * 0.9999))  # noqa: E731
    assert at_b(bay) <= at_b(full)
    assert bay.provenance["options"]["prior"]["sigma"] == pytest.approx(1 / snr, rel=0.15)


@pytest.mark.parametrize("snr", [20, 50, 100])
def test_dki_monte_carlo(snr: int, rng: np.random.Generator) -> None:
    """DKI (WLLS): D and K bias within 3% + 0.25 CRLB SD, SD within [0.8, 1.3] x CRLB."""
    truth = np.array([1.0, 1.0e-3, 0.9])
    m = DKI(B_DKI)
    y = dki_signal(B_DKI, np.tile(truth, (N_MC, 1)))
    y = y + rng.normal(0, 1 / snr, y.shape)
    est = _stack(_quiet_fit(m, y), ["S0", "D", "K"])
    crlb = _crlb(m, truth, 1 / snr)
    for j in (1, 2):
        med, sd = _robust(est[:, j])
        assert abs(med - truth[j]) <= 0.03 * truth[j] + 0.25 * crlb[j], (j, med)
        assert 0.8 * crlb[j] <= sd <= 1.3 * crlb[j], (j, sd, crlb[j])


def test_stderr_maps_match_monte_carlo(rng: np.random.Generator) -> None:
    """Reported standard errors (Jacobian at the solution) match the MC spread within 15%."""
    truth = np.array([1.0, 1.2e-3, 0.15, 0.03])
    y = ivim_signal(B_IVIM, np.tile(truth, (N_MC, 1))) + rng.normal(0, 0.01, (N_MC, 15))
    fit = _quiet_fit(IVIM(B_IVIM, method="full"), y)
    for name in ("D", "f"):
        _, sd = _robust(fit[name].astype(float))
        assert np.median(fit.stderr[name]) == pytest.approx(sd, rel=0.15)


# ---------------------------------------------------------------------- bad input
def test_bvalue_and_data_length_disagree() -> None:
    with pytest.raises(FitError, match="15 b-values"):
        IVIM(B_IVIM).fit(np.ones((3, 14)))


def test_mask_of_another_shape() -> None:
    with pytest.raises(FitError, match="mask shape"):
        ADC(B_ADC).fit(np.ones((4, 5, 5)), np.ones((5, 4), bool))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "model",
    [
        ADC(B_ADC),
        ADC(B_ADC, backend="numpy"),
        ADC(B_ADC, method="lls"),
        ADC(B_ADC, b_min=40),
        ADC(B_ADC, method="nlls"),
        IVIM(B_IVIM),
        DKI(B_DKI),
    ],
    ids=["adc", "adc-numpy", "adc-lls", "adc-bmin", "adc-nlls", "ivim", "dki"],
)
def test_invalid_voxels_status(model, dtype) -> None:  # type: ignore[no-untyped-def]
    P = model.sample_parameters(5, rng=np.random.default_rng(0))
    y = model.signal(P).astype(dtype)
    y[0, 2] = -1.0  # negative signal
    y[1] = 0.0  # all-zero voxel
    y[2, 3] = np.nan  # NaN
    y[3, 0] = 0.0  # non-positive baseline (b = 0)
    # with b_min = 40 the baseline is the lowest b used (50): a zero at b = 0 is ignored
    n_bad = 3 if getattr(model, "b_min", None) else 4
    with pytest.warns(TumorscopeWarning, match=f"{n_bad} of 5 voxels had invalid input"):
        fit = model.fit(y)
    np.testing.assert_array_equal(fit.status[:n_bad], 3)
    np.testing.assert_array_equal(fit.status[n_bad:], 0)
    assert np.all(np.isnan(fit[model.parameter_names[1]][:n_bad]))


def test_zero_signal_at_high_b_is_fitted() -> None:
    """Magnitude data can be exactly 0 at high b: such samples get zero weight, not an error."""
    y = adc_signal(B_ADC, np.array([[100.0, 2e-3]]))
    y[0, -1] = 0.0
    fit = ADC(B_ADC).fit(y)
    assert fit.status[0] == FitStatus.CONVERGED
    assert fit["ADC"][0] == pytest.approx(2e-3, rel=1e-5)


def test_bad_protocols_and_options() -> None:
    with pytest.raises(ProtocolError):
        ADC([0, -10, 500])
    with pytest.raises(ProtocolError, match="IVIM needs"):
        IVIM([0, 500, 1000])
    with pytest.raises(ProtocolError, match="3 distinct b-value shells"):
        DKI([0, 1000, 1010])
    with pytest.raises(ProtocolError, match="at least 2 distinct"):
        ADC([0, 50, 1000], b_min=500)
    with pytest.raises(FitError, match="unknown method 'trr'"):
        IVIM(B_IVIM, method="trr")
    with pytest.raises(FitError, match="unknown backend"):
        ADC(B_ADC, backend="gpu")
    with pytest.raises(FitError, match="prior"):
        IVIM(B_IVIM, method="full", prior={"D": (1e-3, 1e-4)})
    with pytest.raises(FitError, match="log_D_star"):
        IVIM(B_IVIM, method="bayes", prior={"D": (1e-3, 1e-4), "f": (0.1, 0.05)})


def test_bayes_with_fixed_prior_is_chunk_independent(rng: np.random.Generator) -> None:
    prior = {
        "D": (1.2e-3, 3e-4),
        "f": (0.15, 0.05),
        "log_D_star": (np.log(0.03), 0.5),
        "sigma": 0.02,
    }
    m = IVIM(B_IVIM, method="bayes", prior=prior)
    P = m.sample_parameters(300, rng=rng)
    P[:, 0] = 1.0
    y = ivim_signal(B_IVIM, P) + rng.normal(0, 0.02, (300, 15))
    a = _quiet_fit(m, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TumorscopeWarning)
        c = m.fit(y, chunk_voxels=7)
    np.testing.assert_array_equal(a["D_star"], c["D_star"])
    assert a.provenance["options"]["prior"]["sigma"] == 0.02


def test_bound_overrides(rng: np.random.Generator) -> None:
    """bounds= replaces a parameter's bounds; the fit respects them and records them."""
    P = np.array([[1.0, 1e-3, 0.2, 0.15]])
    m = IVIM(B_IVIM, method="full", bounds={"D_star": (0.005, 0.1)})
    fit = _quiet_fit(m, ivim_signal(B_IVIM, P))
    assert fit["D_star"][0] == pytest.approx(0.1)
    assert fit.status[0] == FitStatus.AT_BOUND
    assert fit.provenance["options"]["bounds"] == {"D_star": [0.005, 0.1]}
    bay = _quiet_fit(
        IVIM(B_IVIM, method="bayes", bounds={"D_star": (0.005, 0.1)}),
        ivim_signal(B_IVIM, np.tile(P, (5, 1))),
    )
    assert np.all(bay["D_star"] <= 0.1)
    with pytest.raises(FitError, match="unknown parameter 'Dp'"):
        IVIM(B_IVIM, bounds={"Dp": (0.0, 1.0)})
    with pytest.raises(FitError, match="lower < upper"):
        IVIM(B_IVIM, bounds={"f": (0.5, 0.1)})
