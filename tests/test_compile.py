"""The numba kernel warm-up (``tumorscope._compile``): it compiles the listed kernels into an empty
cache, a second process loads them (no compilation), a kernel that fails does not stop the
others, and a kernel another process holds (its file lock) is waited for, not compiled twice.

The compile-and-load test runs in child processes on a private, empty ``NUMBA_CACHE_DIR`` (the
"fresh install"); the lock tests run in this process (its numba cache). All use a small subset
of the table (two cheap kernels), so as to stay fast; the whole table is checked against the
sources without compiling.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import tumorscope
from tumorscope._compile import KERNELS, Kernel, lock_dir, parse_signature, warm_kernels

pytest.importorskip("numba")

#: Two cheap lazily compiled kernels of the table (about a second each), of a module that
#: compiles nothing at import (nor imports one that does).
CHEAP = ("fixed_point_normal", "peak_signal")
SUBSET = tuple(k for k in KERNELS if k.name in CHEAP)

_WARM = """
import json, sys
from tumorscope._compile import KERNELS, warm_kernels
names = sys.argv[1].split(",")
r = warm_kernels([k for k in KERNELS if k.name in names], start=int(sys.argv[2]))
print(json.dumps({"warmed": sorted(r.warmed), "compiled": r.compiled, "failed": r.failed,
                  "waited": r.waited}))
"""


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["NUMBA_CACHE_DIR"] = str(cache)
    src = str(Path(tumorscope.__file__).parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    return env


def _warm_in_process(cache: Path, names: tuple[str, ...], start: int = 0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WARM, ",".join(names), str(start)],
        env=_env(cache),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def test_the_table_names_real_kernels_with_signatures_of_their_arity() -> None:
    """Each entry's module exists, defines the function, and each signature parses to as many
    types as the function has parameters (checked on the source: no compilation here)."""
    assert len(SUBSET) == len(CHEAP)
    assert len({k.key for k in KERNELS}) == len(KERNELS)
    for kernel in KERNELS:
        spec = importlib.util.find_spec(kernel.module)
        assert spec is not None and spec.origin, kernel.module
        tree = ast.parse(Path(spec.origin).read_text())
        defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        for n in tree.body:  # ``name = _serial(kernel, ...)``: a variant of a kernel
            if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call) and n.value.args:
                first = n.value.args[0]
                if isinstance(first, ast.Name) and first.id in defs:
                    defs.update(
                        {t.id: defs[first.id] for t in n.targets if isinstance(t, ast.Name)}
                    )
        if not kernel.name:
            assert not kernel.signatures
            continue
        assert kernel.name in defs, kernel.key
        n_params = len(defs[kernel.name].args.args)
        assert kernel.signatures, kernel.key
        for text in kernel.signatures:
            assert len(parse_signature(text)) == n_params, (kernel.key, text)
    # longest first among the lazily compiled kernels (the processes then finish together)
    lazy = [k.seconds for k in KERNELS if k.name]
    assert lazy == sorted(lazy, reverse=True)


def test_warm_up_compiles_into_an_empty_cache_and_a_second_process_loads_it(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "numba-cache"
    first = _result(_warm_in_process(cache, CHEAP))
    assert first["failed"] == {}
    assert sorted(first["compiled"]) == sorted(k.key for k in SUBSET)
    written = {p.name.split(".")[1].rsplit("-", 1)[0] for p in cache.rglob("*.nbi")}
    assert set(CHEAP) <= written  # one index per kernel in the (private) cache
    second = _result(_warm_in_process(cache, CHEAP))
    assert second["failed"] == {} and sorted(second["warmed"]) == sorted(k.key for k in SUBSET)
    assert second["compiled"] == []  # loaded from the cache the first process wrote


def test_a_kernel_that_fails_to_warm_up_does_not_stop_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "warm_probe.py").write_text(
        textwrap.dedent(
            """
            import numba

            @numba.njit(cache=True)
            def add_one(x):
                return x + 1.0

            @numba.njit(cache=True)
            def broken(x):
                return x + "a"
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    table = (
        Kernel("warm_probe_missing_module", "f", ("(float64,)",)),
        Kernel("warm_probe", "no_such_kernel", ("(float64,)",)),
        Kernel("warm_probe", "broken", ("(float64,)",)),  # numba's typing fails: float + str
        Kernel("warm_probe", "add_one", ("(float64,)",)),
    )
    report = warm_kernels(table, locks=tmp_path / "locks")
    assert set(report.failed) == {k.key for k in table[:3]}
    assert "TypingError" in report.failed["warm_probe.broken"]
    assert list(report.warmed) == ["warm_probe.add_one"]
    import numba
    import warm_probe

    assert warm_probe.add_one.signatures == [(numba.float64,)]  # compiled by the warm-up
    assert warm_probe.add_one(1.0) == 2.0


