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


@pytest.mark.parametrize("m0_volumes", [[0], [0, 7, -1]])
def test_normalise_rows_equals_normalise_of_the_gathered_voxels(m0_volumes: list[int]) -> None:
    """The compiled one-pass rows (a float32 series in NIfTI order, as read) against
    ``normalise`` of the same voxels gathered in numpy (the reference path), with background
    voxels, a drifting signal between several M0 volumes, and the fallbacks (C order,
    float64)."""
    from tumorscope.models.cest import normalise_rows

    rng = np.random.default_rng(5)
    z = _noisy(6 * 5 * 4, 6).reshape(6, 5, 4, -1)
    n_vol = z.shape[-1] + len(m0_volumes)
    idx = [i % n_vol for i in m0_volumes]
    sat = np.setdiff1d(np.arange(n_vol), idx)
    raw = np.empty((6, 5, 4, n_vol))
    drift = np.linspace(1.0, 1.03, n_vol)  # a linear drift: removed by the interpolated M0
    raw[..., sat] = 1000.0 * z[..., : sat.size] * drift[sat]
    raw[..., idx] = 1000.0 * drift[idx]
    raw[0, 0, :] = rng.normal(0, 3.0, (4, n_vol))  # background
    if len(idx) == 1:
        raw[1, 2, 3, idx[0]] = 100.0  # M0 exactly at the floor: background (not above it)
    series = np.asfortranarray(raw.astype(np.float32))
    mask = np.ones(raw.shape[:3], bool)
    mask[2, 1, :] = False
    vox = np.flatnonzero(mask.ravel(order="F"))
    flat = series.reshape(-1, n_vol, order="F")[vox]
    want = normalise(flat, idx, m0_floor=100.0, dtype=np.float32)
    got = normalise_rows(series, vox, idx, m0_floor=100.0)
    assert got.dtype == np.float32 and got.flags.c_contiguous and got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    if len(idx) == 1:
        at_floor = vox == np.ravel_multi_index((1, 2, 3), mask.shape, order="F")
        assert np.isnan(got[at_floor]).all()
        np.testing.assert_array_equal(got, want)  # the same float32 operations
    else:  # the interpolated M0: float32 sums in another order than numpy's matrix product
        np.testing.assert_allclose(got, want, rtol=2e-7, equal_nan=True)
        # and the linear drift is gone: Z as simulated
        fg = ~np.isnan(got[:, 0])
        zv = z[np.unravel_index(vox, mask.shape, order="F")]
        np.testing.assert_allclose(got[fg], zv[fg], rtol=1e-5)
    for other in (np.ascontiguousarray(series), series.astype(np.float64, order="F")):
        back = normalise_rows(other, vox, idx, m0_floor=100.0)  # the numpy path
        assert back.dtype == np.float32 and back.flags.c_contiguous
        np.testing.assert_allclose(back, want, rtol=2e-7, equal_nan=True)
