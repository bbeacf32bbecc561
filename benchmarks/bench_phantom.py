"""Writing the synthetic study: this checkout's phantom against an older one, in one run.

``make_study`` writes the study the demo runs (``size="default"``), the tests' (``tiny``) and
the benchmarks' (``large``). This benchmark times it for both versions of the code, each in a
fresh Python process (what ``tumorscope demo`` and a test session pay: the first study of a
process, ``tumorscope.phantom`` already imported), alternating old/new and new/old per
repeat, and prints per size:

* wall time and CPU time (user + system of the process, all its threads) of each version and
  their ratios old / new;
* the load average (1 min) before each run: the machine is shared, compare ratios of the
  same run;
* whether the two versions wrote the same bytes: the sha256 of every file of each study
  (the phantom is seeded; a speed-up that changes a byte is not one).

The old version is extracted from git (``--old``, default the commit before the session-4
changes of ``tumorscope.phantom``) into a temporary folder and imported from there
(``PYTHONPATH``); the new one is this checkout's ``src``.

Run::

    python benchmarks/bench_phantom.py [--sizes tiny,default,large] [--repeats 2]
        [--large-subjects 1] [--old f39b77f]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The phantom before session 4 (one BLAS thread, bulk noise, per-row signals, CEST tables).
OLD_REF = "f39b77f"

_CHILD = r"""
import hashlib, json, os, sys, time
from pathlib import Path
from tumorscope.phantom import make_study

size, n_subjects, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
kw = {} if n_subjects <= 0 else {"n_subjects": n_subjects}
c0, t0 = os.times(), time.perf_counter()
make_study(out, size=size, **kw)
wall, c1 = time.perf_counter() - t0, os.times()
cpu = (c1.user - c0.user) + (c1.system - c0.system)
h = hashlib.sha256()
n = 0
for p in sorted(out.rglob("*")):
    if p.is_file():
        h.update(p.relative_to(out).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
        n += 1
print(json.dumps({"wall": wall, "cpu": cpu, "digest": h.hexdigest(), "files": n}))
"""


def _extract(ref: str, dest: Path) -> Path:
    """``src/`` of ``ref`` (git archive) under ``dest``; returns the folder for PYTHONPATH."""
    tar = dest / "old.tar"
    with tar.open("wb") as fh:
        subprocess.run(["git", "-C", str(REPO), "archive", ref, "src"], stdout=fh, check=True)
    with tarfile.open(tar) as tf:
        tf.extractall(dest, filter="data")
    return dest / "src"


def _run(src: Path, size: str, n_subjects: int, work: Path) -> dict[str, float | str]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    with tempfile.TemporaryDirectory(dir=work) as d:
        load = os.getloadavg()[0]
        res = subprocess.run(
            [sys.executable, "-c", _CHILD, size, str(n_subjects), str(Path(d) / "study")],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
    return {**json.loads(res.stdout.strip().splitlines()[-1]), "load": load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="tiny,default,large")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--large-subjects", type=int, default=1, help="subjects of the large study")
    ap.add_argument("--old", default=OLD_REF, help="git ref of the old phantom")
    ap.add_argument("--work", default=None, help="folder for the studies (default: temp)")
    args = ap.parse_args()
    new_src = REPO / "src"
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        old_src = _extract(args.old, work)
        print(f"old: {args.old} (extracted), new: {new_src}; {os.cpu_count()} CPUs")
        print("| size | run | load | old wall (s) | new wall (s) | wall old/new | old CPU (s) "
              "| new CPU (s) | CPU old/new | same bytes |")  # fmt: skip
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for size in args.sizes.split(","):
            n = args.large_subjects if size == "large" else 0
            for r in range(args.repeats):
                order = ("old", "new") if r % 2 == 0 else ("new", "old")
                res = {v: _run(old_src if v == "old" else new_src, size, n, work) for v in order}
                o, w = res["old"], res["new"]
                same = o["digest"] == w["digest"] and o["files"] == w["files"]
                label = f"{size} ({n} subj.)" if n else size
                print(
                    f"| {label} | {r + 1} ({'/'.join(order)}) "
                    f"| {o['load']:.1f}/{w['load']:.1f} "
                    f"| {o['wall']:.2f} | {w['wall']:.2f} | {o['wall'] / w['wall']:.2f} "
                    f"| {o['cpu']:.2f} | {w['cpu']:.2f} | {o['cpu'] / w['cpu']:.2f} "
                    f"| {'yes' if same else 'NO'} ({w['files']} files) |",
                    flush=True,
                )
                if not same:
                    print(json.dumps({"old": o, "new": w}), file=sys.stderr)


if __name__ == "__main__":
    main()
