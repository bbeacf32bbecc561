"""DSC deconvolution: definitions (area ratio, units, factors), recovery of known CBF/CBV/MTT,
delay (in)sensitivity, and agreement with independent per-voxel implementations
(``numpy.linalg.pinv`` for the truncated SVDs, direct normal-equation solves and a numerical
L-curve curvature for Tikhonov)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tumorscope.errors import FitError, TumorscopeWarning
from tumorscope.fitting import FitStatus
from tumorscope.models import DSC
from tumorscope.models.dsc import convolution_matrix, oscillation_index
from tumorscope.models.dsc.deconvolution import DEFAULT_HEMATOCRIT_FACTOR, OSVD_THRESHOLDS
from tumorscope.models.dsc.simulate import RESIDUES, tissue_curves

T = np.arange(60) * 1.5
METHODS = ("osvd", "csvd", "svd", "tikhonov")


def _curves(n: int = 1, **kw: object) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    cbf = np.linspace(20.0, 60.0, n)
    cbv = np.linspace(2.0, 5.0, n)
    c, aif = tissue_curves(T, cbf, cbv, **kw)  # type: ignore[arg-type]
    return c, aif, cbf, cbv


def test_defaults_are_the_published_factors() -> None:
    assert DEFAULT_HEMATOCRIT_FACTOR == pytest.approx(0.55 / 0.75)
    d = DSC(T, _curves()[1])
    assert d.hematocrit_factor == pytest.approx(0.7333333) and d.tissue_density == 1.04


@pytest.mark.parametrize("method", METHODS)
def test_cbv_is_exactly_the_area_ratio(method: str, rng: np.random.Generator) -> None:
    aif = _curves()[1]
    c = rng.uniform(0.0, 3.0, (4, T.size))  # any curves: CBV never depends on the deconvolution
    fit = DSC(T, aif, method=method, hematocrit_factor=1, tissue_density=1).fit(c)
    want = 100.0 * np.trapezoid(c, T, axis=1) / np.trapezoid(aif, T)
    np.testing.assert_allclose(fit["CBV"], want, rtol=1e-6)
    dflt = DSC(T, aif, method=method).fit(c)
    np.testing.assert_allclose(dflt["CBV"], want * DEFAULT_HEMATOCRIT_FACTOR / 1.04, rtol=1e-6)
    # MTT = CBV/CBF (central volume theorem), in s
    np.testing.assert_allclose(fit["MTT"], 60 * fit["CBV"] / fit["CBF"], rtol=1e-5)
    assert fit.units == {
        "CBF": "mL/100mL/min",
        "CBV": "mL/100mL",
        "MTT": "s",
        "Tmax": "s",
        "threshold": "1",
    }


@pytest.mark.parametrize("residue", RESIDUES)
def test_noise_free_recovery(residue: str) -> None:
    c, aif, cbf, cbv = _curves(5, residue=residue)
    fit = DSC(T, aif, method="osvd").fit(c)
    np.testing.assert_allclose(fit["CBV"], cbv, rtol=0.01)  # sampling of the curves only
    # oSVD: the known under-estimation of truncated SVD stays within 20 % without noise
    np.testing.assert_allclose(fit["CBF"], cbf, rtol=0.20)
    np.testing.assert_allclose(fit["MTT"], 60 * cbv / cbf, rtol=0.25)


def test_circulant_methods_are_delay_insensitive_and_ssvd_is_not() -> None:
    """Wu et al. 2003: the same tissue curve arriving 0–9 s after the AIF (whole frames: a
    sub-frame delay also changes how the peak is sampled, for every method)."""
    cbf = {}
    for delay in (0.0, 3.0, 6.0, 9.0):
        c, aif, _, _ = _curves(3, residue="gamma", delay_s=delay)
        for m in METHODS:
            cbf.setdefault(m, []).append(DSC(T, aif, method=m).fit(c)["CBF"])
    for m in ("csvd", "osvd", "tikhonov"):  # a circular shift of k: the same maximum
        np.testing.assert_allclose(cbf[m][1:], np.broadcast_to(cbf[m][0], (3, 3)), rtol=1e-4)
    spread = np.ptp(np.array(cbf["svd"]), axis=0) / np.array(cbf["svd"][0])
    assert np.all(spread > 0.05), spread  # measured 7-10 %


def test_tmax_follows_the_delay() -> None:
    for delay in (0.0, 4.5, 9.0):
        c, aif, _, _ = _curves(2, residue="box", delay_s=delay)
        tmax = DSC(T, aif, method="osvd").fit(c)["Tmax"]
        assert np.all(np.abs(tmax - delay) <= 3.0), (delay, tmax)


@pytest.mark.parametrize("method", ["svd", "csvd"])
def test_truncated_svd_matches_pinv_per_voxel(method: str, rng: np.random.Generator) -> None:
    c, aif, _, _ = _curves(6)
    c = c + rng.normal(0, 0.05, c.shape)
    d = DSC(T, aif, method=method, threshold=0.15, hematocrit_factor=1, tissue_density=1)
    fit = d.fit(c)
    A = convolution_matrix(aif, 1.5, circulant=method == "csvd")
    for i in range(c.shape[0]):
        pad = np.zeros(A.shape[0])
        pad[: T.size] = c[i]
        k = np.linalg.pinv(A, rcond=0.15) @ pad  # independent: numpy's pseudo-inverse
        assert fit["CBF"][i] == pytest.approx(6000 * k.max(), rel=1e-5)


def test_osvd_threshold_is_the_smallest_with_oi_below_the_limit(rng: np.random.Generator) -> None:
    c, aif, _, _ = _curves(8, residue="exponential")
    c = c + rng.normal(0, 0.1, c.shape)
    d = DSC(T, aif, method="osvd", hematocrit_factor=1, tissue_density=1)
    fit = d.fit(c)
    A = convolution_matrix(aif, 1.5, circulant=True)
    for i in range(c.shape[0]):
        pad = np.zeros(A.shape[0])
        pad[: T.size] = c[i]
        passed = None
        for p in OSVD_THRESHOLDS:  # the per-voxel loop of Wu 2003, written out
            k = np.linalg.pinv(A, rcond=p * (1 - 1e-9)) @ pad
            if oscillation_index(k) <= 0.095:
                passed = (p, k)
                break
        assert passed is not None
        assert fit["threshold"][i] == pytest.approx(passed[0])
        assert fit["CBF"][i] == pytest.approx(6000 * passed[1].max(), rel=1e-5)


def test_oscillation_index_definition() -> None:
    k = np.array([0.0, 1.0, 0.0, 1.0, 0.0])  # second differences -2, 2, -2 → 6/(5·1)
    assert oscillation_index(k) == pytest.approx(6 / 5)
    assert oscillation_index(np.linspace(1, 0, 7)) == pytest.approx(0.0)


def test_numba_and_numpy_osvd_agree(rng: np.random.Generator) -> None:
    pytest.importorskip("numba")
    c, aif, _, _ = _curves(50)
    c = c + rng.normal(0, 0.2, c.shape)
    a = DSC(T, aif, backend="numba").fit(c)
    b = DSC(T, aif, backend="numpy").fit(c)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_tikhonov_matches_direct_solves_and_numerical_l_curve(rng: np.random.Generator) -> None:
    c, aif, _, _ = _curves(3)
    c = c + rng.normal(0, 0.1, c.shape)
    d = DSC(T, aif, method="tikhonov", hematocrit_factor=1, tissue_density=1)
    fit = d.fit(c)
    A = convolution_matrix(aif, 1.5, circulant=True)
    smax = np.linalg.svd(A, compute_uv=False)[0]
    lams = smax * np.logspace(-3, 0, 40)
    for i in range(c.shape[0]):
        pad = np.zeros(A.shape[0])
        pad[: T.size] = c[i]
        # the chosen λ gives the normal-equation solution
        lam = fit["threshold"][i] * smax
        x = np.linalg.solve(A.T @ A + lam**2 * np.eye(A.shape[0]), A.T @ pad)
        assert fit["CBF"][i] == pytest.approx(6000 * x.max(), rel=1e-3)
        # and it is the corner of the numerically differentiated L-curve, on a 10x finer grid
        # of λ (within one step of the 40-value grid)
        fine = smax * np.logspace(-3, 0, 391)
        rho, eta = [], []
        for g in fine:
            xg = np.linalg.solve(A.T @ A + g**2 * np.eye(A.shape[0]), A.T @ pad)
            rho.append(np.log(np.linalg.norm(A @ xg - pad)))
            eta.append(np.log(np.linalg.norm(xg)))
        s = np.log(fine)
        r1, e1 = np.gradient(rho, s), np.gradient(eta, s)
        r2, e2 = np.gradient(r1, s), np.gradient(e1, s)
        kappa = (r1 * e2 - r2 * e1) / (r1**2 + e1**2) ** 1.5
        corner = fine[int(np.argmax(kappa[2:-2])) + 2]
        step = np.log(lams[1] / lams[0])
        assert abs(np.log(lam / corner)) <= step


def test_mask_invalid_voxels_and_warning() -> None:
    c, aif, _, _ = _curves(6)
    data = c.reshape(2, 3, T.size).copy()
    data[0, 0, 5] = np.nan
    mask = np.ones((2, 3), bool)
    mask[1, 2] = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = DSC(T, aif).fit(data, mask, chunk_voxels=2)
    assert sum(issubclass(w.category, TumorscopeWarning) for w in caught) == 1
    assert fit.status[0, 0] == FitStatus.INVALID_INPUT
    assert fit.status[1, 2] == FitStatus.NOT_FITTED
    assert np.isnan(fit["CBF"][0, 0]) and np.isnan(fit["CBV"][1, 2])
    whole = DSC(T, aif).fit(c)
    np.testing.assert_array_equal(fit["CBF"].ravel()[1:5], whole["CBF"][1:5])


def test_bad_input_is_refused() -> None:
    aif = _curves()[1]
    with pytest.raises(FitError, match="equally spaced"):
        DSC(np.r_[T[:-1], T[-1] + 5], aif)
    with pytest.raises(FitError, match="non-finite"):
        DSC(T, np.r_[np.nan, aif[1:]])
    with pytest.raises(FitError, match="area"):
        DSC(T, np.zeros(T.size))
    with pytest.raises(FitError, match="unknown method"):
        DSC(T, aif, method="fft")
    with pytest.raises(FitError, match="hematocrit_factor"):
        DSC(T, aif, hematocrit_factor=0)
    with pytest.raises(FitError, match="shape"):
        DSC(T, aif[:-1])
    with pytest.raises(FitError, match="last axis"):
        DSC(T, aif).fit(np.zeros((2, T.size - 1)))


def test_to_nifti(tmp_path: object) -> None:
    c, aif, _, _ = _curves(2)
    fit = DSC(T, aif).fit(c.reshape(2, 1, 1, T.size))
    paths = fit.to_nifti(tmp_path, np.eye(4), prefix="x_")  # type: ignore[arg-type]
    assert {"CBF", "CBV", "MTT", "Tmax", "status"} <= set(paths)
