"""``export-dicom`` on real scanner DICOM (the copies in ``tests/data/dicom-real``), and what it
refuses before writing anything: a folder or a file that is not its own, an unknown subject,
visit, response or reference series.

The studies are imported from a Siemens Prisma mosaic EPI series (3 volumes of 36 tiles, F>>H
numbering; role ``dsc``) and from one slice of a GE Signa HDxt IR-SPGR de-identified by its
site (imported as ``T2w``: a T1w series has no role to export it from).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("highdicom")

from tumorscope.cli import app  # noqa: E402
from tumorscope.io.dicom import import_dicom  # noqa: E402
from tumorscope.io.dicom.outfolder import LOCK_NAME, MARKER_NAME  # noqa: E402
from tumorscope.io.dicom.profile import pseudonymous_uid, removed_identity  # noqa: E402
from tumorscope.io.dicom.scan import LPS_TO_RAS, _frames_from_dataset  # noqa: E402
from tumorscope.volume import Volume  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data" / "dicom-real"
MOSAIC = DATA / "dcm_qa_mosaic" / "In"
GE = DATA / "dcm_qa_deident" / "In"

runner = CliRunner()


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The two sets imported (de-identified), each with a 3-D map on its grid."""
    tmp = tmp_path_factory.mktemp("real-export")
    import_dicom(MOSAIC, tmp / "mosaic", roles={"*": "dsc"})
    import_dicom(GE, tmp / "ge", roles={"Accelerated*": "T2w"})  # as the sweep did
    dsc = Volume.from_nifti(next((tmp / "mosaic").rglob("*_dsc.nii.gz")))
    s0 = dsc.with_data(np.asarray(dsc.data[..., 0], dtype=np.float32))
    s0.to_nifti(tmp / "s0.nii.gz")
    t2w = next((tmp / "ge").rglob("*_T2w.nii.gz"))
    return {"tmp": tmp, "s0": s0, "t2w": t2w}


def export(real: dict[str, Any], study: str, out: str | Path, *args: str) -> Any:
    """``export-dicom`` of visit 001/01 of a study into ``out`` (below the temporary folder)."""
    dicom = {"mosaic": MOSAIC, "ge": GE}[study]
    return runner.invoke(app, [
        "export-dicom", str(real["tmp"] / study), str(dicom), str(real["tmp"] / out),
        "--subject", "001", "--visit", "01", *args,
    ])  # fmt: skip


def mosaic_map(real: dict[str, Any]) -> str:
    return f"S0={real['tmp'] / 's0.nii.gz'}:dsc"


# ------------------------------------------------------------------------ real vendor data
def test_a_map_of_a_real_siemens_mosaic_references_the_mosaic_and_lies_on_its_tiles(
    real: dict[str, Any],
) -> None:
    """The de-identified copies lose the private CSA header that places a mosaic's tiles; the
    geometry comes from the originals. One file holds all 36 slices: the map references that
    image (the first volume's), with no per-frame reference (a tile is not a frame), and each
    of its frames lies on a tile of the mosaic."""
    res = export(real, "mosaic", "pm", "--map", mosaic_map(real))
    assert res.exit_code == 0, res.output
    ds = pydicom.dcmread(real["tmp"] / "pm" / "sub-001_ses-01_S0_pm.dcm")
    first = pydicom.dcmread(MOSAIC / "ep2d_Asc_HF_10" / "IM-0009-0001.dcm")
    tiles = _frames_from_dataset(first, Path("IM-0009-0001.dcm"))
    assert int(ds.NumberOfFrames) == len(tiles) == 36
    (series,) = ds.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == pseudonymous_uid(first.SeriesInstanceUID)
    (ref,) = series.ReferencedInstanceSequence
    assert ref.ReferencedSOPInstanceUID == pseudonymous_uid(first.SOPInstanceUID)
    assert [s.ReferencedSOPInstanceUID for s in ds.SourceImageSequence] == [
        ref.ReferencedSOPInstanceUID
    ]
    positions = np.array(
        [
            f.PlanePositionSequence[0].ImagePositionPatient
            for f in ds.PerFrameFunctionalGroupsSequence
        ],
        dtype=float,
    )
    expected = np.array([t.position for t in tiles])
    assert np.abs(positions[:, None, :] - expected[None]).sum(-1).min(axis=1).max() < 1e-3
    # each frame holds the map's slice at its position (the import's grid of the tiles)
    s0 = real["s0"]
    inv = np.linalg.inv(LPS_TO_RAS @ s0.affine)
    pix = ds.pixel_array
    for n, ipp in enumerate(positions):
        idx = inv[:3, :3] @ ipp + inv[:3, 3]
        assert np.allclose(idx, np.round(idx), atol=1e-3) and np.allclose(idx[:2], 0, atol=1e-3)
        np.testing.assert_array_equal(pix[n].T, s0.data[:, :, round(idx[2])])
    assert ds.ContributingEquipmentSequence[0].ManufacturerModelName == "Prisma_fit"


