"""DCE-MRI signal ↔ contrast agent concentration (spoiled gradient echo, fast exchange).

:func:`signal_to_concentration` inverts the SPGR steady-state equation exactly, voxel by voxel,
with a status code per voxel (:class:`ConcentrationStatus`) instead of errors mid-volume;
:func:`concentration_to_signal` is its inverse (for simulation and tests).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ...errors import DataError, ProtocolError

__all__ = [
    "ConcentrationStatus",
    "concentration_to_signal",
    "signal_to_concentration",
    "signal_to_concentration_valid",
]


class ConcentrationStatus(IntEnum):
    """Per-voxel outcome of :func:`signal_to_concentration` (uint8 map).

    Attributes
    ----------
    OK : 0
    SIGNAL_ABOVE_MAXIMUM : 1
        A post-contrast signal at or above the steady-state maximum ``M0 sin(a)`` (the
        inversion has no solution); those frames are NaN.
    BAD_T1 : 2
        Pre-contrast T1 not finite or <= 0; the whole curve is NaN.
    BAD_BASELINE : 3
        Baseline signal not finite or <= 0; the whole curve is NaN.
    NEGATIVE_SIGNAL : 4
        A negative or non-finite signal; those frames are NaN.
    """

    OK = 0
    SIGNAL_ABOVE_MAXIMUM = 1
    BAD_T1 = 2
    BAD_BASELINE = 3
    NEGATIVE_SIGNAL = 4


def _check_spgr(flip_angle_deg: float, tr_ms: float, r1: float) -> tuple[float, float, float]:
    fa = float(flip_angle_deg)
    if not (np.isfinite(fa) and 0.0 < fa < 180.0):
        raise ProtocolError(
            f"must be in (0, 180) degrees, got {flip_angle_deg!r}", field="flip_angle_deg"
        )
    tr = float(tr_ms)
    if not (np.isfinite(tr) and tr > 0):
        raise ProtocolError(f"must be > 0 ms, got {tr_ms!r}", field="tr_ms")
    rel = float(r1)
    if not (np.isfinite(rel) and rel > 0):
        raise ProtocolError(f"must be > 0 1/(mM.s), got {r1!r}", field="relaxivity")
    return np.deg2rad(fa), tr * 1e-3, rel


def _baseline_frames(baseline_start: int, n_baseline: int, n: int) -> tuple[int, int]:
    """First and end (exclusive) baseline frames, checked against ``n`` frames."""
    for name, v in (("n_baseline", n_baseline), ("baseline_start", baseline_start)):
        if isinstance(v, bool) or int(v) != v:
            raise ProtocolError(f"must be a whole number, got {v!r}", field=name)
    nb, b0 = int(n_baseline), int(baseline_start)
    if not 0 <= b0 < nb < n + 1 or nb - b0 < 1:
        raise ProtocolError(
            f"the baseline must hold at least one frame: got frames [{b0}, {nb}) of {n}; "
            f"expected 0 <= baseline_start < n_baseline <= {n}",
            field="n_baseline",
        )
    return b0, nb


def signal_to_concentration(
    signal: npt.ArrayLike,
    *,
    t1_ms: npt.ArrayLike,
    flip_angle_deg: float,
    tr_ms: float,
    relaxivity: float,
    n_baseline: int,
    baseline_start: int = 0,
    b1: npt.ArrayLike | None = None,
    dtype: npt.DTypeLike = np.float64,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Contrast agent concentration from a spoiled gradient echo (SPGR) time series.

    The steady-state SPGR signal (Ernst & Anderson 1966, doi:10.1063/1.1719961)

    .. math:: S = M_0 \sin\alpha \frac{1 - E}{1 - E\cos\alpha},\quad E = e^{-TR\,R_1}

    is inverted exactly: ``M0`` from the mean baseline signal and the pre-contrast
    ``R10 = 1/T10``, then for each frame ``y = S / (M0 sin a)``, ``E = (1 - y)/(1 - y cos a)``,
    ``R1 = -ln(E)/TR`` and, with fast water exchange and linear relaxivity,
    ``C = (R1 - R10) / r1`` (Tofts, JMRI 1997, doi:10.1002/jmri.1880070113).

    Impossible inputs never raise mid-volume: they give NaN and a status code per voxel
    (:class:`ConcentrationStatus`; the largest code found in the voxel).

    Parameters
    ----------
    signal : array_like, shape (..., n)
        Signal (a.u.), frames on the last axis.
    t1_ms : float or array_like, shape (...)
        Pre-contrast T1 in ms (a map or one value).
    flip_angle_deg : float
        Nominal flip angle (degrees), in (0, 180).
    tr_ms : float
        Repetition time (ms).
    relaxivity : float
        r1 in 1/(mM·s).
    n_baseline : int
        Pre-contrast frames: the baseline is ``signal[..., baseline_start:n_baseline]``.
    baseline_start : int, default 0
        First baseline frame (skip frames before the steady state; the OSIPI reference data
        use 1).
    b1 : float or array_like, shape (...), optional
        Relative flip angle (actual / nominal); 1 when omitted.
    dtype : float32 or float64, default float64
        Of the returned concentration; the arithmetic is float64 either way (per block).
        The DCE stage asks for float32: half the memory of a whole 4-D series.

    Returns
    -------
    concentration_mM : ndarray, shape (..., n), ``dtype``
        NaN where the inversion is impossible.
    status : ndarray of uint8, shape (...)
        :class:`ConcentrationStatus` per voxel.

    Raises
    ------
    ProtocolError
        A flip angle outside (0, 180), TR or r1 <= 0, a baseline of zero frames or not
        before the last frame, or a T1 / B1 map of the wrong shape.
    """
    conc, status, _ = signal_to_concentration_valid(
        signal,
        t1_ms=t1_ms,
        flip_angle_deg=flip_angle_deg,
        tr_ms=tr_ms,
        relaxivity=relaxivity,
        n_baseline=n_baseline,
        baseline_start=baseline_start,
        b1=b1,
        dtype=dtype,
    )
    return conc, status


