"""MOLLI / ShMOLLI T1 with the Look-Locker correction (:class:`MOLLIT1`).

A modified Look-Locker inversion recovery (MOLLI; Messroghli et al., Magn Reson Med 2004,
doi:10.1002/mrm.20110) samples the recovery after an inversion under a train of readout
pulses, which makes it recover with an *apparent* time ``T1* < T1``. The three-parameter model

    S(TI) = A - B exp(-TI / T1*)

is fitted to the images sorted by their effective inversion time; the Look-Locker correction
(Deichmann & Haase, J Magn Reson 1992, doi:10.1016/0022-2364(92)90347-A) gives

    T1 = T1* (B / A - 1).

The fit is that of :class:`~tumorscope.models.relaxometry.IRT1` (the same equation with
``M0 = A`` and ``k = B / A``): magnitude data with polarity restoration, exact variable
projection over ``T1*`` and a Gauss–Newton polish. ShMOLLI (Piechnik et al., J Cardiovasc Magn
Reson 2010, doi:10.1186/1532-429X-12-69) is fitted with the same model on the images given;
its conditional choice among the 5, 6 or 7 images (by the first estimate of T1) is *not*
implemented here: give the images to use.

Known limits, written down rather than corrected: the correction is exact for a continuous
spoiled gradient-echo readout of small flip angle (tested on a pulse-by-pulse simulation);
MOLLI with bSSFP readouts and heartbeat pauses underestimates T1 by a few percent, more at
long T1 and high heart rate (Kellman & Hansen, J Cardiovasc Magn Reson 2014,
doi:10.1186/1532-429X-16-2). Site reference ranges, which the organ watch requires, absorb it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..base import ParameterSpec, register_model
from ..relaxometry import IRT1
from ..relaxometry._common import R1_SPEC, T1_SPEC, rate

__all__ = ["MOLLIT1", "look_locker_t1"]


def look_locker_t1(t1star_ms: np.ndarray, b_over_a: np.ndarray) -> np.ndarray:
    """``T1 = T1* (B/A - 1)`` (ms); NaN where ``B/A <= 1`` or ``T1*`` is not positive."""
    t1s = np.asarray(t1star_ms, dtype=float)
    ba = np.asarray(b_over_a, dtype=float)
    with np.errstate(invalid="ignore"):
        ok = (ba > 1.0) & (t1s > 0)
        return np.where(ok, t1s * (ba - 1.0), np.nan)


@register_model
class MOLLIT1(IRT1):
    """MOLLI / ShMOLLI T1: ``A - B exp(-TI/T1*)`` and ``T1 = T1*(B/A - 1)``.

    Parameters are those of :class:`~tumorscope.models.relaxometry.IRT1`: the effective
    inversion times (ms) of the images, in any order, or an
    :class:`~tumorscope.protocol.InversionRecoveryProtocol`.

    Notes
    -----
    Fitted maps: ``"A"`` (a.u.), ``"T1star"`` (ms, apparent), ``"B_over_A"`` (1); derived
    ``"T1"`` (ms, Look-Locker corrected) and ``"R1"`` (1/s).
    """

    name = "molli"
    parameters = (
        ParameterSpec("A", "a.u.", typical=(500.0, 5000.0), description="recovered signal A"),
        ParameterSpec(
            "T1star",
            "ms",
            T1_SPEC.lower,
            T1_SPEC.upper,
            typical=(300.0, 1500.0),
            description="apparent (Look-Locker) recovery time",
        ),
        ParameterSpec(
            "B_over_A",
            "1",
            typical=(1.8, 2.6),
            description="B / A (2 for an ideal inversion without readout saturation)",
        ),
    )
    derived = (T1_SPEC, R1_SPEC)  # type: ignore[assignment]  # T1Model: (R1,)

    def derive(self, maps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        t1 = look_locker_t1(maps["T1star"], maps["B_over_A"])
        return {"T1": t1, "R1": rate(t1)}

    @classmethod
    def example(cls) -> MOLLIT1:
        # MOLLI 5(3)3 at 60 bpm: effective TIs of the two inversions (ms)
        return cls([100.0, 180.0, 1100.0, 1180.0, 2100.0, 2180.0, 3100.0, 4100.0])

    def sample_parameters(self, n: int, *, rng: np.random.Generator) -> np.ndarray:
        a = rng.uniform(500.0, 5000.0, n)
        t1s = rng.uniform(300.0, 1500.0, n)
        ba = rng.uniform(1.8, 2.6, n)
        return np.stack([a, t1s, ba], axis=1)
