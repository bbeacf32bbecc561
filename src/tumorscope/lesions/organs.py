"""Organ geometry for the organ watch: maximal bowel-wall thickness, pituitary height.

* :func:`max_wall_thickness_mm`: the maximal thickness of a wall segmented as a mask, the
  measure the colitis literature uses (maximal bowel-wall thickness, mm; ECCO-ESGAR 2019):
  twice the largest distance from a wall voxel to the outside of the wall (the diameter of
  the largest inscribed ball), minus one voxel (distances run between voxel centres). A
  slab of ``n`` voxels of size ``h`` measures ``n·h`` for odd ``n``.
* :func:`height_mm`: the largest extent of a mask along the superior–inferior axis (the
  pituitary height of the hypophysitis literature, measured on a sagittal or coronal
  image): the longest run of mask voxels along the image axis closest to S–I, in mm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..errors import DataError

__all__ = ["height_mm", "max_wall_thickness_mm", "superior_axis"]


def _mask(mask: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(mask, dtype=bool)
    h = np.asarray(spacing, dtype=float)
    if m.ndim != 3 or h.shape != (3,) or np.any(h <= 0):
        raise DataError(
            f"expected a 3-D mask and 3 voxel sizes, got {m.shape}, {h.tolist()}", field="mask"
        )
    return m, h


def max_wall_thickness_mm(mask: np.ndarray, voxel_sizes_mm: Sequence[float]) -> float:
    """Maximal wall thickness (mm) of a wall mask; NaN for an empty mask."""
    m, h = _mask(mask, voxel_sizes_mm)
    if not m.any():
        return float("nan")
    d = ndimage.distance_transform_edt(np.pad(m, 1), sampling=h)
    # the voxel size along the direction of the thinnest extent is not known: use the
    # smallest (an isotropic image makes it exact)
    return float(2.0 * d.max() - h.min())


def superior_axis(affine: np.ndarray) -> int:
    """The image axis closest to superior–inferior (RAS+ z) of a NIfTI affine."""
    a = np.asarray(affine, dtype=float)
    return int(np.argmax(np.abs(a[2, :3]) / np.linalg.norm(a[:3, :3], axis=0)))


def height_mm(mask: np.ndarray, voxel_sizes_mm: Sequence[float], axis: int) -> float:
    """Largest run of mask voxels along ``axis`` (mm); NaN for an empty mask."""
    m, h = _mask(mask, voxel_sizes_mm)
    if not m.any():
        return float("nan")
    moved = np.moveaxis(m, axis, -1)
    best = 0
    run = np.zeros(moved.shape[:-1], int)
    for k in range(moved.shape[-1]):
        run = np.where(moved[..., k], run + 1, 0)
        best = max(best, int(run.max()))
    return float(best * h[axis])
