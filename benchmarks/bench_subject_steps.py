"""CPU seconds of the Python-heavy subject steps (register, features, assess, report_subject)
and the study report, over the subjects of a finished run, and a comparison of their outputs.

The steps are called directly in this process (as a worker runs a unit, without the
database), on a copy of an existing output folder (e.g. of ``tumorscope demo``), so the
upstream steps are not re-run. Run it once with each code base and compare the folders::

    PYTHONPATH=/work/main/src python benchmarks/bench_subject_steps.py run DEMO /tmp/a
    PYTHONPATH=src python benchmarks/bench_subject_steps.py run DEMO /tmp/b
    python benchmarks/bench_subject_steps.py compare /tmp/a /tmp/b

``DEMO`` is the folder ``tumorscope demo --out`` wrote (``study/`` and ``results/``).
``run`` prints, per step, the CPU seconds (``time.process_time``) summed over the subjects,
``--repeat`` times (the best is kept; the first call of each step also imports its modules,
so ``--repeat 2`` or more reads the warm cost). ``compare`` checks that the two output
folders hold the same step outputs: Parquet tables equal (``DataFrame.equals``, same
dtypes), the HTML and JSON text equal (but the time a report was written), PNG images equal
pixel by pixel, and each unit's database rows and notes (written by ``run`` as JSON into
``_unit_outputs/``) equal; it prints each difference and exits 1
if there is one.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

#: The time a report was written (the only text allowed to differ).
_STAMP = re.compile(r"on \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC")

STEPS = ("register", "features", "assess", "report_subject")


def _upstream(store: Any, subject: str) -> dict[str, dict[str, dict[str, str]]]:
    runs = store.read_table("step_runs", status="done")
    mine = runs[runs["subject"] == subject]
    upstream: dict[str, dict[str, dict[str, str]]] = {}
    for r in mine.to_dict("records"):
        upstream.setdefault(str(r["step"]), {})[str(r["unit"])] = dict(r["outputs"])
    return upstream


def run(demo: Path, out: Path, repeat: int, steps: tuple[str, ...]) -> dict[str, float]:
    """Time ``steps`` on every subject of ``demo`` with the outputs written into ``out``."""
    from tumorscope.io import open_study
    from tumorscope.pipeline.execute import _step
    from tumorscope.pipeline.step import Context, Unit
    from tumorscope.report import write_study_report
    from tumorscope.study import default_url, open_store

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(demo / "results", out)
    root = (demo / "study").resolve()
    study = open_study(root)
    ctx = Context(root, out.resolve())
    store = open_store(default_url(out.resolve()))
    ups = {s: _upstream(store, s) for s in study.subjects}
    best: dict[str, float] = {}
    try:
        for _ in range(repeat):
            cpu: dict[str, float] = dict.fromkeys((*steps, "report"), 0.0)
            for name in steps:
                step = _step(name)
                for s in study.subjects:
                    gc.collect()
                    t0 = time.process_time()
                    res = step.run(ctx, study, Unit(name, s), ups[s])
                    cpu[name] += time.process_time() - t0
                    # the database rows and notes of the unit, compared as files
                    rows = [[w.table, w.where, w.mode, w.rows] for w in res.writes]
                    text = json.dumps([rows, res.notes], default=str, sort_keys=True, indent=1)
                    (out / "_unit_outputs").mkdir(exist_ok=True)
                    (out / "_unit_outputs" / f"{name}_{s}.json").write_text(text)
            gc.collect()
            t0 = time.process_time()
            write_study_report(out.resolve(), study, store)
            cpu["report"] = time.process_time() - t0
            for k, v in cpu.items():
                best[k] = min(best.get(k, v), v)
            print("  ".join(f"{k} {v:.2f}" for k, v in cpu.items()), flush=True)
    finally:
        store.close()
    return best


def compare(a: Path, b: Path) -> list[str]:
    """Differences between the step outputs of the output folders ``a`` and ``b``."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    diffs: list[str] = []
    files = sorted(
        p.relative_to(a)
        for p in a.rglob("*")
        if p.is_file() and p.suffix in (".parquet", ".html", ".png", ".json", ".svg")
    )
    for rel in files:
        pa, pb = a / rel, b / rel
        if not pb.exists():
            diffs.append(f"{rel}: missing in {b}")
            continue
        if rel.suffix == ".parquet":
            fa, fb = pd.read_parquet(pa), pd.read_parquet(pb)
            if not fa.equals(fb) or list(fa.dtypes) != list(fb.dtypes):
                diffs.append(f"{rel}: tables differ")
        elif rel.suffix == ".png":
            ia, ib = np.asarray(Image.open(pa)), np.asarray(Image.open(pb))
            if ia.shape != ib.shape or not np.array_equal(ia, ib):
                diffs.append(f"{rel}: pixels differ")
        elif _STAMP.sub("", pa.read_text()) != _STAMP.sub("", pb.read_text()):
            diffs.append(f"{rel}: text differs")
    extra = {p.relative_to(b) for p in b.rglob("*") if p.is_file()} - {
        p.relative_to(a) for p in a.rglob("*") if p.is_file()
    }
    diffs += [f"{rel}: only in {b}" for rel in sorted(extra)]
    return diffs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("demo", type=Path)
    r.add_argument("out", type=Path)
    r.add_argument("--repeat", type=int, default=2)
    r.add_argument("--steps", default=",".join(STEPS))
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "run":
        best = run(args.demo, args.out, args.repeat, tuple(args.steps.split(",")))
        print("best CPU s: " + json.dumps({k: round(v, 3) for k, v in best.items()}))
        return 0
    diffs = compare(args.a, args.b)
    print("\n".join(diffs) if diffs else "identical")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
