"""Diffusion models: mono-exponential ADC, IVIM and mean-signal (powder-averaged) kurtosis.

b-values are in s/mm², diffusivities in mm²/s, ``f`` and ``K`` dimensionless, ``S0`` in the
units of the data. ``data`` has one value per b-value on its last axis (trace-weighted or
directional images; DKI averages directions of each shell itself). Every model takes its
acquisition as a :class:`~tumorscope.protocol.DiffusionProtocol` (or its b-values) as first
argument, or through ``Model.from_protocol(protocol, **options)``.

=================  =====================================================================
module             what
=================  =====================================================================
``equations``      signal equations ``adc_signal``, ``ivim_signal``, ``dki_signal`` and
                   their Jacobians
``adc``            :class:`ADC` (WLLS / LLS / NLLS; fused compiled fast path)
``ivim``           :class:`IVIM` (segmented / full / empirical-Bayes; "Which IVIM method
                   when"), the prior helpers
``dki``            :class:`DKI` (mean-signal kurtosis)
``_common``        shared specs, voxel validation, the log-linear block fit, the base class
                   :class:`DiffusionModel`
``_numba``         compiled per-voxel kernels (imported only with numba)
=================  =====================================================================
"""

from __future__ import annotations

from ._common import DiffusionModel
from .adc import ADC
from .dki import DKI
from .dki_tensor import DKITensor
from .dti import DTI
from .equations import adc_signal, dki_signal, ivim_signal
from .ivim import IVIM

__all__ = [
    "ADC",
    "DKI",
    "DTI",
    "IVIM",
    "DKITensor",
    "DiffusionModel",
    "adc_signal",
    "dki_signal",
    "ivim_signal",
]
