"""Reliability of the DICOM import and export around patient data (issue 14, items 6, 10, 11).

Derived scanner series are never taken as acquired ones; the patient's name, IDs and dates do
not survive in any output (sidecars, TSV, logs, stdout, exported DICOM) in any spelling; the
PS3.15 Basic Application Level Confidentiality Profile is applied and recorded; exports carry
the pseudonymous identity unless re-identification is asked for.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")
pytest.importorskip("highdicom")

from tumorscope.cli import app  # noqa: E402
from tumorscope.phantom.dicom import (  # noqa: E402
    SynthPatient,
    SynthStudy,
    oblique_affine,
    write_series,
)
from tumorscope.volume import Volume  # noqa: E402

runner = CliRunner()


def _volume(seed: int = 0, shape: tuple[int, int, int] = (8, 6, 4)) -> Volume:
    rng = np.random.default_rng(seed)
    return Volume(rng.integers(0, 1000, shape).astype(np.float32), oblique_affine())


def _edit(files: list[Path], **attrs: Any) -> None:
    """Set header attributes of written DICOM files."""
    for f in files:
        ds = pydicom.dcmread(f)
        for k, v in attrs.items():
            setattr(ds, k, v)
        ds.save_as(f)


def _import(src: Path, study: Path, *args: str) -> Any:
    return runner.invoke(app, ["import-dicom", str(src), str(study), *args])


def _study_files(study: Path) -> dict[str, str]:
    return {
        str(p.relative_to(study)): p.read_text(encoding="utf-8")
        for p in sorted(study.rglob("*"))
        if p.is_file() and p.suffix in {".json", ".tsv", ".yaml", ".bval"}
    }


# --------------------------------------------------------------------------- item 6
def test_derived_series_is_never_taken_as_an_acquired_series(tmp_path: Path) -> None:
    src = tmp_path / "dicom"
    write_series(_volume(0), src / "t2", suffix="T2w", series_number=1, echo_time_ms=90)
    for n, (desc, image_type) in enumerate(
        (
            ("ep2d_diff_ADC", ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]),
            ("FA map", ["DERIVED", "PRIMARY", "DIFFUSION", "FA"]),
            ("t1 SUB", ["ORIGINAL", "PRIMARY", "SUB"]),
            ("t1 MIP", ["DERIVED", "SECONDARY", "MIP"]),
        ),
        start=2,
    ):
        files = write_series(
            _volume(n), src / desc, suffix="T2w", series_number=n, echo_time_ms=90,
            series_description=desc,
        )  # fmt: skip
        _edit(files, ImageType=image_type)
    res = _import(src, tmp_path / "study")
    assert res.exit_code == 0, res.output
    t2 = sorted((tmp_path / "study").rglob("*_T2w.json"))
    assert len(t2) == 1, t2  # the scanner maps were not imported as T2w (run-2, run-3 ...)
    assert "run-" not in t2[0].name
    assert json.loads(t2[0].read_text())["SeriesNumber"] == 1
    assert res.output.count("derived image (ImageType") == 4
    assert "DERIVED\\PRIMARY\\DIFFUSION\\ADC" in res.output
    log = (tmp_path / "study-import-dicom.log").read_text()
    assert log.count("derived image") == 4


def test_derived_series_imports_when_the_user_names_its_role(tmp_path: Path) -> None:
    src = tmp_path / "dicom"
    files = write_series(_volume(1), src, suffix="T2w", series_description="trace", echo_time_ms=90)
    _edit(files, ImageType=["DERIVED", "PRIMARY", "DIFFUSION", "TRACEW"])
    res = _import(src, tmp_path / "none")
    assert res.exit_code == 2 and "no importable MR series" in res.output
    assert not (tmp_path / "none").exists()
    res = _import(src, tmp_path / "study", "--role", "trace=T2w")
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "study").rglob("*_T2w.nii.gz"))) == 1


# --------------------------------------------------------------------------- item 10
def test_burned_in_annotation_is_skipped_unless_allowed(tmp_path: Path) -> None:
    src = tmp_path / "dicom"
    write_series(_volume(0), src / "a", suffix="T2w", series_number=1, echo_time_ms=90)
    files = write_series(_volume(1), src / "b", suffix="T1w", series_number=2, echo_time_ms=5)
    _edit(files, BurnedInAnnotation="YES")
    res = _import(src, tmp_path / "study")
    assert res.exit_code == 0, res.output
    assert "BurnedInAnnotation" in res.output and "--allow-burned-in" in res.output
    assert not list((tmp_path / "study").rglob("*_T1w.nii.gz"))
    res = _import(src, tmp_path / "study2", "--allow-burned-in")
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "study2").rglob("*_T1w.nii.gz"))) == 1


JANE = SynthPatient("DOE^JANE^QUINN", "MRN12345", "19610415", "F")
#: every spelling of her identity that must not appear anywhere
JANE_WORDS = ("doe", "jane", "quinn", "mrn12345", "19610415", "1961-04-15", "15.04.1961")


def _found(text: str, words: tuple[str, ...] = JANE_WORDS) -> list[str]:
    """The words present in ``text`` as whole tokens (any case)."""
    return [w for w in words if re.search(rf"(?<![^\W_]){re.escape(w)}(?![^\W_])", text, re.I)]


def _all_output(study: Path, *texts: str) -> str:
    files = [p.read_text(encoding="utf-8") for p in study.rglob("*") if p.suffix != ".gz" and
             p.is_file()]  # fmt: skip
    headers = [str(nib.load(p).header["descrip"]) for p in study.rglob("*.nii.gz")]
    return "\n".join([*files, *headers, *texts])


def test_patient_name_in_any_order_case_and_separator_leaks_nowhere(tmp_path: Path) -> None:
    src = tmp_path / "dicom"
    st = SynthStudy(JANE, description="MR Jane Doe follow-up 15.04.1961")
    for n, (desc, seq, prot) in enumerate(
        (
            ("Jane Doe t2_tse", "jane_seq", "t2_DOE"),  # given name first, any case
            ("doe only 1961-04-15", "*tse2d1_JANE", "prot mrn12345"),  # surname alone, ID, date
            ("QUINN.DOE-jane", "seq", "prot"),  # middle name, other separators
        ),
        start=1,
    ):
        files = write_series(_volume(n), src / str(n), suffix="T2w", study=st, series_number=n,
                             echo_time_ms=90, series_description=desc)  # fmt: skip
        _edit(files, SequenceName=seq, ProtocolName=prot)
    mosaic = write_series(_volume(7), src / "m", suffix="T2w", study=st, series_number=7,
                          echo_time_ms=90, series_description="Doe, Jane mosaic")  # fmt: skip
    _edit(mosaic, ImageType=["ORIGINAL", "PRIMARY", "M", "MOSAIC"])
    res = _import(src, tmp_path / "study")
    assert res.exit_code == 1, res.output  # the mosaic is rejected, the rest imported
    assert len(list((tmp_path / "study").rglob("*_T2w.nii.gz"))) == 3
    log = (tmp_path / "study-import-dicom.log").read_text()
    assert "mosaic" in log
    assert _found(_all_output(tmp_path / "study", res.output, log)) == []
    # what was cleaned is marked, and the profile applied is recorded in every sidecar
    sides = [json.loads(p.read_text()) for p in sorted((tmp_path / "study").rglob("*_T2w.json"))]
    assert sides[0]["SeriesDescription"] == "[removed] t2_tse"
    assert sides[1]["SeriesDescription"] == "[removed] only [removed]"
    for side in sides:
        codes = [c["CodeValue"] for c in side["DeidentificationMethod"]]
        assert codes[0] == "113100" and "113106" in codes
    # the mapping file beside the study keeps the identity (it is the site's)
    assert "DOE^JANE^QUINN" in (tmp_path / "study-identifiers.tsv").read_text()


def test_short_ids_and_ordinary_numbers_do_not_block_an_import(tmp_path: Path) -> None:
    """Whole tokens and a minimum length: IDs "5" and "AB", and a numeric ID equal to the
    series number, are not found in ordinary words and numbers."""
    src = tmp_path / "dicom"
    for i, (pid, name, number) in enumerate((("5", "LI^NA", 5), ("AB", "NG^AN", 2),
                                             ("100", "ROE^RICHARD", 100))):  # fmt: skip
        st = SynthStudy(SynthPatient(name, pid, "19700101", "M"), accession=f"A{i}")
        write_series(_volume(i), src / pid, suffix="T2w", study=st, series_number=number,
                     echo_time_ms=90, series_description="t2 5mm abdomen")  # fmt: skip
    res = _import(src, tmp_path / "study")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "study").glob("sub-*")) == [
        "sub-001", "sub-002", "sub-003"
    ]  # fmt: skip
    side = json.loads(next((tmp_path / "study").rglob("*_T2w.json")).read_text())
    assert side["SeriesDescription"] == "t2 5mm abdomen"


# --------------------------------------------------------------------------- item 11
#: identifying free text of the source series (none of it may reach a default export)
SOURCE_TEXT = {
    "StudyDescription": "Jane Doe abdomen MRN12345",
    "AdditionalPatientHistory": "Ms Doe, prior surgery at Springfield",
    "InstitutionName": "St Elsewhere Hospital",
    "InstitutionAddress": "1 Main Street Springfield",
    "StationName": "MRSTATION7",
    "DeviceSerialNumber": "SN998877",
    "ReferringPhysicianName": "HOUSE^GREGORY",
    "OperatorsName": "TECH^TOMMY",
    "PatientComments": "call Jane on 0123456789",
    "RequestingPhysician": "WILSON^JAMES",
}
SOURCE_WORDS = (*JANE_WORDS, "elsewhere", "springfield", "mrstation7", "sn998877", "gregory",
                "tommy", "0123456789", "wilson", "surgery")  # fmt: skip


def _values(ds: Any) -> Iterator[tuple[str, str]]:
    """(keyword, value as text) of every element of a dataset, sequences included."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _values(item)
        elif elem.VR not in ("OB", "OW", "OF", "OD", "OL", "UN"):
            yield elem.keyword or str(elem.tag), str(elem.value)


