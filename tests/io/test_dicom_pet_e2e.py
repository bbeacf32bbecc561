"""End to end for PET: phantom PET (NIfTI, Bq/mL) → PET DICOM in each vendor's style →
import → the same activity and the same SUV factor."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from tumorscope.io import open_study
from tumorscope.io.dicom import import_dicom
from tumorscope.phantom import make_study
from tumorscope.phantom.dicom import study_to_dicom


@pytest.fixture(scope="module")
def pet_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Subject 001 (responder: has PET), baseline visit, anatomical image and PET only."""
    root = make_study(tmp_path_factory.mktemp("pet-e2e") / "phantom", size="tiny", n_subjects=1)
    manifest = yaml.safe_load((root / "study.yaml").read_text())
    visits = manifest["subjects"]["001"]["visits"]
    for vid in list(visits)[1:]:
        del visits[vid]
        shutil.rmtree(root / "sub-001" / f"ses-{vid}")
        shutil.rmtree(root / "derivatives" / "lesions" / "sub-001" / f"ses-{vid}")
    (root / "study.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    for role, series in open_study(root).subjects["001"].visits["01"].series.items():
        if role not in ("anatomical", "pet"):
            for f in series.path.parent.glob(series.path.name.split(".")[0] + ".*"):
                f.unlink()
    return root


@pytest.mark.parametrize("vendor", ["siemens", "ge", "philips"])
def test_pet_survives_dicom_and_import(pet_study: Path, tmp_path: Path, vendor: str) -> None:
    dicom = study_to_dicom(pet_study, tmp_path / "dicom", vendors=(vendor,))
    rep = import_dicom(dicom, tmp_path / "imported")
    assert rep.n_rejected == 0, rep.problems
    a = open_study(pet_study).subjects["001"].visits["01"].series["pet"]
    b = open_study(tmp_path / "imported").subjects["001"].visits["01"].series["pet"]
    assert b.relpath.endswith("pet/sub-001_ses-01_pet.nii.gz")
    xa, xb = a.load(), b.load()
    np.testing.assert_allclose(xb.affine, xa.affine, atol=1e-4)
    # 16-bit storage, slope = slice maximum / 32000: error at most half a step, plus the
    # float32 rounding of the values on both sides (a few ulp)
    step = np.abs(xa.data).max(axis=(0, 1), keepdims=True) / 32000.0
    ulp = np.spacing(np.abs(xa.data).astype(np.float32))
    assert np.all(np.abs(xb.data - xa.data) <= 0.5 * step + 4 * ulp)
    sa, sb = a.sidecar, b.sidecar
    assert sb["SUVbwFactor"][0] == pytest.approx(sa["SUVbwFactor"][0], rel=1e-9)
    assert sb["Units"] == "Bq/mL"
    assert sb["OriginalUnits"] == ("CNTS" if vendor == "philips" else "BQML")
    assert sb["ScanStart"] == pytest.approx(sa["ScanStart"])
    assert (sb["BodyWeight"], sb["BodyHeight"], sb["Sex"]) == (70.0, 1.75, "M")
