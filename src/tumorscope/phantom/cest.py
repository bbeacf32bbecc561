"""CEST visits of the synthetic study: Bloch–McConnell Z-spectra with known amide content.

Subjects of :data:`CEST_TRAJECTORIES` get a CEST series (``anat/<prefix>_cest.nii.gz``) at
every visit: 3 T, continuous-wave saturation 1 µT for 2 s, offsets ±6 ppm by 0.5 ppm plus
±10, ±15 ppm, one unsaturated M0 image first (−300 ppm). Each voxel's spectrum is the
Bloch–McConnell spectrum (:func:`tumorscope.models.cest.simulate_z`) of its tissue state
(water T1/T2 of the state; amide, amine, NOE and MT pools below), shifted by a smooth B0
field of ±0.35 ppm, times the proton density ``M0 / 30``, with Rician noise of SD
``PD_tumour / snr`` (SNR 100 on the M0 image of untreated tumour).

Amide proton fraction by state (APT tracks mobile proteins and proliferation; the
responder's lesion moves untreated → responding → responded, so its APT falls; the
progressor's stays high): see :data:`AMIDE_FRACTION`. Truth maps: ``cest_amide_fraction``
and ``cest_B0`` (ppm).

Noise uses its own generator (seeded from the trajectory and visit), so adding CEST leaves
every other series of the phantom unchanged.
"""

from __future__ import annotations

import threading
import zlib
from functools import lru_cache
from typing import Any

import numpy as np

from ..models.cest.bloch import BMSystem, ExchangePool, MTPool, simulate_z
from .signals import rician

__all__ = ["AMIDE_FRACTION", "CEST_OFFSETS_PPM", "CEST_TRAJECTORIES", "cest_series"]

#: Subjects (by trajectory) with CEST visits.
CEST_TRAJECTORIES: tuple[str, ...] = ("responder", "progressor")
#: Saturated offsets (ppm); the series has one M0 image (−300 ppm) before them.
CEST_OFFSETS_PPM = np.r_[-15.0, -10.0, np.arange(-6.0, 6.001, 0.5), 10.0, 15.0]
#: Amide proton fraction (relative to water) by tissue state.
AMIDE_FRACTION: dict[str, float] = {
    "background": 6e-4,
    "untreated": 1.4e-3,
    "responding": 1.0e-3,
    "responded": 6e-4,
    "infiltrated": 1.2e-3,
    "progressing": 1.5e-3,
    "aggressive": 1.7e-3,
    "necrotic": 2e-4,
    "node": 9e-4,
    "blood": 3e-4,
}
#: Semi-solid (MT) fraction by state (necrosis and blood have little).
_MT_FRACTION = {"necrotic": 0.01, "blood": 0.005, "background": 0.1}
_B1_UT, _TSAT_S, _FIELD_T, _SNR = 1.0, 2.0, 3.0, 100.0
# where spectra are simulated (then interpolated, 4-point Lagrange): a uniform 0.1 ppm grid
# of which only the points near the acquired offsets (± the B0 range) are computed
_H = 0.1
_GRID = np.round(np.arange(-16.0, 16.0001, _H), 6)
_NEEDED = np.any(np.abs(_GRID[:, None] - CEST_OFFSETS_PPM[None, :]) <= 0.65, axis=1)


