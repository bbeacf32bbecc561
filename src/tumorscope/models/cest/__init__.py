"""CEST: Z-spectra, B0/B1 (WASSR, WASABI), MTRasym, MTRRex/AREX, multi-pool Lorentzian fits
and a Bloch–McConnell simulator (see ``docs/cest.md``).

Public names are imported lazily from their modules (the phantom uses the simulator alone).
"""

from __future__ import annotations

from ..._lazy import lazy_attributes

__getattr__, __dir__, __all__ = lazy_attributes(
    __name__,
    globals(),
    bloch=("BMSystem", "ExchangePool", "MTPool", "simulate_z", "steady_state_z"),
    lorentzian=("CESTLorentzian", "lorentzian_signal"),
    wasabi=("WASABI", "wasabi_signal"),
    zspec=(
        "arex",
        "b1_correct",
        "interpolate_z",
        "mtr_asym",
        "mtr_rex",
        "normalise",
        "normalise_rows",
        "ppm_from_hz",
        "wassr_b0",
    ),
)
