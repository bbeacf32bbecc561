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

import math
from datetime import datetime
from typing import Final

import numpy as np
import numpy.typing as npt

from .errors import DataError

__all__ = [
    "PARAMETER_UNITS",
    "UCUM",
    "decay_factor",
    "deg_to_rad",
    "ml_per_100ml_per_min_to_per_s",
    "ms_to_s",
    "per_min_to_per_s",
    "per_s_to_per_min",
    "rate_to_time_ms",
    "s_to_ms",
    "suvbw_factor",
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
    "CBF": "mL/100mL/min",
    "CBV": "mL/100mL",
    "Tmax": "s",
    "K2": "1/s",
    "T1effect": "1",
    "SUV": "g/mL",
    "T1star": "ms",
    "A": "a.u.",
    "B_over_A": "1",
    "ECV": "1",
    "abs_G": "kPa",
    "phi": "rad",
    "G_storage": "kPa",
    "G_loss": "kPa",
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
    "mL/100mL": "mL/(100.mL)",
    "mM": "mmol/L",
    "g/mL": "g/mL",
    "kPa": "kPa",
    "rad": "rad",
    "mm": "mm",
    "mL": "mL",
    "ppm": "[ppm]",
}

ArrayLike = npt.ArrayLike


def s_to_ms(x: ArrayLike) -> np.ndarray:
    """Seconds to milliseconds (a time beyond the float range becomes inf, which the protocol
    checks then refuse, naming the field: no overflow warning on the way)."""
    with np.errstate(over="ignore"):
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


# --------------------------------------------------------------------------- PET
# The decay and SUV arithmetic lives here, in the core, because both io (DICOM 'GML' and
# Philips 'CNTS' images back to Bq/mL) and models/pet (SUV maps) need it; the rules and
# references are in tumorscope.models.pet.suv.


def _positive(value: float, field: str) -> float:
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise DataError(f"expected a positive finite number, got {value!r}", field=field)
    return v


def decay_factor(
    *,
    injection_time: datetime,
    scan_time: datetime,
    half_life_s: float,
    decay_correction: str = "START",
    frame_duration_s: float | None = None,
) -> float:
    """Fraction of the injected activity present at the time the image refers to.

    Parameters
    ----------
    injection_time, scan_time : datetime
        Start of the injection (RadiopharmaceuticalStartDateTime) and the time the image is
        decay-corrected to (series start for START; frame start for NONE). Both naive or both
        aware.
    half_life_s : float
        Radionuclide half-life, s.
    decay_correction : {"START", "ADMIN", "NONE"}
        DICOM DecayCorrection (0054,1102).
    frame_duration_s : float, optional
        NONE only: frame duration, s; corrects for the decay during the frame.

    Returns
    -------
    float
        ``A_ref / A_inj`` (1 for ADMIN); for NONE with a frame duration, divided by the
        in-frame decay correction, so that ``C / (A_inj · factor)`` is decay corrected.

    Raises
    ------
    DataError
        Unknown correction, non-positive half-life, or a scan before the injection.
    """
    mode = str(decay_correction).strip().upper()
    if mode not in ("START", "ADMIN", "NONE"):
        raise DataError(
            f"unknown decay correction {decay_correction!r}; expected START, ADMIN or NONE",
            field="DecayCorrection",
        )
    hl = _positive(half_life_s, "RadionuclideHalfLife")
    if mode == "ADMIN":
        return 1.0
    try:
        dt = (scan_time - injection_time).total_seconds()
    except TypeError as exc:  # naive vs aware
        raise DataError(f"cannot compare the times: {exc}", field="scan_time") from exc
    if dt < 0:
        raise DataError(
            f"scan start {scan_time.isoformat()} is before the injection "
            f"{injection_time.isoformat()}",
            field="scan_time",
        )
    lam = math.log(2.0) / hl
    f = math.exp(-lam * dt)
    if mode == "NONE" and frame_duration_s is not None:
        d = _positive(frame_duration_s, "FrameDuration")
        f *= (1.0 - math.exp(-lam * d)) / (lam * d)
    return f


def suvbw_factor(
    *,
    injected_activity_bq: float,
    injection_time: datetime,
    scan_time: datetime,
    half_life_s: float,
    weight_kg: float,
    decay_correction: str = "START",
    frame_duration_s: float | None = None,
) -> float:
    """Factor turning an activity concentration in Bq/mL into SUVbw in g/mL.

    ``SUVbw = factor × C``, with ``factor = weight_g / (A_inj × decay)``, ``decay`` from
    :func:`decay_factor` (START, ADMIN and NONE: :mod:`tumorscope.models.pet.suv`).

    Parameters
    ----------
    injected_activity_bq : float
        Injected (net) activity at ``injection_time``, Bq (DICOM RadionuclideTotalDose).
    injection_time, scan_time : datetime
        Injection start and the image's reference time (series start for START).
    half_life_s : float
        Half-life, s (F-18: 6586.2).
    weight_kg : float
        Patient weight, kg.
    decay_correction : {"START", "ADMIN", "NONE"}, default "START"
    frame_duration_s : float, optional
        NONE only: frame duration, s.

    Returns
    -------
    float
        g/mL per Bq/mL.

    Examples
    --------
    >>> from datetime import datetime
    >>> f = suvbw_factor(injected_activity_bq=370e6, injection_time=datetime(2026, 1, 5, 9, 0),
    ...                scan_time=datetime(2026, 1, 5, 10, 0), half_life_s=6586.2,
    ...                weight_kg=70.0)
    >>> round(f * 5000.0, 4)   # 5 kBq/mL one hour after 370 MBq in a 70 kg patient
    1.3817
    """
    dose = _positive(injected_activity_bq, "RadionuclideTotalDose")
    w = _positive(weight_kg, "PatientWeight")
    d = decay_factor(
        injection_time=injection_time,
        scan_time=scan_time,
        half_life_s=half_life_s,
        decay_correction=decay_correction,
        frame_duration_s=frame_duration_s,
    )
    return w * 1000.0 / (dose * d)
