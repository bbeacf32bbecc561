"""Relaxometry signal equations: analytic Jacobians against finite differences, the Rician
expected magnitude against its limits and Monte Carlo (``models/relaxometry/equations.py``;
the SPGR equations are tested with VFA T1 in ``test_relaxometry_vfa.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from tumorscope.models.relaxometry import (
    ir_jacobian,
    ir_signal,
    rician_mean,
    rician_mean_derivative,
    t2star_rician_jacobian,
    t2star_rician_signal,
)

TI = np.array([50.0, 150.0, 400.0, 800.0, 1500.0, 3000.0])
TE_GRE = np.array([1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0, 15.0, 18.0, 21.0, 25.0])


def _rician(a, sigma, rng):
    return np.abs(
        a + sigma * rng.standard_normal(a.shape) + 1j * sigma * rng.standard_normal(a.shape)
    )


def test_rician_mean_limits_and_monte_carlo():
    assert rician_mean(0.0, 2.0) == pytest.approx(2.0 * np.sqrt(np.pi / 2))
    assert rician_mean(1e4, 1.0) == pytest.approx(1e4 + 0.5e-4, rel=1e-12)
    assert rician_mean(3.0, 0.0) == 3.0
    rng = np.random.default_rng(0)
    for a in (0.5, 2.0, 5.0):
        m = _rician(np.full(400_000, a), 1.0, rng)
        # SE of the mean is < 1/sqrt(4e5) = 0.0016; allow 4 SE
        assert m.mean() == pytest.approx(float(rician_mean(a, 1.0)), abs=0.0065)


def test_rician_derivatives_match_finite_differences():
    a = np.array([0.0, 0.3, 1.0, 3.0, 10.0, 100.0])
    h = 1e-6
    fd = (rician_mean(a + h, 1.0) - rician_mean(np.abs(a - h), 1.0)) / (2 * h)
    fd[0] = 0.0  # E[M] is even in A: derivative 0 at 0
    np.testing.assert_allclose(rician_mean_derivative(a, 1.0), fd, atol=1e-7)
    p = np.array([[1000.0, 200.0], [800.0, 900.0]])
    J = t2star_rician_jacobian(p, TE_GRE, 30.0)
    for k in range(2):
        d = np.zeros(2)
        d[k] = 1e-6 * p[0, k]
        fdj = (
            t2star_rician_signal(p + d, TE_GRE, 30.0) - t2star_rician_signal(p - d, TE_GRE, 30.0)
        ) / (2 * d[k])
        np.testing.assert_allclose(J[..., k], fdj, rtol=1e-5, atol=1e-8)


def test_ir_jacobian_matches_finite_differences():
    p = np.array([[1000.0, 800.0, 1.9]])
    J = ir_jacobian(p, TI)
    for k in range(3):
        d = np.zeros(3)
        d[k] = 1e-6 * p[0, k]
        fd = (ir_signal(p + d, TI) - ir_signal(p - d, TI)) / (2 * d[k])
        np.testing.assert_allclose(J[..., k], fd, rtol=1e-6, atol=1e-9)
