"""Dask: a cluster gives the same tables as a serial run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from tumorscope.pipeline import run_study
from tumorscope.study import default_url, open_store

TABLES = ("subjects", "visits", "series", "lesions", "maps", "measurements", "assessments")


def _tables(out: Path) -> dict[str, pd.DataFrame]:
    store = open_store(default_url(out))
    try:
        return {t: store.read_table(t) for t in TABLES}
    finally:
        store.close()


def test_dask_cluster_gives_the_serial_tables(
    small_study: Path, tmp_path: Path, quick: dict[str, Any]
) -> None:
    from dask.distributed import LocalCluster

    serial = run_study(small_study, tmp_path / "serial", **quick)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        dask = run_study(
            small_study, tmp_path / "dask", scheduler=cluster.scheduler_address, **quick
        )
    assert serial.ok and dask.ok
    assert sorted(serial.done) == sorted(dask.done)
    a, b = _tables(tmp_path / "serial"), _tables(tmp_path / "dask")
    for name in TABLES:
        assert len(a[name]) > 0, name
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)
    # the same bytes in every map file
    for rel in a["maps"]["path"]:
        assert (tmp_path / "serial" / rel).read_bytes() == (tmp_path / "dask" / rel).read_bytes()
