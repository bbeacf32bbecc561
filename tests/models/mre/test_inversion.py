"""MRE inversion on analytic shear waves (the reference is the Helmholtz equation itself).

Every field below solves ``G* ∇²u + ρω²u = 0`` exactly: a plane wave (three components,
polarised across its direction), a spherical wave ``exp(ikr)/r`` around a point source, and
the normal-incidence transmission and reflection at the plane between two media (continuity
of displacement and traction: ``r = (G₁k₁ - G₂k₂)/(G₁k₁ + G₂k₂)``, ``t = 1 + r``). Complex
Gaussian noise of 2 % of the median wave amplitude is added. The issue's bar: ``|G*|`` within
10 % (1–10 kPa, 30–90 Hz); checked as "at least 80 % of the estimated voxels within 10 %
and the median error under 10 %", in each region away from sources and interfaces.
"""

from __future__ import annotations

import numpy as np
import pytest

from tumorscope.errors import DataError
from tumorscope.models.mre import direct_inversion, laplacian, mdev, stiffness

H_MM = 2.0
N = 32
RHO = 1000.0


def _grid(n: int = N, h: float = H_MM) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.arange(n) * h * 1e-3
    return np.meshgrid(x, x, x, indexing="ij")


def _k(g_kpa: float, f_hz: float, phi: float = 0.0) -> tuple[complex, complex]:
    gs = g_kpa * 1e3 * np.exp(1j * phi)
    return complex(2 * np.pi * f_hz * np.sqrt(RHO / gs)), complex(gs)


def _noisy(u: np.ndarray, rng: np.random.Generator, level: float = 0.02) -> np.ndarray:
    amp = np.median(np.abs(u))
    noise = rng.standard_normal(u.shape) + 1j * rng.standard_normal(u.shape)
    return (u + level * amp * noise / np.sqrt(2)) * 1e-6  # metres (µm amplitude)


def _check(g: np.ndarray, truth: float, region: np.ndarray) -> None:
    vals = g[region]
    est = vals[np.isfinite(vals)]
    assert est.size > 100, "too few voxels estimated"
    err = np.abs(est / truth - 1)
    assert np.median(err) < 0.10, f"median error {np.median(err):.3f}"
    assert np.mean(err < 0.10) >= 0.8, f"only {np.mean(err < 0.10):.2f} within 10 %"


@pytest.mark.parametrize("g_kpa", [1.0, 3.0, 10.0])
@pytest.mark.parametrize("f_hz", [30.0, 60.0, 90.0])
def test_plane_wave_homogeneous(g_kpa: float, f_hz: float) -> None:
    rng = np.random.default_rng(int(g_kpa * 100 + f_hz))
    X, Y, Z = _grid()
    k, _ = _k(g_kpa, f_hz)
    d = np.array([1.0, 2.0, 0.5]) / np.linalg.norm([1.0, 2.0, 0.5])
    pol = np.cross(d, [0.0, 0.0, 1.0])
    pol /= np.linalg.norm(pol)
    phase = np.exp(1j * k * (d[0] * X + d[1] * Y + d[2] * Z))
    u = np.stack([p * phase for p in pol], axis=-1)
    g = stiffness(_noisy(u, rng), H_MM, f_hz)
    assert g.shape == X.shape
    assert np.isnan(g[0, 0, 0]) and np.isnan(g[-1, 5, 5])  # border: stencil leaves the data
    _check(g, g_kpa, np.ones(X.shape, bool))


