"""DSC perfusion through the whole DICOM chain: the brain phantom's baseline visit (T2w and DSC)
written as GE DICOM (``study_to_dicom``: the DSC series a 2-D EPI), imported (taken as DSC,
not DCE), fitted by the pipeline, and exported as Parametric Maps that reference the DSC series
they were computed from."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("highdicom")

import pydicom
import yaml

from tumorscope.io import open_study
from tumorscope.io.dicom import import_dicom
from tumorscope.io.dicom.export import export_visit
from tumorscope.io.dicom.profile import pseudonymous_uid
from tumorscope.phantom import make_study
from tumorscope.phantom.dicom import study_to_dicom
from tumorscope.pipeline import run_study


def _brain_baseline(src: Path, dst: Path) -> Path:
    """The phantom reduced to its brain subject (002) and that subject's first visit."""
    man = yaml.safe_load((src / "study.yaml").read_text())
    subject = man["subjects"]["002"]
    subject["visits"] = {"01": subject["visits"]["01"]}
    man["subjects"] = {"002": subject}
    dst.mkdir()
    (dst / "study.yaml").write_text(yaml.safe_dump(man, sort_keys=False))
    shutil.copytree(src / "sub-002" / "ses-01", dst / "sub-002" / "ses-01")
    part = Path("derivatives") / "lesions" / "sub-002" / "ses-01"
    shutil.copytree(src / part, dst / part)
    return dst


def test_a_dsc_series_from_dicom_is_fitted_and_its_maps_reference_it(tmp_path: Path) -> None:
    full = make_study(tmp_path / "phantom", size="tiny", seed=0, n_subjects=1, brain_subjects=1)
    dicom = study_to_dicom(_brain_baseline(full, tmp_path / "brain"), tmp_path / "dicom",
                           vendors=("ge",))  # fmt: skip
    rep = import_dicom(dicom, tmp_path / "study")
    assert not [p for p in rep.problems if p.severity == "error"], rep.problems
    assert sorted(r["suffix"] for r in rep.series) == ["T2w", "dsc"]
    (dsc,) = [r for r in rep.series if r["suffix"] == "dsc"]
    assert dsc["file"].endswith("perf/sub-001_ses-01_dsc.nii.gz")
    (visit,) = open_study(tmp_path / "study").subjects["001"]
    assert visit.series["dsc"].protocol.te_ms == pytest.approx(30.0)

    out = tmp_path / "run"
    summary = run_study(tmp_path / "study", out, steps=("register", "fit_dsc"), report=False)
    assert summary.ok, summary.failed
    files = export_visit(tmp_path / "study", dicom, tmp_path / "export", subject="001",
                         visit="01", results=out)  # fmt: skip
    pms = {f.name: pydicom.dcmread(f) for f in files if f.name.endswith("_pm.dcm")}
    assert {"sub-001_ses-01_dsc-rCBV_pm.dcm", "sub-001_ses-01_dsc-CBF_pm.dcm"} <= set(pms)
    # the source of the DSC maps is the DSC series (by its pseudonymous UID), not the T2w
    originals = {
        pseudonymous_uid(ds.SeriesInstanceUID): ds.SeriesDescription
        for ds in (pydicom.dcmread(f, stop_before_pixels=True) for f in dicom.rglob("*.dcm"))
    }
    for pm in pms.values():
        assert originals[pm.ReferencedSeriesSequence[0].SeriesInstanceUID] == "ep2d_perf"
