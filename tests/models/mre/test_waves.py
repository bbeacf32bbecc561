"""Phase images → first-harmonic displacement → |G*|, end to end on a synthetic acquisition.

The wrapped phase series of a plane shear wave (8 time offsets, 3 encoding directions) is
unwrapped by the Laplacian method and compared with scikit-image's quality-guided path
unwrapping (Herráez et al. 2002; an independent implementation) where scikit-image is
installed.
"""

from __future__ import annotations

import numpy as np
import pytest

from tumorscope.errors import DataError
from tumorscope.models.mre import (
    first_harmonic,
    laplacian_unwrap,
    phase_to_displacement,
    stiffness,
    unwrap_phase,
)

H_MM, N, F_HZ, G_KPA = 2.0, 32, 60.0, 3.0
EFF = 1.5  # rad per µm of displacement: 2 µm waves wrap (peak phase 3 rad ± offsets)


def _acquisition(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(N) * H_MM * 1e-3
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    k = 2 * np.pi * F_HZ * np.sqrt(1000.0 / (G_KPA * 1e3))
    d = np.array([0.6, 0.8, 0.0])
    pol = np.array([0.0, 0.0, 1.0])
    u = 2e-6 * np.exp(1j * k * (d[0] * X + d[1] * Y))[..., None] * pol  # m, (x, y, z, 3)
    u = u + 2e-6 * np.exp(1j * k * Z)[..., None] * np.array([1.0, 0.0, 0.0])
    t = np.arange(8) / 8
    phase = EFF * 1e6 * np.real(u[..., None] * np.exp(2j * np.pi * t))  # (x, y, z, 3, 8)
    phase = phase + 0.7 + 0.03 * rng.standard_normal(phase.shape)  # background phase, noise
    return np.angle(np.exp(1j * phase)), u


def test_unwrap_harmonic_stiffness() -> None:
    rng = np.random.default_rng(0)
    wrapped, u_true = _acquisition(rng)
    assert np.abs(wrapped).max() <= np.pi and np.ptp(wrapped) > 6  # really wrapped
    unwrapped = unwrap_phase(wrapped, spatial_ndim=3)
    u = phase_to_displacement(first_harmonic(unwrapped, axis=-1), EFF)
    inner = (slice(3, -3),) * 3
    np.testing.assert_allclose(u[inner], u_true[inner], atol=0.05e-6)
    g = stiffness(u, H_MM, F_HZ)
    est = g[np.isfinite(g)]
    assert abs(np.median(est) / G_KPA - 1) < 0.05


def test_laplacian_unwrap_matches_skimage() -> None:
    skr = pytest.importorskip("skimage.restoration")
    x = np.linspace(-1, 1, 64)
    X, Y = np.meshgrid(x, x, indexing="ij")
    true = 12 * np.exp(-(X**2 + Y**2) / 0.4) + 3 * X
    wrapped = np.angle(np.exp(1j * true))
    ours = laplacian_unwrap(wrapped)
    theirs = skr.unwrap_phase(wrapped)
    # both are the true phase up to one multiple of 2π
    for est in (ours, theirs):
        shift = np.round(np.mean(est - true) / (2 * np.pi)) * 2 * np.pi
        np.testing.assert_allclose(est - shift, true, atol=1e-9)


def test_first_harmonic_amplitude_and_phase() -> None:
    t = np.arange(6) / 6
    x = 2.0 * np.cos(2 * np.pi * t + 0.3) + 5.0
    np.testing.assert_allclose(first_harmonic(x), 2.0 * np.exp(0.3j))


def test_bad_input_is_an_error() -> None:
    with pytest.raises(DataError, match="at least 3"):
        first_harmonic(np.ones((4, 2)))
    with pytest.raises(DataError, match="NaN"):
        laplacian_unwrap(np.full((4, 4), np.nan))
    with pytest.raises(DataError, match="unknown unwrapping"):
        unwrap_phase(np.zeros((4, 4, 4)), method="magic")
    with pytest.raises(DataError, match="efficiency"):
        phase_to_displacement(np.ones(3), 0.0)
