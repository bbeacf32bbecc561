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


def _background_reference(y):  # type: ignore[no-untyped-def]
    """The background rule written out on gathered float64 rows (how it was computed before
    it read a series one echo at a time)."""
    m1 = y[:, 0]
    s = float(np.quantile(m1, 0.05)) / float(np.sqrt(-2.0 * np.log(0.95)))
    for _ in range(20):
        sel = m1 < 3.0 * s
        s_new = float(np.sqrt(np.mean(y[sel, 1:] ** 2) / 2.0))
        done = abs(s_new / s - 1.0) < 1e-4
        s = s_new
        if done:
            break
    return s


def test_noise_from_a_fortran_ordered_series():
    """A 4-D float32 series in Fortran order (as NIfTI volumes are read), with invalid voxels
    (NaN, negative) and a mask: the σ of the rows read one echo at a time equals the rule
    computed on gathered C-ordered float64 rows, whatever the memory order."""
    rng = np.random.default_rng(12)
    shape = (30, 20, 10)
    n = int(np.prod(shape))
    p = np.c_[rng.uniform(800, 1200, n), rng.uniform(20, 100, n)]
    clean = monoexp_signal(p, TE)
    clean[rng.random(n) < 0.4] = 0.0  # background
    y = _rician(clean, 12.0, rng).astype(np.float32)
    y[5, 0] = np.nan
    y[7, 3] = -1.0
    vol = np.asfortranarray(y.reshape(*shape, TE.size))
    mask = rng.random(shape) < 0.8
    model = T2Star(TE)
    for m in (None, mask):
        sigma, how = model.estimate_noise(vol, m)
        c = np.ascontiguousarray(vol, dtype=np.float64)
        assert model.estimate_noise(c, m) == pytest.approx((sigma, how), rel=1e-12)
        rows = c.reshape(-1, TE.size)
        if m is not None:
            rows = rows[m.reshape(-1)]
        rows = rows[np.all(np.isfinite(rows), axis=1) & np.all(rows >= 0, axis=1)]
        assert how == "background"
        assert sigma == pytest.approx(_background_reference(rows), rel=1e-12)
        assert sigma == pytest.approx(12.0, rel=0.03)
