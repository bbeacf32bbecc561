"""``tumorscope iron`` and ``tumorscope cells19f`` end to end on small synthetic NIfTI files
(the ``fit t1/t2/t2star`` tests are in ``tests/cli/test_fit_relax.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from tumorscope.cli import app
from tumorscope.models.fluorine import spins_per_voxel
from tumorscope.volume import Volume

runner = CliRunner()
AFF = np.diag([2.0, 2.0, 2.0, 1.0])


def _write(path: Path, data: np.ndarray, sidecar: dict | None = None) -> Path:
    Volume(np.asarray(data, dtype=np.float32), AFF).to_nifti(path)
    if sidecar is not None:
        path.with_name(path.name.replace(".nii.gz", ".json")).write_text(json.dumps(sidecar))
    return path


def _map(path: Path) -> np.ndarray:
    return Volume.from_nifti(path).data


def test_iron_command(tmp_path: Path) -> None:
    pre = np.full((4, 4, 2), 25.0)
    post = pre.copy()
    post[:2] += 57.0 * 0.3  # 0.3 mM Fe at 3 T
    lab = np.zeros((4, 4, 2))
    lab[:2] = 1
    lab[2:] = 2
    a = _write(tmp_path / "pre.nii.gz", pre)
    b = _write(tmp_path / "post.nii.gz", post)
    lp = _write(tmp_path / "lab.nii.gz", lab)
    res = runner.invoke(
        app,
        [
            "iron",
            str(a),
            str(b),
            "-o",
            str(tmp_path / "o"),
            "--labels",
            str(lp),
            "--field-strength",
            "3",
        ],
    )
    assert res.exit_code == 0, res.output
    fe = _map(tmp_path / "o" / "iron.nii.gz")
    np.testing.assert_allclose(fe[:2], 0.3, rtol=1e-5)
    rows = (tmp_path / "o" / "iron_uptake.tsv").read_text().splitlines()
    head = rows[0].split("\t")
    first = dict(zip(head, rows[1].split("\t"), strict=True))
    assert (
        float(first["iron_mean_mM"]) == np.float32(0.3).item()
        or abs(float(first["iron_mean_mM"]) - 0.3) < 1e-5
    )
    res = runner.invoke(app, ["iron", str(a), str(b), "-o", str(tmp_path / "o5")])
    assert res.exit_code == 2 and "relaxivity" in res.output


def test_cells19f_command(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    shape = (20, 20, 6)
    vox_ml = 0.008
    kappa = 2e-16
    amp = np.zeros(shape)
    tubes = np.zeros(shape)
    tubes[1:5, 1:5, 1:5] = 1
    amp[tubes == 1] = kappa * spins_per_voxel(20.0, vox_ml)
    regions = np.zeros(shape)
    regions[10:16, 10:16, 1:5] = 1
    regions[10:16, 2:8, 1:5] = 2
    amp[12:14, 12:14, 2:4] = 1e6 * 1e12 * kappa / 8  # 25 sigma per voxel
    img = np.abs(amp + rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
    ip = _write(tmp_path / "f19.nii.gz", img)
    tp = _write(tmp_path / "tubes.nii.gz", tubes)
    rp = _write(tmp_path / "regions.nii.gz", regions)
    out = tmp_path / "cells.tsv"
    res = runner.invoke(
        app,
        [
            "cells19f",
            str(ip),
            "--tubes",
            str(tp),
            "--tube-mM",
            "20",
            "--regions",
            str(rp),
            "--fluorine-per-cell",
            "1e12",
            "--noise-sigma",
            "1",
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "below detection" in res.output
    rows = [r.split("\t") for r in out.read_text().splitlines()]
    table = {h: [r[i] for r in rows[1:]] for i, h in enumerate(rows[0])}
    assert table["status"] == ["quantified", "below detection"]
    assert table["cells"][1] == "n/a"
    assert abs(float(table["cells"][0]) / 1e6 - 1) < 4 * float(table["cells_se"][0]) / 1e6
    res = runner.invoke(
        app,
        [
            "cells19f",
            str(ip),
            "--tubes",
            str(tp),
            "--tube-mM",
            "20,40",
            "--regions",
            str(rp),
            "--fluorine-per-cell",
            "1e12",
            "--noise-sigma",
            "1",
            "-o",
            str(tmp_path / "x.tsv"),
        ],
    )
    assert res.exit_code == 2 and "tube labels" in res.output
    assert not (tmp_path / "x.tsv").exists()
