"""Real scanner DICOM against dcm2niix's reference conversions, in world space.

The sets are dcm2niix's validation sets (``tests/data/dicom-real/README.md`` says which files
were copied and what each test reads). Every image series read by tumorscope must agree with the
reference after both are reoriented to the closest canonical orientation: voxel values equal,
voxel size within 1e-4 mm, affine within 1e-3 mm, volumes in the same order, TR / TE / flip
angle equal. The same checks run over the whole ``../shared/dicom-real`` when it is there.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pydicom")

import nibabel as nib

from tumorscope.io.dicom import read_series, scan_dicom

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data" / "dicom-real"
SHARED = HERE.parents[2] / "shared" / "dicom-real"

#: the copied subset: (set, input folder below the set, reference stem, reference volumes used)
SUBSET = [
    ("dcm_qa_nih", "In/20180918Si/mr_0003", "EPI_PE=AP_3", None),
    ("dcm_qa_nih", "In/20180918GE/mr_0004", "DCM2NIIX_regression_test_4", [0]),
    ("dcm_qa_mosaic", "In/ep2d_Asc_HF_10", "10_ep2d_Asc_HF", [0, 1, 2]),
]
TRANSFER_SYNTAX_FILES = ["1.dcm", "2.dcm", "4.dcm", "5.dcm", "7.dcm", "9.dcm"]


def canonical(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    return nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data), affine))


def reference_series(ref_dir: Path) -> dict[tuple[int, str], Path]:
    """The reference NIfTI files of a set by series number and description."""
    out: dict[tuple[int, str], Path] = {}
    for js in sorted(ref_dir.glob("*.json")):
        side = json.loads(js.read_text())
        if side.get("SeriesNumber") is not None:
            key = (int(side["SeriesNumber"]), side.get("SeriesDescription", ""))
            out.setdefault(key, js.with_name(js.name[:-5] + ".nii.gz"))
    return out


def assert_agrees(
    ours_data: np.ndarray,
    ours_affine: np.ndarray,
    sidecar: dict,
    ref_nii: Path,
    volumes: list[int] | None = None,
) -> None:
    """Our series equals dcm2niix's reference in world space (``volumes``: reference subset)."""
    ref = nib.load(ref_nii)
    ref_data = np.asanyarray(ref.dataobj)
    if volumes is not None:
        ref_data = ref_data[..., volumes] if ref_data.ndim == 4 else ref_data
    ref_data = np.squeeze(ref_data)
    ours_data = np.squeeze(ours_data)
    a = canonical(ours_data, ours_affine)
    b = canonical(ref_data, ref.affine)
    assert a.shape == b.shape, f"{ref_nii.name}: shape {a.shape} vs {b.shape}"
    np.testing.assert_allclose(a.header.get_zooms()[:3], b.header.get_zooms()[:3], atol=1e-4)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-3, err_msg=ref_nii.name)
    # every volume equal, in the same order
    np.testing.assert_array_equal(
        np.asanyarray(a.dataobj), np.asanyarray(b.dataobj), err_msg=ref_nii.name
    )
    ref_side = json.loads(ref_nii.with_name(ref_nii.name[:-7] + ".json").read_text())
    for key in ("RepetitionTime", "EchoTime", "FlipAngle", "TotalReadoutTime"):
        if key in ref_side:
            assert sidecar[key] == pytest.approx(ref_side[key], abs=1e-6), (ref_nii.name, key)
    if "PhaseEncodingDirection" in ref_side:
        np.testing.assert_allclose(
            world_direction(sidecar["PhaseEncodingDirection"], ours_affine),
            world_direction(ref_side["PhaseEncodingDirection"], ref.affine),
            atol=1e-6,
            err_msg=f"{ref_nii.name}: PhaseEncodingDirection",
        )
    if "SliceTiming" in ref_side and volumes is None:  # (a part of a series has no timing)
        np.testing.assert_allclose(
            timing_by_position(sidecar["SliceTiming"], ours_affine, ours_affine),
            timing_by_position(ref_side["SliceTiming"], ref.affine, ours_affine),
            atol=1e-6,
            err_msg=f"{ref_nii.name}: SliceTiming",
        )


