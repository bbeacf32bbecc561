"""What every diffusion model shares: backends agree, invalid voxels, bad input, protocols,
the constructor convention and the registry."""

from __future__ import annotations

import numpy as np
import pytest
from _diffusion_helpers import B_ADC, B_DKI, B_IVIM, quiet_fit, stack

from tumorscope.errors import FitError, ProtocolError, TumorscopeWarning
from tumorscope.models import ADC, DKI, IVIM
from tumorscope.models.base import get_model, list_models
from tumorscope.models.diffusion import adc_signal
from tumorscope.protocol import DiffusionProtocol, VFAProtocol


@pytest.mark.parametrize(
    ("model", "names"),
    [
        (IVIM(B_IVIM, method="full"), ["S0", "D", "f", "D_star"]),
        (IVIM(B_IVIM, method="segmented"), ["S0", "D", "f", "D_star"]),
        (ADC(B_ADC, method="nlls"), ["S0", "ADC"]),
        (DKI(B_DKI, method="nlls"), ["S0", "D", "K"]),
        (DKI(np.repeat(B_DKI, 3)), ["S0", "D", "K"]),
        (ADC(B_ADC), ["S0", "ADC"]),
    ],
    ids=["ivim-full", "ivim-segmented", "adc-nlls", "dki-nlls", "dki-wlls-3dirs", "adc-wlls"],
)
def test_backends_agree_on_noisy_data(model, names, rng: np.random.Generator) -> None:  # type: ignore[no-untyped-def]
    P = model.sample_parameters(400, rng=rng)
    y = model.signal(P) + rng.normal(0, P[:, :1] / 50, (400, model.n_measurements))
    y = np.abs(y)
    a = quiet_fit(model, y)
    other = type(model).__new__(type(model))
    other.__dict__.update(model.__dict__)
    other.backend = "numpy"
    b = quiet_fit(other, y)
    np.testing.assert_allclose(stack(a, names), stack(b, names), rtol=1e-4)
    assert np.mean(a.status == b.status) > 0.99
    same = a.status == b.status
    for n in names:
        np.testing.assert_allclose(a.stderr[n][same], b.stderr[n][same], rtol=1e-3)
    np.testing.assert_allclose(a.rss[same], b.rss[same], rtol=1e-3)


def test_bvalue_and_data_length_disagree() -> None:
    with pytest.raises(FitError, match="15 b-values"):
        IVIM(B_IVIM).fit(np.ones((3, 14)))


def test_mask_of_another_shape() -> None:
    with pytest.raises(FitError, match="mask shape"):
        ADC(B_ADC).fit(np.ones((4, 5, 5)), np.ones((5, 4), bool))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "model",
    [
        ADC(B_ADC),
        ADC(B_ADC, backend="numpy"),
        ADC(B_ADC, method="lls"),
        ADC(B_ADC, b_min=40),
        ADC(B_ADC, method="nlls"),
        IVIM(B_IVIM),
        DKI(B_DKI),
    ],
    ids=["adc", "adc-numpy", "adc-lls", "adc-bmin", "adc-nlls", "ivim", "dki"],
)
def test_invalid_voxels_status(model, dtype) -> None:  # type: ignore[no-untyped-def]
    P = model.sample_parameters(5, rng=np.random.default_rng(0))
    y = model.signal(P).astype(dtype)
    y[0, 2] = -1.0  # negative signal
    y[1] = 0.0  # all-zero voxel
    y[2, 3] = np.nan  # NaN
    y[3, 0] = 0.0  # non-positive baseline (b = 0)
    # with b_min = 40 the baseline is the lowest b used (50): a zero at b = 0 is ignored
    n_bad = 3 if getattr(model, "b_min", None) else 4
    bad = np.arange(5) < n_bad
    if isinstance(model, IVIM):
        # IVIM takes negative samples as zero-mean noise around a vanished signal (blood at
        # high b): the voxel with y[0, 2] = -1 is fitted (its status is its fit's)
        bad[0] = False
        n_bad -= 1
    with pytest.warns(TumorscopeWarning, match=f"{n_bad} of 5 voxels had invalid input"):
        fit = model.fit(y)
    np.testing.assert_array_equal(fit.status[bad], 3)
    np.testing.assert_array_equal(fit.status[np.arange(5) >= 4], 0)
    assert fit.status[0] <= 2 or not isinstance(model, IVIM)
    assert np.all(np.isnan(fit[model.parameter_names[1]][bad]))


def test_bad_protocols_and_options() -> None:
    with pytest.raises(ProtocolError):
        ADC([0, -10, 500])
    with pytest.raises(ProtocolError, match="IVIM needs"):
        IVIM([0, 500, 1000])
    with pytest.raises(ProtocolError, match="3 distinct b-value shells"):
        DKI([0, 1000, 1010])
    with pytest.raises(ProtocolError, match="at least 2 distinct"):
        ADC([0, 50, 1000], b_min=500)
    with pytest.raises(FitError, match="unknown method 'trr'"):
        IVIM(B_IVIM, method="trr")
    with pytest.raises(FitError, match="unknown backend"):
        ADC(B_ADC, backend="gpu")
    with pytest.raises(FitError, match="prior"):
        IVIM(B_IVIM, method="full", prior={"D": (1e-3, 1e-4)})
    with pytest.raises(FitError, match="log_D_star"):
        IVIM(B_IVIM, method="bayes", prior={"D": (1e-3, 1e-4), "f": (0.1, 0.05)})


@pytest.mark.parametrize(
    ("cls", "b", "options"),
    [
        (ADC, B_ADC, {"method": "nlls", "b_min": 40}),
        (IVIM, B_IVIM, {"method": "full", "b_threshold": 250}),
        (DKI, B_DKI, {"k_max": 2.5}),
    ],
    ids=["adc", "ivim", "dki"],
)
def test_from_protocol_is_the_constructor(cls, b, options) -> None:  # type: ignore[no-untyped-def]
    """Every diffusion model takes its acquisition as a DiffusionProtocol or its b-values."""
    protocol = DiffusionProtocol(tuple(b))
    a = cls.from_protocol(protocol, **options)
    assert type(a) is cls
    assert a.options() == cls(protocol, **options).options() == cls(b, **options).options()
    y = a.signal(a.sample_parameters(20, rng=np.random.default_rng(1)))
    fa, fb = quiet_fit(a, y), quiet_fit(cls(b, **options), y)
    for name in a.parameter_names:
        np.testing.assert_array_equal(fa[name], fb[name])
    with pytest.raises(ProtocolError, match="DiffusionProtocol"):
        cls.from_protocol(VFAProtocol((2.0, 15.0), 5.0), **options)


def test_registry_finds_the_diffusion_models() -> None:
    """The registry discovers the models of the ``models.diffusion`` package; provenance names
    them by their public module."""
    assert {"adc", "ivim", "dki"} <= set(list_models())
    assert get_model("ADC") is ADC and get_model("ivim") is IVIM and get_model("dki") is DKI
    fit = quiet_fit(ADC(B_ADC), adc_signal(B_ADC, np.array([[100.0, 1e-3]])))
    assert fit.provenance["model_class"] == "tumorscope.models.diffusion.ADC"
