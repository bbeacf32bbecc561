"""1H MRS and 2H (DMI): a spectrum made from the basis with known amounts, line widths and
noise is fitted back; preprocessing steps are checked on their own (HLSVD against the known
sinusoids, alignment against the applied shifts, coil combination against the SNR gain)."""

from __future__ import annotations

import numpy as np
import pytest

from tumorscope.errors import DataError
from tumorscope.models.metabolic.basis import DEUTERIUM_SHIFTS_PPM, simulate_basis, singlet_basis
from tumorscope.models.metabolic.deuterium import fit_deuterium
from tumorscope.models.metabolic.mrs import (
    _beta,
    _broadened,
    align,
    coil_combine,
    fit_lcm,
    hlsvd,
    mrs_ratios,
    remove_water,
    water_amplitude,
    water_scaled,
)

F0, DWELL, N = 123.2, 1 / 2000, 1024
TRUE = {
    "NAA": 8.0,
    "Cr": 6.0,
    "Cho": 3.0,
    "Lac": 2.0,
    "mI": 4.0,
    "Glu": 7.0,
    "Gln": 3.0,
    "Cit": 1.0,
    "Lip13": 2.0,
    "Lip09": 1.0,
}


@pytest.fixture(scope="module")
def basis():
    return simulate_basis(F0, DWELL, N)


def _spectrum(basis, rng, sigma=0.5, theta=(0.4, 3.0, 5.0, 4.0)):
    c = np.array([TRUE[n] for n in basis.names])
    th = np.array([theta[0], theta[1], theta[2], _beta(theta[3])])
    fid = c @ _broadened(basis, th)
    return fid + sigma * (rng.normal(size=N) + 1j * rng.normal(size=N))


def test_basis_is_normalised_to_protons(basis) -> None:
    n_h = dict(zip(basis.names, basis.n_h, strict=True))
    assert n_h["NAA"] == 6 and n_h["Cr"] == 5 and n_h["Cho"] == 13 and n_h["Lac"] == 4
    np.testing.assert_allclose(basis.fids[:, 0].real, basis.n_h, rtol=1e-9)
    # citrate AB quartet: inner lines stronger (roof effect), all at the published shifts
    spec = np.abs(np.fft.fftshift(np.fft.fft(basis.fids[basis.names.index("Cit")])))
    ppm = 4.7 + np.fft.fftshift(np.fft.fftfreq(N, DWELL)) / F0
    assert 2.45 < ppm[np.argmax(spec)] < 2.8


def test_lcm_recovers_amounts_within_crlb(basis) -> None:
    rng = np.random.default_rng(11)
    res = fit_lcm(_spectrum(basis, rng), basis)
    for name in ("NAA", "Cr", "Cho", "Lac", "Cit", "mI", "Glu"):
        err = res.amplitudes[name] - TRUE[name]
        assert abs(err) < 3.5 * res.crlb[name] + 1e-3, (name, err, res.crlb[name])
        assert res.crlb_percent[name] < 25, name
    assert res.lorentz_hz == pytest.approx(5.0, abs=1.0)
    assert res.shift_hz == pytest.approx(3.0, abs=0.3)
    ratios = mrs_ratios(res.amplitudes)
    assert ratios["tCho/Cr"] == pytest.approx(0.5, rel=0.05)
    assert ratios["(Cho+Cr)/Cit"] == pytest.approx(9.0, rel=0.2)


