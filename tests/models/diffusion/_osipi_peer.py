"""Load the reference algorithm of the OSIPI TF2.4 IVIM code collection for the tests.

The peer is vendored, unmodified, in ``tests/_vendor/osipi_ivim`` (with its Apache-2.0
licence; see the README there): ``TF_reference_IVIMfit``, the segmented fit it wraps and the
collection's ``OsipiBase``, copied from PyPI ``osipi-ivim`` 0.1.0. Vendored rather than
installed because the package's metadata pull torch and its CUDA wheels (~3 GB) for
deep-learning algorithms the test does not use; a fresh clone runs the test with the ``test``
extra alone (``statsmodels``, ``joblib``, ``tqdm``, ``scipy``). The benchmark
(``benchmarks/bench_osipi_ivim.py``) runs the whole collection from an installed
``osipi-ivim``.

The collection's modules import each other as ``src.wrappers…``, ``src.original…`` (the
layout of its source repository): :func:`osipi_algorithm` makes ``src`` a namespace whose
path is the vendored folder, then imports ``src.standardized.<name>`` as the collection's own
``OsipiBase.osipi_initiate_algorithm`` does.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import Any

VENDORED = Path(__file__).resolve().parents[2] / "_vendor" / "osipi_ivim"


def osipi_algorithm(name: str) -> Any:
    """The class ``name`` of the vendored ``standardized/<name>.py``."""
    root = str(VENDORED)
    src = sys.modules.get("src")
    if src is None or not hasattr(src, "__path__"):
        src = types.ModuleType("src")
        src.__path__ = [root]
        sys.modules["src"] = src
    elif root not in list(src.__path__):
        src.__path__.insert(0, root)
    return getattr(importlib.import_module(f"src.standardized.{name}"), name)
