"""DCE-MRI pharmacokinetics: exact convolutions and the signal equations of the Tofts family.

This module is the pure layer of :mod:`tumorscope.models.dce`: vectorised functions of the
parameters (on the last axis) with analytic Jacobians, and the linearised least-squares
solutions that give the non-linear fit its starting values. It holds no data and no options.

Units at the interface: time in s; ``Ktrans`` and ``kep`` in 1/min; ``Fp`` and ``PS`` in
mL/100 mL/min; ``ve`` and ``vp`` fractions; ``delay`` in s; concentrations in mM. Inside,
rates are converted to 1/s (``Ktrans/60``, ``Fp/6000``).

Exact convolution of a piecewise-linear input
---------------------------------------------
Every model here is a sum of terms ``(cp ⊛ e^{-k t})(t) = ∫_{t_0}^{t} cp(u) e^{-k(t-u)} du``
of the plasma input ``cp`` with exponentials. ``cp`` is known at the frame times only; we take
it as the piecewise-linear curve through those samples and convolve that curve **exactly**,
with the recursion (Flouri et al. MRM 2016, doi:10.1002/mrm.25991, appendix; Sourbron &
Buckley NMR Biomed 2013, doi:10.1002/nbm.2940)

.. math::

    F_i = e^{-k\\Delta_i} F_{i-1} + \\Delta_i\\,[c_i\\,g_0(k\\Delta_i)
          + (c_{i-1} - c_i)\\,g_1(k\\Delta_i)],
    \\qquad g_n(x) = \\int_0^1 s^n e^{-x s}\\,ds,

which is O(n) per voxel and vectorised over voxels (numba kernel when numba is installed, a
numpy loop over frames otherwise). Its derivative, ``∂F/∂k = -G`` with
``G(t) = ∫ (t-u) cp(u) e^{-k(t-u)} du``, follows the same recursion with ``g_1, g_2``. The
rectangle rule (a discrete ``np.convolve``) is *not* used: it biases vp by ~20% at 1–5 s
sampling even without noise. A bolus arrival delay ``d`` evaluates the exact convolution at
``t - d`` (between frames, the partial-interval form of the same recursion), so the delayed
model is exact too, and ``∂C/∂d = -dC/dt`` is analytic.
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from ...errors import FitError, ProtocolError

__all__ = [
    "check_times_aif",
    "exp_convolution",
    "extended_tofts",
    "linear_2cum",
    "linear_2cxm",
    "linear_extended_tofts",
    "linear_patlak",
    "linear_tofts",
    "patlak",
    "tofts",
    "two_cum",
    "two_cxm",
]

#: What the equations take: anything :func:`numpy.asarray` accepts.
Array: TypeAlias = npt.ArrayLike
#: What they return: the curves, shape (..., n), or the curves and their Jacobian,
#: shape (..., n, n_params), with ``jacobian=True``.
Curves: TypeAlias = np.ndarray | tuple[np.ndarray, np.ndarray]

try:  # numba is an optional dependency (the "fast" extra)
    import numba as _numba  # noqa: F401

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover
    HAVE_NUMBA = False


# --------------------------------------------------------------------------- checks
def check_times_aif(times_s: npt.ArrayLike, aif_mM: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate frame times and a plasma AIF; return them as float64 arrays.

    Raises
    ------
    ProtocolError
        Times not 1-D, fewer than 3, not finite or not strictly increasing; an AIF of another
        length than the times or with non-finite values.
    """
    t = np.asarray(times_s, dtype=float)
    c = np.asarray(aif_mM, dtype=float)
    if t.ndim != 1 or t.size < 3:
        raise ProtocolError(
            f"expected a 1-D array of at least 3 frame times, got shape {t.shape}", field="times_s"
        )
    if not np.all(np.isfinite(t)):
        raise ProtocolError("frame times must be finite", field="times_s")
    bad = np.flatnonzero(np.diff(t) <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        raise ProtocolError(
            f"frame times must be strictly increasing, got {t[i - 1]:g} then {t[i]:g} at index {i}",
            field="times_s",
        )
    if c.shape != t.shape:
        raise ProtocolError(
            f"the AIF has {c.size} samples (shape {c.shape}) but there are {t.size} frame times; "
            "expected one AIF sample per frame",
            field="aif_mM",
        )
    if not np.all(np.isfinite(c)):
        raise ProtocolError("AIF values must be finite", field="aif_mM")
    return t, c


# --------------------------------------------------------------------------- g_n(x)
_SERIES_X = 0.05  # below this, g_n from its Taylor series (8 terms: error < 1e-15)


def _g012(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``E = e^{-x}`` and ``g_n(x) = ∫_0^1 s^n e^{-xs} ds`` for n = 0, 1, 2 (x >= 0)."""
    x = np.asarray(x, dtype=float)
    e = np.exp(-x)
    small = x < _SERIES_X
    xs = np.where(small, _SERIES_X * 2, x)  # avoid 0-division in the closed form
    g0 = -np.expm1(-xs) / xs
    g1 = (1.0 - e * (1.0 + xs)) / xs**2
    g2 = (2.0 - e * (2.0 + 2.0 * xs + xs**2)) / xs**3
    if np.any(small):
        xx = np.where(small, x, 0.0)
        s0 = np.zeros_like(xx)
        s1 = np.zeros_like(xx)
        s2 = np.zeros_like(xx)
        term = np.ones_like(xx)  # (-x)^m / m!
        for m in range(9):
            s0 += term / (m + 1)
            s1 += term / (m + 2)
            s2 += term / (m + 3)
            term = term * (-xx) / (m + 1)
        g0 = np.where(small, s0, g0)
        g1 = np.where(small, s1, g1)
        g2 = np.where(small, s2, g2)
    return e, g0, g1, g2


# --------------------------------------------------------------------------- kernels
def _grid_numpy(
    t: np.ndarray, c: np.ndarray, k: np.ndarray, want_g: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """F (and G) on the frame grid, shape (N, n), numpy loop over frames."""
    n = t.size
    nv = k.size
    dts = np.diff(t)
    uniq, inv = np.unique(np.round(dts, 12), return_inverse=True)
    tabs = [_g012(k * d) for d in uniq]
    f = np.zeros((nv, n))
    g = np.zeros((nv, n)) if want_g else None
    for i in range(1, n):
        u = inv[i - 1]
        d = uniq[u]
        e, g0, g1, g2 = tabs[u]
        c0, c1 = c[i - 1], c[i]
        fp = f[:, i - 1]
        if g is not None:
            g[:, i] = e * (g[:, i - 1] + d * fp) + d * d * (c1 * g1 + (c0 - c1) * g2)
        f[:, i] = e * fp + d * (c1 * g0 + (c0 - c1) * g1)
    return f, g


def _partial_numpy(
    t: np.ndarray,
    c: np.ndarray,
    k: np.ndarray,
    f: np.ndarray,
    g: np.ndarray | None,
    tau: np.ndarray,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """F, G, cp and dcp/dt at arbitrary times ``tau`` (N, m) from the grid values."""
    nv = k.size
    n = t.size
    idx = np.clip(np.searchsorted(t, tau, side="right") - 1, 0, n - 1)
    before = tau < t[0]
    s = np.where(before, 0.0, tau - t[idx])
    rows = np.arange(nv)[:, None]
    ci = c[idx]
    nxt = np.minimum(idx + 1, n - 1)
    seg = t[nxt] - t[idx]
    slope = np.where(nxt > idx, (c[nxt] - ci) / np.where(seg > 0, seg, 1.0), 0.0)
    ctau = ci + slope * s
    kk = k[:, None] * np.ones_like(s)
    e, g0, g1, g2 = _g012(kk * s)
    fi = f[rows, idx]
    ftau = e * fi + s * (ctau * g0 + (ci - ctau) * g1)
    gtau = None
    if g is not None:
        gtau = e * (g[rows, idx] + s * fi) + s * s * (ctau * g1 + (ci - ctau) * g2)
        gtau = np.where(before, 0.0, gtau)
    ftau = np.where(before, 0.0, ftau)
    ctau = np.where(before, 0.0, ctau)
    slope = np.where(before, 0.0, slope)
    return ftau, gtau, ctau, slope


def exp_convolution(
    times_s: np.ndarray,
    cp_mM: np.ndarray,
    k_per_s: npt.ArrayLike,
    *,
    delay_s: npt.ArrayLike | None = None,
    derivative: bool = False,
    engine: str = "auto",
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """Exact convolution of a piecewise-linear input with ``e^{-k t}``, for many ``k`` at once.

    .. math:: F(t) = \\int_{t_0}^{t - d} c_p(u)\\, e^{-k (t - d - u)}\\, du

    (recursion in the module docstring; Flouri et al. 2016, doi:10.1002/mrm.25991).

    Parameters
    ----------
    times_s : ndarray, shape (n,)
        Strictly increasing frame times (s); the input is zero before ``times_s[0]`` and
        constant after ``times_s[-1]``.
    cp_mM : ndarray, shape (n,)
        Input samples (plasma concentration, mM).
    k_per_s : array_like, shape (N,)
        Rate constants (1/s), >= 0.
    delay_s : array_like, shape (N,), optional
        Per-voxel delays (s); the input is shifted right by them.
    derivative : bool
        Also return ``G = -∂F/∂k`` (mM·s²).
    engine : {"auto", "numba", "numpy"}
        Kernel to use; "auto" takes numba when installed.

    Returns
    -------
    F : ndarray, shape (N, n)
        Convolution (mM·s) at ``times_s``.
    G : ndarray, shape (N, n) or None
        ``∫ (t-u) cp(u) e^{-k(t-u)} du`` (mM·s²), so that ``∂F/∂k = -G``.
    cp_delayed : ndarray, shape (N, n)
        ``cp(t - d)``.
    slope : ndarray, shape (N, n)
        ``dcp/dt`` at ``t - d`` (right derivative; mM/s).
    """
    # writeable C-contiguous copies (the compiled kernels are typed for them; models hold
    # read-only protocol arrays)
    t = np.array(times_s, dtype=float, order="C")
    c = np.array(cp_mM, dtype=float, order="C")
    k = np.array(np.atleast_1d(np.asarray(k_per_s, dtype=float)), order="C")
    k = np.maximum(k, 0.0)
    nv = k.size
    if engine not in ("auto", "numba", "numpy"):
        raise FitError(
            f"unknown engine {engine!r}; expected 'auto', 'numba' or 'numpy'", field="engine"
        )
    if engine == "numba" and not HAVE_NUMBA:
        raise FitError("engine='numba' asked for but numba is not installed", field="engine")
    d = None if delay_s is None else np.broadcast_to(np.asarray(delay_s, dtype=float), (nv,))
    if HAVE_NUMBA and engine != "numpy":
        from ._kernels import conv_many

        dd = np.zeros(nv) if d is None else np.array(d, dtype=float)
        f, g, cp_d, slope = conv_many(t, c, k, dd, derivative)
        return f, (g if derivative else None), cp_d, slope
    f, g = _grid_numpy(t, c, k, derivative)
    if d is None:
        slope1 = np.append(np.diff(c) / np.diff(t), 0.0)
        return f, g, np.broadcast_to(c, f.shape).copy(), np.broadcast_to(slope1, f.shape).copy()
    tau = t[None, :] - d[:, None]
    return _partial_numpy(t, c, k, f, g, tau)


# --------------------------------------------------------------------------- helpers
def _split(
    params: npt.ArrayLike, n_base: int, fit_delay: bool
) -> tuple[np.ndarray, tuple[int, ...]]:
    p = np.asarray(params, dtype=float)
    want = n_base + (1 if fit_delay else 0)
    if p.shape[-1:] != (want,):
        raise FitError(
            f"expected {want} parameters on the last axis, got shape {p.shape}", field="params"
        )
    lead = p.shape[:-1]
    return p.reshape(-1, want), lead


def _finish(
    c: np.ndarray, jac: np.ndarray | None, lead: tuple[int, ...], n: int
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    c = c.reshape((*lead, n))
    if jac is None:
        return c
    return c, jac.reshape((*lead, n, jac.shape[-1]))


def _conv(
    t: np.ndarray, cp: np.ndarray, k: np.ndarray, delay: np.ndarray | None, want_g: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    return exp_convolution(t, cp, k, delay_s=delay, derivative=want_g)


# --------------------------------------------------------------------------- models
def tofts(
    params: Array, times_s: Array, aif_mM: Array, *, fit_delay: bool = False, jacobian: bool = False
) -> Curves:
    """Standard Tofts model.

    .. math:: C(t) = K^{trans} \\int_0^t c_p(u)\\, e^{-k_{ep}(t-u)} du,
              \\quad k_{ep} = K^{trans}/v_e

    (Tofts et al. JMRI 1999, doi:10.1002/(SICI)1522-2586(199909)10:3<223::AID-JMRI2>3.0.CO;2-S).

    Parameters
    ----------
    params : array_like, shape (..., 2) or (..., 3)
        ``Ktrans`` (1/min), ``ve`` (fraction) [, ``delay`` (s)] on the last axis.
    times_s : array_like, shape (n,)
        Frame times (s).
    aif_mM : array_like, shape (n,)
        Plasma AIF (mM) at the frame times.
    fit_delay : bool
        Whether the last parameter is a delay.
    jacobian : bool
        Also return the Jacobian.

    Returns
    -------
    C : ndarray, shape (..., n)
        Tissue concentration (mM).
    J : ndarray, shape (..., n, n_params)
        ``∂C/∂params`` (only with ``jacobian=True``).
    """
    return _tofts_family(params, times_s, aif_mM, False, fit_delay, jacobian)


def extended_tofts(
    params: Array, times_s: Array, aif_mM: Array, *, fit_delay: bool = False, jacobian: bool = False
) -> Curves:
    """Extended Tofts model.

    .. math:: C(t) = v_p c_p(t) + K^{trans} \\int_0^t c_p(u)\\, e^{-k_{ep}(t-u)} du

    (Tofts et al. 1999, doi:10.1002/(SICI)1522-2586(199909)10:3<223::AID-JMRI2>3.0.CO;2-S;
    Sourbron & Buckley 2011, doi:10.1002/mrm.22861).

    Parameters
    ----------
    params : array_like, shape (..., 3) or (..., 4)
        ``Ktrans`` (1/min), ``ve``, ``vp`` [, ``delay`` (s)].
    times_s, aif_mM, fit_delay, jacobian
        As in :func:`tofts`.

    Returns
    -------
    C : ndarray, shape (..., n)
    J : ndarray, shape (..., n, n_params), with ``jacobian=True``.
    """
    return _tofts_family(params, times_s, aif_mM, True, fit_delay, jacobian)


def _tofts_family(
    params: Array, times_s: Array, aif_mM: Array, with_vp: bool, fit_delay: bool, jacobian: bool
) -> Curves:
    """:func:`tofts` (``with_vp=False``) and :func:`extended_tofts` (``with_vp=True``)."""
    t, cp = check_times_aif(times_s, aif_mM)
    nb = 3 if with_vp else 2
    p, lead = _split(params, nb, fit_delay)
    kt = p[:, 0] / 60.0
    ve = p[:, 1]
    vp = p[:, 2] if with_vp else None
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.where(ve > 0, kt / ve, 0.0)
        inv_ve = np.where(ve > 0, 1.0 / ve, 0.0)
    delay = p[:, nb] if fit_delay else None
    f, g, cpd, slope = _conv(t, cp, k, delay, jacobian)
    c = kt[:, None] * f
    if vp is not None:
        c = c + vp[:, None] * cpd
    if not jacobian:
        return _finish(c, None, lead, t.size)
    assert g is not None
    jac = np.empty((*c.shape, p.shape[1]))
    jac[..., 0] = (f - kt[:, None] * g * inv_ve[:, None]) / 60.0
    jac[..., 1] = kt[:, None] * g * (k * inv_ve)[:, None]
    if vp is not None:
        jac[..., 2] = cpd
    if fit_delay:
        d_delay = -kt[:, None] * (cpd - k[:, None] * f)
        jac[..., nb] = d_delay if vp is None else d_delay - vp[:, None] * slope
    return _finish(c, jac, lead, t.size)


def patlak(
    params: Array, times_s: Array, aif_mM: Array, *, fit_delay: bool = False, jacobian: bool = False
) -> Curves:
    """Patlak model.

    .. math:: C(t) = v_p c_p(t) + K^{trans} \\int_0^t c_p(u)\\, du

    (Patlak et al. J Cereb Blood Flow Metab 1983, doi:10.1038/jcbfm.1983.1).

    Parameters
    ----------
    params : array_like, shape (..., 2) or (..., 3)
        ``Ktrans`` (1/min), ``vp`` [, ``delay`` (s)].
    times_s, aif_mM, fit_delay, jacobian
        As in :func:`tofts`.
    """
    t, cp = check_times_aif(times_s, aif_mM)
    p, lead = _split(params, 2, fit_delay)
    kt = p[:, 0] / 60.0
    vp = p[:, 1]
    delay = p[:, 2] if fit_delay else None
    f, _, cpd, slope = _conv(t, cp, np.zeros(p.shape[0]), delay, False)
    c = kt[:, None] * f + vp[:, None] * cpd
    if not jacobian:
        return _finish(c, None, lead, t.size)
    jac = np.empty((*c.shape, p.shape[1]))
    jac[..., 0] = f / 60.0
    jac[..., 1] = cpd
    if fit_delay:
        jac[..., 2] = -kt[:, None] * cpd - vp[:, None] * slope
    return _finish(c, jac, lead, t.size)


def _two_cxm_rates(
    fp: np.ndarray, ps: np.ndarray, ve: np.ndarray, vp: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Eigen-rates α ≥ β (1/s), weight a, and the building blocks of their derivatives."""
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (fp + ps) / vp + ps / ve
        p = fp * ps / (vp * ve)
        disc = np.sqrt(np.maximum(s * s - 4.0 * p, 0.0))
        alpha = 0.5 * (s + disc)
        beta = np.where(alpha > 0, p / alpha, 0.0)  # = (s - disc)/2 without cancellation
        a = np.where(disc > 0, (fp / vp - beta) / disc, 1.0)
    return s, p, disc, alpha, beta, a


def _flow_inputs(
    params: Array, times_s: Array, aif_mM: Array, n_base: int, fit_delay: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...], np.ndarray, np.ndarray]:
    """2CXM / 2CUM: checked times and AIF, parameters (N, q), lead shape, Fp and PS in 1/s."""
    t, cp = check_times_aif(times_s, aif_mM)
    pr, lead = _split(params, n_base, fit_delay)
    return t, cp, pr, lead, pr[:, 0] / 6000.0, pr[:, 1] / 6000.0


def two_cxm(
    params: Array, times_s: Array, aif_mM: Array, *, fit_delay: bool = False, jacobian: bool = False
) -> Curves:
    """Two-compartment exchange model (2CXM).

    .. math::

        C(t) = F_p \\left[a\\, e^{-\\alpha t} + (1 - a)\\, e^{-\\beta t}\\right] \\ast c_p(t),
        \\quad \\alpha,\\beta = \\tfrac12\\left(s \\pm \\sqrt{s^2 - 4p}\\right),

    with ``s = (Fp + PS)/vp + PS/ve``, ``p = Fp PS / (vp ve)`` and
    ``a = (Fp/vp - β)/(α - β)`` (Brix et al. JCBFM 2004, doi:10.1038/sj.jcbfm.9600185;
    Sourbron & Buckley NMR Biomed 2013, doi:10.1002/nbm.2940).

    Parameters
    ----------
    params : array_like, shape (..., 4) or (..., 5)
        ``Fp`` (mL/100 mL/min), ``PS`` (mL/100 mL/min), ``ve``, ``vp`` [, ``delay`` (s)].
    times_s, aif_mM, fit_delay, jacobian
        As in :func:`tofts`.
    """
    t, cp, pr, lead, fp, ps = _flow_inputs(params, times_s, aif_mM, 4, fit_delay)
    nv = pr.shape[0]
    ve = pr[:, 2]
    vp = pr[:, 3]
    s, p, disc, alpha, beta, a = _two_cxm_rates(fp, ps, ve, vp)
    delay = pr[:, 4] if fit_delay else None
    k = np.concatenate([alpha, beta])
    dd = None if delay is None else np.concatenate([delay, delay])
    f, g, cpd, _ = _conv(t, cp, k, dd, jacobian)
    fa, fb = f[:nv], f[nv:]
    c = fp[:, None] * (a[:, None] * fa + (1.0 - a)[:, None] * fb)
    if not jacobian:
        return _finish(c, None, lead, t.size)
    assert g is not None
    ga, gb = g[:nv], g[nv:]
    with np.errstate(divide="ignore", invalid="ignore"):
        # partial derivatives of s and p with respect to (fp, ps, ve, vp), internal units
        ds = np.stack([1 / vp, 1 / vp + 1 / ve, -ps / ve**2, -(fp + ps) / vp**2], axis=-1)
        dp = np.stack([ps / (vp * ve), fp / (vp * ve), -p / ve, -p / vp], axis=-1)
        safe = np.where(disc > 0, disc, np.inf)[:, None]
        ddisc = (s[:, None] * ds - 2.0 * dp) / safe
        dalpha = 0.5 * (ds + ddisc)
        dbeta = 0.5 * (ds - ddisc)
        dfv = np.stack([1 / vp, np.zeros(nv), np.zeros(nv), -fp / vp**2], axis=-1)
        da = (dfv - dbeta) / safe - a[:, None] * ddisc / safe
    core = a[:, None] * fa + (1.0 - a)[:, None] * fb
    jac = np.empty((*c.shape, pr.shape[1]))
    for j in range(4):
        dj = fp[:, None] * (
            da[:, j, None] * (fa - fb)
            - a[:, None] * ga * dalpha[:, j, None]
            - (1.0 - a)[:, None] * gb * dbeta[:, j, None]
        )
        if j == 0:
            dj = dj + core
        jac[..., j] = dj
    jac[..., 0] /= 6000.0
    jac[..., 1] /= 6000.0
    if fit_delay:
        cpa = cpd[:nv]
        jac[..., 4] = -fp[:, None] * (
            a[:, None] * (cpa - alpha[:, None] * fa)
            + (1.0 - a)[:, None] * (cpa - beta[:, None] * fb)
        )
    return _finish(c, jac, lead, t.size)


def two_cum(
    params: Array, times_s: Array, aif_mM: Array, *, fit_delay: bool = False, jacobian: bool = False
) -> Curves:
    """Two-compartment uptake model (2CUM).

    .. math::

        C(t) = F_p \\left[(1-E)\\, e^{-t (F_p + PS)/v_p} + E\\right] \\ast c_p(t),
        \\quad E = \\frac{PS}{F_p + PS}

    (Sourbron & Buckley NMR Biomed 2013, doi:10.1002/nbm.2940): the 2CXM without return from
    the interstitium.

    Parameters
    ----------
    params : array_like, shape (..., 3) or (..., 4)
        ``Fp`` (mL/100 mL/min), ``PS`` (mL/100 mL/min), ``vp`` [, ``delay`` (s)].
    times_s, aif_mM, fit_delay, jacobian
        As in :func:`tofts`.
    """
    t, cp, pr, lead, fp, ps = _flow_inputs(params, times_s, aif_mM, 3, fit_delay)
    nv = pr.shape[0]
    vp = pr[:, 2]
    tot = fp + ps
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(vp > 0, tot / vp, 0.0)
        amp_a = np.where(tot > 0, fp * fp / tot, 0.0)  # Fp (1 - E)
        amp_b = np.where(tot > 0, fp * ps / tot, 0.0)  # Fp E
    delay = pr[:, 3] if fit_delay else None
    k = np.concatenate([alpha, np.zeros(nv)])
    dd = None if delay is None else np.concatenate([delay, delay])
    f, g, cpd, _ = _conv(t, cp, k, dd, jacobian)
    fa, integral = f[:nv], f[nv:]
    c = amp_a[:, None] * fa + amp_b[:, None] * integral
    if not jacobian:
        return _finish(c, None, lead, t.size)
    assert g is not None
    ga = g[:nv]
    with np.errstate(divide="ignore", invalid="ignore"):
        tot2 = np.where(tot > 0, tot * tot, np.inf)
        da = np.stack([fp * (fp + 2 * ps) / tot2, -fp * fp / tot2, np.zeros(nv)], axis=-1)
        db = np.stack([ps * ps / tot2, fp * fp / tot2, np.zeros(nv)], axis=-1)
        inv_vp = np.where(vp > 0, 1.0 / vp, 0.0)
        dal = np.stack([inv_vp, inv_vp, -alpha * inv_vp], axis=-1)
    jac = np.empty((*c.shape, pr.shape[1]))
    for j in range(3):
        jac[..., j] = (
            da[:, j, None] * fa - amp_a[:, None] * ga * dal[:, j, None] + db[:, j, None] * integral
        )
    jac[..., 0] /= 6000.0
    jac[..., 1] /= 6000.0
    if fit_delay:
        cpa = cpd[:nv]
        jac[..., 3] = -(amp_a[:, None] * (cpa - alpha[:, None] * fa) + amp_b[:, None] * cpa)
    return _finish(c, jac, lead, t.size)


# --------------------------------------------------------------------------- linear solutions
def _cumtrapz(y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Cumulative trapezoid along the last axis, starting at 0 (exact for piecewise-linear y)."""
    out = np.zeros_like(y)
    np.cumsum(0.5 * (y[..., 1:] + y[..., :-1]) * np.diff(t), axis=-1, out=out[..., 1:])
    return out


def _lstsq_columns(cols: list[np.ndarray], y: np.ndarray) -> np.ndarray:
    """Solve ``min ||A x - y||`` per voxel, ``A = [cols]``; y (N, n) -> x (N, q).

    Each column is shared by all voxels (shape (n,)) or per voxel (shape (N, n)); the normal
    equations are built from dot products only (BLAS matrix-vector products for the shared
    columns) with column scaling, and solved per voxel. Singular voxels get NaN.
    """
    nv = y.shape[0]
    q = len(cols)
    norms = [np.sqrt(c @ c) if c.ndim == 1 else np.sqrt(np.einsum("ij,ij->i", c, c)) for c in cols]
    ata = np.empty((nv, q, q))
    aty = np.empty((nv, q))
    for i, ci in enumerate(cols):
        aty[:, i] = y @ ci if ci.ndim == 1 else np.einsum("ij,ij->i", y, ci)
        for j in range(i + 1):
            cj = cols[j]
            if ci.ndim == 1 and cj.ndim == 1:
                v = np.full(nv, ci @ cj)
            elif ci.ndim == 1:
                v = cj @ ci
            elif cj.ndim == 1:
                v = ci @ cj
            else:
                v = np.einsum("ij,ij->i", ci, cj)
            ata[:, i, j] = v
            ata[:, j, i] = v
    scale = np.stack([np.broadcast_to(nrm, (nv,)) for nrm in norms], axis=-1)
    scale = np.where(scale > 0, scale, 1.0)
    ata /= scale[:, :, None] * scale[:, None, :]
    aty /= scale
    # batched Cholesky of the (scaled, unit-diagonal) normal matrices, one vector op per entry
    low = np.zeros_like(ata)
    ok = np.all(np.isfinite(ata), axis=(1, 2)) & np.all(np.isfinite(aty), axis=1)
    for j in range(q):
        d = ata[:, j, j] - np.einsum("vk,vk->v", low[:, j, :j], low[:, j, :j])
        ok &= d > 1e-12
        low[:, j, j] = np.sqrt(np.where(d > 1e-12, d, 1.0))
        for i in range(j + 1, q):
            v = ata[:, i, j] - np.einsum("vk,vk->v", low[:, i, :j], low[:, j, :j])
            low[:, i, j] = v / low[:, j, j]
    z = np.empty_like(aty)
    for i in range(q):
        z[:, i] = (aty[:, i] - np.einsum("vk,vk->v", low[:, i, :i], z[:, :i])) / low[:, i, i]
    x = np.empty_like(aty)
    for i in range(q - 1, -1, -1):
        back = np.einsum("vk,vk->v", low[:, i + 1 :, i], x[:, i + 1 :])
        x[:, i] = (z[:, i] - back) / low[:, i, i]
    x /= scale
    x[~ok] = np.nan
    return x


def _prepare_linear(
    concentration_mM: npt.ArrayLike, times_s: npt.ArrayLike, aif_mM: npt.ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]:
    t, cp = check_times_aif(times_s, aif_mM)
    y = np.asarray(concentration_mM, dtype=float)
    if y.shape[-1:] != t.shape:
        raise FitError(
            f"concentration has {y.shape[-1] if y.ndim else 0} frames on its last axis, "
            f"expected {t.size}",
            field="concentration_mM",
        )
    lead = y.shape[:-1]
    return t, cp, y.reshape(-1, t.size), lead


def linear_tofts(
    concentration_mM: npt.ArrayLike, times_s: npt.ArrayLike, aif_mM: npt.ArrayLike
) -> np.ndarray:
    """Linearised Tofts fit: ``C = Ktrans ∫cp - kep ∫C`` by linear least squares.

    Murase, MRM 2004, doi:10.1002/mrm.20023. Integrals by the trapezoid rule.

    Parameters
    ----------
    concentration_mM : array_like, shape (..., n)
    times_s, aif_mM : array_like, shape (n,)

    Returns
    -------
    ndarray, shape (..., 2)
        ``Ktrans`` (1/min), ``ve``; NaN where the system is singular.
    """
    t, cp, y, lead = _prepare_linear(concentration_mM, times_s, aif_mM)
    if HAVE_NUMBA:
        from ._kernels import murase_many

        x = murase_many(np.array(t), np.array(cp), np.ascontiguousarray(y), False)[:, :2]
    else:
        icp = _cumtrapz(cp, t)
        ic = _cumtrapz(y, t)
        x = _lstsq_columns([icp, -ic], y)
    kt = x[:, 0] * 60.0
    with np.errstate(divide="ignore", invalid="ignore"):
        ve = x[:, 0] / x[:, 1]
    return np.stack([kt, ve], axis=-1).reshape((*lead, 2))


def linear_extended_tofts(
    concentration_mM: npt.ArrayLike, times_s: npt.ArrayLike, aif_mM: npt.ArrayLike
) -> np.ndarray:
    """Linearised extended Tofts fit (Murase 2004, doi:10.1002/mrm.20023).

    ``C = (Ktrans + kep vp) ∫cp - kep ∫C + vp cp``, solved for the three coefficients by
    linear least squares per voxel.

    Returns
    -------
    ndarray, shape (..., 3)
        ``Ktrans`` (1/min), ``ve``, ``vp``.
    """
    t, cp, y, lead = _prepare_linear(concentration_mM, times_s, aif_mM)
    if HAVE_NUMBA:
        from ._kernels import murase_many

        x = murase_many(np.array(t), np.array(cp), np.ascontiguousarray(y), True)
    else:
        icp = _cumtrapz(cp, t)
        ic = _cumtrapz(y, t)
        x = _lstsq_columns([icp, -ic, cp], y)
    b, kep, vp = x[:, 0], x[:, 1], x[:, 2]
    kt = b - kep * vp
    with np.errstate(divide="ignore", invalid="ignore"):
        ve = kt / kep
    return np.stack([kt * 60.0, ve, vp], axis=-1).reshape((*lead, 3))


def linear_patlak(
    concentration_mM: npt.ArrayLike, times_s: npt.ArrayLike, aif_mM: npt.ArrayLike
) -> np.ndarray:
    """Patlak fit by linear least squares (exact: the model is linear).

    ``C = Ktrans ∫cp + vp cp`` with ``∫cp`` the exact integral of the piecewise-linear AIF.

    Returns
    -------
    ndarray, shape (..., 2)
        ``Ktrans`` (1/min), ``vp``.
    """
    t, cp, y, lead = _prepare_linear(concentration_mM, times_s, aif_mM)
    x = _lstsq_columns([_cumtrapz(cp, t), cp], y)
    x[:, 0] *= 60.0
    return x.reshape((*lead, 2))


def linear_2cxm(
    concentration_mM: npt.ArrayLike, times_s: npt.ArrayLike, aif_mM: npt.ArrayLike
) -> np.ndarray:
    """Linearised 2CXM fit (Flouri et al. MRM 2016, doi:10.1002/mrm.25991).

    Integrating the model's second-order equation twice gives
    ``C = -S ∫C - P ∫∫C + Fp ∫cp + Q ∫∫cp`` with ``S = α + β``, ``P = αβ`` and
    ``Q = Fp PS (1/vp + 1/ve)``; the four coefficients are found by linear least squares
    and converted back.

    Returns
    -------
    ndarray, shape (..., 4)
        ``Fp``, ``PS`` (mL/100 mL/min), ``ve``, ``vp``; NaN where the conversion is impossible.
    """
    t, cp, y, lead = _prepare_linear(concentration_mM, times_s, aif_mM)
    if HAVE_NUMBA:
        from ._kernels import flouri_many

        x = flouri_many(np.array(t), np.array(cp), np.ascontiguousarray(y))
    else:
        icp = _cumtrapz(cp, t)
        iicp = _cumtrapz(icp, t)
        ic = _cumtrapz(y, t)
        iic = _cumtrapz(ic, t)
        x = _lstsq_columns([-ic, -iic, icp, iicp], y)
    ssum, prod, fp, q = x[:, 0], x[:, 1], x[:, 2], x[:, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        vp = fp / (ssum - q / fp)
        ps_ve = prod * vp / fp
        ps = vp * (q / fp - ps_ve)
        ve = ps / ps_ve
    out = np.stack([fp * 6000.0, ps * 6000.0, ve, vp], axis=-1)
    return out.reshape((*lead, 4))


def linear_2cum(
    concentration_mM: npt.ArrayLike, times_s: npt.ArrayLike, aif_mM: npt.ArrayLike
) -> np.ndarray:
    """Linearised 2CUM fit: ``C = -α ∫C + Fp(1-E) ∫cp + Fp E α ∫∫cp``.

    Same derivation as :func:`linear_2cxm` (Flouri et al. 2016, doi:10.1002/mrm.25991).

    Returns
    -------
    ndarray, shape (..., 3)
        ``Fp``, ``PS`` (mL/100 mL/min), ``vp``.
    """
    t, cp, y, lead = _prepare_linear(concentration_mM, times_s, aif_mM)
    icp = _cumtrapz(cp, t)
    iicp = _cumtrapz(icp, t)
    ic = _cumtrapz(y, t)
    x = _lstsq_columns([-ic, icp, iicp], y)
    alpha, u, w = x[:, 0], x[:, 1], x[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        fe = w / alpha  # Fp E
        fp = u + fe
        e = fe / fp
        ps = fp * e / (1.0 - e)
        vp = (fp + ps) / alpha
    return np.stack([fp * 6000.0, ps * 6000.0, vp], axis=-1).reshape((*lead, 3))
