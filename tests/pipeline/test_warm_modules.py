"""The modules a local cluster's workers import before their first subject
(``pipeline.executor.WARM_MODULES``) exist: ``_import_all`` skips a module it cannot import
(an extra not installed), so a misspelt name would silently warm nothing."""

from __future__ import annotations

import importlib.util

import pytest

from tumorscope.pipeline.executor import WARM_MODULES, _import_all


def test_every_warm_module_is_found() -> None:
    missing = [name for name in WARM_MODULES if importlib.util.find_spec(name) is None]
    assert missing == []


def test_a_module_that_cannot_be_imported_is_skipped() -> None:
    pytest.importorskip("sklearn")
    assert _import_all(("sklearn.cluster", "tumorscope_no_such_module")) == 1
