"""A dual-echo DSC in the study folder (``perf/*_echo-1_dsc``, ``*_echo-2_dsc``): the roles
``dsc`` and ``dsc_echo2``, a clean validate, and every way a pair can be wrong reported by
``validate`` (and the pipeline's register step, which runs the same checks) naming the
second echo's file and the field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tumorscope.cli import app
from tumorscope.io import open_study, validate_study
from tumorscope.volume import Volume

PERF = "sub-002/ses-01/perf"
ECHO1 = f"{PERF}/sub-002_ses-01_echo-1_dsc"
ECHO2 = f"{PERF}/sub-002_ses-01_echo-2_dsc"


@pytest.fixture(scope="module")
def dual_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tumorscope.phantom import make_study

    return make_study(
        tmp_path_factory.mktemp("de") / "study",
        size="tiny",
        n_subjects=1,
        brain_subjects=1,
        dsc_dual_echo=True,
    )


@pytest.fixture
def copy(dual_study: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(dual_study, tmp_path / "study"))


def _errors(root: Path) -> list:
    return [p for p in validate_study(root) if p.severity == "error"]


def test_the_pair_reads_as_two_roles_and_validates_clean(dual_study: Path) -> None:
    visit = open_study(dual_study).subjects["002"].visits["01"]
    assert visit.series["dsc"].path.name == "sub-002_ses-01_echo-1_dsc.nii.gz"
    assert visit.series["dsc_echo2"].path.name == "sub-002_ses-01_echo-2_dsc.nii.gz"
    assert visit.series["dsc_echo2"].protocol.te_ms == pytest.approx(60.0)
    assert not _errors(dual_study)
    phantom = json.loads((dual_study / "derivatives/truth/phantom.json").read_text())
    assert phantom["dsc_dual_echo"] is True


def test_a_single_dsc_file_still_takes_the_dsc_role(copy: Path) -> None:
    """An existing study's ``*_dsc`` (no echo entity) is the ``dsc`` role as before, and a
    ``*_dsc`` beside an ``*_echo-2_dsc`` is the pair's first echo."""
    for ext in (".nii.gz", ".json"):
        (copy / f"{ECHO1}{ext}").rename(copy / f"{PERF}/sub-002_ses-01_dsc{ext}")
    visit = open_study(copy).subjects["002"].visits["01"]
    assert visit.series["dsc"].path.name == "sub-002_ses-01_dsc.nii.gz"
    assert "dsc_echo2" in visit.series
    assert not _errors(copy)


def _rewrite(copy: Path, change: str) -> None:
    img, js = copy / f"{ECHO2}.nii.gz", copy / f"{ECHO2}.json"
    vol = Volume.from_nifti(img, dtype=np.int16)
    side = json.loads(js.read_text())
    data, affine = vol.data, vol.affine
    if change == "EchoTime":
        side["EchoTime"] = 0.025  # shorter than the first echo's 0.03 s
    elif change == "frames":
        data, side["FrameTimes"] = data[..., :-2], side["FrameTimes"][:-2]
    elif change == "FrameTimes":
        side["FrameTimes"] = [
            t + (0.5 if i > 30 else 0.0) for i, t in enumerate(side["FrameTimes"])
        ]
    elif change == "RepetitionTime":
        side["RepetitionTime"] = 1.2
    elif change == "dim":
        data = data[:, :, :-1]
    else:
        affine = affine.copy()
        affine[0, 3] += 4.0
    Volume(data, affine).to_nifti(img)
    js.write_text(json.dumps(side))


@pytest.mark.parametrize(
    ("change", "file", "field", "words"),
    [
        ("EchoTime", f"{ECHO2}.json", "EchoTime", "0.025 s is not longer than the first's 0.03 s"),
        ("frames", f"{ECHO2}.json", "FrameTimes", "58 frames, the first echo"),
        ("FrameTimes", f"{ECHO2}.json", "FrameTimes", "frame 31 at 47 s, 46.5 s in the first"),
        ("RepetitionTime", f"{ECHO2}.json", "RepetitionTime", "1.2 s, the first echo"),
        ("dim", f"{ECHO2}.nii.gz", "dim", "the first echo (sub-002/ses-01/perf/"),
        ("affine", f"{ECHO2}.nii.gz", "affine", "the grid (affine) differs from the first"),
    ],
)
def test_validate_names_the_file_and_field_of_a_bad_pair(
    copy: Path, change: str, file: str, field: str, words: str
) -> None:
    _rewrite(copy, change)
    errs = _errors(copy)
    pair = [e for e in errs if e.file.startswith(ECHO2) and "first" in e.message]
    assert len(pair) == 1, errs
    (e,) = pair
    assert (e.file, e.field) == (file, field), e
    assert words in e.message, e.message
    res = CliRunner().invoke(app, ["validate", str(copy)], terminal_width=250)
    assert res.exit_code == 1 and f"ERROR {file}: {field}: " in res.output, res.output


def test_a_second_echo_without_the_first_is_an_error(copy: Path) -> None:
    for ext in (".nii.gz", ".json"):
        (copy / f"{ECHO1}{ext}").unlink()
    (e,) = [p for p in _errors(copy) if p.field == "echo"]
    assert e.file == f"{ECHO2}.nii.gz" and "without the first" in e.message
