"""The ``metabolic``, ``pet`` and ``measure`` steps of the large visit: this tree against another.

Issue 21's large visit (128 × 128 × 30, every modality). Each side runs in its own Python
process with ``PYTHONPATH=<src>`` of its tree: ``--old`` (default ``/work/main/src``) and
``--new`` (default: the ``src`` of the tree holding this file); the sides alternate,
``--repeats`` times each. In a process, on a copy of a finished run (``--out``; made first
with the new tree when missing), each step is forced three times (``run_study(force=[step])``:
every other step is up to date and skipped); the figures are of the last two runs (warm:
imports made, kernels loaded), best of them: the step's duration (``step_runs``) and its CPU
seconds (the process's CPU time of that run less that of a run with nothing forced).

``--threads 1`` (default): serial, one thread (the process pinned to one core; numba, BLAS
and the fitting engine on one thread): the CPU seconds are the figure that counts on a shared
machine. ``--threads 2``: numba on two threads, not pinned, as the default mode runs the
memory-exclusive steps (``metabolic``, ``measure``) alone on the machine: the wall time counts.

The outputs are compared too (the last repeat's folders): every map of the steps, old against
new, by the median / 99th percentile / maximum absolute difference over the voxels finite in
both (and whether the NaN patterns agree); the steps' tables by their largest relative
difference.

Run::

    python benchmarks/bench_light_steps.py [--repeats 2] [--threads 1] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

STEPS = ("metabolic", "pet", "measure")

_SERIAL = r"""
import os, sys
os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
os.environ["TUMORSCOPE_STEP_CONCURRENCY"] = "1"
os.cpu_count = lambda: 1
import numba
numba.set_num_threads(1)
from threadpoolctl import threadpool_limits
threadpool_limits(1)
"""

_TWO = r"""
import os
os.environ["TUMORSCOPE_STEP_CONCURRENCY"] = "1"
import numba
numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
"""

_STEPS = r"""
import json, shutil, sys, time
from pathlib import Path
from tumorscope.pipeline import run_study
from tumorscope.study import default_url, open_store
study, src, dst = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
steps = sys.argv[4].split(",")
shutil.rmtree(dst, ignore_errors=True)
shutil.copytree(src, dst)
def cpu_of(force):
    c = time.process_time()
    run_study(Path(study), dst, force=force, report=False)
    return time.process_time() - c
noop = min(cpu_of([]) for _ in range(3))  # every step up to date: the run's own cost
res = {"noop_cpu": noop}
for step in steps:
    cpu, wall = [], []
    for k in range(3):
        c = cpu_of([step])
        store = open_store(default_url(dst))
        runs = store.read_table("step_runs")
        store.close()
        mine = runs[runs.step == step]
        assert mine.status.iloc[-1] == "done", mine.iloc[-1].to_dict()
        if k:
            cpu.append(c - noop)
            wall.append(float(mine.duration_s.iloc[-1]))
    res[step] = min(wall)
    res[step + "_cpu"] = min(cpu)
print(json.dumps(res))
"""


def _run(src: Path, prelude: str, *args: str, code: str = _STEPS) -> dict:  # type: ignore[type-arg]
    """Run ``prelude + code`` (default: the forced steps) in a fresh process with
    ``PYTHONPATH=src``; its last output line, JSON. Shared with ``bench_io_steps.py``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    if prelude is _SERIAL:
        env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", prelude + code, *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({src}):\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def print_ratios(results: dict[str, list[dict]], keys: Sequence[str]) -> None:  # type: ignore[type-arg]
    """Per key, wall and CPU: the best of the repeats of each side, old / new, and the ratio
    of each repeat (shared with ``bench_io_steps.py``)."""
    for key in keys:
        for kind in ("", "_cpu"):
            o = min(r[key + kind] for r in results["old"])
            n = min(r[key + kind] for r in results["new"])
            per = [
                f"{a[key + kind] / b[key + kind]:.2f}"
                for a, b in zip(results["old"], results["new"], strict=True)
            ]
            label = f"{key} ({'CPU' if kind else 'wall'})"
            print(f"  {label:20s} old {o:7.3f}  new {n:7.3f}  ratio {o / n:5.2f}  {per}")


