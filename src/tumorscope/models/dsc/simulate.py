"""Simulated DSC curves with known CBF, CBV, MTT (tests, docs, benchmarks, the phantom).

``C(t) = (ρ/kH) · CBF · (AIF_d ⊗ R)(t)`` (Østergaard 1996, eq. 1) computed on a fine grid
(``fine_dt_s``, default 0.05 s) and sampled at the frame times, with CBF in 1/s inside
(``CBF[mL/100 mL/min] / 6000``) and:

* residue functions with mean transit time ``MTT = 60·CBV/CBF`` s: ``"exponential"``
  ``R = exp(−t/MTT)``; ``"box"`` ``R = 1`` for ``t < MTT``; ``"gamma"`` one minus the
  cumulative gamma distribution of shape 3 and mean MTT (Mouridsen 2006, Wu 2003 used the
  same three families);
* ``delay_s``: the tissue's AIF arrives later than the measured one (``AIF(t − delay)``);
* ``dispersion_s``: the tissue's AIF is the measured one convolved with
  ``exp(−t/β)/β`` (Calamante et al. 2000), ``β = dispersion_s``.

Reference: Calamante F, Gadian DG, Connelly A. Delay and dispersion effects in dynamic
susceptibility contrast MRI: simulations using singular value decomposition. Magn Reson Med
2000;44:466-473. doi:10.1002/1522-2594(200009)44:3<466::AID-MRM18>3.0.CO;2-M
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from scipy import signal as sps
from scipy import special

from ...errors import FitError
from .deconvolution import DEFAULT_HEMATOCRIT_FACTOR, DEFAULT_TISSUE_DENSITY
from .signal import gamma_variate

__all__ = ["RESIDUES", "reference_aif", "residue_function", "tissue_curves"]

RESIDUES = ("exponential", "gamma", "box")


def reference_aif(times_s: npt.ArrayLike, *, t0_s: float = 10.0) -> np.ndarray:
    """A gamma-variate first pass plus a recirculation (ΔR2* in 1/s, peak ≈ 30 1/s).

    The first pass ``α = 3, β = 1.5 s`` (Rempp 1994 style), recirculation one eighth of it,
    delayed 8 s and twice as wide.
    """
    t = np.asarray(times_s, dtype=float)
    first = gamma_variate(t, amplitude=1.0, t0_s=t0_s, alpha=3.0, beta_s=1.5)
    scale = 30.0 / (27.0 * np.exp(-3.0) * 1.5**3)  # peak of (t)^3 e^{-t/1.5} is at t = 4.5
    recirc = gamma_variate(t, amplitude=1.0, t0_s=t0_s + 8.0, alpha=3.0, beta_s=3.0)
    return scale * (first + recirc * (1.5 / 3.0) ** 3 / 8.0)


def residue_function(kind: str, mtt_s: npt.ArrayLike, t: npt.ArrayLike) -> np.ndarray:
    """``R(t)`` (``R(0) = 1``, mean transit time ``mtt_s``), shape ``(n, len(t))``."""
    m = np.atleast_1d(np.asarray(mtt_s, dtype=float))[:, None]
    tt = np.asarray(t, dtype=float)[None, :]
    if kind == "exponential":
        return np.exp(-tt / m)
    if kind == "box":
        return (tt < m).astype(float)
    if kind == "gamma":
        shape = 3.0
        return 1.0 - special.gammainc(shape, tt * shape / m)
    raise FitError(f"unknown residue {kind!r}; expected one of {RESIDUES}", field="residue")


def tissue_curves(
    times_s: npt.ArrayLike,
    cbf: npt.ArrayLike,
    cbv: npt.ArrayLike,
    *,
    residue: str = "exponential",
    delay_s: float = 0.0,
    dispersion_s: float = 0.0,
    aif: Callable[[np.ndarray], np.ndarray] = reference_aif,
    hematocrit_factor: float = DEFAULT_HEMATOCRIT_FACTOR,
    tissue_density: float = DEFAULT_TISSUE_DENSITY,
    fine_dt_s: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue curves ``(n, N)`` and the measured AIF ``(N,)`` at ``times_s``.

    Parameters
    ----------
    cbf, cbv : array_like, shape (n,)
        mL/100 mL/min and mL/100 mL.
    """
    t = np.asarray(times_s, dtype=float)
    f = np.atleast_1d(np.asarray(cbf, dtype=float))
    v = np.atleast_1d(np.asarray(cbv, dtype=float))
    fine = np.arange(0.0, t[-1] + fine_dt_s, fine_dt_s)
    a = aif(fine - delay_s)
    if dispersion_s > 0:
        kern = np.exp(-fine / dispersion_s) / dispersion_s * fine_dt_s
        a = np.convolve(a, kern)[: fine.size]
    mtt = 60.0 * v / f
    R = residue_function(residue, mtt, fine)  # (n, F)
    conv = sps.fftconvolve(R, a[None, :], axes=1)[:, : fine.size] * fine_dt_s
    c = tissue_density / hematocrit_factor * (f[:, None] / 6000.0) * conv
    idx = np.clip(np.round(t / fine_dt_s).astype(int), 0, fine.size - 1)
    return c[:, idx], aif(t)
