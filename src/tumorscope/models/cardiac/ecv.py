"""Extracellular volume fraction from native and post-contrast T1 and the haematocrit.

``ECV = (1 - Hct) · ΔR1_myo / ΔR1_blood`` with ``ΔR1 = 1/T1_post - 1/T1_native``
(Haaf et al., J Cardiovasc Magn Reson 2016, doi:10.1186/s12968-016-0308-4; SCMR consensus,
Messroghli et al. 2017, doi:10.1186/s12968-017-0389-8). Valid in the fast-exchange regime at
contrast equilibrium (bolus: ≥ 10–15 min after injection). Times in ms; the result is a
fraction (0–1).
"""

from __future__ import annotations

import numpy as np

from ...errors import DataError

__all__ = ["ecv", "partition_coefficient"]


def _times(x: object, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if np.any(a[np.isfinite(a)] <= 0):
        raise DataError(f"{name} must be positive times in ms", field=name)
    return a


def partition_coefficient(
    t1_native_tissue_ms: object,
    t1_post_tissue_ms: object,
    t1_native_blood_ms: float,
    t1_post_blood_ms: float,
) -> np.ndarray:
    """``λ = ΔR1_tissue / ΔR1_blood`` (NaN where a T1 is NaN or ``ΔR1_blood`` is not > 0)."""
    tn = _times(t1_native_tissue_ms, "t1_native_tissue_ms")
    tp = _times(t1_post_tissue_ms, "t1_post_tissue_ms")
    bn = float(_times(t1_native_blood_ms, "t1_native_blood_ms"))
    bp = float(_times(t1_post_blood_ms, "t1_post_blood_ms"))
    d_blood = 1.0 / bp - 1.0 / bn
    if not np.isfinite(d_blood) or d_blood <= 0:
        raise DataError(
            f"blood T1 does not shorten after contrast (native {bn} ms, post {bp} ms): "
            "ECV needs the post-contrast blood T1 below the native one",
            field="t1_post_blood_ms",
        )
    return np.asarray((1.0 / tp - 1.0 / tn) / d_blood)


def ecv(
    t1_native_tissue_ms: object,
    t1_post_tissue_ms: object,
    t1_native_blood_ms: float,
    t1_post_blood_ms: float,
    hematocrit: float,
) -> np.ndarray:
    """Extracellular volume fraction ``(1 - Hct) λ`` (per voxel or per region).

    Parameters
    ----------
    t1_native_tissue_ms, t1_post_tissue_ms : array_like
        Tissue T1 before and after contrast (ms), same shape.
    t1_native_blood_ms, t1_post_blood_ms : float
        Blood-pool T1 before and after contrast (ms).
    hematocrit : float
        Haematocrit as a fraction (0–1; e.g. 0.42), from blood drawn on the day of the scan.

    Raises
    ------
    DataError
        A haematocrit outside (0, 1) (a percentage given as 42 is named), non-positive T1,
        blood T1 that does not shorten.
    """
    h = float(hematocrit)
    if not np.isfinite(h) or not 0.0 < h < 1.0:
        hint = " (a percentage? give 0.42 for 42 %)" if 1.0 < h <= 100.0 else ""
        raise DataError(
            f"hematocrit must be a fraction in (0, 1), got {h!r}{hint}", field="hematocrit"
        )
    return (1.0 - h) * partition_coefficient(
        t1_native_tissue_ms, t1_post_tissue_ms, t1_native_blood_ms, t1_post_blood_ms
    )
