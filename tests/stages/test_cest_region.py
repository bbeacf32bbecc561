"""The CEST stage's fit region: the 5-pool Lorentzian inside the (dilated) lesions only, the
whole-volume products (B0, MTRasym) everywhere, and the region recorded in the sidecars."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tumorscope.cli import app
from tumorscope.errors import FitError
from tumorscope.fitting.status import FitStatus
from tumorscope.models.cest import simulate_z
from tumorscope.models.cest.bloch import BMSystem, ExchangePool, MTPool
from tumorscope.stages.base import read_series
from tumorscope.stages.cest import CESTOptions, fit_cest, lesion_region
from tumorscope.volume import Volume

AFF = np.diag([2.0, 2.0, 3.0, 1.0])
OFF = np.r_[-15.0, -10.0, np.arange(-6.0, 6.001, 0.5), 10.0, 15.0]
SHAPE = (5, 4, 2)


def _tissue(f: float) -> BMSystem:
    return BMSystem(
        1.3,
        0.07,
        (
            ExchangePool("amide", f, 1.0, 0.1, 50.0, 3.5),
            ExchangePool("noe", 4.5e-3, 1.3, 0.005, 20.0, -3.5),
        ),
        MTPool(0.1, 1.0, 4e-5, 30.0, -3.0),
    )


@pytest.fixture(scope="module")
def cest_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 x 4 x 2 voxels of BM spectra (two amide fractions, three B0 shifts) with noise and
    one background voxel (M0 of noise only)."""
    tmp = tmp_path_factory.mktemp("cest")
    rng = np.random.default_rng(0)
    base = {
        (f, s): simulate_z(_tissue(f), OFF, field_t=3.0, b1_ut=1.0, tsat_s=2.0, b0_shift_ppm=s)
        for f in (6e-4, 1.5e-3)
        for s in (-0.3, 0.0, 0.2)
    }
    keys = list(base)
    data = np.zeros((*SHAPE, OFF.size + 1))
    for idx in np.ndindex(SHAPE):
        z = base[keys[rng.integers(len(keys))]] + rng.normal(0, 0.01, OFF.size)
        data[idx] = 1000.0 * np.r_[1.0, z]
    data[4, 3, 1] = rng.normal(0, 5.0, OFF.size + 1)  # background
    path = tmp / "sub-01_ses-01_cest.nii.gz"
    Volume(data.astype(np.float32), AFF).to_nifti(path)
    side = {
        "MagneticFieldStrength": 3.0,
        "SaturationOffsets": [-300.0, *OFF.tolist()],
        "SaturationB1": 1.0,
        "SaturationDuration": 2.0,
    }
    path.with_name("sub-01_ses-01_cest.json").write_text(json.dumps(side))
    return path


def _maps(res) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    return {m.name: Volume.from_nifti(m.path).data for m in res.maps}


def _lesions() -> Volume:
    lab = np.zeros(SHAPE, np.int16)
    lab[1:3, 1:3, 0] = 1
    lab[4, 0, 1] = 2
    return Volume(lab, AFF)


def test_lorentzian_only_in_the_lesions_and_equal_to_the_body_fit(
    cest_path: Path, tmp_path: Path
) -> None:
    s = {"cest": read_series(cest_path, "cest", role="cest")}
    body = fit_cest(
        s, out_dir=tmp_path / "body", prefix="b_", options=CESTOptions(fit_region="body")
    )
    les = fit_cest(
        s,
        out_dir=tmp_path / "les",
        prefix="l_",
        options=CESTOptions(region_margin_mm=0.0),
        lesions=_lesions(),
    )
    mb, ml = _maps(body), _maps(les)
    assert any(
        "fitted in 5 of 39 body voxels (the lesions dilated by 0 mm)" in w for w in les.warnings
    )
    assert any("(the whole body)" in w for w in body.warnings)
    inside = _lesions().data != 0
    background = np.zeros(SHAPE, bool)
    background[4, 3, 1] = True
    status = Volume.from_nifti(tmp_path / "les" / "l_cest_lorentzian_status.nii.gz").data
    assert np.all(status[~inside] == FitStatus.NOT_FITTED)
    assert np.all(status[inside] <= FitStatus.AT_BOUND)
    for name in ("amide_amp", "B0", "Z0", "mt_width", "noe_offset"):
        a, b = ml[f"cest_lorentzian.{name}"], mb[f"cest_lorentzian.{name}"]
        assert np.all(np.isnan(a[~inside]))
        # each voxel's fit is independent of the others: the same numbers inside (to the
        # last bits but for the rounding of a vectorised sum: 1e-6 is the solver's ftol)
        np.testing.assert_allclose(a[inside], b[inside], rtol=1e-6, atol=1e-9)
    assert np.all(np.isfinite(mb["cest_lorentzian.amide_amp"][~background]))
    # B0 and MTRasym stay whole-volume products (background excepted), identical in both
    for name in ("cest.B0", "cest.MTRasym_3p5ppm", "cest.MTRasym_2ppm"):
        np.testing.assert_allclose(ml[name], mb[name], rtol=0, atol=1e-7)
        assert np.all(np.isfinite(ml[name][~background])) and np.isnan(ml[name][background])
    prov = json.loads((tmp_path / "les" / "l_cest_lorentzian_amide_amp.json").read_text())
    region = prov["Provenance"]["fit_region"]
    assert region["region"] == "lesions" and region["n_voxels"] == int(inside.sum())
    assert region["margin_mm"] == 0.0 and "255" in region["outside"]
    prov = json.loads((tmp_path / "body" / "b_cest_lorentzian_Z0.json").read_text())
    assert prov["Provenance"]["fit_region"]["region"] == "body"
    assert prov["Provenance"]["fit_region"]["n_voxels"] == int((~background).sum())


