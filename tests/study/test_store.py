"""The study database on SQLite and PostgreSQL: migrations, replace semantics, export."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from tumorscope.errors import ExportError
from tumorscope.study import open_store
from tumorscope.study.store import Store


def _visit(store: Store, subject: str = "001", visit: str = "01") -> None:
    with store.transaction() as s:
        store.upsert(s, "subjects", [{"subject": subject, "n_visits": 1}])
        store.upsert(
            s,
            "visits",
            [
                {
                    "subject": subject,
                    "visit": visit,
                    "date": dt.date(2026, 1, 5),
                    "days_on_treatment": -7,
                    "baseline": True,
                    "prebaseline": False,
                }
            ],
        )


def _rows(value: float, n: int = 3) -> list[dict]:
    return [
        {
            "subject": "001",
            "visit": "01",
            "lesion_id": f"L{i}",
            "map": "",
            "statistic": "volume_ml",
            "value": value + i,
            "unit": "mL",
            "step": "measure",
        }
        for i in range(n)
    ]


def test_migrations_match_the_schema(db_url: str) -> None:
    """The shipped Alembic migrations build exactly the tables the ORM declares."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from tumorscope.study.schema import Base

    store = open_store(db_url)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    assert set(store.counts()) >= {"subjects", "visits", "maps", "measurements", "step_runs"}
    # opening again is a no-op migration, not an error
    open_store(db_url).close()
    store.close()


def test_replace_replaces_instead_of_duplicating(db_url: str) -> None:
    store = open_store(db_url)
    _visit(store)
    for value in (1.0, 2.0, 2.0):
        with store.transaction() as s:
            store.replace(s, "measurements", {"subject": "001", "step": "measure"}, _rows(value))
    table = store.read_table("measurements")
    assert len(table) == 3
    assert table["value"].tolist() == [2.0, 3.0, 4.0]
    # fewer rows on a re-run: the stale ones go
    with store.transaction() as s:
        store.replace(s, "measurements", {"subject": "001", "step": "measure"}, _rows(5.0, n=1))
    assert store.read_table("measurements")["lesion_id"].tolist() == ["L0"]
    store.close()


def test_a_failed_unit_of_work_writes_nothing(db_url: str) -> None:
    store = open_store(db_url)
    _visit(store)
    with store.transaction() as s:
        store.replace(s, "measurements", {"subject": "001"}, _rows(1.0))
    with pytest.raises(RuntimeError, match="boom"), store.transaction() as s:
        store.replace(s, "measurements", {"subject": "001"}, _rows(9.0))
        raise RuntimeError("boom")
    assert store.read_table("measurements")["value"].tolist() == [1.0, 2.0, 3.0]
    # a database error (duplicate primary key) rolls back too and says where
    with pytest.raises(ExportError, match="rolled back"), store.transaction() as s:
        store.replace(s, "measurements", {"subject": "001"}, _rows(7.0) + _rows(8.0))
    assert store.read_table("measurements")["value"].tolist() == [1.0, 2.0, 3.0]
    store.close()


def test_rows_outside_the_owned_slice_are_refused(db_url: str) -> None:
    store = open_store(db_url)
    _visit(store)
    with pytest.raises(ExportError, match="outside the rows this step owns"):
        with store.transaction() as s:
            store.replace(s, "measurements", {"subject": "002"}, _rows(1.0))
    with pytest.raises(ExportError, match="unknown column"):
        with store.transaction() as s:
            store.replace(s, "measurements", {"subject": "001"}, [{**_rows(1)[0], "oops": 1}])
    with pytest.raises(ExportError, match="unknown table"):
        store.read_table("nope")
    store.close()


def test_foreign_keys_cascade_from_visits(db_url: str) -> None:
    store = open_store(db_url)
    _visit(store)
    with store.transaction() as s:
        store.replace(s, "measurements", {"subject": "001"}, _rows(1.0))
    with store.transaction() as s:
        store.replace(s, "visits", {"subject": "001"}, [])
    assert store.counts()["measurements"] == 0
    # a measurement of a visit that does not exist is refused by the database
    with pytest.raises(ExportError):
        with store.transaction() as s:
            store.replace(s, "measurements", {"subject": "001"}, _rows(1.0))
    store.close()


def test_nan_json_and_numpy_values_round_trip(db_url: str) -> None:
    import numpy as np

    store = open_store(db_url)
    _visit(store)
    row = {
        "subject": "001",
        "visit": "01",
        "model": "IVIM",
        "parameter": "D",
        "step": "fit_dwi",
        "unit": "mm2/s",
        "path": "maps/x.nii.gz",
        "sha256": "0" * 64,
        "n_fitted": np.int64(10),
        "n_converged": 9,
        "provenance": {"options": {"b": np.float32(1.5), "bad": float("nan")}, "v": [1, 2]},
    }
    with store.transaction() as s:
        store.replace(s, "maps", {"subject": "001", "visit": "01"}, [row])
    got = store.get("maps", subject="001", visit="01", model="IVIM", parameter="D")
    assert got is not None
    assert got["n_fitted"] == 10
    assert got["provenance"] == {"options": {"b": 1.5, "bad": None}, "v": [1, 2]}
    assert store.get("maps", subject="001", visit="01", model="IVIM", parameter="K") is None
    store.close()


