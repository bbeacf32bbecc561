"""DKI: exact recovery, powder averaging of directions, the kurtosis constraint, Monte Carlo."""

from __future__ import annotations

import numpy as np
import pytest
from _diffusion_helpers import B_DKI, N_MC, crlb, quiet_fit, robust, stack

from tumorscope.fitting import FitStatus
from tumorscope.models import DKI
from tumorscope.models.diffusion import dki_signal


@pytest.mark.parametrize("method", ["wlls", "nlls"])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_dki_noise_free(method: str, backend: str, rng: np.random.Generator) -> None:
    m = DKI(B_DKI, method=method, backend=backend)
    P = m.sample_parameters(500, rng=rng)
    fit = m.fit(dki_signal(B_DKI, P))
    np.testing.assert_allclose(stack(fit, ["S0", "D", "K"]), P, rtol=1e-6)
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
    fit = quiet_fit(DKI(b), y)
    assert fit["K"][0] == 0.0
    assert fit.status[0] == FitStatus.AT_BOUND
    y_hi = dki_signal(b, np.array([[100.0, 5e-4, 2.9]]))
    fit = quiet_fit(DKI(b, k_max=2.0), y_hi)
    assert fit["K"][0] == pytest.approx(2.0)
    assert fit.status[0] == FitStatus.AT_BOUND


@pytest.mark.parametrize("snr", [20, 50, 100])
def test_dki_monte_carlo(snr: int, rng: np.random.Generator) -> None:
    """DKI (WLLS): D and K bias within 3% + 0.25 CRLB SD, SD within [0.8, 1.3] x CRLB."""
    truth = np.array([1.0, 1.0e-3, 0.9])
    m = DKI(B_DKI)
    y = dki_signal(B_DKI, np.tile(truth, (N_MC, 1)))
    y = y + rng.normal(0, 1 / snr, y.shape)
    est = stack(quiet_fit(m, y), ["S0", "D", "K"])
    cr = crlb(m, truth, 1 / snr)
    for j in (1, 2):
        med, sd = robust(est[:, j])
        assert abs(med - truth[j]) <= 0.03 * truth[j] + 0.25 * cr[j], (j, med)
        assert 0.8 * cr[j] <= sd <= 1.3 * cr[j], (j, sd, cr[j])