def world_direction(pe: str, affine: np.ndarray) -> np.ndarray:
    """A BIDS phase-encoding direction (``j-``) as a unit vector in world space."""
    v = affine[:3, "ijk".index(pe[0])]
    return (-1 if pe.endswith("-") else 1) * v / np.linalg.norm(v)


def timing_by_position(timing: list, affine: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Slice times sorted by the slices' positions along ``frame``'s slice normal."""
    normal = frame[:3, 2] / np.linalg.norm(frame[:3, 2])
    pos = [float((affine[:3, 3] + k * affine[:3, 2]) @ normal) for k in range(len(timing))]
    return np.asarray(timing, dtype=float)[np.argsort(pos)]


def check_folder(folder: Path, ref_dir: Path, volumes: list[int] | None = None) -> int:
    """Read every image series under ``folder`` and compare it with its reference."""
    scan = scan_dicom(folder)
    refs = reference_series(ref_dir)
    assert scan.series, f"no series under {folder}"
    for s in scan.series:
        sd = read_series(s)
        key = (int(s.text("SeriesNumber")), s.text("SeriesDescription"))
        assert key in refs, f"{folder}: no reference for series {key}"
        assert_agrees(sd.volume.data, sd.volume.affine, sd.sidecar, refs[key], volumes)
    return len(scan.series)


#: (input folder, reference folder, reference stems, volumes): the copy in tests/data always
#: (a part of some series, against those volumes of the reference), and every whole set of
#: ../shared/dicom-real when it is there (CI has it). Never skipped for want of data.
AGREEMENT_CASES = [
    pytest.param(DATA / name / sub, DATA / name / "Ref", stem, volumes, id=f"copy-{name}-{stem}")
    for name, sub, stem, volumes in SUBSET
] + [
    pytest.param(SHARED / name / "In", SHARED / name / "Ref", None, None, id=f"shared-{name}")
    for name in ("dcm_qa_nih", "dcm_qa_mosaic", "dcm_qa_deident")
    if SHARED.is_dir()
]


@pytest.mark.parametrize(("folder", "refs", "stem", "volumes"), AGREEMENT_CASES)
def test_real_series_agree_with_dcm2niix(
    tmp_path: Path, folder: Path, refs: Path, stem: str | None, volumes: list[int] | None
) -> None:
    if stem is not None:  # the copy: only the reference of the copied series
        ref = tmp_path / "Ref"
        ref.mkdir()
        for f in refs.glob(stem + ".*"):
            shutil.copy(f, ref)
        refs = ref
    assert check_folder(folder, refs, volumes) >= 1


@pytest.mark.parametrize(
    "root",
    [pytest.param(DATA / "dcm_qa_ts", id="copy")]
    + ([pytest.param(SHARED / "dcm_qa_ts", id="shared")] if SHARED.is_dir() else []),
)
def test_every_lossless_transfer_syntax_decodes_to_the_same_pixels(
    tmp_path: Path, root: Path
) -> None:
    """One Siemens image in every lossless transfer syntax (the copy: six of the nine; the
    shared set: all nine, each against its own reference): the reference in world space, and
    the same pixels in every file."""
    files = sorted((root / "In").glob("*.dcm"))
    assert len(files) == (9 if root.parent == SHARED else len(TRANSFER_SYNTAX_FILES))
    first = None
    for dcm in files:
        one = tmp_path / dcm.stem
        one.mkdir()
        shutil.copy(dcm, one)
        (s,) = scan_dicom(one).series
        sd = read_series(s)
        own = root / "Ref" / f"{dcm.stem}.nii.gz"
        ref = own if own.is_file() else root / "Ref" / "1.nii.gz"
        assert_agrees(sd.volume.data, sd.volume.affine, sd.sidecar, ref)
        if first is None:
            first = sd.volume.data
        np.testing.assert_array_equal(sd.volume.data, first, err_msg=dcm.name)


# --------------------------------------------------------------------------- directions
def fsl_bvec(affine: np.ndarray, g: np.ndarray) -> np.ndarray:
    """A world-space gradient direction as FSL/BIDS write it for an image with ``affine``."""
    r = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    v = r.T @ g
    if np.linalg.det(affine[:3, :3]) > 0:
        v[0] = -v[0]
    return v


@pytest.mark.parametrize("perm", [(0, 1, 2), (1, 0, 2), (2, 0, 1)])
@pytest.mark.parametrize("flips", [(1, 1, 1), (1, -1, 1), (-1, -1, -1), (1, 1, -1)])
def test_directions_are_mapped_from_dcm2niix_frame_to_ours(perm: tuple, flips: tuple) -> None:
    from tumorscope.io.dicom.convert import _axis_map, _bvecs, _phase_encoding

    theta = 0.3
    rot = np.array(
        [[1, 0, 0], [0, np.cos(theta), -np.sin(theta)], [0, np.sin(theta), np.cos(theta)]]
    )
    ours = np.eye(4)
    ours[:3, :3] = rot @ np.diag([0.9, 1.1, 3.0]) @ np.diag([-1, 1, 1])
    # dcm2niix's image: our axes permuted and flipped
    theirs = np.eye(4)
    for j, (i, s) in enumerate(zip(perm, flips, strict=True)):
        theirs[:3, j] = s * ours[:3, i]
    mapping = _axis_map(ours, theirs)
    assert mapping is not None
    rng = np.random.default_rng(1)
    g = rng.normal(size=(5, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    raw = np.stack([fsl_bvec(theirs, v) for v in g]).T  # 3 x n, as in dcm2niix's .bvec
    got = _bvecs(raw, theirs, ours, mapping)
    np.testing.assert_allclose(got, [fsl_bvec(ours, v) for v in g], atol=1e-12)
    for pe in ("i", "i-", "j", "j-", "k", "k-"):
        mine = _phase_encoding(pe, *mapping)
        assert mine is not None
        np.testing.assert_allclose(
            world_direction(mine, ours), world_direction(pe, theirs), atol=1e-12
        )


def test_axes_that_do_not_match_are_refused() -> None:
    from tumorscope.io.dicom.convert import _axis_map

    tilted = np.eye(4)
    c, s = np.cos(0.5), np.sin(0.5)
    tilted[:2, :2] = [[c, -s], [s, c]]
    assert _axis_map(np.eye(4), tilted) is None


# --------------------------------------------------------------------------- the importer
def test_import_of_the_copied_sets_writes_every_series_with_its_vendor_fields(
    tmp_path: Path,
) -> None:
    from tumorscope.io.dicom import import_dicom

    rep = import_dicom(DATA / "dcm_qa_nih" / "In", tmp_path / "study")
    assert not [p for p in rep.problems if p.severity == "error"], rep.problems
    assert sorted(r["suffix"] for r in rep.series) == ["epi", "epi"]  # GE: its first volume
    sides = [json.loads(p.read_text()) for p in (tmp_path / "study").glob("sub-*/*/fmap/*.json")]
    (side,) = [s for s in sides if s["SeriesDescription"] == "EPI PE=AP"]
    assert side["PhaseEncodingDirection"] in ("j", "j-")
    assert len(side["SliceTiming"]) == 5
    assert side["VendorFieldsSource"] == "dcm2niix"
    # one Series Instance UID under six Series Numbers: six series
    rep = import_dicom(DATA / "dcm_qa_ts" / "In", tmp_path / "ts")
    assert len(rep.series) == len(TRANSFER_SYNTAX_FILES)


#: (set folder, image series imported, BOLD series left out, roles given): the copy always,
#: the whole shared sets when there. The GE "Axial EPI-FMRI" time series of dcm_qa_nih are
#: BOLD (named so; the copy holds its first volume only: a distortion reference); the Siemens
#: mosaics of dcm_qa_mosaic are EPI time series at TR 3.2 s without a contrast agent (BOLD
#: test acquisitions; the copy: 3 of the 6 volumes of one): left out unless given a role, here
#: ``dsc`` for all of them (test_a_real_bold_series_is_left_out: without it).
IMPORT_CASES = [
    pytest.param(DATA / name, n, 0, roles, id=f"copy-{name}")
    for name, n, roles in (
        ("dcm_qa_nih", 2, None),
        ("dcm_qa_mosaic", 1, {"*": "dsc"}),
        ("dcm_qa_ts", 6, None),
        ("dcm_qa_deident", 1, None),
    )
] + [
    pytest.param(SHARED / name, n, n_bold, roles, id=f"shared-{name}")
    for name, n, n_bold, roles in (
        ("dcm_qa_nih", 4, 4, None),
        ("dcm_qa_mosaic", 8, 0, {"*": "dsc"}),
        ("dcm_qa_ts", 9, 0, None),
        ("dcm_qa_deident", 1, 0, None),
    )
    if SHARED.is_dir()
]


@pytest.mark.parametrize(("root", "n_series", "n_bold", "roles"), IMPORT_CASES)
def test_every_real_set_imports(
    tmp_path: Path, root: Path, n_series: int, n_bold: int, roles: dict[str, str] | None
) -> None:
    from tumorscope.io.dicom import import_dicom

    name = root.name
    rep = import_dicom(root / "In", tmp_path / "study", roles=roles)
    assert not [p for p in rep.problems if p.severity == "error"], rep.problems
    assert len(rep.series) == n_series
    bold = [p for p in rep.problems if "BOLD fMRI" in p.message and "not imported" in p.message]
    assert len(bold) == n_bold, rep.problems
    assert "dce" not in {r["suffix"] for r in rep.series}  # no set holds a DCE acquisition
    if roles:  # every series forced to DSC: its sidecar has what the DSC step reads
        images = sorted((tmp_path / "study").glob("sub-*/ses-*/perf/*_dsc.nii.gz"))
        assert len(images) == n_series
        for image in images:
            side = json.loads(image.with_name(image.name[:-7] + ".json").read_text())
            assert side["SeriesRoleGuess"].startswith("set by the user (guess was bold")
            assert len(side["FrameTimes"]) == nib.load(image).shape[3] >= 3
            assert side["FrameTimesSource"] == "AcquisitionTime"
            assert side["EchoTime"] in (0.03, 0.034) and "FlipAngle" in side
            assert "BaselineFrames" not in side  # the DSC step finds the bolus onset
    if name == "dcm_qa_deident":  # the site's own de-identification is kept as provenance
        (side,) = (tmp_path / "study").glob("sub-*/ses-*/anat/*.json")
        codes = json.loads(side.read_text())["SourceDeidentificationMethodCodes"]
        assert "DCM 113100 Basic Application Confidentiality Profile" in codes


def test_a_real_over_long_value_imports_without_pydicom_warning(tmp_path: Path) -> None:
    """dcm_qa_deident (a real site-de-identified GE series) holds the 20-character Code Value
    ``replace_recognizable`` (VR SH: at most 16) in its De-identification Method Code
    Sequence. pydicom warned about it in the middle of the import's output (its own file and
    line, not the DICOM file's); the value is now read as written without the warning, and
    pydicom's reading validation is what it was after the import."""
    import warnings

    from pydicom import config

    from tumorscope.io.dicom import import_dicom

    before = config.settings.reading_validation_mode
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import_dicom(DATA / "dcm_qa_deident" / "In", tmp_path / "study")
    assert not [w for w in caught if "exceeds the maximum length" in str(w.message)], [
        str(w.message) for w in caught
    ]
    assert config.settings.reading_validation_mode == before
    (side,) = (tmp_path / "study").glob("sub-*/ses-*/anat/*.json")
    codes = json.loads(side.read_text())["SourceDeidentificationMethodCodes"]
    assert any(c.startswith("mri_reface replace_recognizable ") for c in codes), codes


def test_a_real_bold_series_is_left_out(tmp_path: Path) -> None:
    """A Siemens EPI time series at TR 3.2 s with no contrast agent (3 volumes of
    dcm_qa_mosaic's ep2d_Asc_HF, real data) is BOLD: read_series says so before reading the
    pixels, the importer leaves it out with a warning naming the series and the way to import
    it anyway, and with nothing else to import writes nothing."""
    from tumorscope.errors import DataError
    from tumorscope.io.dicom import import_dicom
    from tumorscope.io.dicom.series import NotImported

    folder = DATA / "dcm_qa_mosaic" / "In"
    (s,) = scan_dicom(folder).series
    with pytest.raises(NotImported, match=r"3 repeated EPI volumes, TR 3200 ms .* BOLD fMRI"):
        read_series(s, refuse_not_imported=True)
    assert read_series(s).suffix == "bold"  # read when asked for: never imported as such
    with pytest.raises(DataError, match="no importable MR series"):
        import_dicom(folder, tmp_path / "study")
    assert not (tmp_path / "study").exists()


# --------------------------------------------------------------------------- vendor behaviour
def test_philips_derived_isotropic_volume_is_left_out_of_a_dti_series(tmp_path: Path) -> None:
    """Philips writes the trace image into the DTI series as one more b > 0 volume, marked
    DiffusionDirectionality ISOTROPIC (the issue: 17 volumes instead of 16)."""
    import pydicom

    from tumorscope.io.dicom import import_dicom
    from tumorscope.phantom.dicom import oblique_affine, write_series
    from tumorscope.protocol import DiffusionProtocol
    from tumorscope.volume import Volume

    rng = np.random.default_rng(0)
    data = rng.integers(0, 500, size=(8, 6, 4, 5)).astype(np.int16)
    data += (1000 * np.arange(5)).astype(np.int16)  # volume v holds 1000 v … 1000 v + 499
    bvals = (0.0, 1000.0, 1000.0, 1000.0, 1000.0)
    files = write_series(
        Volume(data, oblique_affine()),
        tmp_path / "dicom",
        suffix="dwi",
        protocol=DiffusionProtocol(bvals),
        vendor="philips",
    )
    for f in files:
        ds = pydicom.dcmread(f)
        v = int(ds.pixel_array.min()) // 1000
        ds.DiffusionDirectionality = "NONE" if v == 0 else "ISOTROPIC" if v == 4 else "DIRECTIONAL"
        ds.save_as(f)
    rep = import_dicom(tmp_path / "dicom", tmp_path / "study")
    assert any("ISOTROPIC" in p.message for p in rep.problems)
    (nii,) = (tmp_path / "study").glob("sub-*/ses-*/dwi/*_dwi.nii.gz")
    got = nib.load(nii)
    assert got.shape[3] == 4
    np.testing.assert_array_equal(
        np.asanyarray(canonical(np.asanyarray(got.dataobj), got.affine).dataobj),
        np.asanyarray(canonical(data[..., :4], oblique_affine()).dataobj),
    )
    assert nii.with_name(nii.name.replace(".nii.gz", ".bval")).read_text().split() == [
        "0",
        "1000",
        "1000",
        "1000",
    ]


def _philips_t2w(tmp_path: Path) -> tuple[list[Path], np.ndarray]:
    from tumorscope.phantom.dicom import oblique_affine, write_series
    from tumorscope.volume import Volume

    data = np.arange(8 * 6 * 4, dtype=np.int16).reshape(8, 6, 4) - 50
    files = write_series(
        Volume(data, oblique_affine()), tmp_path / "dicom", suffix="T2w", vendor="philips"
    )
    return files, data


def _imported(study: Path) -> tuple[np.ndarray, dict]:
    (nii,) = study.glob("sub-*/ses-*/anat/*.nii.gz")
    img = nib.load(nii)
    side = json.loads(nii.with_name(nii.name.replace(".nii.gz", ".json")).read_text())
    return np.asanyarray(canonical(np.asanyarray(img.dataobj), img.affine).dataobj), side


def test_philips_private_scale_slope_gives_the_floating_point_value(tmp_path: Path) -> None:
    import pydicom

    from tumorscope.io.dicom import import_dicom
    from tumorscope.phantom.dicom import oblique_affine

    files, data = _philips_t2w(tmp_path)
    rs, ri, ss = 2.5, -10.0, 0.125
    for f in files:
        ds = pydicom.dcmread(f)
        ds.RescaleSlope, ds.RescaleIntercept = rs, ri
        ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True).add_new(0x0E, "FL", ss)
        ds.save_as(f)
    import_dicom(tmp_path / "dicom", tmp_path / "study")
    got, side = _imported(tmp_path / "study")
    want = (data * rs + ri) / (rs * ss)
    np.testing.assert_allclose(
        got, np.asanyarray(canonical(want, oblique_affine()).dataobj), rtol=1e-6
    )
    assert side["IntensityScaling"] == "Philips private scale slope (2005,100E)"


