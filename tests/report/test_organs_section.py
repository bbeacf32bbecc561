"""The report's "organ watch" section from an ``organ_watch`` output (``sub-<id>_organs.json``)."""

from __future__ import annotations

from pathlib import Path

from tumorscope.files import write_json
from tumorscope.layout import organ_watch_path
from tumorscope.report.organs import organ_section


def test_organ_section_shows_flags_table_and_trajectories(tmp_path: Path) -> None:
    assert organ_section(tmp_path, "001", {}) is None  # no organ watch: no section
    values = [
        {"visit": v, "organ": "myocardium", "measure": "T2", "value": t2, "unit": "ms"}
        for v, t2 in (("01", 50.0), ("02", 60.0))
    ]
    flags = [
        {"pattern": "myocarditis_lake_louise", "visit": "02", "flag": True, "reason": "T2 <b> met"},
        {"pattern": "myocarditis_lake_louise", "visit": "01", "flag": None, "reason": "no T1"},
    ]
    meas = [{"visit": "02", "lesion_id": "myocardium", "map": "T2", "statistic": "z", "value": 3.3}]
    path = organ_watch_path(tmp_path, "001")
    path.parent.mkdir(parents=True)
    write_json(path, {"values": values, "measurements": meas, "flags": flags, "notes": ["n1"]})
    html = organ_section(tmp_path, "001", {"01": 0, "02": 21})
    assert html is not None
    assert "FLAG" in html and "not evaluable" in html
    assert "T2 &lt;b&gt; met" in html  # reasons are escaped
    assert "<td>3.3</td>" in html and "<td>21</td>" in html
    assert "data:image/svg+xml;base64," in html  # the trajectories
