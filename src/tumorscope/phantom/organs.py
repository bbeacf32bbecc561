"""The phantom's organ-watch series: MRE, MOLLI (native, post-contrast), T2-prep bSSFP.

Two subjects get them at every visit (``ORGAN_EVENTS``): the ``stable`` subject develops
myocarditis (myocardial T1 and T2 rise at visit index 2, with ECV; back to normal at the
last visit) and the ``mixed`` subject hepatitis (liver stiffness rising from visit index 2).
Their organ label map is written beside the lesion map
(``<prefix>_organs.nii.gz`` + ``_organs.tsv``: ``label``, ``organ``; see
``docs/organ-watch.md``): a short-axis myocardial ring with its blood pool, and a liver
region (lesion voxels excluded).

Signals, all with known truth (``derivatives/truth``):

* MRE (``anat/<prefix>_MRE``): wrapped phase (rad, float32) of a 60 Hz plane shear wave of
  the liver's stiffness over the whole field (a homogeneous medium: the liver's wave), one
  encoding direction, 4 time offsets, 0.5 rad/µm, 5 µm amplitude, a background phase and
  Gaussian phase noise of 0.02 rad;
* MOLLI: the pulse-train Look-Locker recovery (ideal inversion, spoiled readouts every
  3 ms at 4°), ``|M_ss - (M0 + M_ss)(E1 cos α)^(TI/TR)| sin α`` at 8 effective inversion
  times, Rician noise; post-contrast with ``R1 = R1_native + ECV/(1 - Hct) ΔR1_blood``
  (myocardium), ``+ ΔR1_blood`` (blood), the haematocrit in the sidecar (``Hematocrit``);
* T2-prep bSSFP (``anat/<prefix>_T2prep``): ``M0 exp(-TE_prep/T2)`` at 0, 25, 55 ms
  (sidecar ``T2PrepDuration``, s).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .signals import rician

__all__ = ["ORGAN_EVENTS", "ORGAN_LABELS", "organ_series"]

#: Organ label → name of the phantom's organ map.
ORGAN_LABELS: dict[int, str] = {1: "myocardium", 2: "blood_pool", 3: "liver"}

MRE_FREQ_HZ, MRE_OFFSETS, MRE_EFF_RAD_PER_UM, MRE_AMP_UM = 60.0, 4, 0.5, 5.0
MOLLI_TI_MS = (100.0, 180.0, 1100.0, 1180.0, 2100.0, 2180.0, 3100.0, 4100.0)
LL_TR_MS, LL_ALPHA_DEG = 3.0, 4.0
T2PREP_MS = (0.0, 25.0, 55.0)
_HEART = (-20.0, -25.0, 7.0, 13.0)  # centre x, y (mm), blood-pool and epicardial radii
_LIVER = (25.0, 8.0, 24.0, 20.0)  # centre x, y, semi-axes (mm)
_DR1_BLOOD = 1.6  # 1/s after contrast


@dataclass(frozen=True)
class OrganEvent:
    """Per-visit organ truth of one subject (one value per visit index)."""

    myo_t1_ms: tuple[float, ...]
    myo_t2_ms: tuple[float, ...]
    myo_ecv: tuple[float, ...]
    liver_kpa: tuple[float, ...]


_NORMAL = OrganEvent((1000.0,) * 4, (50.0,) * 4, (0.25,) * 4, (2.0,) * 4)

#: Subjects (by trajectory) that get the organ series, and their organ truth per visit.
ORGAN_EVENTS: dict[str, OrganEvent] = {
    # myocarditis at visit index 2 (T1 +12 %, T2 +20 %, ECV 0.25 → 0.35), recovering after
    "stable": OrganEvent(
        (1000.0, 1005.0, 1120.0, 1010.0),
        (50.0, 50.5, 60.0, 51.0),
        (0.25, 0.25, 0.35, 0.26),
        (2.0, 2.0, 2.05, 2.0),
    ),
    # hepatitis: liver stiffness 2.0 → 3.2 → 3.6 kPa from visit index 2
    "mixed": OrganEvent(
        (1000.0, 1002.0, 998.0, 1003.0),
        (50.0, 50.2, 49.8, 50.1),
        (0.25, 0.25, 0.25, 0.25),
        (2.0, 2.05, 3.2, 3.6),
    ),
}

_BLOOD_T1_MS, _BLOOD_T2_MS = 1600.0, 200.0


def _ll_signal(t1_ms: np.ndarray, m0: np.ndarray) -> np.ndarray:
    """Look-Locker recovery under the pulse train at the MOLLI inversion times."""
    a = np.deg2rad(LL_ALPHA_DEG)
    e1 = np.exp(-LL_TR_MS / t1_ms)[..., None]
    q = e1 * np.cos(a)
    mss = m0[..., None] * (1 - e1) / (1 - q)
    n = np.asarray(MOLLI_TI_MS) / LL_TR_MS
    return np.abs(mss - (m0[..., None] + mss) * q**n) * np.sin(a)


def organ_series(
    trajectory: str,
    vi: int,
    x: np.ndarray,
    y: np.ndarray,
    body: np.ndarray,
    lesions: np.ndarray,
    t1: np.ndarray,
    t2: np.ndarray,
    m0: np.ndarray,
    hematocrit: float,
    sigma: float,
    rng: np.random.Generator,
) -> dict[str, tuple[np.ndarray, dict[str, Any] | None]]:
    """The organ series of one visit (``{"datatype/suffix": (image, sidecar)}``), the organ
    map (``"organs": (labels, None)``) and the truth (``"truth:<name>"``); empty for a
    subject without organ series. ``t1``, ``t2``, ``m0``: the phantom's tissue maps."""
    ev = ORGAN_EVENTS.get(trajectory)
    if ev is None:
        return {}
    vi = min(vi, len(ev.liver_kpa) - 1)
    cx, cy, r_in, r_out = _HEART
    r = np.hypot(x - cx, y - cy)
    pool = (r <= r_in) & body
    myo = (r > r_in) & (r <= r_out) & body
    lx, ly, ax, ay = _LIVER
    liver = (((x - lx) / ax) ** 2 + ((y - ly) / ay) ** 2 <= 1.0) & body & ~myo & ~pool
    free = lesions == 0
    organs = np.zeros(x.shape, np.int16)
    organs[myo & free] = 1
    organs[pool & free] = 2
    organs[liver & free] = 3
    # --- relaxation in the heart
    t1n = np.where(body, t1, 1000.0).astype(float)
    t2n = np.where(body, t2, 50.0).astype(float)
    m0b = np.where(body, m0, 0.0).astype(float)
    t1n[myo], t2n[myo] = ev.myo_t1_ms[vi], ev.myo_t2_ms[vi]
    t1n[pool], t2n[pool] = _BLOOD_T1_MS, _BLOOD_T2_MS
    r1n = 1000.0 / t1n
    r1p = r1n + np.where(body, _DR1_BLOOD * 0.2, 0.0)  # other tissue: small uptake
    r1p[myo] = r1n[myo] + ev.myo_ecv[vi] / (1.0 - hematocrit) * _DR1_BLOOD
    r1p[pool] = r1n[pool] + _DR1_BLOOD
    out: dict[str, tuple[np.ndarray, dict[str, Any] | None]] = {}
    ti_s = [v / 1e3 for v in MOLLI_TI_MS]
    for suffix, r1 in (("MOLLI", r1n), ("ce-gadolinium_MOLLI", r1p)):
        img = np.where(body[..., None], _ll_signal(1000.0 / r1, m0b), 0.0)
        side: dict[str, Any] = {"InversionTime": ti_s, "RepetitionTime": LL_TR_MS / 1e3}
        if suffix.startswith("ce-"):
            side.update(ContrastBolusIngredient="gadobutrol", Hematocrit=hematocrit)
        out[f"anat/{suffix}"] = (rician(img, sigma / 2, rng).astype(np.float32), side)
    te = np.asarray(T2PREP_MS)
    t2p = np.where(body[..., None], m0b[..., None] / 30.0 * np.exp(-te / t2n[..., None]), 0.0)
    out["anat/T2prep"] = (
        rician(t2p, sigma / 30.0, rng).astype(np.float32),
        {"T2PrepDuration": [v / 1e3 for v in T2PREP_MS]},
    )
    # --- MRE: plane shear wave of the liver's stiffness (x, y in mm → m)
    g = ev.liver_kpa[vi] * 1e3
    k = 2 * np.pi * MRE_FREQ_HZ * np.sqrt(1000.0 / g)
    u = MRE_AMP_UM * np.exp(1j * k * (0.8 * x + 0.6 * y) * 1e-3)
    t = np.arange(MRE_OFFSETS) / MRE_OFFSETS
    phase = MRE_EFF_RAD_PER_UM * np.real(u[..., None] * np.exp(2j * np.pi * t)) + 0.5
    phase = phase + rng.normal(0.0, 0.02, phase.shape)
    out["anat/MRE"] = (
        np.angle(np.exp(1j * phase)).astype(np.float32),
        {
            "VibrationFrequency": MRE_FREQ_HZ,
            "PhaseOffsets": MRE_OFFSETS,
            "EncodingDirections": 1,
            "MotionEncodingEfficiency": MRE_EFF_RAD_PER_UM,
            "Units": "rad",
        },
    )
    out["organs"] = (organs, None)
    out["truth:abs_G_liver"] = (np.where(liver, ev.liver_kpa[vi], np.nan).astype(np.float32), None)
    out["truth:T1_native"] = (np.where(body, t1n, np.nan).astype(np.float32), None)
    out["truth:T2_heart"] = (np.where(myo | pool, t2n, np.nan).astype(np.float32), None)
    out["truth:ECV_myocardium"] = (np.where(myo, ev.myo_ecv[vi], np.nan).astype(np.float32), None)
    return out


