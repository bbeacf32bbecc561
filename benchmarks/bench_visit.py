"""One visit of the large phantom: reading its images against processing it, in one run.

Writes the synthetic study at its largest size (128 × 128 × 30, ``tumorscope phantom --size
large``), keeps one subject and one visit (``--visit``, default the baseline: every step of
the pipeline applies to it), then runs, each in a fresh Python process:

* ``serial``: the process pinned to one core (``os.sched_setaffinity``), numba, BLAS and the
  fitting engine's thread pools on one thread;
* ``default``: as ``tumorscope run`` starts, every core available to the fits' threads and
  two units of the visit running at once where their requirements allow
  (``pipeline.execute.step_concurrency``; a one-subject study is one Dask task, so
  ``--workers`` would not add anything here);
* ``one-unit`` (on request, ``--modes``): the default mode with one unit at a time
  (``TUMORSCOPE_STEP_CONCURRENCY=1``), to measure what running two at once wins.

Inside each process, in this order:

1. ``cold``: the whole pipeline on that one-visit study (``run_study``: register, align, every
   fit, measure, assess, report) in a fresh output folder — the first visit a process runs,
   paying for the imports the run makes and for loading the compiled kernels from numba's
   cache;
2. ``warm``: the same again into another fresh folder — what every further visit of a cohort
   costs a worker (a trial's thousands of visits run in long-lived processes);
3. ``traced``: once more with ``tracemalloc`` on, for memory only: the peak of the numpy
   buffers (per step and overall; the resident high-water mark, ``ru_maxrss``, is taken
   around the cold run, being the process's). In the default mode two units of the visit
   may run at once (``pipeline.execute.step_concurrency``): a step's peak then includes what
   the unit beside it allocated, the overall peak is exact. Not timed: tracemalloc hooks every allocation and doubled the run's time
   (the figures of this benchmark before 2026-12-05 session 3 were timed under it);
4. the load of all the visit's images (every series as the pipeline reads it,
   ``Series.load``: float32, plus the lesion map), best of ``--load-repeats``.

Every process writes its own new folders, all kept until the benchmark ends (no deletion
between the timed runs: see ``_child``).

It prints the per-step durations of the cold and warm runs, the ratio processing / load of
each (target 1 of issue 21: ≤ 10), the serial / default speed-up, and the peak memory
against the largest series held in memory (float32; target 6: < 4×).

Run::

    python benchmarks/bench_visit.py [--repeats 2] [--study PATH] [--keep]

``--study`` reuses a large phantom written before (it is copied, not changed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import describe

_CHILD = r"""
import json, os, resource, sys, time, tracemalloc
mode, study, out, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if mode == "serial":
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
import numpy as np
import SimpleITK  # noqa: F401  (imported before the baseline: libraries are not the visit's)
import tumorscope.stages.relaxometry, tumorscope.stages.dce, tumorscope.stages.diffusion  # noqa
import tumorscope.report  # noqa: F401
from tumorscope.io import open_study
from tumorscope.io.mrs import read_nifti_mrs
from tumorscope.pipeline import run_study
from tumorscope.study import default_url, open_store

if mode == "serial":
    os.cpu_count = lambda: 1  # the fitting engine's thread pools
    import numba
    numba.set_num_threads(1)

def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

import tumorscope.pipeline.execute as _ex
import tumorscope.pipeline.runner as _runner

step_peak = {}  # per step: the numpy high-water mark above what was held when it started
step_held = {}  # per step: what was held when it started (arrays kept between steps)
_unit = _ex.execute_unit

def _traced_unit(step_name, *a, **k):
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    try:
        return _unit(step_name, *a, **k)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        step_peak[step_name] = max(step_peak.get(step_name, 0), peak - held, 0)
        step_held[step_name] = max(step_held.get(step_name, 0), held)
        overall[0] = max(overall[0], peak)
        tracemalloc.reset_peak()

_publish = _runner.publish
tracing = [False]

def _publish_timed(*a, **k):  # the study report: timed in every run, traced in the last
    held = tracemalloc.get_traced_memory()[0] if tracing[0] else 0
    if tracing[0]:
        tracemalloc.reset_peak()
    t = time.perf_counter()
    try:
        return _publish(*a, **k)
    finally:
        publish_s.append(time.perf_counter() - t)
        if tracing[0]:
            peak = tracemalloc.get_traced_memory()[1]
            step_peak["report (study)"] = max(peak - held, 0)
            overall[0] = max(overall[0], peak)
            tracemalloc.reset_peak()

_runner.publish = _publish_timed
publish_s = []

