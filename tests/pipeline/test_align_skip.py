"""The align step's ``align_skip_same_geometry`` option and the phantom's moved series."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tumorscope.errors import DataError
from tumorscope.io import open_study
from tumorscope.pipeline.align import _NOT_REGISTRABLE, align_visit
from tumorscope.pipeline.options import RunOptions


def test_series_on_the_reference_grid_are_skipped_with_a_reason(small_study: Path) -> None:
    visit = open_study(small_study).subjects["001"].visits["01"]
    ref = visit.series["anatomical"].load()
    images = {r: s for r, s in visit.series.items() if not r.startswith(_NOT_REGISTRABLE)}
    same = {r for r, s in images.items() if r != "anatomical" and s.load().same_grid(ref)}
    assert same  # the phantom's series share the anatomical grid
    out = {a.series: a for a in align_visit(visit, skip_same_geometry=True)}
    for role in same:
        assert out[role].status == "skipped"
        assert "same grid and affine" in (out[role].reason or "")
        assert not out[role].applied


def test_an_identical_affine_does_not_skip_by_default(study2: Path) -> None:
    """The default registers every series: a content shift under an unchanged affine (the
    patient moved between series of one session geometry) is found."""
    path = study2 / "sub-001" / "ses-01" / "dwi" / "sub-001_ses-01_dwi.nii.gz"
    img = nib.load(str(path))
    data = np.roll(np.asarray(img.dataobj), 2, axis=0)
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(path))
    shift = np.asarray(img.affine)[:3, 0] * 2
    visit = open_study(study2).subjects["001"].visits["01"]
    row = {a.series: a for a in align_visit(visit)}["dwi"]
    assert row.status == "registered" and row.applied
    assert row.matrix is not None
    np.testing.assert_allclose(row.matrix[:3, 3], shift, atol=1.0)


def test_the_option_is_a_flag() -> None:
    assert RunOptions.from_mapping({"align_skip_same_geometry": True}).align_skip_same_geometry
    with pytest.raises(DataError, match="align_skip_same_geometry"):
        RunOptions.from_mapping({"align_skip_same_geometry": "yes"})


def test_the_mre_wave_phase_is_not_registered(tiny_study: Path) -> None:
    """The MRE series is the wave's phase: no anatomy to register. Registered, it was moved
    by 1.7–6.5 mm on a motionless phantom (the demo's 8 MRE visits, 4 applied)."""
    study = open_study(tiny_study)
    visits = [v for s in study.subjects.values() for v in s.visits.values() if "mre" in v.series]
    assert visits  # the phantom's hepatitis subject has MRE at every visit
    for visit in visits[:2]:
        out = {a.series: a for a in align_visit(visit)}
        row = out["mre"]
        assert row.status == "skipped" and not row.applied
        assert "MRE wave phase" in (row.reason or "")
        assert not any(a.applied for a in out.values())  # the phantom does not move
