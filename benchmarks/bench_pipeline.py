"""The study pipeline on one machine: serial against a local Dask cluster, in one run.

Writes a synthetic study of a few dozen subjects (``tumorscope.phantom``), then runs the
whole pipeline serially (in one process, one unit at a time: ``TUMORSCOPE_STEP_CONCURRENCY=1``,
as before units of a subject ran two at a time; the fits' own threads on every core) and on a
``LocalCluster`` of ``--workers`` processes, each run in a
fresh Python process into its own output folder, as a user would run ``tumorscope run STUDY``
and ``tumorscope run STUDY --workers N``. The two are run alternately ``--repeats`` times
(alternation spreads a slow spell of a shared machine over both); the wall time of each run
is measured from outside its process (interpreter start and imports included). Prints every
run, the median of each, the speed-up of the medians, and checks every run against the first
serial run, right after it (every run writes a new folder, all kept until the end: see
``_run``): identical
tables (the database tables, row by row) and identical map files, and where they are not,
which tables, columns and rows and which map files differ (session 9 saw one Dask run of 24
differ and could not tell how: only each mode's last output was compared then).

Each run also reports its CPU seconds: the client's process (imports, planning, recording,
publishing and, in a Dask run, the scheduler and nannies on its event loop) and its child
processes (the Dask workers). With ``--peer-src DIR`` the same runs are made with the
``tumorscope`` of another source tree (``PYTHONPATH=DIR``, e.g. ``/work/main/src``),
alternated with this tree's, and its tables are checked against this tree's too.

Before the runs, each tree's ``tumorscope`` package is byte-compiled (``compileall``), as
``pip install`` does for an installed package: an editable install on a machine that sets
``PYTHONDONTWRITEBYTECODE`` (this one does) never caches the bytecode, and every process —
the client and each Dask worker — then compiled the package's sources at import (~0.3–0.5 s
each; three processes in a Dask run, one in a serial run), which a user's install does not.

Run::

    python benchmarks/bench_pipeline.py [--subjects 24] [--size tiny] [--workers 2] [--repeats 3]
        [--peer-src /work/main/src]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from _machine import describe
from tumorscope.phantom import make_study
from tumorscope.study import default_url, open_store

TABLES = ("subjects", "visits", "series", "lesions", "maps", "measurements", "assessments")

_RUN = """
import resource
import sys
from tumorscope.pipeline import run_study
if __name__ == "__main__":
    workers = int(sys.argv[3]) or None
    s = run_study(sys.argv[1], sys.argv[2], workers=workers, report=sys.argv[4] == "1")
    me = resource.getrusage(resource.RUSAGE_SELF)
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (me.ru_utime + me.ru_stime, ch.ru_utime + ch.ru_stime)
    print(len(s.done), len(s.failed), f"{cpu[0]:.2f}", f"{cpu[1]:.2f}")
