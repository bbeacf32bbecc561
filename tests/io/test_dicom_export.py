"""DICOM export: Parametric Map, SEG and SR read back with pydicom and highdicom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("highdicom")

import highdicom as hd
import pydicom

from tumorscope.errors import ExportError
from tumorscope.io.dicom import read_segmentation
from tumorscope.io.dicom.export import (
    LesionMeasurement,
    write_parametric_map,
    write_seg,
    write_sr,
)
from tumorscope.phantom.dicom import lps_affine, oblique_affine, write_series
from tumorscope.volume import Volume

SHAPE = (10, 8, 5)
LESIONS = [
    {"label": 1, "lesion_id": "L1", "organ": "liver", "target": True, "nodal": False},
    {"label": 2, "lesion_id": "N1", "organ": "lymph node", "target": True, "nodal": True},
    {"label": 3, "lesion_id": "NT1", "organ": "lung", "target": False, "nodal": False},
]


@pytest.fixture
def source(tmp_path: Path) -> tuple[list[Path], Volume]:
    """An oblique single-volume T2w series and the Volume it was written from."""
    rng = np.random.default_rng(0)
    vol = Volume(rng.integers(0, 1000, SHAPE).astype(np.float32), oblique_affine())
    files = write_series(vol, tmp_path / "src", suffix="T2w", echo_time_ms=90.0)
    return files, vol


def labels_on(vol: Volume) -> Volume:
    lab = np.zeros(SHAPE, np.int32)
    lab[1:4, 1:3, 1:3] = 1
    lab[6:9, 4:7, 2] = 2
    lab[5, 0, 4] = 3
    return vol.with_data(lab)


def frame_slices(ds: pydicom.Dataset, vol: Volume) -> list[int]:
    """Slice index of each frame of a multi-frame object, from its plane positions."""
    inv = np.linalg.inv(lps_affine(vol.affine))
    out = []
    for item in ds.PerFrameFunctionalGroupsSequence:
        ipp = np.array([float(x) for x in item.PlanePositionSequence[0].ImagePositionPatient])
        idx = inv[:3, :3] @ ipp + inv[:3, 3]
        np.testing.assert_allclose(idx[:2], 0.0, atol=1e-3)
        assert abs(idx[2] - round(idx[2])) < 1e-3
        out.append(round(idx[2]))
    return out


def hd_volume_in_our_grid(v: hd.Volume, grid: Volume) -> np.ndarray:
    """Resample (by index permutation only) a highdicom volume onto our grid."""
    m = np.linalg.inv(lps_affine(grid.affine)) @ v.affine
    perm = np.round(m[:3, :3])
    np.testing.assert_allclose(m[:3, :3], perm, atol=1e-3)
    out = np.zeros(grid.spatial_shape, v.array.dtype)
    idx = np.indices(v.array.shape[:3]).reshape(3, -1)
    ours = np.round(perm @ idx + m[:3, 3:4]).astype(int)
    out[tuple(ours)] = v.array.reshape(-1)
    return out


def test_parametric_map_values_units_geometry_references(tmp_path, source) -> None:
    files, vol = source
    adc = vol.with_data((vol.data * 1e-6).astype(np.float32))
    adc.data[0, 0, 0] = np.nan
    out = write_parametric_map(adc, files, tmp_path / "adc.dcm", name="ADC")
    ds = pydicom.dcmread(out)
    src = pydicom.dcmread(files[0])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"
    assert ds.StudyInstanceUID == src.StudyInstanceUID
    assert ds.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
    assert ds.PatientID == src.PatientID  # goes back to the site's PACS next to the originals
    rwvm = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    unit = rwvm.MeasurementUnitsCodeSequence[0]
    assert (unit.CodeValue, unit.CodingSchemeDesignator) == ("mm2/s", "UCUM")
    assert rwvm.QuantityDefinitionSequence[0].ConceptCodeSequence[0].CodeValue == "113041"
    assert (float(rwvm.RealWorldValueSlope), float(rwvm.RealWorldValueIntercept)) == (1.0, 0.0)
    pix = ds.pixel_array
    assert pix.dtype == np.float32
    for n, k in enumerate(frame_slices(ds, adc)):
        np.testing.assert_array_equal(pix[n].T, adc.data[:, :, k])
    ori = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    np.testing.assert_allclose([float(x) for x in ori], src.ImageOrientationPatient, atol=1e-6)


def test_parametric_map_units_and_grid_are_checked(tmp_path, source) -> None:
    files, vol = source
    with pytest.raises(ExportError, match="no unit known"):
        write_parametric_map(vol, files, tmp_path / "x.dcm", name="mystery")
    with pytest.raises(ExportError, match="UCUM"):
        write_parametric_map(vol, files, tmp_path / "x.dcm", name="x", unit="furlongs")
    shifted = Volume(
        vol.data,
        vol.affine @ np.array([[1, 0, 0, 0.5], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]),
    )
    with pytest.raises(ExportError, match="not on a slice"):
        write_parametric_map(shifted, files, tmp_path / "x.dcm", name="T1")
    assert not list(tmp_path.glob("*.dcm"))


def test_seg_round_trip(tmp_path, source) -> None:
    files, vol = source
    labels = labels_on(vol)
    out = write_seg(labels, LESIONS, files, tmp_path / "seg.dcm")
    back, rows = read_segmentation(out, vol)
    np.testing.assert_array_equal(back.data, labels.data)
    assert rows == LESIONS
    seg = hd.seg.segread(out)
    assert (
        seg.ReferencedSeriesSequence[0].SeriesInstanceUID
        == pydicom.dcmread(files[0]).SeriesInstanceUID
    )
    hv = seg.get_volume(combine_segments=True)
    np.testing.assert_array_equal(hd_volume_in_our_grid(hv, vol), labels.data)


def test_seg_needs_every_label_in_the_table(tmp_path, source) -> None:
    files, vol = source
    with pytest.raises(ExportError, match=r"label\(s\) \[3\]"):
        write_seg(labels_on(vol), LESIONS[:2], files, tmp_path / "seg.dcm")


def test_sr_measurements_and_response(tmp_path, source) -> None:
    files, vol = source
    seg = write_seg(labels_on(vol), LESIONS, files, tmp_path / "seg.dcm")
    ms = [
        LesionMeasurement(
            "L1", volume_ml=1.25, longest_diameter_mm=22.5, short_axis_mm=11.0,
            statistics={"ADC": {"mean": 1.1e-3, "median": 1.0e-3}, "Ktrans": {"mean": 0.25}},
        ),
        LesionMeasurement("N1", volume_ml=0.5, longest_diameter_mm=12.0, short_axis_mm=9.5),
    ]  # fmt: skip
    out = write_sr(
        ms, files, seg, tmp_path / "sr.dcm", response="PR", criteria="RECIST 1.1", time_point="02"
    )
    sr = hd.sr.srread(out)
    groups = {g.tracking_identifier: g for g in sr.content.get_volumetric_roi_measurement_groups()}
    assert set(groups) == {"L1", "N1"}
    got = {
        (m.name.meaning, m.derivation.meaning if m.derivation else None): (m.value, m.unit.value)
        for m in groups["L1"].get_measurements()
    }
    assert got == {
        ("Volume", None): (1.25, "mL"),
        ("Long axis", None): (22.5, "mm"),
        ("Short axis", None): (11.0, "mm"),
        ("Apparent Diffusion Coefficient", "Mean"): (1.1e-3, "mm2/s"),
        ("Apparent Diffusion Coefficient", "Median"): (1.0e-3, "mm2/s"),
        ("Ktrans", "Mean"): (0.25, "/min"),
    }
    sites = [f.value.meaning for f in groups["N1"].finding_sites]
    assert sites == ["Lymph node"]
    texts = _text_items(pydicom.dcmread(out))
    assert texts.count(("Time Point", "02")) == 3  # both lesion groups and the response group
    seg_ds = pydicom.dcmread(seg)
    ref = groups["N1"].referenced_segment
    assert ref.referenced_sop_instance_uid == seg_ds.SOPInstanceUID
    assert ref.referenced_segment_numbers == [2]
    resp = sr.content.get_image_measurement_groups()[0].get_qualitative_evaluations()[0]
    assert (resp.value.value, resp.value.scheme_designator) == ("C18058", "NCIt")
    # evidence: the source series and the SEG
    evidence = {
        s.SeriesInstanceUID for st in sr.CurrentRequestedProcedureEvidenceSequence
        for s in st.ReferencedSeriesSequence
    }  # fmt: skip
    assert evidence == {pydicom.dcmread(files[0]).SeriesInstanceUID, seg_ds.SeriesInstanceUID}


def _text_items(ds: pydicom.Dataset) -> list[tuple[str, str]]:
    """(concept meaning, text) of every TEXT content item of an SR, depth first."""
    out = []
    for item in getattr(ds, "ContentSequence", []):
        if item.ValueType == "TEXT":
            out.append((item.ConceptNameCodeSequence[0].CodeMeaning, str(item.TextValue)))
        out += _text_items(item)
    return out


def test_sr_rejects_unknown_lesion_and_response(tmp_path, source) -> None:
    files, vol = source
    seg = write_seg(labels_on(vol), LESIONS, files, tmp_path / "seg.dcm")
    with pytest.raises(ExportError, match="not a segment"):
        write_sr([LesionMeasurement("L9")], files, seg, tmp_path / "sr.dcm")
    with pytest.raises(ExportError, match="unknown response"):
        write_sr([LesionMeasurement("L1")], files, seg, tmp_path / "sr.dcm", response="XX")
    assert not (tmp_path / "sr.dcm").exists()


def strict_read(path: Path) -> pydicom.Dataset:
    """Read with pydicom's validation raising on any malformed value, touching every element."""
    from pydicom import config

    old = config.settings.reading_validation_mode
    config.settings.reading_validation_mode = config.RAISE
    try:
        ds = pydicom.dcmread(path)
        for elem in ds.iterall():
            _ = elem.value
    finally:
        config.settings.reading_validation_mode = old
    return ds