def signal_to_concentration_valid(
    signal: npt.ArrayLike,
    *,
    t1_ms: npt.ArrayLike,
    flip_angle_deg: float,
    tr_ms: float,
    relaxivity: float,
    n_baseline: int,
    baseline_start: int = 0,
    b1: npt.ArrayLike | None = None,
    dtype: npt.DTypeLike = np.float64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`signal_to_concentration`, and which voxels' whole curve is finite.

    Parameters are those of :func:`signal_to_concentration`.

    Returns
    -------
    concentration_mM : ndarray, shape (..., n), ``dtype``
    status : ndarray of uint8, shape (...)
    valid : ndarray of bool, shape (...)
        Every frame of the voxel's concentration is finite as returned (in ``dtype``):
        ``np.all(np.isfinite(concentration_mM), axis=-1)``, found in the same pass by the
        compiled kernel (no second pass over a 4-D result).
    """
    a, tr_s, r1 = _check_spgr(flip_angle_deg, tr_ms, relaxivity)
    s = np.asarray(signal)
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(float)
    if s.ndim < 1 or s.shape[-1] < 2:
        raise DataError(
            f"expected frames on the last axis (at least 2), got shape {s.shape}", field="signal"
        )
    b0, nb = _baseline_frames(baseline_start, n_baseline, s.shape[-1])
    lead = s.shape[:-1]
    try:
        t1 = np.broadcast_to(np.asarray(t1_ms, dtype=float), lead)
    except ValueError:
        raise ProtocolError(
            f"T1 map of shape {np.shape(t1_ms)} does not match the signal's {lead}", field="t1_ms"
        ) from None
    if b1 is None:
        alpha = np.full(lead, a)
    else:
        try:
            alpha = a * np.broadcast_to(np.asarray(b1, dtype=float), lead)
        except ValueError:
            raise ProtocolError(
                f"B1 map of shape {np.shape(b1)} does not match the signal's {lead}", field="b1"
            ) from None
    # in blocks of voxel rows, converted to float64 one block at a time: the same arithmetic
    # per voxel, with temporaries (and a float64 copy) of a block instead of the whole series
    n = s.shape[-1]
    out_dtype = np.dtype(dtype)
    if out_dtype not in (np.float32, np.float64):
        raise DataError(f"expected float32 or float64, got {out_dtype}", field="dtype")
    if _compiled() is not None:
        return _signal_to_concentration_compiled(s, t1, alpha, b0, nb, tr_s, r1, out_dtype)
    conc = np.empty(s.shape, dtype=out_dtype)
    status = np.zeros(lead, dtype=np.uint8)
    valid = np.empty(lead, dtype=bool)
    # slabs along the first axis of an image (any memory order), else the rows themselves
    slabs: Any = range(s.shape[0]) if s.ndim >= 3 else [Ellipsis]
    for i in slabs:
        rows = np.asarray(s[i], dtype=float).reshape(-1, n)
        c_out = np.empty(rows.shape)
        st_out = np.empty(rows.shape[0], dtype=np.uint8)
        t1f, alf = t1[i].reshape(-1), alpha[i].reshape(-1)
        for lo in range(0, rows.shape[0], _BLOCK):
            hi = min(lo + _BLOCK, rows.shape[0])
            c_out[lo:hi], st_out[lo:hi] = _concentration_rows(
                rows[lo:hi], t1f[lo:hi], alf[lo:hi], b0, nb, tr_s, r1
            )
        conc[i] = c_out.reshape(conc[i].shape)
        status[i] = st_out.reshape(status[i].shape)
        valid[i] = np.all(np.isfinite(conc[i]), axis=-1)
    return conc, status, valid


#: Voxels per block of :func:`signal_to_concentration`.
_BLOCK = 16384

#: ``"numpy"`` forces the numpy path (tests compare the two); anything else: the compiled
#: path when numba is installed.
ENGINE = "auto"


def _compiled() -> Any:
    """The compiled kernel (:mod:`._signal_numba`), or None (numba missing, or numpy asked)."""
    if ENGINE == "numpy":
        return None
    try:
        from ._signal_numba import concentration_rows
    except ImportError:  # pragma: no cover - numba is in the 'fast' extra
        return None
    return concentration_rows


def _signal_to_concentration_compiled(
    s: np.ndarray,
    t1: np.ndarray,
    alpha: np.ndarray,
    b0: int,
    nb: int,
    tr_s: float,
    r1: float,
    out_dtype: np.dtype,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`signal_to_concentration_valid` by the compiled kernel, on the series as it is
    stored.

    The voxels are taken in the series' own memory order (a Fortran-ordered NIfTI series as
    nibabel returns it stays so: no copy) and the result has the same order.
    """
    n = s.shape[-1]
    lead = s.shape[:-1]
    fortran = s.ndim > 1 and s.flags.f_contiguous and not s.flags.c_contiguous
    order: Literal["C", "F"] = "F" if fortran else "C"
    if order == "C" and not s.flags.c_contiguous:
        s = np.ascontiguousarray(s)
    if s.dtype not in (np.float32, np.float64):
        s = s.astype(np.float64)
    rows = s.reshape(-1, n, order=order)  # a view
    conc = np.empty(s.shape, dtype=out_dtype, order=order)
    status = np.empty(lead, dtype=np.uint8, order=order)
    valid = np.empty(lead, dtype=bool, order=order)
    # writable C-ordered float64 vectors whatever T1 map and angles come in (a read-only map
    # would be another type to numba: a second compilation, not in the warm-up table)
    _compiled()(
        rows,
        np.require(t1.reshape(-1, order=order), np.float64, ["C", "W"]),
        np.require(alpha.reshape(-1, order=order), np.float64, ["C", "W"]),
        b0,
        nb,
        float(tr_s),
        float(r1),
        conc.reshape(-1, n, order=order),
        status.reshape(-1, order=order),  # views
        valid.reshape(-1, order=order),
    )
    return conc, status, valid


def _concentration_rows(
    s: np.ndarray, t1: np.ndarray, alpha: np.ndarray, b0: int, nb: int, tr_s: float, r1: float
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`signal_to_concentration` of voxel rows ``s (N, n)``."""
    status = np.zeros(s.shape[0], dtype=np.uint8)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r10 = 1e3 / t1
        bad_t1 = ~(np.isfinite(t1) & (t1 > 0))
        base = s[..., b0:nb].mean(axis=-1)
        bad_base = ~(np.isfinite(base) & (base > 0))
        e0 = np.exp(-tr_s * r10)
        sa, ca = np.sin(alpha), np.cos(alpha)
        m0 = base * (1.0 - ca * e0) / (sa * (1.0 - e0))
        y = s / (m0 * sa)[..., None]
        neg = ~np.isfinite(s) | (s < 0)
        above = (y >= 1.0) & ~neg
        e = (1.0 - y) / (1.0 - y * ca[..., None])
        r1t = -np.log(e) / tr_s
        conc = (r1t - r10[..., None]) / r1
    conc[neg | above] = np.nan
    status[np.any(above, axis=-1)] = ConcentrationStatus.SIGNAL_ABOVE_MAXIMUM
    status[np.any(neg, axis=-1)] = ConcentrationStatus.NEGATIVE_SIGNAL
    status[bad_base] = ConcentrationStatus.BAD_BASELINE
    status[bad_t1] = ConcentrationStatus.BAD_T1
    conc[bad_base | bad_t1] = np.nan
    return conc, status


def concentration_to_signal(
    concentration_mM: npt.ArrayLike,
    *,
    t1_ms: npt.ArrayLike,
    flip_angle_deg: float,
    tr_ms: float,
    relaxivity: float,
    m0: npt.ArrayLike = 1.0,
    b1: npt.ArrayLike | None = None,
) -> np.ndarray:
    """SPGR signal from concentration (the inverse of :func:`signal_to_concentration`).

    ``R1(t) = 1000/T10 + r1 C(t)`` and the SPGR equation of
    :func:`tumorscope.models.relaxometry.spgr_signal` (Ernst & Anderson 1966,
    doi:10.1063/1.1719961).

    Parameters
    ----------
    concentration_mM : array_like, shape (..., n)
    t1_ms : float or array_like, shape (...)
        Pre-contrast T1 (ms).
    flip_angle_deg, tr_ms, relaxivity
        As in :func:`signal_to_concentration`.
    m0 : float or array_like, shape (...), default 1
        Equilibrium magnetisation (a.u.).
    b1 : float or array_like, shape (...), optional
        Relative flip angle.

    Returns
    -------
    ndarray, shape (..., n)
    """
    from ..relaxometry import spgr_signal

    _check_spgr(flip_angle_deg, tr_ms, relaxivity)
    c = np.asarray(concentration_mM, dtype=float)
    lead = c.shape[:-1]
    r10 = 1e3 / np.broadcast_to(np.asarray(t1_ms, dtype=float), lead)
    with np.errstate(divide="ignore"):
        t1t = 1e3 / (r10[..., None] + relaxivity * c)
    params = np.stack([np.broadcast_to(np.asarray(m0, float)[..., None], c.shape), t1t], axis=-1)
    b1_t = None if b1 is None else np.broadcast_to(np.asarray(b1, float)[..., None], c.shape)
    return spgr_signal(params, [float(flip_angle_deg)], float(tr_ms), b1=b1_t)[..., 0]
