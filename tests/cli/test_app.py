"""The command line as a whole (`cli/__init__.py`: help, version, the console script) and the
study commands of `cli/study.py` (phantom)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tumorscope import __version__
from tumorscope.cli import app

runner = CliRunner()


def test_help_lists_subcommands() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("phantom", "validate", "demo"):
        assert cmd in res.output


def test_version() -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0
    assert res.output.strip() == f"tumorscope {__version__}"


def test_console_script_starts() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tumorscope", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert __version__ in out.stdout


def test_phantom_command_and_bad_size(tmp_path: Path) -> None:
    res = runner.invoke(app, ["phantom", str(tmp_path / "s"), "--size", "tiny", "--subjects", "1"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "s/study.yaml").exists()
    again = runner.invoke(app, ["phantom", str(tmp_path / "s"), "--size", "tiny"])
    assert again.exit_code == 2 and "output folder exists" in again.output
    bad = runner.invoke(app, ["phantom", str(tmp_path / "t"), "--size", "huge"])
    assert bad.exit_code == 2 and "unknown phantom size 'huge'" in bad.output
    assert not (tmp_path / "t").exists()
    assert not any(p.name.startswith(".t-") for p in tmp_path.iterdir())


def test_a_crash_anywhere_in_the_console_script_exits_2_without_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 1 means "the job ran and found problems"; a crash outside a command's own error
    handling must not look like that."""
    import tumorscope.cli as cli

    def boom() -> None:
        raise RuntimeError("printing failed")

    monkeypatch.setattr(cli, "app", boom)
    monkeypatch.delenv("TUMORSCOPE_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "internal error (RuntimeError: printing failed)" in err and "Traceback" not in err
