"""IVIM: exact recovery, Monte Carlo efficiency of each method, the empirical-Bayes prior, bounds."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _diffusion_helpers import B_IVIM, N_MC, crlb, quiet_fit, robust, stack

from tumorscope.errors import FitError, TumorscopeWarning
from tumorscope.fitting import FitStatus
from tumorscope.models import IVIM
from tumorscope.models.diffusion import ivim_signal


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
    np.testing.assert_allclose(stack(fit, ["S0", "D", "f", "D_star"]), P, rtol=rtol)
    assert np.all(fit.status == FitStatus.CONVERGED)


@pytest.mark.parametrize("snr", [50, 100])
def test_ivim_full_is_efficient_at_high_snr(snr: int, rng: np.random.Generator) -> None:
    """Full IVIM at SNR 50/100 (tumour-like f = 0.15, D* = 0.03): D and f unbiased (< 0.25
    CRLB SD) with SD within [0.8, 1.3] x CRLB; D* SD within 1.5 x CRLB (its likelihood is
    skewed, so only an upper band)."""
    truth = np.array([1.0, 1.2e-3, 0.15, 0.03])
    m = IVIM(B_IVIM, method="full")
    y = ivim_signal(B_IVIM, np.tile(truth, (N_MC, 1)))
    y = y + rng.normal(0, 1 / snr, y.shape)
    est = stack(quiet_fit(m, y), ["S0", "D", "f", "D_star"])
    cr = crlb(m, truth, 1 / snr)
    for j in (1, 2):
        med, sd = robust(est[:, j])
        assert abs(med - truth[j]) <= 0.25 * cr[j], (j, med, cr[j])
        assert 0.8 * cr[j] <= sd <= 1.3 * cr[j], (j, sd, cr[j])
    assert robust(est[:, 3])[1] <= 1.5 * cr[3]


@pytest.mark.parametrize("snr", [20, 50, 100])
def test_ivim_segmented_d_accuracy(snr: int, rng: np.random.Generator) -> None:
    """Segmented D: relative bias <= 4% (its known perfusion leakage at b = 200-300 plus the
    noise-induced bias at SNR 20) and SD <= 1.6 x the CRLB of the full model."""
    truth = np.array([1.0, 1.2e-3, 0.15, 0.03])
    m = IVIM(B_IVIM, method="segmented")
    y = ivim_signal(B_IVIM, np.tile(truth, (N_MC, 1)))
    y = y + rng.normal(0, 1 / snr, y.shape)
    est = stack(quiet_fit(m, y), ["S0", "D", "f", "D_star"])
    cr = crlb(IVIM(B_IVIM, method="full"), truth, 1 / snr)
    med, sd = robust(est[:, 1])
    assert abs(med / truth[1] - 1) <= 0.04
    assert sd <= 1.6 * cr[1]


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
    full = quiet_fit(m_full, y)
    bay = quiet_fit(IVIM(B_IVIM, method="bayes"), y)
    ef = np.median(np.abs(stack(full, names) - P) / P, axis=0)
    eb = np.median(np.abs(stack(bay, names) - P) / P, axis=0)
    assert eb[3] <= 0.8 * ef[3], (eb, ef)
    assert eb[2] <= 1.05 * ef[2], (eb, ef)
    assert eb[1] <= 1.05 * ef[1], (eb, ef)
    lo, hi = m_full.bounds()
    at_b = lambda f: np.mean((f["D_star"] <= lo[3] * 1.0001) | (f["D_star"] >= hi[3] * 0.9999))  # noqa: E731
    assert at_b(bay) <= at_b(full)
    assert bay.provenance["options"]["prior"]["sigma"] == pytest.approx(1 / snr, rel=0.15)


def test_stderr_maps_match_monte_carlo(rng: np.random.Generator) -> None:
    """Reported standard errors (Jacobian at the solution) match the MC spread within 15%."""
    truth = np.array([1.0, 1.2e-3, 0.15, 0.03])
    y = ivim_signal(B_IVIM, np.tile(truth, (N_MC, 1))) + rng.normal(0, 0.01, (N_MC, 15))
    fit = quiet_fit(IVIM(B_IVIM, method="full"), y)
    for name in ("D", "f"):
        _, sd = robust(fit[name].astype(float))
        assert np.median(fit.stderr[name]) == pytest.approx(sd, rel=0.15)


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
    a = quiet_fit(m, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TumorscopeWarning)
        c = m.fit(y, chunk_voxels=7)
    np.testing.assert_array_equal(a["D_star"], c["D_star"])
    assert a.provenance["options"]["prior"]["sigma"] == 0.02


def test_bound_overrides(rng: np.random.Generator) -> None:
    """bounds= replaces a parameter's bounds; the fit respects them and records them."""
    P = np.array([[1.0, 1e-3, 0.2, 0.15]])
    m = IVIM(B_IVIM, method="full", bounds={"D_star": (0.005, 0.1)})
    fit = quiet_fit(m, ivim_signal(B_IVIM, P))
    assert fit["D_star"][0] == pytest.approx(0.1)
    assert fit.status[0] == FitStatus.AT_BOUND
    assert fit.provenance["options"]["bounds"] == {"D_star": [0.005, 0.1]}
    bay = quiet_fit(
        IVIM(B_IVIM, method="bayes", bounds={"D_star": (0.005, 0.1)}),
        ivim_signal(B_IVIM, np.tile(P, (5, 1))),
    )
    assert np.all(bay["D_star"] <= 0.1)
    with pytest.raises(FitError, match="unknown parameter 'Dp'"):
        IVIM(B_IVIM, bounds={"Dp": (0.0, 1.0)})
    with pytest.raises(FitError, match="lower < upper"):
        IVIM(B_IVIM, bounds={"f": (0.5, 0.1)})
