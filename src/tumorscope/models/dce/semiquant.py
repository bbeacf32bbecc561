"""Semi-quantitative DCE measures: iAUC, time to peak, enhancement, slopes and curve type.

Model-free descriptors of the enhancement curves that clinics report beside the
pharmacokinetic parameters. All are plain vectorised functions of the curves (time on the
last axis) and return maps shaped like the curves minus their last axis.

Definitions (``E(t) = C(t) - mean(C[:n_baseline])`` is the enhancement; for concentration
curves the baseline is ~0):

* **arrival** (s): the onset of enhancement, where ``E`` first reaches ``onset_fraction`` of
  its maximum, interpolated linearly between frames, or given by the caller (e.g. the AIF's
  arrival plus a delay). Evelhoch, JMRI 1999 (doi:10.1002/(SICI)1522-2586(199909)10:3<254::AID-JMRI5>3.0.CO;2-9)
  defines the iAUC from the arrival of contrast.
* **iAUC60, iAUC90** (mM·s): ``∫_{arrival}^{arrival+60 (90) s} E(t) dt``, with ``E``
  piecewise linear between frames (exact trapezoid, the window edges interpolated). NaN if
  the acquisition ends before the window does.
* **TTP** (s): time of the maximum of ``E`` minus the arrival.
* **max_enhancement**: ``max E`` (mM for concentration curves; with ``relative=True``,
  ``max (S - S0)/S0`` for signal curves).
* **wash_in** (unit/s): ``max E / TTP``; **wash_out** (unit/s): ``(E_last - E_max) /
  (t_last - t_max)``, negative when the curve washes out.
* **curve_type**: Kuhl et al., Radiology 1999 (doi:10.1148/radiology.211.1.r99ap38101):
  compare the last value ``E_late`` with the early peak ``E_early`` (max of ``E`` within
  ``early_s`` of the arrival): ``(E_late - E_early)/E_early`` > +``threshold`` is 1
  (persistent), within ±``threshold`` 2 (plateau), below -``threshold`` 3 (washout); 0 where
  the curve does not enhance (``max E <= 0`` or not finite).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from ...errors import DataError, FitError, ProtocolError

__all__ = ["CURVE_TYPES", "SEMIQUANT_UNITS", "semi_quantitative"]

#: Codes of ``curve_type``.
CURVE_TYPES: Final[dict[int, str]] = {0: "none", 1: "persistent", 2: "plateau", 3: "washout"}

#: Units of the measures for concentration curves (mM) and times in s.
SEMIQUANT_UNITS: Final[dict[str, str]] = {
    "arrival": "s",
    "iAUC60": "mM.s",
    "iAUC90": "mM.s",
    "TTP": "s",
    "max_enhancement": "mM",
    "wash_in": "mM/s",
    "wash_out": "mM/s",
    "curve_type": "1",
}


def _cumulative(e: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``∫_{t_0}^{t_j} e dt`` at every frame (trapezoid: exact for piecewise-linear rows)."""
    cum = np.zeros_like(e)
    np.cumsum(0.5 * (e[:, 1:] + e[:, :-1]) * np.diff(t), axis=1, out=cum[:, 1:])
    return cum


def _integral_to(e: np.ndarray, t: np.ndarray, upto: np.ndarray, cum: np.ndarray) -> np.ndarray:
    """``∫_{t_0}^{upto} e dt`` of the piecewise-linear rows of ``e`` (N, n), exact; ``cum``
    from :func:`_cumulative`."""
    n = t.size
    i = np.clip(np.searchsorted(t, upto, side="right") - 1, 0, n - 2)
    rows = np.arange(e.shape[0])
    s = np.clip(upto - t[i], 0.0, None)
    seg = t[i + 1] - t[i]
    e0 = e[rows, i]
    e1 = e[rows, i + 1]
    eu = e0 + (e1 - e0) * s / seg
    out = cum[rows, i] + 0.5 * (e0 + eu) * s
    return np.where(upto < t[0], 0.0, out)