@pytest.fixture
def exported_visit(tmp_path: Path) -> dict[str, Any]:
    """A source series full of identifying free text, imported, with a lesion and a map."""
    src = tmp_path / "dicom"
    st = SynthStudy(JANE, accession="ACC778899", description=SOURCE_TEXT["StudyDescription"],
                    institution=SOURCE_TEXT["InstitutionName"])  # fmt: skip
    files = write_series(_volume(3), src, suffix="T2w", study=st, echo_time_ms=90,
                         series_description="t2 Doe")  # fmt: skip
    for f in files:
        ds = pydicom.dcmread(f)
        for k, v in SOURCE_TEXT.items():
            setattr(ds, k, v)
        ds.private_block(0x0029, "ACME 1.0", create=True).add_new(0x10, "LO", "Jane Doe")
        ds.save_as(f)
    res = _import(src, tmp_path / "study")
    assert res.exit_code == 0, res.output
    t2 = Volume.from_nifti(next((tmp_path / "study").rglob("*_T2w.nii.gz")))
    labels = np.zeros(t2.shape, dtype=np.int16)
    labels[2:5, 2:4, 1:3] = 1
    les = tmp_path / "study/derivatives/lesions/sub-001/ses-01"
    t2.with_data(labels).to_nifti(les / "sub-001_ses-01_lesions.nii.gz", dtype=np.int16)
    (les / "sub-001_ses-01_lesions.tsv").write_text(
        "label\tlesion_id\torgan\ttarget\tnodal\n1\tL1\tliver\ttrue\tfalse\n"
    )
    adc = tmp_path / "adc.nii.gz"
    t2.with_data(t2.data.astype(np.float32) * 1e-6).to_nifti(adc)
    originals = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    return {"tmp": tmp_path, "src": src, "adc": adc, "originals": originals}


