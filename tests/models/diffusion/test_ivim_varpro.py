"""Segmented IVIM's fixed-D step by variable projection (``models/diffusion/_ivim_varpro.py``).

Peers: scipy (``optimize.least_squares`` on the same bounded problem, ``optimize.lsq_linear``
for the amplitudes), the bounded LM this step replaced (the generic solver with D fixed by
equal bounds), finite differences for the projected residual's derivatives, and the numpy
path against the compiled one.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _diffusion_helpers import B_IVIM

from tumorscope.fitting import FitStatus
from tumorscope.fitting.engine import BlockFit
from tumorscope.models import IVIM
from tumorscope.models.diffusion import _ivim_varpro as vp
from tumorscope.models.diffusion import ivim_signal


def _problem(
    n: int, rng: np.random.Generator, sigma: float = 20.0, b: np.ndarray = B_IVIM
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noisy voxels (S0 1000, tumour-like ranges, some with no or a fast perfusion), the b-values
    and the true D (the fixed D of the step)."""
    P = np.c_[
        np.full(n, 1000.0),
        rng.uniform(5e-4, 2.5e-3, n),
        rng.uniform(0.0, 0.4, n),
        rng.uniform(0.008, 0.15, n),
    ]
    P[: n // 10, 2] = 0.0  # no perfusion signal
    P[n // 10 : n // 5, 3] = 0.45  # D* near its upper bound
    y = ivim_signal(b, P) + rng.normal(0.0, sigma, (n, b.size))
    return y, b, P[:, 1].copy()


def _run(model: IVIM, y: np.ndarray, d: np.ndarray, engine: str) -> tuple[np.ndarray, ...]:
    """The step through the model (its grid, constraints, search constants) on either path."""
    model.backend = "numba" if engine == "numba" else "numpy"
    return model._varpro(y, d)


@pytest.mark.parametrize(
    "bounds",
    [None, {"S0": (700.0, 1300.0), "f": (0.0, 1.0), "D_star": (0.005, 0.2)}, {"f": (0.05, 0.5)}],
)
def test_compiled_path_matches_numpy_path(bounds: dict | None, rng: np.random.Generator) -> None:
    """Same statuses and, to rounding, the same parameters, residuals and standard errors, with
    the default bounds, the OSIPI test bounds on S0 and a narrower range of f (the amplitudes
    then on other edges of their polygon)."""
    pytest.importorskip("numba")
    y, b, d = _problem(3000, rng)
    m = IVIM(b, bounds=bounds)
    p1, s1, r1, e1 = _run(m, y, d, "numba")
    p2, s2, r2, e2 = _run(m, y, d, "numpy")
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_allclose(p1, p2, rtol=1e-8, atol=0)
    np.testing.assert_allclose(r1, r2, rtol=1e-8)
    np.testing.assert_array_equal(np.isnan(e1), np.isnan(e2))
    np.testing.assert_allclose(e1, e2, rtol=1e-6)
    lo, hi = m.bounds()
    assert np.all((p1 >= lo - 1e-12) & (p1 <= hi + 1e-12))


def test_derivatives_of_the_projected_residual_match_finite_differences(
    rng: np.random.Generator,
) -> None:
    """``phi'`` and ``phi''`` of the projected residual against central differences of ``phi``
    (interior amplitudes, amplitudes on an edge of the polygon: f at its upper bound 0.3, and
    on a vertex: S0 and f both on a bound)."""
    b = B_IVIM
    d = np.array([1e-3, 1e-3, 1e-3])
    truth = np.array(
        [[1000.0, 1e-3, 0.2, 0.03], [1000.0, 1e-3, 0.6, 0.03], [2000.0, 1e-3, 0.8, 0.03]]
    )
    y = ivim_signal(b, truth) + rng.normal(0.0, 5.0, (3, b.size))
    v = np.exp(-d[:, None] * b)
    yv, svv = np.einsum("nm,nm->n", y, v), np.einsum("nm,nm->n", v, v)
    cons = vp.constraints(0.0, 1200.0, 0.0, 0.3)
    theta = np.full(3, 0.05)  # away from the minimum (D* = 0.03): phi' well above rounding
    u = np.exp(-theta[:, None] * b)
    sums = [np.einsum("nm,nm->n", p, q) for p, q in ((u, u), (u, v), (v, v), (y, u), (y, v))]
    kinds = vp._qp_np(*sums, cons)[2]
    assert sorted(kinds.tolist()) == [0, 1, 2]
    _obj, g1, g2, _a, _c = vp._eval_np(theta, y, b, v, yv, svv, cons)
    h = 1e-6
    fp = vp._eval_np(theta + h, y, b, v, yv, svv, cons)
    fm = vp._eval_np(theta - h, y, b, v, yv, svv, cons)
    np.testing.assert_allclose(g1, (fp[0] - fm[0]) / (2 * h), rtol=1e-5)
    np.testing.assert_allclose(g2, (fp[1] - fm[1]) / (2 * h), rtol=1e-5)


def test_amplitudes_match_scipy_lsq_linear(rng: np.random.Generator) -> None:
    """With the default bounds (S0 >= 0, f in [0, 1]: a, c >= 0) the polygon is the first
    quadrant: the amplitudes are scipy's bounded linear least squares (peer)."""
    from scipy.optimize import lsq_linear

    y, b, d = _problem(40, rng, sigma=200.0)
    cons = vp.constraints(0.0, np.inf, 0.0, 1.0)
    u = np.exp(-0.05 * b)
    for i in range(y.shape[0]):
        v = np.exp(-d[i] * b)
        A = np.c_[u, v]
        ref = lsq_linear(A, y[i], bounds=(0.0, np.inf), tol=1e-12).x
        a, c = vp._qp_np(*(np.array([x]) for x in (u @ u, u @ v, v @ v, y[i] @ u, y[i] @ v)), cons)[
            :2
        ]
        np.testing.assert_allclose([a[0], c[0]], ref, rtol=1e-7, atol=1e-6)


def test_at_least_as_good_a_minimiser_as_the_lm_and_scipy(rng: np.random.Generator) -> None:
    """The residual is never above that of the bounded LM it replaced (same D, its grid start)
    nor of scipy's ``least_squares`` (trust-region reflective, same bounds, tight tolerances)
    by more than rounding; the parameters agree where the fit is identifiable."""
    from scipy.optimize import least_squares

    y, b, d = _problem(400, rng)
    m = IVIM(b)
    params, status, rss, _se = m._varpro(y, d)
    assert np.all(status == FitStatus.CONVERGED)
    lin = BlockFit(
        np.c_[np.full(d.size, 1000.0), d], np.zeros(d.size, np.uint8), np.zeros(d.size), None
    )
    lo, hi = m.bounds()
    lower, upper = np.tile(lo, (d.size, 1)), np.tile(hi, (d.size, 1))
    lower[:, 1] = upper[:, 1] = d
    p0 = m._grid_init(y, lin)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = m.solve_nonlinear(y, p0, lower=lower, upper=upper)
    assert np.all(rss <= lm.rss * (1 + 1e-9))
    assert np.mean(rss < lm.rss * (1 - 1e-7)) > 0.01  # the LM stops at ftol = 1e-6
    for i in range(0, 400, 8):

        def res(p: np.ndarray, i: int = i) -> np.ndarray:
            return ivim_signal(b, np.array([p[0], d[i], p[1], p[2]])) - y[i]

        x0 = np.clip(params[i, [0, 2, 3]] * 1.01, lo[[0, 2, 3]], hi[[0, 2, 3]])
        sp = least_squares(
            res, x0, bounds=(lo[[0, 2, 3]], hi[[0, 2, 3]]), xtol=1e-14, ftol=1e-14, gtol=1e-14
        )
        assert rss[i] <= 2 * sp.cost * (1 + 1e-9)
        if 0.03 < params[i, 2] < 0.97 and lo[3] * 1.01 < params[i, 3] < 0.3:
            np.testing.assert_allclose(params[i, [0, 2, 3]], sp.x, rtol=1e-4)


def test_stderr_as_the_lm_reports_it(rng: np.random.Generator) -> None:
    """The standard errors are ``s² (JᵀJ)⁻¹`` of the four parameters at the solution (the
    bounded LM's formula): recomputed here with numpy's inverse."""
    y, b, d = _problem(200, rng)
    m = IVIM(b)
    params, _status, rss, se = m._varpro(y, d)
    J = m.jacobian(params)
    ok = (params[:, 2] > 0.01) & (params[:, 2] < 0.99)
    for i in np.flatnonzero(ok)[:50]:
        cov = np.linalg.inv(J[i].T @ J[i]) * rss[i] / (b.size - 4)
        np.testing.assert_allclose(se[i], np.sqrt(np.diag(cov)), rtol=1e-6)
