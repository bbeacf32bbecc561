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
avoided. The sums over the spheres are screened by FFT on the candidates' box and the few
best candidates re-summed exactly as ``scipy.ndimage.correlate`` sums them, so the choice is
that of correlating over the whole volume (tested, ties included) at ~1/400 of the cost.
Quality check (:class:`ReferenceRegion.problems`): the sphere must fit wholly in the
liver (else the mask is too small: a manual VOI or the blood pool is needed), its coefficient
of variation must not exceed ``max_cv`` (default 0.30, a decision: normal liver SUL has CV
≈ 0.10-0.15 in PERCIST's data; a larger one means lesions or noise), and between two scans
PERCIST's comparability rule (:func:`comparable_references`): the liver SULmean may differ
by less than 20 % and less than 0.3 SUL units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

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


#: Candidates whose screened (FFT) CV² is within this of the smallest are re-summed exactly.
_SCREEN_TOL = 1e-8

#: Candidates re-summed per block in the exact pass (bounds its memory: block × ball size).
_EXACT_BLOCK = 256


def _bbox(m: np.ndarray, margin: int) -> tuple[list[int], tuple[slice, ...]]:
    """Lower corner and slices of a non-empty mask's bounding box widened by ``margin``
    voxels, cut at the volume's edges."""
    lo, hi = [], []
    for ax, n in enumerate(m.shape):
        hit = np.flatnonzero(m.any(axis=tuple(a for a in range(m.ndim) if a != ax)))
        lo.append(max(int(hit[0]) - margin, 0))
        hi.append(min(int(hit[-1]) + margin + 1, n))
    return lo, tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))


