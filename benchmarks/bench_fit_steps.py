"""``fit_relax``, ``fit_dce`` and ``fit_dwi`` of one visit: this code against a peer checkout.

Runs the three stage functions the pipeline's steps call (``fit_relaxometry``,
``fit_dce_visit``, ``fit_dwi_series``, with the pipeline's default options) on one visit,
serially on one core and one thread (the process pinned to one core, numba and the fitting
engine's thread pools on one thread, as ``bench_visit.py``'s serial mode), in fresh Python
processes that alternate between a peer source tree (``--peer-src``, e.g. a checkout of
``main``) and this one (``--src``, default the tree this script belongs to). Each process
runs every step once untimed (imports, kernels loaded from numba's cache), then
``--warm`` times, recording wall-clock and CPU time (``time.process_time``) per step. CPU
time is the figure to compare on a shared machine: with one thread it is the work done,
while the wall clock also counts the time the process waited for a core (recorded with the
load average beside each run).

It then compares the maps the two trees wrote (last run of each): per map, the largest and
the 99th percentile absolute difference over the voxels finite in both, relative to the
peer map's 99th percentile magnitude, and the voxels finite in only one of them.

Run::

    python benchmarks/bench_fit_steps.py --study /path/to/one-visit-study --peer-src /work/main/src

``--study``: any study (e.g. a one-visit copy of the large phantom, ``tumorscope phantom
--size large``); its first visit (or ``--subject`` / ``--visit``) is fitted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = r"""
import json, os, shutil, sys, time
os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
os.environ["TUMORSCOPE_STEP_CONCURRENCY"] = "1"
os.cpu_count = lambda: 1
import numba
numba.set_num_threads(1)
import warnings
warnings.simplefilter("ignore")
from pathlib import Path
from tumorscope.io.study import open_study
from tumorscope.stages.base import SeriesInput
from tumorscope.stages.dce import DCEOptions, fit_dce_visit
from tumorscope.stages.diffusion import DWIOptions, fit_dwi_series
from tumorscope.stages.relaxometry import RELAXOMETRY_ROLES, RelaxometryOptions, fit_relaxometry

study_path, out, subject, visit_id, warm = sys.argv[1:6]
study = open_study(study_path)
visit = next(
    v for v in study.visits()
    if (not subject or v.subject_id == subject) and (not visit_id or v.id == visit_id)
)
prefix = f"sub-{visit.subject_id}_ses-{visit.id}_"


def relax(d):
    series = {r: SeriesInput.of(s) for r, s in visit.series.items() if r in RELAXOMETRY_ROLES}
    fit_relaxometry(series, out_dir=d, prefix=prefix, options=RelaxometryOptions(region="body"))


def dce(d):
    fit_dce_visit(visit, out_dir=d, options=DCEOptions(model="extended_tofts", aif="parker"))


def dwi(d):
    fit_dwi_series(SeriesInput.of(visit.series["dwi"]), out_dir=d, models=("adc", "ivim"),
                   prefix=prefix, options=DWIOptions(region="body"))


steps = {"fit_relax": relax, "fit_dce": dce, "fit_dwi": dwi}
res = {k: {"wall": [], "cpu": []} for k in steps}
for rep in range(1 + int(warm)):
    for name, fn in steps.items():
        d = Path(out) / name
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        t, c = time.perf_counter(), time.process_time()
        fn(d)
        if rep:
            res[name]["wall"].append(time.perf_counter() - t)
            res[name]["cpu"].append(time.process_time() - c)
