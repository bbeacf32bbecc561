"""Compile the numba kernels a run uses before the first subject needs them, once per machine.

A fresh install has an empty numba cache: every kernel is compiled at its first call (about
90 CPU-s for the demo's kernels), and every worker process of a Dask run compiled all of them,
each for itself. :func:`warm_kernels` compiles the kernels of :data:`KERNELS` (or loads them
from numba's on-disk cache when another process has already written them) in the calling
process. Several processes warming up together share the work: a process takes a kernel only
under that kernel's file lock (``filelock``), skips kernels another process holds and comes
back to them at the end, when it waits for the lock and then loads what the other process
wrote. So two processes never compile one kernel at once (numba's cache index is read,
updated and written back without a lock: two processes writing different signatures of one
function at once may lose one of them), and the total compilation is paid once, shared
between the processes.

The table names each kernel with the signatures the stages call it with (dtypes, layouts):
the warm-up compiles exactly these (``dispatcher.compile(signature)``), so the stages' calls
find them and nothing is compiled again; a kernel called with another signature, or missing
from the table, is compiled at its first call as before. A kernel whose warm-up fails is
skipped (the failure is returned, the run goes on). The warm-up only compiles: results are
unchanged. ``benchmarks/bench_first_run.py --record`` regenerates the table (it records every
compilation of a demo run with numba's event API) and checks, after a warmed-up run, that the
run compiled nothing more.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["KERNELS", "Kernel", "WarmReport", "lock_dir", "warm_kernels"]


@dataclass(frozen=True)
class Kernel:
    """A compiled kernel (or a module of them) and the signatures a run calls it with.

    ``name`` empty: the module's kernels are compiled when it is imported (``@njit(signature)``),
    so the warm-up imports it. ``seconds``: the compilation time measured on the reference
    machine (2 vCPUs), used to start with the longest (the processes finish together).
    """

    module: str
    name: str
    signatures: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.module}.{self.name}" if self.name else self.module


# The modules that compile at import come first: the others import them (fitting._lm_numba
# first of all), so that no process compiles them again inside another kernel's lock.
#: The kernels of a ``tumorscope demo`` run (tiny and default phantom sizes), with the
#: signatures the stages call them with; compilation seconds measured on a fresh cache.
# fmt: off
KERNELS: tuple[Kernel, ...] = (
    Kernel("tumorscope.fitting._lm_numba", "", (), 6.3),
    Kernel("tumorscope.models.dce._kernels", "", (), 3.8),
    Kernel("tumorscope.models.diffusion._numba", "", (), 2.2),
    Kernel("tumorscope.models.cest._numba", "", (), 0.7),
    Kernel("tumorscope.models.relaxometry._numba", "", (), 0.7),
    Kernel("tumorscope.models.cest._varpro", "lorentzian_varpro", ("(float64[::1], int64, float64[:, ::1], float64[:, ::1], float64[::1], float64[::1], float64[::1], int64, float64, float64, uint8[::1], float64[::1], float64[:, ::1], int32[::1])",), 31.4),
    Kernel("tumorscope.models.cest._numba", "lorentz_slope_lm", ("(float64[::1], float64[:, ::1], float64[:, ::1], float64[::1], float64[::1], float64[::1], int64, float64, float64, uint8[::1], float64[::1], float64[:, ::1], int32[::1])",), 15.9),
    Kernel("tumorscope.models.relaxometry._ir_numba", "_ir_block", ("(float64[:, ::1], float64[::1], int64[::1], float64[::1], boolean, float64[:, ::1], float64[::1], boolean[::1], float64[:, ::1])",), 12.2),
    Kernel("tumorscope.models.relaxometry._rician_numba", "_rician_block", ("(float64[:, ::1], float64[::1], float64, float64, float64, float64, float64[::1], float64[::1], float64[::1], int64, float64, float64, float64[:, ::1], uint8[::1], float64[::1], float64[:, ::1])",), 9.6),
    Kernel("tumorscope.models.relaxometry._varpro_numba", "_monoexp_block", ("(float64[:, ::1], float64[::1], float64[::1], boolean, float64[:, ::1], float64[::1], boolean[::1], float64[:, ::1])",), 9.4),
    Kernel("tumorscope.models.diffusion._ivim_varpro_numba", "fixed_d_varpro", ("(float64[:, ::1], float64[::1], float64[::1], float64[::1], float64[:, ::1], float64[:, ::1], float64, float64, int64, float64, float64[:, ::1], float64[:, ::1])",), 8.4),
    Kernel("tumorscope.models.cest._b0_numba", "wassr_varpro", ("(float64[::1], float64[:, ::1], float32[:, ::1], int64[::1], float64[::1], float64, int64, float64, float64, float64[::1], uint8[::1])",), 6.7),
    Kernel("tumorscope.models.dce._varpro", "tofts_varpro", ("(Array(float64, 1, 'C', True, aligned=True), Array(float64, 1, 'C', True, aligned=True), float64[:, ::1], boolean, float64[::1], float64[::1], omitted(1e-05))",), 6.7),
    Kernel("tumorscope.preprocessing._rigid_numba", "euler_matrices", ("(float64[::1],)",), 5.4),
    Kernel("tumorscope.preprocessing._rigid_numba", "optimise_level", ("(float64[::1], float64[::1], float64[:, ::1], int64[::1], float32[:, :, :, ::1], float64[:, ::1], float64, float64, float64[::1], float64, float64, int64, float64)",), 4.9),
    Kernel("tumorscope.models.metabolic._hp13c_numba", "fit_range", ("(float64[:, ::1], boolean[::1], int64, int64, float64[::1], float64[::1], float64[::1], float64[::1], float64[::1], float64, float64, int64, float64, float32[:, ::1], float32[:, ::1], float32[::1], uint8[::1], float64[::1], float32[::1])",), 4.5),
    Kernel("tumorscope.models.diffusion._adc_numba", "adc_fit_range", ("(float32[::1], boolean, boolean[::1], boolean, int64, int64, float64[::1], float32[::1], float32[::1], float32[::1], boolean, float64, float64, float32[::1], float32[::1], float32[::1], float32[::1], float32[::1], uint8[::1], int64[::1])",), 4.2),
    Kernel("tumorscope.models.cest._numba", "lorentzian_start", ("(float64[::1], int64, float64[:, ::1], float64[:, ::1], float64[::1], float64[::1], float64[::1])",), 3.3),
    Kernel("tumorscope.models.cest._b0_numba", "spline_rows", ("(float64[::1], float64[:, ::1], float32[:, ::1], float64[:, ::1], float64[:, ::1])",), 2.8),
    Kernel("tumorscope.models.dce._signal_numba", "concentration_rows", ("(float32[::1, :], float64[::1], float64[::1], int64, int64, float64, float64, float32[::1, :], uint8[::1], boolean[::1])",), 2.7),
    Kernel("tumorscope.models.dce._kernels", "murase_many", ("(float64[::1], float64[::1], float64[:, ::1], boolean)",), 2.2),
    Kernel("tumorscope.models.cest._b0_numba", "normalised_rows", ("(float32[::1, :], int64[::1], int64[::1], int64[::1], float32[:, ::1], float64, float32[:, ::1])",), 1.0),
    Kernel("tumorscope.models.cest._b0_numba", "minimum_and_half", ("(float32[:, ::1], float64[::1], int64[::1], int64[::1], float64[::1])",), 1.0),
    Kernel("tumorscope.preprocessing._rigid_numba", "with_gradient", ("(float32[:, :, ::1],)",), 1.0),
    Kernel("tumorscope.models.metabolic._hp13c_numba", "fixed_point_normal", ("(float64[:, ::1], float64[:, ::1], float64[::1], float64[::1], float64[::1], float64[::1], float64[::1], Array(float64, 1, 'C', True, aligned=True), float64, int64)",), 1.0),
    Kernel("tumorscope.models.diffusion._numba", "loglinear_block_serial", ("(float64[:, ::1], float64[:, ::1], float64[::1], int64[::1], boolean, float64, float64, float64[:, ::1], float64[:, ::1], float64[::1], uint8[::1])",), 0.6),
    Kernel("tumorscope.models.diffusion._numba", "ivim_grid_init_serial", ("(float64[:, ::1], float64[::1], float64[::1], float64[:, ::1], float64[::1], float64[:, ::1])",), 0.4),
    Kernel("tumorscope.models.metabolic._hp13c_numba", "peak_signal", ("(float64[:, ::1], float64[::1], float64[::1], float64[::1], float64[::1], float64[::1], Array(float64, 1, 'C', True, aligned=True), float64[::1], float64[::1], float64[::1])",), 0.4),
)
# fmt: on


@dataclass
class WarmReport:
    """What :func:`warm_kernels` did in one process."""

    warmed: dict[str, float] = field(default_factory=dict)  # key -> seconds (compiled or loaded)
    compiled: list[str] = field(default_factory=list)  # kernels compiled here (cache misses)
    failed: dict[str, str] = field(default_factory=dict)  # key -> error message
    waited: list[str] = field(default_factory=list)  # keys another process held first
    seconds: float = 0.0


def parse_signature(text: str) -> tuple[Any, ...]:
    """The numba argument types of a signature of :data:`KERNELS` (``"(float64[::1], int64)"``)."""
    from numba.core import types

    namespace = dict(vars(types))
    namespace["omitted"] = types.Omitted
    value = eval(text, {"__builtins__": {}}, namespace)  # a table of this module, not user input
    return tuple(value) if isinstance(value, tuple) else (value,)


def lock_dir() -> Path:
    """Where the warm-up's lock files go: next to the numba cache when ``NUMBA_CACHE_DIR`` is
    set, else in the temporary folder (one set of locks per user)."""
    import numba

    base = str(getattr(numba.config, "CACHE_DIR", "") or "")
    if base:
        return Path(base) / "tumorscope-warm-up-locks"
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"tumorscope-warm-up-locks-{uid}"


#: A top-level ``from … import …`` statement (at the start of a line; names in parentheses
#: may span lines) and a top-level ``import …`` statement, as :func:`_imports` reads them.
_FROM_RE = re.compile(r"^from[ \t]+(\.*)([\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n]*)", re.M)
_IMPORT_RE = re.compile(r"^import[ \t]+([^\n]*)", re.M)
_NAME_RE = re.compile(r"[A-Za-z_][\w.]*|\*")


def _names(text: str) -> list[str]:
    """The imported names of an import statement's tail (``a as b, c`` or ``(a,\n b)``)."""
    text = re.sub(r"#[^\n]*", "", text).strip("()\\ \t\n").replace("\n", ",")
    names = [n.split(" as ")[0].strip() for n in text.split(",")]
    return [n for n in names if _NAME_RE.fullmatch(n)]


