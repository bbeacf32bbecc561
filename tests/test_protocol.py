"""Protocols validate themselves on construction and say what is wrong."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from tumorscope.errors import ProtocolError
from tumorscope.protocol import (
    DiffusionProtocol,
    DynamicProtocol,
    InversionRecoveryProtocol,
    MultiEchoProtocol,
    VFAProtocol,
)


def test_diffusion_valid_and_hashable() -> None:
    p = DiffusionProtocol([0, 50, 1000])
    assert p.bvalues == (0.0, 50.0, 1000.0)
    assert p.n_measurements == 3
    assert hash(p) == hash(DiffusionProtocol((0, 50, 1000)))
    assert pickle.loads(pickle.dumps(p)) == p
    np.testing.assert_array_equal(p.b, [0, 50, 1000])


@pytest.mark.parametrize(
    ("bvalues", "message"),
    [
        ([0, 100, -50], "b-values must be >= 0, got -50 at index 2"),
        ([0], "need at least 2 b-values, got 1"),
        ([500, 500], "need at least 2 distinct b-values"),
        ([0, float("nan")], "values must be finite, got nan at index 1"),
        ([], "must not be empty"),
        ("0 100", "expected a sequence of numbers"),
    ],
)
def test_diffusion_rejects(bvalues: object, message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as info:
        DiffusionProtocol(bvalues, source="x.bval")  # type: ignore[arg-type]
    assert info.value.field == "bvalues"
    assert info.value.file == "x.bval"
    assert str(info.value).startswith("x.bval: bvalues: ")


def test_diffusion_bvecs_shape() -> None:
    with pytest.raises(ProtocolError, match=r"expected 3 gradient directions of 3 components"):
        DiffusionProtocol([0, 500, 1000], bvecs=[[1, 0, 0], [0, 1, 0]])
    p = DiffusionProtocol([0, 1000], bvecs=[[0, 1], [0, 0], [0, 0]])  # 3 x N layout accepted
    assert p.bvecs == ((0.0, 0.0, 0.0), (1.0, 0.0, 0.0))


@pytest.mark.parametrize(
    ("fa", "tr", "field", "message"),
    [
        ([15], 5.0, "flip_angles_deg", "need at least 2 flip angles for T1 mapping, got 1"),
        ([0, 15], 5.0, "flip_angles_deg", "flip angles must be > 0, got 0 at index 0"),
        ([5, 190], 5.0, "flip_angles_deg", "flip angles must be < 180 degrees, got 190"),
        ([5, 5], 5.0, "flip_angles_deg", "need at least 2 distinct flip angles"),
        ([2, 15], 0.0, "tr_ms", "must be > 0, got 0"),
        ([2, 15], "x", "tr_ms", "expected a number, got 'x'"),
    ],
)
def test_vfa_rejects(fa: list[float], tr: object, field: str, message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as info:
        VFAProtocol(fa, tr)  # type: ignore[arg-type]
    assert info.value.field == field


def test_dynamic_valid() -> None:
    p = DynamicProtocol(np.arange(10) * 3.5, 15, 5, 3)
    assert p.n_measurements == 10 and p.n_baseline == 3 and p.tr_ms == 5.0


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        (
            {"frame_times_s": [0, 3, 3, 6]},
            "frame_times_s",
            "strictly increasing, got 3 then 3 at index 2",
        ),
        (
            {"frame_times_s": [0, 5, 4, 6]},
            "frame_times_s",
            "strictly increasing, got 5 then 4 at index 2",
        ),
        ({"frame_times_s": [0, 1]}, "frame_times_s", "need at least 3 frames, got 2"),
        ({"flip_angle_deg": 0}, "flip_angle_deg", "must be > 0, got 0"),
        ({"tr_ms": -1}, "tr_ms", "must be > 0, got -1"),
        ({"n_baseline": 0}, "n_baseline", "must be between 1 and 4"),
        ({"n_baseline": 5}, "n_baseline", "must be between 1 and 4"),
        ({"n_baseline": 2.5}, "n_baseline", "must be a whole number"),
    ],
)
def test_dynamic_rejects(kwargs: dict, field: str, message: str) -> None:
    args = {"frame_times_s": [0, 1, 2, 3, 4], "flip_angle_deg": 15, "tr_ms": 5, "n_baseline": 2}
    args.update(kwargs)
    with pytest.raises(ProtocolError, match=message) as info:
        DynamicProtocol(**args)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("te", "message"),
    [
        ([5], "need at least 2 echo times, got 1"),
        ([5, -10], "echo times must be > 0, got -10 at index 1"),
        ([10, 5], "echo times must be strictly increasing"),
    ],
)
def test_multiecho_rejects(te: list[float], message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        MultiEchoProtocol(te)


def test_inversion_recovery() -> None:
    assert InversionRecoveryProtocol([100, 500, 1500, 3000]).n_measurements == 4
    with pytest.raises(ProtocolError, match="need at least 3 distinct inversion times, got 2"):
        InversionRecoveryProtocol([100, 100, 500])


def test_to_dict_round_trips_values() -> None:
    p = DynamicProtocol([0, 1, 2], 15, 5, 1, te_ms=1.5)
    d = p.to_dict()
    assert d == {
        "kind": "dynamic",
        "frame_times_s": [0.0, 1.0, 2.0],
        "flip_angle_deg": 15.0,
        "tr_ms": 5.0,
        "n_baseline": 1,
        "te_ms": 1.5,
    }
