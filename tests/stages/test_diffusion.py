"""The diffusion stage (``stages.diffusion``): a DWI series with its protocol → maps on disk."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tumorscope.errors import FitError, TumorscopeWarning
from tumorscope.fitting import FitStatus
from tumorscope.io.study import open_study
from tumorscope.models import IVIM
from tumorscope.stages.base import SeriesInput, read_series
from tumorscope.stages.diffusion import DWIOptions, fit_dwi, fit_dwi_series

B = np.array([0, 10, 20, 40, 80, 150, 300, 500, 800, 1000.0])
AFFINE = np.diag([2.0, 2.0, 4.0, 1.0])


def _write_series(tmp: Path, shape: tuple[int, int, int] = (4, 3, 2)) -> tuple[Path, np.ndarray]:
    """A noise-free IVIM series (``sub-001_ses-01_dwi.nii.gz`` + ``.bval``) and its truth."""
    rng = np.random.default_rng(11)
    n = int(np.prod(shape))
    truth = np.c_[
        rng.uniform(500, 1000, n),
        rng.uniform(6e-4, 2e-3, n),
        rng.uniform(0.05, 0.3, n),
        rng.uniform(0.02, 0.08, n),
    ]
    data = IVIM(B).signal(truth).reshape(*shape, B.size).astype(np.float32)
    path = tmp / "sub-001_ses-01_dwi.nii.gz"
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))
    (tmp / "sub-001_ses-01_dwi.bval").write_text(" ".join(f"{b:g}" for b in B) + "\n")
    return path, truth.reshape(*shape, 4)


def _quiet(fn, *args, **kw):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TumorscopeWarning)
        return fn(*args, **kw)


def test_a_study_series_gives_every_map_of_every_model(tiny_study: Path, tmp_path: Path) -> None:
    """As the pipeline calls it: MapFiles, every file written, the fits' warnings."""
    visit = next(v for v in open_study(tiny_study).visits() if "dwi" in v.series)
    series = SeriesInput.of(visit.series["dwi"])
    prefix = f"sub-{visit.subject_id}_ses-{visit.id}_"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = fit_dwi_series(series, out_dir=tmp_path, models=("adc", "ivim"), prefix=prefix)
    expected = [("adc", p) for p in ("S0", "ADC")] + [
        ("ivim", p) for p in ("S0", "D", "f", "D_star", "unidentified")
    ]
    assert [(m.model, m.parameter) for m in res.maps] == expected
    for m in res.maps:
        assert m.path == tmp_path / f"{prefix}{m.model}_{m.parameter}.nii.gz"
        assert m.status == tmp_path / f"{prefix}{m.model}_status.nii.gz"
        assert m.series == "dwi" and m.fit is not None and m.parameter in m.fit
        assert json.loads(m.path.with_name(m.path.name[:-7] + ".json").read_text())["Units"]
    # every image (maps, stderr, status, rss) and its sidecar, and nothing else
    assert sorted(res.files) == sorted(tmp_path.iterdir())
    # maps (IVIM: 4 + the derived 'unidentified'), stderr, status + rss
    assert len(res.files) == 2 * ((2 + 2 + 2) + (5 + 4 + 2))
    assert res.rows == {}
    ours = [str(w.message) for w in caught if issubclass(w.category, TumorscopeWarning)]
    assert res.warnings == ours


def test_options_mask_and_provenance(tmp_path: Path) -> None:
    path, truth = _write_series(tmp_path)
    mask = np.zeros(truth.shape[:3], bool)
    mask[1:, :, 0] = True
    series = read_series(path, "dwi")
    opts = DWIOptions({"ivim": {"method": "full"}, "adc": {"b_min": 200}})
    res = _quiet(
        fit_dwi_series,
        series,
        out_dir=tmp_path / "o",
        models=("ivim", "adc"),
        options=opts,
        mask=mask,
    )
    ivim = {m.parameter: m for m in res.maps if m.model == "ivim"}
    assert ivim["D"].path.name == "sub-001_ses-01_dwi_ivim_D.nii.gz"  # default prefix: the stem
    for j, name in enumerate(["S0", "D", "f", "D_star"]):
        arr = np.asarray(nib.load(ivim[name].path).dataobj)
        np.testing.assert_allclose(arr[mask], truth[..., j][mask], rtol=1e-4)
        assert np.all(np.isnan(arr[~mask]))
    fit = ivim["D"].fit
    assert fit is not None and np.all(fit.status[~mask] == FitStatus.NOT_FITTED)
    prov = json.loads((tmp_path / "o" / "sub-001_ses-01_dwi_adc_ADC.json").read_text())
    assert prov["Provenance"]["options"]["b_min"] == 200
    assert set(prov["Provenance"]["inputs"]) == {"series", "bval"}