@functools.cache
def _imports(module: str) -> frozenset[str]:
    """The modules ``module`` imports at its top level (read from its source, not imported).

    The statements that start a line of the source (top-level ones: an import inside a
    function, a ``try`` or an ``if`` is indented), read with regular expressions: the same
    set as the top-level ``Import``/``ImportFrom`` nodes of ``ast.parse`` on every module of
    the package (tested), at a sixteenth of the time (``ast.parse`` of the modules a worker
    walks cost ~0.3 s of each Dask worker's start). A line of a docstring that reads like an
    import adds at most a module that does not exist (ignored: its spec is not found).
    """
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return frozenset()
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return frozenset()
    return frozenset(_source_imports(module, Path(spec.origin).read_text(encoding="utf-8")))


def _source_imports(module: str, source: str) -> set[str]:
    """The modules (and ``module.name`` of ``from module import name``) that the top-level
    import statements of ``source``, the source of ``module``, name (relative ones resolved)."""
    parts = module.split(".")
    found: set[str] = set()
    for m in _IMPORT_RE.finditer(source):
        found.update(_names(m.group(1)))
    for m in _FROM_RE.finditer(source):
        level, name = len(m.group(1)), m.group(2)
        if not level and not name:
            continue
        base = ".".join(parts[: len(parts) - level]) if level else ""
        name = ".".join(x for x in (base, name) if x)
        found.add(name)
        found.update(f"{name}.{alias}" for alias in _names(m.group(3)))  # from . import x
    return found


