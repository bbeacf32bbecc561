"""Signal models and their fits.

Every model is a small class holding the acquisition (protocol values) and options, never
data: ``Model(...).fit(data, mask=None) -> FitResult``. Models are registered by name (see
:func:`tumorscope.models.base.get_model`).

The public names below are imported lazily so that ``import tumorscope.models`` stays cheap;
each lives in the module named in ``_LAZY``.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    # base
    "Model": "base",
    "FitResult": "base",
    "ParameterSpec": "base",
    "get_model": "base",
    "list_models": "base",
    "register_model": "base",
    # diffusion
    "ADC": "diffusion",
    "IVIM": "diffusion",
    "DKI": "diffusion",
    # relaxometry
    "VFAT1": "relaxometry",
    "IRT1": "relaxometry",
    "T2": "relaxometry",
    "T2Star": "relaxometry",
    "T2Offset": "relaxometry",
    # DCE
    "Tofts": "dce",
    "ExtendedTofts": "dce",
    "Patlak": "dce",
    "TwoCXM": "dce",
    "TwoCUM": "dce",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tumorscope.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
