"""Hypoxia stage: R2* and Ktrans maps + lesions → class map, per-lesion table and rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from tumorscope.models.hypoxia import HypoxiaClass
from tumorscope.stages.hypoxia import HypoxiaOptions, classify_hypoxia
from tumorscope.volume import Volume

AFF = np.diag([2.0, 2.0, 2.0, 1.0])  # 8 µL voxels


def _nifti(path: Path, data: np.ndarray) -> Path:
    Volume(np.asarray(data, dtype=np.float32), AFF).to_nifti(path)
    return path


def test_classes_table_and_rows(tmp_path: Path) -> None:
    r2 = np.full((4, 4, 1), 20.0)
    kt = np.full((4, 4, 1), 0.3)
    r2[:2, :2] = 50.0  # high R2* ...
    kt[:2, 0] = 0.05  # ... half of it poorly perfused (not hypoxic: OE-MRI, issue 24)
    labels = np.zeros((4, 4, 1), np.int32)
    labels[:2] = 1  # lesion L1: 8 voxels, 2 high-R2* poorly perfused, 2 perfused, 4 normal
    labels[3, 3] = 2  # lesion 2: one normal voxel
    res = classify_hypoxia(
        _nifti(tmp_path / "r2.nii.gz", r2),
        _nifti(tmp_path / "kt.nii.gz", kt),
        Volume(labels, AFF),
        {1: "L1"},
        class_path=tmp_path / "maps" / "x_hypoxia_classes.nii.gz",
        table_path=tmp_path / "x_hypoxia.parquet",
        options=HypoxiaOptions(r2star_threshold_per_s=30.0, ktrans_threshold_per_min=0.1),
        perfusion_name="extended_tofts.Ktrans",
        keys={"subject": "001", "visit": "01"},
    )
    assert [p.name for p in res.files] == [
        "x_hypoxia_classes.nii.gz",
        "x_hypoxia_classes.json",
        "x_hypoxia.parquet",
    ]
    assert res.maps == []
    classes = Volume.from_nifti(res.files[0], dtype=np.uint8).data
    assert classes[0, 0, 0] == HypoxiaClass.HIGH_R2STAR_POORLY_PERFUSED
    assert classes[0, 1, 0] == HypoxiaClass.HIGH_R2STAR_PERFUSED
    assert classes[2, 2, 0] == HypoxiaClass.UNKNOWN  # outside the lesions
    side_text = res.files[1].read_text()
    assert side_text.startswith('{\n "Units": "class",')
    side = json.loads(side_text)
    assert side["Description"].startswith("hypoxia classes: 0=NORMAL, 1=HIGH_R2STAR_PERFUSED")
    assert side["Provenance"]["options"] == {
        "r2star_threshold_per_s": 30.0,
        "ktrans_threshold_per_min": 0.1,
        "perfusion": "extended_tofts.Ktrans",
    }
    frame = pd.read_parquet(res.files[2])
    assert list(frame.columns[:3]) == ["subject", "visit", "lesion_id"]
    assert list(frame["lesion_id"]) == ["L1", "2"]
    l1 = frame.iloc[0]
    assert l1["fraction_high_r2star_poorly_perfused"] == 0.25
    # without an oxygen challenge the hypoxic volume is not assessed (OE-MRI: perfused and
    # oxygen-refractory), so it is NaN, and None in the measurements
    assert np.isnan(l1["hypoxic_volume_ml"])
    rows = {(r["lesion_id"], r["statistic"]): r for r in res.rows["measurements"]}
    r = rows[("L1", "hypoxic_volume_ml")]
    assert (r["subject"], r["map"], r["unit"], r["value"]) == ("001", "hypoxia", "mL", None)
    assert (
        rows[("L1", "fraction_normal")]["value"] == 0.5
        and rows[("2", "fraction_normal")]["unit"] == "1"
    )
    assert len(res.rows["hypoxia"]) == 2


def test_without_lesions_nothing_is_classified(tmp_path: Path) -> None:
    r2 = _nifti(tmp_path / "r2.nii.gz", np.full((3, 3, 1), 50.0))
    kt = _nifti(tmp_path / "kt.nii.gz", np.full((3, 3, 1), 0.01))
    res = classify_hypoxia(
        r2,
        kt,
        None,
        class_path=tmp_path / "c.nii.gz",
        table_path=tmp_path / "t.parquet",
        options=HypoxiaOptions(30.0, 0.1),
    )
    assert (Volume.from_nifti(tmp_path / "c.nii.gz", dtype=np.uint8).data == 255).all()
    assert res.rows["measurements"] == [] and len(pd.read_parquet(tmp_path / "t.parquet")) == 0
