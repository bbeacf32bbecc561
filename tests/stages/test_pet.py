"""PET stage: SUV/SUL maps and per-lesion uptake on a volume whose values are known."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tumorscope.errors import DataError
from tumorscope.models.pet import lean_body_mass_kg, sphere_mask
from tumorscope.stages.base import SeriesInput
from tumorscope.stages.pet import pet_uptake, suv_factor_of
from tumorscope.volume import Volume

F = 2.0e-4  # SUVbw factor, g/mL per Bq/mL
VOX = 2.0


def _series(tmp_path: Path, suv: np.ndarray, **side) -> SeriesInput:
    aff = np.diag([VOX, VOX, VOX, 1.0])
    path = tmp_path / "sub-01_ses-01_pet.nii.gz"
    Volume((suv / F).astype(np.float32), aff).to_nifti(path)
    sidecar = {
        "Units": "Bq/mL",
        "SUVbwFactor": [F],
        "BodyWeight": 80.0,
        "BodyHeight": 1.8,
        "Sex": "M",
        **side,
    }
    path.with_name("sub-01_ses-01_pet.json").write_text(json.dumps(sidecar))
    return SeriesInput(path, "pet", None, sidecar, {"series": path}, "pet.nii.gz")


def _phantom():
    shape = (40, 40, 24)
    suv = np.full(shape, 0.5)
    liver = sphere_mask(shape, (12, 20, 12), 22.0, (VOX,) * 3)
    suv[liver] = 2.0
    lesion = sphere_mask(shape, (30, 20, 12), 10.0, (VOX,) * 3)
    suv[lesion] = 10.0
    return suv, liver, lesion


def test_uptake_of_a_uniform_sphere(tmp_path: Path) -> None:
    suv, liver, lesion = _phantom()
    aff = np.diag([VOX, VOX, VOX, 1.0])
    labels = Volume(lesion.astype(np.int16), aff)
    res = pet_uptake(
        _series(tmp_path, suv),
        labels=labels,
        lesion_ids={1: "L1"},
        liver=Volume(liver.astype(np.uint8), aff),
        out_dir=tmp_path / "maps",
        prefix="sub-01_ses-01_",
        table_path=tmp_path / "pet.parquet",
        keys={"subject": "01", "visit": "01"},
    )
    (row,) = res.rows["pet"]
    lbm = lean_body_mass_kg(80.0, 1.8, "M") / 80.0
    v_ml = lesion.sum() * VOX**3 / 1000
    assert row["suv_max"] == pytest.approx(10.0, rel=1e-5)
    assert row["suv_peak"] == pytest.approx(10.0, rel=1e-5)  # 10 mm sphere holds the 1 mL one
    assert row["sul_peak"] == pytest.approx(10.0 * lbm, rel=1e-5)
    assert row["mtv41_ml"] == pytest.approx(v_ml)
    assert row["tlg41_g"] == pytest.approx(v_ml * 10.0, rel=1e-5)
    # liver: uniform 2.0 SUV -> SUL 2*lbm, SD 0: PERCIST threshold 1.5 x mean
    assert row["liver_sul_mean"] == pytest.approx(2.0 * lbm, rel=1e-5)
    assert row["percist_threshold"] == pytest.approx(1.5 * 2.0 * lbm, rel=1e-4)
    assert row["mtv_percist_ml"] == pytest.approx(v_ml)
    names = {m.parameter for m in res.maps}
    assert names == {"SUV", "SUL", "SUVbsa"}
    suv_map = Volume.from_nifti(tmp_path / "maps" / "sub-01_ses-01_pet_SUV.nii.gz")
    np.testing.assert_allclose(suv_map.data, suv, rtol=1e-5)
    meas = pd.DataFrame(res.rows["measurements"])
    assert set(meas["map"]) == {"SUV", "SUL"}
    assert meas.set_index("statistic").loc["SULpeak", "value"] == pytest.approx(10 * lbm, rel=1e-5)
    assert pd.read_parquet(tmp_path / "pet.parquet")["lesion_id"].tolist() == ["L1"]


def test_lesion_map_on_a_finer_grid_is_resampled(tmp_path: Path) -> None:
    suv, _, lesion = _phantom()
    fine = np.diag([1.0, 1.0, 1.0, 1.0])
    fine[:3, 3] = -0.5  # 1 mm voxels covering the same space as the 2 mm ones
    shape = tuple(2 * s for s in lesion.shape)
    fine_lesion = sphere_mask(shape, (60.5, 40.5, 24.5), 10.0, (1.0, 1.0, 1.0))
    res = pet_uptake(
        _series(tmp_path, suv),
        labels=Volume(fine_lesion.astype(np.int16), fine),
        lesion_ids={1: "L1"},
        out_dir=tmp_path,
    )
    (row,) = res.rows["pet"]
    assert row["volume_ml"] == pytest.approx(4 / 3 * math.pi, rel=0.1)
    assert row["suv_peak"] == pytest.approx(10.0, rel=1e-5)
    assert any("no liver mask" in w for w in res.warnings)
    assert math.isnan(row["liver_sul_mean"])


def test_bad_sidecars(tmp_path: Path) -> None:
    suv, _, _ = _phantom()
    with pytest.raises(DataError) as e:
        pet_uptake(
            _series(tmp_path, suv, Units="kBq/mL"), labels=None, lesion_ids=None, out_dir=tmp_path
        )
    assert e.value.field == "Units"
    with pytest.raises(DataError) as e:
        suv_factor_of({"Units": "Bq/mL", "ScanStart": 3600}, 0, "pet.json")
    assert e.value.field == "InjectedRadioactivity"


def test_factor_from_the_bids_fields_matches_the_hand_value() -> None:
    # 370 MBq, scan 3600 s after injection, 70 kg: 70000 / (370e6 * 2**(-3600/6586.2))
    side = {
        "InjectedRadioactivity": 370.0,
        "InjectionStart": 0,
        "ScanStart": 3600.0,
        "RadionuclideHalfLife": 6586.2,
        "BodyWeight": 70.0,
        "DecayCorrection": "START",
    }
    assert suv_factor_of(side, 0, "x") == pytest.approx(70000 / 253.3142e6, rel=1e-6)


def test_mri_beside_picks_adc_and_ktrans_from_the_long_table(tmp_path) -> None:
    """The report's PET table shows ADCmean/ADCmin and Ktrans mean per visit and lesion from
    ``measure``'s long table; other maps and statistics (e.g. the ADC's standard error map)
    are not taken."""
    import pandas as pd

    from tumorscope.stages.pet import mri_beside

    rows = []
    for visit, base in (("01", 1.0), ("02", 2.0)):
        for lesion in ("L1", "L2"):
            for mp, stat, v in (
                ("dwi.adc.ADC", "mean", base),
                ("dwi.adc.ADC", "min", base / 2),
                ("dwi.adc.ADC_se", "mean", 99.0),
                ("dce.etofts.Ktrans", "mean", base / 10),
                ("dce.etofts.Ktrans", "max", 99.0),
            ):
                rows.append(
                    {
                        "visit": visit,
                        "lesion_id": lesion,
                        "map": mp,
                        "statistic": stat,
                        "value": v + (lesion == "L2"),
                        "unit": "x",
                    }
                )
    path = tmp_path / "m.parquet"
    pd.DataFrame(rows).to_parquet(path)
    out = mri_beside(path).sort_values(["visit", "lesion_id"]).reset_index(drop=True)
    assert list(out.columns) == ["visit", "lesion_id", "ADC_mean", "ADC_min", "Ktrans_mean"]
    assert out["ADC_mean"].tolist() == [1.0, 2.0, 2.0, 3.0]
    assert out["ADC_min"].tolist() == [0.5, 1.5, 1.0, 2.0]
    assert out["Ktrans_mean"].tolist() == pytest.approx([0.1, 1.1, 0.2, 1.2])
    assert mri_beside(tmp_path / "missing.parquet") is None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"InjectedRadioactivity": 0}, "InjectedRadioactivity"),  # was: RadionuclideTotalDose
        ({"BodyWeight": "70kg"}, "BodyWeight"),  # was: internal error ValueError
        ({"RadionuclideHalfLife": True}, "RadionuclideHalfLife"),
    ],
)
def test_the_factor_names_the_sidecar_field(fields: dict, field: str) -> None:
    side = {
        "InjectedRadioactivity": 370.0,
        "ScanStart": 3600.0,
        "RadionuclideHalfLife": 6586.2,
        "BodyWeight": 70.0,
        "DecayCorrection": "START",
    }
    with pytest.raises(DataError, match="expected a positive number") as e:
        suv_factor_of({**side, **fields}, 0, "pet.json")
    assert (e.value.file, e.value.field) == ("pet.json", field)


def test_a_weight_in_text_beside_a_factor_is_refused_naming_the_sidecar(tmp_path: Path) -> None:
    """With an SUVbwFactor the weight only scales SUL: a text weight crashed there."""
    suv, _, _ = _phantom()
    pet = _series(tmp_path, suv, BodyWeight="70kg")
    with pytest.raises(DataError, match="expected a number, got '70kg'") as e:
        pet_uptake(pet, labels=None, lesion_ids=None, out_dir=tmp_path)
    assert e.value.field == "BodyWeight" and e.value.file.endswith(".json")
