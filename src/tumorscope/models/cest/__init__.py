"""CEST: Z-spectra, B0/B1 (WASSR, WASABI), MTRasym, MTRRex/AREX, multi-pool Lorentzian fits
and a Bloch–McConnell simulator (see ``docs/cest.md``)."""

from __future__ import annotations

from .bloch import BMSystem, ExchangePool, MTPool, simulate_z, steady_state_z
from .lorentzian import CESTLorentzian, lorentzian_signal
from .wasabi import WASABI, wasabi_signal
from .zspec import (
    arex,
    b1_correct,
    interpolate_z,
    mtr_asym,
    mtr_rex,
    normalise,
    ppm_from_hz,
    wassr_b0,
)

__all__ = [
    "WASABI",
    "BMSystem",
    "CESTLorentzian",
    "ExchangePool",
    "MTPool",
    "arex",
    "b1_correct",
    "interpolate_z",
    "lorentzian_signal",
    "mtr_asym",
    "mtr_rex",
    "normalise",
    "ppm_from_hz",
    "simulate_z",
    "steady_state_z",
    "wasabi_signal",
    "wassr_b0",
]
