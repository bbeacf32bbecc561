"""The compiled water-line fit of ``wassr_b0`` (variable projection, ``_b0_numba``): the same
least-squares problem as the bounded 5-parameter Levenberg–Marquardt fit (the numpy solver is
the peer), its hand-over of the voxels outside that problem's bounds, and its accuracy
against Bloch–McConnell spectra of known B0 (``simulate_z``, the bmctool-validated simulator
of ``tests/models/cest/test_bloch.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _cest_sim import OFFSETS, tissue

from tumorscope.models.cest import simulate_z, wassr_b0, zspec
from tumorscope.models.cest._b0_numba import spline_rows

OFF = np.r_[-15.0, -10.0, np.arange(-6.0, 6.01, 0.5), 10.0, 15.0]


def _spy_flags(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Record the flags the compiled fit returns."""
    seen: dict[str, Any] = {}
    kernel = zspec._compiled_varpro()
    assert kernel is not None

    def spy(*args: Any) -> None:
        kernel(*args)
        seen["flag"] = args[-1].copy()

    monkeypatch.setattr(zspec, "_compiled_varpro", lambda: spy)
    return seen


def test_voxels_outside_the_bounds_go_to_the_bounded_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    dip = 1 - 0.7 * 0.25 / (0.25 + (OFF - 0.2) ** 2)
    bump = 0.8 + 0.02 * OFF + 0.03 * 0.25 / (0.25 + (OFF + 0.3) ** 2)  # no dip: A < 0
    y = np.array([dip, bump, dip + rng.normal(0, 0.01, OFF.size), bump + 0.01])
    seen = _spy_flags(monkeypatch)
    # (on the grid of 41 points these rows were written for: on the default 21 the noisy
    # row's two minima agree to 2e-8 ppm, within the solvers' stopping tolerances, not to 1e-9)
    got = wassr_b0(y, OFF, n_grid=41)
    np.testing.assert_array_equal(seen["flag"], [0, 1, 0, 1])
    # the flagged rows are the bounded solver's, the others the same minimum
    ref = wassr_b0(y, OFF, backend="numpy", n_grid=41)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize("b1", [0.2, 1.0, 2.0])
def test_b0_of_bloch_mcconnell_spectra_is_as_accurate_as_the_bounded_fit(b1: float) -> None:
    """Known truth: the simulated shift. The compiled fit's error is the 5-parameter fit's
    (same minima: 1e-7 ppm), and its RMS error is within 2x the figures of docs/cest.md
    (SNR 100: 0.0031 ppm for WASSR at 0.2 uT, 0.019 at 1 uT, 0.035 at 2 uT)."""
    rng = np.random.default_rng(int(10 * b1))
    shifts = np.repeat([-0.45, -0.1, 0.0, 0.3, 0.5], 80)
    base = {
        s: simulate_z(tissue(), OFFSETS, field_t=3.0, b1_ut=b1, tsat_s=2.0, b0_shift_ppm=s)
        for s in np.unique(shifts)
    }
    y = np.array([base[s] for s in shifts]) + rng.normal(0, 0.01, (shifts.size, OFFSETS.size))
    fast = wassr_b0(y, OFFSETS)
    ref = wassr_b0(y, OFFSETS, backend="numpy")
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-7)
    err = fast - shifts
    assert np.sqrt(np.mean(err**2)) < 2.0 * {0.2: 0.0031, 1.0: 0.019, 2.0: 0.035}[b1]
    # float32 spectra (what the stage passes): the same to float32 rounding of the data
    f32 = wassr_b0(y.astype(np.float32), OFFSETS)
    np.testing.assert_allclose(f32, fast, rtol=0, atol=1e-4)


def test_compiled_spline_equals_the_numpy_spline(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    x = np.sort(OFFSETS)
    y = rng.normal(0.7, 0.2, (200, x.size))
    y[3, 5] = np.inf  # a non-finite row: NaN
    q = rng.uniform(x[0] - 1.0, x[-1] + 1.0, (200, 5))
    q[:, 0] = x[-1]  # the last knot: inside
    q[:, 1] = x[0]
    out = np.full(q.shape, -1.0)
    D = np.array(zspec._slope_operator(tuple(float(v) for v in x)))
    spline_rows(x, D, y.astype(np.float32), q, out)
    monkeypatch.setattr(zspec, "_COMPILED_MIN_ROWS", 10**9)  # numpy path
    ref = zspec._spline_at(y.astype(np.float32), x, q)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12, equal_nan=True)
    assert np.all(np.isnan(out[3]))


def test_compiled_first_pass_equals_the_numpy_one() -> None:
    """The sampled minimum and the half width at half depth of each row (``wassr_b0``'s first
    pass), compiled, against the numpy formulas it replaces; float32 and float64 rows, BM
    spectra with noise and flat-bottomed ones (ties: the first minimum, as ``np.argmin``)."""
    from tumorscope.models.cest._b0_numba import minimum_and_half

    rng = np.random.default_rng(5)
    base = np.array(
        [simulate_z(tissue(), OFFSETS, field_t=3.0, b1_ut=b1, tsat_s=2.0) for b1 in (0.2, 1, 2)]
    )
    y = base[rng.integers(0, 3, 500)] + rng.normal(0, 0.01, (500, OFFSETS.size))
    y[:5] = np.round(y[:5], 1)  # ties
    cand = np.flatnonzero(np.abs(OFFSETS) <= 2.0)
    for rows in (y, y.astype(np.float32)):
        k0 = np.empty(rows.shape[0], np.intp)
        half = np.empty(rows.shape[0])
        minimum_and_half(rows, OFFSETS, cand, k0, half)
        fl = rows.astype(np.float64)
        k = cand[np.argmin(fl[:, cand], axis=1)]
        depth = 0.5 * (np.max(fl, axis=1) + fl[np.arange(fl.shape[0]), k])
        dist = np.where(fl <= depth[:, None], np.abs(OFFSETS[None, :] - OFFSETS[k, None]), 0.0)
        np.testing.assert_array_equal(k0, k)
        np.testing.assert_array_equal(half, np.max(dist, axis=1))
