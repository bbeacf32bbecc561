"""The fast paths of the whole-volume CEST products against their references: the spline
evaluation against ``scipy.interpolate.CubicSpline``, the compiled water-line fit of
``wassr_b0`` against the numpy solver, the float32 normalisation against float64."""

from __future__ import annotations

import numpy as np
import pytest
from _cest_sim import OFFSETS, tissue
from scipy.interpolate import CubicSpline

from tumorscope.errors import DataError
from tumorscope.models.cest import mtr_asym, normalise, simulate_z, wassr_b0
from tumorscope.models.cest.zspec import _spline_at, _spline_on_grids


def _noisy(n: int, seed: int, b1: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.array(
        [
            simulate_z(tissue(), OFFSETS, field_t=3.0, b1_ut=b1, tsat_s=2.0, b0_shift_ppm=s)
            for s in (-0.45, -0.1, 0.0, 0.25, 0.5)
        ]
    )
    return base[rng.integers(0, base.shape[0], n)] + rng.normal(0, 0.01, (n, OFFSETS.size))


def test_spline_matches_scipy_cubicspline_and_is_nan_outside() -> None:
    y = _noisy(300, 0)
    x = np.sort(OFFSETS)
    y = y[:, np.argsort(OFFSETS)]
    rng = np.random.default_rng(1)
    q = rng.uniform(x[0] - 2.0, x[-1] + 2.0, (300, 6))
    q[:, 0] = x[5]  # on a knot
    q[:, 1] = x[-1]  # the last knot (inside)
    y[7, 3] = np.nan  # a row with a NaN: all NaN
    got = _spline_at(y, x, q)
    ok = np.all(np.isfinite(y), axis=1)
    for v in np.flatnonzero(ok)[:50]:
        cs = CubicSpline(x, y[v])
        inside = (q[v] >= x[0]) & (q[v] <= x[-1])
        np.testing.assert_allclose(got[v, inside], cs(q[v, inside]), rtol=0, atol=1e-13)
        assert np.all(np.isnan(got[v, ~inside]))
    assert np.all(np.isnan(got[7]))
    # on a grid around a knot per row: the matrix-product path gives the same numbers
    k0 = rng.integers(3, x.size - 3, 300)
    g = np.linspace(-1.0, 1.0, 41)
    a = _spline_on_grids(y[ok], x, k0[ok], g)
    b = _spline_at(y[ok], x, x[k0[ok], None] + g[None, :])
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("b1", [0.2, 1.0])
def test_compiled_wassr_b0_equals_the_numpy_solver(b1: float) -> None:
    y = _noisy(400, 2, b1)
    fast = wassr_b0(y, OFFSETS, backend="numba")
    ref = wassr_b0(y, OFFSETS, backend="numpy")
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(wassr_b0(y, OFFSETS), fast)  # auto: compiled
    with pytest.raises(DataError, match="backend"):
        wassr_b0(y, OFFSETS, backend="cuda")


def test_float32_normalisation_and_mtrasym_agree_with_float64() -> None:
    rng = np.random.default_rng(3)
    z = _noisy(200, 4)
    raw = (1000.0 * np.c_[np.ones(200), z, 1.02 * np.ones(200)]).astype(np.float32)
    raw[:5] = rng.normal(0, 3.0, (5, raw.shape[1]))  # background
    z64 = normalise(raw, [0, raw.shape[1] - 1], m0_floor=100.0)
    z32 = normalise(raw, [0, raw.shape[1] - 1], m0_floor=100.0, dtype=np.float32)
    assert z32.dtype == np.float32 and z64.dtype == np.float64
    np.testing.assert_array_equal(np.isnan(z32), np.isnan(z64))
    np.testing.assert_allclose(z32, z64, rtol=1e-6, equal_nan=True)
    one = normalise(raw, [0], m0_floor=100.0, dtype=np.float32)
    want = np.where(raw[:, :1] > 100.0, raw[:, 1:] / raw[:, :1], np.nan)
    np.testing.assert_allclose(one, want, rtol=1e-6, equal_nan=True)
    b = wassr_b0(z64[5:], OFFSETS)
    a64 = mtr_asym(z64[5:], OFFSETS, [3.5, 2.0], b0_ppm=b)
    a32 = mtr_asym(z32[5:], OFFSETS, [3.5, 2.0], b0_ppm=b)
    np.testing.assert_allclose(a32, a64, rtol=0, atol=1e-6)
