"""Shared constants and helpers of the diffusion model tests.

Noisy tests add Gaussian noise of SD ``S0 / SNR`` (the estimators are least squares, i.e.
Gaussian maximum likelihood; at SNR >= 20 relative to S0 and with the signal kept >= 0.3 S0 the
Rician bias is second order and is not what is tested). Precision is judged against the
Cramér–Rao lower bound (CRLB) computed from the model's analytic Jacobian at the truth,
``sd_CRLB = sigma * sqrt(diag((J^T J)^-1))``: a least-squares fit is asymptotically efficient
and unbiased, so at high SNR its Monte Carlo SD must be close to the CRLB and its bias a small
fraction of it. Robust statistics (median, IQR/1.349) are used because bounded bi-exponential
fits have heavy tails at low SNR. All generators are seeded; N = 2000 voxels per case keeps the
sampling error of the SD estimate near 3%.
"""

from __future__ import annotations

import warnings

import numpy as np

from tumorscope.errors import TumorscopeWarning

B_IVIM = np.array([0, 10, 20, 30, 50, 80, 100, 150, 200, 300, 400, 500, 600, 800, 1000.0])
B_ADC = np.array([0, 50, 400, 800, 1000.0])
B_DKI = np.array([0, 500, 1000, 1500, 2000, 2500.0])
N_MC = 2000


def quiet_fit(model, data, mask=None):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TumorscopeWarning)
        return model.fit(data, mask)


def crlb(model, truth: np.ndarray, sigma: float) -> np.ndarray:  # type: ignore[no-untyped-def]
    J = model.jacobian(truth[None])[0]
    return sigma * np.sqrt(np.diag(np.linalg.inv(J.T @ J)))


def robust(x: np.ndarray) -> tuple[float, float]:
    """Median and IQR/1.349 of the fitted voxels (Gaussian noise can make a sample negative:
    such voxels are INVALID_INPUT with NaN maps; at most 0.5% of them are allowed)."""
    ok = np.isfinite(x)
    assert ok.mean() >= 0.995
    x = x[ok]
    q75, q25 = np.percentile(x, [75, 25])
    return float(np.median(x)), float((q75 - q25) / 1.349)


def stack(fit, names) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.stack([fit[n] for n in names], axis=-1).astype(np.float64)
