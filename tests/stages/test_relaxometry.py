"""The relaxometry stage on the tiny phantom: T2*, T2 and IR T1 maps of a visit recover the
truth; what the stage returns (maps, files); bad roles; VFA T1 from the series' protocol."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tumorscope.errors import DataError, FitError
from tumorscope.files import sidecar_of
from tumorscope.io import open_study
from tumorscope.stages.base import SeriesInput, StageResult
from tumorscope.stages.relaxometry import (
    RELAXOMETRY_ROLES,
    RelaxometryOptions,
    fit_relaxometry,
    fit_relaxometry_series,
)
from tumorscope.volume import Volume


def _fit_visit(visit: Any, out_dir: Path, **kw: Any) -> StageResult:
    """The stage on a study visit, as the pipeline's ``fit_relax`` step calls it."""
    series = {r: SeriesInput.of(s) for r, s in visit.series.items()}
    return fit_relaxometry(
        series, out_dir=out_dir, prefix=f"sub-{visit.subject_id}_ses-{visit.id}_", **kw
    )


def _fits(res: StageResult) -> dict[str, Any]:
    return {m.series: m.fit for m in res.maps}


def test_t2star_maps_recover_phantom_truth(tiny_study: Path, tmp_path: Path) -> None:
    """Phantom MEGRE: 8 echoes 2–30 ms, T2* 25–55 ms, first-echo SNR ~60 in tumour (Rician).

    The noise level is found from the background (the phantom's air), and in every tissue
    the median T2* is within 3 % of the truth (per-voxel SD is ~3–4 %, so the median of the
    smallest tissue group, 12 voxels, has an SE of ~1.3 %), and the median |error| over the
    body is below 5 %.
    """
    study = open_study(tiny_study)
    visit = next(iter(study.subjects["003"].visits.values()))  # no immune substudy series
    res = _fit_visit(visit, tmp_path / "maps")
    assert set(_fits(res)) == {"t2star"}
    fit = _fits(res)["t2star"]
    truth_dir = tiny_study / "derivatives" / "truth" / "sub-003" / f"ses-{visit.id}"
    pre = f"sub-003_ses-{visit.id}_desc-"
    truth = Volume.from_nifti(truth_dir / f"{pre}T2star_truth.nii.gz").data
    body = Volume.from_nifti(truth_dir / f"{pre}body_mask.nii.gz").data > 0
    meta = json.loads((tiny_study / "derivatives" / "truth" / "phantom.json").read_text())
    assert fit.provenance["options"]["noise_sigma_estimated"] == "background"
    assert fit.provenance["options"]["noise_sigma"] == pytest.approx(
        meta["sigma"]["megre"], rel=0.05
    )
    ok = body & np.isfinite(truth)
    got = fit["T2star"]
    assert np.median(np.abs(got[ok] / truth[ok] - 1)) < 0.05
    checked = 0
    for value in np.unique(truth[ok]):
        sel = ok & (truth == value)
        if sel.sum() >= 12:  # the SE of the median stated above holds from 12 voxels
            assert abs(np.median(got[sel]) / value - 1) < 0.03, value
            checked += 1
    assert checked >= 2
    by_name = {m.name: m for m in res.maps}
    assert set(by_name) == {"t2star.S0", "t2star.R2star", "t2star.T2star"}
    m = by_name["t2star.T2star"]
    assert m.path.name == f"sub-003_ses-{visit.id}_t2star_T2star.nii.gz" and m.path.exists()
    assert m.status is not None and m.status.name == f"sub-003_ses-{visit.id}_t2star_status.nii.gz"
    assert m.series == "t2star" and m.fit is fit
    side = json.loads(sidecar_of(m.path).read_text())
    assert side["Units"] == "ms"
    assert side["Provenance"]["inputs"]["series"]["path"] == visit.series["t2star"].relpath
    # every image written and its sidecar, nothing else
    images = sorted(p.name for p in (tmp_path / "maps").glob("*.nii.gz"))
    assert sorted(p.name for p in res.files if p.name.endswith(".nii.gz")) == images
    assert all(sidecar_of(p) in res.files for p in res.files if p.name.endswith(".nii.gz"))
    assert len(res.files) == 2 * len(images) == 2 * 7  # S0, R2star, T2star, 2 stderr, status, rss


