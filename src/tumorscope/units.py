"""Unit conventions and conversions.

tumorscope keeps one unit per quantity everywhere inside the package and at its interface
(see ``docs/architecture.md``). Numbers leave the package with their unit in metadata
(``FitResult.units``, NIfTI sidecars) or in a column name (``volume_ml``).

=====================================  =========================  ==========================
quantity                               unit                       names
=====================================  =========================  ==========================
time, durations, dynamic time axis     s                          ``t``
relaxation times                       ms                         ``T1``, ``T2``, ``T2star``
relaxation rates                       1/s                        ``R1``, ``R2``, ``R2star``
diffusion                              mm²/s                      ``ADC``, ``D``, ``D_star``
DCE transfer constants                 1/min                      ``Ktrans``, ``kep``
DCE flows                              mL/100 mL/min              ``Fp``, ``PS``
volume fractions                       1 (0–1)                    ``ve``, ``vp``, ``f``
concentration, relaxivity              mM, 1/(mM·s)               ``C``, ``r1``
lengths, volumes                       mm, mL                     ``diameter_mm``, ``volume_ml``
angles                                 degrees (at interfaces)    ``flip_angle_deg``
PET uptake                             g/mL                       ``SUV``
=====================================  =========================  ==========================

BIDS sidecars store ``RepetitionTime``, ``EchoTime`` and ``InversionTime`` in seconds; the
readers convert them to ms with :func:`s_to_ms`.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "PARAMETER_UNITS",
    "UCUM",
    "deg_to_rad",
    "ml_per_100ml_per_min_to_per_s",
    "ms_to_s",
    "per_min_to_per_s",
    "per_s_to_per_min",
    "rate_to_time_ms",
    "s_to_ms",
    "time_ms_to_rate",
]

#: Unit of every named parameter map tumorscope produces.
PARAMETER_UNITS: Final[dict[str, str]] = {
    "ADC": "mm2/s",
    "D": "mm2/s",
    "D_star": "mm2/s",
    "f": "1",
    "K": "1",
    "S0": "a.u.",
    "M0": "a.u.",
    "T1": "ms",
    "T2": "ms",
    "T2star": "ms",
    "R1": "1/s",
    "R2": "1/s",
    "R2star": "1/s",
    "Ktrans": "1/min",
    "kep": "1/min",
    "ve": "1",
    "vp": "1",
    "Fp": "mL/100mL/min",
    "PS": "mL/100mL/min",
    "delay": "s",
    "C": "mM",
    "rCBV": "1",
    "rCBF": "1",
    "MTT": "s",
    "SUV": "g/mL",
}

#: UCUM codes (for DICOM real-world value mapping) of the units above.
UCUM: Final[dict[str, str]] = {
    "mm2/s": "mm2/s",
    "1": "1",
    "a.u.": "[arb'U]",
    "ms": "ms",
    "s": "s",
    "1/s": "/s",
    "1/min": "/min",
    "mL/100mL/min": "mL/(100.mL.min)",
    "mM": "mmol/L",
    "g/mL": "g/mL",
    "mm": "mm",
    "mL": "mL",
    "ppm": "[ppm]",
}

ArrayLike = npt.ArrayLike


def s_to_ms(x: ArrayLike) -> np.ndarray:
    """Seconds to milliseconds."""
    return np.asarray(x, dtype=float) * 1e3


def ms_to_s(x: ArrayLike) -> np.ndarray:
    """Milliseconds to seconds."""
    return np.asarray(x, dtype=float) * 1e-3


def per_min_to_per_s(x: ArrayLike) -> np.ndarray:
    """Rate constants from 1/min to 1/s."""
    return np.asarray(x, dtype=float) / 60.0


def per_s_to_per_min(x: ArrayLike) -> np.ndarray:
    """Rate constants from 1/s to 1/min."""
    return np.asarray(x, dtype=float) * 60.0


def ml_per_100ml_per_min_to_per_s(x: ArrayLike) -> np.ndarray:
    """Flows from mL/100 mL/min to mL/mL/s (= 1/s)."""
    return np.asarray(x, dtype=float) / 6000.0


def time_ms_to_rate(t_ms: ArrayLike) -> np.ndarray:
    """Relaxation time in ms to rate in 1/s (``R = 1000 / T``); non-positive times give NaN."""
    t = np.asarray(t_ms, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(t > 0, 1e3 / np.where(t > 0, t, 1.0), np.nan)


def rate_to_time_ms(r_per_s: ArrayLike) -> np.ndarray:
    """Relaxation rate in 1/s to time in ms; non-positive rates give NaN."""
    return time_ms_to_rate(r_per_s)


def deg_to_rad(x: ArrayLike) -> np.ndarray:
    """Degrees to radians."""
    return np.deg2rad(np.asarray(x, dtype=float))