"""


def _tables(out: Path) -> dict[str, pd.DataFrame]:
    store = open_store(default_url(out))
    try:
        return {t: store.read_table(t) for t in TABLES}
    finally:
        store.close()


def _differences(ref_out: Path, ref: dict[str, pd.DataFrame], out: Path) -> list[str]:
    """What differs between a run's output and the reference run's: per table the columns
    and the number of rows that differ (or the shapes), and the map files whose bytes
    differ (the first three named)."""
    found = []
    other = _tables(out)
    for t in TABLES:
        a, b = ref[t], other[t]
        if a.equals(b):
            continue
        if a.shape != b.shape or list(a.columns) != list(b.columns):
            found.append(f"table {t}: shape {a.shape} vs {b.shape}")
            continue
        diff = a.compare(b)
        cols = sorted({c[0] for c in diff.columns})
        found.append(f"table {t}: {len(diff)} rows differ in {', '.join(map(str, cols))}")
    files = [p for p in ref["maps"]["path"] if (ref_out / p).read_bytes() != (out / p).read_bytes()]
    if files:
        found.append(f"{len(files)} map files differ ({', '.join(files[:3])})")
    return found


def _run(
    script: Path,
    study: Path,
    out: Path,
    workers: int,
    report: bool,
    one_unit: bool = False,
    src: str | None = None,
) -> tuple[float, str]:
    # a new folder for every run, nothing deleted before the end: on a journal-less ext4
    # (this project's build machines) files created within minutes of a mass deletion cost
    # ~1 ms of kernel CPU each instead of ~0.04 (docs/performance.md, session 11), which
    # deleting the previous run's few thousand files right before this one would add to it
    if out.exists():
        raise SystemExit(f"{out} exists: every run writes a new folder")
    env = dict(os.environ)
    if src is not None:  # another source tree's tumorscope
        env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
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
    done, failed, client, children = proc.stdout.split()[-4:]
    return wall, f"{done} units, {failed} failed; CPU s: client {client}, workers {children}"


def _byte_compile(src: str | None) -> None:
    """Byte-compile the ``tumorscope`` package of a source tree (this one's: None)."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import tumorscope, os; print(os.path.dirname(tumorscope.__file__))",
        ],
        capture_output=True,
        env=env,
        text=True,
        check=True,
    ).stdout.strip()
    subprocess.run([sys.executable, "-m", "compileall", "-q", where], check=True, env=env)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=24)
    ap.add_argument("--size", default="tiny", choices=("tiny", "default", "large"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-report", action="store_true", help="leave the HTML reports out")
    ap.add_argument("--peer-src", help="also run the tumorscope of this source tree (alternated)")
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
        print(describe())
        for src in (None, args.peer_src) if args.peer_src else (None,):
            _byte_compile(src)
        label_d = f"dask x{args.workers}"
        trees: list[tuple[str, str | None]] = [("", None)]
        if args.peer_src:
            trees.append(("peer ", args.peer_src))
        walls: dict[str, list[float]] = {}
        outs: dict[str, Path] = {}
        reference: tuple[Path, dict[str, pd.DataFrame]] | None = None  # the first serial run
        differing: list[str] = []
        for i in range(args.repeats):
            for tree, src in trees:
                for mode, workers in (("serial", 0), (label_d, args.workers)):
                    label = tree + mode
                    first = reference is None
                    outs[label] = root / (
                        "reference" if first else f"{label.replace(' ', '_')}-{i + 1}"
                    )
                    wall, what = _run(
                        script,
                        study,
                        outs[label],
                        workers,
                        not args.no_report,
                        mode == "serial",
                        src,
                    )
                    walls.setdefault(label, []).append(wall)
                    print(
                        f"  run {i + 1} {label:>13}: {wall:6.1f} s  ({what}); "
                        f"load {os.getloadavg()[0]:.2f}",
                        flush=True,
                    )
                    if reference is None:
                        reference = (outs[label], _tables(outs[label]))
                        continue
                    # every run against the first serial one, while its output still exists
                    found = _differences(reference[0], reference[1], outs[label])
                    if found:
                        differing.append(f"run {i + 1} {label}")
                        print(f"    differs from the first serial run: {'; '.join(found)}")
        for tree, _ in trees:
            ser, dsk = walls[tree + "serial"], walls[tree + label_d]
            med_s, med_d = statistics.median(ser), statistics.median(dsk)
            ratios = [a / b for a, b in zip(ser, dsk, strict=True)]
            print(
                f"{tree or 'this '}tree: median serial {med_s:.1f} s, {label_d} {med_d:.1f} s: "
                f"speed-up {med_s / med_d:.2f}x with {args.workers} workers "
                f"(pairwise {min(ratios):.2f}-{max(ratios):.2f}x); "
                f"load average now {os.getloadavg()[0]:.2f}"
            )
        n_runs = sum(len(w) for w in walls.values()) - 1
        print(
            f"identical tables and map files to the first serial run: "
            f"{n_runs - len(differing)} of {n_runs} runs"
            + (f" (differing: {', '.join(differing)})" if differing else "")
        )


if __name__ == "__main__":
    main()
