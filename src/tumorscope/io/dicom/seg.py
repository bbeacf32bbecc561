"""Lesion masks from DICOM: SEG objects and RT Structure Sets → label maps on a given grid.

Both readers place the object on the grid of the image it was drawn on (no resampling: frames
or contours off the slices of the grid are an error) and return the lesion table rows
(``label``, ``lesion_id``, ``organ``, ``target``, ``nodal``) of ``docs/study-format.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from ...volume import Volume
from .scan import LPS_TO_RAS, RTSTRUCT_STORAGE, SEG_STORAGE, _frames_from_dataset, _group

__all__ = ["read_rtstruct", "read_segmentation"]


def _read_object(path: Path, sop_class: str, what: str) -> Any:
    """Read a DICOM file that must be of one SOP class (DataError naming the file if not)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise DataError(f"cannot read {what} ({type(exc).__name__}: {exc})", file=path) from exc
    if str(getattr(ds, "SOPClassUID", "")) != sop_class:
        raise DataError(f"not {what} object", file=path, field="SOPClassUID")
    return ds


def _grid_index(grid: Volume, position_lps: np.ndarray) -> np.ndarray:
    ras = LPS_TO_RAS[:3, :3] @ position_lps
    inv = np.linalg.inv(grid.affine)
    return inv[:3, :3] @ ras + inv[:3, 3]


def read_segmentation(path: str | Path, grid: Volume) -> tuple[Volume, list[dict[str, Any]]]:
    """A DICOM SEG object as an integer label map on ``grid``.

    Each segment becomes one label (its segment number). The SEG frames must lie on the
    slices of ``grid`` with the same in-plane geometry (no resampling is done).

    Parameters
    ----------
    path : path-like
        DICOM SEG file (binary or fractional; fractional values ≥ half the maximum count).
    grid : Volume
        The image the segmentation was drawn on (e.g. the imported series it references).

    Returns
    -------
    labels : Volume
        int32 label map (0 = background).
    rows : list of dict
        One per segment: ``label``, ``lesion_id`` (SegmentLabel), ``organ`` (anatomic region),
        ``target`` and ``nodal`` (from the SegmentDescription words ``target``/``non-target``
        and ``nodal``, or an anatomic region "lymph node").

    Raises
    ------
    DataError
        Frames off the grid, overlapping segments, or missing tags (naming the file and tag).
    """

    p = Path(path)
    ds = _read_object(p, SEG_STORAGE, "a DICOM Segmentation")
    segments = getattr(ds, "SegmentSequence", None)
    if not segments:
        raise DataError("no segments", file=p, field="SegmentSequence")
    arr = ds.pixel_array
    if arr.ndim == 2:
        arr = arr[None]
    if str(getattr(ds, "SegmentationType", "BINARY")) == "FRACTIONAL":
        arr = arr >= (int(getattr(ds, "MaximumFractionalValue", 255)) + 1) // 2
    frames = _frames_from_dataset(ds, p)
    labels = np.zeros(grid.spatial_shape, dtype=np.int32)
    sfg = (getattr(ds, "SharedFunctionalGroupsSequence", None) or [None])[0]
    for n, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        ident = _group(item, sfg, "SegmentIdentificationSequence")
        if ident is None:
            raise DataError(
                f"frame {n + 1} has no segment number",
                file=p,
                field="SegmentIdentificationSequence",
            )
        seg_no = int(ident.ReferencedSegmentNumber)
        f = frames[n]
        idx = _grid_index(grid, f.position)
        k = round(idx[2])
        expected_cols = grid.affine[:3, 0] / np.linalg.norm(grid.affine[:3, 0])
        row_dir_ras = LPS_TO_RAS[:3, :3] @ f.orientation[:3]
        if (
            np.abs(idx[:2]).max() > 0.01
            or abs(idx[2] - k) > 0.01
            or not 0 <= k < grid.spatial_shape[2]
            or (f.rows, f.cols) != (grid.spatial_shape[1], grid.spatial_shape[0])
            or not np.allclose(row_dir_ras, expected_cols, atol=1e-3)
        ):
            raise DataError(
                f"frame {n + 1} (segment {seg_no}) does not lie on a slice of the image grid "
                f"{grid.spatial_shape}; resampling segmentations is not supported",
                file=p,
                field="PlanePositionSequence",
            )
        mask = arr[n].T.astype(bool)
        clash = mask & (labels[:, :, k] != 0) & (labels[:, :, k] != seg_no)
        if clash.any():
            other = int(labels[:, :, k][clash][0])
            raise DataError(
                f"segments {other} and {seg_no} overlap on slice {k + 1}; a label map needs "
                "disjoint lesions",
                file=p,
                field="SegmentSequence",
            )
        labels[:, :, k][mask] = seg_no
    rows: list[dict[str, Any]] = []
    for seg in segments:
        num = int(seg.SegmentNumber)
        desc = str(getattr(seg, "SegmentDescription", "") or "").lower()
        organ = ""
        region = getattr(seg, "AnatomicRegionSequence", None)
        if region:
            organ = str(region[0].CodeMeaning).lower()
        words = desc.replace(",", " ").split()
        rows.append(
            {
                "label": num,
                "lesion_id": str(seg.SegmentLabel),
                "organ": organ,
                "target": "target" in words,
                "nodal": "nodal" in words or organ == "lymph node",
            }
        )
    return Volume(labels, grid.affine.copy(), source=str(p)), rows


