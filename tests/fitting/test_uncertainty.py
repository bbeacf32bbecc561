"""Standard errors from the Jacobian: the linear-regression formula with m - p dof."""

from __future__ import annotations

import numpy as np

from tumorscope.fitting import stderr_from_jacobian


def test_matches_ordinary_least_squares() -> None:
    """For a linear model the standard errors are the textbook OLS ones:
    ``sqrt(diag((XᵀX)⁻¹) · rss / (m - p))``."""
    rng = np.random.default_rng(0)
    n, m, p = 4, 9, 3
    X = rng.standard_normal((n, m, p)) * np.array([1.0, 1e3, 1e-3])  # badly scaled columns
    y = rng.standard_normal((n, m))
    rss = np.empty(n)
    want = np.empty((n, p))
    for i in range(n):
        _, r, *_ = np.linalg.lstsq(X[i], y[i], rcond=None)
        rss[i] = r[0]
        want[i] = np.sqrt(np.diag(np.linalg.inv(X[i].T @ X[i])) * r[0] / (m - p))
    np.testing.assert_allclose(stderr_from_jacobian(X, rss), want, rtol=1e-9)


def test_nan_without_degrees_of_freedom_or_when_singular() -> None:
    J = np.ones((2, 3, 3))
    assert np.isnan(stderr_from_jacobian(J, np.ones(2))).all()  # m <= p
    J = np.zeros((2, 5, 2))
    J[:, :, 0] = 1.0
    J[:, :, 1] = 2.0  # collinear columns
    J[1, :, 1] = np.arange(5.0)
    se = stderr_from_jacobian(J, np.array([1.0, 1.0]))
    assert np.isnan(se[0]).all() and np.isfinite(se[1]).all()
    assert np.isnan(stderr_from_jacobian(J[1:], np.array([np.nan]))).all()
