"""Map I/O and the light visit steps, this tree against another one, in one run.

Issue 21's large visit (128 × 128 × 30, every modality): the steps ``metabolic``,
``measure``, ``iron``, ``pet`` and ``register``, and the reading (``Volume.from_nifti``) and
writing (``files.write_map``) of every image of a visit. Each side runs in its own Python
process, serially on one thread (``os.sched_setaffinity`` on one core, numba, BLAS and the
fitting engine on one thread, ``TUMORSCOPE_STEP_CONCURRENCY=1``), with
``PYTHONPATH=<src>`` of its tree: ``--old`` (default ``/work/main/src``) and ``--new``
(default: the ``src`` of the tree holding this file). The two sides alternate, ``--repeats``
times each, and the ratio old / new is printed per figure (> 1: the new tree is faster).

* I/O: every ``.nii.gz`` of the visit's series and of a finished run's maps read with
  ``Volume.from_nifti`` (float32, as the steps read them), then every map written again with
  ``write_map`` (into a fresh folder) from arrays of the dtype and memory order the fits hand
  it (C-ordered float32; the maps' own values). Best of three passes inside the process.
* Steps: on a copy of the finished run's output folder, each step forced three times in
  one process (``run_study(force=[step])``: every other step is up to date and skipped, and
  the step's inputs are those of the whole run; the child of ``bench_light_steps.py``); the
  best of the last two runs' durations from the ``step_runs`` table (warm: imports made,
  compiled kernels loaded), and of their CPU seconds: the process's CPU time of a run less
  that of a run with nothing forced.

Wall and CPU seconds are both printed: on a shared machine the CPU time of the one-thread
process is the steadier figure (another process on the core lengthens the wall time, not
the CPU time).

The finished run (``--out``) is made first if missing: the whole pipeline on ``--study``
(default ``/work/s3/visit1``, a one-visit copy of the large phantom) with the new tree.
Outputs are compared as well (``bench_light_steps.compare_outputs``): each map (values,
NaN pattern) and table (rows, columns, values) of the two sides' folders.

Run::

    python benchmarks/bench_io_steps.py [--repeats 2] [--study DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from bench_light_steps import _SERIAL, _STEPS, _load, compare_outputs, print_ratios
from bench_light_steps import _run as _run_light

STEPS = ("metabolic", "measure", "iron", "pet", "register")

_IO = r"""
import glob, json, shutil, sys, time
from pathlib import Path
import numpy as np
from tumorscope.files import write_map
from tumorscope.volume import Volume
study, out, scratch = sys.argv[1], sys.argv[2], Path(sys.argv[3])
series = [f for f in sorted(glob.glob(study + "/sub-*/**/*.nii.gz", recursive=True))
          if "/mrs/" not in f]
maps = sorted(glob.glob(out + "/sub-*/**/maps/*.nii.gz", recursive=True))
vols = [Volume.from_nifti(f) for f in maps]
arrays = [(np.ascontiguousarray(v.data), v.affine) for v in vols if v.data.ndim == 3]
del vols
def write():
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    for i, (a, aff) in enumerate(arrays):
        write_map(scratch / f"m{i:03d}.nii.gz", a, aff, units="1", description="bench",
                  provenance={"bench": True})
def best(fn):  # (wall, CPU) seconds, best of three
    wall, cpu = [], []
    for _ in range(3):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return min(wall), min(cpu)
res = {}
for key, fn in (("read_series", lambda: [Volume.from_nifti(f) for f in series]),
                ("read_maps", lambda: [Volume.from_nifti(f) for f in maps]),
                ("write_maps", write)):
    res[key], res[key + "_cpu"] = best(fn)
print(json.dumps({**res, "n_series": len(series), "n_maps": len(maps),
                  "n_written": len(arrays)}))
"""


def _run(src: Path, code: str, *args: str) -> dict:  # type: ignore[type-arg]
    """``code`` in a fresh serial one-thread process of the tree ``src`` (the child runner
    and prelude of ``bench_light_steps.py``, which also forces the steps)."""
    return _run_light(src, _SERIAL, *args, code=code)


def main() -> None:
    here = Path(__file__).resolve().parents[1] / "src"
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", type=Path, default=Path("/work/main/src"))
    ap.add_argument("--new", type=Path, default=here)
    ap.add_argument("--study", type=Path, default=Path("/work/s3/visit1"))
    ap.add_argument("--out", type=Path, default=None, help="a finished run of --study")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", default=",".join(STEPS))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-io-steps-"))
    out = args.out
    if out is None:
        out = tmp / "run"
        code = "import sys\nfrom pathlib import Path\nfrom tumorscope.pipeline import run_study\n"
        code += "run_study(Path(sys.argv[1]), Path(sys.argv[2]), report=False)\nprint('{}')\n"
        _run(args.new, code, str(args.study), str(out))
    results: dict[str, list[dict]] = {"old": [], "new": []}  # type: ignore[type-arg]
    try:
        for rep in range(args.repeats):
            for side in ("old", "new"):
                src = args.old if side == "old" else args.new
                load = _load()
                io = _run(src, _IO, str(args.study), str(out), str(tmp / f"w-{side}"))
                st = _run(src, _STEPS, str(args.study), str(out), str(tmp / side), args.steps)
                results[side].append({**io, **st, "load": load})
                print(f"repeat {rep + 1} {side}: load {load} {json.dumps({**io, **st})}")
        print(f"\nOld {args.old} / new {args.new}: seconds (best of the repeats), ratio old/new")
        print("  wall: the step's own duration (step_runs); CPU: the process's CPU seconds")
        print_ratios(results, ["read_series", "read_maps", "write_maps", *args.steps.split(",")])
        for kind in ("", "_cpu"):
            io = {
                side: min(
                    r["read_maps" + kind] + r["read_series" + kind] + r["write_maps" + kind]
                    for r in results[side]
                )
                for side in results
            }
            label = f"I/O ({'CPU' if kind else 'wall'})"
            print(
                f"  {label:20s} old {io['old']:7.3f}  new {io['new']:7.3f}  ratio "
                f"{io['old'] / io['new']:5.2f}"
            )
        # the maps and tables of the whole folders (bench_light_steps's comparison)
        lines = compare_outputs(tmp / "old", tmp / "new", 0.0)
        print("  outputs of the steps:", "identical" if len(lines) == 1 else "DIFFER:")
        for line in lines:
            print(f"    {line}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
