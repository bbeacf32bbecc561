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
