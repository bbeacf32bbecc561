"""Shared Bloch–McConnell tissue of the CEST tests (the 5-pool 3 T set of bmctool's
``config_5pool.yaml``, NOE moved to −3.5 ppm)."""

from __future__ import annotations

import numpy as np

from tumorscope.models.cest.bloch import BMSystem, ExchangePool, MTPool

#: CEST protocol of the tests: ±6 ppm by 0.25 ppm plus four far offsets (MT baseline).
OFFSETS = np.r_[-15.0, -10.0, np.arange(-6.0, 6.001, 0.25), 10.0, 15.0]


def tissue(amide_f: float = 9e-4, amide_k: float = 50.0) -> BMSystem:
    return BMSystem(
        1.3,
        0.07,
        (
            ExchangePool("amide", amide_f, 1.0, 0.1, amide_k, 3.5),
            ExchangePool("amine", 9e-4, 1.0, 0.1, 1000.0, 2.0),
            ExchangePool("noe", 4.5e-3, 1.3, 0.005, 20.0, -3.5),
        ),
        MTPool(0.1, 1.0, 4e-5, 30.0, -3.0),
    )
