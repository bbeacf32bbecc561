"""Iron stage: post-ferumoxytol MEGRE + pre-contrast R2* → ΔR2*, iron and status maps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tumorscope.errors import DataError
from tumorscope.stages.base import read_series
from tumorscope.stages.iron import IronOptions, iron_from_rates, iron_maps
from tumorscope.volume import Volume

AFF = np.diag([2.0, 2.0, 2.0, 1.0])
TE_S = [0.002, 0.005, 0.008, 0.012, 0.016, 0.02, 0.025, 0.03]
SHAPE = (8, 8, 2)


def _nifti(path: Path, data: np.ndarray, dtype: type = np.float32) -> Path:
    Volume(np.asarray(data, dtype=dtype), AFF).to_nifti(path)
    return path


def _post_series(
    tmp_path: Path, r2star: np.ndarray, *, air_rows: int = 1, **sidecar: object
) -> Path:
    """A post-contrast MEGRE (Rician noise, σ = 5) with noise-only background rows."""
    rng = np.random.default_rng(7)
    shape = r2star.shape
    s0 = np.full(shape, 1000.0)
    s0[:air_rows] = 0.0  # air: the model estimates its noise level there
    te_ms = np.array(TE_S) * 1000
    clean = s0[..., None] * np.exp(-np.outer(r2star.ravel(), te_ms) / 1000).reshape(*shape, -1)
    noisy = np.abs(
        clean + 5 * rng.standard_normal(clean.shape) + 5j * rng.standard_normal(clean.shape)
    )
    path = _nifti(tmp_path / "post_MEGRE.nii.gz", noisy)
    side = {"EchoTime": TE_S, "MagneticFieldStrength": 3.0, **sidecar}
    (tmp_path / "post_MEGRE.json").write_text(json.dumps(side))
    return path


def test_iron_maps_fits_the_post_series_and_writes_the_pipeline_files(tmp_path: Path) -> None:
    pre = np.full(SHAPE, 30.0)
    post = pre + 55.7 * 0.4  # 0.4 mM Fe at 3 T (plasma r2* 55.7 /(mM s))
    series = read_series(
        _post_series(tmp_path, post, ContrastBolusIngredient="ferumoxytol"),
        "MEGRE",
        role="t2star_ferumoxytol",
    )
    pre_path = _nifti(tmp_path / "pre_R2star.nii.gz", pre)
    pre_st = np.zeros(SHAPE, np.uint8)
    pre_st[1, 1, 0] = 3  # a pre-contrast voxel that did not converge
    st_path = _nifti(tmp_path / "pre_status.nii.gz", pre_st, np.uint8)
    out = tmp_path / "out"
    res = iron_maps(series, pre_path, st_path, out_dir=out, prefix="s_", pre_label="pre.nii.gz")

    assert [m.name for m in res.maps] == [
        "t2star_post.R2star",
        "t2star_post.T2star",
        "t2star_post.S0",
        "iron.dR2star",
        "iron.Fe",
    ]
    assert {m.series for m in res.maps} == {"t2star_ferumoxytol"}
    assert res.maps[0].fit is not None and res.maps[3].fit is None
    assert res.maps[3].status == res.maps[4].status == out / "s_iron_status.nii.gz"
    names = [p.name for p in res.files]
    assert names[-5:] == [
        "s_iron_dR2star.nii.gz",
        "s_iron_dR2star.json",
        "s_iron_Fe.nii.gz",
        "s_iron_Fe.json",
        "s_iron_status.nii.gz",
    ]
    assert "s_t2star_post_R2star.nii.gz" in names and "s_t2star_post_R2star.json" in names
    assert all(p.is_file() for p in res.files) and res.rows == {}

    tissue = np.zeros(SHAPE, bool)
    tissue[1:] = True
    dr = Volume.from_nifti(out / "s_iron_dR2star.nii.gz").data
    fe = Volume.from_nifti(out / "s_iron_Fe.nii.gz").data
    # the post-contrast fit skips the voxel whose pre-contrast fit did not converge
    tissue &= pre_st == 0
    assert np.isnan(dr[1, 1, 0]) and np.isnan(fe[1, 1, 0])
    assert abs(np.median(dr[tissue]) - 55.7 * 0.4) < 1.0
    np.testing.assert_allclose(fe[tissue], dr[tissue] / 55.7, rtol=1e-5)
    # the status of ΔR2* is the pre-contrast one where that did not converge, else the post one
    st = Volume.from_nifti(out / "s_iron_status.nii.gz", dtype=np.uint8).data
    post_st = Volume.from_nifti(out / "s_t2star_post_status.nii.gz", dtype=np.uint8).data
    assert st[1, 1, 0] == 3
    keep = pre_st == 0
    np.testing.assert_array_equal(st[keep], post_st[keep])

    text = (out / "s_iron_Fe.json").read_text()
    assert text.startswith('{\n "Units": "mM",\n "Description":')  # indent 1, as always
    side = json.loads(text)
    assert side["Description"] == "apparent iron concentration, dR2*/r2* with r2* = 55.7 /(mM s)"
    prov = side["Provenance"]
    assert prov["inputs"] == {"pre": "pre.nii.gz", "post": str(series.path)}
    assert prov["options"]["field_strength_T"] == 3.0
    assert prov["options"]["relaxivity_per_mM_s"] == 55.7
    assert prov["options"]["contrast"] == "ferumoxytol"
    assert json.loads((out / "s_iron_dR2star.json").read_text())["Units"] == "1/s"


def test_iron_maps_checks_the_field_strength_before_writing(tmp_path: Path) -> None:
    pre = np.full(SHAPE, 30.0)
    path = _post_series(tmp_path, pre + 10)
    side = json.loads((tmp_path / "post_MEGRE.json").read_text())
    del side["MagneticFieldStrength"]
    (tmp_path / "post_MEGRE.json").write_text(json.dumps(side))
    series = read_series(path, "MEGRE", role="t2star_ferumoxytol")
    pre_path = _nifti(tmp_path / "pre_R2star.nii.gz", pre)
    with pytest.raises(DataError, match="MagneticFieldStrength"):
        iron_maps(series, pre_path, out_dir=tmp_path / "out", prefix="")
    assert not (tmp_path / "out").exists()
    # a relaxivity of one's own needs no field strength
    res = iron_maps(
        series, pre_path, out_dir=tmp_path / "out", prefix="", options=IronOptions(relaxivity=100)
    )
    side = json.loads((tmp_path / "out" / "iron_Fe.json").read_text())
    assert side["Provenance"]["options"]["relaxivity_source"] == "given"
    assert side["Provenance"]["options"]["field_strength_T"] is None
    assert res.maps[-1].name == "iron.Fe"


def test_iron_from_rates_other_rates_and_grids(tmp_path: Path) -> None:
    pre = _nifti(tmp_path / "pre.nii.gz", np.full(SHAPE, 10.0))
    post = _nifti(tmp_path / "post.nii.gz", np.full(SHAPE, 10.0 + 65.2 * 0.1))
    series = read_series(post, "R2", role="post")
    opts = IronOptions(field_strength_t=3.0, rate="r2")
    res = iron_from_rates(pre, post, post=series, out_dir=tmp_path / "o", prefix="", options=opts)
    assert [m.name for m in res.maps] == ["iron.dR2", "iron.Fe"]
    assert all(m.status is None for m in res.maps)  # no fit status known: no status map
    assert not (tmp_path / "o" / "iron_status.nii.gz").exists()
    fe = Volume.from_nifti(tmp_path / "o" / "iron_Fe.nii.gz").data
    np.testing.assert_allclose(fe, 0.1, rtol=1e-5)
    side = json.loads((tmp_path / "o" / "iron_dR2.json").read_text())
    assert side["Description"] == "dR2 = R2(post) - R2(pre)"
    assert side["Provenance"]["inputs"]["pre"] == str(pre)

    other = tmp_path / "other.nii.gz"
    Volume(np.full(SHAPE, 20.0, np.float32), np.diag([3.0, 3.0, 3.0, 1.0])).to_nifti(other)
    with pytest.raises(DataError, match="not on one grid"):
        iron_from_rates(pre, other, post=series, out_dir=tmp_path / "o2", prefix="", options=opts)
    assert not (tmp_path / "o2").exists()


def test_post_fit_restricted_to_pre_converged_signal_voxels_changes_no_valid_value(
    tmp_path: Path,
) -> None:
    # the post-contrast fit runs only where the pre-contrast fit converged and the first echo
    # is above 3σ; against the fit of the whole series (no pre status): the same ΔR2*, iron and
    # post T2* values there, the same iron status elsewhere but in the one noise-only voxel
    # the pre-contrast fit called converged, the same noise level (from the whole series)
    rng = np.random.default_rng(2)
    shape = (12, 12, 2)
    pre = rng.uniform(20.0, 40.0, shape)
    series = read_series(
        _post_series(tmp_path, pre + 20.0, air_rows=4), "MEGRE", role="t2star_ferumoxytol"
    )
    pre_path = _nifti(tmp_path / "pre_R2star.nii.gz", pre)
    pre_st = np.zeros(shape, np.uint8)
    pre_st[:4] = 2  # the air (the noise level's background): at a bound before contrast
    pre_st[6, 4, 1] = 1
    pre_st[0, 5, 0] = 0  # an air voxel whose pre-contrast fit "converged" on noise
    st_path = _nifti(tmp_path / "pre_status.nii.gz", pre_st, np.uint8)
    iron_maps(series, pre_path, st_path, out_dir=tmp_path / "fast", prefix="s_")
    iron_maps(series, pre_path, None, out_dir=tmp_path / "all", prefix="s_")

    def load(which: str, name: str) -> np.ndarray:
        return Volume.from_nifti(tmp_path / which / f"s_{name}.nii.gz").data

    air = np.zeros(shape, bool)
    air[:4] = True
    ok = (pre_st == 0) & ~air
    assert ok.sum() == 12 * 12 * 2 - 4 * 12 * 2 - 1
    for name in ("iron_dR2star", "iron_Fe", "t2star_post_R2star", "t2star_post_S0"):
        fast, full = load("fast", name), load("all", name)
        np.testing.assert_array_equal(fast[ok], full[ok])
        assert np.isnan(fast[~ok]).all() and np.isfinite(full[~ok]).all()
    post_st = load("fast", "t2star_post_status")
    assert (post_st[~ok] == 255).all()
    full_st = np.where(pre_st == 0, load("all", "t2star_post_status"), pre_st)
    full_st[0, 5, 0] = 255  # noise only after contrast: not fitted
    np.testing.assert_array_equal(load("fast", "iron_status"), full_st)
    prov = [
        json.loads((tmp_path / w / "s_t2star_post_R2star.json").read_text())["Provenance"]
        for w in ("fast", "all")
    ]
    assert prov[0]["options"] == prov[1]["options"]
    assert prov[0]["options"]["noise_sigma_estimated"] == "background"