@pytest.mark.parametrize(("g_kpa", "f_hz"), [(1.0, 30.0), (1.0, 90.0), (10.0, 30.0), (10.0, 90.0)])
def test_spherical_wave_homogeneous(g_kpa: float, f_hz: float) -> None:
    rng = np.random.default_rng(7)
    X, Y, Z = _grid()
    c = X[N // 2, 0, 0]
    r = np.sqrt((X - c + 3e-4) ** 2 + (Y - c) ** 2 + (Z - c - 2e-4) ** 2)
    k, _ = _k(g_kpa, f_hz)
    u = np.exp(1j * k * r) / (r / 0.01)
    g = stiffness(_noisy(u, rng), H_MM, f_hz)
    _check(g, g_kpa, r > 8e-3)  # away from the source (the field is singular there)


@pytest.mark.parametrize(("g1", "g2"), [(1.0, 3.0), (3.0, 10.0)])
@pytest.mark.parametrize("f_hz", [30.0, 90.0])
def test_two_region_transmission(g1: float, g2: float, f_hz: float) -> None:
    rng = np.random.default_rng(11)
    X, _, _ = _grid()
    x0 = X[N // 2, 0, 0]
    k1, gs1 = _k(g1, f_hz, 0.1)
    k2, gs2 = _k(g2, f_hz, 0.1)
    r = (gs1 * k1 - gs2 * k2) / (gs1 * k1 + gs2 * k2)
    xx = X - x0
    u = np.where(
        xx < 0, np.exp(1j * k1 * xx) + r * np.exp(-1j * k1 * xx), (1 + r) * np.exp(1j * k2 * xx)
    )
    g = stiffness(_noisy(u, rng), H_MM, f_hz)
    dist = np.abs(xx)
    _check(g, g1, (xx < 0) & (dist > 8e-3))
    _check(g, g2, (xx > 0) & (dist > 8e-3))


def test_viscoelastic_phase_angle_direct_and_mdev() -> None:
    rng = np.random.default_rng(3)
    X, Y, _ = _grid()
    g_kpa, phi = 2.5, 0.4
    freqs = [30.0, 50.0, 70.0]
    waves = []
    for f in freqs:
        k, _ = _k(g_kpa, f, phi)
        waves.append(_noisy(np.exp(1j * k * (0.8 * X + 0.6 * Y)), rng))
    one = direct_inversion(waves[1], H_MM, freqs[1])
    _check(one.abs_g_kpa, g_kpa, np.ones(X.shape, bool))
    assert abs(np.nanmedian(one.phi_rad) - phi) < 0.05
    # MDEV's magnitude is a weighted mean of |G*(ω)|, here frequency-independent
    res = mdev(waves, H_MM, freqs)
    _check(res.abs_g_kpa, g_kpa, np.ones(X.shape, bool))
    assert abs(np.nanmedian(res.phi_rad) - phi) < 0.05
    assert res.confidence.sum() > 0.8 * np.isfinite(res.abs_g_kpa).sum()
    np.testing.assert_allclose(np.nanmedian(res.storage_kpa), g_kpa * np.cos(phi), rtol=0.1)


def test_two_dimensional_slice_and_mask() -> None:
    x = np.arange(40) * H_MM * 1e-3
    X, Y = np.meshgrid(x, x, indexing="ij")
    k, _ = _k(2.0, 60.0)
    u = np.exp(1j * k * (0.6 * X + 0.8 * Y)) * 1e-6
    mask = np.ones(X.shape, bool)
    mask[:, 30:] = False
    g = stiffness(u, H_MM, 60.0, mask=mask)
    assert np.all(np.isnan(g[:, 28:]))  # stencil (2) + smoothing (3σ = 5) reach the mask edge
    _check(g, 2.0, np.ones(X.shape, bool))


def test_laplacian_fourth_order_accuracy() -> None:
    x = np.arange(20) * 1e-3
    X, _Y = np.meshgrid(x, x, indexing="ij")
    k = 2 * np.pi / 8e-3  # 8 voxels per wavelength
    u = np.exp(1j * k * X)
    lap = laplacian(u, 1.0)
    ratio = np.nanmedian((lap / u).real) / -(k**2)
    assert abs(ratio - 1) < 0.01  # the 3-point stencil would be 6 % off here
    assert np.isnan(lap[1, 5]) and np.isfinite(lap[2, 5])


def test_bad_input_is_an_error() -> None:
    u = np.ones((10, 10, 10), complex)
    with pytest.raises(DataError, match="frequency_hz"):
        stiffness(u, 2.0, 0.0)
    with pytest.raises(DataError, match="voxel_size_mm"):
        stiffness(u, (2.0, -1.0, 2.0), 60.0)
    with pytest.raises(DataError, match="density"):
        stiffness(u, 2.0, 60.0, density_kg_m3=float("nan"))
    with pytest.raises(DataError, match="wave"):
        stiffness(np.ones(5, complex), 2.0, 60.0)
    with pytest.raises(DataError, match="one wave field per frequency"):
        mdev([u], 2.0, [30.0, 60.0])


def test_nan_input_is_not_estimated_around_it() -> None:
    x = np.arange(30) * H_MM * 1e-3
    X, _Y, _Z = np.meshgrid(x, x, x, indexing="ij")
    k, _ = _k(3.0, 60.0)
    u = np.exp(1j * k * X) * 1e-6
    u[15, 15, 15] = np.nan
    g = stiffness(u, H_MM, 60.0)
    # margin 2 (stencil) + ceil(3 × 1.5) (smoothing) = 7 voxels around the NaN and the border
    assert np.isnan(g[15, 15, 15]) and np.isnan(g[8, 15, 15])
    assert np.isfinite(g[7, 7, 7]) and np.isfinite(g[7, 15, 15])
    assert np.isfinite(g[15, 7, 7])
