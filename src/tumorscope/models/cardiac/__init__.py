"""Cardiac mapping: MOLLI/ShMOLLI T1, T2-prepared bSSFP T2, ECV, AHA segments.

* :class:`MOLLIT1` (:mod:`.molli`): three-parameter ``A - B exp(-TI/T1*)`` with the
  Look-Locker correction ``T1 = T1*(B/A - 1)``;
* T2 mapping from T2-prepared bSSFP images: the signal after a T2 preparation of duration
  ``TE_prep`` is ``M0 exp(-TE_prep/T2)``, fitted by
  :func:`fit_t2prep` (:mod:`.t2prep`; variable projection, a 0 ms preparation allowed);
* :func:`ecv` (:mod:`.ecv`): ``(1 - Hct) ΔR1_myo / ΔR1_blood``;
* :data:`AHA_SEGMENTS`, :func:`segment_means` (:mod:`.segments`).
"""

from __future__ import annotations

from .ecv import ecv, partition_coefficient
from .molli import MOLLIT1, look_locker_t1
from .segments import AHA_SEGMENTS, segment_means
from .t2prep import fit_t2prep

MOLLIT1.__module__ = __name__

__all__ = [
    "AHA_SEGMENTS",
    "MOLLIT1",
    "ecv",
    "fit_t2prep",
    "look_locker_t1",
    "partition_coefficient",
    "segment_means",
]