def test_export_writes_tidy_parquet_and_csv(db_url: str, tmp_path: Path) -> None:
    store = open_store(db_url)
    _visit(store)
    with store.transaction() as s:
        store.replace(s, "measurements", {"subject": "001"}, _rows(1.0))
    written = store.export(tmp_path / "tables")
    assert set(written) == {
        "subjects",
        "visits",
        "series",
        "lesions",
        "maps",
        "measurements",
        "assessments",
        "patterns",
        "alignments",
    }
    pq = pd.read_parquet(tmp_path / "tables" / "measurements.parquet")
    csv = pd.read_csv(tmp_path / "tables" / "measurements.csv", keep_default_na=False)
    assert pq["value"].tolist() == [1.0, 2.0, 3.0]
    assert csv["value"].tolist() == [1.0, 2.0, 3.0]
    assert list(pq.columns) == [
        "subject",
        "visit",
        "lesion_id",
        "map",
        "statistic",
        "value",
        "unit",
        "step",
    ]
    visits = pd.read_csv(tmp_path / "tables" / "visits.csv", dtype=str)
    assert visits.loc[0, "date"] == "2026-01-05"
    with pytest.raises(ExportError, match="unknown export format"):
        store.export(tmp_path, formats=("xlsx",))
    store.close()


def test_bad_urls_are_reported() -> None:
    with pytest.raises(ExportError, match="--db"):
        open_store("nosuchdb://x")
    with pytest.raises(ExportError, match="cannot open or migrate") as info:
        open_store("postgresql://nobody:secret@127.0.0.1:1/none")
    assert "secret" not in str(info.value)


def test_columns_are_cleaned_as_each_value_would_be() -> None:
    """``_clean_column`` (whole columns at once) against the per-value ``_clean`` it
    replaces on the write path: NaN and ±inf to None, numpy scalars unwrapped, nested JSON."""
    import numpy as np

    from tumorscope.study.store import _clean, _clean_column

    inf, nan = float("inf"), float("nan")
    columns = [
        ["a", "b", None],
        [1.0, 2.5, None, 0.0, 3],
        [1.0, nan, None, 2.0],
        [1.0, -inf, 0.0],
        [1e308, 1e308],  # a finite column whose sum overflows: the slow path, same values
        [True, False, None, 7],
        [np.float64(1.5), np.float32(nan), np.int64(3), np.bool_(True)],
        [{"a": np.float32(2.0), 1: [nan, (1, 2)], "b": {"c": inf}}, [np.int64(1), "x"], None],
        [dt.date(2026, 1, 5), None],
    ]
    for col in columns:
        got = _clean_column(list(col))
        want = [_clean(v) for v in col]
        assert repr(got) == repr(want), col  # (repr: NaN != NaN)
        assert [type(v) for v in got] == [type(v) for v in want], col


def test_rows_with_different_columns_and_upserts_of_some_columns(db_url: str) -> None:
    """Rows of one write need not give the same columns (they are inserted in groups, the
    missing columns NULL); an upsert updates the columns it gives and keeps the others (as
    the ORM merge did)."""
    store = open_store(db_url)
    _visit(store)
    rows = _rows(1.0)
    rows[1] = {k: v for k, v in rows[1].items() if k != "value"}  # no value: NULL
    rows[2] = dict(reversed(list(rows[2].items())))  # the same columns, in another order
    with store.transaction() as s:
        store.replace(s, "measurements", {"subject": "001", "step": "measure"}, rows)
    table = store.read_table("measurements")
    assert table["lesion_id"].tolist() == ["L0", "L1", "L2"]
    assert table["value"].isna().tolist() == [False, True, False]
    assert table["value"][2] == 3.0
    # a row outside the owned slice is named by its index in the rows given
    bad = [*_rows(1.0), {**_rows(1.0)[0], "lesion_id": "L9", "step": "other"}]
    with pytest.raises(ExportError, match="row 3 has step='other'"):
        with store.transaction() as s:
            store.replace(s, "measurements", {"subject": "001", "step": "measure"}, bad)
    # upsert: a new row, then only some of its columns
    with store.transaction() as s:
        store.upsert(s, "subjects", [{"subject": "002", "n_visits": 3}])
    with store.transaction() as s:
        store.upsert(s, "subjects", [{"subject": "002", "treatment_start": dt.date(2026, 2, 1)}])
    got = store.get("subjects", subject="002")
    assert got is not None
    assert got["n_visits"] == 3 and got["treatment_start"] == dt.date(2026, 2, 1)
    with store.transaction() as s:  # the primary key alone: nothing to update, no error
        store.upsert(s, "subjects", [{"subject": "002"}])
    assert store.get("subjects", subject="002") == got
    store.close()
