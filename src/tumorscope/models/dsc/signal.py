"""DSC signal: ΔR2*(t), bolus onset (baseline frames), first-pass window, gamma variate.

* ``ΔR2*(t) = −ln(S(t)/S0)/TE`` (Rosen et al. 1990; Østergaard 1996 eq. 2) with ``S0`` the
  mean of the baseline frames, TE in ms at the interface and ΔR2* in 1/s. The same relation
  holds for gradient-echo (ΔR2*) and spin-echo (ΔR2) DSC: only the vessel-size sensitivity of
  the constant of proportionality to concentration differs, which cancels in the AIF/tissue
  ratios when both come from the same series.
* Dual echo (Vonken et al. 1999; Paulson & Schmainda 2008): with two echoes of each frame,
  ``ΔR2*(t) = ln[(S1(t)/S1,0)/(S2(t)/S2,0)]/(TE2 − TE1)``. A change of the signal common to
  both echoes (the T1 shortening of leaked contrast, which raises ``S0(t)``) cancels in the
  ratio; the apparent ``S0(t)/S0,pre = exp[(TE2·ln(S1/S1,0) − TE1·ln(S2/S2,0))/(TE2 − TE1)]``
  is that common factor (the "T1 effect" a single echo would have read as negative ΔR2*).
* The first ``n_skip`` frames (default 2) are excluded from the baseline: they are not yet in
  the T1 steady state.
* Bolus onset: on the mean curve of the voxels given, the first frame after ``n_skip + 3``
  that, with the next frame too, lies more than ``n_sd`` (default 3) standard deviations
  below the mean of the frames before it (the running baseline; two frames so that one
  noisy frame is not a bolus). The baseline frames are ``[n_skip, onset)``.
* The first-pass window is ``[onset, end)``, ``end`` the first local minimum of the (3-frame
  smoothed) mean ΔR2* after its peak, where recirculation begins (the end of the series if
  there is none).
* Gamma variate (Thompson et al. 1964; Rempp 1994): ``A (t − t0)^α exp(−(t − t0)/β)`` for
  ``t > t0``, 0 before.

References
----------
Rosen BR, Belliveau JW, Vevea JM, Brady TJ. Perfusion imaging with NMR contrast agents. Magn
Reson Med 1990;14:249-265. doi:10.1002/mrm.1910140211

Vonken EP, van Osch MJ, Bakker CJ, Viergever MA. Measurement of cerebral perfusion with
dual-echo multi-slice quantitative dynamic susceptibility contrast MRI. Magn Reson Med
1999;41:343-350. doi:10.1002/(SICI)1522-2594(199902)41:2<343::AID-MRM19>3.0.CO;2-N

Paulson ES, Schmainda KM. Comparison of dynamic susceptibility-weighted contrast-enhanced MR
methods: recommendations for measuring relative cerebral blood volume in brain tumors.
Radiology 2008;249:601-613. doi:10.1148/radiol.2492071659

Thompson HK, Starmer CF, Whalen RE, McIntosh HD. Indicator transit time considered as a gamma
variate. Circ Res 1964;14:502-515. doi:10.1161/01.RES.14.6.502
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ...errors import DataError, ProtocolError

__all__ = [
    "apparent_s0_change",
    "bolus_onset",
    "delta_r2star",
    "delta_r2star_dual_echo",
    "first_pass_window",
    "gamma_variate",
]


def gamma_variate(
    times_s: npt.ArrayLike, *, amplitude: float, t0_s: float, alpha: float, beta_s: float
) -> np.ndarray:
    """``A (t − t0)^α exp(−(t − t0)/β)`` for ``t > t0``, else 0."""
    t = np.asarray(times_s, dtype=float) - t0_s
    tp = np.where(t > 0, t, 0.0)
    return np.where(t > 0, amplitude * tp**alpha * np.exp(-tp / beta_s), 0.0)


def _mean_curve(signal: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    flat = signal.reshape(-1, signal.shape[-1])
    if mask is not None:
        flat = flat[np.asarray(mask, bool).reshape(-1)]
    flat = flat[np.all(np.isfinite(flat), axis=1)]
    if flat.shape[0] == 0:
        raise DataError("no voxel with finite signal in the mask", field="signal")
    return flat.mean(axis=0)


def bolus_onset(
    signal: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    *,
    n_skip: int = 2,
    n_sd: float = 3.0,
) -> int:
    """Index of the first frame of the bolus (signal drop) on the mean curve.

    Parameters
    ----------
    signal : array_like, shape (..., N)
        DSC magnitude signal, frames last.
    mask : array_like of bool, shape (...), optional
    n_skip : int, keyword-only
        Frames excluded before the steady state (default 2).
    n_sd : float, keyword-only
        How many baseline standard deviations below the running mean mark the onset.

    Raises
    ------
    DataError
        No drop found (no bolus in the series), or too few frames.
    """
    s = np.asarray(signal, dtype=float)
    m = _mean_curve(s, None if mask is None else np.asarray(mask))
    first = n_skip + 3
    if m.size <= first + 1:
        raise DataError(f"only {m.size} frames: too few for a baseline", field="signal")
    for i in range(first, m.size - 1):
        base = m[n_skip:i]
        sd = max(base.std(ddof=1), 1e-6 * abs(base.mean()))
        if max(m[i], m[i + 1]) < base.mean() - n_sd * sd:
            return i
    raise DataError("no signal drop found: no contrast bolus in this series", field="signal")


def delta_r2star(
    signal: npt.ArrayLike,
    te_ms: float,
    *,
    n_baseline: int,
    n_skip: int = 2,
) -> np.ndarray:
    """``ΔR2*(t) = −ln(S(t)/S0)/TE`` in 1/s, ``S0`` the mean of frames ``[n_skip, n_baseline)``.

    Parameters
    ----------
    signal : array_like, shape (..., N)
    te_ms : float
        Echo time (ms).
    n_baseline : int, keyword-only
        Frames before the bolus onset (e.g. from :func:`bolus_onset`).
    n_skip : int, keyword-only
        First frames not used for ``S0`` (default 2; set 0 to use them all). If fewer than
        2 frames would remain, all frames before ``n_baseline`` are used.

    Returns
    -------
    ndarray, shape (..., N)
        NaN where ``S0`` or ``S(t)`` is not positive.

    Raises
    ------
    ProtocolError
        TE not a positive number.
    DataError
        ``n_baseline`` outside ``[1, N)``.
    """
    te = _echo_time_s(te_ms, "te_ms")
    with np.errstate(divide="ignore", invalid="ignore"):
        return -_log_ratio(signal, n_baseline, n_skip) / te


def _echo_time_s(te_ms: float, name: str) -> float:
    """An echo time in ms, checked (> 0, finite), in s."""
    te = float(te_ms)
    if not (np.isfinite(te) and te > 0):
        raise ProtocolError(f"echo time must be > 0 ms, got {te_ms!r}", field=name)
    return te * 1e-3


def _log_ratio(signal: npt.ArrayLike, n_baseline: int, n_skip: int) -> np.ndarray:
    """``ln(S(t)/S0)``, ``S0`` the mean of frames ``[n_skip, n_baseline)`` (all frames before
    ``n_baseline`` if fewer than 2 would remain); NaN where ``S`` or ``S0`` is not positive."""
    s = np.asarray(signal, dtype=float)
    n = s.shape[-1]
    if not 1 <= n_baseline < n:
        raise DataError(f"n_baseline must be in [1, {n}), got {n_baseline}", field="n_baseline")
    lo = n_skip if n_baseline - n_skip >= 2 else 0
    s0 = s[..., lo:n_baseline].mean(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log(s / s0)
    return np.where((s > 0) & (s0 > 0), out, np.nan)


def _two_echoes(
    signal1: npt.ArrayLike,
    signal2: npt.ArrayLike,
    te1_ms: float,
    te2_ms: float,
    n_skip: int,
    n_baseline: int,
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Both echoes' ``ln(S/S0)`` and their echo times (s), checked."""
    te1, te2 = _echo_time_s(te1_ms, "te1_ms"), _echo_time_s(te2_ms, "te2_ms")
    if not te2 > te1:
        raise ProtocolError(
            f"the second echo time must be longer than the first, got {te1_ms!r} and {te2_ms!r} ms",
            field="te2_ms",
        )
    s1, s2 = np.asarray(signal1, dtype=float), np.asarray(signal2, dtype=float)
    if s1.shape != s2.shape:
        raise DataError(
            f"the two echoes differ in shape: {s1.shape} and {s2.shape}", field="signal2"
        )
    return _log_ratio(s1, n_baseline, n_skip), _log_ratio(s2, n_baseline, n_skip), te1, te2


