"""The reports of a run: this checkout's report code against another's, on the same results.

Takes output folders of finished runs (``tumorscope run`` / ``tumorscope demo``, with their
database), and in fresh Python processes, alternated (old, new, old, new, ...):

* imports the report (``tumorscope.report``, ``tumorscope.pipeline.reporting``) — timed;
* writes every subject's page (the ``report_subject`` step:
  ``pipeline.reporting.subject_report`` with the upstream outputs recorded in ``step_runs``)
  and the study page (``report.write_study_report``), ``--repeats`` times: the first pass is
  ``cold`` (the lazy imports of the first report a worker writes: matplotlib, PIL ...),
  the others ``warm``.

Wall and CPU time (``time.process_time``) of each, per folder; then the ratios old / new of
the medians (pairs taken in the same run). The pages are written into the folder (both
versions write the same files: run on a copy if the folder matters). ``uptime``'s load is
printed beside each pass.

Run::

    python benchmarks/bench_report.py --out /tmp/reportfast-large /tmp/reportfast-demo \\
        --study /work/s3/visit1 /tmp/reportfast-demo/study [--old /work/main/src] [--rounds 2] [--repeats 3]

``--old`` is the ``src`` folder of the other checkout (default: ``../main/src`` beside this
worktree); ``--new`` defaults to this checkout's ``src``. Also ``--importtime``: the
``python -X importtime`` cumulative import of ``tumorscope.report`` for each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import json, sys, time
t0, c0 = time.perf_counter(), time.process_time()
import tumorscope.report, tumorscope.pipeline.reporting  # noqa: E401
imp = (time.perf_counter() - t0, time.process_time() - c0)
from pathlib import Path
from tumorscope.io import open_study
from tumorscope.pipeline.reporting import subject_report
from tumorscope.pipeline.step import Context
from tumorscope.report import write_study_report
from tumorscope.study import default_url, open_store

out, root = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
repeats = int(sys.argv[3])
store = open_store(default_url(out))
runs = store.read_table("step_runs", status="done")
study = open_study(root)
ctx = Context(root, out)
ups = {}
for sid in study.subjects:
    mine = runs[runs["subject"] == sid]
    if "measure" not in set(mine["step"]):
        continue
    up = {}
    for r in mine.to_dict("records"):
        up.setdefault(str(r["step"]), {})[str(r["unit"])] = dict(r["outputs"])
    ups[sid] = up
passes = []
for k in range(repeats):
    t, c = time.perf_counter(), time.process_time()
    for sid, up in ups.items():
        subject_report(ctx, study, sid, up)
    subj = (time.perf_counter() - t, time.process_time() - c)
    t, c = time.perf_counter(), time.process_time()
    write_study_report(out, study, store)
    stud = (time.perf_counter() - t, time.process_time() - c)
    passes.append({"subjects": subj, "study": stud})
store.close()
print(json.dumps({"import": imp, "passes": passes, "n_subjects": len(ups)}))
"""


def _load() -> str:
    return Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"


def _child(src: Path, out: Path, root: Path, repeats: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src))
    res = subprocess.run(
        [sys.executable, "-c", _CHILD, str(out), str(root), str(repeats)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode:
        raise SystemExit(f"child failed ({src}):\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _importtime(src: Path) -> float:
    """Cumulative microseconds of ``import tumorscope.report`` and
    ``tumorscope.pipeline.reporting`` by ``-X importtime`` (the top-level entries)."""
    env = dict(os.environ, PYTHONPATH=str(src))
    res = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-c",
            "import tumorscope.report, tumorscope.pipeline.reporting",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    total = 0
    for line in res.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and not parts[2].startswith("  "):  # top level
            name = parts[2].strip()
            if name.startswith("tumorscope"):
                total += int(parts[1])
    return total / 1e6


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", nargs="+", type=Path, required=True)
    p.add_argument("--study", nargs="+", type=Path, required=True, help="study of each --out")
    p.add_argument("--old", type=Path, default=here.parent / "main" / "src")
    p.add_argument("--new", type=Path, default=here / "src")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--importtime", action="store_true")
    a = p.parse_args()
    for out, root in zip(a.out, a.study, strict=True):
        print(f"== {out} (study {root})")
        res: dict[str, list[dict]] = {"old": [], "new": []}
        for rnd in range(a.rounds):
            for name, src in (("old", a.old), ("new", a.new)):
                load = _load()
                r = _child(src, out, root, a.repeats)
                res[name].append(r)
                fmt = "  ".join(
                    f"subj {q['subjects'][0]:.2f}/{q['subjects'][1]:.2f} "
                    f"study {q['study'][0]:.2f}/{q['study'][1]:.2f}"
                    for q in r["passes"]
                )
                print(
                    f"round {rnd} {name}: load {load}, import {r['import'][0]:.2f} s, "
                    f"{r['n_subjects']} subjects, passes (wall/CPU s): {fmt}"
                )

        def med(name: str, what: str, which: str, i: int, res: dict = res) -> float:
            vals = []
            for r in res[name]:
                ps = r["passes"][:1] if which == "cold" else r["passes"][1:]
                vals += [q[what][i] for q in ps]
            return statistics.median(vals)

        for which in ("cold", "warm"):
            if which == "warm" and a.repeats < 2:
                continue
            for what in ("subjects", "study"):
                o, n = med("old", what, which, 0), med("new", what, which, 0)
                oc, nc = med("old", what, which, 1), med("new", what, which, 1)
                print(
                    f"{which:4s} {what:8s}: old {o:.3f} s ({oc:.3f} CPU-s), new {n:.3f} s "
                    f"({nc:.3f} CPU-s): {o / n:.2f}x wall, {oc / nc:.2f}x CPU"
                )
        oi = statistics.median(r["import"][0] for r in res["old"])
        ni = statistics.median(r["import"][0] for r in res["new"])
        print(f"import of the report: old {oi:.3f} s, new {ni:.3f} s ({oi / ni:.2f}x)")
    if a.importtime:
        for name, src in (("old", a.old), ("new", a.new)):
            print(
                f"-X importtime, tumorscope.report + pipeline.reporting, {name}: "
                f"{_importtime(src):.3f} s"
            )


if __name__ == "__main__":
    main()
