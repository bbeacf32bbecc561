"""The architecture rules, checked: import contracts and a size limit per module.

The contracts live in ``pyproject.toml`` (``[tool.importlinter]``) and are run with the
``import-linter`` package (the ``test`` extra) in a subprocess, exactly as ``lint-imports`` would
run them from the repository root. The last tests show that the rules are real: the project's
own configuration on a throw-away skeleton of the package is kept, and broken by one forbidden
import.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
CONFIG = ROOT / "pyproject.toml"
#: Most lines a module may have (database migrations aside): split a longer one by job.
MAX_LINES = 800

_LINT = "from importlinter.cli import lint_imports_command as c; c(prog_name='lint-imports')"


def _lint_imports(src: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on ``CONFIG`` with the package found first in ``src``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-c", _LINT, "--no-cache", "--no-logo", str(CONFIG)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _contracts() -> list[dict]:
    return tomllib.loads(CONFIG.read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"]


def test_import_contracts_are_kept() -> None:
    r = _lint_imports(SRC, ROOT)
    report = r.stdout + r.stderr
    if r.returncode != 0:
        pytest.fail(f"import contracts of pyproject.toml not kept:\n{report}", pytrace=False)
    assert f"Contracts: {len(_contracts())} kept, 0 broken." in report


def test_no_module_is_over_the_line_limit() -> None:
    too_long = {}
    for path in sorted((SRC / "tumorscope").rglob("*.py")):
        rel = path.relative_to(SRC)
        if "migrations" in rel.parts:
            continue
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            too_long[rel.as_posix()] = n
    if too_long:
        lines = "\n".join(f"  src/{name}: {n} lines" for name, n in too_long.items())
        pytest.fail(f"modules over {MAX_LINES} lines (split them by job):\n{lines}", pytrace=False)


# ------------------------------------------------------------------ the rules are real
def _skeleton(root: Path) -> Path:
    """An empty ``tumorscope`` with every module the contracts name; returns its ``src``."""
    src = root / "src"
    names = {"tumorscope"}
    for c in _contracts():
        names.update(c["source_modules"], c["forbidden_modules"])
    for name in sorted(names):
        package = src.joinpath(*name.split("."))
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(f'"""{name} (skeleton)."""\n')
    return src


@pytest.mark.parametrize(
    ("path", "code", "broken"),
    [
        ("models/fit.py", "import numpy\nfrom tumorscope import fitting, protocol\n", None),
        (
            "models/fit.py",
            "def read():\n    from tumorscope.pipeline import steps\n",
            "tumorscope.models is not allowed to import tumorscope.pipeline",
        ),
        (
            "lesions/measure.py",
            "import tumorscope.phantom\n",  # and the phantom reads files:
            "tumorscope.lesions is not allowed to import tumorscope.io",
        ),
        (
            "report/html.py",
            "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
            "    from tumorscope.pipeline import Context\n",
            None,
        ),
    ],
    ids=["allowed", "function-local-import", "indirect-import", "type-checking-only"],
)
def test_a_forbidden_import_breaks_the_contracts(
    tmp_path: Path, path: str, code: str, broken: str | None
) -> None:
    """The project's configuration on a skeleton: kept as it is and with allowed imports,
    broken by a forbidden one, even inside a function or through another package; imports for
    type checkers only are no arrows."""
    src = _skeleton(tmp_path)
    (src / "tumorscope" / "phantom" / "__init__.py").write_text("import tumorscope.io\n")
    (src / "tumorscope" / path).write_text(textwrap.dedent(code))
    r = _lint_imports(src, tmp_path)
    report = r.stdout + r.stderr
    if broken is None:
        assert r.returncode == 0, report
        assert f"Contracts: {len(_contracts())} kept, 0 broken." in report
    else:
        assert r.returncode == 1, report
        assert broken in report
        assert f"Contracts: {len(_contracts()) - 1} kept, 1 broken." in report
