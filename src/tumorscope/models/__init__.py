"""Signal models and their fits.

Every model is a small class holding the acquisition (protocol values) and options, never
data: ``Model(...).fit(data, mask=None) -> FitResult``. Models are registered by name (see
:func:`tumorscope.models.base.get_model`).

The public names below are imported lazily, each from the submodule it is listed under, so
that ``import tumorscope.models`` stays cheap.
"""

from __future__ import annotations

from .._lazy import lazy_attributes

__getattr__, __dir__, __all__ = lazy_attributes(
    __name__,
    globals(),
    base=("Model", "FitResult", "ParameterSpec", "get_model", "list_models", "register_model"),
    diffusion=("ADC", "IVIM", "DKI", "DTI", "DKITensor"),
    relaxometry=("VFAT1", "IRT1", "T2", "T2Star", "T2Offset"),
    dce=("Tofts", "ExtendedTofts", "Patlak", "TwoCXM", "TwoCUM"),
    cardiac=("MOLLIT1",),
    metabolic=("PyruvateLactate", "PyruvateLactateBoxcar"),
    dsc=("DSC",),
)