def test_exported_objects_pass_validation_and_reopen(tmp_path, source) -> None:
    files, vol = source
    pm = write_parametric_map(vol.with_data(vol.data / 7), files, tmp_path / "pm.dcm", name="T1")
    seg = write_seg(labels_on(vol), LESIONS, files, tmp_path / "seg.dcm")
    sr = write_sr([LesionMeasurement("L1", volume_ml=1.0)], files, seg, tmp_path / "sr.dcm")
    hd.pm.ParametricMap.from_dataset(strict_read(pm))
    hd.seg.Segmentation.from_dataset(strict_read(seg))
    hd.sr.Comprehensive3DSR.from_dataset(strict_read(sr))
    for f in files:  # the synthetic source series too, classic and enhanced
        strict_read(f)
    from tumorscope.protocol import DiffusionProtocol

    four_d = Volume(np.stack([vol.data, vol.data], axis=-1), vol.affine)
    (enhanced,) = write_series(four_d, tmp_path / "enh", suffix="dwi", enhanced=True,
                               protocol=DiffusionProtocol((0, 800)))  # fmt: skip
    assert strict_read(enhanced).NumberOfFrames == 2 * SHAPE[2]


def xa_style_enhanced(tmp_path: Path, vol: Volume) -> Path:
    """An enhanced DWI (2 b-values) with pixel measures and orientation in the per-frame
    functional groups only, as Siemens XA writes them."""
    import copy

    from tumorscope.protocol import DiffusionProtocol

    four_d = Volume(np.stack([vol.data, vol.data], axis=-1), vol.affine)
    (path,) = write_series(four_d, tmp_path / "xa", suffix="dwi", enhanced=True,
                           protocol=DiffusionProtocol((0, 800)))  # fmt: skip
    ds = pydicom.dcmread(path)
    shared = ds.SharedFunctionalGroupsSequence[0]
    for keyword in ("PixelMeasuresSequence", "PlaneOrientationSequence"):
        group = shared[keyword]
        del shared[keyword]
        for item in ds.PerFrameFunctionalGroupsSequence:
            item[keyword] = copy.deepcopy(group)
    ds.save_as(path)
    return path


