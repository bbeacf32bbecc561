"""``tumorscope fit dwi``: maps, provenance, bad input, and the same files as the pipeline's step."""

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
from tumorscope.errors import TumorscopeWarning
from tumorscope.io.study import open_study
from tumorscope.models import IVIM
from tumorscope.stages.base import SeriesInput
from tumorscope.stages.diffusion import fit_dwi_series

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
    args = ["fit", "dwi", str(series), "--model", "ivim", "--method", "full"]
    args += ["--mask", str(mask), "--out", str(out)]
    res = CliRunner().invoke(app, args)
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
    # a re-run replaces the outputs only with --overwrite (no duplicates, no temporary files)
    before = sorted(p.name for p in out.iterdir())
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "--overwrite" in res.output
    assert sorted(p.name for p in out.iterdir()) == before
    res = CliRunner().invoke(app, [*args, "--overwrite"])
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
        ("bad_region", "unknown region"),
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
    elif change == "bad_region":
        args += ["--region", "lesions"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert expect in res.output
    assert not (tmp_path / "out").exists()


def test_cli_and_pipeline_stage_write_the_same_files(tiny_study: Path, tmp_path: Path) -> None:
    """``tumorscope fit dwi --prefix sub-S_ses-V_<model>_`` and the stage called as the
    pipeline's ``fit_dwi`` step calls it write the same file names with the same bytes."""
    visit = next(v for v in open_study(tiny_study).visits() if "dwi" in v.series)
    series = visit.series["dwi"]
    prefix = f"sub-{visit.subject_id}_ses-{visit.id}_"
    models = ("adc", "ivim", "dki")
    cli_out, stage_out = tmp_path / "cli", tmp_path / "stage"
    for model in models:
        args = ["fit", "dwi", str(series.path), "-m", model, "--out", str(cli_out)]
        res = CliRunner().invoke(app, [*args, "--prefix", f"{prefix}{model}_"])
        assert res.exit_code == 0, res.output
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TumorscopeWarning)
        stage = fit_dwi_series(
            SeriesInput.of(series), out_dir=stage_out, models=models, prefix=prefix
        )
    names = sorted(p.name for p in cli_out.iterdir())
    assert names == sorted(p.name for p in stage_out.iterdir())
    assert sorted(p.name for p in stage.files) == names
    assert f"{prefix}ivim_D_star.nii.gz" in names and f"{prefix}adc_ADC.json" in names
    for name in names:
        assert (cli_out / name).read_bytes() == (stage_out / name).read_bytes(), name


def test_cli_region_body_fits_the_voxels_with_signal(tmp_path: Path) -> None:
    """``--region body`` (the pipeline's ``dwi_region`` default): background voxels are not
    fitted, the rest as with ``--region all``; the region is in provenance."""
    series, _ = _write_series(tmp_path, (5, 3, 2))
    img = nib.load(str(series))
    data = np.asarray(img.dataobj).copy()
    data[0] = np.abs(np.random.default_rng(2).normal(0, 10, data[0].shape))  # background
    nib.save(nib.Nifti1Image(data, AFFINE), str(series))
    maps = {}
    for region in ("all", "body"):
        out = tmp_path / region
        args = ["fit", "dwi", str(series), "--model", "adc", "--region", region, "--out", str(out)]
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
        stem = "sub-001_ses-01_dwi_adc_"
        maps[region] = np.asarray(nib.load(str(out / f"{stem}ADC.nii.gz")).dataobj)
        side = json.loads((out / f"{stem}ADC.json").read_text())
        assert ("region" in side["Provenance"]) == (region == "body")
    assert np.all(np.isnan(maps["body"][0])) and np.all(np.isfinite(maps["all"][0]))
    np.testing.assert_array_equal(maps["body"][1:], maps["all"][1:])


