"""The metabolic stage on the phantom's metabolic series: 13C and MRS in, maps and rows out,
recovering the phantom's truths; bad input gives errors naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tumorscope.cli import app
from tumorscope.errors import DataError
from tumorscope.phantom.metabolic import KPL_PER_S, write_metabolic_visit
from tumorscope.stages.metabolic import MRSOptions, fit_hp13c, fit_mrs
from tumorscope.volume import Volume

PREFIX = "sub-001_ses-01"


@pytest.fixture(scope="module")
def visit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Volume]:
    root = tmp_path_factory.mktemp("study")
    shape = (16, 16, 4)
    aff = np.diag([4.0, 4.0, 6.0, 1.0])
    aff[:3, 3] = (-30.0, -30.0, -9.0)
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1)
    world = ijk @ aff[:3, :3].T + aff[:3, 3]
    centre = (0.0, 0.0, 0.0)
    lesion = np.linalg.norm((world - centre) / [14.0, 14.0, 14.0], axis=-1) <= 1
    names = ["", "background", "untreated"]
    tissue = np.where(lesion, 2, 1).astype(np.int16)
    labels = lesion.astype(np.int16)
    write_metabolic_visit(root, PREFIX, "responder", 0, names, tissue, labels, aff, [centre])
    return root, Volume(labels, aff)


def _files(root: Path) -> dict[str, Path]:
    d = root / "sub-001" / "ses-01"
    return {
        "pyr": d / "hp13c" / f"{PREFIX}_acq-pyruvate_hp13c.nii.gz",
        "lac": d / "hp13c" / f"{PREFIX}_acq-lactate_hp13c.nii.gz",
        "svs": d / "mrs" / f"{PREFIX}_svs.nii.gz",
        "ref": d / "mrs" / f"{PREFIX}_mrsref.nii.gz",
    }


def test_hp13c_recovers_the_phantom_kpl(visit, tmp_path) -> None:
    root, labels = visit
    f = _files(root)
    res = fit_hp13c(
        f["pyr"],
        f["lac"],
        out_dir=tmp_path,
        prefix="x_",
        labels=labels,
        keys={"subject": "001", "visit": "01"},
    )
    names = {m.name for m in res.maps}
    assert {"hp13c.kPL", "hp13c.AUC_ratio", "hp13c.SNR_lactate"} <= names
    rows = {(r["map"], r["statistic"]): r["value"] for r in res.rows["measurements"]}
    assert rows[("hp13c.kPL", "roi_fit")] == pytest.approx(KPL_PER_S["untreated"], rel=0.03)
    assert rows[("hp13c.kPL", "median")] == pytest.approx(KPL_PER_S["untreated"], rel=0.1)
    kpl = Volume.from_nifti(tmp_path / "x_hp13c_kPL.nii.gz").data
    assert abs(np.nanmedian(kpl[labels.data == 0]) / KPL_PER_S["background"] - 1) < 0.25
    side = json.loads((tmp_path / "x_hp13c_kPL.json").read_text())
    assert side["Units"] == "1/s" and "pyruvate" in side["Provenance"]["inputs"]


def test_mrs_recovers_concentrations_on_the_tumour_grid(visit, tmp_path) -> None:
    root, labels = visit
    f = _files(root)
    truth = json.loads(
        (
            root / "derivatives" / "truth" / "sub-001" / "ses-01" / f"{PREFIX}_desc-mrs_truth.json"
        ).read_text()
    )["concentrations_mM"]
    res = fit_mrs(
        f["svs"],
        water=f["ref"],
        out_dir=tmp_path,
        onto=labels,
        labels=labels,
        options=MRSOptions(require_water=True),
    )
    rows = {r["map"]: r["value"] for r in res.rows["measurements"]}
    for name in ("Cho", "Cr", "Lac"):
        assert rows[f"mrs.{name}"] == pytest.approx(truth[name], rel=0.15), name
    assert rows["mrs.tCho_over_Cr"] == pytest.approx(truth["Cho"] / truth["Cr"], rel=0.15)
    on = Volume.from_nifti(tmp_path / "mrs_Cho_space-tumour.nii.gz")
    assert on.same_grid(labels) and np.isfinite(on.data[labels.data == 1]).any()


def test_bad_metabolic_input_names_the_file(visit, tmp_path) -> None:
    root, _ = visit
    f = _files(root)
    with pytest.raises(DataError, match="no water reference") as e:
        fit_mrs(f["svs"], out_dir=tmp_path, options=MRSOptions(require_water=True))
    assert f["svs"].name in str(e.value)
    with pytest.raises(DataError, match="FrameTimes") as e:
        fit_hp13c(f["pyr"], f["lac"], out_dir=tmp_path, pyruvate_sidecar={"FlipAngle": 10})
    assert "pyruvate" in str(e.value)


def test_commands(visit, tmp_path) -> None:
    root, labels = visit
    f = _files(root)
    lab = labels.to_nifti(tmp_path / "labels.nii.gz")
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["hp13c", str(f["pyr"]), str(f["lac"]), "-o", str(tmp_path / "h"), "--labels", str(lab)],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "h" / "hp13c_kPL.nii.gz").is_file() and "roi_fit" in res.output
    res = runner.invoke(app, ["mrs", str(f["svs"]), "-o", str(tmp_path / "m"), "--require-water"])
    assert res.exit_code == 2 and "no water reference" in res.output


def test_commands_keep_the_user_files(visit, tmp_path) -> None:
    """``--prefix`` stays in ``-o``; a file of the same name is replaced only with --overwrite."""
    root, _ = visit
    f = _files(root)
    runner = CliRunner()
    victim = tmp_path / "esc_hp13c_kPL.nii.gz"
    victim.write_text("user data")
    out = tmp_path / "out"
    hp = ["hp13c", str(f["pyr"]), str(f["lac"]), "-o", str(out)]
    res = runner.invoke(app, [*hp, "--prefix", "../esc_"])
    assert res.exit_code == 2 and "--prefix" in res.output
    mrs = ["mrs", str(f["svs"]), "--water", str(f["ref"]), "-o", str(out)]
    res = runner.invoke(app, [*mrs, "--prefix", "/abs_"])
    assert res.exit_code == 2 and "--prefix" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [victim.name]
    out.mkdir()
    for args, name in ((hp, "hp13c_kPL.nii.gz"), (mrs, "mrs_NAA.nii.gz")):
        (out / name).write_text("user data")
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and name in res.output and "--overwrite" in res.output
        assert (out / name).read_text() == "user data"
        res = runner.invoke(app, [*args, "--overwrite"])
        assert res.exit_code == 0, res.output
        assert Volume.from_nifti(out / name).data.ndim == 3
    assert victim.read_text() == "user data"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_deuterium_file_gives_lactate_ratios(tmp_path) -> None:
    from tumorscope.io.mrs import write_nifti_mrs
    from tumorscope.models.metabolic.basis import DEUTERIUM_SHIFTS_PPM, singlet_basis
    from tumorscope.models.metabolic.mrs import _beta, _broadened

    f0, dwell = 6.536 * 2.89, 1 / 500
    b = singlet_basis(DEUTERIUM_SHIFTS_PPM, f0, dwell, 256)
    fid = np.array([10.0, 4.0, 1.5, 1.2]) @ _broadened(b, np.array([0.3, 2.0, 10.0, _beta(4.0)]))
    fid = fid + 0.05 * (
        np.random.default_rng(0).normal(size=256) + 1j * np.random.default_rng(1).normal(size=256)
    )
    path = write_nifti_mrs(tmp_path / "dmi.nii.gz", fid.reshape(1, 1, 1, -1), dwell_s=dwell,
                           frequency_mhz=f0, nucleus="2H")  # fmt: skip
    res = fit_mrs(path, out_dir=tmp_path / "out")
    rows = {r["map"]: r["value"] for r in res.rows["measurements"]}
    assert rows["dmi.Lac_over_Glx"] == pytest.approx(1.2 / 1.5, rel=0.05)
    assert rows["dmi.Lac_over_Glc"] == pytest.approx(1.2 / 4.0, rel=0.05)


def test_mrsi_grid_is_resampled_onto_the_tumour_grid(tmp_path) -> None:
    from tumorscope.io.mrs import write_nifti_mrs
    from tumorscope.models.metabolic.basis import simulate_basis
    from tumorscope.models.metabolic.mrs import _beta, _broadened

    basis = simulate_basis(123.2, 1 / 2000, 1024, metabolites=("NAA", "Cr", "Cho"))
    env = _broadened(basis, np.array([0.0, 0.0, 5.0, _beta(3.0)]))
    cho = np.array([[1.0, 2.0], [3.0, 4.0]])  # 2 x 2 x 1 MRSI voxels of 10 mm
    rng = np.random.default_rng(3)
    data = np.zeros((2, 2, 1, 1024), complex)
    for i in range(2):
        for j in range(2):
            data[i, j, 0] = np.array([8.0, 6.0, cho[i, j]]) @ env
    data += 0.05 * (rng.normal(size=data.shape) + 1j * rng.normal(size=data.shape))
    path = write_nifti_mrs(tmp_path / "mrsi.nii.gz", data, dwell_s=1 / 2000, frequency_mhz=123.2,
                           affine=np.diag([10.0, 10.0, 10.0, 1.0]))  # fmt: skip
    # tumour grid: 5 mm voxels over the same 20 x 20 mm field; lesion 1 covers MRSI voxel
    # (0, 0) fully, lesion 2 half of (1, 0) and half of (1, 1)
    aff = np.diag([5.0, 5.0, 10.0, 1.0])
    aff[:3, 3] = (-2.5, -2.5, 0.0)
    lab = np.zeros((4, 4, 1), np.int16)
    lab[0:2, 0:2] = 1
    lab[2:4, 1:3] = 2
    onto = Volume(lab, aff)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fit_mrs(path, out_dir=tmp_path / "o", onto=onto, labels=onto,
                      options=MRSOptions(remove_water=False))  # fmt: skip
    rows = {(r["lesion_id"], r["map"]): r["value"] for r in res.rows["measurements"]}
    assert rows[("1", "mrs.Cho")] == pytest.approx(1.0, rel=0.02)
    assert rows[("2", "mrs.Cho")] == pytest.approx((3.0 + 4.0) / 2, rel=0.02)
    native = Volume.from_nifti(tmp_path / "o" / "mrs_Cho.nii.gz").data[..., 0]
    np.testing.assert_allclose(native, cho, rtol=0.02)


def test_nearest_index_moves_maps_as_resample_does() -> None:
    # the gather through one index map against preprocessing.registration.resample (nearest)
    # map by map: the same float32 values, NaN outside the spectroscopic grid and where the
    # source is NaN (an oblique, shifted, coarser grid onto a finer one)
    from tumorscope.preprocessing.registration import nearest_index, resample

    rng = np.random.default_rng(0)
    c, s = np.cos(0.3), np.sin(0.3)
    src_aff = np.array(
        [[8 * c, -8 * s, 0, -30], [8 * s, 8 * c, 0, -20], [0, 0, 10, -15], [0, 0, 0, 1]]
    )
    native = Volume(np.zeros((6, 5, 3), np.float32), src_aff)
    onto = Volume(np.zeros((40, 36, 12), np.float32), np.diag([2.0, 2.0, 3.0, 1.0]))
    lookup = nearest_index(native, onto)
    assert lookup is not None and (lookup >= 0).any() and (lookup < 0).any()
    for _ in range(3):
        arr = rng.normal(size=native.shape).astype(np.float32)
        arr[2, 2, 1] = np.nan
        ref = resample(native.with_data(arr), onto, interpolation="nearest").data
        ours = np.where(lookup >= 0, arr.reshape(-1)[np.maximum(lookup, 0)], np.nan)
        np.testing.assert_array_equal(ours.astype(np.float32), ref)


@pytest.mark.parametrize(
    ("shape", "affine"),
    [
        ((1, 1, 1), np.diag([20.0, 20.0, 20.0, 1.0])),  # a single-voxel spectrum (SVS)
        ((40, 36, 12), np.diag([2.0, 2.0, 3.0, 1.0])),  # the target grid itself
        ((20, 18, 4), np.diag([4.0, 4.0, 9.0, 1.0])),  # coarser, voxel edges on centres
    ],
)
def test_nearest_index_equals_resample_of_the_index_image(
    shape: tuple[int, int, int], affine: np.ndarray
) -> None:
    # the lookup against resample (nearest) of the image of flat indices, which is what it
    # computed before: grid-aligned points, half-voxel boundaries and one voxel included
    from tumorscope.preprocessing.registration import nearest_index, resample

    native = Volume(np.zeros(shape, np.float32), affine)
    onto = Volume(np.zeros((40, 36, 12), np.float32), np.diag([2.0, 2.0, 3.0, 1.0]))
    index = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    moved = resample(native.with_data(index), onto, interpolation="nearest").data
    ref = np.where(np.isfinite(moved), moved, -1).astype(np.int64)
    np.testing.assert_array_equal(nearest_index(native, onto), ref)