def test_a_kernel_held_by_another_process_is_waited_for_then_loaded(tmp_path: Path) -> None:
    """Another process holds the lock of one kernel (as a worker compiling it would): the
    warm-up first does the free kernel, then waits for the held one; when the lock is released
    it warms it (compiles it, or loads what the holder would have written)."""
    locks = tmp_path / "locks"
    locks.mkdir()
    held = SUBSET[0]
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom filelock import FileLock\n"
            "with FileLock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(2.0)\n",
            str(locks / f"{held.key}.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    t0 = time.perf_counter()
    report = warm_kernels(SUBSET, locks=locks)
    waited_s = time.perf_counter() - t0
    holder.wait(timeout=30)
    assert report.failed == {}
    assert report.waited == [held.key]
    assert list(report.warmed) == [SUBSET[1].key, held.key]  # the free one first
    assert waited_s > 1.0  # it did wait for the holder


def test_a_kernel_held_too_long_is_left_to_its_first_call(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    locks.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom filelock import FileLock\n"
            "with FileLock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(10.0)\n",
            str(locks / f"{SUBSET[0].key}.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        report = warm_kernels(SUBSET, locks=locks, timeout=0.3)
    finally:
        holder.kill()
        holder.wait()
    assert set(report.failed) == {SUBSET[0].key}
    assert "lock held" in report.failed[SUBSET[0].key]
    assert list(report.warmed) == [SUBSET[1].key]


def test_lock_dir_follows_numba_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import numba

    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path), raising=False)
    assert lock_dir() == tmp_path / "tumorscope-warm-up-locks"
    monkeypatch.setattr(numba.config, "CACHE_DIR", "", raising=False)
    assert lock_dir().parent == Path(__import__("tempfile").gettempdir())


def test_a_kernel_waits_for_the_modules_its_import_compiles() -> None:
    """Read from the sources: the kernel modules import ``fitting._lm_numba`` (compiled at
    import), ``dce._varpro`` also ``dce._kernels``; a kernel of a module compiled at import
    needs that module; the metabolic kernels need none (no module of theirs compiles)."""
    from tumorscope._compile import _needs

    by_key = {k.key: k for k in KERNELS}
    root = "tumorscope.fitting._lm_numba"
    assert _needs(by_key[root], KERNELS) == set()
    assert _needs(by_key["tumorscope.models.dce._kernels"], KERNELS) == {root}
    assert _needs(by_key["tumorscope.models.dce._varpro.tofts_varpro"], KERNELS) == {
        root,
        "tumorscope.models.dce._kernels",
    }
    assert _needs(by_key["tumorscope.models.cest._varpro.lorentzian_varpro"], KERNELS) == {
        root,
        "tumorscope.models.cest._numba",
    }
    assert _needs(SUBSET[0], KERNELS) == set()


def _ast_imports(module: str, source: str) -> set[str]:
    """What the regular expressions of ``_source_imports`` stand for: the top-level
    ``Import``/``ImportFrom`` nodes of ``ast.parse`` (how ``_imports`` read them before)."""
    parts = module.split(".")
    found: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(parts[: len(parts) - node.level]) if node.level else ""
            name = ".".join(x for x in (base, node.module or "") if x)
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def test_source_imports_read_the_top_level_imports_as_ast_does() -> None:
    from tumorscope._compile import _source_imports

    root = Path(tumorscope.__file__).parent
    n = 0
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        source = path.read_text(encoding="utf-8")
        assert _source_imports(module, source) == _ast_imports(module, source), module
        n += 1
    assert n > 200
    tricky = textwrap.dedent(
        '''\
        """Docstring.
        import → analyse → export, from the start
        """
        import os, sys as system  # comment
        import numpy.linalg
        from . import a, b as c
        from ..pkg.mod import (
            x,  # one
            y as z,
        )
        from .sub import *
        try:
            import indented
        except ImportError:
            pass
        def f():
            from inside import no
        '''
    )
    got = _source_imports("tumorscope.models.m", tricky)
    assert got == _ast_imports("tumorscope.models.m", tricky)
    assert "tumorscope.pkg.mod.x" in got and "indented" not in got and "inside" not in got
