"""The ``fit_cest`` step on the session's full run of the small phantom study (subject 001,
the responder, has CEST visits; 002 has none)."""

from __future__ import annotations

from typing import Any

from tumorscope.study import default_url, open_store


def test_fit_cest_records_maps_and_per_lesion_values(full_run: Any) -> None:
    assert full_run.ok, full_run.failed
    store = open_store(default_url(full_run.out_dir))
    try:
        maps = store.read_table("maps")
        m = store.read_table("measurements")
    finally:
        store.close()
    cest = maps[maps["model"].isin(["cest", "cest_lorentzian"])]
    assert set(cest["subject"]) == {"001"}
    assert set(cest["visit"]) == {"01", "02", "03", "04"}
    b0 = cest[cest["parameter"] == "B0"]
    assert set(b0["unit"]) == {"ppm"} and len(b0) == 8  # cest.B0 and the Lorentzian B0
    for rel in cest["path"]:
        assert (full_run.out_dir / rel).is_file()
    med = m[(m["statistic"] == "median") & (m["lesion_id"] == "L1") & (m["subject"] == "001")]
    amp = med[med["map"] == "cest_lorentzian.amide_amp"].set_index("visit")["value"]
    asym = med[med["map"] == "cest.MTRasym_3p5ppm"].set_index("visit")["value"]
    assert len(amp) == len(asym) == 4
    # APT falls in the responder (untreated -> responding -> responded)
    assert amp["02"] < amp["01"] and amp["03"] < amp["01"]
    assert asym["02"] < asym["01"] and asym["03"] < asym["01"]
    html = (full_run.out_dir / "report" / "sub-001.html").read_text()
    assert 'id="fig-cest"' in html and 'id="cest-table"' in html
    assert 'id="fig-cest"' not in (full_run.out_dir / "report" / "sub-002.html").read_text()
