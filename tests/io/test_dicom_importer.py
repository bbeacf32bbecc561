"""Importing a DICOM folder as a study: messy folders, atomic output, roles, lesions, merges."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pydicom")
pytest.importorskip("highdicom")

import pydicom
from _dicom_helpers import volume

from tumorscope.errors import DataError
from tumorscope.io.dicom import import_dicom
from tumorscope.phantom.dicom import SynthPatient, SynthStudy, write_rtstruct, write_series
from tumorscope.protocol import DiffusionProtocol, MultiEchoProtocol, VFAProtocol


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
    log = rep.log_file.read_text()
    assert (
        log.startswith("# tumorscope-import-dicom\n") and log.count("\n") == len(rep.problems) + 1
    )


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


@pytest.mark.parametrize(
    "added",
    [
        "sub-001/ses-01/my_notes.txt",
        "derivatives/lesions/sub-001/ses-01/sub-001_ses-01_lesions.nii.gz",  # drawn by a reader
        "derivatives/tumorscope/tables/subjects.csv",  # a run's results
    ],
)
def test_overwrite_keeps_a_study_holding_files_the_import_did_not_write(
    tmp_path: Path, added: str
) -> None:
    """Found by the sweep of 2026-12-06: a re-import with --overwrite deleted the user's
    notes and lesion segmentation inside the study it had imported (it only looked at the
    names at the top). What the import did not write is never deleted: nothing is replaced."""
    write_series(volume(1), tmp_path / "dicom", suffix="T2w", echo_time_ms=90)
    import_dicom(tmp_path / "dicom", tmp_path / "study")
    user = tmp_path / "study" / added
    new = next(p for p in [*reversed(user.parents), user] if not p.exists())  # the user's
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_bytes(b"the user's")
    with pytest.raises(DataError, match="nothing was replaced") as err:
        import_dicom(tmp_path / "dicom", tmp_path / "study", overwrite=True)
    assert added in str(err.value) and err.value.field == "--overwrite"
    assert user.read_bytes() == b"the user's"
    if new.is_dir():  # without what the user added, the folder is the import's own again
        shutil.rmtree(new)
    else:
        new.unlink()

    import_dicom(tmp_path / "dicom", tmp_path / "study", overwrite=True)
    assert (tmp_path / "study/sub-001/ses-01/anat/sub-001_ses-01_T2w.nii.gz").is_file()


def test_a_study_inside_the_dicom_folder_is_refused(tmp_path: Path) -> None:
    write_series(volume(1), tmp_path / "dicom", suffix="T2w", echo_time_ms=90)
    before = sorted(p.name for p in (tmp_path / "dicom").rglob("*"))
    with pytest.raises(DataError, match="the DICOM folder or inside it"):
        import_dicom(tmp_path / "dicom", tmp_path / "dicom" / "study")
    assert sorted(p.name for p in (tmp_path / "dicom").rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dicom"]


def test_a_users_file_at_the_log_name_is_not_overwritten(tmp_path: Path) -> None:
    """The import writes ``<STUDY>-import-dicom.log`` beside the study: a user's file of that
    name was truncated (sweep of 2026-12-06). It is refused before anything is written; a log
    an import wrote is replaced."""
    write_series(volume(1), tmp_path / "dicom", suffix="T2w", echo_time_ms=90)
    log = tmp_path / "study-import-dicom.log"
    log.write_text("USER LOG, precious\n")
    with pytest.raises(DataError, match="not one it wrote") as err:
        import_dicom(tmp_path / "dicom", tmp_path / "study")
    assert err.value.file == str(log)
    assert log.read_text() == "USER LOG, precious\n" and not (tmp_path / "study").exists()
    log.unlink()
    import_dicom(tmp_path / "dicom", tmp_path / "study")
    import_dicom(tmp_path / "dicom", tmp_path / "study", overwrite=True)  # its own log: replaced
    assert log.read_text().startswith("# tumorscope-import-dicom\n")


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


def test_import_reads_rtstruct_lesions(tmp_path: Path) -> None:
    from tumorscope.io import open_study

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


def test_siemens_mosaic_without_csa_header_is_rejected_not_misread(tmp_path: Path) -> None:
    # a mosaic is unpacked with the CSA image header (tests/io/test_dicom_real.py); without it
    # the slice positions are unknown: every file is reported and the series rejected
    files = write_series(volume(3), tmp_path / "dicom", suffix="dwi",
                         protocol=DiffusionProtocol((0, 500, 1000)))  # fmt: skip
    for f in files:
        ds = pydicom.dcmread(f)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE", "ND", "MOSAIC"]
        ds.save_as(f)
    write_series(volume(1), tmp_path / "dicom", suffix="T2w", echo_time_ms=90, series_number=2)
    rep = import_dicom(tmp_path / "dicom", tmp_path / "study")
    warnings = [p for p in rep.problems if p.severity == "warning"]
    assert len(warnings) == len(files)
    assert all(p.field == "CSAImageHeaderInfo (0029,1010)" for p in warnings)
    assert all("mosaic" in p.message for p in warnings)
    assert [p.severity for p in rep.problems if p not in warnings] == ["error"]
    assert [r["suffix"] for r in rep.series] == ["T2w"]
