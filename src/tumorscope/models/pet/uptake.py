"""Per-lesion uptake measures on an SUV (or SUL) volume: SUVmax, SUVmean, SULpeak, MTV, TLG.

All functions take a 3-D array of uptake values (SUVbw or SUL, g/mL), a boolean lesion mask
and the voxel size in mm; they read no files.

* **SULpeak** (PERCIST 1.0, Wahl RL et al., J Nucl Med 2009;50:122S-150S): the mean uptake in
  the 1 cm³ sphere (diameter ≈ 1.24 cm) placed where it is highest. The sphere is sampled on
  the voxel grid with partial-volume weights (each voxel weighted by the fraction of it inside
  the sphere, from 5 × 5 × 5 sub-samples), so its volume is 1 mL up to the sub-sampling
  error, and its centre is searched over the voxel centres inside the lesion; the sphere may
  reach outside the lesion mask (it samples the image, as PERCIST's does). Image values
  outside the volume count as missing (the weights are renormalised) — a lesion at the edge of
  the field of view is reported with a warning flag rather than diluted by zeros.
* **MTV** (metabolic tumour volume, mL): voxels of the lesion at or above a threshold: 41 % of
  the lesion's SUVmax (EANM guideline, Boellaard R et al., Eur J Nucl Med Mol Imaging
  2015;42:328-354), a fixed SUV ≥ 2.5, or the PERCIST liver threshold
  ``1.5 × liver SULmean + 2 × liver SD`` (on an SUL volume).
* **TLG** (total lesion glycolysis, g) = MTV × SUVmean inside the MTV.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from ...errors import DataError

__all__ = [
    "PEAK_VOLUME_ML",
    "LesionUptake",
    "lesion_uptake",
    "mtv_ml",
    "peak_kernel",
    "sul_peak",
    "tlg",
]

#: Volume of the PERCIST peak sphere, mL.
PEAK_VOLUME_ML: Final[float] = 1.0

_SUB: Final[int] = 5


def _check(image: npt.ArrayLike, mask: npt.ArrayLike, voxel_mm: tuple[float, ...]):
    img = np.asarray(image, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if img.ndim != 3:
        raise DataError(f"expected a 3-D uptake volume, got shape {img.shape}", field="image")
    if m.shape != img.shape:
        raise DataError(f"mask shape {m.shape} does not match the image {img.shape}", field="mask")
    vox = tuple(float(v) for v in voxel_mm)
    if len(vox) != 3 or not all(math.isfinite(v) and v > 0 for v in vox):
        raise DataError(
            f"expected 3 positive voxel sizes in mm, got {voxel_mm!r}", field="voxel_mm"
        )
    if not m.any():
        raise DataError("the lesion mask is empty", field="mask")
    if not np.isfinite(img[m]).all():
        raise DataError("the uptake volume has NaN/inf inside the lesion", field="image")
    return img, m, vox


def peak_kernel(voxel_mm: tuple[float, float, float], volume_ml: float = PEAK_VOLUME_ML):
    """Partial-volume weights of a sphere of ``volume_ml`` on a grid of ``voxel_mm`` voxels.

    Returns an odd-sized 3-D array whose entries are the fraction of each voxel inside the
    sphere centred on the middle voxel (sum × voxel volume ≈ the sphere volume).
    """
    vox = tuple(float(v) for v in voxel_mm)
    return _peak_kernel((vox[0], vox[1], vox[2]), float(volume_ml)).copy()


@functools.lru_cache(maxsize=16)
def _peak_kernel(voxel_mm: tuple[float, float, float], volume_ml: float) -> np.ndarray:
    """:func:`peak_kernel`, remembered (read-only): a visit's lesions share one (its 5³
    sub-samples per voxel cost a few milliseconds a call)."""
    r = (3.0 * volume_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    half = [math.ceil(r / v + 0.5) for v in voxel_mm]
    offs = (np.arange(_SUB) + 0.5) / _SUB - 0.5
    axes = []
    for h, v in zip(half, voxel_mm, strict=True):
        c = np.arange(-h, h + 1, dtype=np.float64)
        axes.append(((c[:, None] + offs[None, :]) * v).ravel())
    x, y, z = np.meshgrid(*axes, indexing="ij")
    inside = (x * x + y * y + z * z <= r * r).astype(np.float64)
    shape = [2 * h + 1 for h in half]
    inside = inside.reshape(shape[0], _SUB, shape[1], _SUB, shape[2], _SUB)
    out = inside.mean(axis=(1, 3, 5))
    out.setflags(write=False)
    return out


def _fftconvolve_same(a: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``scipy.signal.fftconvolve(a, k, mode="same")`` for real arrays, the same operations
    (padded to the next fast length, ``rfftn`` · ``rfftn``, ``irfftn``, centred crop) so the
    same numbers, without importing :mod:`scipy.signal` (over a second at start-up)."""
    from scipy import fft

    shape = [n + m - 1 for n, m in zip(a.shape, k.shape, strict=True)]
    fshape = [fft.next_fast_len(n, True) for n in shape]
    full = fft.irfftn(fft.rfftn(a, fshape) * fft.rfftn(k, fshape), fshape)
    full = full[tuple(slice(n) for n in shape)]
    start = [(f - n) // 2 for f, n in zip(shape, a.shape, strict=True)]
    return full[tuple(slice(s, s + n) for s, n in zip(start, a.shape, strict=True))]


def _box(m: np.ndarray, margin: list[int]) -> tuple[list[int], tuple[slice, ...]]:
    """The bounding box of a (non-empty) mask widened by ``margin`` voxels per axis, cut at
    the volume's edges: its lower corner and slices."""
    lo, hi = [], []
    for ax, (h, n) in enumerate(zip(margin, m.shape, strict=True)):
        hit = np.flatnonzero(m.any(axis=tuple(a for a in range(m.ndim) if a != ax)))
        lo.append(max(int(hit[0]) - h, 0))
        hi.append(min(int(hit[-1]) + h + 1, n))
    return lo, tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))


