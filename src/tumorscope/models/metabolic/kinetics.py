"""Two-site exchange of hyperpolarised 13C magnetisation under RF excitation: the equations.

Pure, vectorised functions shared by :mod:`.hp13c` (pyruvate → lactate) and :mod:`.fumarate`
(fumarate → malate). A *substrate* ``P`` converts to a *product* ``L`` at rate ``k`` (1/s, the
back-reaction neglected as in Larson et al. 2018, doi:10.1002/mrm.27145, and Daniels et al.
2016, doi:10.1002/nbm.3468); both relax with ``R1 = 1/T1``; an input ``u(t)`` (magnetisation per
second) feeds the substrate::

    dP/dt = -(k + R1P) P + u(t)        dL/dt = k P - R1L L

At every frame ``j`` an excitation of flip angle ``θ`` reads ``S = Mz sin θ`` and leaves
``Mz cos θ``. Between frames the equations are solved exactly (piecewise-constant input).
"""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt

__all__ = ["exchange_phi", "inputless_basis", "two_site_signals"]


def exchange_phi(a: npt.ArrayLike, b: npt.ArrayLike, t: npt.ArrayLike) -> np.ndarray:
    """``(exp(-a t) - exp(-b t)) / (b - a)``, with its limit ``t exp(-a t)`` when ``b → a``.

    The convolution of ``exp(-a s)`` with ``exp(-b (t - s))`` over ``[0, t]``.
    """
    a_, b_, t_ = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (a, b, t)))
    d = b_ - a_
    small = np.abs(d * t_) < 1e-6
    safe = np.where(small, 1.0, d)
    with np.errstate(over="ignore", invalid="ignore"):
        full = (np.exp(-a_ * t_) - np.exp(-b_ * t_)) / safe
    approx = t_ * np.exp(-a_ * t_) * (1.0 - 0.5 * d * t_)
    return np.where(small, approx, full)


def _relax_input(rate: np.ndarray, t: float) -> np.ndarray:
    """``(1 - exp(-rate t)) / rate`` (limit ``t`` at rate 0)."""
    small = np.abs(rate * t) < 1e-8
    safe = np.where(small, 1.0, rate)
    return np.where(small, t, -np.expm1(-rate * t) / safe)


def two_site_signals(
    times_s: npt.ArrayLike,
    flips_rad: np.ndarray,
    k: npt.ArrayLike,
    *,
    r1p: float,
    r1l: npt.ArrayLike,
    input_rate: npt.ArrayLike = 0.0,
    input_start_s: float = 0.0,
    input_duration_s: float = 0.0,
    p0: npt.ArrayLike = 0.0,
    l0: npt.ArrayLike = 0.0,
) -> np.ndarray:
    """Substrate and product signals of the two-site model with a boxcar input.

    Parameters
    ----------
    times_s : array_like, shape (n,)
        Frame times (increasing).
    flips_rad : ndarray, shape (2, n)
        Flip angles of substrate (row 0) and product (row 1) at each frame, radians.
    k : array_like, shape (v,) or scalar
        Conversion rate (1/s).
    r1p, r1l : float or array_like (v,)
        Relaxation rates (1/s) of substrate and product.
    input_rate : array_like, shape (v,) or scalar
        Boxcar input amplitude (magnetisation per second), on from ``input_start_s`` for
        ``input_duration_s`` seconds.
    p0, l0 : array_like, shape (v,) or scalar
        Longitudinal magnetisations just before the first frame.

    Returns
    -------
    ndarray, shape (v, 2, n)
        Signals ``Mz sin θ`` of substrate and product.
    """
    t = np.asarray(times_s, dtype=float)
    kk = np.atleast_1d(np.asarray(k, dtype=float))
    v = kk.size
    rl = np.broadcast_to(np.asarray(r1l, dtype=float), (v,))
    u = np.broadcast_to(np.asarray(input_rate, dtype=float), (v,))
    P = np.broadcast_to(np.asarray(p0, dtype=float), (v,)).copy()
    L = np.broadcast_to(np.asarray(l0, dtype=float), (v,)).copy()
    a = kk + r1p
    on, off = input_start_s, input_start_s + input_duration_s
    out = np.empty((v, 2, t.size))
    cos_, sin_ = np.cos(flips_rad), np.sin(flips_rad)
    # before the first frame: the input since it started
    edges = [e for e in (on, off) if e < t[0]]
    segs = [*edges, t[0]]
    start = min(on, t[0])
    for stop in segs:
        if stop > start:
            P, L = _evolve(P, L, a, kk, rl, u, start, stop, on, off)
            start = stop
    for j in range(t.size):
        out[:, 0, j] = P * sin_[0, j]
        out[:, 1, j] = L * sin_[1, j]
        if j + 1 == t.size:
            break
        P = P * cos_[0, j]
        L = L * cos_[1, j]
        cuts = sorted({t[j], t[j + 1], *(e for e in (on, off) if t[j] < e < t[j + 1])})
        for s0, s1 in itertools.pairwise(cuts):
            P, L = _evolve(P, L, a, kk, rl, u, s0, s1, on, off)
    return out


