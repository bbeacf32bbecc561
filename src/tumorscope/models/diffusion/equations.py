"""Diffusion signal equations and their Jacobians (numpy, vectorised).

Every function takes ``b`` (shape ``(m,)``, s/mm²) and ``params``, one parameter vector per
row in the order of the model's :attr:`~tumorscope.models.base.Model.parameters`
(diffusivities in mm²/s, ``f`` and ``K`` dimensionless, ``S0`` in data units), and returns
float64. The signal functions accept ``params`` of shape ``(..., p)`` and return
``(..., m)``; the Jacobians take ``(n, p)`` and return ``(n, m, p)``.

* ADC (Stejskal & Tanner 1965, doi:10.1063/1.1695690): ``S = S0 exp(-b ADC)``.
* IVIM (Le Bihan et al. 1988, doi:10.1148/radiology.168.2.3393671):
  ``S = S0 (f exp(-b D*) + (1 - f) exp(-b D))``.
* Mean-signal DKI (Jensen et al. 2005, doi:10.1002/mrm.20508):
  ``S̄(b) = S0 exp(-b D + b² D² K / 6)``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["adc_signal", "dki_signal", "ivim_signal"]


def adc_signal(b: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Mono-exponential decay ``S0 exp(-b ADC)``, ``params (..., 2) = (S0, ADC)``.

    ``b`` in s/mm², ADC in mm²/s; returns ``(..., m)`` (see the module docstring).
    """
    p = np.asarray(params, dtype=np.float64)
    return p[..., :1] * np.exp(-p[..., 1:2] * np.asarray(b, dtype=np.float64))


def ivim_signal(b: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Bi-exponential IVIM signal ``S0 (f exp(-b D*) + (1 - f) exp(-b D))``.

    ``params (..., 4) = (S0, D, f, D_star)``: D and D* in mm²/s, f in 0–1; returns
    ``(..., m)``. Le Bihan et al. 1988, doi:10.1148/radiology.168.2.3393671.
    """
    p = np.asarray(params, dtype=np.float64)
    bb = np.asarray(b, dtype=np.float64)
    s0, d, f, ds = (p[..., i : i + 1] for i in range(4))
    return s0 * (f * np.exp(-bb * ds) + (1.0 - f) * np.exp(-bb * d))


def dki_signal(b: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Mean-signal kurtosis ``S0 exp(-b D + b² D² K / 6)``, ``params (..., 3) = (S0, D, K)``.

    D in mm²/s, K dimensionless; returns ``(..., m)``. Jensen et al. 2005,
    doi:10.1002/mrm.20508.
    """
    p = np.asarray(params, dtype=np.float64)
    bb = np.asarray(b, dtype=np.float64)
    s0, d, k = (p[..., i : i + 1] for i in range(3))
    return s0 * np.exp(-bb * d + (bb * d) ** 2 * k / 6.0)


def _adc_jac(b: np.ndarray, params: np.ndarray) -> np.ndarray:
    """``d adc_signal / d (S0, ADC)``, ``(n, 2) -> (n, m, 2)``."""
    p = np.asarray(params, dtype=np.float64)
    e = np.exp(-p[:, 1:2] * b)
    return np.stack([e, -p[:, :1] * b * e], axis=-1)


def _ivim_jac(b: np.ndarray, params: np.ndarray) -> np.ndarray:
    """``d ivim_signal / d (S0, D, f, D_star)``, ``(n, 4) -> (n, m, 4)``."""
    p = np.asarray(params, dtype=np.float64)
    s0, d, f, ds = (p[:, i : i + 1] for i in range(4))
    e1 = np.exp(-b * d)
    e2 = np.exp(-b * ds)
    return np.stack(
        [f * e2 + (1 - f) * e1, -s0 * (1 - f) * b * e1, s0 * (e2 - e1), -s0 * f * b * e2],
        axis=-1,
    )


def _dki_jac(b: np.ndarray, params: np.ndarray) -> np.ndarray:
    """``d dki_signal / d (S0, D, K)``, ``(n, 3) -> (n, m, 3)``."""
    p = np.asarray(params, dtype=np.float64)
    s0, d, k = (p[:, i : i + 1] for i in range(3))
    e = np.exp(-b * d + (b * d) ** 2 * k / 6.0)
    return np.stack([e, s0 * e * (-b + b * b * d * k / 3.0), s0 * e * (b * d) ** 2 / 6.0], axis=-1)
