"""Lesion size in physical space: volume, RECIST diameters, RANO product, 3-D diameter.

All measures are taken in the image's own physical space through its affine, so anisotropic
and oblique voxels are handled without resampling.

Conventions (see ``docs/lesions.md`` for the reasoning)
--------------------------------------------------------
Surface points.
    The lesion boundary is the surface between mask voxels and non-mask voxels. Its points are
    the midpoints between the centre of a mask voxel and the centre of each face-neighbour
    outside the mask: exactly the vertices that marching squares / marching cubes put on a
    binary mask at level 0.5. The maximum 3-D diameter is the largest distance between two
    such 3-D vertices, which is the IBSI definition of *maximum 3D diameter* (IBSI feature
    L0JK, computed on the mesh vertices) [1]_.
Axial plane.
    "Axial" is defined with respect to the patient/world *z* axis (superior–inferior in RAS+).
    The slices used are those of the voxel axis whose direction is closest to world *z*; each
    slice is the plane spanned by the other two voxel axes. For a standard axial acquisition
    this is the acquired slice. For an oblique acquisition the measurement is made in the
    acquired (tilted) plane, as a radiologist reading the acquired images does; the tilt is
    reported as ``obliquity_deg`` by :func:`measure` with ``details=True``. For a sagittal or
    coronal acquisition the slices are reformatted axial planes (the voxel axis closest to *z*
    is then an in-plane axis of the acquisition).
Longest diameter (RECIST 1.1) [2]_.
    The largest in-plane distance between two 2-D boundary vertices of one slice, taken on the
    slice where it is largest.
Short axis (RECIST 1.1 lymph nodes) [2]_.
    On that same slice, the longest chord of the lesion perpendicular to the longest diameter:
    lines perpendicular to the long axis are sampled every quarter of the smallest in-plane
    voxel size, and the chord is the extent of the mask voxels each line crosses.
Bidimensional product (RANO) [3]_.
    Longest diameter times the perpendicular (short-axis) diameter on the same slice, in mm².

References
----------
.. [1] Zwanenburg A, et al. The Image Biomarker Standardization Initiative. Radiology 2020;
       295:328-338. doi:10.1148/radiol.2020191145
.. [2] Eisenhauer EA, et al. New response evaluation criteria in solid tumours: revised RECIST
       guideline (version 1.1). Eur J Cancer 2009;45:228-247. doi:10.1016/j.ejca.2008.10.026
.. [3] Wen PY, et al. Updated response assessment criteria for high-grade gliomas: RANO.
       J Clin Oncol 2010;28:1963-1972. doi:10.1200/JCO.2009.26.3541
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import DataError

__all__ = ["GEOMETRY_KEYS", "axial_axis", "measure"]

#: Keys of the dictionary :func:`measure` returns (the geometry columns of lesion tables).
GEOMETRY_KEYS: tuple[str, ...] = (
    "volume_ml",
    "longest_diameter_mm",
    "short_axis_mm",
    "bidimensional_product_mm2",
    "max_3d_diameter_mm",
)


def measure(
    mask: npt.ArrayLike,
    affine: npt.ArrayLike,
    *,
    details: bool = False,
    lesion: str | None = None,
    allow_empty: bool = False,
) -> dict[str, Any]:
    """Size of one lesion from its binary mask.

    Parameters
    ----------
    mask : array_like of bool, shape (X, Y, Z)
        The lesion's voxels (non-zero = lesion).
    affine : array_like, shape (4, 4)
        Voxel-to-world (RAS+, mm) transform of the mask's grid.
    details : bool, default False
        Also return where the measures were taken: ``axial_axis`` (voxel axis used as slice
        axis), ``slice_index``, ``obliquity_deg`` (angle between the slice normal and world
        *z*), ``long_axis_endpoints_mm`` (2×3 world coordinates) and ``n_voxels``.
    lesion : str, optional
        Lesion id, used in error messages only.
    allow_empty : bool, default False
        An empty mask is a lesion that vanished: every measure is 0 (``details``:
        ``n_voxels`` 0, no axis, slice or end points) instead of an error.

    Returns
    -------
    dict
        ``volume_ml`` (voxel count × voxel volume, mL), ``longest_diameter_mm`` (RECIST, axial),
        ``short_axis_mm`` (perpendicular to it, same slice), ``bidimensional_product_mm2``
        (RANO), ``max_3d_diameter_mm`` (IBSI maximum 3-D diameter). Conventions are in the
        module docstring.

    Raises
    ------
    DataError
        If the mask is not 3-D, the affine is not a finite non-singular 4×4 matrix, or the
        mask is empty (without ``allow_empty``).

    Examples
    --------
    An ellipse with semi-axes 15 and 6 mm on 1 × 0.5 mm pixels, one 5 mm slice:

    >>> import numpy as np
    >>> x, y = np.meshgrid(np.arange(-20, 21) * 1.0, np.arange(-20, 21) * 0.5, indexing="ij")
    >>> m = ((x / 15) ** 2 + (y / 6) ** 2 <= 1)[:, :, None]
    >>> r = measure(m, np.diag([1.0, 0.5, 5.0, 1.0]))
    >>> round(r["longest_diameter_mm"], 1), round(r["short_axis_mm"], 1)
    (31.0, 12.5)
    """
    m = np.asarray(mask)
    where = "mask" if lesion is None else f"lesion {lesion}"
    if m.ndim != 3:
        raise DataError(f"expected a 3-D mask, got shape {m.shape}", field=where)
    m = m.astype(bool, copy=False)
    a = _check_affine(affine, where)
    n = int(m.sum())
    if n == 0:
        if allow_empty:
            return _vanished(details)
        raise DataError("mask is empty: no voxel to measure", field=where)

    lin = a[:3, :3]
    volume_ml = n * abs(float(np.linalg.det(lin))) / 1000.0

    # bounding box crop keeps the work proportional to the lesion, not the image
    idx = np.argwhere(m)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    crop = m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]

    max3d = _max_distance(_boundary_points(crop, lin, axes=(0, 1, 2)))

    ax = axial_axis(a)
    inplane = tuple(i for i in range(3) if i != ax)
    per_slice: list[tuple[int, float, np.ndarray]] = []
    for s in range(crop.shape[ax]):
        sl = np.take(crop, s, axis=ax)
        if not sl.any():
            continue
        pts = _boundary_points(_as3(sl, ax), lin, axes=inplane)
        per_slice.append((s, _max_distance_pair(pts)[0], pts))
    best_ld = max(d for _, d, _ in per_slice)
    # The longest diameter can be tied (between slices, or between pairs of one slice, as for
    # two voxels touching at a corner); the short axis is then the longest perpendicular
    # chord over the tied diameters, so the result does not depend on the voxel order.
    best_slice, best_pair, short = 0, (np.zeros(3), np.zeros(3)), -1.0
    for s, d, pts in per_slice:
        if d < best_ld * (1 - 1e-9) - 1e-12:
            continue
        for pair in _tied_pairs(pts, d):
            c = _perpendicular_chord(pts, lin, inplane, pair)
            if c > short + 1e-9:
                best_slice, best_pair, short = s, pair, c

    out: dict[str, Any] = {
        "volume_ml": volume_ml,
        "longest_diameter_mm": best_ld,
        "short_axis_mm": short,
        "bidimensional_product_mm2": best_ld * short,
        "max_3d_diameter_mm": max3d,
    }
    if details:
        first = lo.astype(float)
        first[ax] += best_slice  # the slice's points are relative to its own voxel 0
        origin = lin @ first + a[:3, 3]
        p0, p1 = best_pair[0] + origin, best_pair[1] + origin
        out.update(
            axial_axis=ax,
            slice_index=int(lo[ax] + best_slice),
            obliquity_deg=_obliquity_deg(lin, ax),
            long_axis_endpoints_mm=np.stack([p0, p1]),
            n_voxels=n,
        )
    return out


def axial_axis(affine: npt.ArrayLike) -> int:
    """The voxel axis (0, 1 or 2) whose direction is closest to world *z*.

    Slices perpendicular to this axis are the "axial" slices of :func:`measure`.
    """
    lin = np.asarray(affine, dtype=float)[:3, :3]
    cols = lin / np.linalg.norm(lin, axis=0)
    return int(np.argmax(np.abs(cols[2])))


# ---------------------------------------------------------------------------- internals


def _vanished(details: bool) -> dict[str, Any]:
    """The measures of a lesion with no voxel left: 0 mL and 0 mm (RECIST: absent, 0 mm)."""
    out: dict[str, Any] = dict.fromkeys(GEOMETRY_KEYS, 0.0)
    if details:
        out.update(
            axial_axis=None,
            slice_index=None,
            obliquity_deg=None,
            long_axis_endpoints_mm=None,
            n_voxels=0,
        )
    return out


def _check_affine(affine: npt.ArrayLike, where: str) -> np.ndarray:
    a = np.asarray(affine, dtype=float)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise DataError(f"affine must be a finite 4x4 matrix, got shape {a.shape}", field=where)
    if abs(np.linalg.det(a[:3, :3])) < 1e-12:
        raise DataError("affine is singular (zero voxel size)", field=where)
    return a


def _as3(slice2d: np.ndarray, ax: int) -> np.ndarray:
    """Put a 2-D slice back as a 3-D array of thickness 1 along axis ``ax``."""
    return np.expand_dims(slice2d, ax)


def _obliquity_deg(lin: np.ndarray, ax: int) -> float:
    u, v = (lin[:, i] for i in range(3) if i != ax)
    normal = np.cross(u, v)
    cosang = abs(normal[2]) / np.linalg.norm(normal)
    return float(np.degrees(np.arccos(np.clip(cosang, 0.0, 1.0))))


def _boundary_points(m: np.ndarray, lin: np.ndarray, *, axes: tuple[int, ...]) -> np.ndarray:
    """Face-midpoint boundary vertices (mm, relative to voxel 0 of ``m``), shape (P, 3).

    For each mask voxel and each face-neighbour along ``axes`` that is outside the mask (or
    outside the array), the point half-way between the two voxel centres.
    """
    pad = np.pad(m, 1, constant_values=False)
    pts = []
    for axis in axes:
        step = np.zeros(3, dtype=float)
        step[axis] = 0.5
        for sign in (-1, 1):
            nb = np.roll(pad, -sign, axis=axis)
            edge = pad & ~nb
            ijk = np.argwhere(edge[1:-1, 1:-1, 1:-1]).astype(float)
            if ijk.size:
                pts.append(ijk + sign * step)
    ijk_all = np.concatenate(pts, axis=0)
    return np.asarray(ijk_all @ lin.T)


def _hull_vertices(pts: np.ndarray) -> np.ndarray:
    """Vertices of the convex hull (falls back to all points for degenerate sets)."""
    if len(pts) <= 8:
        return pts
    from scipy.spatial import ConvexHull, QhullError

    centred = pts - pts.mean(axis=0)
    # drop directions with no extent (a 2-D slice embedded in 3-D)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    rank = int((sv > 1e-9 * max(sv[0], 1e-12)).sum())
    if rank < 2:
        return pts
    proj = centred @ vt[:rank].T
    try:
        hull = ConvexHull(proj)
    except QhullError:
        return pts
    return pts[hull.vertices]


def _max_distance_pair(pts: np.ndarray) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
    """Largest pairwise distance and the pair (in the coordinates of ``pts``)."""
    h = _hull_vertices(pts)
    best, pair = -1.0, (h[0], h[0])
    chunk = 2048
    for start in range(0, len(h), chunk):
        block = h[start : start + chunk]
        d2 = ((block[:, None, :] - h[None, :, :]) ** 2).sum(axis=-1)
        k = int(np.argmax(d2))
        i, j = divmod(k, len(h))
        if d2[i, j] > best:
            best, pair = float(d2[i, j]), (block[i], h[j])
    return float(np.sqrt(best)), pair


def _tied_pairs(pts: np.ndarray, d: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every pair of hull vertices at distance ``d`` (to rounding): ties of the diameter."""
    h = _hull_vertices(pts)
    d2 = ((h[:, None, :] - h[None, :, :]) ** 2).sum(axis=-1)
    ii, jj = np.nonzero(np.triu(d2 >= d * d * (1 - 1e-9) - 1e-12, k=1))
    return [(h[i], h[j]) for i, j in zip(ii, jj, strict=True)]


