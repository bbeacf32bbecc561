"""DICOM import: geometry, measurements, vendor tags, messy folders, atomic output, roles."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pydicom")
pytest.importorskip("highdicom")

import pydicom

from tumorscope.errors import DataError
from tumorscope.io.dicom import (
    _estimate_baseline,
    affine_from_frames,
    import_dicom,
    read_series,
    scan_dicom,
)
from tumorscope.io.dicom_synth import SynthPatient, SynthStudy, oblique_affine, write_series
from tumorscope.protocol import (
    DiffusionProtocol,
    DynamicProtocol,
    InversionRecoveryProtocol,
    MultiEchoProtocol,
    VFAProtocol,
)
from tumorscope.volume import Volume


def volume(n: int, *, seed: int = 0, shape: tuple[int, int, int] = (10, 8, 5)) -> Volume:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 1000, (*shape, n)).astype(np.float32)
    return Volume(data if n > 1 else data[..., 0], oblique_affine())


def read_one(folder: Path, **kw: object):  # type: ignore[no-untyped-def]
    scan = scan_dicom(folder)
    assert not scan.problems, scan.problems
    assert len(scan.series) == 1
    return read_series(scan.series[0], **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------ geometry and values
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


def test_voxel_world_position_by_hand(tmp_path: Path) -> None:
    """Voxel (i, j, k) is column i, row j of slice k; LPS IPP becomes RAS by flipping x, y."""
    vol = volume(1)
    files = write_series(vol, tmp_path, suffix="T2w", echo_time_ms=90.0)
    ds = min((pydicom.dcmread(f) for f in files), key=lambda d: int(d.InstanceNumber))
    ipp = np.array([float(x) for x in ds.ImagePositionPatient])
    iop = np.array([float(x) for x in ds.ImageOrientationPatient])
    r, c = 3, 7
    lps = ipp + iop[:3] * float(ds.PixelSpacing[1]) * c + iop[3:] * float(ds.PixelSpacing[0]) * r
    ras = lps * [-1, -1, 1]
    sd = read_one(tmp_path)
    np.testing.assert_allclose(sd.volume.affine @ [c, r, 0, 1], [*ras, 1], atol=1e-4)
    assert ds.pixel_array[r, c] == vol.data[c, r, 0]


def test_affine_from_frames_rejects_a_gap() -> None:
    pos = [np.array([0.0, 0.0, z]) for z in (0.0, 4.0, 8.0, 16.0)]
    with pytest.raises(DataError, match="not evenly spaced"):
        affine_from_frames(pos, np.array([1.0, 0, 0, 0, 1, 0]), (1.0, 1.0))
    a = affine_from_frames(pos[:3], np.array([1.0, 0, 0, 0, 1, 0]), (2.0, 3.0))
    np.testing.assert_allclose(a, np.diag([-3.0, -2.0, 4.0, 1.0]))


def test_standard_b_tag_and_t2w_guess(tmp_path: Path) -> None:
    write_series(
        volume(3),
        tmp_path / "a",
        suffix="dwi",
        protocol=DiffusionProtocol((0, 50, 800)),
        bvalue_tags="standard",
        vendor="ge",
    )
    assert read_one(tmp_path / "a").protocol == DiffusionProtocol((0, 50, 800))
    write_series(volume(1), tmp_path / "b", suffix="T2w", echo_time_ms=95.0)
    sd = read_one(tmp_path / "b")
    assert sd.suffix == "T2w" and sd.protocol is None
    assert sd.sidecar["EchoTime"] == pytest.approx(0.095)


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


@pytest.mark.parametrize("enhanced", [False, True])
def test_vfa_multiecho_ir(tmp_path: Path, enhanced: bool) -> None:
    cases = [
        ("VFA", VFAProtocol((2.0, 5.0, 10.0, 15.0), 5.0), "VFA"),
        ("MEGRE", MultiEchoProtocol((2.0, 5.0, 8.0), tr_ms=40.0, flip_angle_deg=20.0), "MEGRE"),
        ("MESE", MultiEchoProtocol((10.0, 20.0, 30.0), tr_ms=2000.0), "MESE"),
        ("IRT1", InversionRecoveryProtocol((100.0, 500.0, 1500.0), tr_ms=5000.0), "IRT1"),
    ]
    for suffix, proto, expected in cases:
        vol = volume(proto.n_measurements)
        write_series(vol, tmp_path / suffix, suffix=suffix, protocol=proto, enhanced=enhanced)
        sd = read_one(tmp_path / suffix)
        assert sd.suffix == expected
        assert sd.protocol == proto
        np.testing.assert_array_equal(sd.volume.data, vol.data)
    vfa = read_one(tmp_path / "VFA")
    assert vfa.sidecar["FlipAngle"] == [2.0, 5.0, 10.0, 15.0]
    assert vfa.sidecar["RepetitionTime"] == pytest.approx(0.005)


@pytest.mark.parametrize("vendor", ["siemens", "ge", "philips"])
@pytest.mark.parametrize("enhanced", [False, True])
def test_dynamic_frame_times_per_vendor(tmp_path: Path, vendor: str, enhanced: bool) -> None:
    times = (0.0, 3.5, 7.0, 10.5, 22.5, 34.5)
    proto = DynamicProtocol(times, 15.0, 5.0, 2, te_ms=1.5)
    vol = volume(len(times))
    write_series(vol, tmp_path, suffix="dce", protocol=proto, vendor=vendor, enhanced=enhanced)
    sd = read_one(tmp_path, dce_baseline_frames=2)
    assert sd.suffix == "dce"
    assert sd.protocol == proto
    assert sd.sidecar["BaselineFramesSource"] == "given at import"
    np.testing.assert_array_equal(sd.volume.data, vol.data)


def test_siemens_dynamic_has_only_acquisition_time(tmp_path: Path) -> None:
    proto = DynamicProtocol((0.0, 5.0, 10.0), 15.0, 5.0, 1)
    files = write_series(volume(3), tmp_path, suffix="dce", protocol=proto, vendor="siemens")
    ds = pydicom.dcmread(files[0])
    assert "TriggerTime" not in ds and "TemporalPositionIdentifier" not in ds
    assert read_one(tmp_path, dce_baseline_frames=1).protocol.frame_times_s == (0.0, 5.0, 10.0)


def test_baseline_estimate_finds_the_onset() -> None:
    rng = np.random.default_rng(1)
    data = 100 + rng.normal(0, 1, (20, 20, 3, 30))
    data[5:7, 5:7, :, 8:] += 400.0  # an artery enhancing from frame 8
    assert _estimate_baseline(data) == 8


# ------------------------------------------------------------------ cross-check with dcm2niix
def test_geometry_agrees_with_dcm2niix(tmp_path: Path) -> None:
    """dcm2niix is an independent implementation: same voxels at the same world positions."""
    nib = pytest.importorskip("nibabel")
    exe = shutil.which("dcm2niix")
    if exe is None:
        pytest.skip("dcm2niix binary not installed")
    vol = volume(3)
    write_series(vol, tmp_path / "in", suffix="dwi", protocol=DiffusionProtocol((0, 500, 1000)))
    (tmp_path / "out").mkdir()
    subprocess.run(
        [exe, "-z", "n", "-f", "x", "-o", str(tmp_path / "out"), str(tmp_path / "in")],
        check=True,
        capture_output=True,
    )
    theirs = nib.as_closest_canonical(nib.load(tmp_path / "out" / "x.nii"))
    mine = read_one(tmp_path / "in").volume
    ours = nib.as_closest_canonical(nib.Nifti1Image(mine.data, mine.affine))
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(ours.dataobj), np.asarray(theirs.dataobj))


# ------------------------------------------------------------------ messy folders
def _messy(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    src = tmp_path / "dicom"
    p1 = SynthStudy(
        SynthPatient("ONE^ALICE", "MRN111", "19700101", "F"),
        dt.date(2026, 1, 5),
        accession="ACC111",
    )
    p1b = SynthStudy(p1.patient, dt.date(2026, 2, 2), accession="ACC112")
    p2 = SynthStudy(
        SynthPatient("TWO^BOB", "MRN222", "19650303", "M"), dt.date(2026, 1, 7), accession="ACC221"
    )
    dwi = DiffusionProtocol((0, 500, 1000))
    write_series(volume(3), src / "x", suffix="dwi", protocol=dwi, study=p1, series_number=1)
    write_series(volume(1), src / "x", suffix="T2w", study=p1, series_number=2, echo_time_ms=90)
    write_series(
        volume(3), src / "y", suffix="dwi", protocol=dwi, study=p1b, series_number=1, vendor="ge"
    )
    write_series(
        volume(3),
        src / "z",
        suffix="dwi",
        protocol=dwi,
        study=p2,
        series_number=1,
        vendor="philips",
        enhanced=True,
    )
    # a series with a missing slice
    gap = write_series(
        volume(1, seed=3), src / "gap", suffix="T2w", study=p2, series_number=5, echo_time_ms=90
    )
    by_pos = sorted(gap, key=lambda f: float(pydicom.dcmread(f).SliceLocation))
    by_pos[2].unlink()
    # a series whose slices disagree on orientation
    bad = write_series(
        volume(1, seed=4), src / "ori", suffix="T2w", study=p2, series_number=6, echo_time_ms=90
    )
    ds = pydicom.dcmread(bad[1])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.save_as(bad[1])
    # a duplicated instance, a truncated file and a non-DICOM file
    t2 = sorted((src / "x").iterdir())
    shutil.copy(t2[0], src / "copy.dcm")
    victim = write_series(
        volume(1, seed=5), src / "trunc", suffix="T2w", study=p2, series_number=7, echo_time_ms=90
    )[0]
    victim.write_bytes(victim.read_bytes()[:-100])
    (src / "notes.txt").write_text("not a DICOM file")
    return src, {"gap": by_pos[0], "ori": bad[1], "copy": src / "copy.dcm", "trunc": victim}


def test_messy_folder_reports_and_imports_the_rest(tmp_path: Path) -> None:
    src, bad = _messy(tmp_path)
    rep = import_dicom(src, tmp_path / "study")
    msgs = [str(p) for p in rep.problems]

    def reported(path: Path, severity: str, text: str) -> bool:
        return any(
            p.severity == severity
            and text in p.message
            and (str(path) in p.file or p.file in str(path))
            for p in rep.problems
        )

    assert reported(src / "notes.txt", "warning", "not a DICOM file"), msgs
    assert any("duplicate" in m and "copy.dcm" in m for m in msgs), msgs
    assert reported(bad["trunc"], "warning", "truncated"), msgs
    assert any(
        p.severity == "error" and "ImageOrientationPatient" == p.field for p in rep.problems
    ), msgs
    assert any(p.severity == "error" and "missing slice" in p.message for p in rep.problems), msgs
    assert rep.n_rejected == 3  # gap, orientation, and the truncated series (one slice short)
    files = sorted(r["file"] for r in rep.series)
    assert files == [
        "sub-001/ses-01/anat/sub-001_ses-01_T2w.nii.gz",
        "sub-001/ses-01/dwi/sub-001_ses-01_dwi.nii.gz",
        "sub-001/ses-02/dwi/sub-001_ses-02_dwi.nii.gz",
        "sub-002/ses-01/dwi/sub-002_ses-01_dwi.nii.gz",
    ]
    from tumorscope.io import open_study, validate_study

    st = open_study(tmp_path / "study")
    assert [v.date for v in st.subjects["001"]] == [dt.date(2026, 1, 5), dt.date(2026, 2, 2)]
    assert st.subjects["001"].visits["01"].series["dwi"].protocol.bvalues == (0.0, 500.0, 1000.0)
    errors = [p for p in validate_study(tmp_path / "study") if p.severity == "error"]
    assert not errors
    assert rep.log_file == tmp_path / "study-import-dicom.log"
    assert rep.log_file.read_text().count("\n") == len(rep.problems)


def test_nothing_written_when_nothing_imports(tmp_path: Path) -> None:
    src = tmp_path / "dicom"
    src.mkdir()
    (src / "a.txt").write_text("hello")
    with pytest.raises(DataError, match="no importable MR series"):
        import_dicom(src, tmp_path / "study")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dicom"]


def test_existing_study_is_not_replaced_without_overwrite(tmp_path: Path) -> None:
    write_series(volume(1), tmp_path / "dicom", suffix="T2w", echo_time_ms=90)
    (tmp_path / "study").mkdir()
    with pytest.raises(DataError, match="exists"):
        import_dicom(tmp_path / "dicom", tmp_path / "study")


def test_role_override_argument_and_study_yaml(tmp_path: Path) -> None:
    import yaml

    write_series(
        volume(1),
        tmp_path / "dicom",
        suffix="T2w",
        echo_time_ms=20,
        series_description="my weird t1",
    )
    rep = import_dicom(tmp_path / "dicom", tmp_path / "study")
    assert rep.series[0]["suffix"] == "T1w"
    rep = import_dicom(
        tmp_path / "dicom", tmp_path / "study", roles={"*weird*": "T2w"}, overwrite=True
    )
    assert rep.series[0]["suffix"] == "T2w" and "set by the user" in rep.series[0]["reason"]
    manifest = yaml.safe_load((tmp_path / "study" / "study.yaml").read_text())
    assert manifest["dicom"]["roles"] == {"*weird*": "T2w"}
    # a re-import keeps the override written in study.yaml, and what the user added there
    manifest["subjects"]["001"]["treatment"] = {"agent": "nivolumab", "start_date": "2026-01-09"}
    manifest["criteria"] = ["irecist"]
    (tmp_path / "study" / "study.yaml").write_text(yaml.safe_dump(manifest))
    rep = import_dicom(tmp_path / "dicom", tmp_path / "study", overwrite=True)
    assert rep.series[0]["suffix"] == "T2w"
    again = yaml.safe_load((tmp_path / "study" / "study.yaml").read_text())
    assert again["subjects"]["001"]["treatment"]["agent"] == "nivolumab"
    assert again["criteria"] == ["irecist"]
    assert not list(tmp_path.glob(".study-*"))


# ------------------------------------------------------------------ RT-STRUCT
def test_points_in_polygon_even_odd() -> None:
    from tumorscope.io.dicom import _points_in_polygon

    square = np.array([[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0]])
    px, py = np.array([1.0, 3.9, 4.1, -0.1, 2.0]), np.array([1.0, 3.9, 2.0, 2.0, 4.5])
    np.testing.assert_array_equal(_points_in_polygon(px, py, square), [1, 1, 0, 0, 0])


def test_rtstruct_round_trip_and_holes(tmp_path: Path) -> None:
    from tumorscope.io.dicom import read_rtstruct
    from tumorscope.io.dicom_synth import lps_affine, write_rtstruct

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
    a = lps_affine(vol.affine)
    inner = [
        a @ np.array([i, j, 2, 1.0]) for i, j in ((1.5, 1.5), (5.5, 1.5), (5.5, 5.5), (1.5, 5.5))
    ]
    outer = [
        a @ np.array([i, j, 2, 1.0]) for i, j in ((0.5, 0.5), (6.5, 0.5), (6.5, 6.5), (0.5, 6.5))
    ]
    seq = ds.ROIContourSequence[0].ContourSequence
    for poly in (outer, inner):
        item = pydicom.Dataset()
        item.ContourGeometricType = "CLOSED_PLANAR"
        item.NumberOfContourPoints = 4
        item.ContourData = [f"{x:.6f}" for p in poly for x in p[:3]]
        seq.append(item)
    ds.save_as(out)
    back, _ = read_rtstruct(out, vol)
    expected = lab.copy()
    expected[1:7, 1:7, 2] = 1
    expected[2:6, 2:6, 2] = 0
    np.testing.assert_array_equal(back.data, expected)


def test_rtstruct_off_grid_is_an_error(tmp_path: Path) -> None:
    from tumorscope.io.dicom import read_rtstruct
    from tumorscope.io.dicom_synth import write_rtstruct

    vol = volume(1)
    files = write_series(vol, tmp_path / "src", suffix="T2w", echo_time_ms=90)
    lab = np.zeros(vol.shape, np.int32)
    lab[2:4, 2:4, 2] = 1
    rows = [{"label": 1, "lesion_id": "L1", "organ": "", "target": True, "nodal": False}]
    out = write_rtstruct(vol.with_data(lab), rows, files, tmp_path / "rtss.dcm")
    shifted = Volume(vol.data, vol.affine @ np.diag([1.0, 1.0, 0.7, 1.0]))
    with pytest.raises(DataError, match="does not lie on a slice"):
        read_rtstruct(out, shifted)


def test_import_reads_rtstruct_lesions(tmp_path: Path) -> None:
    from tumorscope.io import open_study
    from tumorscope.io.dicom_synth import write_rtstruct

    vol = volume(1)
    files = write_series(vol, tmp_path / "dicom", suffix="T2w", echo_time_ms=90)
    lab = np.zeros(vol.shape, np.int32)
    lab[2:5, 2:6, 1:3] = 1
    rows = [{"label": 1, "lesion_id": "L1", "organ": "liver", "target": True, "nodal": False}]
    write_rtstruct(vol.with_data(lab), rows, files, tmp_path / "dicom" / "rtss.dcm")
    # a structure set that references a series that is not there is reported
    orphan = pydicom.dcmread(tmp_path / "dicom" / "rtss.dcm")
    ref = orphan.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    ref.RTReferencedSeriesSequence[0].SeriesInstanceUID = "1.2.3.4"
    orphan.SOPInstanceUID = "1.2.3.5"
    orphan.save_as(tmp_path / "dicom" / "orphan.dcm")
    rep = import_dicom(tmp_path / "dicom", tmp_path / "study")
    assert [(Path(p.file).name, p.severity) for p in rep.problems] == [("orphan.dcm", "warning")]
    les = open_study(tmp_path / "study").subjects["001"].visits["01"].lesions
    np.testing.assert_array_equal(les.load_labels().data, lab)
    assert les.table[0].lesion_id == "L1" and les.table[0].organ == "liver"


def test_two_series_of_one_kind_get_run_numbers(tmp_path: Path) -> None:
    write_series(volume(1), tmp_path / "dicom", suffix="T2w", echo_time_ms=90, series_number=1)
    write_series(volume(1, seed=2), tmp_path / "dicom", suffix="T2w", echo_time_ms=90,
                 series_number=2)  # fmt: skip
    rep = import_dicom(tmp_path / "dicom", tmp_path / "study")
    assert [r["file"] for r in rep.series] == [
        "sub-001/ses-01/anat/sub-001_ses-01_T2w.nii.gz",
        "sub-001/ses-01/anat/sub-001_ses-01_run-2_T2w.nii.gz",
    ]


# ------------------------------------------------------------------ property: any geometry
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=12, deadline=None)
@given(
    angles=st.tuples(*[st.floats(-180, 180)] * 3),
    voxel=st.tuples(*[st.floats(0.3, 6.0)] * 3),
    origin=st.tuples(*[st.floats(-200, 200)] * 3),
    shape=st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 4)),
    flip=st.booleans(),
    enhanced=st.booleans(),
)
def test_any_geometry_round_trips(angles, voxel, origin, shape, flip, enhanced) -> None:  # type: ignore[no-untyped-def]
    """Any rotation, voxel size, origin and handedness comes back as an equivalent grid."""
    import tempfile

    aff = oblique_affine(angles_deg=angles, voxel_mm=voxel, origin_mm=origin)
    if flip:  # a left-handed voxel grid (slices stacked against the normal)
        aff = aff @ np.diag([1.0, 1.0, -1.0, 1.0])
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    vol = Volume(data, aff)
    with tempfile.TemporaryDirectory() as d:
        write_series(vol, Path(d), suffix="T2w", echo_time_ms=90, enhanced=enhanced)
        got = read_one(Path(d)).volume
    # voxel centres carry the same values at the same world positions
    ijk = np.indices(shape).reshape(3, -1)
    world = aff[:3, :3] @ ijk + aff[:3, 3:4]
    back = np.linalg.inv(got.affine)
    idx = back[:3, :3] @ world + back[:3, 3:4]
    np.testing.assert_allclose(idx, np.round(idx), atol=1e-3)
    np.testing.assert_array_equal(got.data[tuple(np.round(idx).astype(int))], data.reshape(-1))
    np.testing.assert_allclose(got.voxel_sizes[:2], voxel[:2], rtol=1e-5)


def test_role_override_with_bids_entities(tmp_path: Path) -> None:
    proto = MultiEchoProtocol((2.0, 5.0, 8.0), tr_ms=40.0)
    write_series(volume(3), tmp_path / "dicom", suffix="MEGRE", protocol=proto,
                 series_description="gre_me_t2star_ce-ferumoxytol")  # fmt: skip
    rep = import_dicom(
        tmp_path / "dicom", tmp_path / "study", roles={"*_ce-ferumoxytol": "ce-ferumoxytol_MEGRE"}
    )
    assert rep.series[0]["file"] == "sub-001/ses-01/anat/sub-001_ses-01_ce-ferumoxytol_MEGRE.nii.gz"
    assert rep.series[0]["suffix"] == "MEGRE"
    with pytest.raises(DataError, match="entity-value"):
        import_dicom(tmp_path / "dicom", tmp_path / "s2", roles={"*": "ce ferumoxytol_MEGRE"})


def test_phase_images_in_a_magnitude_series_are_left_out(tmp_path: Path) -> None:
    from pydicom.uid import generate_uid

    proto = MultiEchoProtocol((2.0, 5.0, 8.0), tr_ms=40.0)
    vol = volume(3)
    files = write_series(vol, tmp_path / "dicom", suffix="MEGRE", protocol=proto)
    for f in files:  # the scanner also saved a phase image of every slice and echo
        ds = pydicom.dcmread(f)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "P", "ND"]
        ds.SOPInstanceUID = generate_uid()
        ds.PixelData = (ds.pixel_array + 7).astype(np.uint16).tobytes()
        ds.save_as(tmp_path / "dicom" / f"phase-{f.name}")
    rep = import_dicom(tmp_path / "dicom", tmp_path / "study")
    assert [p.field for p in rep.problems] == ["ImageType"]
    assert "only the magnitude images" in rep.problems[0].message
    from tumorscope.io import open_study

    s = open_study(tmp_path / "study").subjects["001"].visits["01"].series["t2star"]
    np.testing.assert_array_equal(s.load().data, vol.data)
    assert s.protocol == proto


def test_vfa_split_into_series_per_flip_angle_is_merged_on_request(tmp_path: Path) -> None:
    """A scanner wrote one series per flip angle; --merge-split makes one VFA series."""
    vol = volume(4)
    flips = (2.0, 5.0, 10.0, 15.0)
    for n, fa in enumerate(flips):
        files = write_series(vol.frame(n), tmp_path / "dicom", suffix="T1w", series_number=n + 1,
                             repetition_time_ms=5.0, echo_time_ms=2.0)  # fmt: skip
        for f in files:  # same sequence, only the flip angle differs
            ds = pydicom.dcmread(f)
            ds.FlipAngle = fa
            ds.save_as(f)
    # an unrelated T2w of the same study is left alone
    write_series(volume(1, seed=9), tmp_path / "dicom", suffix="T2w", series_number=9,
                 echo_time_ms=90)  # fmt: skip
    rep = import_dicom(tmp_path / "dicom", tmp_path / "plain")
    assert sorted(r["suffix"] for r in rep.series) == ["T1w"] * 4 + ["T2w"]
    rep = import_dicom(tmp_path / "dicom", tmp_path / "merged", merge_split=True)
    assert sorted(r["suffix"] for r in rep.series) == ["T2w", "VFA"]
    assert any("merged 4 series that differ only in flip angle" in p.message for p in rep.problems)
    from tumorscope.io import open_study

    s = open_study(tmp_path / "merged").subjects["001"].visits["01"].series["t1_vfa"]
    assert s.protocol == VFAProtocol(flips, 5.0)
    np.testing.assert_array_equal(s.load().data, vol.data)


@pytest.mark.parametrize("enhanced", [False, True])
def test_dynamic_series_running_past_midnight(tmp_path: Path, enhanced: bool) -> None:
    times = (0.0, 10.0, 20.0, 30.0)
    proto = DynamicProtocol(times, 15.0, 5.0, 1)
    study = SynthStudy(time=dt.time(23, 58, 55))  # the series starts at 23:59:55
    write_series(volume(4), tmp_path, suffix="dce", protocol=proto, study=study, enhanced=enhanced)
    assert read_one(tmp_path, dce_baseline_frames=1).protocol.frame_times_s == times


def test_siemens_mosaic_is_rejected_not_misread(tmp_path: Path) -> None:
    files = write_series(volume(3), tmp_path / "dicom", suffix="dwi",
                         protocol=DiffusionProtocol((0, 500, 1000)))  # fmt: skip
    for f in files:
        ds = pydicom.dcmread(f)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE", "ND", "MOSAIC"]
        ds.save_as(f)
    write_series(volume(1), tmp_path / "dicom", suffix="T2w", echo_time_ms=90, series_number=2)
    rep = import_dicom(tmp_path / "dicom", tmp_path / "study")
    assert [(p.severity, p.field) for p in rep.problems] == [("error", "ImageType")]
    assert "mosaic" in rep.problems[0].message
    assert [r["suffix"] for r in rep.series] == ["T2w"]