def test_real_world_value_mapping_comes_first(tmp_path: Path) -> None:
    import pydicom
    from pydicom.dataset import Dataset

    from tumorscope.io.dicom import import_dicom
    from tumorscope.phantom.dicom import oblique_affine

    files, data = _philips_t2w(tmp_path)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.RescaleSlope, ds.RescaleIntercept = 2.0, 0.0
        ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True).add_new(0x0E, "FL", 0.5)
        item = Dataset()
        item.RealWorldValueSlope, item.RealWorldValueIntercept = 0.25, 3.0
        ds.RealWorldValueMappingSequence = [item]
        ds.save_as(f)
    import_dicom(tmp_path / "dicom", tmp_path / "study")
    got, side = _imported(tmp_path / "study")
    want = data * 0.25 + 3.0
    np.testing.assert_allclose(
        got, np.asanyarray(canonical(want, oblique_affine()).dataobj), rtol=1e-6
    )
    assert side["IntensityScaling"] == "RealWorldValueMapping (0040,9096)"


@pytest.mark.parametrize("vendor", ["siemens", "ge", "philips"])
def test_gradient_directions_are_written_in_the_image_frame(tmp_path: Path, vendor: str) -> None:
    """Directions given in the patient frame (LPS) come out as BIDS expects them: in the voxel
    frame of the image written, x negated when the affine's determinant is positive."""
    import pydicom

    from tumorscope.io.bids import read_bvec
    from tumorscope.io.dicom import import_dicom
    from tumorscope.phantom.dicom import oblique_affine, write_series
    from tumorscope.protocol import DiffusionProtocol
    from tumorscope.volume import Volume

    rng = np.random.default_rng(0)
    data = rng.integers(0, 500, size=(8, 6, 4, 4)).astype(np.int16)
    data += (1000 * np.arange(4)).astype(np.int16)  # volume v holds 1000 v … 1000 v + 499
    lps = np.array([[0, 0, 0], [1, 0, 0], [0, 0.6, 0.8], [0.48, 0.6, -0.64]])
    files = write_series(
        Volume(data, oblique_affine()),
        tmp_path / "dicom",
        suffix="dwi",
        protocol=DiffusionProtocol((0.0, 1000.0, 1000.0, 1000.0)),
        vendor=vendor,
    )
    for f in files:
        ds = pydicom.dcmread(f)
        v = int(ds.pixel_array.min()) // 1000
        ds.DiffusionGradientOrientation = [float(x) for x in lps[v]]
        ds.DiffusionDirectionality = "NONE" if v == 0 else "DIRECTIONAL"
        if vendor == "siemens":
            block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
            block.add_new(0x0E, "FD", [float(x) for x in lps[v]])
        if vendor == "philips":
            block = ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True)
            for offset, value in zip((0xB0, 0xB1, 0xB2), lps[v], strict=True):
                block.add_new(offset, "FL", float(value))
        ds.save_as(f)
    import_dicom(tmp_path / "dicom", tmp_path / "study")
    (nii,) = (tmp_path / "study").glob("sub-*/ses-*/dwi/*_dwi.nii.gz")
    affine = nib.load(nii).affine
    want = [fsl_bvec(affine, g * [-1, -1, 1]) for g in lps]  # LPS → RAS, then the voxel frame
    np.testing.assert_allclose(read_bvec(nii), want, atol=1e-4)


