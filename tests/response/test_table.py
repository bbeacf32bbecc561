"""The measurement table: every rule rejects a broken table with its row and the rule."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from _response_helpers import lesion, table
from typer.testing import CliRunner

from tumorscope.errors import ResponseError
from tumorscope.response import assess, from_lesion_table, read_table, validate_table

CSV = """subject,visit,date,lesion_id,kind,nodal,diameter_mm,status,organ
001,01,2026-01-05,L1,target,false,30,,liver
001,01,2026-01-05,N1,target,true,20,,lymph node
001,01,2026-01-05,NT1,non-target,false,,present,lung
001,02,2026-02-16,L1,target,false,20,,liver
001,02,2026-02-16,N1,target,true,12,,lymph node
001,02,2026-02-16,NT1,non-target,false,,present,lung
"""


def _write(tmp_path: Path, text: str, name: str = "m.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_read_valid_csv_normalises_types(tmp_path):
    df = read_table(_write(tmp_path, "\ufeff" + CSV))
    assert df["nodal"].tolist() == [False, True, False] * 2
    assert df["date"].dtype.kind == "M"
    assert df["baseline"].tolist() == [True] * 3 + [False] * 3
    assert df["visit_index"].tolist() == [0] * 3 + [1] * 3
    assert df["row"].iloc[0] == "line 2"


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda s: s.replace("kind,", "kinds,"), r"missing required column\(s\) \['kind'\]"),
        (lambda s: s.replace("NT1,non-target", "NT1,nontarget-ish"), r"line 4.*unknown kind 'nontarget-ish'"),
        (lambda s: s.replace("2026-02-16,L1", "16/02/2026,L1"), r"line 5.*not an ISO date"),
        (lambda s: s.replace(",20,,liver", ",abc,,liver"), r"line 5.*diameter_mm 'abc' is not a number"),
        (lambda s: s.replace(",20,,liver", ",-3,,liver"), r"line 5.*finite number >= 0"),
        (lambda s: s.replace(",present,lung\n001,02", ",gone,lung\n001,02"), r"line 4.*unknown status 'gone'"),
        (lambda s: s.replace("false,30", "maybe,30"), r"line 2.*nodal 'maybe' is not a boolean"),
        (lambda s: s.replace("L1,target,false,30,,liver", "L1,target,false,,,liver"),
         r"line 2.*target lesion L1 of subject 001 has no baseline diameter"),
        (lambda s: s.replace("02,2026-02-16,N1", "02,2026-02-17,N1"), r"line 6.*visit 02 of subject 001 has two dates"),
        (lambda s: s.replace("02,2026-02-16,NT1,non-target", "02,2026-02-16,NT1,new"),
         r"line 7.*NT1 .*changes kind"),
        (lambda s: s + "001,02,2026-02-16,L1,target,false,20,,liver\n", r"line 8.*L1 appears twice at visit 02"),
        (lambda s: s + "001,02,2026-02-16,L9,target,false,20,,liver\n",
         r"line 8.*target lesion L9 .*not in the baseline visit 01"),
        (lambda s: s + "001,01,2026-01-05,X1,new,false,20,,liver\n", r"line 8.*'new' at the baseline visit"),
        (lambda s: s.replace("2026-02-16", "2025-12-01"), r"dates out of order for subject 001: visit 02 is dated 2025-12-01"),
        (lambda s: s.replace("lymph node", "liver")
         + "001,01,2026-01-05,L3,target,false,20,,liver\n",
         r"line 8.*3 target lesions in liver.*at most 2 per organ"),
        (lambda s: s + "".join(f"001,01,2026-01-05,T{k},target,false,20,,organ{k}\n" for k in range(4)),
         r"line 11.*6 target lesions at baseline; RECIST 1.1 allows at most 5"),
        (lambda s: s.replace("30,,liver", "30,unequivocal progression,liver"),
         r"line 2.*applies to non-target and new lesions"),
        (lambda s: s.replace("NT1,non-target,false,,present,lung\n001,02", "NT1,non-target,false,,too small to measure,lung\n001,02"),
         r"line 4.*applies to target lesions only"),
        # sweep s14 W9: impossible dates and a repeated column; C: a NUL in an identifier
        (lambda s: s.replace("2026-01-05", "1800-01-05"), r"line 2.*1800-01-05 is before 1971-01-01"),
        (lambda s: s.replace("2026-02-16", "2099-02-16"), r"line 5.*2099-02-16 is in the future"),
        (lambda s: s.replace("organ\n", "organ,diameter_mm\n").replace("\n0", ",5\n0")
         .rstrip("\n") + ",5\n", r"column 'diameter_mm' appears more than once"),
        (lambda s: s.replace("NT1,non-target,false,,present,lung\n001,02", "N\x00T1,non-target,false,,present,lung\n001,02"),
         r"line 4.*control character"),
    ],
)  # fmt: skip
def test_broken_tables_are_rejected_with_row_and_rule(tmp_path, edit, match):
    with pytest.raises(ResponseError, match=match) as info:
        read_table(_write(tmp_path, edit(CSV)))
    assert info.value.file is not None and info.value.file.endswith("m.csv")


def test_dataframe_rows_are_named_by_position():
    t = table({"L1": lesion("target", 20, 20)})
    t.loc[1, "kind"] = "targte"
    with pytest.raises(ResponseError, match=r"row 1: unknown kind 'targte'"):
        validate_table(t)


def test_validation_is_idempotent():
    t = validate_table(table({"L1": lesion("target", 20, 20), "X": lesion("new", None, 5)}))
    again = validate_table(t)
    pd.testing.assert_frame_equal(t.drop(columns="row"), again.drop(columns="row"))


def test_several_baseline_visits_rejected():
    t = table({"L1": lesion("target", 20, 20)})
    t["baseline"] = True
    with pytest.raises(ResponseError, match="several baseline visits"):
        validate_table(t)


def test_visit_level_fields_have_one_value():
    t = table({"L1": lesion("target", 20, 20), "L2": lesion("target", 20, 20)})
    t["steroid_dose_mg"] = [0, 0, 0, 4]
    with pytest.raises(ResponseError, match="several steroid_dose_mg values"):
        validate_table(t)


def test_missing_file():
    with pytest.raises(ResponseError, match="file not found"):
        read_table("/nonexistent/table.csv")


# ------------------------------------------------------------------ from_lesion_table


def _geometry() -> pd.DataFrame:
    rows = []
    spec = {
        "01": ("2026-01-05", {"L1": (30, 20, True, False), "N1": (25, 18, True, True), "NT1": (8, 6, False, False)}),
        "02": ("2026-02-16", {"L1": (24, 16, True, False), "N1": (20, 9, True, True), "NEW1": (12, 10, False, False)}),
    }  # fmt: skip
    for visit, (d, lesions) in spec.items():
        for lid, (longest, short, target, nodal) in lesions.items():
            rows.append(
                {
                    "subject": "001",
                    "visit": visit,
                    "date": d,
                    "lesion_id": lid,
                    "target": target,
                    "nodal": nodal,
                    "longest_diameter_mm": longest,
                    "short_axis_mm": short,
                    "bidimensional_product_mm2": longest * short,
                    "volume_ml": longest * short * short / 1000,
                    "ADC_mean": 1.0e-3,
                }
            )
    return pd.DataFrame(rows)


def test_from_lesion_table_kinds_diameters_and_missing_lesions():
    """Lesions at baseline are target/non-target, a lesion first seen later is new, nodes are
    measured by their short axis, a lesion missing later is absent (default) or not
    assessed, and map statistics are carried over."""
    m = from_lesion_table(_geometry())
    v2 = m[m["visit"] == "02"].set_index("lesion_id")
    assert v2.loc["NEW1", "kind"] == "new"
    assert v2.loc["N1", "diameter_mm"] == 9  # short axis of a node
    assert v2.loc["L1", "diameter_mm"] == 24
    assert v2.loc["NT1", "status"] == "absent"
    assert "ADC_mean" in m.columns
    r = assess(m, criteria="recist1.1")
    assert r["response"].tolist() == ["baseline", "PD"]  # the new lesion
    m2 = from_lesion_table(_geometry(), missing="not assessed")
    assert "NT1" not in set(m2[m2["visit"] == "02"]["lesion_id"])


def test_from_lesion_table_baseline_and_nontarget_progression_option():
    g = _geometry()
    g.loc[(g["visit"] == "02") & (g["lesion_id"] == "NEW1"), "lesion_id"] = "NT1"
    g.loc[(g["visit"] == "02") & (g["lesion_id"] == "NT1"), "volume_ml"] = 1.0  # ×3.5 in volume
    m = from_lesion_table(g, nontarget_progression_pct=73.0)
    nt = m[(m["visit"] == "02") & (m["lesion_id"] == "NT1")]
    assert nt["status"].iloc[0] == "unequivocal progression"
    m = from_lesion_table(g, baseline={"001": "02"})
    assert m.loc[m["visit"] == "01", "visit_index"].unique().tolist() == [-1]


def test_from_lesion_table_missing_column():
    with pytest.raises(ResponseError, match=r"lacks column\(s\) \['short_axis_mm'\]"):
        from_lesion_table(_geometry().drop(columns="short_axis_mm"))


# ------------------------------------------------------------------ command line


def test_assess_command_writes_csv_and_json(tmp_path):
    from tumorscope.cli import app

    src = _write(tmp_path, CSV)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["assess", str(src), "--criteria", "irecist", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "iPR" in res.output
    csv = pd.read_csv(out / "m_irecist.csv", dtype=str)
    assert csv["response"].tolist() == ["baseline", "iPR"]
    import json

    payload = json.loads((out / "m_irecist.json").read_text())
    assert payload["best_overall_response"][0]["best_response"] == "iPR"


def test_assess_command_replaces_a_file_only_with_overwrite(tmp_path):
    """Beside the table (the default folder) a file of the same name may be the user's."""
    from tumorscope.cli import app

    src = _write(tmp_path, CSV)
    mine = tmp_path / "m_recist1.1.csv"
    mine.write_text("my precious notes")
    res = CliRunner().invoke(app, ["assess", str(src)])
    assert res.exit_code == 2
    assert "m_recist1.1.csv" in res.output and "--overwrite" in res.output
    assert mine.read_text() == "my precious notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, mine.name])
    res = CliRunner().invoke(app, ["assess", str(src), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert pd.read_csv(mine)["response"].tolist()[0] == "baseline"
    assert (tmp_path / "m_recist1.1.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_assess_command_bad_table_exits_2_and_writes_nothing(tmp_path):
    from tumorscope.cli import app

    src = _write(tmp_path, CSV.replace("NT1,non-target", "NT1,nontarget-ish"))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["assess", str(src), "--out", str(out)])
    assert res.exit_code == 2
    assert "unknown kind" in res.output
    assert not out.exists()


def test_lesions_before_baseline_must_be_at_baseline():
    t = table(
        {"L1": lesion("target", 20, 20, 20), "L2": lesion("target", 20, None, 20)}, baseline_visit=1
    )
    with pytest.raises(ResponseError, match=r"target lesion L2 .*not in the baseline visit V2"):
        validate_table(t)
    t = table(
        {"L1": lesion("target", 20, 20, 20), "X1": lesion("new", 5, None, None)}, baseline_visit=1
    )
    with pytest.raises(
        ResponseError, match=r"row 1: lesion X1 .*'new' before the baseline visit V2"
    ):
        validate_table(t)


def test_earliest_date_is_the_manifests():
    from tumorscope.io.manifest import EARLIEST_DATE
    from tumorscope.response.table import EARLIEST_DATE as TABLE_EARLIEST

    assert TABLE_EARLIEST == EARLIEST_DATE


def test_assess_output_escapes_formula_identifiers(tmp_path):
    """Sweep s14 C4: a lesion id that a spreadsheet would run as a formula is written with
    a leading ' wherever it lands in the output CSV (new_lesion_ids at the start of a cell)."""
    from tumorscope.cli import app

    text = CSV + '001,02,2026-02-16,"=HYPERLINK(""http://evil"")",new,false,10,,liver\n'
    src = _write(tmp_path, text)
    res = CliRunner().invoke(app, ["assess", str(src), "-o", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    out = (tmp_path / "o" / "m_recist1.1.csv").read_text()
    assert "HYPERLINK" in out
    import csv

    cells = [c for row in csv.reader(out.splitlines()) for c in row]
    assert not [c for c in cells if c.startswith(("=", "+", "@"))], cells
