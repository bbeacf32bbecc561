"""The generic fit stage (``stages.fit.fit_volume``): any model, a 4-D series, a mask → maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tumorscope.errors import DataError, FitError
from tumorscope.models import ADC
from tumorscope.stages.fit import fit_volume
from tumorscope.volume import Volume

B = np.array([0, 10, 20, 40, 80, 150, 300, 500, 800, 1000.0])
AFFINE = np.diag([2.0, 2.0, 4.0, 1.0])


def _truth(shape: tuple[int, int, int]) -> np.ndarray:
    rng = np.random.default_rng(11)
    n = int(np.prod(shape))
    return np.c_[rng.uniform(500, 1000, n), rng.uniform(6e-4, 2e-3, n)].reshape(*shape, 2)


def test_fit_volume_generic_and_errors(tmp_path: Path) -> None:
    truth = _truth((3, 2, 2))
    model = ADC(B, b_min=300)
    data = model.signal(truth.reshape(-1, 2)).reshape(3, 2, 2, B.size)
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


def test_a_mask_with_nan_is_refused_naming_its_file(tmp_path: Path) -> None:
    from tumorscope.stages.fit import load_mask

    like = Volume(np.ones((4, 4, 2, 3), np.float32), np.eye(4))
    data = np.ones((4, 4, 2), np.float32)
    data[0, 0, 0] = np.nan
    path = Volume(data, np.eye(4)).to_nifti(tmp_path / "mask.nii.gz")
    with pytest.raises(DataError, match="NaN or infinite") as err:
        load_mask(path, like)
    assert err.value.file == str(path) and err.value.field == "mask"
