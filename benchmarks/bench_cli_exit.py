"""A command's exit: ``tumorscope run`` with the garbage collector skipped at exit (the
default, ``tumorscope._exit``) against with it (``TUMORSCOPE_EXIT_GC=1``), alternated.

Writes a tiny study (``--subjects``, default 4), then runs ``tumorscope run`` on it serially
and with ``--workers 2``, each run a fresh process, the two settings alternated ``--repeats``
times. Per run it prints the wall time of the command, the seconds from its last log line to
the process's exit (the teardown), and, for the Dask runs, the seconds from the last subject's
unit recorded to the tables exported (the export shares the cores with the workers'
teardown); then the medians and their ratios, and whether both settings wrote the same tables.

Run::

    python benchmarks/bench_cli_exit.py --subjects 4 --repeats 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _machine import describe
from bench_pipeline import TABLES, _tables
from tumorscope.phantom import make_study


def _stamp(line: str) -> float:
    return dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _run(study: Path, out: Path, workers: int, exit_gc: bool) -> dict[str, float]:
    env = dict(os.environ, TUMORSCOPE_EXIT_GC="1" if exit_gc else "0")
    cmd = ["tumorscope", "run", str(study), "--out", str(out), "--no-report"]
    if workers:
        cmd += ["--workers", str(workers)]
    t0 = time.time()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    end = time.time()
    log = sorted((out / "logs").glob("*.log"))[-1].read_text().strip().splitlines()
    units = [ln for ln in log if " done: " in ln and "report study" not in ln]
    exported = next(ln for ln in log if "done: report study" in ln)
    return {
        "wall": end - t0,
        "teardown": end - _stamp(log[-1]),
        "export": _stamp(exported) - _stamp(units[-1]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subjects", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(describe())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        study = make_study(root / "study", size="tiny", seed=0, n_subjects=args.subjects)
        _run(study, root / "warm-up", 0, False)  # numba's cache, Python's bytecode
        results: dict[tuple[int, bool], list[dict[str, float]]] = {}
        for r in range(args.repeats):
            for workers in (0, 2):
                order = (False, True) if r % 2 == 0 else (True, False)
                for exit_gc in order:
                    out = root / f"out-{workers}-{int(exit_gc)}-{r}"
                    res = _run(study, out, workers, exit_gc)
                    results.setdefault((workers, exit_gc), []).append(res)
                    mode = f"--workers {workers}" if workers else "serial"
                    setting = "collector at exit" if exit_gc else "skipped at exit"
                    print(
                        f"run {r + 1} {mode:<11} {setting:<18} wall {res['wall']:6.2f} s, "
                        f"teardown {res['teardown']:5.2f} s, last unit -> exported "
                        f"{res['export']:5.2f} s"
                    )
        print()
        for workers in (0, 2):
            mode = f"--workers {workers}" if workers else "serial"
            for key in ("wall", "teardown", "export"):
                new = statistics.median(x[key] for x in results[(workers, False)])
                old = statistics.median(x[key] for x in results[(workers, True)])
                print(
                    f"{mode:<11} {key:<9} median: skipped {new:6.2f} s, collector {old:6.2f} s "
                    f"({old / new:5.2f}x)"
                )
        same = True
        for w in (0, 2):
            a, b = _tables(root / f"out-{w}-0-0"), _tables(root / f"out-{w}-1-0")
            same = same and all(a[t].equals(b[t]) for t in TABLES)
        print(f"same tables with and without the collector at exit: {same}")


if __name__ == "__main__":
    main()
