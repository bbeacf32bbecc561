"""What machine a benchmark ran on: the CPU model, its cores and clock, and two short
yardsticks (one core), printed beside the ratios.

The ratios of issue 21 are not machine-independent: target 1 compares compute (the fits)
with I/O (decompressing the images), target 7 a serial run's use of the second core with
two workers'. The same tree measured 11.4× (target 1) on the machine of session 8 and
14.6–15.9× on that of session 9, whose CPU ran the compiled fits 1.6–1.9× slower and the
reads only 1.2–1.5× slower. Printing the machine (and a fixed workload's seconds) with each
run makes the figures of two sessions comparable.
"""

from __future__ import annotations

import os
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


def describe() -> str:
    """One line: CPU model, cores, load, yardsticks (s, lower is faster)."""
    y = yardsticks()
    return (
        f"machine: {cpu_model()}; {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}; "
        f"yardsticks (one core, s): python {y['python']:.3f}, numpy {y['numpy']:.3f}"
    )


if __name__ == "__main__":
    print(describe())
