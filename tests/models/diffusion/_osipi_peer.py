"""Load an algorithm of the OSIPI TF2.4 IVIM code collection (PyPI ``osipi-ivim``).

``osipi-ivim`` 0.1.0 installs its three source folders as top-level packages (``wrappers``,
``standardized``, ``original``) while their modules import each other as ``src.wrappers...``,
``src.original...`` (the layout of the source repository). :func:`osipi_algorithm` makes
``src`` a namespace whose path is the folder holding those packages, then imports
``src.standardized.<name>`` as the collection's own ``OsipiBase.osipi_initiate_algorithm``
does. ``benchmarks/bench_osipi_ivim.py`` carries the same loader.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import Any


def osipi_algorithm(name: str) -> Any:
    """The class ``name`` of ``src/standardized/<name>.py`` (raises ImportError without it)."""
    import wrappers  # the osipi-ivim package

    root = str(Path(wrappers.__file__).resolve().parents[1])
    src = sys.modules.get("src")
    if src is None or not hasattr(src, "__path__"):
        src = types.ModuleType("src")
        src.__path__ = [root]
        sys.modules["src"] = src
    elif root not in list(src.__path__):
        src.__path__.append(root)
    return getattr(importlib.import_module(f"src.standardized.{name}"), name)
