"""The machine's busy cores through one ``run_study``, every 0.1 s: where a run leaves cores idle.

Runs the pipeline on a study in a fresh Python process (serial, or on a local Dask cluster
with ``--workers``) and samples the machine-wide CPU (``/proc/stat``: Linux only) every 0.1 s
meanwhile; prints one digit per sample (8 = every core busy on a 2-core machine: the digit is
``round(8 × busy fraction)``) and the time from which all cores were first busy for 0.3 s.
Meant for a quiet machine: another job's CPU shows as the run's.

Run::

    python benchmarks/cpu_timeline.py STUDY [--workers 2] [--one-unit]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_RUN = """
import sys
from tumorscope.pipeline import run_study
if __name__ == "__main__":
    run_study(sys.argv[1], sys.argv[2], workers=int(sys.argv[3]) or None, report=False)
"""


def _cpu() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), v[3] + v[4]  # total, idle + iowait


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--one-unit", action="store_true", help="TUMORSCOPE_STEP_CONCURRENCY=1")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cpu_timeline_"))
    try:
        script = tmp / "run.py"
        script.write_text(_RUN)
        env = dict(os.environ)
        if args.one_unit:
            env["TUMORSCOPE_STEP_CONCURRENCY"] = "1"
        t0 = time.time()
        cmd = [sys.executable, str(script), str(args.study), str(tmp / "out"), str(args.workers)]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
        busy: list[float] = []
        prev = _cpu()
        while proc.poll() is None:
            time.sleep(0.1)
            cur = _cpu()
            total, idle = cur[0] - prev[0], cur[1] - prev[1]
            busy.append(1 - idle / total if total else 0.0)
            prev = cur
        wall = time.time() - t0
        if proc.returncode:
            sys.exit(f"the run failed (exit code {proc.returncode})")
        digits = "".join(str(min(9, round(8 * u))) for u in busy)
        full = next((k for k in range(len(busy) - 2) if min(busy[k : k + 3]) >= 0.85), None)
        print(f"wall {wall:.2f} s; all cores busy from {'-' if full is None else full / 10} s")
        for i in range(0, len(digits), 100):
            print(f"{i / 10:6.1f} s {digits[i : i + 100]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
