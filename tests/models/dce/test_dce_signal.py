"""Signal ↔ concentration for spoiled gradient echo: round trip, impossible inputs, bad input.

(Agreement with the OSIPI SI-to-concentration reference is in ``test_dce_reference.py``.)
"""

from __future__ import annotations

import numpy as np
import pytest

from tumorscope.errors import DataError, ProtocolError
from tumorscope.models.dce import (
    ConcentrationStatus,
    concentration_to_signal,
    signal_to_concentration,
)

KW = {"flip_angle_deg": 15.0, "tr_ms": 4.0, "relaxivity": 4.5}


def test_round_trip_is_exact_with_t1_and_b1_maps() -> None:
    rng = np.random.default_rng(0)
    c = np.concatenate([np.zeros((3, 4, 5)), rng.uniform(0, 3, (3, 4, 40))], axis=-1)
    t1 = rng.uniform(500.0, 2000.0, (3, 4))
    b1 = rng.uniform(0.8, 1.2, (3, 4))
    m0 = rng.uniform(500.0, 2000.0, (3, 4))
    s = concentration_to_signal(c, t1_ms=t1, m0=m0, b1=b1, **KW)
    back, status = signal_to_concentration(s, t1_ms=t1, n_baseline=5, b1=b1, **KW)
    assert np.all(status == ConcentrationStatus.OK)
    np.testing.assert_allclose(back, c, atol=1e-9)


def test_impossible_inputs_give_nan_and_status_not_exceptions() -> None:
    c = np.tile(np.r_[0.0, 0.0, 1.0, 2.0, 1.0], (6, 1))
    s = concentration_to_signal(c, t1_ms=1000.0, m0=100.0, **KW)
    s[1, 3] = 1e6  # above the steady-state maximum M0 sin(a)
    s[2, 4] = -1.0  # negative
    s[3, :2] = 0.0  # zero baseline
    t1 = np.full(6, 1000.0)
    t1[4] = 0.0  # T1 <= 0
    t1[5] = np.nan
    conc, status = signal_to_concentration(s, t1_ms=t1, n_baseline=2, **KW)
    assert list(status) == [
        ConcentrationStatus.OK,
        ConcentrationStatus.SIGNAL_ABOVE_MAXIMUM,
        ConcentrationStatus.NEGATIVE_SIGNAL,
        ConcentrationStatus.BAD_BASELINE,
        ConcentrationStatus.BAD_T1,
        ConcentrationStatus.BAD_T1,
    ]
    assert np.isnan(conc[1, 3]) and np.isfinite(conc[1, :3]).all()
    assert np.isnan(conc[2, 4]) and np.isfinite(conc[2, :4]).all()
    assert np.all(np.isnan(conc[3:]))
    np.testing.assert_allclose(conc[0], c[0], atol=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"flip_angle_deg": 0.0}, "flip_angle_deg"),
        ({"flip_angle_deg": 180.0}, "flip_angle_deg"),
        ({"tr_ms": -1.0}, "tr_ms"),
        ({"relaxivity": 0.0}, "relaxivity"),
        ({"n_baseline": 0}, "at least one frame"),
        ({"n_baseline": 2, "baseline_start": 2}, "at least one frame"),
        ({"n_baseline": 2.5}, "whole number"),
        ({"t1_ms": np.ones(3)}, "T1 map of shape"),
    ],
)
def test_bad_protocol_is_rejected(kwargs, match) -> None:
    args = {**KW, "t1_ms": 1000.0, "n_baseline": 2, **kwargs}
    with pytest.raises(ProtocolError, match=match):
        signal_to_concentration(np.ones((2, 10)), **args)


def test_concentration_to_signal_rejects_flip_angle_zero() -> None:
    with pytest.raises(ProtocolError, match="flip_angle_deg"):
        concentration_to_signal(
            np.zeros(4), t1_ms=1000.0, flip_angle_deg=0.0, tr_ms=4.0, relaxivity=4.5
        )