def _onset(
    e: np.ndarray, t: np.ndarray, emax: np.ndarray, imax: np.ndarray, nb: int, fraction: float
) -> np.ndarray:
    """Arrival (s) per row: where ``e`` first reaches ``fraction`` of its maximum (from the
    last baseline frame, up to the maximum), interpolated linearly between frames."""
    rows = np.arange(e.shape[0])
    level = fraction * emax
    idx = np.arange(t.size)[None, :]
    reached = (e >= level[:, None]) & (idx <= imax[:, None]) & (idx >= nb - 1)
    first = np.where(reached.any(axis=1), reached.argmax(axis=1), imax)
    prev = np.maximum(first - 1, 0)
    e0, e1 = e[rows, prev], e[rows, first]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(e1 > e0, (level - e0) / (e1 - e0), 1.0)
    return t[prev] + np.clip(frac, 0.0, 1.0) * (t[first] - t[prev])


def _curve_type(
    e: np.ndarray,
    t: np.ndarray,
    arrival: np.ndarray,
    emax: np.ndarray,
    enhancing: np.ndarray,
    early_s: float,
    threshold: float,
) -> np.ndarray:
    """Kuhl curve type per row (module docstring), uint8: 0 none, 1 persistent, 2 plateau,
    3 washout."""
    with np.errstate(divide="ignore", invalid="ignore"):
        early_end = arrival + early_s
        in_early = (t[None, :] >= arrival[:, None]) & (t[None, :] <= early_end[:, None])
        e_early = np.where(in_early, e, -np.inf).max(axis=1)
        e_early = np.where(np.isfinite(e_early), e_early, emax)
        change = (e[:, -1] - e_early) / e_early
    ctype = np.where(change > threshold, 1, np.where(change < -threshold, 3, 2)).astype(np.uint8)
    ctype[~enhancing | ~(e_early > 0)] = 0
    return ctype


def semi_quantitative(
    curves: npt.ArrayLike,
    times_s: npt.ArrayLike,
    *,
    n_baseline: int,
    arrival_s: npt.ArrayLike | None = None,
    onset_fraction: float = 0.1,
    early_s: float = 120.0,
    threshold: float = 0.1,
    relative: bool = False,
) -> dict[str, np.ndarray]:
    """Semi-quantitative measures of enhancement curves (definitions in the module docstring).

    Parameters
    ----------
    curves : array_like, shape (..., n)
        Concentration (mM) or signal curves, time on the last axis.
    times_s : array_like, shape (n,)
        Frame times (s), strictly increasing.
    n_baseline : int
        Number of pre-contrast frames (>= 1).
    arrival_s : float or array_like, shape (...), optional
        Arrival time of the contrast (s). Estimated per voxel when omitted.
    onset_fraction : float, default 0.1
        Fraction of the maximum enhancement that marks the arrival (when estimated).
    early_s : float, default 120
        Length of the early phase for the curve type (s).
    threshold : float, default 0.1
        Relative change separating persistent / plateau / washout.
    relative : bool, default False
        Divide the enhancement by the baseline (signal curves).

    Returns
    -------
    dict of str to ndarray, shape (...)
        ``arrival``, ``iAUC60``, ``iAUC90``, ``TTP``, ``max_enhancement``, ``wash_in``,
        ``wash_out`` (float32) and ``curve_type`` (uint8; :data:`CURVE_TYPES`). Units in
        :data:`SEMIQUANT_UNITS` (for concentration curves).

    Raises
    ------
    ProtocolError
        Bad times or ``n_baseline`` outside ``[1, n - 1]``.
    DataError
        Curves whose last axis disagrees with the times.
    """
    t = np.asarray(times_s, dtype=float)
    if t.ndim != 1 or t.size < 3 or not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        raise ProtocolError(
            "expected at least 3 finite, strictly increasing frame times", field="times_s"
        )
    y = np.asarray(curves)
    if y.dtype.kind not in "biuf":
        raise DataError(f"expected numeric curves, got dtype {y.dtype}", field="curves")
    if y.ndim < 1 or y.shape[-1] != t.size:
        raise DataError(
            f"curves have shape {y.shape}; expected {t.size} frames on the last axis",
            field="curves",
        )
    if isinstance(n_baseline, bool) or int(n_baseline) != n_baseline:
        raise ProtocolError(f"must be a whole number, got {n_baseline!r}", field="n_baseline")
    nb = int(n_baseline)
    if not 1 <= nb < t.size:
        raise ProtocolError(
            f"must be between 1 and {t.size - 1} (frames - 1), got {nb}", field="n_baseline"
        )
    if not 0.0 < onset_fraction < 1.0:
        raise FitError(f"must be in (0, 1), got {onset_fraction}", field="onset_fraction")
    lead = y.shape[:-1]
    # float32 curves stay float32 here; each block is converted to float64 (no whole copy)
    yy = y.reshape(-1, t.size)
    arr = (
        None
        if arrival_s is None
        else np.broadcast_to(np.asarray(arrival_s, dtype=float), lead).reshape(-1)
    )
    # voxel rows in blocks: the same arithmetic per voxel, temporaries of one block
    parts = [
        _semiquant_rows(
            np.asarray(yy[lo : lo + _BLOCK], dtype=float),
            t,
            nb,
            None if arr is None else arr[lo : lo + _BLOCK].copy(),
            onset_fraction,
            early_s,
            threshold,
            relative,
        )
        for lo in range(0, yy.shape[0], _BLOCK)
    ] or [
        _semiquant_rows(
            np.asarray(yy, dtype=float), t, nb, arr, onset_fraction, early_s, threshold, relative
        )
    ]
    return {k: np.concatenate([p[k] for p in parts]).reshape(lead) for k in parts[0]}


