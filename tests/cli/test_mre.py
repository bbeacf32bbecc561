"""``tumorscope fit mre`` and ``fit molli`` on the phantom's organ series, against the
phantom's truth, and the same files as the pipeline's stages for the same series."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from tumorscope.cli import app
from tumorscope.phantom.organs import ORGAN_EVENTS
from tumorscope.stages.base import read_series
from tumorscope.stages.mre import fit_mre_series
from tumorscope.volume import Volume

runner = CliRunner()


def _organs(study: Path, s: str, v: str) -> np.ndarray:
    p = (
        study
        / "derivatives"
        / "lesions"
        / f"sub-{s}"
        / f"ses-{v}"
        / f"sub-{s}_ses-{v}_organs.nii.gz"
    )
    return Volume.from_nifti(p).data


def test_fit_mre_recovers_liver_stiffness_and_matches_the_stage(
    tiny_study: Path, tmp_path: Path
) -> None:
    series = tiny_study / "sub-004" / "ses-03" / "anat" / "sub-004_ses-03_MRE.nii.gz"
    res = runner.invoke(app, ["fit", "mre", str(series), "-o", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    g = Volume.from_nifti(tmp_path / "cli" / "sub-004_ses-03_MRE_mre_abs_G.nii.gz").data
    liver = _organs(tiny_study, "004", "03") == 3
    truth = ORGAN_EVENTS["mixed"].liver_kpa[2]
    assert abs(np.nanmedian(g[liver]) / truth - 1) < 0.03
    side = json.loads((tmp_path / "cli" / "sub-004_ses-03_MRE_mre_abs_G.json").read_text())
    assert side["Units"] == "kPa" and side["Provenance"]["options"]["laplacian"] == "2d"
    # the stage with the same prefix writes the same maps
    stage = fit_mre_series(
        read_series(series, "MRE", role="mre"),
        out_dir=tmp_path / "stage",
        prefix="sub-004_ses-03_MRE_",
    )
    for m in stage.maps:
        a = Volume.from_nifti(m.path).data
        b = Volume.from_nifti(tmp_path / "cli" / m.path.name).data
        np.testing.assert_array_equal(a, b)


def test_fit_mre_refuses_phase_not_in_radians(tiny_study: Path, tmp_path: Path) -> None:
    src = tiny_study / "sub-004" / "ses-01" / "anat" / "sub-004_ses-01_MRE"
    vol = Volume.from_nifti(src.with_suffix(".nii.gz"))
    bad = tmp_path / "sub-1_MRE.nii.gz"
    Volume(np.asarray(vol.data) * 1000.0, vol.affine).to_nifti(bad)
    (tmp_path / "sub-1_MRE.json").write_text(src.with_suffix(".json").read_text())
    res = runner.invoke(app, ["fit", "mre", str(bad), "-o", str(tmp_path / "out")])
    assert res.exit_code == 2 and "radians" in res.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    side = json.loads(src.with_suffix(".json").read_text())
    del side["VibrationFrequency"]
    (tmp_path / "sub-1_MRE.json").write_text(json.dumps(side))
    res = runner.invoke(app, ["fit", "mre", str(bad), "-o", str(tmp_path / "out")])
    assert res.exit_code == 2 and "VibrationFrequency" in res.output


def test_fit_molli_recovers_myocardial_t1(tiny_study: Path, tmp_path: Path) -> None:
    series = tiny_study / "sub-006" / "ses-03" / "anat" / "sub-006_ses-03_MOLLI.nii.gz"
    res = runner.invoke(app, ["fit", "molli", str(series), "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    t1 = Volume.from_nifti(tmp_path / "sub-006_ses-03_MOLLI_molli_T1.nii.gz").data
    organs = _organs(tiny_study, "006", "03")
    assert abs(np.nanmedian(t1[organs == 1]) / ORGAN_EVENTS["stable"].myo_t1_ms[2] - 1) < 0.03
    assert abs(np.nanmedian(t1[organs == 2]) / 1600.0 - 1) < 0.03