def test_float32_output_is_the_float64_result_rounded() -> None:
    """``dtype=np.float32`` (the DCE stage's) keeps the float64 arithmetic per block."""
    rng = np.random.default_rng(3)
    c = np.concatenate([np.zeros((4, 3, 2, 5)), rng.uniform(0, 3, (4, 3, 2, 30))], axis=-1)
    s = concentration_to_signal(c, t1_ms=1200.0, m0=1000.0, **KW).astype(np.float32)
    s[0, 0, 0, 7] = np.nan
    c64, st64 = signal_to_concentration(s, t1_ms=1200.0, n_baseline=5, **KW)
    c32, st32 = signal_to_concentration(s, t1_ms=1200.0, n_baseline=5, dtype=np.float32, **KW)
    assert c64.dtype == np.float64 and c32.dtype == np.float32
    np.testing.assert_array_equal(c32, c64.astype(np.float32))
    np.testing.assert_array_equal(st32, st64)
    with pytest.raises(DataError, match="float32 or float64"):
        signal_to_concentration(s, t1_ms=1200.0, n_baseline=5, dtype=np.int16, **KW)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_path_matches_numpy_path(dtype: type, monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled signal → concentration (numba) against the numpy path: the same NaN and
    status codes (every code present: a negative and a non-finite sample, a sample above
    the SPGR maximum, a zero baseline, a negative and an infinite T1), values to rounding,
    in the series' own memory order (Fortran, as nibabel returns NIfTI) and in C order."""
    pytest.importorskip("numba")
    import tumorscope.models.dce.signal as sig

    rng = np.random.default_rng(0)
    shape = (9, 8, 5, 30)
    s = np.asfortranarray((rng.random(shape) * 100 + 50).astype(np.float32))
    s[0, 0, 0, 10] = -1.0
    s[1, 0, 0, 20] = 1e9
    s[2, 0, 0, :] = 0.0
    s[3, 0, 0, 5] = np.nan
    t1 = rng.random(shape[:3]) * 1500 + 300
    t1[4, 0, 0] = -1.0
    t1[5, 0, 0] = np.inf
    # a negative sample where the T1 is bad: the voxel's status stays "bad T1" (the compiled
    # path converts no sample of such voxels)
    s[5, 0, 0, 12] = -2.0
    b1 = rng.random(shape[:3]) * 0.4 + 0.8
    kw = {"t1_ms": t1, "flip_angle_deg": 15.0, "tr_ms": 4.0, "relaxivity": 4.5, "b1": b1}
    for data in (s, np.ascontiguousarray(s)):
        fast, st_fast = sig.signal_to_concentration(data, n_baseline=10, dtype=dtype, **kw)
        monkeypatch.setattr(sig, "ENGINE", "numpy")
        ref, st_ref = sig.signal_to_concentration(data, n_baseline=10, dtype=dtype, **kw)
        monkeypatch.setattr(sig, "ENGINE", "auto")
        assert set(np.unique(st_ref)) == {0, 1, 2, 3, 4}
        assert st_ref[5, 0, 0] == 2 and np.isnan(ref[5, 0, 0]).all()
        np.testing.assert_array_equal(st_fast, st_ref)
        np.testing.assert_array_equal(np.isnan(fast), np.isnan(ref))
        # rounding only (the baseline summed in another order, libm's log and exp): relative
        # 1e-12 in float64 (the concentration is a difference of rates, R1 - R10), a float32
        # ulp for float32 results
        tol = 1e-12 if dtype is np.float64 else 2e-7
        np.testing.assert_allclose(fast, ref, rtol=tol, atol=tol)
        assert fast.flags.f_contiguous == data.flags.f_contiguous
        # the whole-curve finiteness of the same pass (the DCE stage's fitted voxels): the
        # finiteness of the returned curves, on both paths
        for engine in ("auto", "numpy"):
            monkeypatch.setattr(sig, "ENGINE", engine)
            c, st, valid = sig.signal_to_concentration_valid(data, n_baseline=10, dtype=dtype, **kw)
            np.testing.assert_array_equal(c, fast if engine == "auto" else ref)
            np.testing.assert_array_equal(st, st_fast)
            np.testing.assert_array_equal(valid, np.all(np.isfinite(c), axis=-1))
            assert 0 < valid.sum() < valid.size
        monkeypatch.setattr(sig, "ENGINE", "auto")
