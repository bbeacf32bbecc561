"""Scanning a DICOM folder: series grouping, b-value tags of each vendor, skipped files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pydicom")

import pydicom
from _dicom_helpers import read_one, volume

from tumorscope.errors import DataError
from tumorscope.io.dicom import index_series, scan_dicom
from tumorscope.phantom.dicom import write_series
from tumorscope.protocol import DiffusionProtocol


@pytest.mark.parametrize("vendor", ["siemens", "ge", "philips"])
@pytest.mark.parametrize("enhanced", [False, True])
def test_dwi_round_trip_private_b_tags(tmp_path: Path, vendor: str, enhanced: bool) -> None:
    vol = volume(3)
    proto = DiffusionProtocol((0.0, 500.0, 1000.0))
    write_series(
        vol,
        tmp_path,
        suffix="dwi",
        protocol=proto,
        vendor=vendor,
        enhanced=enhanced,
        bvalue_tags="vendor",
    )
    sd = read_one(tmp_path)
    assert sd.suffix == "dwi"
    assert sd.protocol == proto
    np.testing.assert_allclose(sd.volume.affine, vol.affine, atol=1e-4)
    np.testing.assert_array_equal(sd.volume.data, vol.data)
    assert sd.volume.axes[3] == "b"


def test_ge_offset_in_private_b_value(tmp_path: Path) -> None:
    write_series(
        volume(2),
        tmp_path,
        suffix="dwi",
        protocol=DiffusionProtocol((0, 1000)),
        vendor="ge",
        bvalue_tags="vendor",
    )
    raw = [pydicom.dcmread(f)[0x0043, 0x1039].value for f in sorted(tmp_path.iterdir())]
    assert {int(v[0]) for v in raw} == {1_000_000_000, 1_000_001_000}
    assert read_one(tmp_path).protocol.bvalues == (0.0, 1000.0)


def test_series_are_grouped_by_uid_and_frames_counted(tmp_path: Path) -> None:
    dwi = write_series(volume(3), tmp_path / "a", suffix="dwi", series_number=1,
                       protocol=DiffusionProtocol((0, 500, 1000)))  # fmt: skip
    t2 = write_series(volume(1), tmp_path / "b", suffix="T2w", series_number=2, echo_time_ms=90)
    (enhanced,) = write_series(volume(3), tmp_path / "c", suffix="dwi", series_number=3,
                               protocol=DiffusionProtocol((0, 500, 1000)), enhanced=True)  # fmt: skip
    scan = scan_dicom(tmp_path)
    assert not scan.problems and not scan.segmentations
    assert [s.text("SeriesNumber") for s in scan.series] == ["1", "2", "3"]
    assert [len(s.frames) for s in scan.series] == [15, 5, 15]
    assert scan.series[0].files == sorted(dwi) and scan.series[1].files == sorted(t2)
    assert {f.frame for f in scan.series[2].frames} == set(range(15))
    assert {f.b for f in scan.series[0].frames} == {0.0, 500.0, 1000.0}
    index = index_series(tmp_path)
    assert {uid: sorted(files) for uid, files in index.items()} == {
        s.uid: s.files for s in scan.series
    }
    assert index[scan.series[2].uid] == [enhanced]


def test_unreadable_and_foreign_files_are_reported_by_file_and_tag(tmp_path: Path) -> None:
    files = write_series(volume(1), tmp_path, suffix="T2w", echo_time_ms=90)
    (tmp_path / "notes.txt").write_text("not a DICOM file")
    shutil.copy(files[0], tmp_path / "copy.dcm")
    ct = pydicom.dcmread(files[1])
    ct.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    ct.SOPInstanceUID = "1.2.3.4.5"
    ct.save_as(tmp_path / "ct.dcm")
    no_position = pydicom.dcmread(files[2])
    del no_position.ImagePositionPatient
    no_position.save_as(files[2])
    files[3].write_bytes(files[3].read_bytes()[:-100])
    scan = scan_dicom(tmp_path)
    found = {(Path(p.file).name, p.field, p.severity) for p in scan.problems}
    assert found == {
        ("notes.txt", "", "warning"),
        ("copy.dcm", "SOPInstanceUID", "warning"),
        ("ct.dcm", "SOPClassUID", "warning"),
        (files[2].name, "ImagePositionPatient", "warning"),
        (files[3].name, "PixelData", "warning"),
    }
    messages = " | ".join(p.message for p in scan.problems)
    assert "not a DICOM file" in messages and "duplicate of" in messages
    assert "required tag is missing" in messages and "truncated" in messages
    (series,) = scan.series
    assert sorted(series.damaged) == sorted([files[2], files[3]])
    assert len(series.frames) == 3


def test_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as info:
        scan_dicom(tmp_path / "nowhere")
    assert info.value.file == str(tmp_path / "nowhere")
