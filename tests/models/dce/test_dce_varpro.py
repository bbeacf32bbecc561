"""Variable projection of the Tofts models (``method="varpro"``, :mod:`models.dce._varpro`).

It must find the same least-squares estimate as the bounded Levenberg–Marquardt solver
(``method="lm"``, numba and numpy backends: the numpy path is also what ``"varpro"`` runs
without numba) and as an independent solver (``scipy.optimize.least_squares`` on the
vectorised equation), on the non-uniform frame grid of the other DCE tests.
"""

from __future__ import annotations

import numpy as np
import pytest
from _dce_cases import CP, T, quiet_fit
from scipy.optimize import least_squares

from tumorscope.fitting import FitStatus
from tumorscope.models import ExtendedTofts, Tofts, TwoCXM
from tumorscope.models.dce import kinetics as kin

pytest.importorskip("numba")

CASES = {"tofts": (Tofts, kin.tofts), "extended_tofts": (ExtendedTofts, kin.extended_tofts)}


def _curves(cls, n: int, sd: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    model = cls(T, CP)
    truth = model.sample_parameters(n, rng=np.random.default_rng(seed))
    y = model.signal(truth) + sd * np.random.default_rng(seed + 1).standard_normal((n, T.size))
    return truth, y


def _params(fit, names) -> np.ndarray:
    return np.stack([np.asarray(fit[p], float) for p in names], axis=-1)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("sd", [0.0, 0.01])
def test_varpro_equals_lm_on_both_backends(name: str, sd: float) -> None:
    cls, _ = CASES[name]
    _, y = _curves(cls, 200, sd, 3)
    vp = quiet_fit(cls(T, CP), y)
    assert cls(T, CP).method == "varpro"
    names = cls(T, CP).parameter_names
    for backend in ("numba", "numpy"):
        lm = quiet_fit(cls(T, CP, method="lm", backend=backend), y)
        np.testing.assert_allclose(_params(vp, names), _params(lm, names), rtol=2e-5, atol=1e-7)
        np.testing.assert_allclose(vp.rss, lm.rss, rtol=1e-6, atol=1e-12)
        np.testing.assert_array_equal(vp.status, lm.status)
        if sd > 0:  # noise-free standard errors are 0/0
            for p in names:
                np.testing.assert_allclose(vp.stderr[p], lm.stderr[p], rtol=1e-3, err_msg=p)


def test_varpro_matches_scipy_least_squares() -> None:
    """Independent solver: scipy's trust-region least squares on the vectorised equation."""
    truth, y = _curves(ExtendedTofts, 12, 0.02, 8)
    fit = quiet_fit(ExtendedTofts(T, CP), y)
    for i in range(y.shape[0]):
        res = least_squares(
            lambda p, i=i: kin.extended_tofts(p[None], T, CP)[0] - y[i],
            truth[i],
            x_scale=np.array([0.1, 0.1, 0.01]),
            xtol=1e-14,
            ftol=1e-14,
            gtol=1e-14,
        )
        ours = [fit[p][i] for p in ("Ktrans", "ve", "vp")]
        np.testing.assert_allclose(ours, res.x, rtol=1e-5)
        assert 2 * res.cost >= fit.rss[i] * (1 - 1e-7)  # never a worse residual


def test_varpro_residual_is_never_above_lm() -> None:
    _, y = _curves(ExtendedTofts, 300, 0.03, 21)
    vp = quiet_fit(ExtendedTofts(T, CP), y)
    lm = quiet_fit(ExtendedTofts(T, CP, method="lm"), y)
    p = _params(vp, ("Ktrans", "ve", "vp"))
    exact = np.sum((y - kin.extended_tofts(p, T, CP)) ** 2, axis=-1)  # the reported rss is
    np.testing.assert_allclose(vp.rss, exact, rtol=1e-6, atol=1e-12)  # the true one
    assert np.all(exact <= lm.rss * (1 + 1e-7) + 1e-12)


def test_voxels_outside_the_bounds_go_to_the_bounded_solver() -> None:
    """vp = 0 with noise: about half the unconstrained solutions have vp < 0; those are refitted
    by LM (vp on its bound), the others stay with varpro; the result is LM's everywhere."""
    n = 200
    rng = np.random.default_rng(4)
    truth = np.column_stack([rng.uniform(0.1, 0.4, n), rng.uniform(0.2, 0.5, n), np.zeros(n)])
    y = kin.extended_tofts(truth, T, CP) + 0.01 * rng.standard_normal((n, T.size))
    y[:3] = 0.0  # no enhancement at all
    vp = quiet_fit(ExtendedTofts(T, CP), y)
    lm = quiet_fit(ExtendedTofts(T, CP, method="lm"), y)
    at_bound = vp.status == FitStatus.AT_BOUND
    assert 0.2 < at_bound.mean() < 0.8
    assert np.all(vp.status <= FitStatus.AT_BOUND)
    assert np.all(np.asarray(vp["vp"]) >= 0.0)
    np.testing.assert_array_equal(vp.status, lm.status)
    for p in ("Ktrans", "ve", "vp"):
        np.testing.assert_allclose(vp[p][3:], lm[p][3:], rtol=1e-4, atol=1e-6, err_msg=p)
    np.testing.assert_allclose(vp.rss, lm.rss, rtol=1e-6, atol=1e-12)


def test_varpro_kernel_reports_out_of_bounds_and_passes() -> None:
    from tumorscope.models.dce._varpro import tofts_varpro

    truth = np.array([[0.2, 0.3, 0.05], [0.2, 0.3, 0.0]])
    y = kin.extended_tofts(truth, T, CP)
    y[1] -= 0.02 * CP  # vp = -0.02: outside the bounds
    lo, hi = (np.asarray(b, float) for b in ExtendedTofts(T, CP).bounds())
    p, rss, _se, ok, n_iter = tofts_varpro(T, CP, np.ascontiguousarray(y), True, lo, hi)
    assert ok.tolist() == [True, False]
    np.testing.assert_allclose(p[0], truth[0], rtol=1e-9)
    assert p[1, 2] == pytest.approx(-0.02, rel=1e-6)  # the unconstrained optimum
    assert np.all(n_iter <= 3)  # from the linearised start: a few passes
    assert rss[0] < 1e-20


def test_delay_and_method_fall_back_to_lm() -> None:
    model = ExtendedTofts(T, CP, fit_delay=True)
    assert model.method == "varpro"  # accepted, solved by LM (the delay is not projected)
    truth = model.sample_parameters(20, rng=np.random.default_rng(2))
    y = model.signal(truth)
    a = quiet_fit(model, y)
    b = quiet_fit(ExtendedTofts(T, CP, fit_delay=True, method="lm"), y)
    for p in model.parameter_names:
        np.testing.assert_array_equal(a[p], b[p])


# ----------------------------------------------------------------------------- 2CXM
def test_two_cxm_varpro_noise_free_is_exact() -> None:
    model = TwoCXM(T, CP)
    assert model.method == "varpro"
    truth = model.sample_parameters(100, rng=np.random.default_rng(12))
    fit = quiet_fit(model, model.signal(truth))
    assert np.all(fit.status == FitStatus.CONVERGED)
    np.testing.assert_allclose(_params(fit, model.parameter_names), truth, rtol=1e-6)  # float32


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_two_cxm_varpro_agrees_with_lm_and_is_never_worse(backend: str) -> None:
    model = TwoCXM(T, CP)
    truth = model.sample_parameters(150, rng=np.random.default_rng(13))
    y = model.signal(truth) + 0.01 * np.random.default_rng(14).standard_normal((150, T.size))
    vp = quiet_fit(model, y)
    lm = quiet_fit(TwoCXM(T, CP, method="lm", backend=backend), y)
    np.testing.assert_array_equal(vp.status, lm.status)
    ok = vp.status == FitStatus.CONVERGED
    # both are least-squares minima; LM stops on its ftol/xtol in the flat valleys of the
    # 2CXM (measured: up to 6e-4 relative), varpro on |Δrate| <= 1e-5 rate
    a, b = _params(vp, model.parameter_names)[ok], _params(lm, model.parameter_names)[ok]
    np.testing.assert_allclose(a, b, rtol=2e-3)
    assert np.all(np.median(np.abs(a - b) / np.abs(b), axis=0) < 1e-5)
    assert np.all(vp.rss <= lm.rss * (1 + 1e-6) + 1e-12)
    for p in model.parameter_names:
        np.testing.assert_allclose(vp.stderr[p][ok], lm.stderr[p][ok], rtol=2e-2, err_msg=p)


def test_two_cxm_varpro_matches_scipy_least_squares() -> None:
    model = TwoCXM(T, CP)
    truth = model.sample_parameters(8, rng=np.random.default_rng(15))
    y = model.signal(truth) + 0.01 * np.random.default_rng(16).standard_normal((8, T.size))
    fit = quiet_fit(model, y)
    for i in range(y.shape[0]):
        res = least_squares(
            lambda p, i=i: kin.two_cxm(p[None], T, CP)[0] - y[i],
            truth[i],
            x_scale=np.array([10.0, 1.0, 0.1, 0.01]),
            xtol=1e-15,
            ftol=1e-15,
            gtol=1e-15,
        )
        ours = [fit[p][i] for p in model.parameter_names]
        assert 2 * res.cost >= fit.rss[i] * (1 - 1e-6)  # never a worse residual
        np.testing.assert_allclose(ours, res.x, rtol=1e-3)


def test_two_cxm_varpro_sends_bad_voxels_to_lm() -> None:
    """A flow above the upper bound (1000) and a flat curve (no real linearised rates) are
    refitted by LM from its own starts; the first voxel stays with varpro."""
    from tumorscope.models.dce._kernels import flouri_many
    from tumorscope.models.dce._varpro import two_cxm_varpro

    model = TwoCXM(T, CP)
    truth = np.array([[60.0, 12.0, 0.3, 0.06], [1500.0, 12.0, 0.3, 0.06]])
    y = np.vstack([model.signal(truth), np.zeros(T.size)])
    vp = quiet_fit(model, y)
    lm = quiet_fit(TwoCXM(T, CP, method="lm"), y)
    np.testing.assert_array_equal(vp.status, lm.status)
    for p in model.parameter_names:
        np.testing.assert_allclose(vp[p][1:], lm[p][1:], rtol=1e-6, err_msg=p)
    assert vp["Fp"][0] == pytest.approx(60.0, rel=1e-6)
    assert vp.status[1] == FitStatus.AT_BOUND
    x = flouri_many(T, CP, y)
    al = 0.5 * (x[:, 0] + np.sqrt(x[:, 0] ** 2 - 4 * x[:, 1]))
    start = np.ascontiguousarray(np.column_stack([al, x[:, 1] / al]))
    lo, hi = (np.asarray(b, float) for b in model.bounds())
    p, _, _, ok, _ = two_cxm_varpro(T, CP, y, start, lo, hi)
    assert ok.tolist() == [True, False, False]
    assert p[1, 0] == pytest.approx(1500.0, rel=1e-6)  # the unconstrained optimum
