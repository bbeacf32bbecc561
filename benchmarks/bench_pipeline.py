"""The study pipeline on one machine: serial against a local Dask cluster, in one run.

Writes a synthetic study of a few dozen subjects (``tumorscope.phantom``), runs the whole
pipeline serially, then on a ``LocalCluster`` of ``--workers`` processes into another folder,
prints both wall times and the speed-up, and checks that the two runs gave identical tables
(the database tables, compared row by row) and identical map files.

Run::

    python benchmarks/bench_pipeline.py [--subjects 24] [--size tiny] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from tumorscope.phantom import make_study
from tumorscope.pipeline import run_study
from tumorscope.study import default_url, open_store

TABLES = ("subjects", "visits", "series", "lesions", "maps", "measurements", "assessments")


def _tables(out: Path) -> dict[str, pd.DataFrame]:
    store = open_store(default_url(out))
    try:
        return {t: store.read_table(t) for t in TABLES}
    finally:
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=24)
    ap.add_argument("--size", default="tiny", choices=("tiny", "default", "large"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-report", action="store_true", help="leave the HTML reports out")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        study = make_study(root / "study", size=args.size, seed=0, n_subjects=args.subjects)
        n_visits = sum(1 for _ in (study).glob("sub-*/ses-*"))
        print(
            f"study: {args.subjects} subjects, {n_visits} visits, size {args.size} "
            f"(written in {time.perf_counter() - t0:.1f} s); {os.cpu_count()} cores"
        )
        runs = {}
        for label, workers in (("serial", None), (f"dask x{args.workers}", args.workers)):
            out = root / label.replace(" ", "_")
            t0 = time.perf_counter()
            s = run_study(study, out, workers=workers, report=not args.no_report)
            wall = time.perf_counter() - t0
            runs[label] = (out, wall)
            print(f"{label:>10}: {wall:7.1f} s  ({len(s.done)} units, {len(s.failed)} failed)")
            for f in s.failed[:5]:
                print(f"            failed: {f}")
        (a_out, a_t), (b_out, b_t) = runs.values()
        print(f"speed-up: {a_t / b_t:.2f}x with {args.workers} workers")
        a, b = _tables(a_out), _tables(b_out)
        same = all(a[t].equals(b[t]) for t in TABLES)
        same_files = all(
            (a_out / p).read_bytes() == (b_out / p).read_bytes() for p in a["maps"]["path"]
        )
        print(f"identical tables: {same}; identical map files: {same_files}")


if __name__ == "__main__":
    main()