def test_enhanced_source_with_per_frame_geometry(tmp_path, source) -> None:
    """Siemens XA30 enhanced DWI: pixel spacing and orientation per frame (once an
    AttributeError 'PixelMeasuresSequence')."""
    _, vol = source
    path = xa_style_enhanced(tmp_path, vol)
    src = pydicom.dcmread(path)
    adc = vol.with_data((vol.data * 1e-6).astype(np.float32))
    pm_path = write_parametric_map(adc, [src], tmp_path / "adc.dcm", name="ADC")
    assert "PixelMeasuresSequence" not in src.SharedFunctionalGroupsSequence[0]  # unchanged
    pm = hd.pm.ParametricMap.from_dataset(pydicom.dcmread(pm_path))
    assert pm.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
    for n, k in enumerate(frame_slices(pm, adc)):
        np.testing.assert_array_equal(pm.pixel_array[n].T, adc.data[:, :, k])
    shared = pm.SharedFunctionalGroupsSequence[0]
    spacing = src.PerFrameFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    np.testing.assert_allclose(
        [float(x) for x in shared.PixelMeasuresSequence[0].PixelSpacing],
        [float(x) for x in spacing],
    )
    seg_path = write_seg(labels_on(vol), LESIONS, [path], tmp_path / "seg.dcm")
    np.testing.assert_array_equal(read_segmentation(seg_path, vol)[0].data, labels_on(vol).data)
    sr_path = write_sr([LesionMeasurement("L1", volume_ml=1.0)], [path], seg_path,
                       tmp_path / "sr.dcm")  # fmt: skip
    assert hd.sr.srread(sr_path).content.get_volumetric_roi_measurement_groups()
    ds = pydicom.dcmread(path)  # cosines written with another rounding in one frame: the same
    ori = ds.PerFrameFunctionalGroupsSequence[1].PlaneOrientationSequence[0]
    ori.ImageOrientationPatient = [f"{float(x) + 2e-6:.8f}" for x in ori.ImageOrientationPatient]
    write_parametric_map(adc, [ds], tmp_path / "rounded.dcm", name="ADC")
    ds = pydicom.dcmread(path)  # frames that disagree: a clear error, not a traceback
    ds.PerFrameFunctionalGroupsSequence[1].PixelMeasuresSequence[0].PixelSpacing = [9, 9]
    with pytest.raises(ExportError, match="differ in PixelMeasuresSequence"):
        write_parametric_map(adc, [ds], tmp_path / "bad.dcm", name="ADC")


