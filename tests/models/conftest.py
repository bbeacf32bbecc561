"""Shared fixtures for model tests: seeded generators and the published reference data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

#: The published reference data copied into the repository (see its README.md for source,
#: commit and licence). Never skipped: a missing file is a failing test.
REFERENCE_DIR = Path(__file__).resolve().parents[1] / "data" / "reference"


@pytest.fixture
def rng() -> np.random.Generator:
    """A fixed-seed generator (tests must pass for any seed; this one keeps runs identical)."""
    return np.random.default_rng(20260601)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The reference data folder ``tests/data/reference``."""
    return REFERENCE_DIR
