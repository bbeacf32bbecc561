"""The fit steps of one visit (``fit_relax``, ``iron``, ``fit_dce``, ``fit_dwi``): this code
against a peer checkout, maps compared with each other and with the phantom's truth.

Runs the stage functions the pipeline's steps call, with the pipeline's default options, on
one visit: ``fit_relaxometry`` (``region="body"``), ``iron_maps`` on the post-ferumoxytol
MEGRE with the pre-contrast R2* and status maps ``fit_relax`` has just written (as
``pipeline/steps.py`` does), ``fit_dce_visit``, ``fit_dwi_series`` (``--steps`` picks some;
``iron`` brings ``fit_relax`` along). Each runs in fresh Python processes that alternate
between a peer source tree (``--peer-src``, e.g. a checkout of ``main``) and this one
(``--src``, default the tree this script belongs to). Each process runs every step once
untimed (imports, kernels loaded from numba's cache), then ``--warm`` times, recording
wall-clock and CPU time (``time.process_time``) per step.

``--threads 1`` (default) pins each process to one core with numba and the fitting engine's
thread pools on one thread (``bench_visit.py``'s serial mode): CPU time is then the work
done, the figure to compare on a shared machine (the wall clock also counts the time the
process waited for a core; the load average is printed beside each run). ``--threads 2``
lets the fits use two threads (the pipeline's default mode runs the heavy steps alone on the
machine's cores): compare the wall time.

It then compares the maps the two trees wrote (last run of each), per map over the voxels
finite in both: the median, 99th percentile and largest absolute difference, the voxels
finite in only one, and for status maps the voxels whose status differs; and each tree's
maps against the phantom's truth where it has one (T1, T2, T2*, ΔR2*: median and 90th
percentile relative error over the converged voxels of the truth's body mask).

Run::

    python benchmarks/bench_fit_steps.py --study /path/to/one-visit-study --peer-src /work/main/src

``--study``: any study (e.g. a one-visit copy of the large phantom, ``tumorscope phantom
--size large``); its first visit (or ``--subject`` / ``--visit``) is fitted. Session 6's
``bench_relax_steps.py`` (``fit_relax`` and ``iron``) is this script with ``--steps
fit_relax,iron``.
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

#: The steps, in the order a process runs them (``iron`` reads ``fit_relax``'s maps).
STEPS = ("fit_relax", "iron", "fit_dce", "fit_dwi")

_CHILD = r"""
import json, os, shutil, sys, time
study_path, out, subject, visit_id, warm, threads, wanted = sys.argv[1:8]
threads = int(threads)
if threads == 1:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    os.cpu_count = lambda: 1
os.environ["TUMORSCOPE_STEP_CONCURRENCY"] = "1"
import numba
numba.set_num_threads(threads)
import warnings
warnings.simplefilter("ignore")
from pathlib import Path
from tumorscope.io.study import open_study
from tumorscope.stages.base import SeriesInput

study = open_study(study_path)
visit = next(
    v for v in study.visits()
    if (not subject or v.subject_id == subject) and (not visit_id or v.id == visit_id)
)
prefix = f"sub-{visit.subject_id}_ses-{visit.id}_"


def fit_relax(d):
    from tumorscope.stages.relaxometry import (
        RELAXOMETRY_ROLES, RelaxometryOptions, fit_relaxometry)
    series = {r: SeriesInput.of(s) for r, s in visit.series.items() if r in RELAXOMETRY_ROLES}
    fit_relaxometry(series, out_dir=d, prefix=prefix, options=RelaxometryOptions(region="body"))


def iron(d):  # into fit_relax's folder: its pre-contrast R2* and status maps
    from tumorscope.stages.iron import iron_maps
    d = d.parent / "fit_relax"
    iron_maps(
        SeriesInput.of(visit.series["t2star_ferumoxytol"]),
        d / f"{prefix}t2star_R2star.nii.gz",
        d / f"{prefix}t2star_status.nii.gz",
        out_dir=d,
        prefix=prefix,
    )


def fit_dce(d):
    from tumorscope.stages.dce import DCEOptions, fit_dce_visit
    fit_dce_visit(visit, out_dir=d, options=DCEOptions(model="extended_tofts", aif="parker"))


def fit_dwi(d):
    from tumorscope.stages.diffusion import DWIOptions, fit_dwi_series
    fit_dwi_series(SeriesInput.of(visit.series["dwi"]), out_dir=d, models=("adc", "ivim"),
                   prefix=prefix, options=DWIOptions(region="body"))


steps = {name: globals()[name] for name in wanted.split(",")}
res = {k: {"wall": [], "cpu": []} for k in steps}
for rep in range(1 + int(warm)):
    for name, fn in steps.items():
        d = Path(out) / name
        if name != "iron":  # iron writes beside fit_relax's maps (removed with them)
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
        t, c = time.perf_counter(), time.process_time()
        fn(d)
        if rep:
            res[name]["wall"].append(time.perf_counter() - t)
            res[name]["cpu"].append(time.process_time() - c)
