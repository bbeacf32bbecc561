"""``tumorscope demo`` uses the machine's cores by default."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from tumorscope.cli import study as study_cli


def test_default_workers_follows_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert study_cli.default_workers() == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert study_cli.default_workers() == 1


def test_default_workers_is_serial_without_dask(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "distributed" else real(name)
    )
    assert study_cli.default_workers() == 1


def test_demo_refuses_zero_workers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tumorscope.cli import app

    res = CliRunner().invoke(
        app, ["demo", "--out", str(tmp_path / "d"), "--size", "tiny", "--workers", "0"]
    )
    assert res.exit_code == 2, res.output
    assert "--workers" in res.output
    assert not (tmp_path / "d").exists()  # refused before anything is written
