"""Relaxometry: T1 (variable flip angle, inversion recovery), T2 and T2*/R2*.

Three layers, as every tumorscope model (see ``docs/relaxometry.md``):

1. pure, vectorised signal equations with analytic Jacobians (:mod:`.equations`: parameters on
   the last axis, measurements appended as the last axis of the output);
2. closed-form (linearised) solutions used as starting values and as fits in their own right
   (DESPOT1, two-point VFA, log-linear mono-exponential);
3. registered :class:`~tumorscope.models.base.Model` classes that hold the acquisition and
   options and fit all voxels at once: :class:`VFAT1` (:mod:`.vfa`), :class:`IRT1`
   (:mod:`.ir`), :class:`T2Star`, :class:`T2`, :class:`T2Offset` (:mod:`.decay`; noise level
   estimation in :mod:`.noise`). The solvers they share (variable projection, Gauss–Newton
   polish, standard errors) are in :mod:`tumorscope.fitting`.

Every model is built from its protocol (``T2Star.from_protocol(protocol)`` or
``T2Star(protocol)``) or from the acquisition values (``T2Star(echo_times_ms)``); per-voxel
inputs are named arguments of ``fit`` (``VFAT1.fit(data, b1=...)``,
``T2Star.fit(data, noise_sigma_map=...)``).

Units: relaxation times in ms, rates in 1/s, echo/inversion/repetition times in ms, flip angles
in degrees at the interface (radians inside). Signals are in the arbitrary units of the data;
nothing is rescaled.
"""

from __future__ import annotations

from . import equations
from .decay import T2, T2Offset, T2Star
from .equations import *  # noqa: F403  (the signal equations, see equations.__all__)
from .ir import IRT1
from .vfa import VFAT1

# The models' public home is this package: provenance records ``model_class`` as
# ``tumorscope.models.relaxometry.<Name>`` (as before the split into modules), and pickles
# and reprs name the path users import from.
for _cls in (VFAT1, IRT1, T2, T2Star, T2Offset):
    _cls.__module__ = __name__
del _cls

__all__ = ["IRT1", "T2", "VFAT1", "T2Offset", "T2Star", *equations.__all__]