print(json.dumps(res))
"""

#: Truth maps of the phantom and the maps they check: (truth desc, map suffix, status suffix).
_TRUTH = (
    ("T1", "irt1_T1", "irt1_status"),
    ("T2", "t2_T2", "t2_status"),
    ("T2star", "t2star_T2star", "t2star_status"),
    ("dR2star_ferumoxytol", "iron_dR2star", "iron_status"),
)


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _run(src: Path, study: Path, out: Path, args: argparse.Namespace) -> dict:  # type: ignore[type-arg]
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-c", _CHILD, str(study), str(out), args.subject, args.visit]
    proc = subprocess.run(
        [*cmd, str(args.warm), str(args.threads), ",".join(args.steps)],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _read(path: Path):  # type: ignore[no-untyped-def]
    import nibabel as nib
    import numpy as np

    return np.asarray(nib.load(path).dataobj, dtype=np.float64)


def _compare_maps(peer: Path, this: Path) -> None:
    import numpy as np

    same = 0
    for a in sorted(peer.rglob("*.nii.gz")):
        b = this / a.relative_to(peer)
        name = str(a.relative_to(peer)).removesuffix(".nii.gz")
        if not b.exists():
            print(f"  {name}: only in the peer's output")
            continue
        x, y = _read(a), _read(b)
        if name.endswith("status"):
            n = int((x != y).sum())
            same += n == 0
            if n:
                print(f"  {name}: {n} voxels of another status")
            continue
        fx, fy = np.isfinite(x), np.isfinite(y)
        both = fx & fy
        d = np.abs(x[both] - y[both])
        nf = int((fx != fy).sum())
        if not d.size or (d.max() == 0 and nf == 0):
            same += 1
            continue
        mag = float(np.median(np.abs(x[both])))
        print(
            f"  {name}: |diff| median {np.median(d):.2e} p99 {np.percentile(d, 99):.2e} "
            f"max {d.max():.2e} (median |value| {mag:.3g}); finite in one only: {nf}"
        )
    print(f"  ({same} maps identical)")


def _truth(study: Path, out: Path, subject: str, visit: str) -> dict[str, tuple[float, float]]:
    import numpy as np

    found = sorted(
        (study / "derivatives" / "truth").glob(f"sub-{subject or '*'}/ses-{visit or '*'}")
    )
    if not found:
        return {}
    tdir = found[0]
    stem = "_".join(tdir.parts[-2:]) + "_"
    body = _read(tdir / f"{stem}desc-body_mask.nii.gz") > 0
    res = {}
    for desc, mp, st in _TRUTH:
        t = tdir / f"{stem}desc-{desc}_truth.nii.gz"
        m = out / "fit_relax" / f"{stem}{mp}.nii.gz"
        if not (t.exists() and m.exists()):
            continue
        truth, est = _read(t), _read(m)
        status = _read(out / "fit_relax" / f"{stem}{st}.nii.gz")
        sel = body & (status == 0) & np.isfinite(est) & (truth > 0)
        rel = np.abs(est[sel] / truth[sel] - 1)
        res[mp] = (float(np.median(rel)), float(np.percentile(rel, 90)))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", type=Path, required=True)
    ap.add_argument("--peer-src", type=Path, required=True, help="the other tree's src/")
    ap.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src")
    ap.add_argument("--subject", default="")
    ap.add_argument("--visit", default="")
    ap.add_argument("--steps", default="fit_relax,fit_dce,fit_dwi", help=f"of {','.join(STEPS)}")
    ap.add_argument("--repeats", type=int, default=2, help="processes per tree, alternated")
    ap.add_argument("--warm", type=int, default=2, help="timed runs of each step per process")
    ap.add_argument("--threads", type=int, default=1, choices=(1, 2))
    ap.add_argument("--out", type=Path, help="keep the maps here (default: a temporary folder)")
    args = ap.parse_args()
    wanted = set(args.steps.split(","))
    if wanted - set(STEPS):
        ap.error(f"unknown step(s) {sorted(wanted - set(STEPS))}; expected {', '.join(STEPS)}")
    if "iron" in wanted:
        wanted.add("fit_relax")
    args.steps = [s for s in STEPS if s in wanted]
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
    print(
        f"\nmedian over {args.repeats} processes x {args.warm} warm runs (s), "
        f"{args.threads} thread(s), peer / this:"
    )
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
    print("\nmaps, this against the peer (absolute differences, over voxels finite in both):")
    _compare_maps(base / "peer", base / "this")
    if "fit_relax" in args.steps:
        print("\nagainst the phantom's truth (|relative error| median / p90, converged body):")
        for tree in trees:
            acc = _truth(args.study, base / tree, args.subject, args.visit)
            print(f"  {tree}: " + "  ".join(f"{k} {a:.4f}/{b:.4f}" for k, (a, b) in acc.items()))
    print(f"outputs: {base}")


if __name__ == "__main__":
    main()
