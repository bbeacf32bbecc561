"""ADC: exact recovery, b-value exclusion, Monte Carlo bias and precision, zero samples."""

from __future__ import annotations

import numpy as np
import pytest
from _diffusion_helpers import B_ADC, B_IVIM, N_MC, crlb, quiet_fit, robust, stack

from tumorscope.fitting import FitStatus
from tumorscope.models import ADC
from tumorscope.models.diffusion import adc_signal, ivim_signal


@pytest.mark.parametrize("method", ["wlls", "lls", "nlls"])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_adc_noise_free(method: str, backend: str, rng: np.random.Generator) -> None:
    m = ADC(B_ADC, method=method, backend=backend)
    P = m.sample_parameters(500, rng=rng)
    fit = m.fit(adc_signal(B_ADC, P).reshape(10, 50, -1))
    np.testing.assert_allclose(stack(fit, ["S0", "ADC"]).reshape(-1, 2), P, rtol=1e-6)
    assert np.all(fit.status == FitStatus.CONVERGED)


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
    fit = quiet_fit(m, y)
    cr = crlb(m, truth, 1 / snr)
    med, sd = robust(fit["ADC"].astype(float))
    assert abs(med - truth[1]) <= 0.01 * truth[1] + 0.2 * cr[1] + 3 * sd / np.sqrt(N_MC)
    assert 0.9 * cr[1] <= sd <= 1.25 * cr[1]


def test_zero_signal_at_high_b_is_fitted() -> None:
    """Magnitude data can be exactly 0 at high b: such samples get zero weight, not an error."""
    y = adc_signal(B_ADC, np.array([[100.0, 2e-3]]))
    y[0, -1] = 0.0
    fit = ADC(B_ADC).fit(y)
    assert fit.status[0] == FitStatus.CONVERGED
    assert fit["ADC"][0] == pytest.approx(2e-3, rel=1e-5)
