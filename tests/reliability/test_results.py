"""Results that must not vanish or depend on where they were written (issue 14, items 4, 13).

One study for both: the tiny phantom's responder (subject 001) whose last visit's lesion map
is blanked (every lesion gone: a complete response), run once into ``out-a`` (item 4) and
once more into ``out-b`` (item 13).
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow  # two runs of the pipeline on one subject


@pytest.fixture(scope="module")
def complete_response(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The responder with an empty lesion map at its last visit, run serially into ``out-a``."""
    import nibabel as nib
    import numpy as np

    from tumorscope.phantom import make_study
    from tumorscope.pipeline import run_study

    root = tmp_path_factory.mktemp("complete-response")
    study = make_study(root / "study", size="tiny", seed=0, n_subjects=1)
    labels = study / "derivatives/lesions/sub-001/ses-04/sub-001_ses-04_lesions.nii.gz"
    img = nib.load(labels)
    blank = np.zeros(img.shape, dtype=img.get_data_dtype())
    nib.save(nib.Nifti1Image(blank, img.affine, img.header), labels)
    summary = run_study(study, root / "out-a", report=False)
    return {"study": study, "root": root, "summary": summary, "out": root / "out-a"}


def _step_runs(out: Path) -> dict[tuple[str, str], tuple[str, str]]:
    con = sqlite3.connect(f"file:{out / 'tumorscope.sqlite'}?mode=ro", uri=True)
    try:
        rows = con.execute("select step, unit, status, input_hash from step_runs").fetchall()
    finally:
        con.close()
    return {(s, u): (st, h) for s, u, st, h in rows}


def test_a_complete_response_is_assessed_CR(complete_response: dict[str, Any]) -> None:
    """Item 4: every lesion gone at a follow-up → the fit succeeds, the lesions measure 0 mm,
    the visit is CR (RECIST 1.1) / iCR (iRECIST) and the best overall response is CR."""
    import pandas as pd

    from tumorscope import layout, response

    summary, out = complete_response["summary"], complete_response["out"]
    assert summary.failed == [], summary.failed
    assert _step_runs(out)[("fit_dce", "sub-001/ses-04")][0] == "done"

    lesions = pd.read_parquet(layout.lesion_table_path(out, "001"))
    last = lesions[lesions["visit"] == "04"].set_index("lesion_id")
    assert sorted(last.index) == ["L1", "N1", "NT1"]
    assert not last["present"].any()
    for col in ("longest_diameter_mm", "short_axis_mm", "volume_ml"):
        assert (last[col] == 0.0).all(), col

    measured = pd.read_parquet(layout.measurements_path(out, "001"))
    geo = measured[(measured["visit"] == "04") & (measured["map"] == "")]
    assert len(geo) == 3 * 5 and (geo["value"] == 0.0).all()
    assert measured[(measured["visit"] == "04") & (measured["map"] != "")].empty

    calls = pd.read_parquet(layout.assessments_path(out, "001"))
    at_last = calls[calls["visit"] == "04"].set_index("criteria")["response"]
    assert at_last.to_dict() == {"recist1.1": "CR", "irecist": "iCR"}

    table = response.from_lesion_table(lesions, baseline={"001": "01"})
    best = response.best_overall_response(response.assess(table, criteria="recist1.1"))
    assert best["best_response"].tolist() == ["CR"]


def test_a_visit_where_every_lesion_is_gone_is_assessed() -> None:
    """Item 4, the table alone: rows with ``present = False`` (0 mm) still make the visit
    count, so it is CR rather than missing (it had no row, hence no assessment, before)."""
    import pandas as pd

    from tumorscope import response

    rows = [
        ("01", "2026-01-05", "L1", True, False, 30.0, True),
        ("01", "2026-01-05", "NT1", False, False, 12.0, True),
        ("02", "2026-02-16", "L1", True, False, 0.0, False),
        ("02", "2026-02-16", "NT1", False, False, 0.0, False),
    ]
    cols = ["visit", "date", "lesion_id", "target", "nodal", "longest_diameter_mm", "present"]
    lesions = pd.DataFrame(rows, columns=cols).assign(subject="001", short_axis_mm=0.0)
    table = response.from_lesion_table(lesions)
    assert table.loc[table["visit"] == "02", "status"].tolist() == ["absent", "absent"]
    for criteria, expected in (("recist1.1", "CR"), ("irecist", "iCR")):
        calls = response.assess(table, criteria=criteria)
        assert calls["response"].tolist() == ["baseline", expected]


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _files(root: Path) -> dict[str, str]:
    """Every file but the database, the logs and the folder's bookkeeping (its marker holds
    the creation time; ``tools/compare_runs.py``), with its hash."""
    from tumorscope.pipeline.outdir import MARKER_NAME

    return {
        p.relative_to(root).as_posix(): _sha(p)
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and p.relative_to(root).parts[0] not in ("logs", "report", MARKER_NAME)
        and not p.name.startswith("tumorscope.sqlite")
    }


def test_two_output_folders_give_identical_files_and_hashes(
    complete_response: dict[str, Any],
) -> None:
    """Item 13: the same study into another folder gives byte-identical files (no absolute
    path in any sidecar, stage JSON or table) and the same input hash for every unit."""
    from tumorscope.pipeline import run_study

    out_a = complete_response["out"]
    out_b = complete_response["root"] / "elsewhere" / "out-b"
    summary = run_study(complete_response["study"], out_b, report=False)

    a, b = _files(out_a), _files(out_b)
    assert sorted(a) == sorted(b)
    assert [n for n in a if a[n] != b[n]] == []
    assert any(n.endswith("_dce_stage.json") for n in a)
    for name in a:
        if name.endswith((".json", ".tsv", ".csv")):
            text = (out_a / name).read_text(encoding="utf-8")
            assert str(complete_response["root"]) not in text, name

    runs_a, runs_b = _step_runs(out_a), _step_runs(out_b)
    assert runs_a.keys() == runs_b.keys()
    assert {k: v[1] for k, v in runs_a.items()} == {k: v[1] for k, v in runs_b.items()}
    assert summary.failed == []