def delta_r2star_dual_echo(
    signal1: npt.ArrayLike,
    signal2: npt.ArrayLike,
    te1_ms: float,
    te2_ms: float,
    *,
    n_baseline: int,
    n_skip: int = 2,
) -> np.ndarray:
    """``ΔR2*(t) = ln[(S1(t)/S1,0)/(S2(t)/S2,0)]/(TE2 − TE1)`` in 1/s (Vonken et al. 1999).

    With ``S_i(t) = S0(t)·exp(−TE_i·R2*(t))`` at both echoes, ``S0(t)`` (which leaked
    contrast raises by T1 shortening) cancels: the result is free of T1 effects, not of T2*
    effects of the leaked agent (the leakage correction still applies to those).

    Parameters
    ----------
    signal1, signal2 : array_like, shape (..., N)
        The first and second echo's magnitude signal, frames last (same shape).
    te1_ms, te2_ms : float
        Echo times (ms), ``0 < te1_ms < te2_ms``.
    n_baseline : int, keyword-only
        Frames before the bolus onset; ``S1,0`` and ``S2,0`` are the means of frames
        ``[n_skip, n_baseline)`` of each echo (as :func:`delta_r2star`).
    n_skip : int, keyword-only
        Default 2.

    Returns
    -------
    ndarray, shape (..., N)
        NaN where a signal or its baseline is not positive.

    Raises
    ------
    ProtocolError
        An echo time not a positive number, or ``te2_ms <= te1_ms``.
    DataError
        Shapes differ, or ``n_baseline`` outside ``[1, N)``.
    """
    l1, l2, te1, te2 = _two_echoes(signal1, signal2, te1_ms, te2_ms, n_skip, n_baseline)
    return (l1 - l2) / (te2 - te1)


