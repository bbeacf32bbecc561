"""How the cost of a run grows with the visit size and with the cohort size, in one run.

* Visit size: one visit (the baseline, every step applies) of the phantom at each size
  (``tiny`` 32×32×6, ``default`` 64×64×10, ``large`` 128×128×30), the whole pipeline run
  in one fresh process as ``tumorscope run`` runs it without ``--workers`` (the fits on every
  core, two units of a subject at a time); prints seconds per visit and per million voxels (of the
  anatomical grid): linear growth keeps the last column constant; the fixed cost of a
  visit (process, database, report, registration set-up) shows as a larger value at the
  small sizes.
* Cohort size: the ``tiny`` phantom with ``--cohorts`` subjects (4 visits each, fewer for some
  subjects), the whole pipeline run in one process the same way; prints seconds per visit, which linear growth
  keeps constant.

The 100-visit cohort on a local Dask cluster against serial is ``bench_pipeline.py`` (24
subjects of the tiny phantom, ~100 visits). Every run is a fresh Python process (its wall
time includes the interpreter start and imports, as a user's ``tumorscope run``).

Run::

    python benchmarks/bench_scaling.py [--sizes tiny,default,large] [--cohorts 1,2,4,8]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_visit import _one_visit_study

_RUN = """
import sys
from tumorscope.pipeline import run_study
s = run_study(sys.argv[1], sys.argv[2])
assert not s.failed, s.failed
"""


def _run(study: Path, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _RUN, str(study), str(out)], capture_output=True, text=True
    )
    if proc.returncode:
        sys.exit(f"run of {study} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t


def _n_visits(study: Path) -> int:
    import yaml

    man = yaml.safe_load((study / "study.yaml").read_text())
    return sum(len(s["visits"]) for s in man["subjects"].values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="tiny,default,large")
    ap.add_argument("--cohorts", default="1,2,4,8", help="numbers of subjects (tiny phantom)")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    from tumorscope.phantom import SIZES, make_study

    tmp = Path(tempfile.mkdtemp(prefix="bench_scaling_"))
    try:
        sizes = [s for s in args.sizes.split(",") if s]
        if sizes:
            print("visit size (one baseline visit, serial):")
            print(f"{'size':<10}{'grid':>16}{'Mvoxels':>10}{'s/visit':>10}{'s/Mvoxel':>10}")
        for size in sizes:
            full = make_study(tmp / f"{size}-full", size=size, seed=0, n_subjects=1)
            study = _one_visit_study(full, tmp / f"{size}-one", "01")
            shape = SIZES[size].shape
            mvox = shape[0] * shape[1] * shape[2] / 1e6
            times = [_run(study, tmp / f"{size}-out") for _ in range(args.repeats)]
            best = min(times)
            print(
                f"{size:<10}{'x'.join(map(str, shape)):>16}{mvox:>10.3f}{best:>10.2f}"
                f"{best / mvox:>10.1f}"
            )
        cohorts = [int(c) for c in args.cohorts.split(",") if c]
        if cohorts:
            print("\ncohort size (tiny phantom, serial):")
            print(f"{'subjects':>8}{'visits':>8}{'s':>10}{'s/visit':>10}")
        for n in cohorts:
            study = make_study(tmp / f"cohort-{n}", size="tiny", seed=0, n_subjects=n)
            nv = _n_visits(study)
            times = [_run(study, tmp / f"cohort-{n}-out") for _ in range(args.repeats)]
            best = min(times)
            print(f"{n:>8}{nv:>8}{best:>10.2f}{best / nv:>10.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