def _timed(folder):
    t = time.perf_counter()
    summary = run_study(study, folder, report=True)
    elapsed = time.perf_counter() - t
    assert not summary.failed, summary.failed
    return elapsed

base = rss_mb()  # the resident high-water mark is the process's: taken around the first run
run_s = _timed(out + "-cold")
peak = rss_mb()
warm_s = _timed(out + "-warm")
_ex.execute_unit = _traced_unit
overall = [0]
tracing[0] = True
tracemalloc.start()
summary = run_study(study, out, report=True)
np_peak = max(overall[0], tracemalloc.get_traced_memory()[1])
tracemalloc.stop()
assert not summary.failed, summary.failed
_ex.execute_unit = _unit

def _steps(folder):
    store = open_store(default_url(folder))
    try:
        runs = store.read_table("step_runs")
    finally:
        store.close()
    return {r.step: float(r.duration_s) for r in runs.itertuples() if r.status == "done"}

steps = _steps(out + "-cold")
steps["report (study)"] = publish_s[0]
warm_steps = _steps(out + "-warm")
warm_steps["report (study)"] = publish_s[1]

visit = next(iter(open_study(study).visits()))
largest = 0
load_s = []
for _ in range(repeats):
    t = time.perf_counter()
    for role, s in visit.series.items():
        if role in ("mrs", "mrs_water"):  # NIfTI-MRS: read as the metabolic step reads it
            largest = max(largest, read_nifti_mrs(s.path).data.nbytes)
            continue
        v = s.load()
        largest = max(largest, v.data.nbytes)
    visit.lesions.load_labels()
    load_s.append(time.perf_counter() - t)
print(json.dumps({"run_s": run_s, "warm_s": warm_s, "load_s": min(load_s), "steps": steps,
                  "warm_steps": warm_steps,
                  "rss_before_mb": base, "rss_peak_mb": peak,
                  "numpy_peak_mb": np_peak / 2**20, "largest_series_mb": largest / 2**20,
                  "step_peak_mb": {k: v / 2**20 for k, v in step_peak.items()},
                  "step_held_mb": {k: v / 2**20 for k, v in step_held.items()}}))
