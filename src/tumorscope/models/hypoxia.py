"""Hypoxia from R2* (BOLD): perfusion-gated classes and the oxygen-challenge response.

R2* rises with the deoxyhaemoglobin content of a voxel, so a high R2* suggests poorly
oxygenated blood; but R2* also rises with blood volume and falls where there is no blood at
all, which is why R2* alone correlates poorly with tissue pO2 (Baudelet & Gallez, Magn Reson
Med 2002, doi:10.1002/mrm.10318). What this module calls hypoxic follows oxygen-enhanced MRI
(OE-MRI; O'Connor et al., Cancer Res 2016;76:787-795, doi:10.1158/0008-5472.CAN-15-2062;
O'Connor, Robinson & Waterton, Br J Radiol 2019;92:20180642, doi:10.1259/bjr.20180642):
hypoxic tissue is *perfused* (it enhances on DCE, so oxygen and contrast reach it) and
*oxygen-refractory* (breathing oxygen does not change its relaxation rate, because the
extra oxygen is consumed before it raises tissue pO2). Poorly perfused tissue is not called
hypoxic: OE-MRI cannot tell hypoxic from necrotic tissue there.

* **Perfusion gating** (:func:`hypoxia_classes`): R2* and perfusion (Ktrans, vp or Fp from
  DCE) give descriptive classes (high or low R2*, perfused or not) and never call a voxel
  hypoxic on their own.
* **Oxygen challenge** (:func:`oxygen_challenge`): ``ΔR2* = R2*(O2 or carbogen) - R2*(air)``
  on co-registered acquisitions; a significant decrease marks voxels whose haemoglobin
  could still be oxygenated (BOLD response to carbogen in human tumours: Taylor et al., J
  Magn Reson Imaging 2001;14:156-163). Given to :func:`hypoxia_classes` with a perfusion
  map, perfused voxels that respond are ``PERFUSED_OXYGEN_ENHANCING`` and perfused voxels
  that do not are ``HYPOXIC_PERFUSED_REFRACTORY``: O'Connor's perfused-Oxy-R logic, there
  with ΔR1 of OE-MRI, here with the BOLD ΔR2* (tumorscope's transfer; ΔR1 maps work the
  same way through ``responding``). Significance uses the fits' standard errors,
  ``|ΔR2*| > z·sqrt(se_air² + se_o2²)``, rather than a fixed cut-off, so the call adapts
  to SNR; without standard errors a fixed threshold must be given.

Thresholds are the user's (they depend on field strength, tumour type and sequence); nothing
here pretends to a universal hypoxia cut-off.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from ..errors import DataError, FitError

__all__ = [
    "HypoxiaClass",
    "OxygenChallenge",
    "hypoxia_classes",
    "hypoxia_table",
    "oxygen_challenge",
]


class HypoxiaClass(IntEnum):
    """Voxel classes of :func:`hypoxia_classes` (stored as uint8).

    Attributes
    ----------
    NORMAL : 0
        R2* at or below the threshold, perfused (or perfusion not given); no oxygen challenge.
    HIGH_R2STAR_PERFUSED : 1
        High R2* with perfusion at or above its threshold (deoxygenated but perfused blood,
        not tested with an oxygen challenge); without a perfusion map: high R2*.
    HIGH_R2STAR_POORLY_PERFUSED : 2
        High R2* with low perfusion. Called ``HYPOXIC_POORLY_PERFUSED`` before issue 24; by
        the OE-MRI definition (O'Connor et al. 2016) poorly perfused tissue is not hypoxic.
    LOW_R2STAR_UNPERFUSED : 3
        Low R2* and low perfusion (no blood signal: necrosis or fluid; not called hypoxic).
    HYPOXIC_PERFUSED_REFRACTORY : 4
        Perfused and oxygen-refractory (no significant decrease of R2* under the oxygen
        challenge): hypoxic, as OE-MRI defines it. Only with an oxygen challenge.
    PERFUSED_OXYGEN_ENHANCING : 5
        Perfused and responding to the oxygen challenge (normoxic). Only with a challenge.
    UNKNOWN : 255
        Missing (NaN) R2*, perfusion or oxygen response, or outside the mask.
    """

    NORMAL = 0
    HIGH_R2STAR_PERFUSED = 1
    HIGH_R2STAR_POORLY_PERFUSED = 2
    LOW_R2STAR_UNPERFUSED = 3
    HYPOXIC_PERFUSED_REFRACTORY = 4
    PERFUSED_OXYGEN_ENHANCING = 5
    UNKNOWN = 255


#: Classes that hold perfused voxels whose oxygenation was not tested: a region with any of
#: them has no assessable hypoxic volume (NaN), not a volume of 0.
_UNTESTED_PERFUSED = (HypoxiaClass.NORMAL, HypoxiaClass.HIGH_R2STAR_PERFUSED)


def _arr(x: npt.ArrayLike, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim == 0:
        raise DataError("expected a map, got a scalar", field=name)
    return a


def _same_shape(ref: np.ndarray, other: np.ndarray, name: str) -> None:
    if other.shape != ref.shape:
        raise DataError(
            f"{name} shape {other.shape} does not match the R2* map {ref.shape}; "
            "maps must be on one grid",
            field=name,
        )


def _positive_threshold(value: float, name: str) -> float:
    v = float(value)
    if not np.isfinite(v) or v < 0:
        raise FitError(f"must be a finite number >= 0, got {value!r}", field=name)
    return v


def hypoxia_classes(
    r2star_per_s: npt.ArrayLike,
    *,
    r2star_threshold_per_s: float,
    perfusion: npt.ArrayLike | None = None,
    perfusion_threshold: float | None = None,
    mask: npt.ArrayLike | None = None,
    challenge: OxygenChallenge | None = None,
) -> np.ndarray:
    """Classify voxels by R2*, perfusion and the oxygen challenge (see :class:`HypoxiaClass`).

    Hypoxic means perfused and oxygen-refractory (OE-MRI, O'Connor et al., Cancer Res 2016):
    only a ``challenge`` together with a ``perfusion`` map calls voxels hypoxic. Without a
    challenge the classes describe R2* and perfusion and none is hypoxic.

    Parameters
    ----------
    r2star_per_s : array_like, shape (X, Y, Z)
        R2* map in 1/s (e.g. ``T2Star(...).fit(...)["R2star"]``).
    r2star_threshold_per_s : float
        R2* above which a voxel counts as high (1/s).
    perfusion : array_like, shape (X, Y, Z), optional
        A perfusion map on the same grid (``Ktrans`` in 1/min, ``vp`` or ``Fp``).
    perfusion_threshold : float, optional
        Perfusion below which a voxel counts as poorly perfused (same unit as ``perfusion``);
        required with ``perfusion``.
    mask : array_like of bool, optional
    challenge : OxygenChallenge, optional
        :func:`oxygen_challenge` on the same grid (needs ``perfusion``). Perfused voxels then
        become ``PERFUSED_OXYGEN_ENHANCING`` (``responding``) or
        ``HYPOXIC_PERFUSED_REFRACTORY`` (not responding, including a significant increase),
        whatever their R2*; voxels without a finite ΔR2* are ``UNKNOWN``. Poorly perfused
        voxels keep their R2* classes.

    Returns
    -------
    ndarray of uint8, shape (X, Y, Z)
        :class:`HypoxiaClass` codes. Without ``perfusion`` only ``NORMAL``,
        ``HIGH_R2STAR_PERFUSED`` (read: high R2*, perfusion unknown) and ``UNKNOWN`` occur.
    """
    r2 = _arr(r2star_per_s, "r2star")
    thr = _positive_threshold(r2star_threshold_per_s, "r2star_threshold_per_s")
    out = np.full(r2.shape, HypoxiaClass.UNKNOWN, dtype=np.uint8)
    valid = np.isfinite(r2)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        _same_shape(r2, m, "mask")
        valid &= m
    high = r2 > thr
    if perfusion is None:
        if challenge is not None:
            raise FitError(
                "an oxygen challenge needs a perfusion map: hypoxia is called only in "
                "perfused tissue",
                field="perfusion",
            )
        if perfusion_threshold is not None:
            raise FitError("perfusion_threshold given without a perfusion map", field="perfusion")
        out[valid & ~high] = HypoxiaClass.NORMAL
        out[valid & high] = HypoxiaClass.HIGH_R2STAR_PERFUSED
        return out
    if perfusion_threshold is None:
        raise FitError(
            "a perfusion map needs perfusion_threshold (same unit as the map)",
            field="perfusion_threshold",
        )
    perf = _arr(perfusion, "perfusion")
    _same_shape(r2, perf, "perfusion")
    pthr = _positive_threshold(perfusion_threshold, "perfusion_threshold")
    valid &= np.isfinite(perf)
    low_p = perf < pthr
    out[valid & high & low_p] = HypoxiaClass.HIGH_R2STAR_POORLY_PERFUSED
    out[valid & ~high & low_p] = HypoxiaClass.LOW_R2STAR_UNPERFUSED
    if challenge is None:
        out[valid & ~high & ~low_p] = HypoxiaClass.NORMAL
        out[valid & high & ~low_p] = HypoxiaClass.HIGH_R2STAR_PERFUSED
        return out
    _same_shape(r2, np.asarray(challenge.delta_r2star_per_s), "challenge")
    tested = valid & ~low_p & np.isfinite(challenge.delta_r2star_per_s)
    responding = np.asarray(challenge.responding, dtype=bool)
    out[tested & responding] = HypoxiaClass.PERFUSED_OXYGEN_ENHANCING
    out[tested & ~responding] = HypoxiaClass.HYPOXIC_PERFUSED_REFRACTORY
    return out


def hypoxia_table(
    classes: npt.ArrayLike, labels: npt.ArrayLike, *, voxel_volume_ml: float = 1.0
) -> dict[str, np.ndarray]:
    """Per-region composition of :func:`hypoxia_classes`, as columns (one row per label ≥ 1).

    Parameters
    ----------
    classes : array_like of uint8, shape (X, Y, Z)
        Output of :func:`hypoxia_classes`.
    labels : array_like of int, same shape
        Region (lesion) labels, 0 = background.
    voxel_volume_ml : float, default 1

    Returns
    -------
    dict of str to ndarray
        ``label``, ``n_voxels``, ``n_classified`` (not ``UNKNOWN``), ``volume_ml`` and, for
        every class but ``UNKNOWN``, ``fraction_<name>`` (of the classified voxels; NaN when
        none) and ``hypoxic_volume_ml`` (``HYPOXIC_PERFUSED_REFRACTORY`` voxels × voxel
        volume; NaN when the region holds perfused voxels classified without an oxygen
        challenge, ``NORMAL`` or ``HIGH_R2STAR_PERFUSED``: their hypoxia was not assessed).
    """
    c = np.asarray(classes)
    lab = np.asarray(labels)
    if lab.shape != c.shape:
        raise DataError(
            f"labels shape {lab.shape} does not match the class map {c.shape}", field="labels"
        )
    if not np.isfinite(voxel_volume_ml) or voxel_volume_ml <= 0:
        raise FitError(f"must be > 0, got {voxel_volume_ml!r}", field="voxel_volume_ml")
    ids = np.unique(lab[lab > 0]).astype(np.int64)
    known = [k for k in HypoxiaClass if k is not HypoxiaClass.UNKNOWN]
    out: dict[str, np.ndarray] = {
        "label": ids,
        "n_voxels": np.zeros(ids.size, np.int64),
        "n_classified": np.zeros(ids.size, np.int64),
        "volume_ml": np.zeros(ids.size),
        **{f"fraction_{k.name.lower()}": np.full(ids.size, np.nan) for k in known},
        "hypoxic_volume_ml": np.zeros(ids.size),
    }
    for j, i in enumerate(ids):
        v = c[lab == i]
        classified = v[v != HypoxiaClass.UNKNOWN]
        out["n_voxels"][j] = v.size
        out["n_classified"][j] = classified.size
        out["volume_ml"][j] = v.size * voxel_volume_ml
        if classified.size:
            for k in known:
                out[f"fraction_{k.name.lower()}"][j] = float(np.mean(classified == k))
        untested = np.isin(v, _UNTESTED_PERFUSED).any()
        out["hypoxic_volume_ml"][j] = (
            np.nan
            if untested
            else float(np.sum(v == HypoxiaClass.HYPOXIC_PERFUSED_REFRACTORY)) * voxel_volume_ml
        )
    return out


@dataclass(frozen=True)
class OxygenChallenge:
    """Result of :func:`oxygen_challenge`.

    Attributes
    ----------
    delta_r2star_per_s : ndarray, shape (X, Y, Z)
        ``R2*(gas) - R2*(air)`` in 1/s.
    z : ndarray, shape (X, Y, Z)
        ``ΔR2* / sqrt(se_air² + se_gas²)`` (NaN without standard errors).
    responding : ndarray of bool
        Significant decrease of R2* (oxygenation of haemoglobin).
    increasing : ndarray of bool
        Significant increase (e.g. vasoconstriction or steal).
    threshold_per_s : ndarray or float
        The |ΔR2*| threshold that was applied (per voxel when from standard errors).
    """

    delta_r2star_per_s: np.ndarray
    z: np.ndarray
    responding: np.ndarray
    increasing: np.ndarray
    threshold_per_s: np.ndarray | float


def oxygen_challenge(
    r2star_air_per_s: npt.ArrayLike,
    r2star_gas_per_s: npt.ArrayLike,
    *,
    stderr_air_per_s: npt.ArrayLike | None = None,
    stderr_gas_per_s: npt.ArrayLike | None = None,
    z: float = 1.96,
    threshold_per_s: float | None = None,
) -> OxygenChallenge:
    """ΔR2* under an oxygen (or carbogen) challenge, with a per-voxel significance call.

    A significant decrease of R2* (``responding``) is the BOLD response to carbogen that
    Taylor et al. (J Magn Reson Imaging 2001;14:156-163) measured in human tumours. That
    perfused tissue *without* a response is hypoxic is the OE-MRI definition of O'Connor et
    al. (Cancer Res 2016, with ΔR1), not Taylor's; :func:`hypoxia_classes` applies it with
    ``challenge=``.

    Parameters
    ----------
    r2star_air_per_s, r2star_gas_per_s : array_like, same shape
        R2* maps (1/s) breathing air and breathing the gas, co-registered.
    stderr_air_per_s, stderr_gas_per_s : array_like, optional
        Standard errors of the two maps (``FitResult.stderr["R2star"]``). With both, a change
        is significant when ``|ΔR2*| > z * sqrt(se_air² + se_gas²)``.
    z : float, default 1.96
        Two-sided normal quantile (1.96: 5 % per voxel).
    threshold_per_s : float, optional
        Fixed |ΔR2*| threshold, used when standard errors are not given (then required).

    Returns
    -------
    OxygenChallenge
    """
    air = _arr(r2star_air_per_s, "r2star_air")
    gas = _arr(r2star_gas_per_s, "r2star_gas")
    _same_shape(air, gas, "r2star_gas")
    delta = gas - air
    if (stderr_air_per_s is None) != (stderr_gas_per_s is None):
        raise FitError(
            "give the standard errors of both maps or of neither", field="stderr_gas_per_s"
        )
    if stderr_air_per_s is not None and stderr_gas_per_s is not None:
        if threshold_per_s is not None:
            raise FitError(
                "give standard errors or a fixed threshold, not both", field="threshold_per_s"
            )
        zq = _positive_threshold(z, "z")
        se_a = _arr(stderr_air_per_s, "stderr_air")
        se_g = _arr(stderr_gas_per_s, "stderr_gas")
        _same_shape(air, se_a, "stderr_air")
        _same_shape(air, se_g, "stderr_gas")
        se = np.sqrt(se_a**2 + se_g**2)
        with np.errstate(divide="ignore", invalid="ignore"):
            zmap = np.where(se > 0, delta / se, np.nan)
        thr: np.ndarray | float = zq * se
        responding = zmap < -zq
        increasing = zmap > zq
    else:
        if threshold_per_s is None:
            raise FitError(
                "without standard errors a fixed |ΔR2*| threshold (1/s) is required",
                field="threshold_per_s",
            )
        t = _positive_threshold(threshold_per_s, "threshold_per_s")
        zmap = np.full(delta.shape, np.nan)
        thr = t
        responding = delta < -t
        increasing = delta > t
    finite = np.isfinite(delta)
    return OxygenChallenge(
        delta_r2star_per_s=delta,
        z=zmap,
        responding=responding & finite,
        increasing=increasing & finite,
        threshold_per_s=thr,
    )
