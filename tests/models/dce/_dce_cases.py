"""Shared cases of the DCE model tests: a non-uniform frame grid, a plasma AIF, the models."""

from __future__ import annotations

import warnings

import numpy as np

from tumorscope.models import ExtendedTofts, Patlak, Tofts, TwoCUM, TwoCXM, aif
from tumorscope.models.dce import kinetics as kin

T = np.concatenate([np.arange(0.0, 60.0, 2.0), np.arange(60.0, 300.0, 4.0)])  # non-uniform
CP = aif.blood_to_plasma(aif.parker(T, delay_s=15.0), hematocrit=0.42)

EQUATIONS = {
    "tofts": (kin.tofts, [0.25, 0.3], Tofts),
    "extended_tofts": (kin.extended_tofts, [0.25, 0.3, 0.05], ExtendedTofts),
    "patlak": (kin.patlak, [0.1, 0.05], Patlak),
    "2cxm": (kin.two_cxm, [60.0, 12.0, 0.3, 0.06], TwoCXM),
    "2cum": (kin.two_cum, [60.0, 12.0, 0.06], TwoCUM),
}


def quiet_fit(model, data, mask=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(data, mask)
