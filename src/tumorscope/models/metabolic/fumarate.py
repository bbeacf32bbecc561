"""Hyperpolarised [1,4-13C2]fumarate → malate: a read-out of cell death.

Fumarate does not cross intact plasma membranes; when cells become necrotic it reaches
fumarase and is hydrated to malate within seconds, so the malate/fumarate ratio rises with
necrosis after treatment (Gallagher et al., PNAS 2009;106:19801-19806,
doi:10.1073/pnas.0911447106; Bohndiek et al., Cancer Res 2010;70:9254-9261).

* :func:`malate_fumarate_ratio`: the model-free AUC ratio ``Σ(malate C1 + C4) / Σ fumarate``
  (the two malate resonances, 181.8 and 180.6 ppm, both come from the 1,4-labelled
  fumarate at 175.4 ppm and are summed);
* :func:`ratio_change`: its relative change from a baseline visit (percent);
* :class:`FumarateMalate`: the rate ``kFM`` (1/s) by the input-less two-site model of
  :mod:`.hp13c` (fumarate drives malate exactly as pyruvate drives lactate).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ...errors import FitError
from ..base import FitResult
from .hp13c import PyruvateLactate

__all__ = ["FumarateMalate", "malate_fumarate_ratio", "ratio_change"]


def malate_fumarate_ratio(
    fumarate: npt.ArrayLike, malate_c1: npt.ArrayLike, malate_c4: npt.ArrayLike | None = None
) -> np.ndarray:
    """AUC ratio malate/fumarate, signals with frames on the last axis (NaN if Σ fumarate ≤ 0)."""
    f = np.asarray(fumarate, dtype=float)
    m = np.asarray(malate_c1, dtype=float)
    if malate_c4 is not None:
        m = m + np.asarray(malate_c4, dtype=float)
    if f.shape != m.shape:
        raise FitError(f"fumarate {f.shape} and malate {m.shape} shapes differ", field="malate")
    den = f.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, m.sum(axis=-1) / np.where(den > 0, den, 1.0), np.nan)


def ratio_change(ratio: npt.ArrayLike, baseline: npt.ArrayLike) -> np.ndarray:
    """Percent change of a ratio from its baseline value (NaN where the baseline is ≤ 0)."""
    r = np.asarray(ratio, dtype=float)
    b = np.asarray(baseline, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, 100.0 * (r - b) / np.where(b > 0, b, 1.0), np.nan)


class FumarateMalate(PyruvateLactate):
    """Input-less fumarate → malate rate ``kFM`` (1/s): :class:`PyruvateLactate` with the
    substrate fumarate (row 0) and product malate, C1 + C4 (row 1); malate T1 default 20 s,
    fumarate T1 default 30 s (Gallagher 2009 report T1s of 24–30 s at 9.4 T in vitro).

    The result renames ``kPL`` to ``kFM`` and ``AUC_ratio`` stays malate/fumarate.
    """

    name = "fumarate_malate"
    product = "malate"

    def __init__(
        self,
        times_s: npt.ArrayLike | None,
        flip_angles_deg: npt.ArrayLike,
        *,
        t1_malate_s: float = 20.0,
        t1_fumarate_s: float | None = 30.0,
        **options: Any,
    ) -> None:
        super().__init__(
            times_s,
            flip_angles_deg,
            t1_lactate_s=t1_malate_s,
            t1_pyruvate_s=t1_fumarate_s,
            **options,
        )

    def fit(
        self, signals: npt.ArrayLike, mask: npt.ArrayLike | None = None, **kw: Any
    ) -> FitResult:
        """As :meth:`PyruvateLactate.fit`; maps ``kFM``, ``AUC_ratio``, ``SNR_malate``."""
        res = super().fit(signals, mask, **kw)
        ren = {"kPL": "kFM", "SNR_lactate": "SNR_malate", "L0": "M0", "T1_lactate": "T1_malate"}
        res.maps = {ren.get(k, k): v for k, v in res.maps.items()}
        res.units = {ren.get(k, k): v for k, v in res.units.items()}
        res.stderr = {ren.get(k, k): v for k, v in res.stderr.items()}
        return res
