"""The step framework: a fit step's maps into the ``maps`` rows and the map index, and back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tumorscope import layout
from tumorscope.files import write_map
from tumorscope.pipeline.options import RunOptions
from tumorscope.pipeline.step import Context, Unit, maps_of_visit, record_maps
from tumorscope.stages.base import MapFile


def _map(path: Path, units: str) -> Path:
    write_map(
        path,
        np.ones((2, 2, 2), np.float32),
        np.eye(4),
        units=units,
        description="test",
        provenance={"model": "adc", "options": {"b": np.float32(1.5)}},
    )
    return path


def test_record_maps_writes_rows_and_an_index_the_later_steps_read(tmp_path: Path) -> None:
    ctx = Context(tmp_path / "study", tmp_path / "out")
    assert ctx.options == RunOptions()
    unit = Unit("fit_dwi", "001", "01")
    d = layout.maps_dir(ctx.out_dir, "001", "01")
    d.mkdir(parents=True)
    adc = _map(d / "sub-001_ses-01_adc_ADC.nii.gz", "mm2/s")
    s0 = _map(d / "sub-001_ses-01_adc_S0.nii.gz", "a.u.")
    entries = [
        MapFile("adc", "ADC", adc, status=None, series="dwi"),
        MapFile("adc", "S0", s0, None, "dwi"),
    ]
    out = record_maps(ctx, "fit_dwi", unit, entries, [adc, s0])
    index = layout.map_index_path(ctx.out_dir, "001", "01", "fit_dwi")
    assert out.files == [adc, s0, index]
    (w,) = out.writes
    assert w.table == "maps" and w.where == {"subject": "001", "visit": "01", "step": "fit_dwi"}
    rows = {r["parameter"]: r for r in w.rows}
    assert rows["ADC"]["unit"] == "mm2/s" and rows["S0"]["unit"] == "a.u."
    assert rows["ADC"]["path"] == "sub-001/ses-01/maps/sub-001_ses-01_adc_ADC.nii.gz"
    assert rows["ADC"]["provenance"] == {"model": "adc", "options": {"b": 1.5}}
    assert rows["ADC"]["n_fitted"] is None  # no fit attached
    upstream = {"fit_dwi": {"sub-001/ses-01": {ctx.out_rel(p): "h" for p in out.files}}}
    maps = maps_of_visit(ctx, upstream, "001", "01")
    assert maps["adc.ADC"] == (adc, None, "mm2/s")
    path, status, unit_str = maps["adc.S0"]
    assert (path, status, unit_str) == (s0, None, "a.u.")
    assert maps_of_visit(ctx, upstream, "001", "02") == {}
