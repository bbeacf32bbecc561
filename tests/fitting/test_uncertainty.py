"""Standard errors from the Jacobian (``fitting.uncertainty``): the linear-regression formula
with m - p degrees of freedom, for both ways of inverting JᵀJ."""

from __future__ import annotations

import numpy as np
import pytest

from tumorscope.fitting import stderr_from_jacobian

SOLVERS = ("cholesky", "scaled")


@pytest.mark.parametrize("solver", SOLVERS)
def test_linear_model_gives_the_textbook_standard_errors(solver: str) -> None:
    """For a linear model J is the design matrix: se = sqrt(diag((AᵀA)⁻¹) · rss / (m - p))."""
    rng = np.random.default_rng(5)
    A = np.c_[np.ones(9), np.linspace(0, 1, 9), np.linspace(0, 1, 9) ** 2]
    Y = rng.normal(size=(4, 9))
    coef = np.linalg.lstsq(A, Y.T, rcond=None)[0].T
    rss = np.sum((Y - coef @ A.T) ** 2, axis=1)
    expected = np.sqrt(np.diag(np.linalg.inv(A.T @ A))[None] * (rss / (9 - 3))[:, None])
    got = stderr_from_jacobian(np.broadcast_to(A, (4, 9, 3)).copy(), rss, solver=solver)
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_scaled_solver_matches_ordinary_least_squares_with_badly_scaled_columns() -> None:
    """Columns of 1, 1e3 and 1e-3: the scaled inverse still gives the textbook OLS errors."""
    rng = np.random.default_rng(0)
    n, m, p = 4, 9, 3
    X = rng.standard_normal((n, m, p)) * np.array([1.0, 1e3, 1e-3])
    y = rng.standard_normal((n, m))
    rss = np.empty(n)
    want = np.empty((n, p))
    for i in range(n):
        _, r, *_ = np.linalg.lstsq(X[i], y[i], rcond=None)
        rss[i] = r[0]
        want[i] = np.sqrt(np.diag(np.linalg.inv(X[i].T @ X[i])) * r[0] / (m - p))
    np.testing.assert_allclose(stderr_from_jacobian(X, rss, solver="scaled"), want, rtol=1e-9)


@pytest.mark.parametrize("solver", SOLVERS)
def test_no_degrees_of_freedom_or_singular_gives_nan(solver: str) -> None:
    J = np.ones((2, 3, 3))
    assert np.all(np.isnan(stderr_from_jacobian(J, np.ones(2), solver=solver)))  # m <= p
    J = np.zeros((2, 5, 2))
    J[0] = np.c_[np.ones(5), np.arange(5.0)]
    J[1, :, 0] = J[1, :, 1] = 1.0  # two identical columns: JᵀJ singular
    se = stderr_from_jacobian(J, np.array([4.0, 4.0]), solver=solver)
    assert np.all(np.isfinite(se[0])) and np.all(np.isnan(se[1]))
    nan_rss = stderr_from_jacobian(J[:1], np.array([np.nan]), solver=solver)
    assert np.all(np.isnan(nan_rss))


def test_unknown_solver_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown solver"):
        stderr_from_jacobian(np.ones((1, 4, 1)), np.ones(1), solver="qr")  # type: ignore[arg-type]