#: The phantom site's reference ranges (``organ_reference:`` of its study.yaml): the normal
#: values the phantom's healthy organs are drawn at, with plausible spreads. Liver T1 has no
#: reference on purpose (the organ watch then reports no z-score and says so).
ORGAN_REFERENCE: dict[str, dict[str, dict[str, Any]]] = {
    "myocardium": {
        "T1": {"mean": 1000.0, "sd": 40.0, "unit": "ms", "source": "phantom site, MOLLI"},
        "T2": {"mean": 50.0, "sd": 3.0, "unit": "ms", "source": "phantom site, T2-prep bSSFP"},
        "ECV": {"mean": 0.25, "sd": 0.03, "unit": "1", "source": "phantom site"},
    },
    "liver": {"abs_G": {"mean": 2.0, "sd": 0.3, "unit": "kPa", "source": "phantom site, 60 Hz"}},
}


def write_organ_map(ldir: Any, prefix: str, labels: np.ndarray, affine: np.ndarray) -> None:
    """The organ label map and its table beside the lesion map of a visit."""
    from ..volume import Volume

    Volume(labels, affine).to_nifti(ldir / f"{prefix}_organs.nii.gz")
    rows = ["label\torgan"] + [f"{k}\t{v}" for k, v in ORGAN_LABELS.items()]
    (ldir / f"{prefix}_organs.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
