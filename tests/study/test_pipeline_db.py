"""The pipeline writes the same rows to SQLite and PostgreSQL, and re-runs replace them."""

from __future__ import annotations

from pathlib import Path

from tumorscope.pipeline import run_study
from tumorscope.study import open_store


def test_pipeline_rows_on_both_databases(db_url: str, tmp_path: Path) -> None:
    from tumorscope.phantom import make_study

    study = make_study(tmp_path / "study", size="tiny", seed=1, n_subjects=1)
    quick = {
        "steps": ("register", "fit_dwi", "measure", "assess"),
        "options": {"dwi_models": ("adc",)},
        "report": False,
    }
    first = run_study(study, tmp_path / "out", db_url=db_url, **quick)
    assert first.ok, first.failed
    store = open_store(db_url)
    counts = store.counts()
    assert counts["subjects"] == 1 and counts["visits"] == 4
    assert counts["maps"] == 4 * 2 and counts["measurements"] > 0 and counts["assessments"] > 0
    # forcing every step rewrites every row: same counts, same values
    before = store.read_table("measurements")
    again = run_study(
        study,
        tmp_path / "out",
        db_url=db_url,
        force=quick["steps"],
        **quick,  # type: ignore[arg-type]
    )
    # every unit redone; the export is skipped since no result changed
    assert again.ok and again.done == [d for d in first.done if not d.startswith("report")]
    assert again.skipped == ["report study"]
    assert store.counts() == {**counts, "runs": 2}
    after = store.read_table("measurements")
    assert before.equals(after)
    store.close()
