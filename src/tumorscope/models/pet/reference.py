"""Reference uptake: the liver (and blood-pool) SUL that PERCIST scales its thresholds by.

PERCIST 1.0 (Wahl et al., J Nucl Med 2009;50:122S-150S; practical guide O JH, Lodge MA,
Wahl RL, Radiology 2016;280:576-584) measures normal-liver uptake in a 3 cm diameter sphere
in the right lobe and, when the liver is abnormal, the blood pool in a 1 cm diameter, 2 cm
long cylinder in the descending thoracic aorta. This module gives the liver sphere from a
liver region of the lesion map (:func:`liver_reference`), either the whole region (when the
user drew the reference VOI) or an automatic sphere, and the checks PERCIST asks of it.

Automatic sphere (a decision where PERCIST leaves placement to the reader): the centre is
searched over the voxels of the liver mask at least 15 mm (the sphere's radius) inside it, in
the patient-right half of the liver (RAS world x at or above the median x of the liver's
voxels, when the caller gives the voxels' world x), and the candidate with the lowest coefficient of
variation of uptake is taken — the most homogeneous, so a liver metastasis or a hot vessel is
avoided. Quality check (:class:`ReferenceRegion.problems`): the sphere must fit wholly in the
liver (else the mask is too small: a manual VOI or the blood pool is needed), its coefficient
of variation must not exceed ``max_cv`` (default 0.30, a decision: normal liver SUL has CV
≈ 0.10-0.15 in PERCIST's data; a larger one means lesions or noise), and between two scans
PERCIST's comparability rule (:func:`comparable_references`): the liver SULmean may differ
by less than 20 % and less than 0.3 SUL units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ...errors import DataError

__all__ = [
    "ReferenceRegion",
    "comparable_references",
    "liver_reference",
    "percist_threshold",
    "sphere_mask",
]


@dataclass(frozen=True)
class ReferenceRegion:
    """A reference region's uptake: mean, SD, voxels, centre and quality problems."""

    mean: float
    sd: float
    n_voxels: int
    volume_ml: float
    centre: tuple[int, int, int] | None
    method: str
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when the quality check found nothing."""
        return not self.problems

    @property
    def cv(self) -> float:
        """Coefficient of variation."""
        return self.sd / self.mean if self.mean > 0 else math.inf


def percist_threshold(mean: float, sd: float, *, blood_pool: bool = False) -> float:
    """PERCIST measurability threshold: 1.5 × liver mean + 2 SD (2.0 × blood pool + 2 SD)."""
    if not (math.isfinite(mean) and math.isfinite(sd)) or mean <= 0 or sd < 0:
        raise DataError(f"reference mean {mean!r} / SD {sd!r} are not usable", field="reference")
    return (2.0 if blood_pool else 1.5) * mean + 2.0 * sd


def sphere_mask(
    shape: tuple[int, ...], centre: tuple[float, ...], radius_mm: float, voxel_mm: tuple[float, ...]
) -> npt.NDArray[np.bool_]:
    """Voxels whose centres lie within ``radius_mm`` of ``centre`` (voxel indices)."""
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    d2 = sum(((g - c) * v) ** 2 for g, c, v in zip(grids, centre, voxel_mm, strict=True))
    return np.asarray(d2 <= radius_mm * radius_mm)


def liver_reference(
    image: npt.ArrayLike,
    liver: npt.ArrayLike,
    voxel_mm: tuple[float, float, float],
    *,
    automatic: bool = True,
    diameter_mm: float = 30.0,
    world_x_mm: npt.ArrayLike | None = None,
    max_cv: float = 0.30,
) -> ReferenceRegion:
    """Liver reference uptake from a liver mask.

    Parameters
    ----------
    image : array
        SUL (or SUV) volume.
    liver : array of bool
        The liver (``automatic``) or the reference VOI itself (``automatic=False``).
    voxel_mm : tuple
    automatic : bool, default True
        Place a ``diameter_mm`` sphere in the mask (module docstring); else use the whole mask.
    world_x_mm : array, optional
        RAS+ world x of every voxel (mm; patient right is +x); the sphere is then placed in
        the right half of the liver. None searches the whole liver.
    max_cv : float, default 0.30
        Largest coefficient of variation the quality check accepts.
    """
    img = np.asarray(image, dtype=np.float64)
    m = np.asarray(liver, dtype=bool)
    if img.ndim != 3 or m.shape != img.shape:
        raise DataError(
            f"expected a 3-D image and a mask of the same shape, got {img.shape} and {m.shape}",
            field="liver",
        )
    if not m.any():
        raise DataError("the liver mask is empty", field="liver")
    vox = tuple(float(v) for v in voxel_mm)
    vvol = float(np.prod(vox)) / 1000.0
    problems: list[str] = []
    if not automatic:
        vals = img[m]
        region = m
        centre = None
        method = "mask"
    else:
        r = diameter_mm / 2.0
        dist = ndimage.distance_transform_edt(m, sampling=vox)
        cand = dist >= r
        if world_x_mm is not None:
            wx = np.broadcast_to(np.asarray(world_x_mm, dtype=np.float64), m.shape)
            cand &= wx >= float(np.median(wx[m]))
        if not cand.any():
            problems.append(
                f"no {diameter_mm:g} mm sphere fits in the liver mask (deepest point "
                f"{2 * float(dist.max()):.1f} mm across): draw the reference VOI or use the "
                "blood pool"
            )
            cand = dist >= dist.max()
        finite = np.isfinite(img)
        x = np.where(finite, img, 0.0)
        ball = sphere_mask(
            tuple(2 * math.ceil(r / v) + 1 for v in vox),
            tuple(float(math.ceil(r / v)) for v in vox),
            r,
            vox,
        ).astype(np.float64)
        w = ndimage.correlate((finite & m).astype(np.float64), ball, mode="constant")
        s1 = ndimage.correlate(np.where(m, x, 0.0), ball, mode="constant")
        s2 = ndimage.correlate(np.where(m, x * x, 0.0), ball, mode="constant")
        with np.errstate(invalid="ignore", divide="ignore"):
            mu = s1 / w
            var = np.maximum(s2 / w - mu * mu, 0.0)
            cv = np.sqrt(var) / mu
        cv = np.where(cand & (w > 0) & (mu > 0), cv, np.inf)
        at = np.unravel_index(int(np.argmin(cv)), cv.shape)
        centre = (int(at[0]), int(at[1]), int(at[2]))
        region = sphere_mask(m.shape, centre, r, vox) & m
        vals = img[region]
        method = f"automatic {diameter_mm:g} mm sphere"
    vals = vals[np.isfinite(vals)]
    if vals.size < 2:
        raise DataError("fewer than 2 finite voxels in the reference region", field="liver")
    mean = float(vals.mean())
    sd = float(vals.std(ddof=1))
    if mean <= 0:
        problems.append(f"reference mean {mean:.3g} is not positive")
    elif sd / mean > max_cv:
        problems.append(
            f"reference uptake is inhomogeneous (CV {sd / mean:.2f} > {max_cv:.2f}): lesion or "
            "artefact in the region?"
        )
    return ReferenceRegion(
        mean=mean,
        sd=sd,
        n_voxels=int(region.sum()),
        volume_ml=float(region.sum()) * vvol,
        centre=centre,
        method=method,
        problems=tuple(problems),
    )


def comparable_references(baseline_mean: float, followup_mean: float) -> tuple[bool, str]:
    """PERCIST: two scans are comparable when the liver SULmean differs < 20 % and < 0.3.

    Returns the verdict and a sentence for the record.
    """
    d = followup_mean - baseline_mean
    rel = abs(d) / baseline_mean * 100.0 if baseline_mean > 0 else math.inf
    ok = rel < 20.0 and abs(d) < 0.3
    return ok, (
        f"liver SULmean {baseline_mean:.2f} → {followup_mean:.2f} ({rel:.0f} %, "
        f"{abs(d):.2f} SUL units): {'comparable' if ok else 'not comparable (PERCIST: < 20 % and < 0.3)'}"
    )