def test_substudy_t1_ir_and_t2_recover_phantom_truth(tiny_study: Path, tmp_path: Path) -> None:
    """Immune substudy (subject 001): IR T1 (7 TIs 100–4000 ms, SNR 50) and multi-echo T2
    (9 echoes 10–160 ms, SNR 60) are fitted beside T2*; per tissue with at least 8 voxels the
    median T1 and T2 are within 3 % of the truth (per-voxel SD of a few %, so the median of 8
    voxels has an SE under 1.5 %). Artery voxels (blood partial volume) are excluded."""
    visit = open_study(tiny_study).subjects["001"].visits["02"]
    res = _fit_visit(visit, tmp_path / "maps")
    assert set(_fits(res)) == {"t2star", "t1_ir", "t2"}
    assert {m.model for m in res.maps} == {"t2star", "irt1", "t2"}
    truth_dir = tiny_study / "derivatives" / "truth" / "sub-001" / "ses-02"
    pre = "sub-001_ses-02_desc-"
    body = Volume.from_nifti(truth_dir / f"{pre}body_mask.nii.gz").data > 0
    frac = Volume.from_nifti(truth_dir / f"{pre}arteryfraction_truth.nii.gz").data
    for role, name in (("t1_ir", "T1"), ("t2", "T2")):
        truth = Volume.from_nifti(truth_dir / f"{pre}{name}_truth.nii.gz").data
        ok = body & (frac == 0) & np.isfinite(truth)
        got = _fits(res)[role][name]
        checked = 0
        for value in np.unique(truth[ok]):
            sel = ok & (truth == value)
            if sel.sum() >= 8:
                assert abs(np.median(got[sel]) / value - 1) < 0.03, (role, value)
                checked += 1
        assert checked >= 2


def test_stage_bad_roles(tiny_study: Path, tmp_path: Path) -> None:
    visit = next(iter(open_study(tiny_study).subjects["003"].visits.values()))
    with pytest.raises(FitError, match="unknown relaxometry role"):
        _fit_visit(visit, tmp_path, roles=["t1_magic"])
    with pytest.raises(DataError, match="no 't2' series"):
        _fit_visit(visit, tmp_path / "x", roles=["t2"])
    assert not (tmp_path / "x").exists()
    # a role the pipeline does not fit by default (VFA T1) is fitted when asked for
    visit1 = open_study(tiny_study).subjects["001"].visits["02"]
    res = _fit_visit(visit1, tmp_path / "vfa", roles=["t1_vfa"])
    assert {m.name for m in res.maps} == {"vfat1.M0", "vfat1.T1", "vfat1.R1"}
    assert {m.series for m in res.maps} == {"t1_vfa"}


def test_default_roles_and_options(tiny_study: Path, tmp_path: Path) -> None:
    """By default the stage fits the pipeline's roles only; options reach the models."""
    assert set(RELAXOMETRY_ROLES) == {"t2star", "t2", "t1_ir"}
    visit = open_study(tiny_study).subjects["001"].visits["02"]
    opts = RelaxometryOptions(t2star_noise_sigma=3.0, t2_floor="offset")
    res = _fit_visit(visit, tmp_path / "m", roles=["t2star", "t2"], options=opts)
    fits = _fits(res)
    assert fits["t2star"].provenance["options"]["noise_sigma"] == 3.0
    assert fits["t2"].provenance["model"] == "t2_offset"
    assert (tmp_path / "m" / "sub-001_ses-02_t2_offset_offset.nii.gz").exists()
    with pytest.raises(FitError, match="floor"):
        _fit_visit(visit, tmp_path / "bad", options=RelaxometryOptions(t2star_floor="offset"))  # type: ignore[arg-type]
    assert not (tmp_path / "bad").exists()


def test_series_with_b1_map_and_bad_grid(tiny_study: Path, tmp_path: Path) -> None:
    """One series with a per-voxel input map: the B1 map is hashed into the provenance; a
    map on another grid is refused before anything is written."""
    visit = open_study(tiny_study).subjects["001"].visits["02"]
    s = SeriesInput.of(visit.series["t1_vfa"])
    vol = s.load()
    b1 = tmp_path / "b1.nii.gz"
    Volume(np.full(vol.spatial_shape, 1.05, np.float32), vol.affine).to_nifti(b1)
    res = fit_relaxometry_series(s, out_dir=tmp_path / "o", voxel_maps={"b1": b1})
    t1 = next(m for m in res.maps if m.parameter == "T1")
    assert t1.path.name == "sub-001_ses-02_VFA_vfat1_T1.nii.gz"
    prov = json.loads(sidecar_of(t1.path).read_text())["Provenance"]
    assert list(prov["inputs"]) == ["series", "b1"] and prov["options"]["b1_map"] is True
    bad = tmp_path / "b1bad.nii.gz"
    Volume(np.ones(vol.spatial_shape, np.float32), vol.affine * 2).to_nifti(bad)
    with pytest.raises(DataError, match="B1 map grid"):
        fit_relaxometry_series(s, out_dir=tmp_path / "x", voxel_maps={"b1": bad})
    with pytest.raises(FitError, match="no per-voxel map 'b2'"):
        fit_relaxometry_series(s, out_dir=tmp_path / "x", voxel_maps={"b2": b1})
    assert not (tmp_path / "x").exists()