def test_hlsvd_finds_known_sinusoids_and_removes_water(basis) -> None:
    t = np.arange(N) * DWELL
    comps = [(0.0, 20.0, 5000.0), (-210.0, 15.0, 40.0), (-330.0, 10.0, 30.0)]
    fid = sum(a * np.exp((2j * np.pi * f - d) * t) for f, d, a in comps)
    freq, damp, amp = hlsvd(fid, DWELL, n_components=3)
    order = np.argsort(-np.abs(amp))
    np.testing.assert_allclose(freq[order], [c[0] for c in comps], atol=1e-6)
    np.testing.assert_allclose(damp[order], [c[1] for c in comps], rtol=1e-6)
    # water (5000 at 4.7 ppm) on the metabolite spectrum: removed, metabolites kept
    rng = np.random.default_rng(4)
    metab = _spectrum(basis, rng)
    water = 5e4 * np.exp((2j * np.pi * 2.0 - np.pi * 4.0) * t)
    cleaned = remove_water(metab + water, DWELL, F0)
    res = fit_lcm(cleaned, basis)
    assert res.amplitudes["NAA"] == pytest.approx(8.0, rel=0.05)
    assert res.amplitudes["Cr"] == pytest.approx(6.0, rel=0.05)
    conc = water_scaled(res.amplitudes, water_amplitude(water, DWELL), water_conc_mM=35880.0)
    assert conc["NAA"] == pytest.approx(8.0 * 2 * 35880.0 / 5e4, rel=0.05)


def test_alignment_and_coil_combination(basis) -> None:
    rng = np.random.default_rng(8)
    t = np.arange(N) * DWELL
    clean = np.array([TRUE[n] for n in basis.names]) @ _broadened(basis, np.array([0, 0, 4, 0.0]))
    shifts = rng.uniform(-4, 4, 16)
    phases = rng.uniform(-0.5, 0.5, 16)
    trans = np.array(
        [clean * np.exp(-1j * (2 * np.pi * s * t + p)) for s, p in zip(shifts, phases, strict=True)]
    )
    trans += 0.5 * (rng.normal(size=trans.shape) + 1j * rng.normal(size=trans.shape))
    mean, got_s, _got_p = align(trans, DWELL)
    # corrections are relative to the mean: their differences match the applied ones
    np.testing.assert_allclose(got_s - got_s.mean(), shifts - shifts.mean(), atol=0.1)
    assert (
        np.abs(mean[:50] - clean[:50] * np.exp(-1j * (2 * np.pi * shifts.mean() * t[:50]))).max()
        < 2.0 * np.abs(clean).max()
    )
    # coils: weights by first-point phase and S/N² beat the plain sum
    sens = np.array([1.0, 0.5, 0.2, 0.05]) * np.exp(1j * np.array([0.3, 2.0, -1.0, 2.8]))
    coils = sens[:, None] * clean + 1.0 * (rng.normal(size=(4, N)) + 1j * rng.normal(size=(4, N)))
    comb = coil_combine(coils)
    assert abs(np.angle(comb[0])) < 0.1
    snr_comb = np.abs(comb[0]) / comb[-100:].std()
    snr_best = np.abs(coils[0, 0]) / coils[0, -100:].std()
    assert snr_comb > snr_best


def test_nan_spectrum_is_refused(basis) -> None:
    bad = np.zeros(N, complex)
    bad[5] = np.nan
    with pytest.raises(DataError, match="NaN"):
        fit_lcm(bad, basis)
    with pytest.raises(DataError, match="points"):
        fit_lcm(np.zeros(N // 2, complex), basis)


def test_deuterium_ratios_recovered() -> None:
    f0 = 6.536 * 2.89
    b = singlet_basis(DEUTERIUM_SHIFTS_PPM, f0, 1 / 500, 256)
    amp = np.array([10.0, 4.0, 1.5, 1.2])
    fid = amp @ _broadened(b, np.array([0.3, 2.0, 10.0, _beta(4.0)]))
    rng = np.random.default_rng(1)
    est = []
    for _ in range(6):
        noisy = fid + 0.2 * (rng.normal(size=fid.shape) + 1j * rng.normal(size=fid.shape))
        r = fit_deuterium(noisy, 1 / 500, f0)
        est.append([r.amplitudes[n] for n in b.names] + [r.lactate_glx])
        for i, n in enumerate(b.names):
            assert abs(r.amplitudes[n] - amp[i]) < 4 * r.crlb[n], n
    est = np.array(est).mean(0)
    np.testing.assert_allclose(est[:4], amp, rtol=0.1)
    assert est[4] == pytest.approx(1.2 / 1.5, rel=0.12)
