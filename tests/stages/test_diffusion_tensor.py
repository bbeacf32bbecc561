"""The diffusion stage with the tensor models: directions from the ``.bvec`` beside the series
(FSL/BIDS, read by :func:`tumorscope.io.bids.read_bvec`), FA/MD/... maps with sidecars, the
``.bvec`` hashed into provenance; a series without ``.bvec`` skips them with a warning."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np

from tumorscope.errors import TumorscopeWarning
from tumorscope.models.diffusion import DTI
from tumorscope.stages.base import read_series
from tumorscope.stages.diffusion import fit_dwi_series

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _write(tmp: Path, *, bvec: bool) -> tuple[Path, np.ndarray]:
    ex = DTI.example()
    b = np.r_[ex.b, 0.0, 200.0, 500.0][[0, *range(1, 31), 31, 32, 33]]
    g = np.r_[ex.g, [[0, 0, 0]], ex.g[1:3]]
    model = DTI(b, bvecs=g)
    truth = model.sample_parameters(24, rng=np.random.default_rng(5))
    data = model.signal(truth).reshape(4, 3, 2, b.size).astype(np.float32)
    path = tmp / "sub-001_ses-01_dwi.nii.gz"
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))
    (tmp / "sub-001_ses-01_dwi.bval").write_text(" ".join(f"{v:g}" for v in b) + "\n")
    if bvec:
        rows = "".join(" ".join(f"{c:.9f}" for c in g[:, i]) + "\n" for i in range(3))
        (tmp / "sub-001_ses-01_dwi.bvec").write_text(rows)
    return path, truth


def test_dti_maps_from_the_bvec(tmp_path: Path) -> None:
    path, truth = _write(tmp_path, bvec=True)
    series = read_series(path, "dwi")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TumorscopeWarning)
        res = fit_dwi_series(series, out_dir=tmp_path / "out", models=("adc", "dti"))
    names = [(m.model, m.parameter) for m in res.maps]
    for p in ("FA", "MD", "AD", "RD", "V1_x", "Dxx"):
        assert ("dti", p) in names
    fa = next(m for m in res.maps if m.parameter == "FA" and m.model == "dti")
    ev, _ = np.linalg.eigh(truth[:, 1:][:, [0, 1, 3, 1, 2, 4, 3, 4, 5]].reshape(-1, 3, 3))
    want = np.sqrt(1.5 * np.sum((ev - ev.mean(1, keepdims=True)) ** 2, 1) / np.sum(ev**2, 1))
    np.testing.assert_allclose(np.asarray(nib.load(fa.path).dataobj).ravel(), want, atol=1e-5)
    side = json.loads(fa.path.with_name(fa.path.name[:-7] + ".json").read_text())
    assert "bvec" in json.dumps(side)
    assert not res.warnings or all("dti" not in w for w in res.warnings)


def test_without_bvec_tensor_models_are_skipped_with_a_warning(tmp_path: Path) -> None:
    path, _ = _write(tmp_path, bvec=False)
    series = read_series(path, "dwi")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TumorscopeWarning)
        res = fit_dwi_series(series, out_dir=tmp_path / "out", models=("adc", "dti"))
    assert {m.model for m in res.maps} == {"adc"}
    assert any(w.startswith("dti: not fitted") and "bvec" in w for w in res.warnings)


def test_cli_fit_dwi_dti(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tumorscope.cli import app

    path, _ = _write(tmp_path, bvec=True)
    res = CliRunner().invoke(
        app, ["fit", "dwi", str(path), "--model", "dti", "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "sub-001_ses-01_dwi_dti_FA.nii.gz").is_file()
    (tmp_path / "sub-001_ses-01_dwi.bvec").unlink()
    res = CliRunner().invoke(
        app, ["fit", "dwi", str(path), "--model", "dti", "--out", str(tmp_path / "p")]
    )
    assert res.exit_code == 2 and "bvec" in res.output


def test_run_options_accept_the_tensor_models() -> None:
    import pytest

    from tumorscope.errors import DataError
    from tumorscope.pipeline.options import RunOptions

    o = RunOptions(dwi_models="adc, DTI, dki_tensor")  # type: ignore[arg-type]
    assert o.dwi_models == ("adc", "dti", "dki_tensor")
    with pytest.raises(DataError, match="unknown diffusion model"):
        RunOptions(dwi_models="adc,tensor")  # type: ignore[arg-type]
