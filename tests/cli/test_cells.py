"""``tumorscope iron`` and ``tumorscope cells19f``: end to end on small synthetic NIfTI files, and
byte for byte the files of the pipeline's ``iron`` and ``fluorine`` steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tumorscope.cli import app
from tumorscope.models.cells.fluorine import spins_per_voxel

from ._nifti import read_map as _map
from ._nifti import write_nifti as _write

runner = CliRunner()


def test_iron_command(tmp_path: Path) -> None:
    pre = np.full((4, 4, 2), 25.0)
    post = pre.copy()
    post[:2] += 55.7 * 0.3  # 0.3 mM Fe at 3 T
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
    fe = _map(tmp_path / "o" / "iron_Fe.nii.gz")
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
    assert not (tmp_path / "o5").exists()


def test_iron_and_cells19f_keep_the_user_files(tmp_path: Path) -> None:
    """``--prefix`` stays in ``-o``; a file of the same name is replaced only with --overwrite."""
    pre = np.full((4, 4, 2), 25.0)
    a = _write(tmp_path / "pre.nii.gz", pre)
    b = _write(tmp_path / "post.nii.gz", pre + 10)
    lp = _write(tmp_path / "lab.nii.gz", np.ones((4, 4, 2)))
    out = tmp_path / "o"
    iron = ["iron", str(a), str(b), "-o", str(out), "--labels", str(lp), "--field-strength", "3"]
    mine = tmp_path / "my_iron_Fe.nii.gz"
    mine.write_text("user data")
    res = runner.invoke(app, [*iron, "--prefix", "../my_"])
    assert res.exit_code == 2 and "--prefix" in res.output
    assert mine.read_text() == "user data" and not out.exists()
    out.mkdir()
    (out / "iron_uptake.tsv").write_text("user data")
    res = runner.invoke(app, iron)
    assert res.exit_code == 2 and "iron_uptake.tsv" in res.output and "--overwrite" in res.output
    assert [p.name for p in out.iterdir()] == ["iron_uptake.tsv"]
    assert (out / "iron_uptake.tsv").read_text() == "user data"
    res = runner.invoke(app, [*iron, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert (out / "iron_uptake.tsv").read_text().startswith("label")
    assert f"{out / 'iron_Fe.nii.gz'}" in " ".join(res.output.split())
    # cells19f: -o is the table itself
    tubes = np.zeros((6, 6, 4))
    tubes[:2, :2] = 1
    ip = _write(tmp_path / "f19.nii.gz", np.random.default_rng(0).random((6, 6, 4)) + 50 * tubes)
    tp = _write(tmp_path / "tubes.nii.gz", tubes)
    regions = np.zeros((6, 6, 4))
    regions[3:, 3:] = 1
    rp = _write(tmp_path / "regions.nii.gz", regions)
    table = tmp_path / "cells.tsv"
    table.write_text("user data")
    cells = ["cells19f", str(ip), "--tubes", str(tp), "--tube-mM", "20", "--regions", str(rp)]
    cells += ["--fluorine-per-cell", "1e12", "--noise-sigma", "1", "-o", str(table)]
    res = runner.invoke(app, cells)
    assert res.exit_code == 2 and "cells.tsv" in res.output and "--overwrite" in res.output
    assert table.read_text() == "user data"
    res = runner.invoke(app, [*cells, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert table.read_text().startswith("label")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


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


# ---------------------------------------------------------------- the same files as the pipeline


@pytest.fixture(scope="module")
def piped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The two-subject tiny phantom and a run of the iron and fluorine steps on it."""
    from tumorscope.phantom import make_study
    from tumorscope.pipeline import run_study

    root = tmp_path_factory.mktemp("cells").resolve()
    study = make_study(root / "study", size="tiny", seed=0, n_subjects=2)
    steps = ("register", "fit_relax", "iron", "fluorine")
    run_study(study, root / "out", steps=steps, report=False)
    return Path(study), root / "out"


def _link(root: Path, rel: str, target: Path) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).symlink_to(target)


def test_iron_command_writes_the_files_of_the_iron_step(
    piped: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the post-contrast MEGRE and the step's pre-contrast R2* map under the names the
    step's provenance uses (paths relative to the study and to the output folder), the
    command writes every file of the step, byte for byte and under the same names."""
    from tumorscope.io import open_study

    study, out = piped
    post = open_study(study).subjects["001"].visits["01"].series["t2star_ferumoxytol"]
    maps = out / "sub-001" / "ses-01" / "maps"
    prefix = "sub-001_ses-01_"
    pre = maps / f"{prefix}t2star_R2star.nii.gz"
    work = tmp_path / "work"
    _link(work, post.relpath, post.path)
    _link(work, pre.relative_to(out).as_posix(), pre)
    monkeypatch.chdir(work)
    args = ["iron", pre.relative_to(out).as_posix(), post.relpath, "-o", str(tmp_path / "cli")]
    args += ["--pre-status", str(maps / f"{prefix}t2star_status.nii.gz"), "--prefix", prefix]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    written = sorted(p.name for p in (tmp_path / "cli").iterdir())
    step = sorted(
        p.name
        for p in maps.iterdir()
        if p.name.startswith((f"{prefix}t2star_post_", f"{prefix}iron_"))
        and not p.name.endswith("_index.json")
    )
    assert written == step
    assert f"{prefix}iron_dR2star.nii.gz" in written and f"{prefix}iron_Fe.json" in written
    assert f"{prefix}iron_status.nii.gz" in written and len(written) == 19
    for name in written:
        assert (tmp_path / "cli" / name).read_bytes() == (maps / name).read_bytes(), name


def test_cells19f_command_writes_the_table_of_the_fluorine_step(
    piped: tuple[Path, Path], tmp_path: Path
) -> None:
    from tumorscope.io import open_study

    study, out = piped
    visit = open_study(study).subjects["002"].visits["02"]
    assert visit.lesions is not None
    s = visit.series
    name = "sub-002_ses-02_cells19F.parquet"
    args = ["cells19f", str(s["fluorine"].path), "--tubes", str(s["fluorine_tubes"].path)]
    args += ["--regions", str(visit.lesions.map_path), "--lesion-table"]
    args += [str(visit.lesions.table_path), "--anatomical", str(s["anatomical"].path)]
    args += ["--subject", "002", "--visit", "02", "-o", str(tmp_path / name)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "region L2: below detection" in res.output
    step = out / "sub-002" / "ses-02" / name
    assert (tmp_path / name).read_bytes() == step.read_bytes()
    # without a noise source the command says what is missing, and writes nothing
    res = runner.invoke(app, [*args[: args.index("--anatomical")], "-o", str(tmp_path / "x.tsv")])
    assert res.exit_code == 2 and "anatomical" in res.output
    assert not (tmp_path / "x.tsv").exists()
