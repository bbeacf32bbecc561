"""The output layout: where a run puts each file, and reading the map indexes back."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from tumorscope import layout


def test_paths_of_a_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert layout.default_out_dir(tmp_path) == tmp_path / "derivatives" / "tumorscope"
    assert layout.database_path(out) == out / "tumorscope.sqlite"
    assert layout.log_path(out, "r1") == out / "logs" / "run-r1.log"
    assert layout.tables_dir(out) == out / "tables"
    assert layout.study_report_path(out) == out / "report" / "index.html"
    assert layout.subject_report_path(out, "001") == out / "report" / "sub-001.html"
    sub, ses = out / "sub-001", out / "sub-001" / "ses-02"
    assert layout.subject_dir(out, "001") == sub
    assert layout.visit_dir(out, "001", "02") == ses
    assert layout.maps_dir(out, "001", "02") == ses / "maps"
    assert layout.measurements_path(out, "001") == sub / "sub-001_measurements.parquet"
    assert layout.lesion_table_path(out, "001") == sub / "sub-001_lesions.parquet"
    assert layout.assessments_path(out, "001") == sub / "sub-001_assessments.parquet"
    assert layout.patterns_path(out, "001") == sub / "sub-001_patterns.parquet"
    assert layout.align_path(out, "001", "02") == ses / "sub-001_ses-02_align.json"
    assert layout.cells19f_path(out, "001", "02") == ses / "sub-001_ses-02_cells19F.parquet"
    assert layout.hypoxia_path(out, "001", "02") == ses / "sub-001_ses-02_hypoxia.parquet"
    index = layout.map_index_path(out, "001", "02", "fit_dwi")
    assert index == ses / "maps" / "sub-001_ses-02_fit_dwi_index.json"
    assert layout.is_map_index(index) and not layout.is_map_index("x_align.json")


def test_anything_with_an_out_dir_is_an_output_folder(tmp_path: Path) -> None:
    """The pipeline passes its context; the report passes the folder: same paths."""
    ctx = SimpleNamespace(out_dir=tmp_path)
    assert layout.maps_dir(ctx, "001", "01") == layout.maps_dir(tmp_path, "001", "01")
    assert layout.measurements_path(str(tmp_path), "001") == layout.measurements_path(ctx, "001")


def test_map_indexes_are_read_back_in_order(tmp_path: Path) -> None:
    a = layout.map_index_path(tmp_path, "001", "01", "fit_dwi")
    b = layout.map_index_path(tmp_path, "001", "01", "fit_relax")
    a.parent.mkdir(parents=True)
    rel = a.parent.relative_to(tmp_path).as_posix()
    a.write_text(
        json.dumps(
            {
                "adc.ADC": {"path": f"{rel}/adc.nii.gz", "status": None, "unit": "mm2/s"},
                "ivim.D": {
                    "path": f"{rel}/d.nii.gz",
                    "status": f"{rel}/st.nii.gz",
                    "unit": "mm2/s",
                    "series": "dwi",
                },
            }
        )
    )
    b.write_text(json.dumps({"adc.ADC": {"path": f"{rel}/other.nii.gz", "unit": "x"}}))
    rels = [p.relative_to(tmp_path).as_posix() for p in (a, b)]
    maps = layout.read_map_index(tmp_path, [*rels, "sub-001/ses-01/x_align.json"])
    assert sorted(maps) == ["adc.ADC", "ivim.D"]
    path, status, unit = maps["ivim.D"]
    assert (path, status, unit) == (a.parent / "d.nii.gz", a.parent / "st.nii.gz", "mm2/s")
    assert maps["adc.ADC"].path == a.parent / "other.nii.gz"  # the later index wins
    assert maps["adc.ADC"].status is None
    assert layout.read_map_series(tmp_path, rels[:1]) == {"adc.ADC": None, "ivim.D": "dwi"}
    assert layout.map_index_files({rels[1]: "h", rels[0]: "h", "x.parquet": "h"}) == sorted(rels)