def _needs(kernel: Kernel, table: Sequence[Kernel]) -> set[str]:
    """The modules of ``table`` that compile at import and that importing ``kernel``'s module
    imports (through the top-level imports of its source): ``fitting._lm_numba`` for every
    module that takes its model signature, ``dce._kernels`` for ``dce._varpro``, ... A process
    takes a kernel only once these are imported here, so that it never compiles them outside
    their own lock (an import this misses costs a compilation twice, not a wrong result)."""
    eager = {k.module for k in table if not k.name}
    seen: set[str] = set()
    todo = [kernel.module]
    while todo:
        for name in _imports(todo.pop()):
            if name.startswith("tumorscope.") and name not in seen:
                seen.add(name)
                todo.append(name)
    if kernel.name:
        seen.add(kernel.module)  # a kernel of a module that compiles at import
    else:
        seen.discard(kernel.module)
    return seen & eager


def _warm(kernel: Kernel) -> bool:
    """Import the kernel's module (compiling its import-time kernels) and compile (or load)
    each signature; whether a signature was compiled (not found in the cache)."""
    module = importlib.import_module(kernel.module)
    if not kernel.name:
        return False
    dispatcher = getattr(module, kernel.name)
    misses = sum(dispatcher.stats.cache_misses.values())
    for text in kernel.signatures:
        dispatcher.compile(parse_signature(text))
    return bool(sum(dispatcher.stats.cache_misses.values()) > misses)