def _export(v: dict[str, Any], out: str, *args: str) -> Any:
    return runner.invoke(app, [
        "export-dicom", str(v["tmp"] / "study"), str(v["src"]), str(v["tmp"] / out),
        "--subject", "001", "--visit", "01", "--map", f"ADC={v['adc']}:T2w",
        "--reference", "T2w", *args,
    ])  # fmt: skip


def test_exports_carry_no_identity_or_free_text_of_the_source(
    exported_visit: dict[str, Any],
) -> None:
    v = exported_visit
    res = _export(v, "out")
    assert res.exit_code == 0, res.output
    written = sorted((v["tmp"] / "out").glob("*.dcm"))
    assert [f.name.rsplit("_", 1)[-1] for f in written] == ["pm.dcm", "seg.dcm", "sr.dcm"]
    source_uids = {
        str(getattr(o, k)) for o in v["originals"]
        for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
    }  # fmt: skip
    for f in written:
        ds = pydicom.dcmread(f)
        values = list(_values(ds))
        text = "\n".join(value for _, value in values)
        assert _found(text, SOURCE_WORDS) == [], f.name
        assert "ACC778899" not in text
        assert not source_uids & {value for _, value in values}, f.name
        assert not any(elem.tag.is_private for elem in ds)
        # the pseudonymous identity of the imported study, and the profile applied
        assert (ds.PatientID, str(ds.PatientName).rstrip("^")) == ("001", "001")
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.LongitudinalTemporalInformationModified == "UNMODIFIED"
        codes = [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]
        assert codes[0] == "113100" and "113106" in codes
        assert ds.StudyDate == "20260105"  # visit dates are kept (Retain Full Dates Option)


def test_reidentified_export_gets_the_real_identity_back(exported_visit: dict[str, Any]) -> None:
    v = exported_visit
    mapping = v["tmp"] / "study-identifiers.tsv"
    res = _export(v, "pacs", "--reidentify", str(mapping))
    assert res.exit_code == 0, res.output
    orig = v["originals"][0]
    for f in sorted((v["tmp"] / "pacs").glob("*.dcm")):
        ds = pydicom.dcmread(f)
        assert ds.PatientID == "MRN12345"
        assert str(ds.PatientName) == "DOE^JANE^QUINN"
        assert ds.StudyInstanceUID == orig.StudyInstanceUID
        if "FrameOfReferenceUID" in ds:  # PM and SEG (the SR has none)
            assert ds.FrameOfReferenceUID == orig.FrameOfReferenceUID
    # a mapping file that names another patient for the subject: refused, nothing written
    text = mapping.read_text().replace("MRN12345", "MRN99999")
    (v["tmp"] / "other.tsv").write_text(text)
    res = _export(v, "wrong", "--reidentify", str(v["tmp"] / "other.tsv"))
    assert res.exit_code == 2, res.output
    assert "another patient" in res.output and "Traceback" not in res.output
    assert not list((v["tmp"] / "wrong").glob("*.dcm"))
