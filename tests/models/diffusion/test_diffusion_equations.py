"""The diffusion signal equations and their analytic Jacobians."""

from __future__ import annotations

import numpy as np
import pytest
from _diffusion_helpers import B_ADC, B_DKI, B_IVIM

from tumorscope.models import ADC, DKI, IVIM
from tumorscope.models.diffusion import adc_signal, dki_signal, ivim_signal


def test_signals_at_known_points() -> None:
    b = np.array([0.0, 1000.0])
    np.testing.assert_allclose(adc_signal(b, [100.0, 1e-3]), [100.0, 100 * np.exp(-1.0)])
    np.testing.assert_allclose(
        ivim_signal(b, [100.0, 1e-3, 0.2, 0.01]),
        [100.0, 100 * (0.2 * np.exp(-10.0) + 0.8 * np.exp(-1.0))],
    )
    np.testing.assert_allclose(
        dki_signal(b, [100.0, 1e-3, 0.6]), [100.0, 100 * np.exp(-1.0 + 0.6 / 6)]
    )
    # any leading shape
    assert adc_signal(B_ADC, np.ones((2, 3, 2))).shape == (2, 3, B_ADC.size)


@pytest.mark.parametrize(
    ("model", "signal"),
    [(ADC(B_ADC), adc_signal), (IVIM(B_IVIM), ivim_signal), (DKI(B_DKI), dki_signal)],
    ids=["adc", "ivim", "dki"],
)
def test_jacobian_equals_finite_differences(model, signal) -> None:  # type: ignore[no-untyped-def]
    P = model.sample_parameters(6, rng=np.random.default_rng(4))
    np.testing.assert_allclose(model.signal(P), signal(model.b, P))
    J = model.jacobian(P)
    assert J.shape == (6, model.n_measurements, P.shape[1])
    for j in range(P.shape[1]):
        h = 1e-6 * np.abs(P[:, j])
        up, down = P.copy(), P.copy()
        up[:, j] += h
        down[:, j] -= h
        fd = (signal(model.b, up) - signal(model.b, down)) / (2 * h[:, None])
        np.testing.assert_allclose(J[..., j], fd, rtol=1e-5, atol=1e-9 * np.abs(fd).max())
