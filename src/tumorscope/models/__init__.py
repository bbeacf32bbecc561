"""Signal models and their fits.

Every model is a small class holding the acquisition (protocol values) and options, never
data: ``Model(...).fit(data, mask=None) -> FitResult``. Models are registered by name (see
:func:`tumorscope.models.base.get_model`).

The public names below are imported lazily so that ``import tumorscope.models`` stays cheap;
each lives in the module named in ``_LAZY``.
"""

from __future__ import annotations

from .._lazy import lazy_attributes

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


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