def _dynamic_without_frame_times(folder: Path, *, epi: bool) -> None:
    """A GE-style 4-frame dynamic series whose images share one AcquisitionTime and have no
    TriggerTime; ``epi``: a 2-D EPI (TR 2 s), else a 3-D spoiled gradient echo (TR 4 ms)."""
    import pydicom

    from tumorscope.phantom.dicom import oblique_affine, write_series
    from tumorscope.protocol import DynamicProtocol
    from tumorscope.volume import Volume

    data = np.ones((6, 5, 3, 4), dtype=np.int16) * np.arange(4, dtype=np.int16) * 10
    tr = 2000.0 if epi else 4.0
    files = write_series(
        Volume(data, oblique_affine()),
        folder,
        suffix="dce",
        protocol=DynamicProtocol((0.0, 2.0, 4.0, 6.0), 60.0, tr, 1, te_ms=30.0 if epi else None),
        vendor="ge",
        repetition_time_ms=tr,
    )
    for f in files:
        ds = pydicom.dcmread(f)
        for keyword in ("TriggerTime", "TemporalPositionIdentifier"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.AcquisitionTime = ds.ContentTime = "114815"
        if epi:
            ds.ScanningSequence = ["EP", "GR"]
            ds.MRAcquisitionType = "2D"
        ds.save_as(f)


def test_ge_epi_time_series_without_image_times_is_timed_by_tr(tmp_path: Path) -> None:
    """GE EPI images share one AcquisitionTime and have no TriggerTime (dcm_qa_nih GE series):
    the frames are one TR apart, and the sidecar says where the times came from. A dynamic EPI
    at TR 2 s with a neutral name is taken as DSC perfusion (T2*-weighted, never DCE)."""
    from tumorscope.io.dicom import import_dicom

    _dynamic_without_frame_times(tmp_path / "dicom", epi=True)
    rep = import_dicom(tmp_path / "dicom", tmp_path / "study")
    assert [r["suffix"] for r in rep.series] == ["dsc"]
    assert rep.series[0]["reason"].startswith("4 repeated EPI volumes, TR 2000 ms, no contrast")
    (side,) = (tmp_path / "study").glob("sub-*/ses-*/perf/*_dsc.json")
    got = json.loads(side.read_text())
    assert got["EchoTime"] == 0.03 and "BaselineFrames" not in got
    assert got["FrameTimes"] == [0.0, 2.0, 4.0, 6.0]
    assert got["FrameTimesSource"].startswith("RepetitionTime")
    assert got["ScanningSequence"] == "EP\\GR"
    image = np.asanyarray(nib.load(side.with_name(side.name[:-5] + ".nii.gz")).dataobj)
    assert [int(image[..., v].max()) for v in range(4)] == [0, 10, 20, 30]  # in order


def test_a_non_epi_dynamic_series_without_frame_times_is_still_an_error(tmp_path: Path) -> None:
    """A 3-D DCE frame takes far longer than one TR: times are never made up from TR there."""
    from tumorscope.errors import DataError
    from tumorscope.io.dicom import import_dicom

    _dynamic_without_frame_times(tmp_path / "dicom", epi=False)
    with pytest.raises(DataError, match=r"frame_times_s: .* strictly increasing"):
        import_dicom(tmp_path / "dicom", tmp_path / "study", dce_baseline_frames=1)
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize("binary", [None, "/bin/false"])
def test_without_a_working_dcm2niix_the_vendor_fields_are_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binary: str | None
) -> None:
    from tumorscope.io.dicom import convert

    monkeypatch.setattr(convert, "dcm2niix_binary", lambda: binary)
    (s,) = scan_dicom(DATA / "dcm_qa_nih" / "In" / "20180918Si").series
    sd = read_series(s)
    assert "PhaseEncodingDirection" not in sd.sidecar
    if binary is None:
        assert any("dcm2niix not found" in n for n in sd.notes)
    else:
        assert sd.sidecar["VendorFieldsSource"] == "none: dcm2niix failed (exit 1)"