def warm_kernels(
    kernels: Sequence[Kernel] = KERNELS,
    *,
    start: int = 0,
    timeout: float = 600.0,
    locks: Path | None = None,
) -> WarmReport:
    """Compile (or load from numba's cache) every kernel of ``kernels`` in this process.

    Parameters
    ----------
    kernels : sequence of Kernel
        What to warm up, longest first (:data:`KERNELS`).
    start : int
        Where this process starts in ``kernels`` (worker ``i``: ``i``): processes warming up
        together take the longest free kernel next, each its own (greedy longest-first).
    timeout : float
        Seconds to wait for a kernel another process holds; then it is left to its first call.
    locks : Path, optional
        Folder of the lock files (default :func:`lock_dir`).

    Returns
    -------
    WarmReport
        The kernels warmed up here, those that failed (with the error), those another process
        held first. Never raises for a kernel: a failure is reported and the kernel is
        compiled at its first call, as without a warm-up.
    """
    from filelock import FileLock, Timeout

    t0 = time.perf_counter()
    report = WarmReport()
    try:
        import numba  # noqa: F401
    except ImportError:  # pragma: no cover - numba is in the 'fast' extra
        report.failed["numba"] = "numba is not installed"
        return report
    folder = locks if locks is not None else lock_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        report.failed["locks"] = f"cannot create {folder}: {exc}"
        return report
    n = len(kernels)
    order = [kernels[(start + i) % n] for i in range(n)]
    needs = {k.key: _needs(k, kernels) for k in order}
    done: set[str] = set()  # warmed, failed or given up here
    tried: set[str] = set()  # found held by another process once

    def attempt(kernel: Kernel, wait: float) -> bool:
        """Warm ``kernel`` under its lock; False if another process holds it (``wait`` s)."""
        try:
            with FileLock(str(folder / f"{kernel.key}.lock"), timeout=wait):
                t = time.perf_counter()
                try:
                    if _warm(kernel):
                        report.compiled.append(kernel.key)
                    report.warmed[kernel.key] = time.perf_counter() - t
                except Exception as exc:  # left to its first call
                    report.failed[kernel.key] = f"{type(exc).__name__}: {exc}"
        except Timeout:
            if wait > 0:
                report.failed[kernel.key] = f"lock held elsewhere for {timeout} s"
                return True
            if kernel.key not in tried:
                tried.add(kernel.key)
                report.waited.append(kernel.key)
            return False
        return True

    pending = list(order)
    while pending:
        # the longest free kernel whose modules are imported here; if every ready one is
        # held by another process, wait for the first (then load what that process wrote)
        ready = [k for k in pending if needs[k.key] <= done]
        taken = next((k for k in ready if attempt(k, 0)), None)
        if taken is None:
            taken = ready[0]
            attempt(taken, timeout)
        pending.remove(taken)
        done.add(taken.key)
    report.seconds = time.perf_counter() - t0
    return report