def test_no_lesion_map_fits_the_body_with_a_note_and_empty_map_fits_nothing(
    cest_path: Path, tmp_path: Path
) -> None:
    s = {"cest": read_series(cest_path, "cest", role="cest")}
    opts = CESTOptions(mtr_asym_ppm=(3.5,))
    res = fit_cest(s, out_dir=tmp_path / "a", prefix="a_", options=opts)
    assert any("no lesion map" in w for w in res.warnings)
    assert np.sum(np.isfinite(_maps(res)["cest_lorentzian.amide_amp"])) == np.prod(SHAPE) - 1
    empty = Volume(np.zeros(SHAPE, np.int16), AFF)
    res = fit_cest(s, out_dir=tmp_path / "b", prefix="b_", options=opts, lesions=empty)
    assert any("no lesion voxel" in w for w in res.warnings)
    maps = _maps(res)
    assert np.all(np.isnan(maps["cest_lorentzian.amide_amp"]))
    assert np.sum(np.isfinite(maps["cest.MTRasym_3p5ppm"])) == np.prod(SHAPE) - 1


def test_lesion_region_dilates_in_mm_and_resamples_other_grids() -> None:
    like = Volume(np.zeros((9, 9, 5), np.float32), np.diag([1.0, 1.0, 2.5, 1.0]))
    lab = np.zeros((9, 9, 5), np.int16)
    lab[4, 4, 2] = 3
    les = Volume(lab, like.affine)
    r = lesion_region(les, like, margin_mm=2.0)
    assert r is not None
    # 2 mm: two voxels in-plane (1 mm), none through-plane (2.5 mm); the diagonal (1, 1) is
    # at 1.41 mm, (2, 1) at 2.24 mm
    assert r[2, 4, 2] and r[6, 4, 2] and r[5, 5, 2] and not r[6, 5, 2]
    assert not r[4, 4, 1] and not r[4, 4, 3] and r.sum() == 13
    assert lesion_region(les, like, margin_mm=2.5)[4, 4, 3]
    assert lesion_region(None, like, margin_mm=2.0) is None
    # on a grid twice as fine in-plane: the same lesion centre after nearest-label resampling
    fine = np.zeros((18, 18, 5), np.int16)
    fine[8:10, 8:10, 2] = 1
    aff = np.diag([0.5, 0.5, 2.5, 1.0])
    aff[:3, 3] = [-0.25, -0.25, 0.0]
    r0 = lesion_region(Volume(fine, aff), like, margin_mm=0.0)
    assert r0 is not None and r0.sum() == 1 and r0[4, 4, 2]
    # an alignment (reference -> series world) of +1 mm in x moves the region by one voxel
    move = np.eye(4)
    move[0, 3] = 1.0
    r1 = lesion_region(les, like, margin_mm=0.0, alignment=move)
    assert r1 is not None and r1.sum() == 1 and r1[5, 4, 2]


def test_options_are_checked() -> None:
    with pytest.raises(FitError, match="fit_region"):
        CESTOptions(fit_region="everywhere")
    with pytest.raises(FitError, match="region_margin_mm"):
        CESTOptions(region_margin_mm=-1.0)


def test_cli_lesions_option(cest_path: Path, tmp_path: Path) -> None:
    lp = tmp_path / "lesions.nii.gz"
    _lesions().to_nifti(lp)
    res = CliRunner().invoke(
        app,
        [
            *("fit", "cest", str(cest_path), "-o", str(tmp_path / "o")),
            *("--lesions", str(lp), "--region-margin", "0", "--mtr-asym", "3.5"),
        ],
    )
    assert res.exit_code == 0, res.output
    amp = Volume.from_nifti(tmp_path / "o" / "sub-01_ses-01_cest_cest_lorentzian_amide_amp.nii.gz")
    assert np.sum(np.isfinite(amp.data)) == int((_lesions().data != 0).sum())
    bad = CliRunner().invoke(
        app, ["fit", "cest", str(cest_path), "-o", str(tmp_path / "x"), "--fit-region", "all"]
    )
    assert bad.exit_code == 2 and "fit_region" in bad.output


def test_voxel_rows_of_c_and_f_ordered_series_and_back() -> None:
    from tumorscope.stages.cest import _Voxels

    rng = np.random.default_rng(5)
    data = rng.normal(size=(4, 3, 2, 5)).astype(np.float32)
    mask = rng.random((4, 3, 2)) > 0.4
    vox = _Voxels.of(mask)
    for arr in (np.ascontiguousarray(data), np.asfortranarray(data)):
        rows = vox.rows(arr)
        assert rows.shape == (int(mask.sum()), 5)
        # the rows are the masked spectra (in the grid's Fortran order), and put() inverts it
        for k in range(5):
            img = vox.put(rows[:, k])
            np.testing.assert_array_equal(img[mask], data[..., k][mask])
            assert np.all(np.isnan(img[~mask]))
    np.testing.assert_array_equal(vox.mask(), mask)
    np.testing.assert_array_equal(vox.take(data[..., 0]), vox.rows(data)[:, 0])
    sub = vox.subset(vox.within(mask & (np.arange(4)[:, None, None] < 2)))
    assert sub.n == int((mask[:2]).sum())