def test_vfa_t1_recovers_phantom_truth(tiny_study: Path) -> None:
    """Phantom VFA (2, 5, 10, 15°, TR 5 ms), T1 800–2000 ms: per tissue the median T1 is
    within 2 % of the truth (per-voxel SD ~1.3 %; the smallest group has 12 voxels, SE of the
    median ~0.5 %). Artery voxels (partial volume of blood) are excluded."""
    from tumorscope.models import VFAT1

    visit = next(iter(open_study(tiny_study).subjects["001"].visits.values()))
    series = visit.series["t1_vfa"]
    with pytest.warns(UserWarning):  # background voxels hit bounds: one summary warning
        fit = VFAT1.from_protocol(series.protocol).fit(series.load().data)
    truth_dir = tiny_study / "derivatives" / "truth" / "sub-001" / f"ses-{visit.id}"
    pre = f"sub-001_ses-{visit.id}_desc-"
    truth = Volume.from_nifti(truth_dir / f"{pre}T1_truth.nii.gz").data
    body = Volume.from_nifti(truth_dir / f"{pre}body_mask.nii.gz").data > 0
    artery = Volume.from_nifti(truth_dir / f"{pre}artery_mask.nii.gz").data > 0
    ok = body & ~artery & np.isfinite(truth)
    for value in np.unique(truth[ok]):
        sel = ok & (truth == value)
        assert abs(np.median(fit["T1"][sel]) / value - 1) < 0.02, value


def test_region_body_fits_the_voxels_with_signal_only(tiny_study: Path, tmp_path: Path) -> None:
    """``RelaxometryOptions(region="body")`` (the pipeline's default, run option
    ``relax_region``): voxels whose largest signal is < 10 % of its 99th percentile are not
    fitted (NaN, status 255); body voxels get exactly the maps of the whole-volume fit (the
    T2* noise level is still estimated from the whole volume's background); the rule is in
    the provenance. The phantom's body mask is inside the region. A given mask replaces the
    region; an unknown region is an error."""
    from tumorscope.fitting import FitStatus
    from tumorscope.stages.relaxometry import body_mask

    visit = open_study(tiny_study).subjects["001"].visits["02"]
    whole = _fit_visit(visit, tmp_path / "all")
    inner = _fit_visit(visit, tmp_path / "body", options=RelaxometryOptions(region="body"))
    truth = tiny_study / "derivatives" / "truth" / "sub-001" / "ses-02"
    phantom_body = Volume.from_nifti(truth / "sub-001_ses-02_desc-body_mask.nii.gz").data > 0
    assert len(whole.maps) == len(inner.maps) >= 9
    for role in ("t2star", "t2", "t1_ir"):
        region = body_mask(SeriesInput.of(visit.series[role]).load())
        assert 0 < region.sum() < region.size and not (phantom_body & ~region).any(), role
    for a, b in zip(whole.maps, inner.maps, strict=True):
        assert (a.name, a.series) == (b.name, b.series)
        region = body_mask(SeriesInput.of(visit.series[b.series]).load())
        va, vb = np.asarray(a.fit[a.parameter]), np.asarray(b.fit[b.parameter])
        assert np.all(np.isnan(vb[~region]))
        np.testing.assert_array_equal(va[region], vb[region])
        assert np.all(np.asarray(b.fit.status)[~region] == FitStatus.NOT_FITTED)
        prov = json.loads(sidecar_of(b.path).read_text())["Provenance"]
        assert prov["region"] == {
            "name": "body",
            "rule": "largest signal over the volumes >= 0.1 x its 99th percentile",
            "voxels": int(region.sum()),
        }
        assert "region" not in json.loads(sidecar_of(a.path).read_text())["Provenance"]
    t2s = _fits(inner)["t2star"].provenance["options"]
    assert t2s["noise_sigma_estimated"] == "background"
    assert t2s["noise_sigma"] == _fits(whole)["t2star"].provenance["options"]["noise_sigma"]
    # a given mask replaces the region
    s = SeriesInput.of(visit.series["t2"])
    mask = np.zeros(s.load().spatial_shape, bool)
    mask[0, 0, 0] = True
    given = fit_relaxometry_series(
        s, out_dir=tmp_path / "mask", options=RelaxometryOptions(region="body"), mask=mask
    )
    assert np.isfinite(np.asarray(given.maps[0].fit["T2"])).sum() <= 1
    assert np.asarray(given.maps[0].fit.mask).sum() == 1
    with pytest.raises(FitError, match="region"):
        RelaxometryOptions(region="lesions")


def test_run_option_relax_region() -> None:
    """The pipeline's ``fit_relax`` step fits the body by default; ``relax_region: all`` as
    before; the option is part of the step's input hash."""
    from tumorscope.pipeline.options import RunOptions
    from tumorscope.pipeline.steps import STEPS

    assert RunOptions().relax_region == "body"
    assert RunOptions.from_mapping({"relax_region": "ALL"}).relax_region == "all"
    with pytest.raises(DataError, match="relax_region"):
        RunOptions.from_mapping({"relax_region": "lesions"})
    step = next(s for s in STEPS if s.name == "fit_relax")
    assert "relax_region" in step.option_keys
