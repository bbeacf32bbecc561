"""DCE pharmacokinetic models: exact convolution, Jacobians, limits, simulate→fit→recover.

Monte Carlo tolerances. Each noisy test fits ``N = 1000`` realisations of one realistic
parameter point with Gaussian noise (SD 2% of the curve's peak, fixed seed) and compares
with the Cramér–Rao lower bound ``CRLB = sqrt(diag((JᵀJ)⁻¹)) σ`` at the truth:

* bias: ``|median - truth| < 0.2 CRLB``. The median of N draws has a standard error of about
  ``1.25 CRLB / sqrt(N) = 0.04 CRLB``, so 0.2 is 5 standard errors: it only fails for a real
  bias (measured here: at most 0.07 CRLB for every model, with and without delay);
* precision: ``0.88 < SD / CRLB < 1.12``. The relative standard error of an SD from N draws
  is ``1/sqrt(2N) = 2.2%``, so ±12% is over 5 of them (measured: 0.97–1.02): the fit is
  efficient, neither noisier than the bound (a poor optimiser) nor quieter (over-constrained).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tumorscope.errors import FitError, ProtocolError
from tumorscope.fitting import FitStatus
from tumorscope.models import ExtendedTofts, Patlak, Tofts, TwoCUM, TwoCXM, aif
from tumorscope.models import dce_kinetics as kin

T = np.concatenate([np.arange(0.0, 60.0, 2.0), np.arange(60.0, 300.0, 4.0)])  # non-uniform
CP = aif.blood_to_plasma(aif.parker(T, delay_s=15.0), hematocrit=0.42)

EQUATIONS = {
    "tofts": (kin.tofts, [0.25, 0.3], Tofts),
    "extended_tofts": (kin.extended_tofts, [0.25, 0.3, 0.05], ExtendedTofts),
    "patlak": (kin.patlak, [0.1, 0.05], Patlak),
    "2cxm": (kin.two_cxm, [60.0, 12.0, 0.3, 0.06], TwoCXM),
    "2cum": (kin.two_cum, [60.0, 12.0, 0.06], TwoCUM),
}


def _quiet_fit(model, data, mask=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(data, mask)


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
    from tumorscope.models._dce_kernels import KERNELS, pack_consts

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
    compiled = (kin.linear_extended_tofts(y, T, CP), kin.linear_tofts(y, T, CP))
    monkeypatch.setattr(kin, "HAVE_NUMBA", False)
    plain = (kin.linear_extended_tofts(y, T, CP), kin.linear_tofts(y, T, CP))
    for a, b in zip(compiled, plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- recovery
@pytest.mark.parametrize("name", list(EQUATIONS))
@pytest.mark.parametrize("fit_delay", [False, True])
def test_noise_free_recovery(name: str, fit_delay: bool) -> None:
    _, _, cls = EQUATIONS[name]
    model = cls(T, CP, fit_delay=fit_delay)
    truth = model.sample_parameters(40, rng=np.random.default_rng(11))
    if fit_delay:
        truth[:, -1] = np.linspace(-4.0, 8.0, 40)  # fractional delays, both signs
    fit = _quiet_fit(model, model.signal(truth).reshape(5, 8, -1))
    assert np.all(fit.status <= FitStatus.AT_BOUND)
    for i, pname in enumerate(model.parameter_names):
        np.testing.assert_allclose(
            fit[pname].ravel(), truth[:, i], rtol=1e-4, atol=1e-4, err_msg=pname
        )


MC_POINTS = {
    "tofts": [0.2, 0.3],
    "extended_tofts": [0.2, 0.3, 0.05],
    "patlak": [0.05, 0.05],
    "2cxm": [50.0, 10.0, 0.3, 0.05],
    "2cum": [50.0, 10.0, 0.05],
}


@pytest.mark.parametrize("name", list(MC_POINTS))
@pytest.mark.parametrize("fit_delay", [False, True])
def test_noisy_monte_carlo_is_unbiased_and_efficient(name: str, fit_delay: bool) -> None:
    _, _, cls = EQUATIONS[name]
    model = cls.example()
    model = cls(model.times_s, model.aif_mM, fit_delay=fit_delay)
    truth = np.array([*MC_POINTS[name], 3.0] if fit_delay else MC_POINTS[name])
    y0 = model.signal(truth[None])[0]
    sigma = 0.02 * y0.max()
    jac = model.jacobian(truth[None])[0]
    crlb = np.sqrt(np.diag(np.linalg.inv(jac.T @ jac))) * sigma
    rng = np.random.default_rng(20260601)
    y = y0 + sigma * rng.standard_normal((1000, y0.size))
    fit = _quiet_fit(model, y)
    ok = fit.status <= FitStatus.AT_BOUND
    assert ok.mean() > 0.99
    est = np.stack([fit[p][ok] for p in model.parameter_names], axis=-1).astype(float)
    bias = (np.median(est, axis=0) - truth) / crlb
    ratio = est.std(axis=0) / crlb
    assert np.all(np.abs(bias) < 0.2), dict(zip(model.parameter_names, bias, strict=True))
    assert np.all((ratio > 0.88) & (ratio < 1.12)), dict(
        zip(model.parameter_names, ratio, strict=True)
    )


def test_backends_agree() -> None:
    model = ExtendedTofts(T, CP, fit_delay=True)
    truth = model.sample_parameters(30, rng=np.random.default_rng(5))
    y = model.signal(truth) + 0.01 * np.random.default_rng(6).standard_normal((30, T.size))
    a = _quiet_fit(model, y)
    b = _quiet_fit(ExtendedTofts(T, CP, fit_delay=True, backend="numpy"), y)
    for p in model.parameter_names:
        np.testing.assert_allclose(a[p], b[p], rtol=1e-4, atol=1e-5, err_msg=p)


def test_derived_maps_and_units() -> None:
    fit = _quiet_fit(Tofts(T, CP), kin.tofts(np.array([[0.2, 0.4]]), T, CP))
    assert fit["kep"][0] == pytest.approx(0.5, rel=1e-5)
    assert fit.units == {"Ktrans": "1/min", "ve": "1", "kep": "1/min"}
    model = TwoCXM(T, CP)
    fit = _quiet_fit(model, kin.two_cxm(np.array([[60.0, 20.0, 0.3, 0.05]]), T, CP))
    assert fit["E"][0] == pytest.approx(0.25, rel=1e-4)
    assert fit["Ktrans"][0] == pytest.approx(0.15, rel=1e-4)  # E Fp / 100, 1/min
    assert fit.units["Fp"] == fit.units["PS"] == "mL/100mL/min"
    assert TwoCXM(T, CP, fit_delay=True).units["delay"] == "s"


def test_linear_method_status_and_values() -> None:
    y = kin.patlak(np.array([[0.1, 0.05], [0.02, 0.2]]), T, CP)
    fit = _quiet_fit(Patlak(T, CP, method="linear"), y)
    np.testing.assert_allclose(fit["Ktrans"], [0.1, 0.02], rtol=1e-5)
    assert np.all(fit.status == FitStatus.CONVERGED)


# ----------------------------------------------------------------------------- bad input
def test_aif_of_another_length_is_rejected() -> None:
    with pytest.raises(ProtocolError, match=r"AIF has 59 samples.*60 frame times"):
        Tofts(np.arange(60.0), np.ones(59))


def test_non_increasing_frame_times_are_rejected() -> None:
    t = np.arange(10.0)
    t[5] = t[4]
    with pytest.raises(ProtocolError, match=r"strictly increasing.*index 5"):
        ExtendedTofts(t, np.ones(10))
    with pytest.raises(ProtocolError, match="at least 3 frame times"):
        TwoCXM([0.0, 1.0], [0.0, 1.0])


def test_bad_options_are_rejected() -> None:
    with pytest.raises(FitError, match="unknown method"):
        Tofts(T, CP, method="bayes")
    with pytest.raises(FitError, match="delay_range_s"):
        Tofts(T, CP, fit_delay=True, delay_range_s=(5.0, -5.0))
    with pytest.raises(FitError, match="unknown backend"):
        Tofts(T, CP, backend="gpu")
    with pytest.raises(FitError, match="engine"):
        kin.exp_convolution(T, CP, [0.1], engine="fortran")
    with pytest.raises(FitError, match="expected 2 parameters"):
        kin.tofts(np.ones(3), T, CP)


def test_nan_curves_get_invalid_status_not_an_exception() -> None:
    y = np.vstack([kin.tofts(np.array([0.2, 0.3]), T, CP), np.full(T.size, np.nan)])
    fit = _quiet_fit(Tofts(T, CP), y)
    assert fit.status[1] == FitStatus.INVALID_INPUT
    assert np.isnan(fit["Ktrans"][1]) and np.isfinite(fit["Ktrans"][0])
