"""De-identification: pseudonyms, the mapping file, identifier search, --keep-identifiers."""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import numpy as np
import pytest

from tumorscope.errors import DataError
from tumorscope.io.deid import PatientIdentifiers, Pseudonymizer, find_identifiers

ALICE = PatientIdentifiers("MRN111", "ONE^ALICE", "19700101")
BOB = PatientIdentifiers("MRN222", "TWO^BOB", "19650303")


def test_pseudonyms_are_reused_from_the_mapping_file(tmp_path: Path) -> None:
    mf = tmp_path / "ids.tsv"
    p = Pseudonymizer(mf)
    assert p.subject_id(ALICE) == "001"
    p.add_series(ALICE, subject="001", visit="01", file="a.nii.gz", study_uid="1.2",
                 series_uid="1.2.3", accession="ACC1", study_date="2026-01-05")  # fmt: skip
    p.write()
    q = Pseudonymizer(mf)
    assert q.subject_id(BOB) == "002"
    assert q.subject_id(ALICE) == "001"
    assert q.series_uid("001", "a.nii.gz") == "1.2.3"
    assert "ONE^ALICE" in mf.read_text()


def test_mapping_file_with_missing_columns_is_an_error(tmp_path: Path) -> None:
    mf = tmp_path / "ids.tsv"
    mf.write_text("who\tpid\nx\ty\n")
    with pytest.raises(DataError, match="patient_id"):
        Pseudonymizer(mf)


def test_find_identifiers_looks_inside_gzip_and_name_variants(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"name": "One, Alice"}')
    (tmp_path / "b.nii.gz").write_bytes(gzip.compress(b"header 1970-01-01 ..."))
    (tmp_path / "c.txt").write_text("nothing here")
    hits = sorted((p.name, v) for p, v in find_identifiers(tmp_path, ["ONE^ALICE", "19700101"]))
    assert hits == [("a.json", "one alice"), ("b.nii.gz", "1970 01 01")]


def _two_patients(folder: Path) -> None:
    from tumorscope.phantom.dicom import SynthPatient, SynthStudy, write_series
    from tumorscope.volume import Volume

    vol = Volume(np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2), np.eye(4))
    for i, (pid, name) in enumerate((("MRN111", "ONE^ALICE"), ("MRN222", "TWO^BOB"))):
        st = SynthStudy(SynthPatient(name, pid, f"19{60 + i}0101", "F"), dt.date(2026, 1, 5 + i),
                        accession=f"ACC{pid}")  # fmt: skip
        write_series(vol, folder / pid, suffix="T2w", study=st, echo_time_ms=90.0)