def compare_outputs(a: Path, b: Path, stamp_after: float) -> list[str]:
    """Lines describing the maps and tables written by the forced steps (modified after
    ``stamp_after`` in ``a``) that differ between the two output folders."""
    import numpy as np
    import pandas as pd

    from tumorscope.volume import Volume

    lines = []
    counts = {"maps": 0, "tables": 0}
    for fa in sorted(a.rglob("*")):
        rel = fa.relative_to(a)
        fb = b / rel
        if not fb.is_file() or "logs" in rel.parts or fa.stat().st_mtime < stamp_after:
            continue
        if fa.name.endswith(".nii.gz"):
            counts["maps"] += 1
            x = Volume.from_nifti(fa, dtype=np.float64).data
            y = Volume.from_nifti(fb, dtype=np.float64).data
            if np.array_equal(x, y, equal_nan=True):
                continue
            ok = np.isfinite(x) & np.isfinite(y)
            d = np.abs(x[ok] - y[ok])
            nan_same = bool(np.array_equal(np.isnan(x), np.isnan(y)))
            lines.append(
                f"{rel.name}: |old - new| median {np.median(d):.3g} p99 "
                f"{np.percentile(d, 99):.3g} max {d.max():.3g} over {ok.sum()} voxels "
                f"({int((d > 0).sum())} differ; NaN pattern {'same' if nan_same else 'DIFFERS'})"
            )
        elif fa.suffix == ".parquet" and rel.parts[0] != "tables":
            counts["tables"] += 1
            x, y = pd.read_parquet(fa), pd.read_parquet(fb)
            if x.equals(y):
                continue
            rest = [c for c in x.columns if c != "value"]
            if "value" in x.columns and len(x) == len(y) and x[rest].equals(y[rest]):
                va, vb = x["value"].to_numpy(float), y["value"].to_numpy(float)
                ok = np.isfinite(va) & np.isfinite(vb)
                r = np.abs(va[ok] - vb[ok]) / np.maximum(np.abs(va[ok]), 1e-300)
                nan_same = bool(np.array_equal(np.isnan(va), np.isnan(vb)))
                lines.append(
                    f"{rel.name}: values within {r.max():.2g} relative ({int((r > 0).sum())} "
                    f"of {ok.sum()} differ; NaN pattern {'same' if nan_same else 'DIFFERS'})"
                )
            else:
                lines.append(f"{rel.name}: rows or columns DIFFER")
    lines.append(
        f"({counts['maps']} maps and {counts['tables']} tables written by the steps compared)"
    )
    return lines


def main() -> None:
    here = Path(__file__).resolve().parents[1] / "src"
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", type=Path, default=Path("/work/main/src"))
    ap.add_argument("--new", type=Path, default=here)
    ap.add_argument("--study", type=Path, default=Path("/work/s3/visit1"))
    ap.add_argument("--out", type=Path, default=None, help="a finished run of --study")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, choices=(1, 2), default=1)
    ap.add_argument("--steps", default=",".join(STEPS))
    args = ap.parse_args()
    prelude = _SERIAL if args.threads == 1 else _TWO
    tmp = Path(tempfile.mkdtemp(prefix="bench-light-steps-"))
    out = args.out
    if out is None:
        out = tmp / "run"
        code = "import sys\nfrom pathlib import Path\nfrom tumorscope.pipeline import run_study\n"
        code += "run_study(Path(sys.argv[1]), Path(sys.argv[2]), report=False)\nprint('{}')\n"
        proc = subprocess.run(
            [sys.executable, "-c", code, str(args.study), str(out)],
            env={**os.environ, "PYTHONPATH": str(args.new)},
            check=True,
            capture_output=True,
        )
        del proc
    steps = args.steps.split(",")
    results: dict[str, list[dict]] = {"old": [], "new": []}  # type: ignore[type-arg]
    import time

    stamp = time.time()
    try:
        for rep in range(args.repeats):
            for side in ("old", "new"):
                src = args.old if side == "old" else args.new
                load = _load()
                st = _run(src, prelude, str(args.study), str(out), str(tmp / side), args.steps)
                results[side].append({**st, "load": load})
                print(f"repeat {rep + 1} {side}: load {load} {json.dumps(st)}", flush=True)
        print(
            f"\nOld {args.old} / new {args.new}, {args.threads} thread(s): seconds (best of the "
            "repeats), ratio old/new per repeat"
        )
        print("  wall: the step's own duration (step_runs); CPU: the process's CPU seconds")
        print_ratios(results, steps)
        diff = compare_outputs(tmp / "old", tmp / "new", stamp)
        print("  outputs of the steps:", "identical" if len(diff) == 1 else "")
        for line in diff:
            print("   ", line)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