def test_removed_text_is_matched_whole_and_private_attributes_are_not_identifiers() -> None:
    """Real headers: the Siemens study description ``Research^Rorden_Prisma`` is a phrase (not
    a person's name whose parts, ``Prisma``, would refuse the model ``Prisma_fit``), GE's
    private Product id ``SIGNA`` (0009,1004) is no identifier (the model ``Signa HDxt`` is
    kept by the profile); the true identifiers stay."""
    siemens = pydicom.dcmread(next(MOSAIC.rglob("*.dcm")), stop_before_pixels=True)
    ids, _ = removed_identity([siemens])
    assert ids.search("Prisma_fit") is None
    assert ids.search("Research Rorden Prisma") is not None  # the study description
    for true in ("sliceOrder3", "crlab", "USC", "MRC35131", "67060"):  # name, ID, site …
        assert ids.search(f"x {true} y") is not None, true
    ge = pydicom.dcmread(GE / "00067.dcm", stop_before_pixels=True)
    assert ge[0x0009, 0x1004].value == "SIGNA"
    ids, _ = removed_identity([ge])
    assert ids.search("Signa HDxt") is None
    assert ids.search(str(ge.StationName)) is not None


def test_a_map_of_a_real_ge_series_with_a_private_product_id_is_exported(
    real: dict[str, Any],
) -> None:
    res = export(real, "ge", "ge-pm", "--map", f"T1={real['t2w']}:T2w")
    assert res.exit_code == 0, res.output
    ds = pydicom.dcmread(real["tmp"] / "ge-pm" / "sub-001_ses-01_T1_pm.dcm")
    assert ds.ContributingEquipmentSequence[0].ManufacturerModelName == "Signa HDxt"
    assert ds.PatientID == "001"


# ------------------------------------------------------------------------ the output folder
def test_a_users_file_of_the_same_name_is_never_overwritten(real: dict[str, Any]) -> None:
    out = real["tmp"] / "user"
    out.mkdir()
    user = out / "sub-001_ses-01_S0_pm.dcm"
    user.write_text("USER DICOM")
    res = export(real, "mosaic", out, "--map", mosaic_map(real))
    assert res.exit_code == 2
    assert "not empty" in res.output and "nothing was written" in res.output
    assert "Traceback" not in res.output
    assert sorted(p.name for p in out.iterdir()) == [user.name]
    assert user.read_text() == "USER DICOM"