def test_keep_identifiers_uses_patient_ids(tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    from tumorscope.io.dicom import import_dicom

    _two_patients(tmp_path / "dicom")
    rep = import_dicom(tmp_path / "dicom", tmp_path / "study", keep_identifiers=True)
    assert rep.mapping_file is None
    assert sorted(p.name for p in (tmp_path / "study").glob("sub-*")) == [
        "sub-MRN111",
        "sub-MRN222",
    ]
    side = (tmp_path / "study/sub-MRN111/ses-01/anat/sub-MRN111_ses-01_T2w.json").read_text()
    assert "SeriesInstanceUID" in side
    assert not (tmp_path / "study-identifiers.tsv").exists()


def test_default_import_is_pseudonymous_and_mapping_stays_outside(tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    from tumorscope.io.dicom import import_dicom

    _two_patients(tmp_path / "dicom")
    rep = import_dicom(tmp_path / "dicom", tmp_path / "study")
    assert sorted(p.name for p in (tmp_path / "study").glob("sub-*")) == ["sub-001", "sub-002"]
    values = ["MRN111", "MRN222", "ONE^ALICE", "TWO^BOB", "19600101", "19610101",
              "ACCMRN111", "ACCMRN222"]  # fmt: skip
    assert find_identifiers(tmp_path / "study", values) == []
    assert rep.mapping_file == tmp_path / "study-identifiers.tsv"
    mapping = (tmp_path / "study-identifiers.tsv").read_text()
    assert all(v in mapping for v in values)
    with pytest.raises(DataError, match="inside the study"):
        import_dicom(tmp_path / "dicom", tmp_path / "study", overwrite=True,
                     mapping_file=tmp_path / "study" / "ids.tsv")  # fmt: skip


def test_names_in_series_descriptions_are_scrubbed(tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    from tumorscope.io.dicom import import_dicom
    from tumorscope.phantom.dicom import SynthPatient, SynthStudy, write_series
    from tumorscope.volume import Volume

    vol = Volume(np.arange(24, dtype=np.float32).reshape(4, 3, 2), np.eye(4))
    st = SynthStudy(SynthPatient("DOE^JANE", "MRN9", "19600101", "F"))
    write_series(vol, tmp_path / "dicom", suffix="T2w", study=st, echo_time_ms=90.0,
                 series_description="t2 tse Doe Jane repeat")  # fmt: skip
    import_dicom(tmp_path / "dicom", tmp_path / "study")
    side = (tmp_path / "study/sub-001/ses-01/anat/sub-001_ses-01_T2w.json").read_text()
    assert "t2 tse [removed] repeat" in side
    assert find_identifiers(tmp_path / "study", ["DOE^JANE", "MRN9", "19600101"]) == []


def test_import_refuses_a_study_that_leaks(tmp_path: Path) -> None:
    """An identifier that would reach the study (here the patient's surname in the study name
    the user gave) stops the import: nothing is written, not even the mapping. A short numeric
    Patient ID equal to the series number is not a leak (numbers are not searched as text)."""
    pytest.importorskip("pydicom")
    from tumorscope.io.dicom import import_dicom
    from tumorscope.phantom.dicom import SynthPatient, SynthStudy, write_series
    from tumorscope.volume import Volume

    vol = Volume(np.arange(24, dtype=np.float32).reshape(4, 3, 2), np.eye(4))
    st = SynthStudy(SynthPatient("DOE^JANE", "904", "19600101", "F"))
    write_series(vol, tmp_path / "dicom", suffix="T2w", study=st, echo_time_ms=90.0,
                 series_number=904)  # fmt: skip
    import_dicom(tmp_path / "dicom", tmp_path / "ok")
    with pytest.raises(DataError, match="identifier") as info:
        import_dicom(tmp_path / "dicom", tmp_path / "study", name="Doe follow-up")
    assert info.value.field == "de-identification"
    assert info.value.file == "study.yaml"
    assert "Doe" not in str(info.value)
    assert not (tmp_path / "study").exists() and not (tmp_path / "study-identifiers.tsv").exists()
    # with the identifiers kept on purpose, the same series imports
    import_dicom(tmp_path / "dicom", tmp_path / "kept", keep_identifiers=True, name="Doe")
    assert (tmp_path / "kept/sub-904/ses-01/anat/sub-904_ses-01_T2w.json").exists()


def test_check_no_identifiers_names_the_file_not_the_value(tmp_path: Path) -> None:
    import pydicom

    from tumorscope.io.deid import check_no_identifiers, identifier_values

    (tmp_path / "a.json").write_text('{"note": "scanned for mrn9"}')
    header = pydicom.Dataset()
    header.PatientID = "MRN9"
    header.InstitutionName = "General"
    assert identifier_values([header]) == ["MRN9", "General"]
    with pytest.raises(DataError, match="identifier") as info:
        check_no_identifiers(tmp_path, [header])
    assert (info.value.file, info.value.field) == ("a.json", "de-identification")
    assert "MRN9" not in str(info.value)
    (tmp_path / "a.json").write_text('{"note": "clean"}')
    check_no_identifiers(tmp_path, [header])


def test_scrub_fields_leaves_numbers_alone() -> None:
    from tumorscope.io.deid import scrub_fields

    fields = {"SeriesDescription": "t2 Doe, Jane", "SeriesNumber": 3, "EchoTime": 0.09}
    assert scrub_fields(fields, ["DOE^JANE"]) == {
        "SeriesDescription": "t2 [removed]",
        "SeriesNumber": 3,
        "EchoTime": 0.09,
    }


def test_a_study_named_after_the_institution_says_to_give_a_name(tmp_path: Path) -> None:
    """The sweep of 2026-12-06 imported dcm_qa_nih into a folder whose name held the
    institution's: refused (right), with a message that did not say why; it now points at
    --name, and with a name the import goes through."""
    pytest.importorskip("pydicom")
    from tumorscope.io.dicom import import_dicom
    from tumorscope.phantom.dicom import write_series
    from tumorscope.volume import Volume

    vol = Volume(np.arange(24, dtype=np.float32).reshape(4, 3, 2), np.eye(4))
    write_series(vol, tmp_path / "dicom", suffix="T2w", echo_time_ms=90)
    study = tmp_path / "Synthetic General Hospital"
    with pytest.raises(DataError, match="--name") as err:
        import_dicom(tmp_path / "dicom", study)
    assert err.value.file == "study.yaml" and not study.exists()
    import_dicom(tmp_path / "dicom", study, name="trial")
    assert (study / "study.yaml").is_file()
