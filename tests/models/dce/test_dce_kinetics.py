"""DCE equations (:mod:`tumorscope.models.dce.kinetics` and its numba kernels): exact
convolution, analytic Jacobians, limits between models, linearised solutions."""

from __future__ import annotations

import numpy as np
import pytest
from _dce_cases import CP, EQUATIONS, T

from tumorscope.models import aif
from tumorscope.models.dce import kinetics as kin


def _brute(k: float, d: float, t: np.ndarray = T, cp: np.ndarray = CP) -> np.ndarray:
    """∫ cp_lin(u) e^{-k(t-d-u)} du on a 1e-3 s grid aligned with the frames (Simpson-free)."""
    out = np.zeros(t.size)
    for j, tj in enumerate(t):
        tau = tj - d
        if tau <= t[0]:
            continue
        u = np.linspace(t[0], tau, round((tau - t[0]) / 1e-3) + 1)
        w = np.interp(u, t, cp) * np.exp(-k * (tau - u))
        out[j] = np.sum(0.5 * (w[1:] + w[:-1]) * np.diff(u))
    return out


# ----------------------------------------------------------------------------- convolution
@pytest.mark.parametrize("engine", ["numpy", "numba"])
def test_exp_convolution_is_exact_for_piecewise_linear_input(engine: str) -> None:
    k = np.array([0.0, 1e-4, 0.02, 0.3])
    d = np.array([0.0, 3.3, -2.1, 7.0])
    f, g, cpd, _ = kin.exp_convolution(T, CP, k, delay_s=d, derivative=True, engine=engine)
    assert g is not None
    for i in range(k.size):
        ref = _brute(k[i], d[i])
        # the 1e-3 s trapezoid reference itself is accurate to ~1e-7 relative here
        np.testing.assert_allclose(f[i], ref, rtol=0, atol=2e-6 * ref.max())
        np.testing.assert_allclose(cpd[i], np.interp(T - d[i], T, CP, left=0.0), atol=1e-12)


def test_numba_and_numpy_engines_agree() -> None:
    k = np.linspace(0.0, 0.5, 7)
    d = np.linspace(-8.0, 12.0, 7)
    a = kin.exp_convolution(T, CP, k, delay_s=d, derivative=True, engine="numpy")
    b = kin.exp_convolution(T, CP, k, delay_s=d, derivative=True, engine="numba")
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)


def test_rectangle_rule_would_be_biased() -> None:
    """Why the exact convolution matters: a discrete sum misses the extended Tofts curve."""
    t = np.arange(0.0, 300.0, 5.0)
    cp = aif.parker(t, delay_s=10.0) / 0.58
    exact = kin.extended_tofts(np.array([0.2, 0.3, 0.05]), t, cp)
    kep = 0.2 / 0.3 / 60.0
    rect = 0.2 / 60.0 * np.convolve(cp, np.exp(-kep * t))[: t.size] * 5.0 + 0.05 * cp
    assert np.max(np.abs(rect - exact)) > 0.05 * exact.max()


# ----------------------------------------------------------------------------- Jacobians
@pytest.mark.parametrize("name", list(EQUATIONS))
@pytest.mark.parametrize("fit_delay", [False, True])
def test_analytic_jacobian_matches_finite_differences(name: str, fit_delay: bool) -> None:
    fn, p, _ = EQUATIONS[name]
    pp = np.array([*p, 2.7] if fit_delay else p)
    _, jac = fn(pp, T, CP, fit_delay=fit_delay, jacobian=True)
    for j in range(pp.size):
        h = 1e-6 * max(abs(pp[j]), 1e-3)
        up, dn = pp.copy(), pp.copy()
        up[j] += h
        dn[j] -= h
        num = (fn(up, T, CP, fit_delay=fit_delay) - fn(dn, T, CP, fit_delay=fit_delay)) / (2 * h)
        np.testing.assert_allclose(jac[:, j], num, rtol=0, atol=1e-7 * np.abs(num).max())


