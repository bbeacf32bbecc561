"""The model conventions of ``tumorscope.models.base``: every model is built from its protocol
(``Model.from_protocol``), and per-voxel inputs are declared (``voxel_inputs``) and passed to
``fit`` by name, checked for shape and handed to the engine chunk by chunk."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest

from tumorscope.errors import DataError, FitError, ProtocolError, TumorscopeWarning
from tumorscope.fitting import BlockFit, FitStatus
from tumorscope.models import ADC, IRT1, IVIM, T2, VFAT1, T2Star, get_model, list_models
from tumorscope.models.base import Model, ParameterSpec
from tumorscope.models.relaxometry import T2Offset, spgr_signal
from tumorscope.protocol import (
    DynamicProtocol,
    InversionRecoveryProtocol,
    MultiEchoProtocol,
    VFAProtocol,
)

FA = [2.0, 5.0, 10.0, 15.0]
TR = 5.0


@pytest.mark.parametrize(
    ("cls", "protocol", "same"),
    [
        (VFAT1, VFAProtocol(flip_angles_deg=FA, tr_ms=TR), VFAT1(FA, TR)),
        (
            IRT1,
            InversionRecoveryProtocol(inversion_times_ms=(100, 400, 1200)),
            IRT1([100, 400, 1200]),
        ),
        (T2Star, MultiEchoProtocol(echo_times_ms=(2, 4, 8, 16)), T2Star([2, 4, 8, 16])),
        (T2, MultiEchoProtocol(echo_times_ms=(10, 20, 40)), T2([10, 20, 40])),
        (T2Offset, MultiEchoProtocol(echo_times_ms=(10, 20, 40)), T2Offset([10, 20, 40])),
    ],
)
def test_relaxometry_models_from_protocol(cls: type[Model], protocol: Any, same: Model) -> None:
    """``from_protocol``, the protocol as first argument and the values give one model."""
    a = cls.from_protocol(protocol)
    b = cls(protocol)  # type: ignore[call-arg]
    assert type(a) is cls and a.options() == b.options() == same.options()


def test_from_protocol_options_and_wrong_kind() -> None:
    proto = VFAProtocol(flip_angles_deg=FA, tr_ms=TR, source="vfa.json")
    assert VFAT1.from_protocol(proto, method="despot1").method == "despot1"
    with pytest.raises(ProtocolError, match="VFAT1 needs a VFAProtocol, got MultiEchoProtocol"):
        VFAT1.from_protocol(MultiEchoProtocol(echo_times_ms=(1, 2)))
    with pytest.raises(FitError, match="not both"):
        VFAT1(proto, 5.0)
    with pytest.raises(ProtocolError, match="expected a MultiEchoProtocol"):
        T2Star(proto)  # type: ignore[arg-type]


class _Toy(Model):
    """A model whose constructor takes protocol attributes (as the DCE models do)."""

    name: ClassVar[str] = ""
    parameters = (ParameterSpec("a", "1"),)
    protocol_type = DynamicProtocol
    protocol_fields = ("t", "tr_ms")

    def __init__(self, t: Any, tr_ms: float, *, scale: float = 1.0) -> None:
        self.t, self.tr_ms, self.scale = np.asarray(t), tr_ms, scale

    @property
    def n_measurements(self) -> int:
        return int(self.t.size)

    def signal(self, params: np.ndarray) -> np.ndarray:
        return params[:, :1] * self.t

    def jacobian(self, params: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.t[None, :, None], (params.shape[0], self.t.size, 1)).copy()

    @classmethod
    def example(cls) -> _Toy:
        return cls([1.0, 2.0, 3.0], 4.0)


def test_from_protocol_with_protocol_fields() -> None:
    proto = DynamicProtocol(frame_times_s=(0.0, 1.0, 2.0), flip_angle_deg=10, tr_ms=4.0)
    toy = _Toy.from_protocol(proto, scale=2.0)
    np.testing.assert_array_equal(toy.t, [0.0, 1.0, 2.0])
    assert toy.tr_ms == 4.0 and toy.scale == 2.0


def test_registry_finds_the_models_of_modality_packages() -> None:
    names = set(list_models())
    assert {"vfat1", "irt1", "t2", "t2star", "t2_offset"} <= names
    assert get_model("T2_OFFSET") is T2Offset
    # provenance names the public home of the class
    fit = T2([10, 20, 40]).fit(np.array([[100.0, 60.0, 30.0]]))
    assert fit.provenance["model_class"] == "tumorscope.models.relaxometry.T2"


def _vfa_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t1 = rng.uniform(300, 3000, n)
    b1 = rng.uniform(0.7, 1.3, n)
    y = spgr_signal(np.c_[rng.uniform(500, 5000, n), t1], FA, TR, b1=b1)
    y = y + rng.standard_normal(y.shape) * 0.01 * y.max()
    return y, b1, t1


@pytest.mark.parametrize("method", ["nonlinear", "despot1", "two_point"])
def test_b1_map_equals_fitting_each_voxel_at_its_actual_flip_angles(method: str) -> None:
    """The B1 map scales the flip angles voxel by voxel: the fit with ``b1=`` gives the T1 of
    a model built with the actual angles ``b1 · FA`` for each voxel (noisy data), to float32
    precision, whatever the chunk size."""
    y, b1, _ = _vfa_data(40, 3)
    fit = VFAT1(FA, TR, method=method).fit(y, b1=b1)
    per_voxel = np.array(
        [
            VFAT1(b * np.asarray(FA), TR, method=method).fit(y[i : i + 1])["T1"][0]
            for i, b in enumerate(b1)
        ]
    )
    np.testing.assert_allclose(fit["T1"], per_voxel, rtol=2e-6)
    chunked = VFAT1(FA, TR, method=method).fit(y, b1=b1, chunk_voxels=7)
    np.testing.assert_array_equal(chunked["T1"], fit["T1"])
    np.testing.assert_array_equal(chunked.status, fit.status)


def test_voxel_inputs_are_checked_and_masked() -> None:
    y, b1, t1 = _vfa_data(12, 4)
    y3, b3 = y.reshape(3, 4, 4), b1.reshape(3, 4)
    m = VFAT1(FA, TR)
    with pytest.raises(FitError, match="B1 map shape \\(4, 3\\) does not match"):
        m.fit(y3, b1=b3.T)
    with pytest.raises(TypeError, match="b2"):  # VFAT1.fit names its input
        m.fit(y3, b2=b3)  # type: ignore[call-arg]
    with pytest.raises(FitError, match="unknown per-voxel input 'b1'; it takes: none"):
        IRT1([100, 400, 1200]).fit(np.ones((2, 3)), b1=np.ones(2))  # type: ignore[call-arg]
    with pytest.raises(DataError, match="percent"):
        m.fit(y3, b1=b3 * 100)
    mask = np.ones((3, 4), bool)
    mask[0, 0] = False
    bad = b3.copy()
    bad[1, 1] = np.nan
    with pytest.warns(UserWarning):
        fit = m.fit(y3, mask, b1=bad)
    assert fit.status[0, 0] == FitStatus.NOT_FITTED
    assert fit.status[1, 1] == FitStatus.INVALID_INPUT
    good = mask & np.isfinite(bad)
    np.testing.assert_allclose(fit["T1"][good], t1.reshape(3, 4)[good], rtol=0.2)
    assert fit.provenance["input"]["shape"] == [3, 4, 4]


class _Scaled(Model):
    """A model with a per-voxel input: the data are ``a · g`` with a known gain ``g``."""

    name: ClassVar[str] = ""
    parameters = (ParameterSpec("a", "1"),)
    voxel_inputs = ("gain",)
    seen: ClassVar[list[int]] = []

    @property
    def n_measurements(self) -> int:
        return 2

    def signal(self, params: np.ndarray) -> np.ndarray:
        return np.repeat(params, 2, axis=1)

    def jacobian(self, params: np.ndarray) -> np.ndarray:
        return np.ones((params.shape[0], 2, 1))

    def invalid_voxels(self, y: np.ndarray, *, gain: np.ndarray | None = None) -> np.ndarray:
        bad = super().invalid_voxels(y)
        return bad if gain is None else bad | (gain == 0)

    def fit_block(self, y: np.ndarray, *, gain: np.ndarray | None = None) -> BlockFit:
        self.seen.append(y.shape[0])
        g = np.ones(y.shape[0]) if gain is None else gain
        assert g.shape == (y.shape[0],) and g.dtype == np.float64
        a = y.mean(axis=1) / g
        return BlockFit(a[:, None], np.zeros(y.shape[0], np.uint8), np.zeros(y.shape[0]))

    @classmethod
    def example(cls) -> _Scaled:
        return cls()


def test_engine_hands_voxel_inputs_block_by_block() -> None:
    gain = np.arange(10.0).reshape(2, 5)
    y = np.repeat((3.0 * gain)[..., None], 2, axis=-1)
    _Scaled.seen.clear()
    with pytest.warns(UserWarning):  # the voxel with gain 0 is invalid input
        fit = _Scaled().fit(y, chunk_voxels=4, gain=gain)
    assert _Scaled.seen == [3, 4, 2]  # 3 valid voxels of the first block of 4
    assert fit.status[0, 0] == FitStatus.INVALID_INPUT
    np.testing.assert_allclose(fit["a"].ravel()[1:], 3.0)
    np.testing.assert_allclose(_Scaled().fit(y)["a"], y[..., 0])  # not given: not passed


def test_b1_fit_gives_the_numbers_of_the_previous_implementation() -> None:
    """T1 and M0 with a B1 map, seeded noisy voxels, as computed by the implementation
    before the redesign (B1 as an extra data column, tumorscope commit 5ffd0d4), to float32
    precision."""
    rng = np.random.default_rng(11)
    n = 6
    t1 = rng.uniform(300, 3000, n)
    b1 = rng.uniform(0.7, 1.3, n)
    y = spgr_signal(np.c_[np.full(n, 2000.0), t1], FA, TR, b1=b1)
    y = y + rng.standard_normal(y.shape) * 0.01 * y.max()
    before = {
        "nonlinear": (
            [647.5973510742188, 1665.6495361328125, 1901.4697265625, 370.913330078125,
             676.5294189453125, 2643.9638671875],
            [2002.6348876953125, 2022.16064453125, 1940.36962890625, 1960.4730224609375,
             1965.4383544921875, 1931.2940673828125],
        ),
        "despot1": (
            [660.6713256835938, 1673.2193603515625, 1900.5189208984375, 363.4149169921875,
             665.5665893554688, 2701.572021484375],
            [2026.3863525390625, 2037.0936279296875, 1942.85693359375, 1934.5892333984375,
             1940.2808837890625, 1948.3509521484375],
        ),
    }  # fmt: skip
    for method, (t1_before, m0_before) in before.items():
        fit = VFAT1(FA, TR, method=method).fit(y, b1=b1)
        np.testing.assert_allclose(fit["T1"], np.float32(t1_before), rtol=1.2e-7)
        np.testing.assert_allclose(fit["M0"], np.float32(m0_before), rtol=1.2e-7)


@pytest.mark.parametrize(
    "model",
    [
        ADC([0, 500, 1000]),  # fused fast path (with numba)
        ADC([0, 500, 1000], method="nlls", backend="numpy"),  # the engine
        IVIM([0, 20, 50, 100, 200, 400, 700, 1000], method="bayes"),  # two passes
        VFAT1(FA, TR),  # restates fit to name its per-voxel input
        T2Star([2.0, 4.0, 6.0, 8.0, 12.0, 16.0], floor="rician"),  # noise level estimated first
    ],
    ids=lambda m: type(m).__name__,
)
def test_summary_warning_names_the_line_that_called_fit(model: Model) -> None:
    """However a model fits (engine, fused pass, several passes), its one summary warning is
    attributed to the caller of ``fit``, not to a model module."""
    rng = np.random.default_rng(0)
    p = model.sample_parameters(20, rng=rng)
    y = model.predict(dict(zip(model.parameter_names, p.T, strict=True)))
    y[0] = np.nan  # one invalid voxel: a summary warning
    with pytest.warns(TumorscopeWarning, match="invalid input") as caught:
        model.fit(y)
    assert [w.filename for w in caught] == [__file__]