def test_source_without_type2_patient_and_study_attributes(tmp_path, source) -> None:
    """De-identified elsewhere: no PatientSex, StudyID, birth date, accession, referrer."""
    files, vol = source
    missing = ("PatientSex", "StudyID", "PatientBirthDate", "AccessionNumber",
               "ReferringPhysicianName")  # fmt: skip
    stripped = []
    for f in files:
        ds = pydicom.dcmread(f)
        for keyword in missing:
            delattr(ds, keyword)
        stripped.append(ds)
    pm = write_parametric_map(vol, stripped, tmp_path / "pm.dcm", name="T1")
    seg = write_seg(labels_on(vol), LESIONS, stripped, tmp_path / "seg.dcm")
    sr = write_sr([LesionMeasurement("L1", volume_ml=1.0)], stripped, seg, tmp_path / "sr.dcm")
    for path in (pm, seg, sr):
        ds = strict_read(path)
        for keyword in missing:  # Type 2: present, empty
            assert keyword in ds and not ds[keyword].value, (path.name, keyword)
        assert ds.PatientID == stripped[0].PatientID
    assert all(keyword not in stripped[0] for keyword in missing)  # the sources are unchanged


def test_parametric_map_window_and_laterality(tmp_path, source) -> None:
    """Windows below 1 (ADC in mm2/s) need LINEAR_EXACT; Laterality (Type 2C) is present."""
    files, vol = source
    adc = vol.with_data((vol.data * 1e-6).astype(np.float32))
    ds = pydicom.dcmread(write_parametric_map(adc, files, tmp_path / "adc.dcm", name="ADC"))
    voi = ds.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence[0]
    assert float(voi.WindowWidth) < 1 and voi.VOILUTFunction == "LINEAR_EXACT"
    assert "Laterality" in ds and not ds.Laterality
    src = pydicom.dcmread(files[0])
    src.Laterality = "L"
    ds = pydicom.dcmread(write_parametric_map(adc, [src], tmp_path / "l.dcm", name="2cxm.Fp",
                                              unit="mL/100mL/min"))  # fmt: skip
    assert ds.Laterality == "L" and ds.ContentLabel == "MAP_2CXM_FP"
