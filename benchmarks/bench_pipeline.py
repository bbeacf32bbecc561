"""The study pipeline on one machine: serial against a local Dask cluster, in one run.

Writes a synthetic study of a few dozen subjects (``tumorscope.phantom``), then runs the
whole pipeline serially (in one process, one unit at a time: ``TUMORSCOPE_STEP_CONCURRENCY=1``,
as before units of a subject ran two at a time; the fits' own threads on every core) and on a
``LocalCluster`` of ``--workers`` processes, each run in a
fresh Python process into its own output folder, as a user would run ``tumorscope run STUDY``
and ``tumorscope run STUDY --workers N``. The two are run alternately ``--repeats`` times
(alternation spreads a slow spell of a shared machine over both); the wall time of each run
is measured from outside its process (interpreter start and imports included). Prints every
run, the median of each, the speed-up of the medians, and checks that the runs gave identical
tables (the database tables, row by row) and identical map files.

Run::

    python benchmarks/bench_pipeline.py [--subjects 24] [--size tiny] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from tumorscope.phantom import make_study
from tumorscope.study import default_url, open_store

TABLES = ("subjects", "visits", "series", "lesions", "maps", "measurements", "assessments")

_RUN = """
import sys
from tumorscope.pipeline import run_study
if __name__ == "__main__":
    workers = int(sys.argv[3]) or None
    s = run_study(sys.argv[1], sys.argv[2], workers=workers, report=sys.argv[4] == "1")
    print(len(s.done), len(s.failed))
"""


def _tables(out: Path) -> dict[str, pd.DataFrame]:
    store = open_store(default_url(out))
    try:
        return {t: store.read_table(t) for t in TABLES}
    finally:
        store.close()


def _run(
    script: Path, study: Path, out: Path, workers: int, report: bool, one_unit: bool = False
) -> tuple[float, str]:
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ)
    if one_unit:  # the serial baseline: one unit at a time (no two-at-a-time units)
        env["TUMORSCOPE_STEP_CONCURRENCY"] = "1"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(script), str(study), str(out), str(workers), "1" if report else "0"],
        capture_output=True,
        env=env,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({workers} workers):\n{proc.stderr[-3000:]}")
    done, failed = proc.stdout.split()[-2:]
    return wall, f"{done} units, {failed} failed"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=24)
    ap.add_argument("--size", default="tiny", choices=("tiny", "default", "large"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-report", action="store_true", help="leave the HTML reports out")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        script = root / "run_one.py"
        script.write_text(_RUN)
        t0 = time.perf_counter()
        study = make_study(root / "study", size=args.size, seed=0, n_subjects=args.subjects)
        n_visits = sum(1 for _ in study.glob("sub-*/ses-*"))
        load = os.getloadavg()[0]
        print(
            f"study: {args.subjects} subjects, {n_visits} visits, size {args.size} "
            f"(written in {time.perf_counter() - t0:.1f} s); {os.cpu_count()} cores; "
            f"load average {load:.2f}"
        )
        label_d = f"dask x{args.workers}"
        walls: dict[str, list[float]] = {"serial": [], label_d: []}
        outs = {"serial": root / "serial", label_d: root / "dask"}
        for i in range(args.repeats):
            for label, workers in (("serial", 0), (label_d, args.workers)):
                wall, what = _run(
                    script, study, outs[label], workers, not args.no_report, label == "serial"
                )
                walls[label].append(wall)
                print(f"  run {i + 1} {label:>8}: {wall:6.1f} s  ({what})", flush=True)
        med = {k: statistics.median(v) for k, v in walls.items()}
        ratios = [a / b for a, b in zip(walls["serial"], walls[label_d], strict=True)]
        print(
            f"median serial {med['serial']:.1f} s, {label_d} {med[label_d]:.1f} s: "
            f"speed-up {med['serial'] / med[label_d]:.2f}x with {args.workers} workers "
            f"(pairwise {min(ratios):.2f}-{max(ratios):.2f}x); "
            f"load average now {os.getloadavg()[0]:.2f}"
        )
        a, b = _tables(outs["serial"]), _tables(outs[label_d])
        same = all(a[t].equals(b[t]) for t in TABLES)
        same_files = all(
            (outs["serial"] / p).read_bytes() == (outs[label_d] / p).read_bytes()
            for p in a["maps"]["path"]
        )
        print(f"identical tables: {same}; identical map files: {same_files}")


if __name__ == "__main__":
    main()
