"""Organ values of a visit (``stages.organs.organ_values``) on synthetic maps and masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tumorscope.errors import DataError
from tumorscope.io.manifest import read_manifest
from tumorscope.stages.organs import organ_values, read_organ_table
from tumorscope.volume import Volume


def _vol(data: np.ndarray, h: float = 1.0) -> Volume:
    return Volume(data, np.diag([h, h, h, 1.0]))


def test_organ_values(tmp_path: Path) -> None:
    lab = np.zeros((20, 20, 12), np.int16)
    lab[2:8, 2:8, 2:8] = 1  # myocardium
    lab[10:14, 10:14, 2:8] = 2  # blood pool
    lab[2:18, 15:18, 2:10] = 3  # bowel wall: 3 voxels thick
    lab[15:17, 2:4, 1:9] = 4  # pituitary: 8 voxels along z (S-I of a diagonal affine)
    names = {1: "myocardium", 2: "blood_pool", 3: "bowel_wall", 4: "pituitary"}
    nat = np.where(lab == 2, 1600.0, 1000.0).astype(np.float32)
    post = np.where(lab == 2, 400.0, 600.0).astype(np.float32)
    for name, arr in (("nat", nat), ("post", post)):
        _vol(arr, 0.5).to_nifti(tmp_path / f"{name}.nii.gz")
    rows, notes = organ_values(
        _vol(lab, 0.5),
        names,
        {"molli.T1": tmp_path / "nat.nii.gz"},
        post_t1=tmp_path / "post.nii.gz",
        hematocrit=0.4,
    )
    got = {(r["organ"], r["measure"]): r["value"] for r in rows}
    assert not notes
    assert got[("myocardium", "T1")] == pytest.approx(1000.0)
    dmyo, dblood = 1 / 600 - 1 / 1000, 1 / 400 - 1 / 1600
    assert got[("myocardium", "ECV")] == pytest.approx(0.6 * dmyo / dblood)
    assert got[("bowel_wall", "thickness_mm")] == pytest.approx(1.5)
    assert got[("pituitary", "height_mm")] == pytest.approx(4.0)
    assert ("bowel_wall", "T1") not in got  # a known organ: only its measures
    with pytest.raises(DataError, match="not in its table"):
        organ_values(_vol(lab), {1: "myocardium"}, {})


def test_organ_table_errors(tmp_path: Path) -> None:
    p = tmp_path / "o.tsv"
    p.write_text("label\torgan\n1\tliver\n1\tspleen\n")
    with pytest.raises(DataError, match="repeated"):
        read_organ_table(p)
    p.write_text("label\tname\n1\tliver\n")
    with pytest.raises(DataError, match="columns"):
        read_organ_table(p)
    with pytest.raises(DataError, match="missing"):
        read_organ_table(tmp_path / "none.tsv")


def test_validate_reports_a_bad_organ_reference(tmp_path: Path) -> None:
    (tmp_path / "study.yaml").write_text(
        "name: x\nsubjects:\n  '001':\n    visits:\n      '01': {date: 2024-01-01, baseline: true}\n"
        "organ_reference:\n  myocardium:\n    T1: {mean: 1000}\n"
    )
    _, problems = read_manifest(tmp_path / "study.yaml")
    assert any(p.field == "organ_reference.myocardium.T1" for p in problems)


def test_aha_segment_names_are_checked(tmp_path: Path) -> None:
    p = tmp_path / "o.tsv"
    p.write_text("label\torgan\n1\tmyocardium_aha3\n2\tmyocardium_aha17\n")
    with pytest.raises(DataError, match="AHA segments"):
        read_organ_table(p)
