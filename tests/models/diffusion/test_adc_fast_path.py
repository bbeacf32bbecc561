"""The fused ADC fast path (numba) gives the engine path's results, status and warning.

The fast path reads C- or F-ordered float32/float64 data in place and writes the maps
directly; ``backend="numpy"`` goes through the generic engine. Both must agree voxel by voxel,
including the invalid-input rules (NaN, inf, negative, all-zero, zero baseline) and masks.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tumorscope.fitting import FitStatus
from tumorscope.models import ADC

pytest.importorskip("numba")

B = np.array([0, 50, 100, 200, 400, 600, 800, 1000], float)
#: a clinical ADC protocol: up to ``_adc_numba.SMALL_M`` b-values take the kernel that fits
#: each voxel in registers (``adc_fit_range_small``), more the general one
B4 = np.array([0, 400, 800, 1000], float)
PROTOCOLS = pytest.mark.parametrize("b", [B, B4], ids=["8b", "4b"])


def _data(dtype: type, order: str, b: np.ndarray = B) -> np.ndarray:
    rng = np.random.default_rng(3)
    m = b.size
    shape = (12, 10, 7)
    adc = rng.uniform(0.3e-3, 3e-3, shape)
    s0 = rng.uniform(200, 2000, shape)
    y = s0[..., None] * np.exp(-b * adc[..., None])
    y = np.abs(y + rng.normal(0, 15, y.shape))
    y[0, 0, 0] = np.nan
    y[0, 0, 1, 3] = np.inf
    y[0, 0, 2, min(5, m - 1)] = -4.0
    y[0, 0, 3] = 0.0
    y[0, 0, 4, 0] = 0.0
    return np.asarray(y, dtype=dtype, order=order)


@pytest.mark.parametrize("method", ["wlls", "lls"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("masked", [False, True])
@PROTOCOLS
def test_fast_path_equals_engine(
    method: str, dtype: type, order: str, masked: bool, b: np.ndarray
) -> None:
    data = _data(dtype, order, b)
    mask = None
    if masked:
        mask = np.ones(data.shape[:3], bool)
        mask[5:, :, 3:] = False
    with warnings.catch_warnings(record=True) as wf:
        warnings.simplefilter("always")
        fast = ADC(b, method=method, backend="numba").fit(data, mask, chunk_voxels=97)
    with warnings.catch_warnings(record=True) as we:
        warnings.simplefilter("always")
        ref = ADC(b, method=method, backend="numpy").fit(data, mask)
    np.testing.assert_array_equal(fast.status, ref.status)
    assert fast.status[0, 0, 0] == FitStatus.INVALID_INPUT
    assert fast.status[0, 0, 3] == FitStatus.INVALID_INPUT
    if masked:
        assert fast.status[6, 0, 4] == FitStatus.NOT_FITTED
    # float64 arithmetic in both; float32 data: the engine took its log in float32
    rtol = 1e-5 if dtype == np.float64 else 2e-3
    for name in ("ADC", "S0"):
        assert fast[name].dtype == np.float32 and fast[name].shape == data.shape[:3]
        np.testing.assert_array_equal(np.isnan(fast[name]), np.isnan(ref[name]))
        ok = np.isfinite(ref[name])
        np.testing.assert_allclose(fast[name][ok], ref[name][ok], rtol=rtol)
    assert [str(w.message) for w in wf] == [str(w.message) for w in we]


def test_float32_log_is_as_accurate_as_numpy() -> None:
    """The fast path takes the log of float32 data in float32 (``_adc_numba._log_pos32``, twice
    the SIMD lanes of float64): within 3 float32 ulps of the exact (float64) log over the whole
    positive float32 range, subnormals included — numpy's own float32 log is within 3.3."""
    import numba as nb

    from tumorscope.models.diffusion import _adc_numba as k

    log32 = k._log_pos32

    @nb.njit
    def run(x: np.ndarray, out: np.ndarray) -> None:
        for i in range(x.shape[0]):
            out[i] = log32(x[i])

    rng = np.random.default_rng(1)
    x = np.exp(rng.uniform(np.log(1.4e-45), np.log(3.4e38), 200_000))
    x = np.r_[x, rng.uniform(0.5, 2.0, 20_000), 1.0, 2.0, 0.5, 1.4e-45, 1e-40, 3.4e38]
    x = x.astype(np.float32)
    x = x[x > 0]
    out = np.empty(x.size, np.float32)
    run(x, out)
    exact = np.log(x.astype(np.float64))
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    assert out.dtype == np.float32
    assert np.max(np.abs(out - exact) / ulp) <= 3.0


@pytest.mark.parametrize("density", [0.3, 0.8])
@pytest.mark.parametrize("order", ["C", "F"])
@PROTOCOLS
def test_fast_path_random_masks_equal_engine(density: float, order: str, b: np.ndarray) -> None:
    """Tiles mostly in the mask are fitted whole and their outside voxels reset; sparser ones
    gather their voxels: both give the engine's maps, status and counts (random masks mix
    both kinds of tile; the invalid voxels of ``_data`` sit inside and outside the mask)."""
    data = _data(np.float32, order, b)
    mask = np.random.default_rng(8).random(data.shape[:3]) < density
    mask[0, 0, :2] = [True, False]
    with warnings.catch_warnings(record=True) as wf:
        warnings.simplefilter("always")
        fast = ADC(b, backend="numba").fit(data, mask)
    with warnings.catch_warnings(record=True) as we:
        warnings.simplefilter("always")
        ref = ADC(b, backend="numpy").fit(data, mask)
    np.testing.assert_array_equal(fast.status, ref.status)
    assert np.all(fast.status[~mask] == FitStatus.NOT_FITTED)
    for name in ("ADC", "S0"):
        np.testing.assert_array_equal(np.isnan(fast[name]), np.isnan(ref[name]))
        ok = np.isfinite(ref[name])
        np.testing.assert_allclose(fast[name][ok], ref[name][ok], rtol=2e-3)
    assert [str(w.message) for w in wf] == [str(w.message) for w in we]