def test_identifiers_do_not_reach_the_study_through_dcm2niix(tmp_path: Path) -> None:
    """dcm2niix's sidecar holds SeriesDescription, ProcedureStepDescription, dates …: only its
    numeric fields are taken, and the study is searched for the patient's identity."""
    import pydicom

    from tumorscope.io.deid import find_identifiers
    from tumorscope.io.dicom import import_dicom

    src = tmp_path / "dicom"
    src.mkdir()
    for f in sorted((DATA / "dcm_qa_nih" / "In" / "20180918Si" / "mr_0003").glob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.PatientName, ds.PatientID = "Quimby^Rosalind", "QX77341"
        ds.PatientBirthDate = "19610415"
        ds.SeriesDescription = "EPI Rosalind Quimby QX77341"
        ds.ProtocolName = "quimby_rosalind"
        ds.PerformedProcedureStepDescription = "Quimby 15.04.1961"
        ds.save_as(src / f.name)
    rep = import_dicom(src, tmp_path / "study")
    (side,) = (tmp_path / "study").glob("sub-*/ses-*/fmap/*_epi.json")
    assert json.loads(side.read_text())["VendorFieldsSource"] == "dcm2niix"
    ids = ["Quimby^Rosalind", "QX77341", "19610415"]
    assert find_identifiers(tmp_path / "study", ids) == []
    assert not any("Quimby" in str(r) or "QX77341" in str(r) for r in rep.series)
