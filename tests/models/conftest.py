"""Shared fixtures for model tests: seeded generators and the published reference data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

#: ``../shared/reference`` seen from the project checkout (read in place, never copied).
REFERENCE_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference"


@pytest.fixture
def rng() -> np.random.Generator:
    """A fixed-seed generator (tests must pass for any seed; this one keeps runs identical)."""
    return np.random.default_rng(20260601)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The reference data folder; skips the test when it is not available."""
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"reference data not found at {REFERENCE_DIR.resolve()}")
    return REFERENCE_DIR
