"""The ``align``, ``functional`` and ``register`` steps' costs against what they replaced, in one run.

Sections (``--sections``, comma-separated):

``registration``
    The ``functional`` step's registration of a visit's anatomical image onto the baseline's:
    the preset it uses now (``functional._REGISTRATION``: 10 000 sampled voxels, 100
    iterations, 0.001 mm step, relaxation 0.7) against the one it used before
    (:func:`tumorscope.preprocessing.register` defaults: 25 % of the voxels, 200 iterations,
    0.0001 mm, relaxation 0.5), and the ``align`` preset (5 000 voxels, 40 iterations), on
    (a) eight seeded rigid motions (±6° about each axis on every other case, ±6 mm) of a smooth
    scene on an oblique 2×2×4 mm grid: error against the known motion (maximum over four
    points 20 mm from the centre); (b) every follow-up of the phantom study against its
    baseline (the phantom does not move between visits: displacement of points ±20 mm around
    the centre, against 0). Best time of ``--repeats`` rounds (the presets alternate), ratio to
    the former preset, errors.
    Both presets run on SimpleITK here (``backend="itk"``), as when they were chosen.
``backends``
    :func:`tumorscope.preprocessing.registration.register_quick` on its compiled back-end
    (numba, the default) against SimpleITK (``backend="itk"``, one thread), same settings,
    same pairs, alternated, best of ``--repeats``: (a) the eight known motions above with the
    ``align`` and the ``functional`` presets (error against the truth); (b) every registrable
    series of the phantom's visits against their T2w, as the ``align`` step registers them,
    at the default size (64×64×10, the demo's) and at the large size (128×128×30): mean lesion
    displacement (truth 0: the phantom does not move within a visit) and the largest
    distance between the two back-ends' transforms at the lesion. Prints the time ratio.
``validate``
    :func:`tumorscope.io.study.validate_visit` on one visit of the large phantom: every series
    streamed (the way it checks them now) against every series loaded as float32 (the way it
    did, ``_loaded_scan``), alternated, best of ``--repeats``; and the load of the visit's
    images as the yardstick.
``align``
    :func:`tumorscope.pipeline.align.align_visit` on one visit of the large phantom: time per
    registered series, best of ``--repeats``, and its largest lesion displacement.
``peer``
    :func:`tumorscope.pipeline.align.align_visit` on the first visit of ``--large``, this tree
    against a peer source tree (``--peer-src``, e.g. ``/work/main/src``), in fresh processes
    that alternate between the two trees, ``--repeats`` rounds, with one thread (the process
    pinned to one core, numba on one thread: CPU time is the work done) and with two (numba's
    thread count 2, the pipeline's share of the cores for a unit run alone; compare the wall
    clock). Each process runs the step once untimed (imports, cached kernels), then
    ``--warm`` times. Prints the best and median wall and CPU seconds, the ratios peer ÷
    this, the load average, and compares the two trees' alignments (every transform and
    displacement: identical, or the largest difference).

Run::

    python benchmarks/bench_align.py [--study DEFAULT_STUDY] [--large LARGE_STUDY]
    python benchmarks/bench_align.py --sections peer --large /work/s3/visit1 \
        --peer-src /work/main/src --repeats 3

Without ``--study`` / ``--large`` the phantoms are written to a temporary folder first
(default size, 6 subjects; large size, 1 subject).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _known_motions import cases as _cases  # benchmarks/, beside this script
from tumorscope.io import open_study
from tumorscope.io.study import MRS_SUFFIXES, _loaded_scan, validate_visit
from tumorscope.pipeline.align import align_visit
from tumorscope.pipeline.functional import _REGISTRATION
from tumorscope.preprocessing.registration import register, register_quick
from tumorscope.volume import Volume


def _load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def _pairs(study: Path) -> list[tuple[Volume, Volume]]:
    out = []
    for subj in open_study(study).subjects.values():
        base = subj.baseline
        if "anatomical" not in base.series:
            continue
        b = base.series["anatomical"].load()
        for v in subj:
            if v.id != base.id and "anatomical" in v.series:
                out.append((b, v.series["anatomical"].load()))
    return out


def _points(vol: Volume) -> np.ndarray:
    c = (np.array(vol.spatial_shape) - 1) / 2
    steps = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 3], [-10, -10, -3]])
    ijk = c + steps * np.array([2.0, 2.0, 6.0]) / np.array(vol.voxel_sizes)
    return np.c_[ijk, np.ones(len(ijk))] @ vol.affine.T


def bench_registration(study: Path, repeats: int) -> None:
    print(f"registration: functional preset now vs before, align preset ({_load()})")
    cases = _cases()
    pairs = _pairs(study)
    pts = np.array([[0, 0, 0, 1], [15, 10, 5, 1], [-15, 10, -5, 1], [10, -15, 0, 1.0]])

    def before(f: Volume, m: Volume) -> Any:
        import SimpleITK as sitk

        threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)  # as the step ran it
        try:
            return register(f, m, kind="rigid")
        finally:
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)

    presets = {
        "functional before (25 %, 200 it)": before,
        "functional now": lambda f, m: register_quick(f, m, backend="itk", **_REGISTRATION),
        "align (5 000, 40 it)": lambda f, m: register_quick(f, m, backend="itk"),
    }
    print(
        f"{'preset':<34} {'known (s)':>9} {'x before':>8} {'err med/max mm':>15} "
        f"{'phantom (s)':>11} {'x before':>8} {'disp med/max mm':>16}"
    )
    best: dict[str, list[float]] = {}
    errs: dict[str, tuple[list[float], list[float]]] = {}
    for _ in range(repeats):  # the presets alternate; the best time of each
        for name, fn in presets.items():
            t = time.perf_counter()
            e1 = [
                np.linalg.norm((pts @ fn(f, m).matrix.T - pts @ tr.T)[:, :3], axis=1).max()
                for f, m, tr in cases
            ]
            t1 = time.perf_counter() - t
            t = time.perf_counter()
            e2 = []
            for b, m in pairs:
                p = _points(b)
                e2.append(np.linalg.norm((p @ fn(b, m).matrix.T - p)[:, :3], axis=1).max())
            t2 = time.perf_counter() - t
            old = best.get(name, [np.inf, np.inf])
            best[name] = [min(old[0], t1), min(old[1], t2)]
            errs[name] = (e1, e2)
    ref = best[next(iter(presets))]
    for name, (t1, t2) in best.items():
        e1, e2 = errs[name]
        print(
            f"{name:<34} {t1:>9.2f} {ref[0] / t1:>7.2f}x "
            f"{np.median(e1):>7.2f}/{max(e1):.2f} {t2:>11.2f} {ref[1] / t2:>7.2f}x "
            f"{np.median(e2):>8.2f}/{max(e2):.2f}"
        )
    print(f"({len(cases)} known motions, {len(pairs)} phantom follow-ups; {_load()})\n")


def _visit_pairs(study: Path, visits: int) -> list[tuple[Volume, Volume, np.ndarray]]:
    """(T2w, series, lesion points) of every registrable series of the first visits."""
    from tumorscope.pipeline.align import _NOT_REGISTRABLE, _lesion_points, representative_frame

    out = []
    for visit in list(open_study(study).visits())[:visits]:
        ref = representative_frame(visit.series["anatomical"].load())
        assert visit.lesions is not None
        pts = _lesion_points(visit.lesions.load_labels())
        for role, series in visit.series.items():
            if role != "anatomical" and not role.startswith(_NOT_REGISTRABLE):
                out.append((ref, representative_frame(series.load()), pts))
    return out


def bench_backends(study: Path, large: Path, repeats: int) -> None:
    print(f"register_quick: compiled (numba) against SimpleITK, same settings ({_load()})")
    pts4 = np.array([[0, 0, 0, 1], [15, 10, 5, 1], [-15, 10, -5, 1], [10, -15, 0, 1.0]])
    cases = _cases()
    register_quick(cases[0][0], cases[0][1], backend="numba")  # compile / load the kernels
    print(
        f"{'pairs':<34} {'itk (s)':>8} {'numba (s)':>9} {'ratio':>6} "
        f"{'itk err med/max':>16} {'numba err med/max':>18} {'apart max':>9}"
    )
    sets: list[tuple[str, list[tuple[Volume, Volume, np.ndarray]], dict[str, Any], str]] = [
        ("8 known motions, align preset", cases, {}, "truth"),
        ("8 known motions, functional", cases, dict(_REGISTRATION), "truth"),
        ("phantom visits 64x64x10, align", _visit_pairs(study, 4), {}, "still"),
        ("phantom visit 128x128x30, align", _visit_pairs(large, 1), {}, "still"),
    ]
    for name, pairs, preset, kind in sets:
        best = {"itk": np.inf, "numba": np.inf}
        mats: dict[str, list[np.ndarray]] = {}
        for _ in range(repeats):
            for backend in ("itk", "numba"):
                t = time.perf_counter()
                mats[backend] = [
                    register_quick(f, m, backend=backend, **preset).matrix  # type: ignore[arg-type]
                    for f, m, _ in pairs
                ]
                best[backend] = min(best[backend], time.perf_counter() - t)
        errs: dict[str, list[float]] = {}
        apart = []
        for backend in ("itk", "numba"):
            errs[backend] = []
            for (_, _, ref), mat, other in zip(pairs, mats[backend], mats["itk"], strict=True):
                p = pts4 if kind == "truth" else ref
                want = p @ ref.T if kind == "truth" else p
                d = np.linalg.norm((p @ mat.T - want)[:, :3], axis=1)
                errs[backend].append(float(d.max() if kind == "truth" else d.mean()))
                if backend == "numba":
                    apart.append(
                        float(np.linalg.norm((p @ mat.T - p @ other.T)[:, :3], axis=1).max())
                    )
        e_i, e_n = errs["itk"], errs["numba"]
        print(
            f"{name:<34} {best['itk']:>8.3f} {best['numba']:>9.3f} "
            f"{best['itk'] / best['numba']:>5.1f}x "
            f"{np.median(e_i):>8.3f}/{max(e_i):.3f} {np.median(e_n):>10.3f}/{max(e_n):.3f} "
            f"{max(apart):>9.3f}"
        )
    print(
        "(err: known motions, largest error at 4 points 15-20 mm from the centre against the "
        "truth; phantom, mean lesion displacement, truth 0; apart: largest distance between "
        f"the two back-ends' transforms at those points, mm; {_load()})\n"
    )


def bench_validate(large: Path, repeats: int) -> None:
    study = open_study(large)
    visit = next(iter(study.visits()))
    images = [s for s in visit.series.values() if s.suffix not in MRS_SUFFIXES]
    print(f"validate_visit, one large visit ({len(images)} image series; {_load()})")
    t_new, t_old, t_load = [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        validate_visit(study, visit)
        t_new.append(time.perf_counter() - t)
        t = time.perf_counter()
        for s in images:
            _loaded_scan(s)
        t_old.append(time.perf_counter() - t)
        t = time.perf_counter()
        for s in images:
            s.load()
        t_load.append(time.perf_counter() - t)
    new, old, load = min(t_new), min(t_old), min(t_load)
    print(
        f"  streamed (whole validate_visit) {new:.2f} s; the series loaded as float32 "
        f"(before; images only) {old:.2f} s: {old / new:.2f}x; loading the images {load:.2f} s"
    )
    print(f"  ({_load()})\n")


def bench_align(large: Path, repeats: int) -> None:
    visit = next(iter(open_study(large).visits()))
    print(f"align_visit, one large visit ({_load()})")
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        rows = align_visit(visit)
        times.append(time.perf_counter() - t)
    reg = [a for a in rows if a.status == "registered"]
    worst = max(a.mean_displacement_mm or 0.0 for a in reg)
    print(
        f"  {min(times):.2f} s for {len(reg)} registered series ({min(times) / len(reg):.2f} s per "
        f"series; target <= 1 s); largest mean lesion displacement {worst:.2f} mm (truth 0)"
    )
    print(f"  ({_load()})\n")


_PEER_CHILD = r"""
import json, os, sys, time
large, threads, warm = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if threads == 1:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
import numba
numba.set_num_threads(threads)
from tumorscope.io import open_study
from tumorscope.pipeline.align import align_visit
visit = next(iter(open_study(large).visits()))
align_visit(visit)
wall, cpu = [], []
for _ in range(warm):
    t, c = time.perf_counter(), time.process_time()
    rows = align_visit(visit)
    wall.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