def test_an_export_replaces_its_own_files_only(real: dict[str, Any]) -> None:
    out = real["tmp"] / "own"
    assert export(real, "mosaic", out, "--map", mosaic_map(real)).exit_code == 0
    pm = out / "sub-001_ses-01_S0_pm.dcm"
    record = json.loads((out / MARKER_NAME).read_text())
    assert set(record["files"]) == {pm.name}
    first_uid = pydicom.dcmread(pm).SOPInstanceUID
    # the same export again replaces its own object
    res = export(real, "mosaic", out, "--map", mosaic_map(real))
    assert res.exit_code == 0, res.output
    assert pydicom.dcmread(pm).SOPInstanceUID != first_uid
    # a user's file under the name of a new object, in the export's own folder: kept
    user = out / "sub-001_ses-01_ADC_pm.dcm"
    user.write_text("USER")
    res = export(real, "mosaic", out, "--map", mosaic_map(real), "--map",
                 f"ADC={real['tmp'] / 's0.nii.gz'}:dsc")  # fmt: skip
    assert res.exit_code == 2 and "was not written by export-dicom" in res.output
    assert user.read_text() == "USER"
    # an object of the export changed since (or replaced by the user's): kept too
    user.unlink()
    before = pm.read_bytes()
    pm.write_bytes(before + b"edited")
    res = export(real, "mosaic", out, "--map", mosaic_map(real))
    assert res.exit_code == 2 and pm.name in res.output
    assert pm.read_bytes() == before + b"edited"
    assert sorted(p.name for p in out.iterdir()) == sorted([LOCK_NAME, MARKER_NAME, pm.name])


@pytest.mark.parametrize(
    ("args", "field", "listed"),
    [
        (["--subject", "999"], "--subject", "subjects: 001"),
        (["--visit", "99"], "--visit", "visits: 01"),
        (["--response", "XX"], "--response", "expected one of CR, PR, SD, PD"),
        (["--reference", "T2w"], "--reference", "roles: dsc"),
    ],
    ids=["subject", "visit", "response", "reference"],
)
def test_bad_options_are_refused_naming_them_and_nothing_is_written(
    real: dict[str, Any], args: list[str], field: str, listed: str
) -> None:
    """Typer takes the last of a repeated option: ``--subject 999`` overrides the ``001``."""
    out = real["tmp"] / f"bad-{field.strip('-')}" / "deeper"
    res = export(real, "mosaic", out, "--map", mosaic_map(real), *args)
    assert res.exit_code == 2, res.output
    assert f"{field}:" in res.output and listed in res.output, res.output
    assert "internal error" not in res.output
    assert not out.parent.exists()
    assert not list(real["tmp"].glob(".tumorscope-tmp-*"))


def test_an_export_that_fails_while_writing_leaves_no_folder(real: dict[str, Any]) -> None:
    """A map off the source grid is found while the objects are written: nothing delivered,
    the folder not created, no temporary left."""
    off = real["s0"]
    shifted = off.affine.copy()
    shifted[:3, 3] += 0.5 * shifted[:3, 2]  # half a slice off the tiles
    Volume(off.data, shifted, off.axes, off.meta).to_nifti(real["tmp"] / "off.nii.gz")
    out = real["tmp"] / "failed"
    res = export(real, "mosaic", out, "--map", f"S0={real['tmp'] / 'off.nii.gz'}:dsc")
    assert res.exit_code == 2 and "ImagePositionPatient" in res.output, res.output
    assert not out.exists()
    assert not list(real["tmp"].glob(".tumorscope-tmp-*"))


def test_a_valid_response_without_lesions_is_said_to_be_unused(real: dict[str, Any]) -> None:
    res = export(real, "mosaic", "resp", "--map", mosaic_map(real), "--response", "PR")
    assert res.exit_code == 0, res.output
    assert "--response PR not exported: the visit has no lesion map" in res.output


@pytest.mark.parametrize("inside", ["mosaic/sub-002", "mosaic", "mosaic/derivatives/lesions/x"])
def test_an_export_into_the_study_is_refused(real: dict[str, Any], inside: str) -> None:
    """Sweep of 2026-12-06: an export into a folder inside the study made a subject folder the
    manifest does not list (the study no longer validated). Inside the study only a folder
    below ``derivatives/`` (not the segmentations) may take it; nothing is written."""
    study = real["tmp"] / "mosaic"
    before = sorted(p.relative_to(study).as_posix() for p in study.rglob("*"))
    res = export(real, "mosaic", inside, "--map", mosaic_map(real))
    assert res.exit_code == 2, res.output
    assert "the study or inside it" in res.output and "OUT_DIR" in res.output
    assert sorted(p.relative_to(study).as_posix() for p in study.rglob("*")) == before
    ok = export(real, "mosaic", "mosaic/derivatives/dicom-out", "--map", mosaic_map(real))
    assert ok.exit_code == 0, ok.output