def _evolve(
    P: np.ndarray,
    L: np.ndarray,
    a: np.ndarray,
    k: np.ndarray,
    rl: np.ndarray,
    u: np.ndarray,
    s0: float,
    s1: float,
    on: float,
    off: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact solution over ``[s0, s1]`` with the input constant there (on or off)."""
    dt = s1 - s0
    mid = 0.5 * (s0 + s1)
    uu = u if on <= mid < off else np.zeros_like(u)
    ea = np.exp(-a * dt)
    eb = np.exp(-rl * dt)
    phi = exchange_phi(a, rl, dt)
    # P(s) = P e^{-a s} + (u/a)(1 - e^{-a s});  L gets k ∫ e^{-b (dt - s)} P(s) ds
    ua = np.where(np.abs(a) > 0, uu / np.where(a == 0, 1.0, a), 0.0)
    P_new = P * ea + uu * _relax_input(a, dt)
    conv_const = _relax_input(rl, dt) - phi  # ∫ e^{-b(dt-s)} (1 - e^{-a s}) ds
    L_new = L * eb + k * (P * phi + ua * conv_const)
    return P_new, L_new


def inputless_basis(
    substrate: np.ndarray,
    times_s: np.ndarray,
    flips_rad: np.ndarray,
    r1l: npt.ArrayLike,
    decay: npt.ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The product signal of the input-less model, split into its two linear parts.

    The substrate's longitudinal magnetisation is taken from its measured signal,
    ``P_j = S_j / sin θ_j``; between frames it is interpolated exponentially from its value
    after the pulse, ``P_j cos θ_j``, to the next measured value (exact for a substrate that
    only relaxes and converts; linear where a value is not positive). The product then obeys
    ``L_{j+1} = L_j cos θ_j e^{-R1L Δ} + k ∫ e^{-R1L(Δ-s)} P(s) ds``, so its signal is
    ``L0 · A + k · B``, linear in the product's initial magnetisation and in ``k``.

    With ``decay`` (the substrate's loss rate ``k + R1P``, 1/s) the substrate is instead
    modelled, as in the Hyperpolarized-MRI-Toolbox's input-less fit (Larson 2018), as
    decaying at that rate under a constant input over each interval, the input chosen so
    that the next measured value is met: exact for a piecewise-constant input, and valid for
    signals of any sign (noise). The caller iterates ``decay = k̂ + R1P`` to a fixed point.

    Parameters
    ----------
    substrate : ndarray, shape (v, n)
        Measured substrate signals.
    times_s : ndarray, shape (n,)
    flips_rad : ndarray, shape (2, n)
    r1l : float or ndarray, shape (v,)
    decay : float or ndarray, shape (v,), optional

    Returns
    -------
    A, B : ndarray, shape (v, n)
        Product signal per unit ``L0`` and per unit ``k`` (1/s).
    """
    v, n = substrate.shape
    rl = np.broadcast_to(np.asarray(r1l, dtype=float), (v,))
    sin_p, cos_p = np.sin(flips_rad[0]), np.cos(flips_rad[0])
    sin_l, cos_l = np.sin(flips_rad[1]), np.cos(flips_rad[1])
    Pz = substrate / sin_p
    dts = np.diff(times_s)
    A = np.empty((v, n))
    B = np.empty((v, n))
    a_mz = np.ones(v)
    b_mz = np.zeros(v)
    a = None if decay is None else np.broadcast_to(np.asarray(decay, dtype=float), (v,))
    # the factors that depend only on the rates and the interval, computed once per distinct
    # interval (frames are usually evenly spaced): the same expressions, so the same numbers
    per_dt: dict[float, tuple[np.ndarray, ...]] = {}
    for j in range(n):
        A[:, j] = a_mz * sin_l[j]
        B[:, j] = b_mz * sin_l[j]
        if j + 1 == n:
            break
        dt = dts[j]
        p_after = Pz[:, j] * cos_p[j]
        p_next = Pz[:, j + 1]
        f = per_dt.get(float(dt))
        if a is not None:
            if f is None:
                phi = exchange_phi(a, rl, dt)
                f = per_dt[float(dt)] = (
                    np.exp(-rl * dt),
                    np.exp(-a * dt),
                    _relax_input(a, dt),  # (1 - e^{-a dt}) / a
                    phi,
                    np.where(a == 0, 1.0, a),
                    _relax_input(rl, dt) - phi,
                )
            eb, ea, ra, phi, a_safe, conv = f
            u = (p_next - p_after * ea) / ra
            ua = u / a_safe
            q = p_after * phi + ua * conv
            a_mz = a_mz * cos_l[j] * eb
            b_mz = b_mz * cos_l[j] * eb + q
            continue
        if f is None:
            eb = np.exp(-rl * dt)
            c0 = _relax_input(rl, dt)
            c1 = c0 - np.where(
                np.abs(rl * dt) < 1e-8,
                0.5 * dt,
                (1.0 - eb * (1.0 + rl * dt)) / np.where(rl == 0, 1.0, rl * rl * dt),
            )
            f = per_dt[float(dt)] = (eb, c0, c1)
        eb, c0, c1 = f
        pos = (p_after > 0) & (p_next > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(pos, np.log(np.where(pos, p_after / np.where(pos, p_next, 1.0), 1.0)), 0)
        r = r / dt
        q_exp = p_after * exchange_phi(r, rl, dt)
        # linear interpolation: ∫ e^{-b(dt-s)} (p_after + (p_next - p_after) s/dt) ds
        q_lin = p_after * (c0 - c1) + p_next * c1
        q = np.where(pos, q_exp, q_lin)
        a_mz = a_mz * cos_l[j] * eb
        b_mz = b_mz * cos_l[j] * eb + q
    return A, B
