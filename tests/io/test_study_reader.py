"""The study reader and validator, on the phantom and on broken copies of it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from tumorscope.cli import app
from tumorscope.errors import DataError, ProtocolError, StudyError
from tumorscope.io import open_study, validate_study
from tumorscope.protocol import DiffusionProtocol, DynamicProtocol, VFAProtocol

runner = CliRunner()


def _errors(problems: list) -> list:
    return [p for p in problems if p.severity == "error"]


def test_phantom_reads_and_validates_clean(tiny_study: Path) -> None:
    assert validate_study(tiny_study) == []
    study = open_study(tiny_study)
    assert len(study) == 6
    s1 = study.subjects["001"]
    assert list(s1.visits) == ["01", "02", "03", "04"]
    assert s1.baseline.id == "01"
    v = s1.visits["02"]
    assert v.days_on_treatment == 17  # baseline 2026-01-05, start +4 d, visit +21 d
    assert set(v.series) == {
        "anatomical",
        "dwi",
        "t1_vfa",
        "dce",
        "t2star",
        "t2star_ferumoxytol",
        "t2",
        "t1_ir",
        # metabolic visits (docs/metabolic.md): 13C at every visit, MRS at the first two
        "hp13c_pyruvate",
        "hp13c_lactate",
        "mrs",
        "mrs_water",
        "pet",  # FDG PET with its liver and blood-pool masks (issue 17, docs/pet.md)
        "pet_liver",
        "pet_bloodpool",
        "cest",  # the responder has CEST visits (issue 19)
    }
    cest = v.series["cest"]
    assert cest.protocol is not None and cest.protocol.kind == "cest"
    assert cest.load().shape[-1] == cest.protocol.n_measurements
    dwi = v.series["dwi"]
    assert isinstance(dwi.protocol, DiffusionProtocol)
    assert dwi.protocol.bvalues == (0, 50, 100, 200, 400, 600, 800, 1000)
    vol = dwi.load()
    assert vol.shape == (32, 32, 6, 8) and vol.axes[-1] == "b" and vol.data.dtype == np.float32
    vfa = v.series["t1_vfa"].protocol
    assert isinstance(vfa, VFAProtocol) and vfa.tr_ms == pytest.approx(5.0)  # s in the sidecar
    dce = v.series["dce"].protocol
    assert (
        isinstance(dce, DynamicProtocol) and dce.n_baseline == 5 and dce.te_ms == pytest.approx(1.5)
    )
    assert v.series["anatomical"].protocol is None
    les = v.lesions
    assert les is not None
    ids = {r.lesion_id: r for r in les.table}
    assert ids["N1"].nodal and ids["N1"].target and not ids["NT1"].target
    masks = les.masks()
    assert masks["L1"].sum() > 0


def test_prebaseline_visit_and_explicit_baseline(tiny_study: Path) -> None:
    s5 = open_study(tiny_study).subjects["005"]
    assert [v.id for v in s5] == ["00", "01", "02", "03", "04"]
    assert s5.baseline.id == "01" and s5.visits["00"].prebaseline
    assert s5.visits["00"].days_on_treatment < 0


def test_missing_sidecar_field(study_copy: Path) -> None:
    js = study_copy / "sub-001/ses-02/anat/sub-001_ses-02_VFA.json"
    d = json.loads(js.read_text())
    del d["FlipAngle"]
    js.write_text(json.dumps(d))
    errs = _errors(validate_study(study_copy))
    assert len(errs) == 1
    assert errs[0].file == "sub-001/ses-02/anat/sub-001_ses-02_VFA.json"
    assert errs[0].field == "FlipAngle" and "missing" in errs[0].message
    series = open_study(study_copy).subjects["001"].visits["02"].series["t1_vfa"]
    with pytest.raises(DataError, match="FlipAngle: required sidecar field is missing"):
        _ = series.protocol


def test_a_null_sidecar_field_is_said_to_be_null_not_missing(study_copy: Path) -> None:
    js = study_copy / "sub-001/ses-02/anat/sub-001_ses-02_VFA.json"
    d = json.loads(js.read_text())
    d["FlipAngle"] = None
    js.write_text(json.dumps(d))
    series = open_study(study_copy).subjects["001"].visits["02"].series["t1_vfa"]
    with pytest.raises(DataError, match="FlipAngle: required sidecar field is null"):
        _ = series.protocol


def test_impossible_sidecar_value_names_sidecar_field(study_copy: Path) -> None:
    js = study_copy / "sub-002/ses-01/perf/sub-002_ses-01_dce.json"
    d = json.loads(js.read_text())
    d["FrameTimes"][3] = d["FrameTimes"][2]
    js.write_text(json.dumps(d))
    errs = _errors(validate_study(study_copy))
    assert [(e.file, e.field) for e in errs] == [
        ("sub-002/ses-01/perf/sub-002_ses-01_dce.json", "FrameTimes")
    ]
    assert "strictly increasing" in errs[0].message
    series = open_study(study_copy).subjects["002"].visits["01"].series["dce"]
    with pytest.raises(ProtocolError, match="FrameTimes"):
        _ = series.protocol


def test_wrong_types_and_implausible_times_in_sidecars(study_copy: Path) -> None:
    """A VFA TR of ``true`` was read as 1 s (T1 at its bound everywhere); an IR TR written in
    ms is possible but implausible: a warning naming the sidecar and field."""
    vfa = study_copy / "sub-001/ses-02/anat/sub-001_ses-02_VFA.json"
    vfa.write_text(json.dumps({**json.loads(vfa.read_text()), "RepetitionTime": True}))
    ir = study_copy / "sub-001/ses-03/anat/sub-001_ses-03_IRT1.json"
    ir.write_text(json.dumps({**json.loads(ir.read_text()), "RepetitionTime": 8000}))
    problems = validate_study(study_copy)
    assert [(p.severity, p.file, p.field) for p in problems] == [
        ("error", "sub-001/ses-02/anat/sub-001_ses-02_VFA.json", "RepetitionTime"),
        ("warning", "sub-001/ses-03/anat/sub-001_ses-03_IRT1.json", "RepetitionTime"),
    ]
    assert "expected a number, got True" in problems[0].message
    assert "8000 s is implausible" in problems[1].message


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"SUVbwFactor": None, "BodyWeight": "70kg"}, "BodyWeight", "expected a number"),
        ({"BodyWeight": "70kg"}, "BodyWeight", "expected a number"),  # crashed the SUL
        ({"SUVbwFactor": None, "BodyWeight": None}, "BodyWeight", "required sidecar field"),
        ({"SUVbwFactor": None, "InjectedRadioactivity": 0}, "InjectedRadioactivity", "positive"),
        ({"SUVbwFactor": [0.0]}, "SUVbwFactor", "positive"),
        ({"SUVbwFactor": None, "ScanStart": None}, "ScanStart", "required sidecar field"),
        ({"SUVbwFactor": None, "DecayCorrection": "LATE"}, "DecayCorrection", "START, ADMIN"),
        ({"Units": "kBq/mL"}, "Units", "expected 'Bq/mL'"),
    ],
)
def test_validate_checks_what_the_pet_step_reads(
    study_copy: Path, change: dict, field: str, message: str
) -> None:
    """Each failed only in ``run`` (one as an internal error, one naming the DICOM field)."""
    js = study_copy / "sub-001/ses-02/pet/sub-001_ses-02_pet.json"
    side = {k: v for k, v in {**json.loads(js.read_text()), **change}.items() if v is not None}
    js.write_text(json.dumps(side))
    errs = _errors(validate_study(study_copy))
    assert [(e.file, e.field) for e in errs] == [
        ("sub-001/ses-02/pet/sub-001_ses-02_pet.json", field)
    ]
    assert message in errs[0].message


def test_a_single_volume_image_must_be_3d(study_copy: Path) -> None:
    """A 4-D T2w (two volumes) was accepted by validate and run."""
    import nibabel as nib

    t2w = study_copy / "sub-001/ses-02/anat/sub-001_ses-02_T2w.nii.gz"
    img = nib.load(t2w)
    data = np.asarray(img.dataobj)
    nib.save(nib.Nifti1Image(np.stack([data, data], -1), img.affine), t2w)
    errs = _errors(validate_study(study_copy))
    assert [(e.file, e.field) for e in errs] == [(str(t2w.relative_to(study_copy)), "dim[4]")]
    assert "a T2w image is a single 3-D volume, this one has 2 volumes" in errs[0].message
    series = open_study(study_copy).subjects["001"].visits["02"].series["anatomical"]
    with pytest.raises(DataError, match="single 3-D volume"):
        series.load()
    nib.save(nib.Nifti1Image(data[..., None], img.affine), t2w)  # a 4th axis of length 1
    assert _errors(validate_study(study_copy)) == []


def test_a_complex_series_is_refused_naming_the_datatype(study_copy: Path) -> None:
    import nibabel as nib

    dwi = study_copy / "sub-001/ses-02/dwi/sub-001_ses-02_dwi.nii.gz"
    img = nib.load(dwi)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj).astype(np.complex64), img.affine), dwi)
    errs = _errors(validate_study(study_copy))
    assert [(e.file, e.field) for e in errs] == [(str(dwi.relative_to(study_copy)), "datatype")]
    assert "a magnitude image is expected" in errs[0].message


def test_wrong_bvalue_count(study_copy: Path) -> None:
    bval = study_copy / "sub-003/ses-01/dwi/sub-003_ses-01_dwi.bval"
    bval.write_text("0 50 100 200 400 600 800\n")
    errs = _errors(validate_study(study_copy))
    assert len(errs) == 1
    assert errs[0].file == "sub-003/ses-01/dwi/sub-003_ses-01_dwi.nii.gz"
    assert errs[0].field == "dim[4]"
    assert "8 volume(s) along its 4th axis but the protocol lists 7" in errs[0].message


def test_unknown_label(study_copy: Path) -> None:
    tsv = study_copy / "derivatives/lesions/sub-001/ses-01/sub-001_ses-01_lesions.tsv"
    lines = tsv.read_text().splitlines()
    tsv.write_text("\n".join(line for line in lines if not line.startswith("2\t")) + "\n")
    errs = _errors(validate_study(study_copy))
    assert len(errs) == 1
    assert errs[0].file == "derivatives/lesions/sub-001/ses-01/sub-001_ses-01_lesions.nii.gz"
    assert errs[0].field == "label 2"
    assert "not named in sub-001_ses-01_lesions.tsv" in errs[0].message


def test_bad_table_values(study_copy: Path) -> None:
    tsv = study_copy / "derivatives/lesions/sub-001/ses-01/sub-001_ses-01_lesions.tsv"
    tsv.write_text(tsv.read_text().replace("\tfalse\tfalse", "\tmaybe\tfalse", 1))
    errs = _errors(validate_study(study_copy))
    assert any(
        e.field == "row 4: target" and "expected true or false, got 'maybe'" in e.message
        for e in errs
    )


@pytest.mark.parametrize(
    ("date", "field", "message"),
    [
        ("2025-12-01", "subjects.002.visits.03.date", r"before the baseline 01 \(2026-01-12\)"),
        ("2026-02-30", "subjects.002.visits.03.date", "'2026-02-30' is not a real date"),
        ("2026-01-20", "subjects.002.visits.03.date", r"is not after the previous visit 02"),
    ],
)
def test_bad_dates(study_copy: Path, date: str, field: str, message: str) -> None:
    man = study_copy / "study.yaml"
    d = yaml.safe_load(man.read_text())
    d["subjects"]["002"]["visits"]["03"]["date"] = date
    man.write_text(yaml.safe_dump(d, sort_keys=False))
    problems = validate_study(study_copy)
    errs = _errors(problems)
    assert any(
        e.file == "study.yaml" and e.field == field and re.search(message, e.message) for e in errs
    ), errs
    with pytest.raises(StudyError) as info:
        open_study(study_copy)
    assert any(p.field == field for p in info.value.problems)


def test_treatment_after_first_followup(study_copy: Path) -> None:
    man = study_copy / "study.yaml"
    d = yaml.safe_load(man.read_text())
    d["subjects"]["001"]["treatment"]["start_date"] = "2026-03-01"
    man.write_text(yaml.safe_dump(d, sort_keys=False))
    errs = _errors(validate_study(study_copy))
    assert [e.field for e in errs] == ["subjects.001.treatment.start_date"]


def test_truncated_image(study_copy: Path) -> None:
    p = study_copy / "sub-004/ses-02/perf/sub-004_ses-02_dce.nii.gz"
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 3])
    errs = _errors(validate_study(study_copy))
    assert len(errs) == 1
    assert errs[0].file == "sub-004/ses-02/perf/sub-004_ses-02_dce.nii.gz"
    assert "cannot read NIfTI image" in errs[0].message
    series = open_study(study_copy).subjects["004"].visits["02"].series["dce"]
    with pytest.raises(DataError, match=r"sub-004_ses-02_dce\.nii\.gz"):
        series.load()


def test_structure_mismatch(study_copy: Path) -> None:
    (study_copy / "sub-001/ses-09").mkdir()
    import shutil

    shutil.rmtree(study_copy / "sub-006")
    errs = _errors(validate_study(study_copy))
    msgs = {(e.file, e.field): e.message for e in errs}
    assert "not listed under subjects.001.visits" in msgs[("sub-001/ses-09", "")]
    assert "sub-006/ is missing" in msgs[("study.yaml", "subjects.006")]


def test_manifest_missing_or_garbage(study_copy: Path) -> None:
    man = study_copy / "study.yaml"
    man.write_text("subjects: [unclosed\n")
    errs = _errors(validate_study(study_copy))
    assert errs[0].file == "study.yaml" and "cannot parse YAML" in errs[0].message
    man.unlink()
    assert "missing" in _errors(validate_study(study_copy))[0].message


def test_grid_mismatch(study_copy: Path) -> None:
    from tumorscope.volume import Volume

    p = study_copy / "sub-001/ses-01/anat/sub-001_ses-01_T2w.nii.gz"
    v = Volume.from_nifti(p, dtype=np.int16)
    aff = v.affine.copy()
    aff[0, 3] += 10.0
    Volume(v.data, aff).to_nifti(p)
    errs = _errors(validate_study(study_copy))
    assert len(errs) >= 1 and any("co-registered" in e.message for e in errs)


def test_cli_validate_clean_and_broken(tiny_study: Path, study_copy: Path) -> None:
    ok = runner.invoke(app, ["validate", str(tiny_study)])
    assert ok.exit_code == 0, ok.output
    assert "0 error(s)" in ok.output
    bval = study_copy / "sub-003/ses-01/dwi/sub-003_ses-01_dwi.bval"
    bval.write_text("0 50\n")
    js = study_copy / "sub-001/ses-02/anat/sub-001_ses-02_VFA.json"
    js.write_text("{not json")
    bad = runner.invoke(app, ["validate", str(study_copy)], terminal_width=250)
    assert bad.exit_code == 1
    assert "2 error(s)" in bad.output
    assert "sub-003_ses-01_dwi.nii.gz" in bad.output
    assert "sub-001_ses-02_VFA.json" in bad.output
