"""The fit stage (``stages.fit``, ``stages.diffusion``) and ``tumorscope fit dwi``."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from tumorscope.cli import app
from tumorscope.errors import DataError, FitError, TumorscopeWarning
from tumorscope.models import ADC, IVIM
from tumorscope.stages.diffusion import fit_dwi
from tumorscope.stages.fit import fit_volume
from tumorscope.volume import Volume

B = np.array([0, 10, 20, 40, 80, 150, 300, 500, 800, 1000.0])
AFFINE = np.diag([2.0, 2.0, 4.0, 1.0])


def _truth(shape: tuple[int, int, int]) -> np.ndarray:
    rng = np.random.default_rng(11)
    n = int(np.prod(shape))
    p = np.c_[
        rng.uniform(500, 1000, n),
        rng.uniform(6e-4, 2e-3, n),
        rng.uniform(0.05, 0.3, n),
        rng.uniform(0.02, 0.08, n),
    ]
    return p.reshape(*shape, 4)


def _write_series(tmp: Path, shape: tuple[int, int, int] = (4, 3, 2)) -> tuple[Path, np.ndarray]:
    truth = _truth(shape)
    data = IVIM(B).signal(truth.reshape(-1, 4)).reshape(*shape, B.size).astype(np.float32)
    path = tmp / "sub-001_ses-01_dwi.nii.gz"
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))
    (tmp / "sub-001_ses-01_dwi.bval").write_text(" ".join(f"{b:g}" for b in B) + "\n")
    return path, truth


def _mask(tmp: Path, shape: tuple[int, ...], affine: np.ndarray = AFFINE) -> Path:
    m = np.zeros(shape, np.uint8)
    m[1:, :, 0] = 1
    p = tmp / "mask.nii.gz"
    nib.save(nib.Nifti1Image(m, affine), str(p))
    return p


def test_cli_fit_dwi_ivim_writes_maps(tmp_path: Path) -> None:
    series, truth = _write_series(tmp_path)
    mask = _mask(tmp_path, truth.shape[:3])
    out = tmp_path / "maps"
    res = CliRunner().invoke(
        app,
        [
            "fit",
            "dwi",
            str(series),
            "--model",
            "ivim",
            "--method",
            "full",
            "--mask",
            str(mask),
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    m = np.asarray(nib.load(str(mask)).dataobj) != 0
    for j, name in enumerate(["S0", "D", "f", "D_star"]):
        img = nib.load(str(out / f"sub-001_ses-01_dwi_ivim_{name}.nii.gz"))
        arr = np.asarray(img.dataobj)
        assert arr.dtype == np.float32
        np.testing.assert_allclose(img.affine, AFFINE)
        np.testing.assert_allclose(arr[m], truth[..., j][m], rtol=1e-4)
        assert np.all(np.isnan(arr[~m]))
    side = json.loads((out / "sub-001_ses-01_dwi_ivim_D.json").read_text())
    assert side["Units"] == "mm2/s"
    prov = side["Provenance"]
    assert prov["model"] == "ivim" and prov["options"]["method"] == "full"
    sha = hashlib.sha256(series.read_bytes()).hexdigest()
    assert prov["inputs"]["series"]["sha256"] == sha
    assert "bval" in prov["inputs"] and "mask" in prov["inputs"]
    status = np.asarray(nib.load(str(out / "sub-001_ses-01_dwi_ivim_status.nii.gz")).dataobj)
    assert np.all(status[~m] == 255) and np.all(status[m] == 0)
    # a re-run replaces the outputs (no duplicates, no temporary files left)
    before = sorted(p.name for p in out.iterdir())
    res = CliRunner().invoke(
        app,
        [
            "fit",
            "dwi",
            str(series),
            "--model",
            "ivim",
            "--method",
            "full",
            "--mask",
            str(mask),
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_cli_adc_with_explicit_bval_and_b_min(tmp_path: Path) -> None:
    series, _ = _write_series(tmp_path)
    bval = tmp_path / "other.bval"
    bval.write_text(" ".join(f"{b:g}" for b in B))
    out = tmp_path / "adc"
    res = CliRunner().invoke(
        app,
        [
            "fit",
            "dwi",
            str(series),
            "-m",
            "adc",
            "--bval",
            str(bval),
            "--b-min",
            "200",
            "--out",
            str(out),
            "--prefix",
            "x_",
        ],
    )
    assert res.exit_code == 0, res.output
    side = json.loads((out / "x_ADC.json").read_text())
    assert side["Provenance"]["options"]["b_min"] == 200


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        ("bval_length", "lists 9 b-values"),
        ("mask_shape", "mask shape"),
        ("mask_affine", "affine"),
        ("no_bval", "b-value file is missing"),
        ("bad_method", "unknown method"),
        ("bad_model", "unknown diffusion model"),
        ("wrong_flag", "--b-min does not apply"),
    ],
)
def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path: Path, change: str, expect: str) -> None:
    series, truth = _write_series(tmp_path)
    args = ["fit", "dwi", str(series), "--out", str(tmp_path / "out")]
    if change == "bval_length":
        (tmp_path / "sub-001_ses-01_dwi.bval").write_text(" ".join(f"{b:g}" for b in B[:-1]))
    elif change == "mask_shape":
        args += ["--mask", str(_mask(tmp_path, (3, 3, 2)))]
    elif change == "mask_affine":
        args += ["--mask", str(_mask(tmp_path, truth.shape[:3], np.diag([1.0, 2, 4, 1])))]
    elif change == "no_bval":
        (tmp_path / "sub-001_ses-01_dwi.bval").unlink()
    elif change == "bad_method":
        args += ["--method", "trr"]
    elif change == "bad_model":
        args += ["--model", "tensor"]
    elif change == "wrong_flag":
        args += ["--b-min", "100"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert expect in res.output
    assert not (tmp_path / "out").exists()


def test_fit_volume_generic_and_errors(tmp_path: Path) -> None:
    truth = _truth((3, 2, 2))
    model = ADC(B, b_min=300)
    data = model.signal(truth[..., :2].reshape(-1, 2)).reshape(3, 2, 2, B.size)
    vol = Volume(data.astype(np.float32), AFFINE)
    res = fit_volume(model, vol, out_dir=tmp_path / "o", prefix="p_")
    np.testing.assert_allclose(res.fit["ADC"], truth[..., 1], rtol=1e-5)
    assert (tmp_path / "o" / "p_ADC_stderr.nii.gz").is_file()
    assert res.fit.provenance["inputs"] == {}
    with pytest.raises(FitError, match="dim\\[4\\]"):
        fit_volume(ADC(B[:-1]), vol, out_dir=tmp_path / "x")
    with pytest.raises(DataError, match="4-D"):
        fit_volume(model, Volume(data[..., 0], AFFINE), out_dir=tmp_path / "x")
    with pytest.raises(DataError, match="mask shape"):
        fit_volume(model, vol, out_dir=tmp_path / "x", mask=np.ones((3, 2, 1)))
    assert not (tmp_path / "x").exists()


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
