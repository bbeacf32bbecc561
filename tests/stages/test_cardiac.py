"""The cardiac stage's region: MOLLI and T2-prep fitted where there is signal (the run option
``relax_region``) give, inside it, exactly the maps of the whole-volume fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tumorscope.errors import FitError
from tumorscope.files import sidecar_of
from tumorscope.io import open_study
from tumorscope.stages.base import SeriesInput
from tumorscope.stages.cardiac import CARDIAC_ROLES, fit_cardiac_visit
from tumorscope.stages.relaxometry import BODY_RULE, body_mask
from tumorscope.volume import Volume


def test_region_body_is_the_whole_fit_inside_the_body(tiny_study: Path, tmp_path: Path) -> None:
    visit = open_study(tiny_study).subjects["006"].visits["03"]
    series = {r: SeriesInput.of(s) for r, s in visit.series.items() if r in CARDIAC_ROLES}
    assert set(series) == set(CARDIAC_ROLES)
    whole = fit_cardiac_visit(series, out_dir=tmp_path / "all", prefix="p_")
    inner = fit_cardiac_visit(series, out_dir=tmp_path / "body", prefix="p_", region="body")
    assert [m.name for m in whole.maps] == [m.name for m in inner.maps]
    assert {"molli.T1", "molli_post.T1", "t2prep.T2", "t2prep.M0"} <= {m.name for m in inner.maps}
    for a, b in zip(whole.maps, inner.maps, strict=True):
        region = body_mask(series[b.series].load())
        assert 0 < region.sum() < region.size
        va = np.asarray(Volume.from_nifti(a.path).data)
        vb = np.asarray(Volume.from_nifti(b.path).data)
        np.testing.assert_array_equal(va[region], vb[region])
        assert np.all(np.isnan(vb[~region])), b.name
        prov = json.loads(sidecar_of(b.path).read_text())["Provenance"]
        assert prov["region"] == {"name": "body", "rule": BODY_RULE, "voxels": int(region.sum())}
    # the myocardium and the blood pool (what the organ watch reads) are inside the region
    lesions = tiny_study / "derivatives" / "lesions" / "sub-006" / "ses-03"
    organs = Volume.from_nifti(lesions / "sub-006_ses-03_organs.nii.gz")
    heart = np.isin(np.asarray(organs.data), (1, 2))
    assert heart.any()
    for role in CARDIAC_ROLES:
        assert body_mask(series[role].load())[heart].all(), role
    with pytest.raises(FitError, match="region"):
        fit_cardiac_visit(series, out_dir=tmp_path / "x", region="lesions")
