"""What every stage takes and returns (``tumorscope.stages.base``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tumorscope.errors import DataError
from tumorscope.io import open_study
from tumorscope.protocol import DiffusionProtocol
from tumorscope.stages.base import MapFile, SeriesInput, StageResult, read_series


def test_a_study_series_becomes_a_stage_input(tiny_study: Path) -> None:
    series = open_study(tiny_study).subjects["001"].visits["01"].series["dwi"]
    s = SeriesInput.of(series)
    assert s.role == "dwi" and s.label == series.relpath and s.path == series.path
    assert isinstance(s.protocol, DiffusionProtocol)
    assert s.files["series"] == series.path and s.files["bval"].suffix == ".bval"
    assert s.sidecar == series.sidecar
    vol = s.load()
    assert vol.data.shape[-1] == s.protocol.n_measurements
    assert s.need("MagneticFieldStrength") == series.sidecar["MagneticFieldStrength"]
    with pytest.raises(DataError) as err:
        s.need("NoSuchField")
    assert err.value.field == "NoSuchField" and str(series.relpath) in str(err.value)


def test_a_file_given_by_a_user_reads_its_sidecar_or_takes_the_protocol_given(
    tiny_study: Path,
) -> None:
    path = open_study(tiny_study).subjects["001"].visits["01"].series["dwi"].path
    s = read_series(path, "dwi")
    assert s.role == "dwi" and s.label == str(path)
    assert isinstance(s.protocol, DiffusionProtocol) and s.protocol.n_measurements > 1
    mine = DiffusionProtocol((0.0, 1000.0))
    t = read_series(path, "dwi", role="diffusion", protocol=mine, extra_files={"bval": "b.txt"})
    assert t.protocol is mine and t.role == "diffusion" and t.files["bval"] == Path("b.txt")
    assert np.array_equal(t.load().data, s.load().data)


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="series file not found") as err:
        read_series(tmp_path / "none.nii.gz", "dwi")
    assert err.value.field == "series" and "none.nii.gz" in str(err.value)
    folder = tmp_path / "a_dwi.nii.gz"
    folder.mkdir()
    with pytest.raises(DataError, match="not a regular file but a folder") as err:
        read_series(folder, "dwi")
    assert err.value.field == "series" and err.value.file == str(folder)


def test_results_add_up(tmp_path: Path) -> None:
    a = StageResult(
        maps=[MapFile("adc", "ADC", tmp_path / "a.nii.gz", series="dwi")],
        files=[tmp_path / "a.nii.gz"],
        rows={"measurements": [{"v": 1}]},
        warnings=["w1"],
    )
    b = StageResult(
        maps=[MapFile("ivim", "D", tmp_path / "d.nii.gz")],
        files=[tmp_path / "d.nii.gz"],
        rows={"measurements": [{"v": 2}], "cells19f": [{"c": 3}]},
        warnings=["w2"],
    )
    assert a.extend(b) is a
    assert [m.name for m in a.maps] == ["adc.ADC", "ivim.D"]
    assert a.rows == {"measurements": [{"v": 1}, {"v": 2}], "cells19f": [{"c": 3}]}
    assert a.files == [tmp_path / "a.nii.gz", tmp_path / "d.nii.gz"] and a.warnings == ["w1", "w2"]


@pytest.mark.parametrize(
    ("value", "message"),
    [(np.nan, "every voxel value is non-finite"), (0.0, "every voxel value is zero")],
)
def test_a_series_without_one_finite_non_zero_value_is_refused_at_load(
    tmp_path: Path, value: float, message: str
) -> None:
    from tumorscope.volume import Volume

    path = tmp_path / "a_MEGRE.nii.gz"
    Volume(np.full((4, 4, 2, 3), value, np.float32), np.eye(4)).to_nifti(path)
    s = SeriesInput(path, "t2star", None, {}, {"series": path}, "a_MEGRE.nii.gz")
    with pytest.raises(DataError, match=message) as err:
        s.load()
    assert err.value.file == "a_MEGRE.nii.gz" and err.value.field == "data"
    data = np.zeros((4, 4, 2, 3), np.float32)
    data[0, 0, 0, 0], data[1, 0, 0, 0] = np.nan, 5.0  # one finite non-zero value is enough
    Volume(data, np.eye(4)).to_nifti(path)
    assert s.load().shape == (4, 4, 2, 3)
