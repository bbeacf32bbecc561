"""Synthetic studies with known ground truth (the demo, the tests and the benchmarks).

>>> from tumorscope.phantom import make_study
>>> root = make_study("demo-study", size="tiny", seed=0)   # doctest: +SKIP
"""

from __future__ import annotations

from .generate import SIZES, PhantomConfig, make_study
from .scenarios import (
    FERUMOXYTOL_DR2STAR,
    FLUORINE,
    SCENARIOS,
    T2STAR_MS,
    TISSUES,
    FluorineSpec,
    LesionSpec,
    Scenario,
    Tissue,
)
from .signals import dwi_signal, etofts_concentration, parker_blood_mM, rician, spgr_signal

__all__ = [
    "FERUMOXYTOL_DR2STAR",
    "FLUORINE",
    "SCENARIOS",
    "SIZES",
    "T2STAR_MS",
    "TISSUES",
    "FluorineSpec",
    "LesionSpec",
    "PhantomConfig",
    "Scenario",
    "Tissue",
    "dwi_signal",
    "etofts_concentration",
    "make_study",
    "parker_blood_mM",
    "rician",
    "spgr_signal",
]