def _max_distance(pts: np.ndarray) -> float:
    return _max_distance_pair(pts)[0]


def _perpendicular_chord(
    pts: np.ndarray, lin: np.ndarray, inplane: tuple[int, ...], pair: tuple[np.ndarray, np.ndarray]
) -> float:
    """Longest chord perpendicular to the segment ``pair`` inside the convex hull of ``pts``.

    ``pts`` are the slice's boundary vertices (mm, shape (P, 3)) and ``pair`` the end points of
    the longest diameter. The section length of a convex polygon along lines perpendicular to
    ``pair`` is a concave piecewise-linear function of the position along ``pair``, so its
    maximum is reached at a hull vertex: the chord is evaluated there exactly.
    """
    p0, p1 = pair
    u = p1 - p0
    length = float(np.linalg.norm(u))
    if length < 1e-9:
        return 0.0
    u = u / length
    e0, e1 = (lin[:, i] for i in inplane)
    normal = np.cross(e0, e1)
    v = np.cross(normal, u)
    v /= np.linalg.norm(v)
    rel = _hull_vertices(pts) - p0
    st = np.stack([rel @ u, rel @ v], axis=1)
    # the hull polygon, ordered around (small point sets hold non-hull points too: two
    # separate voxels give eight corners, four of them inside; sorting those by angle would
    # make a non-convex polygon whose chords depend on the voxel order)
    from scipy.spatial import ConvexHull, QhullError

    try:
        st = st[ConvexHull(st).vertices]
    except QhullError:  # all points on a line: no area, no perpendicular extent
        return 0.0
    a, b = st, np.roll(st, -1, axis=0)
    lo_s, hi_s = np.minimum(a[:, 0], b[:, 0]), np.maximum(a[:, 0], b[:, 0])
    best = 0.0
    for s_k in st[:, 0]:
        on = (lo_s <= s_k + 1e-9) & (hi_s >= s_k - 1e-9)
        ds = b[on, 0] - a[on, 0]
        frac = np.where(np.abs(ds) > 1e-12, (s_k - a[on, 0]) / np.where(ds == 0, 1, ds), 0.0)
        t_lo = a[on, 1] + frac * (b[on, 1] - a[on, 1])
        # vertical edges contribute both end points
        t_all = np.concatenate([t_lo, a[on, 1][np.abs(ds) <= 1e-12], b[on, 1][np.abs(ds) <= 1e-12]])
        if t_all.size:
            best = max(best, float(t_all.max() - t_all.min()))
    return best
