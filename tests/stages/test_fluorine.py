"""19F stage: image + reference tubes + regions → cells per region, tables and rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tumorscope.errors import DataError
from tumorscope.models.cells.fluorine import spins_per_voxel
from tumorscope.stages.base import SeriesInput
from tumorscope.stages.fluorine import (
    TABLE_COLUMNS,
    FluorineOptions,
    count_cells_19f,
    fluorine_background,
)
from tumorscope.volume import Volume

AFF = np.diag([2.0, 2.0, 2.0, 1.0])
SHAPE = (20, 20, 6)
KAPPA = 2e-16
VOX_ML = 0.008


def _series(
    tmp_path: Path, name: str, data: np.ndarray, role: str, **sidecar: object
) -> SeriesInput:
    path = tmp_path / f"{name}.nii.gz"
    Volume(np.asarray(data, dtype=np.float32), AFF).to_nifti(path)
    return SeriesInput(path, role, None, sidecar, {"series": path}, name)


@pytest.fixture
def scene(tmp_path: Path) -> dict:
    """A 19F image with one 20 mM tube, a labelled region (1e6 cells) and an empty one; the
    anatomical image is bright inside the body (x ≥ 3) and dark in the air around it."""
    rng = np.random.default_rng(0)
    amp = np.zeros(SHAPE)
    tubes = np.zeros(SHAPE)
    tubes[4:8, 4:8, 1:5] = 1
    amp[tubes == 1] = KAPPA * spins_per_voxel(20.0, VOX_ML)
    regions = np.zeros(SHAPE)
    regions[10:16, 10:16, 1:5] = 1
    regions[10:16, 4:8, 1:5] = 2
    amp[12:14, 12:14, 2:4] = 1e6 * 1e12 * KAPPA / 8
    img = np.abs(amp + rng.standard_normal(SHAPE) + 1j * rng.standard_normal(SHAPE))
    anat = np.full(SHAPE, 1000.0)
    anat[:3] = 1.0
    return {
        "image": _series(
            tmp_path, "f19", img, "fluorine", ReferenceTubes={"1": 20.0}, FluorinePerCell=1e12
        ),
        "tubes": _series(tmp_path, "tubes", tubes, "fluorine_tubes"),
        "anatomical": _series(tmp_path, "anat", anat, "anatomical"),
        "labels": Volume(regions.astype(np.int32), AFF),
    }


def test_counts_per_region_with_tables_and_measurement_rows(scene: dict, tmp_path: Path) -> None:
    table = tmp_path / "t.parquet"
    res = count_cells_19f(
        scene["image"],
        scene["tubes"],
        scene["anatomical"],
        scene["labels"],
        {1: "L1", 2: "L2"},
        table_path=table,
        keys={"subject": "001", "visit": "02"},
    )
    assert res.files == [table] and res.maps == []
    frame = pd.read_parquet(table)
    assert list(frame.columns) == ["subject", "visit", *TABLE_COLUMNS]
    assert list(frame["lesion_id"]) == ["L1", "L2"]
    assert list(frame["status"]) == ["quantified", "below detection"]
    l1 = frame.iloc[0]
    assert abs(l1["cells"] / 1e6 - 1) < 4 * l1["cells_se"] / 1e6
    assert np.isnan(frame.iloc[1]["cells"]) and frame.iloc[1]["cells_detection_limit"] > 0
    assert l1["background"].endswith("out-of-body voxels") and l1["fluorine_per_cell"] == 1e12
    assert abs(l1["noise_sigma"] - 1.0) < 0.1  # the complex noise of the image has σ = 1
    rows = res.rows["cells19f"]
    assert [r["lesion_id"] for r in rows] == ["L1", "L2"] and rows[0]["cells"] == l1["cells"]
    m = res.rows["measurements"]
    assert list(m[0]) == ["subject", "visit", "lesion_id", "map", "statistic", "value", "unit"]
    assert {r["map"] for r in m} == {"19F"}
    got = {(r["lesion_id"], r["statistic"]): (r["value"], r["unit"]) for r in m}
    assert set(got) == {
        (lid, s)
        for lid in ("L1", "L2")
        for s in (
            "cells",
            "cells_se",
            "cells_decision_threshold",
            "cells_detection_limit",
            "near_threshold_fraction",
            "n_detected",
        )
    }
    # issue 24: the decision threshold (50 % detected) and Currie's detection limit (95 %)
    l2 = frame.iloc[1]
    assert 1.3 < l2["cells_detection_limit"] / l2["cells_decision_threshold"] < 1.6
    assert not l2["near_threshold"] and np.isnan(l2["near_threshold_fraction"])
    assert frame["near_threshold"].dtype == bool and not l1["near_threshold"]
    assert got[("L1", "near_threshold_fraction")][1] == "1"
    assert got[("L1", "cells")] == (pytest.approx(l1["cells"]), "cells")
    assert got[("L2", "cells")] == (None, "cells")  # below detection: no number
    assert got[("L1", "n_detected")][1] == "voxels"
    assert [r["label"] for r in res.rows["counts"]] == [1, 2]
    assert res.warnings[0].startswith("19F: sigma ") and "tube SNR" in res.warnings[0]


def test_options_override_the_sidecar(scene: dict) -> None:
    opts = FluorineOptions(tubes_mM={1: 40.0}, fluorine_per_cell=2e12, noise_sigma=1.0)
    res = count_cells_19f(scene["image"], scene["tubes"], None, scene["labels"], options=opts)
    base = count_cells_19f(
        scene["image"],
        scene["tubes"],
        None,
        scene["labels"],
        options=FluorineOptions(noise_sigma=1.0),
    )
    a, b = res.rows["cells19f"][0], base.rows["cells19f"][0]
    assert a["lesion_id"] == "1" and a["background"] == "noise sigma given"
    # twice the tube concentration halves the signal per spin, twice the spins per cell
    # halves the cells per spin: the count stays
    assert a["signal_per_spin"] == pytest.approx(b["signal_per_spin"] / 2, rel=1e-12)
    assert a["cells"] == pytest.approx(b["cells"], rel=1e-12)
    assert a["fluorine_per_cell"] == 2e12
    assert a["noise_sigma"] == 1.0 and res.files == []


def test_missing_inputs_are_named(scene: dict, tmp_path: Path) -> None:
    img = scene["image"]
    bare = SeriesInput(img.path, img.role, None, {"FluorinePerCell": 1e12}, img.files, "f19")
    with pytest.raises(DataError, match="ReferenceTubes"):
        count_cells_19f(bare, scene["tubes"], scene["anatomical"], scene["labels"])
    wrong = FluorineOptions(tubes_mM={1: 20.0, 3: 60.0})
    with pytest.raises(DataError, match="reference tube 3"):
        count_cells_19f(img, scene["tubes"], scene["anatomical"], scene["labels"], options=wrong)
    with pytest.raises(DataError, match="anatomical"):
        count_cells_19f(
            img, scene["tubes"], None, scene["labels"], table_path=tmp_path / "x.parquet"
        )
    assert not (tmp_path / "x.parquet").exists()
    moved = Volume(scene["labels"].data, np.diag([3.0, 3.0, 3.0, 1.0]))
    with pytest.raises(DataError, match="grid"):
        count_cells_19f(img, scene["tubes"], scene["anatomical"], moved)


@pytest.mark.parametrize(
    ("side", "field", "message"),
    [
        ({"ReferenceTubes": {"a": {"1": 5}}}, "ReferenceTubes", "tube label 'a' .* not a label"),
        ({"ReferenceTubes": {"1": {"a": 5}}}, "ReferenceTubes", "tube 1: expected a conc"),
        ({"ReferenceTubes": {"1": -5.0}}, "ReferenceTubes", "tube 1: expected a finite number"),
        ({"ReferenceTubes": "abc"}, "ReferenceTubes", "must be an object .* got 'abc'"),
        ({"ReferenceTubes": 0}, "ReferenceTubes", "must be an object"),
        ({"ReferenceTubes": {}}, "ReferenceTubes", "is empty"),
        ({"ReferenceTubes": None}, "ReferenceTubes", "is null"),
        ({"FluorinePerCell": -2e12}, "FluorinePerCell", "finite number > 0, got -2000000000000.0"),
        ({"FluorinePerCell": None}, "FluorinePerCell", "is null in the sidecar"),
    ],
)
def test_malformed_sidecar_fields_name_the_file_and_field(
    scene: dict, side: dict, field: str, message: str
) -> None:
    img = scene["image"]
    sidecar = {"ReferenceTubes": {"1": 20.0}, "FluorinePerCell": 1e12, **side}
    bad = SeriesInput(img.path, img.role, None, sidecar, img.files, "f19")
    with pytest.raises(DataError, match=message) as err:
        count_cells_19f(bad, scene["tubes"], scene["anatomical"], scene["labels"])
    assert err.value.file == "f19" and err.value.field == field


def test_a_bad_tube_concentration_option_is_named_by_its_tube_label(scene: dict) -> None:
    opts = FluorineOptions(tubes_mM={1: np.float64(-5.0)})
    with pytest.raises(DataError, match=r"tube 1: expected a finite number > 0, got -5.0$"):
        count_cells_19f(scene["image"], scene["tubes"], scene["anatomical"], None, options=opts)


def test_background_is_outside_the_body_and_away_from_tubes_and_lesions() -> None:
    anat = np.full((10, 10, 3), 500.0)
    anat[:2] = 2.0
    exclude = np.zeros(anat.shape, bool)
    exclude[2, 5, 1] = True  # touches the air at x = 1 once dilated
    bg = fluorine_background(anat, exclude)
    assert bg[:2].sum() == 2 * 10 * 3 - 1 and not bg[2:].any()
    assert not bg[1, 5, 1]
