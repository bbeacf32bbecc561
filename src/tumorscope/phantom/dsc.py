"""Synthetic brain DSC series with known CBF, CBV, rCBV and leakage (K2), for the phantom,
the tests and the demo.

A brain (an ellipsoid of normal-appearing tissue: CBF 22 mL/100 mL/min, CBV 2 mL/100 mL,
MTT 5.5 s, the white-matter values of Østergaard 1996 / Rempp 1994), arteries (a 2×2 column of
voxels whose ΔR2* is the AIF) and lesions with their own rCBV (CBV and CBF both scaled by it:
the same MTT) and a BSW leakage term ``K2`` (1/s, T1-dominant when > 0): the tissue ΔR2* is
``ΔR2*_vascular − K2·∫ref`` with ``ref`` the normal tissue's ΔR2* (Boxerman 2006, the model
the correction inverts). Signal ``S = S0·exp(−TE·ΔR2*)`` with Gaussian noise of SD
``S0/snr``; 60 frames of 1.5 s, bolus at 10 s, TE 30 ms; residue exponential; the gamma-variate
AIF of :func:`tumorscope.models.dsc.simulate.reference_aif`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..models.dsc.leakage import _exp_conv
from ..models.dsc.simulate import tissue_curves

__all__ = ["NAWM_CBF", "NAWM_CBV", "DSCLesion", "brain_dsc_series"]

NAWM_CBF = 22.0
NAWM_CBV = 2.0
TE_MS = 30.0
DT_S = 1.5
N_FRAMES = 60
S0 = 1000.0


@dataclass(frozen=True)
class DSCLesion:
    """A lesion's perfusion truth: rCBV (to normal tissue) and leakage K2 (1/s)."""

    rcbv: float
    k2_per_s: float = 0.0


def brain_dsc_series(
    brain: np.ndarray,
    labels: np.ndarray,
    lesions: Mapping[int, DSCLesion],
    *,
    rng: np.random.Generator,
    snr: float = 100.0,
    artery: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, object], dict[str, np.ndarray]]:
    """The DSC series of a brain.

    Parameters
    ----------
    brain : ndarray of bool, shape (X, Y, Z)
    labels : ndarray of int, shape (X, Y, Z)
        Lesion labels (0 = none), inside the brain.
    lesions : mapping of label to DSCLesion
    rng : numpy Generator, keyword-only
    snr : float, keyword-only
        S0 / noise SD.
    artery : ndarray of bool, optional
        Arterial voxels (default: a 2×2 column at the centre of the front of the brain).

    Returns
    -------
    signal : ndarray, shape (X, Y, Z, 60), float32
    sidecar : dict
        ``FrameTimes`` (s), ``EchoTime`` (s), ``RepetitionTime``, ``FlipAngle``.
    truth : dict of str to ndarray
        ``CBV`` (mL/100 mL, default kH and ρ), ``CBF``, ``rCBV``, ``K2`` (NaN outside the brain).
    """
    t = np.arange(N_FRAMES) * DT_S
    shape = brain.shape
    if artery is None:
        artery = np.zeros(shape, bool)
        idx = np.argwhere(brain)
        cx = round(float(idx[:, 0].mean()))
        front = int(idx[:, 1].max()) - 2
        artery[cx - 1 : cx + 1, front - 1 : front + 1, :] = True
        artery &= brain
    rcbv = np.where(brain, 1.0, np.nan)
    k2 = np.where(brain, 0.0, np.nan)
    for lab, les in lesions.items():
        sel = labels == lab
        rcbv[sel] = les.rcbv
        k2[sel] = les.k2_per_s
    d = np.zeros((*shape, N_FRAMES))
    normal, aif = tissue_curves(t, [NAWM_CBF], [NAWM_CBV])
    ref = normal[0]
    conv = _exp_conv(ref, t, 0.0)
    inside = brain & ~artery
    keys = np.round(np.stack([rcbv[inside], k2[inside]], axis=1), 6)
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    curves = tissue_curves(t, NAWM_CBF * uniq[:, 0], NAWM_CBV * uniq[:, 0])[0]
    curves = curves - uniq[:, 1:2] * conv[None, :]
    d[inside] = curves[inv.ravel()]
    d[artery] = aif
    sig = S0 * np.exp(-d * TE_MS * 1e-3)
    sig = np.where(brain[..., None], sig, 0.0) + rng.normal(0.0, S0 / snr, (*shape, N_FRAMES))
    sig = np.abs(sig)  # magnitude
    cbv_true = np.where(brain, NAWM_CBV * rcbv, np.nan)
    truth = {
        "CBV": cbv_true.astype(np.float32),
        "CBF": np.where(brain, NAWM_CBF * rcbv, np.nan).astype(np.float32),
        "rCBV": rcbv.astype(np.float32),
        "K2": k2.astype(np.float32),
    }
    sidecar: dict[str, object] = {
        "FrameTimes": [float(v) for v in t],
        "EchoTime": TE_MS / 1e3,
        "RepetitionTime": 1.5,
        "FlipAngle": 90.0,
        "PulseSequenceType": "gradient-echo EPI (DSC)",
    }
    return sig.astype(np.float32), sidecar, truth