def _sphere_cv(w: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """Coefficient of variation from the sphere sums (inf where it is not defined)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = s1 / w
        var = np.maximum(s2 / w - mu * mu, 0.0)
        cv = np.sqrt(var) / mu
    return np.asarray(np.where((w > 0) & (mu > 0), cv, np.inf))


def _exact_sums(arrays: list[np.ndarray], centres: np.ndarray, ball: np.ndarray) -> np.ndarray:
    """Sums of each (zero-padded) array over the ball at each centre, in the order and
    arithmetic of ``scipy.ndimage.correlate`` (``mode="constant"``): the ball's voxels in C
    order, added one at a time from 0 (``cumsum``), so the results are the same numbers."""
    half = np.array(ball.shape) // 2
    offs = np.argwhere(ball) - half  # C order, like ndimage's footprint
    flat_offs = np.ravel_multi_index((offs + half).T, tuple(np.array(arrays[0].shape)))
    out = np.empty((len(arrays), len(centres)))
    # a centre's ball starts at (centre - half) + half = centre in the padded arrays
    base = np.ravel_multi_index(centres.T, arrays[0].shape)
    flats = [a.ravel() for a in arrays]
    for s in range(0, len(centres), _EXACT_BLOCK):
        idx = base[s : s + _EXACT_BLOCK, None] + flat_offs[None, :]
        for k, f in enumerate(flats):
            out[k, s : s + _EXACT_BLOCK] = np.cumsum(f[idx], axis=1)[:, -1]
    return out


def _fft_sums(
    a: np.ndarray, ball_f: np.ndarray, fshape: list[int], ball_shape: tuple[int, ...], at: Any
) -> np.ndarray:
    """``scipy.ndimage.correlate(a, ball, mode="constant")`` of a centrally symmetric ball by
    FFT (equal to it up to rounding, ~1e-13 relative), at the voxel indices ``at`` (a tuple
    of index arrays). A circular convolution of length ``fshape`` per axis: it is the linear
    one at every centre whose ball, wrapped, reaches no voxel of ``a`` it should not — where
    the transform is at least ``a.shape + ball_shape - 1`` long, or the centres lie at least
    the ball's half-width from both ends of the axis (:func:`_most_homogeneous` chooses)."""
    from scipy import fft

    full = fft.irfftn(fft.rfftn(a, fshape) * ball_f, fshape)
    h = [b // 2 for b in ball_shape]
    return np.asarray(full[tuple((c + hh) % f for c, hh, f in zip(at, h, fshape, strict=True))])


def _most_homogeneous_reference(
    img: np.ndarray, m: np.ndarray, cand: np.ndarray, ball: np.ndarray
) -> tuple[int, ...]:
    """The search as first written (the three sums correlated over the whole volume by
    :func:`scipy.ndimage.correlate`): the reference of :func:`_most_homogeneous`'s tests and
    benchmark (``benchmarks/bench_petmet.py``)."""
    from scipy import ndimage

    finite = np.isfinite(img)
    x = np.where(finite, img, 0.0)
    k = ball.astype(np.float64)
    w = ndimage.correlate((finite & m).astype(np.float64), k, mode="constant")
    s1 = ndimage.correlate(np.where(m, x, 0.0), k, mode="constant")
    s2 = ndimage.correlate(np.where(m, x * x, 0.0), k, mode="constant")
    cv = np.where(cand, _sphere_cv(w, s1, s2), np.inf)
    return tuple(int(a) for a in np.unravel_index(int(np.argmin(cv)), cv.shape))


def _most_homogeneous(
    img: np.ndarray, m: np.ndarray, cand: np.ndarray, ball: np.ndarray
) -> tuple[int, ...]:
    """Voxel index of the candidate centre whose ball (over the masked, finite image) has the
    lowest coefficient of variation: the first one in C order on ties, ``(0, 0, 0)`` if no
    candidate has a defined CV.

    The same choice as correlating the three sums (weights, sum, sum of squares) over the
    whole volume with :func:`scipy.ndimage.correlate` (``_most_homogeneous_reference``), at a
    fraction of the cost: (1) the sums are computed by FFT on the box of the candidates
    (plus the ball's half-width, so every voxel a candidate's ball covers is in it), (2)
    the candidates whose FFT CV² lies within ``_SCREEN_TOL`` of the smallest (and any whose
    validity the rounding could change) are re-summed exactly as ``ndimage`` sums them, and
    the minimum is taken over those exact values. The FFT's rounding (~1e-13 of CV²) is far
    below ``_SCREEN_TOL``, so the exact minimiser and every tie are always re-summed.
    """
    from scipy import fft

    half = np.array(ball.shape) // 2
    idx = np.nonzero(cand)
    lo = np.array([max(int(i.min()) - h, 0) for i, h in zip(idx, half, strict=True)])
    hi = np.array(
        [min(int(i.max()) + h + 1, n) for i, h, n in zip(idx, half, img.shape, strict=True)]
    )
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    x, mb = img[box], m[box]
    finite = np.isfinite(x)
    x = np.where(finite, x, 0.0)
    arrays = [
        (finite & mb).astype(np.float64),
        np.where(mb, x, 0.0),
        np.where(mb, x * x, 0.0),
    ]
    centres = np.argwhere(cand[box])  # C order, as argmin over the volume scans it
    # along an axis where the box was not cut by the volume's edges, every candidate lies at
    # least the ball's half-width from both ends of the box: a circular convolution of the
    # box's own length wraps no voxel into a candidate's sum (zero padding needed only along
    # cut axes, where a ball may reach past the box)
    cut = [
        int(i.min()) - h < 0 or int(i.max()) + h + 1 > n
        for i, h, n in zip(idx, half, img.shape, strict=True)
    ]
    shape = [n + (b - 1 if c else 0) for n, b, c in zip(x.shape, ball.shape, cut, strict=True)]
    fshape = [fft.next_fast_len(n, True) for n in shape]
    ball_f = fft.rfftn(ball.astype(np.float64), fshape)
    sel = tuple(centres.T)
    w, s1, s2 = (_fft_sums(a, ball_f, fshape, ball.shape, sel) for a in arrays)
    wr = np.rint(w)  # the weights are counts
    scale1 = max(float(np.abs(s1).max()), 1e-300)
    clear = (wr > 0) & (s1 > 1e-9 * scale1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = s1 / wr
        cv2 = (s2 / wr - mu * mu) / (mu * mu)
    unsure = ~clear | (np.abs(w - wr) > 1e-6)
    if clear.any():
        best = float(cv2[clear].min())
        keep = unsure | (clear & (cv2 <= best + _SCREEN_TOL * (1.0 + abs(best))))
    else:
        keep = np.ones(len(centres), bool)
    which = np.flatnonzero(keep)
    padded = [np.pad(a, [(h, h) for h in half]) for a in arrays]
    ew, es1, es2 = _exact_sums(padded, centres[which], ball)
    cv = _sphere_cv(ew, es1, es2)
    if not np.isfinite(cv).any():
        return (0, 0, 0)
    j = int(which[int(np.argmin(cv))])
    return tuple(int(c + o) for c, o in zip(centres[j], lo, strict=True))


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
        from scipy import ndimage

        # the search on the liver's bounding box widened by one voxel (cut at the volume's
        # edges): every voxel outside the box is background, and the nearest background
        # voxel of a liver voxel is never outside it (clamping a point outside the box onto
        # it brings it nearer and keeps it in the background layer), so the distances, and
        # all that follows, are those of the whole volume
        lo, box = _bbox(m, 1)
        full_m = m
        img, m = img[box], m[box]
        dist = ndimage.distance_transform_edt(m, sampling=vox)
        cand = dist >= r
        if world_x_mm is not None:
            wx = np.broadcast_to(np.asarray(world_x_mm, dtype=np.float64), full_m.shape)[box]
            cand &= wx >= float(np.median(wx[m]))
        if not cand.any():
            problems.append(
                f"no {diameter_mm:g} mm sphere fits in the liver mask (deepest point "
                f"{2 * float(dist.max()):.1f} mm across): draw the reference VOI or use the "
                "blood pool"
            )
            cand = dist >= dist.max()
        ball = sphere_mask(
            tuple(2 * math.ceil(r / v) + 1 for v in vox),
            tuple(float(math.ceil(r / v)) for v in vox),
            r,
            vox,
        )
        at = _most_homogeneous(img, m, cand, ball)
        region = sphere_mask(m.shape, at, r, vox) & m
        vals = img[region]
        centre = (int(at[0] + lo[0]), int(at[1] + lo[1]), int(at[2] + lo[2]))
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