def _points_in_polygon(px: np.ndarray, py: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule: which points (px, py) lie inside the closed polygon (N, 2)."""
    inside = np.zeros(px.shape, dtype=bool)
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    for a, b, c, d in zip(x0, y0, x1, y1, strict=True):
        if b == d:
            continue
        crosses = (b > py) != (d > py)
        xs = a + (py - b) * (c - a) / (d - b)
        inside ^= crosses & (px < xs)
    return inside


def _rt_rows(ds: Any) -> dict[int, dict[str, Any]]:
    rows: dict[int, dict[str, Any]] = {}
    for roi in getattr(ds, "StructureSetROISequence", []) or []:
        num = int(roi.ROINumber)
        words = [
            w.strip().lower() for w in str(getattr(roi, "ROIDescription", "") or "").split(";")
        ]
        flags = {"target", "non-target", "nodal"}
        organ = next((w for w in words if w and w not in flags), "")
        rows[num] = {
            "label": num,
            "lesion_id": str(getattr(roi, "ROIName", "") or f"ROI{num}"),
            "organ": organ,
            "target": "target" in words,
            "nodal": "nodal" in words or organ == "lymph node",
        }
    return rows


def read_rtstruct(path: str | Path, grid: Volume) -> tuple[Volume, list[dict[str, Any]]]:
    """A DICOM RT Structure Set as an integer label map on ``grid``.

    Each ROI with closed planar contours becomes one label (its ROI number); a voxel belongs to
    a ROI when its centre lies inside the ROI's contours on its slice, with the even-odd rule
    across the contours of one slice (so a contour inside another is a hole, the usual
    convention). Contours must lie on slices of ``grid`` (no resampling).

    Parameters
    ----------
    path : path-like
        RT Structure Set file.
    grid : Volume
        The image the contours were drawn on.

    Returns
    -------
    labels : Volume
        int32 label map.
    rows : list of dict
        One per ROI drawn: ``label`` (ROI number), ``lesion_id`` (ROI name), ``organ``,
        ``target`` and ``nodal`` (from ROI Description words separated by ``;``: ``target`` or
        ``non-target``, ``nodal``, and the organ).

    Raises
    ------
    DataError
        Contours off the slices of the grid, overlapping ROIs, missing sequences.
    """

    p = Path(path)
    ds = _read_object(p, RTSTRUCT_STORAGE, "an RT Structure Set")
    contours = getattr(ds, "ROIContourSequence", None)
    if not contours:
        raise DataError("no contours", file=p, field="ROIContourSequence")
    meta = _rt_rows(ds)
    inv = np.linalg.inv(grid.affine) @ LPS_TO_RAS
    nx, ny, nz = grid.spatial_shape
    labels = np.zeros(grid.spatial_shape, dtype=np.int32)
    rows: list[dict[str, Any]] = []
    for roi in contours:
        num = int(roi.ReferencedROINumber)
        mask = np.zeros(grid.spatial_shape, dtype=bool)
        for n, item in enumerate(getattr(roi, "ContourSequence", []) or []):
            if str(getattr(item, "ContourGeometricType", "")) != "CLOSED_PLANAR":
                continue
            pts = np.asarray([float(x) for x in item.ContourData]).reshape(-1, 3)
            idx = (inv[:3, :3] @ pts.T + inv[:3, 3:4]).T
            k = round(float(idx[0, 2]))
            if np.abs(idx[:, 2] - k).max() > 0.01 or not 0 <= k < nz:
                raise DataError(
                    f"ROI {num} contour {n + 1} does not lie on a slice of the image grid "
                    f"{grid.spatial_shape}; resampling structures is not supported",
                    file=p,
                    field="ContourData",
                )
            lo = np.clip(np.floor(idx[:, :2].min(axis=0)).astype(int), 0, [nx - 1, ny - 1])
            hi = np.clip(np.ceil(idx[:, :2].max(axis=0)).astype(int), 0, [nx - 1, ny - 1])
            ii, jj = np.meshgrid(
                np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij"
            )
            inside = _points_in_polygon(ii.astype(float), jj.astype(float), idx[:, :2])
            mask[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, k] ^= inside
        if not mask.any():
            continue
        clash = mask & (labels != 0)
        if clash.any():
            raise DataError(
                f"ROIs {int(labels[clash][0])} and {num} overlap; a label map needs disjoint "
                "lesions",
                file=p,
                field="ROIContourSequence",
            )
        labels[mask] = num
        rows.append(meta.get(num, {"label": num, "lesion_id": f"ROI{num}", "organ": "",
                                   "target": False, "nodal": False}))  # fmt: skip
    return Volume(labels, grid.affine.copy(), source=str(p)), rows