@pytest.mark.parametrize("prefix", ["../my_", "/tmp/abs_", "sub/x_", "..", ".tumorscope-tmp-x"])
def test_cli_prefix_is_a_file_name_prefix(tmp_path: Path, prefix: str) -> None:
    series, _ = _write_series(tmp_path)
    victim = tmp_path / "my_ADC.nii.gz"
    victim.write_text("user data")
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "out"
    args = ["fit", "dwi", str(series), "-m", "adc", "-o", str(out), "--prefix", prefix]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "--prefix" in res.output
    assert victim.read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # not even the folder


def test_cli_existing_file_is_replaced_only_with_overwrite(tmp_path: Path) -> None:
    series, _ = _write_series(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "sub-001_ses-01_dwi_adc_ADC.nii.gz"
    mine.write_text("user data")
    args = ["fit", "dwi", str(series), "-m", "adc", "-o", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "sub-001_ses-01_dwi_adc_ADC.nii.gz" in res.output and "--overwrite" in res.output
    assert mine.read_text() == "user data"
    assert [p.name for p in out.iterdir()] == [mine.name]  # nothing else written, no temp left
    res = CliRunner().invoke(app, [*args, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert nib.load(str(mine)).shape == (4, 3, 2)
    assert str(mine) in res.output  # the printed paths are the final ones
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_cli_fit_failing_half_way_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    import errno

    import tumorscope.volume as volume

    series, _ = _write_series(tmp_path)
    out = tmp_path / "out"
    calls = []
    real = volume.atomic_write

    def full_disk(path, writer):  # the third map hits a full disk, half written
        calls.append(path)
        if len(calls) != 3:
            return real(path, writer)

        def half(tmp):
            tmp.write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

        return real(path, half)

    monkeypatch.setattr(volume, "atomic_write", full_disk)
    before = sorted(p.name for p in tmp_path.iterdir())
    res = CliRunner().invoke(app, ["fit", "dwi", str(series), "-m", "adc", "-o", str(out)])
    assert len(calls) == 3
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "No space left on device" in text and ".tumorscope-tmp" not in text
    assert str(out / calls[2].name) in text  # the output's name, not a temporary one
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no folder, no staging left


def test_cli_output_name_too_long_names_the_output(tmp_path: Path) -> None:
    series, _ = _write_series(tmp_path)
    long = tmp_path / ("x" * 200 + series.name)
    series.rename(long)
    (tmp_path / "sub-001_ses-01_dwi.bval").rename(
        tmp_path / ("x" * 200 + "sub-001_ses-01_dwi.bval")
    )
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["fit", "dwi", str(long), "-m", "adc", "-o", str(out)])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "too long" in text and ".tumorscope-tmp" not in text
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_swallowed_ctrl_c_stops_the_command_with_exit_130_and_nothing_delivered(
    tmp_path: Path,
) -> None:
    """A Ctrl-C whose KeyboardInterrupt code below tumorscope swallows (llvmlite's ctypes
    callback during numba's first compilation did: the fit ran on and exited 0 with every map
    written) still stops the command: exit 130, the output folder not created
    (tumorscope._interrupt). The process sends itself SIGINT inside the fit and drops the
    exception, as the callback did."""
    import os
    import subprocess
    import sys
    import textwrap

    series, _ = _write_series(tmp_path)
    out = tmp_path / "out"
    script = textwrap.dedent(
        f"""
        import os, signal, sys, time
        import tumorscope.stages.diffusion as d
        original = d.fit_dwi
        def swallowing(*a, **k):
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1.0)
            except KeyboardInterrupt:
                pass  # dropped, as ctypes drops an exception raised in a callback
            return original(*a, **k)
        d.fit_dwi = swallowing
        sys.argv = ["tumorscope", "fit", "dwi", {str(series)!r}, "-m", "adc", "-o", {str(out)!r}]
        from tumorscope.cli import main
        main()
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert res.returncode == 130, (res.returncode, res.stdout, res.stderr)
    assert not out.exists()
    assert not list(tmp_path.glob(".tumorscope-tmp-*"))
