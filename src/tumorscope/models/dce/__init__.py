"""DCE-MRI: signal ↔ concentration, pharmacokinetic models, semi-quantitative measures.

=======================  ===========================================================
module                   what
=======================  ===========================================================
``dce.signal``           :func:`signal_to_concentration`, :func:`concentration_to_signal`
                         (SPGR, fast exchange), :class:`ConcentrationStatus`
``dce.kinetics``         the pure equations (exact convolution of a piecewise-linear
                         AIF, analytic Jacobians) and the linearised fits
``dce._kernels``         the same equations as numba per-voxel kernels (only with numba)
``dce.models``           the registered models ``Tofts``, ``ExtendedTofts``, ``Patlak``,
                         ``TwoCXM``, ``TwoCUM`` (acquisition first, ``aif_mM`` named)
``dce.semiquant``        iAUC, TTP, enhancement, slopes and curve type
=======================  ===========================================================

The population AIFs are in :mod:`tumorscope.models.aif` (shared with DSC). Files → maps
(VFA T1, concentration, AIF choice, fit, maps on disk) is the stage
:mod:`tumorscope.stages.dce`.

Importing this package registers the models (:func:`tumorscope.models.base.get_model`).
"""

from __future__ import annotations

from .models import ExtendedTofts, Patlak, Tofts, TwoCUM, TwoCXM
from .semiquant import CURVE_TYPES, SEMIQUANT_UNITS, semi_quantitative
from .signal import (
    ConcentrationStatus,
    concentration_to_signal,
    signal_to_concentration,
    signal_to_concentration_valid,
)

__all__ = [
    "CURVE_TYPES",
    "SEMIQUANT_UNITS",
    "ConcentrationStatus",
    "ExtendedTofts",
    "Patlak",
    "Tofts",
    "TwoCUM",
    "TwoCXM",
    "concentration_to_signal",
    "semi_quantitative",
    "signal_to_concentration",
    "signal_to_concentration_valid",
]

# The public path of the models is this package: their provenance (``model_class`` in every
# sidecar) and pickles (Dask workers) name ``tumorscope.models.dce.<Class>``, as before the
# split into modules.
for _cls in (Tofts, ExtendedTofts, Patlak, TwoCXM, TwoCUM):
    _cls.__module__ = __name__
del _cls
