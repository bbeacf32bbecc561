"""IVIM and ADC edge cases (issue 23): f up to 1, unidentifiable parameters flagged, the
segmented fit's perfusion correction, ADC bounds settable and reported.

The noise-free voxel is DIPY's IVIM test voxel (``dipy/reconst/tests/test_ivim.py``: S0 1000,
f 0.132, D* 0.00885, D 0.000921 mm²/s, 21 b-values); the blood voxel imitates OSIPI's
right-ventricle test voxel (f = 1, Gaussian noise SD 5e-4 on S0 = 1, OSIPI tolerance f ±0.2
+ 10 %)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tumorscope.errors import FitError
from tumorscope.fitting.status import FitStatus
from tumorscope.models import ADC, IVIM
from tumorscope.models.diffusion import ivim_signal

B_DIPY = np.array(
    [0, 10, 20, 30, 40, 60, 80, 100, 120, 140, 160, 180, 200, 300, 400, 500, 600, 700, 800,
     900, 1000],
    dtype=float,
)  # fmt: skip
B_OSIPI = np.array(
    [0, 1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 250, 350, 400, 550, 700, 850, 1000], dtype=float
)


def _fit(model, y):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(y)


@pytest.mark.parametrize("method", ["segmented", "full", "bayes"])
def test_noise_free_dipy_voxel_is_exact(method: str) -> None:
    y = ivim_signal(B_DIPY, np.array([[1000.0, 0.000921, 0.132, 0.00885]]))
    fit = _fit(IVIM(B_DIPY, method=method), np.repeat(y, 3, axis=0))
    np.testing.assert_allclose(fit["D_star"], 0.00885, rtol=0.01)
    np.testing.assert_allclose(fit["f"], 0.132, rtol=0.01)
    np.testing.assert_allclose(fit["D"], 0.000921, rtol=0.005)


def test_classic_segmented_keeps_its_bias() -> None:
    """perfusion_correction=0 is the classic segmented fit: D* 0.0110 on DIPY's voxel."""
    y = ivim_signal(B_DIPY, np.array([[1000.0, 0.000921, 0.132, 0.00885]]))
    fit = _fit(IVIM(B_DIPY, perfusion_correction=0), y)
    assert fit["D_star"][0] > 0.0105
    with pytest.raises(FitError, match=">= 0"):
        IVIM(B_DIPY, perfusion_correction=-1)


@pytest.mark.parametrize("method", ["segmented", "full", "bayes"])
def test_pure_blood_voxels_give_f_near_1_with_status(method: str) -> None:
    rng = np.random.default_rng(3)
    n = 40
    truth = np.c_[np.ones(n), np.full(n, 1.5e-3), np.ones(n), rng.uniform(0.02, 0.1, n)]
    y = ivim_signal(B_OSIPI, truth) + rng.normal(0, 5e-4, (n, B_OSIPI.size))
    assert (y < 0).any()  # the vanished signal at high b goes negative: still valid input
    # tissue voxels in the same fit, so that the 'bayes' prior has a population
    tissue = ivim_signal(B_OSIPI, np.tile([1.0, 1.2e-3, 0.15, 0.03], (n, 1)))
    fit = _fit(IVIM(B_OSIPI, method=method), np.r_[y, tissue])
    f = fit["f"][:n]
    assert np.all(np.isfinite(f))
    assert np.all(np.abs(f - 1.0) <= 0.2 + 0.1)  # OSIPI tolerance
    assert np.all(fit.status[:n] == FitStatus.AT_BOUND)
    assert np.all(np.asarray(fit["unidentified"][:n], int) & 1)  # D not identifiable
    assert np.all(fit["unidentified"][n:] == 0)
    assert np.all(fit.status[n:] == FitStatus.CONVERGED)


def test_no_perfusion_flags_d_star() -> None:
    y = ivim_signal(B_OSIPI, np.array([[1.0, 1e-3, 0.0, 0.02]]))
    fit = _fit(IVIM(B_OSIPI, method="full"), y)
    assert int(fit["unidentified"][0]) & 2
    assert fit.status[0] == FitStatus.AT_BOUND
    np.testing.assert_allclose(fit["D"], 1e-3, rtol=1e-4)


@pytest.mark.parametrize("method", ["wlls", "lls", "nlls"])
def test_adc_bounds_are_settable_and_reported(method: str) -> None:
    b = np.array([0.0, 10, 20, 40, 80])
    y = np.exp(-b * 0.00885)[None, :]
    fit = _fit(ADC(b, method=method), y)
    assert fit["ADC"][0] == pytest.approx(0.005)
    assert fit.status[0] == FitStatus.AT_BOUND
    wide = _fit(ADC(b, method=method, bounds={"ADC": (0.0, 0.1)}), y)
    assert wide["ADC"][0] == pytest.approx(0.00885, rel=1e-4)
    assert wide.status[0] == FitStatus.CONVERGED
    assert wide.provenance["options"]["bounds"] == {"ADC": [0.0, 0.1]}
    low = _fit(ADC(b, method=method, bounds={"ADC": (0.01, 0.1)}), y)
    assert low["ADC"][0] == pytest.approx(0.01)
    assert low.status[0] == FitStatus.AT_BOUND
    with pytest.raises(FitError, match="lower < upper"):
        ADC(b, bounds={"ADC": (0.1, 0.0)})