out = [a.row("s", "v") | {"matrix": None if a.matrix is None else a.matrix.tolist()}
       for a in rows]
print(json.dumps({"wall": wall, "cpu": cpu, "rows": out}))
"""


def _peer_run(src: Path, large: Path, threads: int, warm: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(src), TUMORSCOPE_STEP_CONCURRENCY="1")
    res = subprocess.run(
        [sys.executable, "-c", _PEER_CHILD, str(large), str(threads), str(warm)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def _rows_apart(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> str:
    if a == b:
        return "identical (every row, every transform bit for bit)"
    worst_m, worst_d = 0.0, 0.0
    for ra, rb in zip(a, b, strict=True):
        if ra["matrix"] is not None and rb["matrix"] is not None:
            diff = np.abs(np.asarray(ra["matrix"]) - np.asarray(rb["matrix"])).max()
            worst_m = max(worst_m, float(diff))
        for key in ("mean_displacement_mm", "max_displacement_mm"):
            if ra[key] is not None and rb[key] is not None:
                worst_d = max(worst_d, abs(ra[key] - rb[key]))
    flips = sum(ra["applied"] != rb["applied"] for ra, rb in zip(a, b, strict=True))
    return (
        f"differ: matrices by at most {worst_m:.2e}, displacements by at most "
        f"{worst_d:.4f} mm, {flips} applied decisions changed"
    )


def bench_peer(large: Path, peer: Path, repeats: int, warm: int) -> None:
    here = Path(__file__).resolve().parents[1] / "src"
    print(f"align_visit, {large}: {here} against {peer} (fresh processes, alternated)")
    for threads in (1, 2):
        runs: dict[str, list[dict[str, Any]]] = {"peer": [], "this": []}
        loads = []
        for _ in range(repeats):
            for name, src in (("peer", peer), ("this", here)):
                loads.append(os.getloadavg()[0])
                runs[name].append(_peer_run(src, large, threads, warm))
        stats = {}
        for name, rs in runs.items():
            wall = [w for r in rs for w in r["wall"]]
            cpu = [c for r in rs for c in r["cpu"]]
            stats[name] = (min(wall), statistics.median(wall), min(cpu), statistics.median(cpu))
            print(
                f"  {threads} thread(s) {name:<4}: wall best {stats[name][0]:.3f} / median "
                f"{stats[name][1]:.3f} s, CPU best {stats[name][2]:.3f} / median "
                f"{stats[name][3]:.3f} s"
            )
        p, t = stats["peer"], stats["this"]
        print(
            f"  {threads} thread(s) peer / this: wall {p[0] / t[0]:.2f}x (median "
            f"{p[1] / t[1]:.2f}x), CPU {p[2] / t[2]:.2f}x (median {p[3] / t[3]:.2f}x); load "
            f"{min(loads):.1f}-{max(loads):.1f}"
        )
        print(f"  alignments: {_rows_apart(runs['peer'][-1]['rows'], runs['this'][-1]['rows'])}")
    print(f"  ({_load()})\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", type=Path, help="a default-size phantom written before")
    ap.add_argument("--large", type=Path, help="a large phantom written before")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sections", default="registration,backends,validate,align")
    ap.add_argument("--peer-src", type=Path, help="the peer source tree of the peer section")
    ap.add_argument("--warm", type=int, default=3, help="timed runs per process (peer)")
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        from tumorscope.phantom import make_study

        if sections & {"registration", "backends"}:
            study = args.study or make_study(Path(tmp) / "default", size="default")
        if sections & {"backends", "validate", "align", "peer"}:
            large = args.large or make_study(Path(tmp) / "large", size="large", n_subjects=1)
        if "registration" in sections:
            bench_registration(study, args.repeats)
        if "backends" in sections:
            bench_backends(study, large, args.repeats)
        if sections & {"validate", "align"}:
            if "validate" in sections:
                bench_validate(large, args.repeats)
            if "align" in sections:
                bench_align(large, args.repeats)
        if "peer" in sections:
            if args.peer_src is None:
                ap.error("the peer section needs --peer-src")
            bench_peer(large, args.peer_src, args.repeats, args.warm)


if __name__ == "__main__":
    main()
