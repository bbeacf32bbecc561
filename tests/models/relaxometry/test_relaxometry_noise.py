"""Noise level of multi-echo magnitude data (``models/relaxometry/noise.py`` through
``T2Star.estimate_noise``): from the background, from the decays, or none."""

from __future__ import annotations

import numpy as np
import pytest

from tumorscope.models import T2Star
from tumorscope.models.relaxometry import monoexp_signal

TE = np.array([1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0, 15.0, 18.0, 21.0, 25.0])


def _rician(a, sigma, rng):
    return np.abs(
        a + sigma * rng.standard_normal(a.shape) + 1j * sigma * rng.standard_normal(a.shape)
    )


def test_noise_sigma_estimated_from_decays():
    """A mix of short and long T2*; σ estimated within 5 % (median over ~1000 voxels that
    reach the floor, each a ~25 % estimate -> SE ≈ 1 %), and the fit then recovers R2*."""
    rng = np.random.default_rng(6)
    n = 2000
    p = np.c_[rng.uniform(800, 1200, n), rng.uniform(20, 800, n)]
    y = _rician(monoexp_signal(p, TE), 30.0, rng)
    model = T2Star(TE)
    sigma = model.estimate_noise_sigma(y)
    assert sigma == pytest.approx(30.0, rel=0.05)
    fit = model.fit(y)
    assert model.estimate_noise(y)[1] == "decays"
    assert fit.provenance["options"]["noise_sigma_estimated"] == "decays"
    assert fit.provenance["options"]["noise_sigma"] == pytest.approx(sigma)
    assert model.noise_sigma is None  # fit never mutates the model
    rel = fit["R2star"] / p[:, 1] - 1
    assert abs(np.median(rel)) < 0.02


def test_noise_sigma_zero_when_floor_never_reached():
    """Slow decays (R2* 20–100 /s, S0/σ ≈ 33) never reach the floor: the noise level is not
    identifiable from them, and a spurious 'fast decay onto a high floor' (σ ≈ 130 here
    without the residual-consistency check) must not be returned."""
    rng = np.random.default_rng(7)
    p = np.c_[rng.uniform(800, 1200, 2000), rng.uniform(20, 100, 2000)]
    y = _rician(monoexp_signal(p, TE), 30.0, rng)
    assert T2Star(TE).estimate_noise(y) == (0.0, "none")


def test_noise_sigma_from_background_voxels():
    """Tissue plus 500 signal-free voxels: σ from the background by Rayleigh ML over the
    later echoes of ~500 × 11 samples (SE ≈ 0.3 %), within 3 %; pure noise likewise."""
    rng = np.random.default_rng(9)
    p = np.c_[rng.uniform(800, 1200, 2000), rng.uniform(20, 100, 2000)]
    clean = np.vstack([monoexp_signal(p, TE), np.zeros((500, TE.size))])
    y = _rician(clean, 30.0, rng)
    sigma, how = T2Star(TE).estimate_noise(y)
    assert how == "background"
    assert sigma == pytest.approx(30.0, rel=0.03)
    noise = _rician(np.zeros((3000, TE.size)), 15.0, rng)
    assert T2Star(TE).estimate_noise(noise)[0] == pytest.approx(15.0, rel=0.03)
    # a tight tissue mask removes the background: then the decays decide (here: none)
    mask = np.r_[np.ones(2000, bool), np.zeros(500, bool)]
    assert T2Star(TE).estimate_noise(y, mask)[1] == "none"