def _lagrange4(values: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Cubic (4-point Lagrange) interpolation of ``values`` on :data:`_GRID` at ``q``."""
    u = (q - _GRID[0]) / _H
    i = np.clip(np.floor(u).astype(int) - 1, 0, _GRID.size - 4)
    t = u - i  # in [1, 2) for interior points
    w = (
        -(t - 1) * (t - 2) * (t - 3) / 6,
        t * (t - 2) * (t - 3) / 2,
        -t * (t - 1) * (t - 3) / 2,
        t * (t - 1) * (t - 2) / 6,
    )
    return sum(wk * values[i + k] for k, wk in enumerate(w))


_SPECTRUM_LOCK = threading.Lock()


def _spectrum(t1_ms: float, t2_ms: float, amide_f: float, mt_f: float) -> np.ndarray:
    """The Bloch–McConnell Z-spectrum of one tissue on :data:`_GRID` (cached). The phantom's
    visits are written by several threads: the lock makes a spectrum computed once, not by
    every thread that needs it first (9 simulations → 7 for the default study)."""
    with _SPECTRUM_LOCK:
        return _simulated_spectrum(t1_ms, t2_ms, amide_f, mt_f)


@lru_cache(maxsize=64)
def _simulated_spectrum(t1_ms: float, t2_ms: float, amide_f: float, mt_f: float) -> np.ndarray:
    sysm = BMSystem(
        t1_ms / 1e3,
        t2_ms / 1e3,
        (
            ExchangePool("amide", amide_f, 1.0, 0.1, 30.0, 3.5),
            ExchangePool("amine", 9e-4, 1.0, 0.1, 1000.0, 2.0),
            ExchangePool("noe", 4.5e-3, 1.3, 0.005, 20.0, -3.5),
        ),
        MTPool(mt_f, 1.0, 4e-5, 30.0, -3.0),
    )
    z = np.full(_GRID.size, np.nan)  # NaN where not needed: an error would show
    z[_NEEDED] = simulate_z(sysm, _GRID[_NEEDED], field_t=_FIELD_T, b1_ut=_B1_UT, tsat_s=_TSAT_S)
    return z


def _b0_field(
    x: np.ndarray, y: np.ndarray, cache: dict[Any, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The B0 field (ppm) per voxel, its distinct values and the index of each voxel's."""
    with _SPECTRUM_LOCK:
        if "b0" not in cache:
            b0 = 0.25 * x / max(float(np.abs(x).max()), 1e-9) + 0.1 * y / max(
                float(np.abs(y).max()), 1e-9
            )
            levels, level_of = np.unique(b0, return_inverse=True)
            cache["b0"] = (b0, levels, level_of.reshape(b0.shape))
        return cache["b0"]


def _z_table(
    key: tuple[float, float, float, float], levels: np.ndarray, cache: dict[Any, Any]
) -> np.ndarray:
    """The Z-spectrum of a tissue ``key`` at the acquired offsets for each B0 level."""
    spec = _spectrum(*key)
    with _SPECTRUM_LOCK:
        if key not in cache:
            cache[key] = _lagrange4(spec, CEST_OFFSETS_PPM[None, :] - levels[:, None])
        return cache[key]


def cest_series(
    trajectory: str,
    vi: int,
    names: list[str],
    tissue: np.ndarray,
    body: np.ndarray,
    m0: np.ndarray,
    params: dict[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    cache: dict[Any, Any] | None = None,
) -> dict[str, tuple[np.ndarray, dict[str, Any] | None]]:
    """The CEST series of one visit, or nothing for other trajectories.

    Parameters
    ----------
    trajectory : str
    vi : int
        Visit index.
    names : list of str
        Tissue state of each index of ``tissue``.
    tissue : ndarray of int
        Tissue index per voxel.
    body, m0 : ndarray
        Body mask; VFA/DCE M0 per voxel (the proton density is ``m0 / 30``).
    params : dict of ndarray
        Per-voxel truth (``T1``, ``T2`` in ms).
    x, y : ndarray
        World coordinates (mm) per voxel, for the smooth B0 field.
    cache : dict, optional
        What every visit of a study shares (the B0 field and each tissue's interpolated
        spectra at its distinct B0 values): a dict per study (with the same ``x``, ``y``),
        filled here. Without it nothing is kept.

    Returns
    -------
    dict
        ``{"anat/cest": (int16 image, sidecar), "truth:cest_B0": ..., "truth:cest_amide_fraction": ...}``
    """
    if trajectory not in CEST_TRAJECTORIES:
        return {}
    rng = np.random.default_rng([zlib.crc32(trajectory.encode()), vi, 19])
    shape = tissue.shape
    cache = {} if cache is None else cache
    b0, levels, level_of = _b0_field(x, y, cache)
    pd = np.where(body, m0 / 30.0, 0.0)
    tables = [np.ones((levels.size, CEST_OFFSETS_PPM.size))]  # Z per B0 level per spectrum
    table_of = np.zeros(shape, np.intp)  # each voxel's table
    amide = np.full(shape, np.nan)
    for t in np.unique(tissue[body]):
        name = names[int(t)] if 0 <= int(t) < len(names) else "background"
        sel = body & (tissue == t)
        f = AMIDE_FRACTION.get(name, 6e-4)
        amide[sel] = f
        # one spectrum per distinct (T1, T2) of the state (heterogeneity is in D and Ktrans
        # only), interpolated once per distinct B0 value of the study: a voxel's Z values are
        # those of its B0 level (the same arithmetic on the same numbers)
        t1 = np.round(params["T1"][sel], 1)
        t2 = np.round(params["T2"][sel], 1)
        if t1.min() == t1.max() and t2.min() == t2.max():  # a uniform state: one pair
            pairs, inv = np.array([[t1[0], t2[0]]]), np.zeros(t1.size, np.intp)
        else:
            pairs, inv = np.unique(np.c_[t1, t2], axis=0, return_inverse=True)
        ids = np.empty(t1.size, np.intp)
        for k, (a, b) in enumerate(pairs):
            key = (float(a), float(b), f, _MT_FRACTION.get(name, 0.05))
            tables.append(_z_table(key, levels, cache))
            ids[inv.ravel() == k] = len(tables) - 1
        table_of[sel] = ids
    # one gather: Z of each voxel's table at its B0 level (table 0: Z = 1 outside the body)
    z = np.stack(tables)[table_of, level_of]
    tumour_pd = 30000.0 / 30.0
    img = np.empty((*shape, CEST_OFFSETS_PPM.size + 1))  # the M0 image, then PD * Z
    img[..., 0] = pd
    np.multiply(pd[..., None], z, out=img[..., 1:])
    del z
    img = rician(img, tumour_pd / _SNR, rng)
    np.rint(img, out=img)  # in place: the same numbers as np.clip(np.rint(img), ...)
    np.clip(img, 0, 32767, out=img)
    side = {
        "SaturationOffsets": [-300.0, *CEST_OFFSETS_PPM.tolist()],
        "SaturationOffsetsUnit": "ppm",
        "SaturationB1": _B1_UT,
        "SaturationDuration": _TSAT_S,
        "SaturationPulseNumber": 1,
        "SaturationDutyCycle": 1.0,
        "SaturationPulseShape": "block",
    }
    return {
        "anat/cest": (img.astype(np.int16), side),
        "truth:cest_B0": (np.where(body, b0, np.nan).astype(np.float32), None),
        "truth:cest_amide_fraction": (amide.astype(np.float32), None),
    }
