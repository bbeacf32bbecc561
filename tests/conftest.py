"""Shared fixtures: a tiny synthetic study written once per test session (per xdist worker)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny phantom study (6 subjects, 32×32×6 voxels). Treat as read-only."""
    from tumorscope.phantom import make_study

    return make_study(tmp_path_factory.mktemp("phantom") / "study", size="tiny", seed=0)


@pytest.fixture
def study_copy(tiny_study: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny study that a test may break."""
    import shutil

    dst = tmp_path / "study"
    shutil.copytree(tiny_study, dst)
    return dst
