"""What machine a benchmark ran on: the CPU model, its cores and clock, and two short
yardsticks (one core), printed beside the ratios.

The ratios of issue 21 are not machine-independent: target 1 compares compute (the fits)
with I/O (decompressing the images), target 7 a serial run's use of the second core with
two workers'. The same tree measured 11.4× (target 1) on the machine of session 8 and
14.6–15.9× on that of session 9, whose CPU ran the compiled fits 1.6–1.9× slower and the
reads only 1.2–1.5× slower. Printing the machine (and a fixed workload's seconds) with each
run makes the figures of two sessions comparable.

A third yardstick is the filesystem's: the CPU a new file costs in the folder a benchmark
writes to (:func:`file_creation_ms`). On a journal-less ext4 (this project's build machines'
root filesystem) creating a file within minutes of a mass deletion scans past the recently
freed inodes: ~1 ms of kernel CPU per file instead of ~0.04 (docs/performance.md, session
11), and a run writes thousands of files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU model and clock of the first processor in ``cpuinfo`` (Linux's
    ``/proc/cpuinfo``; ``"unknown"`` where there is none)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return "unknown"
    model = mhz = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "cpu MHz" and not mhz:
            mhz = f"{float(value):.0f} MHz"
    return ", ".join(p for p in (model or "unknown", mhz) if p)


def yardsticks(repeats: int = 3) -> dict[str, float]:
    """Best-of-``repeats`` seconds of two fixed one-core workloads: ``python`` (an
    interpreter loop) and ``numpy`` (float64 exp and a sum over 4 M values, single-threaded
    ufuncs: no BLAS)."""
    import numpy as np

    x = np.linspace(0.0, 1.0, 4_000_000)

    def py() -> None:
        s = 0
        for i in range(2_000_000):
            s += i * i % 7

    def npy() -> None:
        for _ in range(5):
            float(np.exp(-x).sum())

    out = {}
    for name, fn in (("python", py), ("numpy", npy)):
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        out[name] = best
    return out


def file_creation_ms(folder: str | os.PathLike[str] | None = None, n: int = 200) -> float:
    """CPU milliseconds (the process's, kernel included) per 4 kB file written by
    tumorscope's own atomic writer (:func:`tumorscope.volume.atomic_write`: a temporary file,
    then a rename), every output's way, in a new folder under ``folder`` (default: the
    temporary folder), which is removed afterwards."""
    from tumorscope.volume import atomic_write

    where = Path(tempfile.mkdtemp(prefix="tumorscope-yardstick-", dir=folder))
    data = bytes(4096)
    try:
        t = time.process_time()
        for i in range(n):
            atomic_write(where / f"f{i}.bin", lambda tmp: tmp.write_bytes(data))
        return 1e3 * (time.process_time() - t) / n
    finally:
        shutil.rmtree(where, ignore_errors=True)


def describe(folder: str | os.PathLike[str] | None = None) -> str:
    """One line: CPU model, cores, load, yardsticks (s, lower is faster) and the CPU of a new
    file in ``folder`` (default: the temporary folder)."""
    y = yardsticks()
    return (
        f"machine: {cpu_model()}; {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}; "
        f"yardsticks (one core, s): python {y['python']:.3f}, numpy {y['numpy']:.3f}; "
        f"a new file {file_creation_ms(folder):.3f} ms CPU"
    )


if __name__ == "__main__":
    print(describe())