def apparent_s0_change(
    signal1: npt.ArrayLike,
    signal2: npt.ArrayLike,
    te1_ms: float,
    te2_ms: float,
    *,
    n_baseline: int,
    n_skip: int = 2,
) -> np.ndarray:
    """``S0(t)/S0,pre``, the signal change common to both echoes (the T1 effect), unitless.

    ``ln(S0(t)/S0,pre) = [TE2·ln(S1/S1,0) − TE1·ln(S2/S2,0)]/(TE2 − TE1)`` (solving
    ``ln(S_i/S_i,0) = ln(S0(t)/S0,pre) − TE_i·ΔR2*(t)`` for the two echoes; Vonken 1999,
    Paulson & Schmainda 2008). 1 without leakage; > 1 where leaked contrast shortens T1: a
    single echo at ``TE`` would read ``−ln(S0(t)/S0,pre)/TE`` too little ΔR2*.

    Parameters and errors as :func:`delta_r2star_dual_echo`.
    """
    l1, l2, te1, te2 = _two_echoes(signal1, signal2, te1_ms, te2_ms, n_skip, n_baseline)
    return np.exp((te2 * l1 - te1 * l2) / (te2 - te1))


def first_pass_window(
    delta_r2: npt.ArrayLike, mask: npt.ArrayLike | None = None, *, onset: int
) -> tuple[int, int]:
    """``(onset, end)``: the frames of the first pass on the mean ΔR2* curve.

    ``end`` is one past the first local minimum of the 3-frame moving average after the peak
    (the start of recirculation), or the number of frames if there is none.
    """
    d = np.asarray(delta_r2, dtype=float)
    m = _mean_curve(d, None if mask is None else np.asarray(mask))
    if not 0 <= onset < m.size:
        raise DataError(f"onset {onset} outside the {m.size} frames", field="onset")
    sm = np.convolve(m, np.ones(3) / 3.0, mode="same")
    peak = onset + int(np.argmax(sm[onset:]))
    for i in range(peak + 1, m.size - 1):
        if sm[i] <= sm[i - 1] and sm[i] < sm[i + 1]:
            return onset, i + 1
    return onset, int(m.size)