def test_every_model_and_option_is_checked_before_writing(tmp_path: Path) -> None:
    path, _ = _write_series(tmp_path)
    series = read_series(path, "dwi")
    out = tmp_path / "o"
    with pytest.raises(FitError, match="unknown method 'trr'"):
        fit_dwi_series(
            series,
            out_dir=out,
            models=("adc", "ivim"),
            options=DWIOptions({"ivim": {"method": "trr"}}),
        )
    with pytest.raises(FitError, match="not fitted"):
        fit_dwi_series(series, out_dir=out, models=("adc",), options=DWIOptions({"dki": {}}))
    with pytest.raises(FitError, match="not a diffusion model"):
        fit_dwi_series(series, out_dir=out, models=("adc", "tofts"))
    with pytest.raises(FitError, match="bad option"):
        fit_dwi_series(series, out_dir=out, options=DWIOptions({"adc": {"b_threshold": 1}}))
    assert not out.exists()


def test_fit_dwi_reports_the_summary_warning(tmp_path: Path) -> None:
    series, _ = _write_series(tmp_path)
    img = nib.load(str(series))
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0, 3] = np.nan
    nib.save(nib.Nifti1Image(data, AFFINE), str(series))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = fit_dwi(series, out_dir=tmp_path / "o", model="adc")
    ours = [w for w in caught if issubclass(w.category, TumorscopeWarning)]
    assert len(ours) == 1
    assert res.warnings == ["adc: 1 of 24 voxels had invalid input (NaN, negative or zero signal)"]


def test_region_body_fits_the_voxels_with_signal_only(tmp_path: Path) -> None:
    """``DWIOptions(region="body")`` (the pipeline's default, run option ``dwi_region``):
    background voxels (lowest-b signal < 10 % of its 99th percentile) are not fitted (NaN,
    status 255), body voxels get exactly the maps of the whole-volume fit, and the rule is in
    provenance. A given mask replaces the region; an unknown region is an error."""
    from tumorscope.stages.diffusion import body_mask

    rng = np.random.default_rng(5)
    shape = (6, 5, 2)
    n = int(np.prod(shape))
    truth = np.c_[
        rng.uniform(500, 1000, n),
        rng.uniform(6e-4, 2e-3, n),
        rng.uniform(0.05, 0.3, n),
        rng.uniform(0.02, 0.08, n),
    ]
    data = IVIM(B).signal(truth).reshape(*shape, B.size)
    data[:2] = np.abs(rng.normal(0, 20, data[:2].shape))  # background: noise around 0
    path = tmp_path / "sub-001_ses-01_dwi.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.float32), AFFINE), str(path))
    (tmp_path / "sub-001_ses-01_dwi.bval").write_text(" ".join(f"{b:g}" for b in B) + "\n")
    series = read_series(path, "dwi")
    body = body_mask(series.load(), B)
    assert not body[:2].any() and body[2:].all()
    whole = _quiet(fit_dwi_series, series, out_dir=tmp_path / "all", models=("adc", "ivim"))
    inner = _quiet(
        fit_dwi_series,
        series,
        out_dir=tmp_path / "body",
        models=("adc", "ivim"),
        options=DWIOptions(region="body"),
    )
    for a, b in zip(whole.maps, inner.maps, strict=True):
        assert (a.model, a.parameter) == (b.model, b.parameter)
        va, vb = np.asarray(a.fit[a.parameter]), np.asarray(b.fit[b.parameter])
        assert np.all(np.isnan(vb[:2]))
        np.testing.assert_array_equal(va[2:], vb[2:])
        assert np.all(np.asarray(b.fit.status)[:2] == FitStatus.NOT_FITTED)
        side = json.loads(b.path.with_name(b.path.name.replace(".nii.gz", ".json")).read_text())
        assert side["Provenance"]["region"]["name"] == "body"
        assert side["Provenance"]["region"]["voxels"] == int(body.sum())
    # a given mask replaces the region
    mask = np.zeros(shape, bool)
    mask[0, 0, 0] = True
    given = _quiet(
        fit_dwi_series,
        series,
        out_dir=tmp_path / "mask",
        models=("adc",),
        options=DWIOptions(region="body"),
        mask=mask,
    )
    assert np.isfinite(np.asarray(given.maps[1].fit["ADC"])).sum() == 1
    with pytest.raises(FitError, match="region"):
        DWIOptions(region="lesions")


def test_run_option_dwi_region() -> None:
    """The pipeline's ``fit_dwi`` step fits the body by default; ``dwi_region: all`` as before;
    the option is part of the step's input hash."""
    from tumorscope.errors import DataError
    from tumorscope.pipeline.options import RunOptions
    from tumorscope.pipeline.steps import STEPS

    assert RunOptions().dwi_region == "body"
    assert RunOptions.from_mapping({"dwi_region": "ALL"}).dwi_region == "all"
    with pytest.raises(DataError, match="dwi_region"):
        RunOptions.from_mapping({"dwi_region": "lesions"})
    step = next(s for s in STEPS if s.name == "fit_dwi")
    assert "dwi_region" in step.option_keys