#: Voxels per block of :func:`semi_quantitative`.
_BLOCK = 16384


def _semiquant_rows(
    yy: np.ndarray,
    t: np.ndarray,
    nb: int,
    arrival_s: np.ndarray | None,
    onset_fraction: float,
    early_s: float,
    threshold: float,
    relative: bool,
) -> dict[str, np.ndarray]:
    """:func:`semi_quantitative` of voxel rows ``yy (N, n)`` (checked inputs)."""
    nv = yy.shape[0]
    base = yy[:, :nb].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        e = yy - base[:, None]
        if relative:
            e = e / np.where(base > 0, base, np.nan)[:, None]
    finite = np.all(np.isfinite(e), axis=1)
    e = np.where(finite[:, None], e, 0.0)
    imax = np.argmax(e, axis=1)
    emax = e[np.arange(nv), imax]
    tmax = t[imax]
    enhancing = finite & (emax > 0)

    arrival = _onset(e, t, emax, imax, nb, onset_fraction) if arrival_s is None else arrival_s
    cum = _cumulative(e, t)

    out: dict[str, np.ndarray] = {"arrival": arrival}
    for window in (60.0, 90.0):
        end = arrival + window
        auc = _integral_to(e, t, end, cum) - _integral_to(e, t, arrival, cum)
        out[f"iAUC{int(window)}"] = np.where(end <= t[-1], auc, np.nan)
    ttp = tmax - arrival
    out["TTP"] = ttp
    out["max_enhancement"] = emax
    with np.errstate(divide="ignore", invalid="ignore"):
        out["wash_in"] = np.where(ttp > 0, emax / ttp, np.nan)
        out["wash_out"] = np.where(t[-1] > tmax, (e[:, -1] - emax) / (t[-1] - tmax), 0.0)
    ctype = _curve_type(e, t, arrival, emax, enhancing, early_s, threshold)
    result: dict[str, np.ndarray] = {}
    for name, arr in out.items():
        result[name] = np.where(enhancing, arr, np.nan).astype(np.float32)
    result["curve_type"] = ctype
    return result