print(json.dumps(res))
"""


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _run(src: Path, study: Path, out: Path, args: argparse.Namespace) -> dict:  # type: ignore[type-arg]
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-c", _CHILD, str(study), str(out), args.subject, args.visit]
    proc = subprocess.run(
        [*cmd, str(args.warm)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _compare_maps(peer: Path, this: Path) -> list[tuple[str, float, float, int]]:
    """Per map written by both: max and 99th percentile |difference| / the peer's 99th
    percentile |value|, and the voxels finite in only one of the two."""
    import nibabel as nib
    import numpy as np

    rows = []
    for a in sorted(peer.rglob("*.nii.gz")):
        b = this / a.relative_to(peer)
        if not b.exists():
            rows.append((str(a.relative_to(peer)), np.nan, np.nan, -1))
            continue
        x = np.asarray(nib.load(a).dataobj, dtype=np.float64)
        y = np.asarray(nib.load(b).dataobj, dtype=np.float64)
        fx, fy = np.isfinite(x), np.isfinite(y)
        both = fx & fy
        scale = float(np.percentile(np.abs(x[both]), 99)) if both.any() else 1.0
        d = np.abs(x[both] - y[both]) / (scale if scale > 0 else 1.0)
        rows.append(
            (
                str(a.relative_to(peer)),
                float(d.max()) if d.size else 0.0,
                float(np.percentile(d, 99)) if d.size else 0.0,
                int((fx != fy).sum()),
            )
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", type=Path, required=True)
    ap.add_argument("--peer-src", type=Path, required=True, help="the other tree's src/")
    ap.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src")
    ap.add_argument("--subject", default="")
    ap.add_argument("--visit", default="")
    ap.add_argument("--repeats", type=int, default=2, help="processes per tree, alternated")
    ap.add_argument("--warm", type=int, default=2, help="timed runs of each step per process")
    ap.add_argument("--out", type=Path, help="keep the maps here (default: a temporary folder)")
    args = ap.parse_args()
    base = args.out or Path(tempfile.mkdtemp(prefix="bench_fit_steps_"))
    trees = {"peer": args.peer_src, "this": args.src}
    results: dict[str, list[dict]] = {"peer": [], "this": []}  # type: ignore[type-arg]
    for r in range(args.repeats):
        for name, src in trees.items():
            load = _load()
            res = _run(src, args.study, base / name, args)
            results[name].append(res)
            cells = "  ".join(
                f"{s} wall {'/'.join(f'{x:.2f}' for x in v['wall'])} "
                f"cpu {'/'.join(f'{x:.2f}' for x in v['cpu'])}"
                for s, v in res.items()
            )
            print(f"run {r + 1} {name:4s} (load {load}): {cells}", flush=True)
    print(f"\nmedian over {args.repeats} processes x {args.warm} warm runs (s), peer / this:")
    print(
        f"{'step':10s} {'peer cpu':>9s} {'this cpu':>9s} {'ratio':>6s}   "
        f"{'peer wall':>9s} {'this wall':>9s} {'ratio':>6s}"
    )
    for step in results["this"][0]:
        med = {
            (t, k): statistics.median(x for res in results[t] for x in res[step][k])
            for t in trees
            for k in ("cpu", "wall")
        }
        print(
            f"{step:10s} {med['peer', 'cpu']:9.2f} {med['this', 'cpu']:9.2f} "
            f"{med['peer', 'cpu'] / med['this', 'cpu']:5.2f}x   {med['peer', 'wall']:9.2f} "
            f"{med['this', 'wall']:9.2f} {med['peer', 'wall'] / med['this', 'wall']:5.2f}x"
        )
    print("\nmaps (|this - peer| / 99th percentile |peer|; voxels finite in one only):")
    rows = _compare_maps(base / "peer", base / "this")
    for name, mx, p99, nf in rows:
        if nf < 0:
            print(f"  {name}: only in the peer's output")
        elif mx > 0 or nf:
            print(f"  {name}: max {mx:.2e}  p99 {p99:.2e}  finite-mismatch {nf}")
    same = sum(1 for _, mx, _, nf in rows if mx == 0 and nf == 0)
    print(f"  ({same} maps identical)")
    print(f"outputs: {base}")


if __name__ == "__main__":
    main()
