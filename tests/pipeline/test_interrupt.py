"""A run killed mid-way resumes: no duplicate rows, no half-written files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from tumorscope.pipeline import run_study
from tumorscope.study import default_url, open_store


def _done_lines(out: Path) -> int:
    logs = list((out / "logs").glob("run-*.log"))
    return sum(p.read_text().count(" done: ") for p in logs)


def test_killed_run_resumes_without_duplicates(
    study2: Path, tmp_path: Path, quick: dict[str, Any]
) -> None:
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "tumorscope",
        "run",
        str(study2),
        "--out",
        str(out),
        "--steps",
        "register,fit_dwi,measure,assess",
        "--dwi-models",
        "adc",
        "--no-report",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while _done_lines(out) < 3 if out.exists() else True:
            if proc.poll() is not None:
                pytest.fail(f"the run ended before it could be killed: {proc.stderr.read()!r}")
            if time.monotonic() > deadline:
                pytest.fail("the run did not get going within 120 s")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    store = open_store(default_url(out))
    killed = store.read_table("runs")
    assert killed["status"].tolist() == ["running"]  # it never got to record its end
    n_before = len(store.read_table("step_runs"))
    assert 3 <= n_before < 15

    s = run_study(study2, out, **quick)
    assert s.ok
    assert len(s.skipped) >= n_before - 1  # at most the unit in flight is redone
    counts = store.counts()
    assert counts["subjects"] == 2 and counts["visits"] == 8
    assert counts["maps"] == 8 * 2  # ADC and S0 of every visit, once
    assert counts["step_runs"] == 15  # 2 register, 8 fit_dwi, 2 measure, 2 assess, 1 report
    maps = store.read_table("maps")
    assert not maps.duplicated(["subject", "visit", "model", "parameter"]).any()
    # no temporary file left (nor the lock's holder record), every image complete
    leftovers = [p for p in out.rglob(".*") if p.is_file()]
    assert sorted(p.name for p in leftovers) == [".tumorscope-output.json", ".tumorscope.lock"]
    for p in out.rglob("*.nii.gz"):
        assert np.asanyarray(nib.load(p).dataobj).size > 0
    store.close()
