"""Lesion masks from DICOM: RT Structure Sets and SEG objects on the grid of their image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pydicom")

import pydicom
from _dicom_helpers import volume

from tumorscope.errors import DataError
from tumorscope.io.dicom import read_rtstruct, read_segmentation
from tumorscope.phantom.dicom import lps_affine, write_rtstruct, write_series
from tumorscope.volume import Volume

ROWS = [{"label": 1, "lesion_id": "L1", "organ": "", "target": True, "nodal": False}]


def _contour(ds: pydicom.Dataset, vol: Volume, k: int, corners: list[tuple[float, float]]) -> None:
    """Add a closed planar contour (voxel coordinates i, j on slice k) to the first ROI."""
    a = lps_affine(vol.affine)
    pts = [a @ np.array([i, j, k, 1.0]) for i, j in corners]
    item = pydicom.Dataset()
    item.ContourGeometricType = "CLOSED_PLANAR"
    item.NumberOfContourPoints = len(pts)
    item.ContourData = [f"{x:.6f}" for p in pts for x in p[:3]]
    ds.ROIContourSequence[0].ContourSequence.append(item)


def test_rtstruct_contour_edges_decide_which_voxels_are_inside(tmp_path: Path) -> None:
    """A voxel is inside when its centre is: edges just inside or outside a centre count."""
    vol = volume(1, shape=(8, 8, 3))
    files = write_series(vol, tmp_path / "src", suffix="T2w", echo_time_ms=90)
    lab = np.zeros(vol.shape, np.int32)
    lab[0, 0, 0] = 1
    out = write_rtstruct(vol.with_data(lab), ROWS, files, tmp_path / "rtss.dcm")
    ds = pydicom.dcmread(out)
    # a square from 0.1 to 3.9 holds the centres 1, 2 and 3; a quadrilateral whose right edge
    # leans from 5.9 to 6.1 holds centre 6 of the rows below the middle only
    _contour(ds, vol, 1, [(0.1, 0.1), (3.9, 0.1), (3.9, 3.9), (0.1, 3.9)])
    _contour(ds, vol, 2, [(4.5, 0.5), (5.9, 0.5), (6.1, 6.5), (4.5, 6.5)])
    ds.save_as(out)
    back, _ = read_rtstruct(out, vol)
    expected = lab.copy()
    expected[1:4, 1:4, 1] = 1
    expected[5, 1:7, 2] = 1
    expected[6, 4:7, 2] = 1
    np.testing.assert_array_equal(back.data, expected)


def test_rtstruct_round_trip_and_holes(tmp_path: Path) -> None:
    vol = volume(1, shape=(12, 10, 4))
    files = write_series(vol, tmp_path / "src", suffix="T2w", echo_time_ms=90)
    lab = np.zeros((12, 10, 4), np.int32)
    lab[2:9, 1:8, 1] = 1
    lab[4:7, 3:6, 1] = 0  # a ring: rows cross it in two runs
    lab[9:11, 8:10, 2:4] = 4
    rows = [
        {"label": 1, "lesion_id": "L1", "organ": "liver", "target": True, "nodal": False},
        {"label": 4, "lesion_id": "N1", "organ": "lymph node", "target": False, "nodal": True},
    ]
    out = write_rtstruct(vol.with_data(lab), rows, files, tmp_path / "rtss.dcm")
    back, got = read_rtstruct(out, vol)
    np.testing.assert_array_equal(back.data, lab)
    assert got == rows
    # a contour inside another one on the same slice is a hole (even-odd rule)
    ds = pydicom.dcmread(out)
    _contour(ds, vol, 2, [(0.5, 0.5), (6.5, 0.5), (6.5, 6.5), (0.5, 6.5)])
    _contour(ds, vol, 2, [(1.5, 1.5), (5.5, 1.5), (5.5, 5.5), (1.5, 5.5)])
    ds.save_as(out)
    back, _ = read_rtstruct(out, vol)
    expected = lab.copy()
    expected[1:7, 1:7, 2] = 1
    expected[2:6, 2:6, 2] = 0
    np.testing.assert_array_equal(back.data, expected)


def test_rtstruct_off_grid_is_an_error(tmp_path: Path) -> None:
    vol = volume(1)
    files = write_series(vol, tmp_path / "src", suffix="T2w", echo_time_ms=90)
    lab = np.zeros(vol.shape, np.int32)
    lab[2:4, 2:4, 2] = 1
    out = write_rtstruct(vol.with_data(lab), ROWS, files, tmp_path / "rtss.dcm")
    shifted = Volume(vol.data, vol.affine @ np.diag([1.0, 1.0, 0.7, 1.0]))
    with pytest.raises(DataError, match="does not lie on a slice") as info:
        read_rtstruct(out, shifted)
    assert (info.value.file, info.value.field) == (str(out), "ContourData")


def test_read_segmentation_refuses_another_grid(tmp_path: Path) -> None:
    pytest.importorskip("highdicom")
    from tumorscope.io.dicom.export import write_seg

    vol = volume(1)
    files = write_series(vol, tmp_path / "src", suffix="T2w", echo_time_ms=90)
    lab = np.zeros(vol.shape, np.int32)
    lab[1:4, 1:3, 1:3] = 1
    out = write_seg(vol.with_data(lab), ROWS, files, tmp_path / "seg.dcm")
    other = Volume(vol.data, np.diag([1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(DataError, match="does not lie on a slice") as info:
        read_segmentation(out, other)
    assert (info.value.file, info.value.field) == (str(out), "PlanePositionSequence")


def test_a_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    vol = volume(1)
    files = write_series(vol, tmp_path, suffix="T2w", echo_time_ms=90)
    with pytest.raises(DataError, match="not a DICOM Segmentation") as info:
        read_segmentation(files[0], vol)
    assert info.value.field == "SOPClassUID"
    with pytest.raises(DataError, match="not an RT Structure Set"):
        read_rtstruct(files[0], vol)