"""


def _one_visit_study(src: Path, dst: Path, visit: str) -> Path:
    """A copy of the large phantom reduced to its first subject and one visit."""
    import yaml

    man = yaml.safe_load((src / "study.yaml").read_text())
    subject = sorted(man["subjects"])[0]
    man["subjects"] = {subject: man["subjects"][subject]}
    visits = man["subjects"][subject]["visits"]
    man["subjects"][subject]["visits"] = {visit: visits[visit]}
    dst.mkdir(parents=True)
    (dst / "study.yaml").write_text(yaml.safe_dump(man, sort_keys=False))
    for part in (Path(f"sub-{subject}") / f"ses-{visit}",):
        shutil.copytree(src / part, dst / part)
    for sub in ("lesions", "truth"):
        part = Path("derivatives") / sub / f"sub-{subject}" / f"ses-{visit}"
        if (src / part).exists():
            shutil.copytree(src / part, dst / part)
    return dst


def _child(mode: str, study: Path, out: Path, repeats: int) -> dict:  # type: ignore[type-arg]
    # new folders for every child, nothing deleted before the end (as bench_pipeline.py): on
    # a journal-less ext4 (this project's build machines) files created within minutes of a
    # mass deletion cost ~1 ms of kernel CPU each instead of ~0.04 (docs/performance.md,
    # session 11); deleting the last child's ~1,100 files right before this one added that
    # to its visits
    for suffix in ("", "-cold", "-warm"):
        if Path(f"{out}{suffix}").exists():
            raise SystemExit(f"{out}{suffix} exists: every child writes new folders")
    env = dict(os.environ)
    # Python's compiled modules written and reused as on any install: a machine that sets
    # PYTHONDONTWRITEBYTECODE recompiles every module from source in every process (~0.2 s
    # of each cold run here); the untimed warm-up run writes them
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if mode == "serial":
        for k in (
            "NUMBA_NUM_THREADS",
            "OMP_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
            "MKL_NUM_THREADS",
            "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
        ):
            env[k] = "1"
    if mode == "one-unit":
        env["TUMORSCOPE_STEP_CONCURRENCY"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(study), str(out), str(repeats)],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode:
        sys.exit(f"{mode} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", type=Path, help="a large phantom written before")
    ap.add_argument("--visit", default="01")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each mode, alternated")
    ap.add_argument("--load-repeats", type=int, default=3)
    ap.add_argument(
        "--modes",
        default="serial,default",
        help="comma-separated modes to run (serial, default, one-unit); default the first two",
    )
    ap.add_argument("--no-warm-up", action="store_true", help="skip the untimed tiny run")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()

    print(describe())
    tmp = Path(tempfile.mkdtemp(prefix="bench_visit_"))
    try:
        src = args.study
        if src is None:
            from tumorscope.phantom import make_study

            t = time.perf_counter()
            src = make_study(tmp / "full", size="large", seed=0, n_subjects=1)
            print(f"large phantom written in {time.perf_counter() - t:.1f} s")
        study = _one_visit_study(Path(src), tmp / "study", args.visit)
        # an untimed run of the tiny phantom first: numba compiles the kernels a code change
        # invalidated and caches them on disk (otherwise the first timed run pays for it)
        if not args.no_warm_up:
            from tumorscope.phantom import make_study as _make

            warm = _make(tmp / "warm", size="tiny", seed=0, n_subjects=1)
            t = time.perf_counter()
            _child("default", _one_visit_study(warm, tmp / "warm-one", args.visit), tmp / "w", 1)
            print(f"warm-up run (tiny, untimed: numba's cache) {time.perf_counter() - t:.1f} s")
        modes = [m for m in ("serial", "default", "one-unit") if m in args.modes.split(",")]
        results: dict[str, list[dict]] = {m: [] for m in modes}  # type: ignore[type-arg]
        for r in range(args.repeats):
            for mode in modes if r % 2 == 0 else modes[::-1]:
                res = _child(mode, study, tmp / f"out-{mode}-{r + 1}", args.load_repeats)
                results[mode].append(res)
                print(
                    f"run {r + 1} {mode:<8} processing cold {res['run_s']:6.2f} s, warm "
                    f"{res['warm_s']:6.2f} s; load {res['load_s']:5.2f} s; ratio cold "
                    f"{res['run_s'] / res['load_s']:5.1f}, warm {res['warm_s'] / res['load_s']:5.1f}"
                )
        print(f"\nOne visit ({args.visit}) of the large phantom, {os.cpu_count()} CPUs (s):")
        cols = [(m, i, k) for m in results for i in range(len(results[m])) for k in ("c", "w")]
        print(f"{'step':<16}" + "".join(f"{f'{m[:3]} {i + 1} {k}':>10}" for m, i, k in cols))
        steps = list(results[modes[0]][0]["steps"])
        for s in steps:
            print(
                f"{s:<16}"
                + "".join(
                    f"{results[m][i]['steps' if k == 'c' else 'warm_steps'].get(s, float('nan')):>10.2f}"
                    for m, i, k in cols
                )
            )
        print("(c: cold, the first visit of a process; w: warm, the next one)")
        print("\nnumpy peak per step (MB above what was held when the step started):")
        for s in steps:
            print(
                f"{s:<16}"
                + "".join(
                    f"{res['step_peak_mb'].get(s, float('nan')):>12.0f}"
                    for m in results
                    for res in results[m]
                )
            )
        print("\nheld when the step started (MB; arrays kept alive between steps):")
        for s in steps:
            print(
                f"{s:<16}"
                + "".join(
                    f"{res.get('step_held_mb', {}).get(s, float('nan')):>12.0f}"
                    for m in results
                    for res in results[m]
                )
            )
        print()
        for mode, rs in results.items():
            for key, label in (("run_s", "cold"), ("warm_s", "warm")):
                print(
                    f"{mode:<8} {label} processing / load: "
                    + ", ".join(f"{r[key] / r['load_s']:.1f}" for r in rs)
                    + " (processing "
                    + ", ".join(f"{r[key]:.1f}" for r in rs)
                    + " s; load "
                    + ", ".join(f"{r['load_s']:.2f}" for r in rs)
                    + " s)"
                )
        for a, b in (("serial", "default"), ("one-unit", "default"), ("serial", "one-unit")):
            if a in results and b in results:
                for key, label in (("run_s", "cold"), ("warm_s", "warm")):
                    sp = [x[key] / y[key] for x, y in zip(results[a], results[b], strict=True)]
                    print(f"{a} / {b} ({label}): " + ", ".join(f"{v:.2f}" for v in sp))
        for mode, rs in results.items():
            for r in rs:
                print(
                    f"{mode:<8} memory: largest series {r['largest_series_mb']:.0f} MB (float32); "
                    f"numpy peak {r['numpy_peak_mb']:.0f} MB "
                    f"({r['numpy_peak_mb'] / r['largest_series_mb']:.2f}×); resident high-water "
                    f"{r['rss_peak_mb']:.0f} MB, {r['rss_peak_mb'] - r['rss_before_mb']:.0f} MB "
                    f"above the imports ({(r['rss_peak_mb'] - r['rss_before_mb']) / r['largest_series_mb']:.2f}×)"
                )
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
