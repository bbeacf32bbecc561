"""Standard errors from the Jacobian (``fitting.uncertainty``)."""

from __future__ import annotations

import numpy as np

from tumorscope.fitting.uncertainty import stderr_from_jacobian


def test_linear_model_gives_the_textbook_standard_errors() -> None:
    """For a linear model J is the design matrix: se = sqrt(diag((AᵀA)⁻¹) · rss / (m - p))."""
    rng = np.random.default_rng(5)
    A = np.c_[np.ones(9), np.linspace(0, 1, 9), np.linspace(0, 1, 9) ** 2]
    Y = rng.normal(size=(4, 9))
    coef = np.linalg.lstsq(A, Y.T, rcond=None)[0].T
    rss = np.sum((Y - coef @ A.T) ** 2, axis=1)
    expected = np.sqrt(np.diag(np.linalg.inv(A.T @ A))[None] * (rss / (9 - 3))[:, None])
    got = stderr_from_jacobian(np.broadcast_to(A, (4, 9, 3)).copy(), rss)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_no_degrees_of_freedom_or_singular_gives_nan() -> None:
    J = np.ones((2, 3, 3))
    assert np.all(np.isnan(stderr_from_jacobian(J, np.ones(2))))  # m <= p
    J = np.zeros((2, 5, 2))
    J[0] = np.c_[np.ones(5), np.arange(5.0)]
    J[1, :, 0] = J[1, :, 1] = 1.0  # two identical columns: JᵀJ singular
    se = stderr_from_jacobian(J, np.array([4.0, 4.0]))
    assert np.all(np.isfinite(se[0])) and np.all(np.isnan(se[1]))
    assert np.all(np.isnan(stderr_from_jacobian(J[:1], np.array([np.nan]))))