def sul_peak(
    image: npt.ArrayLike,
    mask: npt.ArrayLike,
    voxel_mm: tuple[float, float, float],
    *,
    volume_ml: float = PEAK_VOLUME_ML,
) -> tuple[float, tuple[int, int, int], bool]:
    """Peak uptake: the highest mean in a ``volume_ml`` sphere centred inside the lesion.

    Returns
    -------
    value : float
        Weighted mean uptake of the hottest sphere (same unit as ``image``).
    centre : tuple of int
        Voxel index of its centre.
    truncated : bool
        True when that sphere reached outside the image (its mean is over the part inside).
    """
    img, m, vox = _check(image, mask, voxel_mm)
    k = _peak_kernel((vox[0], vox[1], vox[2]), float(volume_ml))
    half = [s // 2 for s in k.shape]
    lo, box = _box(m, half)
    sub = img[box]
    valid = np.isfinite(sub).astype(np.float64)  # NaN outside the lesion: missing, not 0
    sub = np.where(valid > 0, sub, 0.0)
    # the kernel is centrally symmetric, so convolution = correlation (FFT: fast for 1 mL
    # spheres on fine grids)
    num = _fftconvolve_same(sub, k)
    den = _fftconvolve_same(valid, k)
    # the box was cut at the lesion extent + kernel half-width, so sums centred in the lesion
    # see every image voxel the sphere covers; den < k.sum() means the image edge cut it
    mean = num / den
    mm = m[box]
    cand = np.where(mm, mean, -np.inf)
    flat = int(np.argmax(cand))
    at = np.unravel_index(flat, cand.shape)
    centre = tuple(int(a + o) for a, o in zip(at, lo, strict=True))
    truncated = bool(den[at] < k.sum() * (1 - 1e-9))
    return float(mean[at]), (centre[0], centre[1], centre[2]), truncated


def mtv_ml(
    image: npt.ArrayLike,
    mask: npt.ArrayLike,
    voxel_mm: tuple[float, float, float],
    threshold: float,
) -> tuple[float, npt.NDArray[np.bool_]]:
    """Metabolic volume: the lesion's voxels with uptake ≥ ``threshold``, in mL, and that mask."""
    img, m, vox = _check(image, mask, voxel_mm)
    if not math.isfinite(threshold):
        raise DataError(f"threshold {threshold!r} is not finite", field="threshold")
    sel = m & (img >= threshold)
    return float(sel.sum() * np.prod(vox) / 1000.0), sel


def tlg(
    image: npt.ArrayLike,
    mask: npt.ArrayLike,
    voxel_mm: tuple[float, float, float],
    threshold: float,
) -> float:
    """Total lesion glycolysis, g: MTV (mL) × mean uptake (g/mL) inside the MTV (0 if empty)."""
    vol, sel = mtv_ml(image, mask, voxel_mm, threshold)
    if vol == 0.0:
        return 0.0
    return vol * float(np.asarray(image, dtype=np.float64)[sel].mean())


@dataclass(frozen=True)
class LesionUptake:
    """Uptake measures of one lesion (g/mL, mL, g); NaN where a threshold was not given."""

    suv_max: float
    suv_mean: float
    suv_peak: float
    peak_truncated: bool
    mtv41_ml: float
    tlg41_g: float
    mtv25_ml: float
    tlg25_g: float
    mtv_percist_ml: float
    tlg_percist_g: float
    volume_ml: float


def lesion_uptake(
    image: npt.ArrayLike,
    mask: npt.ArrayLike,
    voxel_mm: tuple[float, float, float],
    *,
    percist_threshold: float | None = None,
    fixed_threshold: float = 2.5,
    relative_threshold: float = 0.41,
) -> LesionUptake:
    """Every per-lesion measure at once.

    ``percist_threshold`` (1.5 × liver SULmean + 2 SD, in the unit of ``image``) gives the
    PERCIST MTV/TLG; without it they are NaN. ``suv_mean`` is over the whole lesion mask.
    """
    img, m, vox = _check(image, mask, voxel_mm)
    # every measure reads the lesion's voxels and, for the peak, the image within the
    # sphere's half-width of them: the box holding those (the same numbers as on the whole
    # volume, where each measure would walk every voxel)
    _, box = _box(m, [s // 2 for s in _peak_kernel((vox[0], vox[1], vox[2]), PEAK_VOLUME_ML).shape])
    img, m = img[box], m[box]
    vals = img[m]
    smax = float(vals.max())
    peak, _, trunc = sul_peak(img, m, vox)
    m41, _ = mtv_ml(img, m, vox, relative_threshold * smax)
    m25, _ = mtv_ml(img, m, vox, fixed_threshold)
    if percist_threshold is None:
        mp, tp = math.nan, math.nan
    else:
        mp, _ = mtv_ml(img, m, vox, percist_threshold)
        tp = tlg(img, m, vox, percist_threshold)
    return LesionUptake(
        suv_max=smax,
        suv_mean=float(vals.mean()),
        suv_peak=peak,
        peak_truncated=trunc,
        mtv41_ml=m41,
        tlg41_g=tlg(img, m, vox, relative_threshold * smax),
        mtv25_ml=m25,
        tlg25_g=tlg(img, m, vox, fixed_threshold),
        mtv_percist_ml=mp,
        tlg_percist_g=tp,
        volume_ml=float(m.sum() * np.prod(vox) / 1000.0),
    )
