"""A fresh install's first ``tumorscope demo``: with and without the numba kernel warm-up.

Each run is ``python -m tumorscope demo --workers N --size SIZE`` in its own process, on an
empty numba cache (its own ``NUMBA_CACHE_DIR``: a fresh install, nobody else's cache touched),
once with the kernel warm-up (:mod:`tumorscope._compile`: the workers share the compilation
under per-kernel file locks) and once without it (``TUMORSCOPE_KERNEL_WARM_UP=0``: every worker
compiles every kernel at its first call, as before), alternately over ``--repeats``. The
wall time and the CPU time (user + system of the demo and its worker processes) are measured
from outside; the ratios warm-up / baseline are printed per size. Then both are run once more
on the cache the last run left (warm): the warm-up must not make a warm run slower.

``--check`` instead runs, in one process on an empty cache, the warm-up and then a serial run
of a tiny one-subject study, recording every compilation with numba's event API: after the
warm-up the run should compile nothing (a kernel or signature missing from ``KERNELS`` shows
up here). ``--record`` runs the tiny demo study serially on an empty cache and prints every
kernel compiled from Python (top level) with its signatures and seconds: the source of the
table ``KERNELS``.

Run::

    python benchmarks/bench_first_run.py [--sizes tiny,default] [--workers 2] [--repeats 1]
    python benchmarks/bench_first_run.py --check
    python benchmarks/bench_first_run.py --record
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _demo(size: str, workers: int, cache: Path, out: Path, warm_up: bool) -> tuple[float, float]:
    """Wall and CPU seconds of one ``tumorscope demo`` (interpreter start included)."""
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ)
    env["NUMBA_CACHE_DIR"] = str(cache)
    env["TUMORSCOPE_KERNEL_WARM_UP"] = "1" if warm_up else "0"
    cmd = [sys.executable, "-m", "tumorscope", "demo", "--out", str(out), "--size", size]
    c0, t0 = _cpu(), time.perf_counter()
    proc = subprocess.run(
        [*cmd, "--workers", str(workers)], capture_output=True, text=True, env=env, check=False
    )
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    if proc.returncode != 0:
        raise SystemExit(f"demo failed ({size}, warm-up {warm_up}):\n{proc.stdout[-3000:]}")
    return wall, cpu


def bench(sizes: list[str], workers: int, repeats: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench_first_run_"))
    try:
        for size in sizes:
            res: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            last: Path | None = None
            for r in range(repeats):
                for warm in (False, True) if r % 2 == 0 else (True, False):
                    cache = Path(tempfile.mkdtemp(prefix="numba-", dir=tmp))
                    load = _load()
                    wall, cpu = _demo(size, workers, cache, tmp / "out", warm)
                    res[warm].append((wall, cpu))
                    name = "warm-up " if warm else "baseline"
                    print(
                        f"{size:8s} fresh cache  {name}  wall {wall:6.1f} s  CPU {cpu:6.1f} s"
                        f"   (load before: {load})",
                        flush=True,
                    )
                    last = cache
            base_w = statistics.median(w for w, _ in res[False])
            base_c = statistics.median(c for _, c in res[False])
            new_w = statistics.median(w for w, _ in res[True])
            new_c = statistics.median(c for _, c in res[True])
            print(
                f"{size:8s} FIRST RUN warm-up / baseline: wall {new_w / base_w:.2f}x "
                f"({new_w:.1f} / {base_w:.1f} s), CPU {new_c / base_c:.2f}x "
                f"({new_c:.1f} / {base_c:.1f} s)",
                flush=True,
            )
            assert last is not None
            warm_res = {}
            for warm in (False, True):
                load = _load()
                warm_res[warm] = _demo(size, workers, last, tmp / "out", warm)
                name = "warm-up " if warm else "baseline"
                w, c = warm_res[warm]
                print(
                    f"{size:8s} warm cache   {name}  wall {w:6.1f} s  CPU {c:6.1f} s"
                    f"   (load before: {load})",
                    flush=True,
                )
            (bw, bc), (nw, nc) = warm_res[False], warm_res[True]
            print(
                f"{size:8s} WARM RUN warm-up / baseline: wall {nw / bw:.2f}x, CPU {nc / bc:.2f}x",
                flush=True,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_CHILD = r"""
import json, sys, tempfile, time
from pathlib import Path
from numba.core import event

mode, work = sys.argv[1], Path(sys.argv[2])
stack, records = [], []


class Listener(event.Listener):
    def on_start(self, ev):
        stack.append((ev.data["dispatcher"], ev.data["args"], time.perf_counter()))

    def on_end(self, ev):
        d, args, t0 = stack.pop()
        if not stack:  # compiled from Python (not inside another kernel's compilation)
            records.append((d, tuple(args), time.perf_counter() - t0))


from tumorscope._compile import warm_kernels
from tumorscope.phantom import make_study
from tumorscope.pipeline import run_study

study = make_study(work / "study", size="tiny", seed=0, n_subjects=None)
if mode == "check":
    t = time.perf_counter()
    rep = warm_kernels(locks=work / "locks")
    print(f"warm-up: {len(rep.warmed)} kernels/modules in {time.perf_counter() - t:.1f} s, "
          f"{len(rep.compiled)} compiled, failed: {rep.failed or 'none'}")
event.register("numba:compile", Listener())
t = time.perf_counter()
s = run_study(study, work / "out", report=True)
print(f"run: {len(s.done)} units, {len(s.failed)} failed, {time.perf_counter() - t:.1f} s")
for d, args, sec in records:
    eager = not d._can_compile
    print(json.dumps({"module": d.py_func.__module__, "name": d.py_func.__name__,
                      "args": repr(args), "seconds": round(sec, 2), "eager": eager}))
print(f"compiled from Python during the run: {len(records)} "
      f"({sum(x[2] for x in records):.1f} s)")
"""


def child(mode: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench_first_run_{mode}_"))
    try:
        env = dict(os.environ)
        env["NUMBA_CACHE_DIR"] = str(tmp / "numba")
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, mode, str(tmp)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        print(proc.stdout)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        if mode == "check" and "compiled from Python during the run: 0 " not in proc.stdout:
            raise SystemExit("the run compiled kernels the warm-up did not: update KERNELS")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="tiny,default")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--check", action="store_true", help="warm-up, then a run compiles nothing")
    ap.add_argument("--record", action="store_true", help="print what a demo run compiles")
    args = ap.parse_args()
    if args.check or args.record:
        child("check" if args.check else "record")
        return
    print(f"{os.cpu_count()} CPUs; load {_load()}", flush=True)
    bench([s for s in args.sizes.split(",") if s], args.workers, args.repeats)


if __name__ == "__main__":
    main()