@pytest.mark.parametrize("name", list(EQUATIONS))
@pytest.mark.parametrize("fit_delay", [False, True])
def test_compiled_kernels_equal_vectorised_equations(name: str, fit_delay: bool) -> None:
    from tumorscope.models.dce._kernels import KERNELS, pack_consts

    fn, p, _ = EQUATIONS[name]
    pp = np.array([*p, -1.3] if fit_delay else p)
    c, jac = fn(pp, T, CP, fit_delay=fit_delay, jacobian=True)
    f_out = np.empty(T.size)
    j_out = np.empty((T.size, pp.size))
    KERNELS[name](pp, pack_consts(T, CP, fit_delay), f_out, j_out)
    np.testing.assert_allclose(f_out, c, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(j_out, jac, rtol=1e-10, atol=1e-14)


# ----------------------------------------------------------------------------- limits
def test_extended_tofts_with_zero_vp_is_tofts() -> None:
    a = kin.tofts(np.array([0.2, 0.3]), T, CP)
    b = kin.extended_tofts(np.array([0.2, 0.3, 0.0]), T, CP)
    np.testing.assert_array_equal(a, b)


def test_two_cxm_tends_to_extended_tofts_at_high_flow() -> None:
    """Fp → ∞: 2CXM → vp cp + PS (cp ⊛ e^{-PS t/ve}); the gap shrinks like 1/Fp."""
    ets = kin.extended_tofts(np.array([0.12, 0.3, 0.05]), T, CP)
    gaps = []
    for fp in (1e3, 1e4, 1e5):
        c = kin.two_cxm(np.array([fp, 12.0, 0.3, 0.05]), T, CP)
        gaps.append(np.max(np.abs(c - ets)) / ets.max())
    assert gaps[2] < 1e-3
    assert gaps[0] / gaps[1] == pytest.approx(10.0, rel=0.1)
    assert gaps[1] / gaps[2] == pytest.approx(10.0, rel=0.1)


def test_two_cxm_tends_to_two_cum_without_backflux() -> None:
    cum = kin.two_cum(np.array([60.0, 12.0, 0.05]), T, CP)
    c = kin.two_cxm(np.array([60.0, 12.0, 1e5, 0.05]), T, CP)
    np.testing.assert_allclose(c, cum, rtol=0, atol=1e-5 * cum.max())


def test_extended_tofts_tends_to_patlak_when_ve_is_large() -> None:
    pat = kin.patlak(np.array([0.1, 0.05]), T, CP)
    c = kin.extended_tofts(np.array([0.1, 1e6, 0.05]), T, CP)
    np.testing.assert_allclose(c, pat, rtol=0, atol=1e-6 * pat.max())


# ----------------------------------------------------------------------------- linear starts
def test_linear_solutions_on_noise_free_curves() -> None:
    """Patlak is exactly linear; the integral forms are accurate to the trapezoid error."""
    for name, lin, rtol in [
        ("patlak", kin.linear_patlak, 1e-10),
        ("tofts", kin.linear_tofts, 1e-3),
        ("extended_tofts", kin.linear_extended_tofts, 1e-3),
        ("2cxm", kin.linear_2cxm, 1e-2),
    ]:
        fn, p, _ = EQUATIONS[name]
        est = lin(fn(np.array(p), T, CP), T, CP)
        np.testing.assert_allclose(est, p, rtol=rtol, err_msg=name)


def test_compiled_and_numpy_linear_solutions_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    p = np.column_stack(
        [rng.uniform(0.05, 0.5, 20), rng.uniform(0.1, 0.6, 20), rng.uniform(0, 0.1, 20)]
    )
    y = kin.extended_tofts(p, T, CP) + 0.01 * rng.standard_normal((20, T.size))
    p2 = np.column_stack(
        [
            rng.uniform(20, 100, 20),
            rng.uniform(3, 30, 20),
            rng.uniform(0.1, 0.5, 20),
            rng.uniform(0.02, 0.1, 20),
        ]
    )
    y2 = kin.two_cxm(p2, T, CP) + 0.01 * rng.standard_normal((20, T.size))
    y2[0] = np.nan  # singular / non-finite rows: NaN in both
    y2[1] = 0.0

    def solve() -> tuple[np.ndarray, ...]:
        return (
            kin.linear_extended_tofts(y, T, CP),
            kin.linear_tofts(y, T, CP),
            kin.linear_2cxm(y2, T, CP),
        )

    compiled = solve()
    monkeypatch.setattr(kin, "HAVE_NUMBA", False)
    plain = solve()
    for a, b in zip(compiled[:2], plain[:2], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    # the four integral columns of the 2CXM are nearly collinear (scaled normal matrix
    # condition ~1e7): sums in another order differ by ~1e-9 relative after the conversion
    np.testing.assert_allclose(compiled[2], plain[2], rtol=1e-7, atol=1e-12)
