"""The registered DCE models (:mod:`tumorscope.models.dce.models`): simulate → fit → recover.

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

import numpy as np
import pytest
from _dce_cases import CP, EQUATIONS, T, quiet_fit

from tumorscope.errors import FitError, ProtocolError
from tumorscope.fitting import FitStatus
from tumorscope.models import ExtendedTofts, Patlak, Tofts, TwoCXM
from tumorscope.models.dce import kinetics as kin


# ----------------------------------------------------------------------------- recovery
@pytest.mark.parametrize("name", list(EQUATIONS))
@pytest.mark.parametrize("fit_delay", [False, True])
def test_noise_free_recovery(name: str, fit_delay: bool) -> None:
    _, _, cls = EQUATIONS[name]
    model = cls(T, CP, fit_delay=fit_delay)
    truth = model.sample_parameters(40, rng=np.random.default_rng(11))
    if fit_delay:
        truth[:, -1] = np.linspace(-4.0, 8.0, 40)  # fractional delays, both signs
    fit = quiet_fit(model, model.signal(truth).reshape(5, 8, -1))
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
    fit = quiet_fit(model, y)
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
    a = quiet_fit(model, y)
    b = quiet_fit(ExtendedTofts(T, CP, fit_delay=True, backend="numpy"), y)
    for p in model.parameter_names:
        np.testing.assert_allclose(a[p], b[p], rtol=1e-4, atol=1e-5, err_msg=p)


def test_derived_maps_and_units() -> None:
    fit = quiet_fit(Tofts(T, CP), kin.tofts(np.array([[0.2, 0.4]]), T, CP))
    assert fit["kep"][0] == pytest.approx(0.5, rel=1e-5)
    assert fit.units == {"Ktrans": "1/min", "ve": "1", "kep": "1/min"}
    model = TwoCXM(T, CP)
    fit = quiet_fit(model, kin.two_cxm(np.array([[60.0, 20.0, 0.3, 0.05]]), T, CP))
    assert fit["E"][0] == pytest.approx(0.25, rel=1e-4)
    assert fit["Ktrans"][0] == pytest.approx(0.15, rel=1e-4)  # E Fp / 100, 1/min
    assert fit.units["Fp"] == fit.units["PS"] == "mL/100mL/min"
    assert TwoCXM(T, CP, fit_delay=True).units["delay"] == "s"


def test_linear_method_status_and_values() -> None:
    y = kin.patlak(np.array([[0.1, 0.05], [0.02, 0.2]]), T, CP)
    fit = quiet_fit(Patlak(T, CP, method="linear"), y)
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
    fit = quiet_fit(Tofts(T, CP), y)
    assert fit.status[1] == FitStatus.INVALID_INPUT
    assert np.isnan(fit["Ktrans"][1]) and np.isfinite(fit["Ktrans"][0])


def test_acquisition_is_a_protocol_or_the_frame_times() -> None:
    from tumorscope.protocol import DynamicProtocol

    proto = DynamicProtocol(tuple(T), flip_angle_deg=15.0, tr_ms=4.0, n_baseline=5)
    by_times = ExtendedTofts(T, CP, fit_delay=True)
    for model in (
        ExtendedTofts(proto, CP, fit_delay=True),
        ExtendedTofts.from_protocol(proto, aif_mM=CP, fit_delay=True),
    ):
        assert model.options() == by_times.options()
        np.testing.assert_array_equal(model.times_s, T)
    with pytest.raises(TypeError, match="aif_mM"):
        Tofts.from_protocol(proto)
