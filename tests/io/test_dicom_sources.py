"""The source images of an exported result: finding the series of a study file, reading it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pydicom")

import pydicom
from _dicom_helpers import volume

from tumorscope.errors import ExportError
from tumorscope.io.dicom import import_dicom, load_source_images, source_series_files
from tumorscope.phantom.dicom import write_series
from tumorscope.protocol import DiffusionProtocol


@pytest.fixture
def imported(tmp_path: Path) -> dict[str, object]:
    """A T2w and a DWI series, imported de-identified and with identifiers kept."""
    t2 = write_series(volume(1), tmp_path / "dicom", suffix="T2w", echo_time_ms=90, series_number=1)
    dwi = write_series(volume(3), tmp_path / "dicom", suffix="dwi", series_number=2,
                       protocol=DiffusionProtocol((0, 500, 1000)))  # fmt: skip
    import_dicom(tmp_path / "dicom", tmp_path / "study")
    import_dicom(tmp_path / "dicom", tmp_path / "kept", keep_identifiers=True)
    pid = pydicom.dcmread(t2[0]).PatientID
    return {"t2": sorted(t2), "dwi": sorted(dwi), "root": tmp_path, "pid": pid}


def test_files_of_a_study_series_by_role_or_suffix(imported: dict) -> None:
    root = imported["root"]
    for study, subject in ((root / "study", "001"), (root / "kept", imported["pid"])):
        got = source_series_files(study, root / "dicom", subject=subject, visit="01", role="dwi")
        assert got == imported["dwi"]
        got = source_series_files(study, root / "dicom", subject=subject, visit="01", role="T2w")
        assert got == imported["t2"]


def test_what_cannot_be_found_is_named(imported: dict) -> None:
    root = imported["root"]
    study, dicom = root / "study", root / "dicom"
    cases = [
        ({"subject": "009", "visit": "01", "role": "dwi"}, "no subject", "subject"),
        ({"subject": "001", "visit": "07", "role": "dwi"}, "no visit", "visit"),
        ({"subject": "001", "visit": "01", "role": "dce"}, "has no series 'dce'", "role"),
    ]
    for where, message, field in cases:
        with pytest.raises(ExportError, match=message) as info:
            source_series_files(study, dicom, **where)
        assert (info.value.file, info.value.field) == (str(study), field)
    (root / "study-identifiers.tsv").rename(root / "elsewhere.tsv")
    with pytest.raises(ExportError, match="identifier mapping file is missing") as info:
        source_series_files(study, dicom, subject="001", visit="01", role="dwi")
    assert info.value.file == str(root / "study-identifiers.tsv")
    got = source_series_files(study, dicom, subject="001", visit="01", role="dwi",
                              mapping_file=root / "elsewhere.tsv")  # fmt: skip
    assert got == imported["dwi"]
    for f in imported["dwi"]:
        f.unlink()
    with pytest.raises(ExportError, match="not in the DICOM folder") as info:
        source_series_files(study, dicom, subject="001", visit="01", role="dwi",
                            mapping_file=root / "elsewhere.tsv")  # fmt: skip
    assert info.value.field == "SeriesInstanceUID"


def test_load_source_images_one_image_per_slice(imported: dict, tmp_path: Path) -> None:
    images = load_source_images(imported["dwi"])
    positions = [tuple(float(x) for x in ds.ImagePositionPatient) for ds in images]
    assert len(images) == 5 and len(set(positions)) == 5  # 3 b-values, first image kept
    assert {int(ds.InstanceNumber) for ds in images} == set(range(1, 6))
    (enhanced,) = write_series(volume(3), tmp_path / "enh", suffix="dwi", enhanced=True,
                               protocol=DiffusionProtocol((0, 500, 1000)))  # fmt: skip
    assert [ds.SOPInstanceUID for ds in load_source_images([enhanced])] == [
        pydicom.dcmread(enhanced).SOPInstanceUID
    ]
    np.testing.assert_array_equal(images[0].pixel_array.shape, (8, 10))


def test_load_source_images_refuses_mixed_or_unreadable_files(imported: dict) -> None:
    with pytest.raises(ExportError, match="come from 2 series") as info:
        load_source_images([*imported["t2"], *imported["dwi"]])
    assert info.value.field == "SeriesInstanceUID"
    bad = imported["root"] / "notes.txt"
    bad.write_text("not DICOM")
    with pytest.raises(ExportError, match="cannot read source image") as info:
        load_source_images([bad])
    assert info.value.file == str(bad)
    with pytest.raises(ExportError, match="no source images"):
        load_source_images([])
