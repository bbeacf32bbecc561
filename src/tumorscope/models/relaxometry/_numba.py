"""Compiled per-voxel kernel of the noise-floor-aware mono-exponential (T2*, T2) models.

Imported only when numba is available (the ``fast`` extra). The Rician expected magnitude
needs the exponentially scaled modified Bessel functions ``i0e`` and ``i1e``, which numba cannot
take from scipy; they are evaluated here with the polynomial approximations of Abramowitz &
Stegun, *Handbook of Mathematical Functions* (1964), 9.8.1–9.8.4 (relative error below
5e-7), so the numba and numpy backends agree to about 1e-6 relative (tested).

``consts`` layout: ``[sigma, mode, te_s_0, te_s_1, ...]`` with ``mode`` 0 for parameters
``(S0, R)`` (R in 1/s) and 1 for ``(S0, T)`` (T in ms, R = 1000 / T).
"""

from __future__ import annotations

import math

import numba as nb

from ...fitting._lm_numba import MODEL_SIGNATURE

__all__ = ["ir_kernel", "rician_decay_kernel"]

_SQRT_PI_2 = math.sqrt(math.pi / 2.0)


@nb.njit(cache=True, inline="always")
def _i0e_i1e(u: float) -> tuple[float, float]:
    if u <= 3.75:
        t = (u / 3.75) ** 2
        i0 = 1.0 + t * (
            3.5156229
            + t * (3.0899424 + t * (1.2067492 + t * (0.2659732 + t * (0.0360768 + t * 0.0045813))))
        )
        i1 = u * (
            0.5
            + t
            * (
                0.87890594
                + t
                * (
                    0.51498869
                    + t * (0.15084934 + t * (0.02658733 + t * (0.00301532 + t * 0.00032411)))
                )
            )
        )
        e = math.exp(-u)
        return i0 * e, i1 * e
    t = 3.75 / u
    s = 1.0 / math.sqrt(u)
    i0e = s * (
        0.39894228
        + t
        * (
            0.01328592
            + t
            * (
                0.00225319
                + t
                * (
                    -0.00157565
                    + t
                    * (
                        0.00916281
                        + t * (-0.02057706 + t * (0.02635537 + t * (-0.01647633 + t * 0.00392377)))
                    )
                )
            )
        )
    )
    i1e = s * (
        0.39894228
        + t
        * (
            -0.03988024
            + t
            * (
                -0.00362018
                + t
                * (
                    0.00163801
                    + t
                    * (
                        -0.01031555
                        + t * (0.02282967 + t * (-0.02895312 + t * (0.01787654 - t * 0.00420059)))
                    )
                )
            )
        )
    )
    return i0e, i1e


@nb.njit(MODEL_SIGNATURE, cache=True)
def rician_decay_kernel(p, consts, f, J):
    """``E[M](TE) = R_sigma(S0 exp(-TE R))`` and its derivatives w.r.t. ``(S0, R or T)``."""
    sigma = consts[0]
    mode = consts[1]
    s0 = p[0]
    if mode == 0.0:
        r = p[1]
        drdq = 1.0
    else:
        r = 1000.0 / p[1]
        drdq = -1000.0 / (p[1] * p[1])
    m = consts.shape[0] - 2
    for k in range(m):
        te = consts[2 + k]
        e = math.exp(-te * r)
        a = s0 * e
        if sigma <= 0.0:
            val = abs(a)
            g = 1.0
        else:
            u = a * a / (4.0 * sigma * sigma)
            if u > 1e6:
                val = a + sigma * sigma / (2.0 * a)
                g = 1.0 - sigma * sigma / (2.0 * a * a)
            else:
                i0e, i1e = _i0e_i1e(u)
                val = sigma * _SQRT_PI_2 * ((1.0 + 2.0 * u) * i0e + 2.0 * u * i1e)
                g = a / (2.0 * sigma) * _SQRT_PI_2 * (i0e + i1e)
        f[k] = val
        J[k, 0] = g * e
        J[k, 1] = -g * te * s0 * e * drdq


@nb.njit(MODEL_SIGNATURE, cache=True)
def ir_kernel(p, consts, f, J):
    """``M0 (1 - k exp(-TI/T1))`` (its magnitude if ``consts[0] = 1``) and its derivatives
    w.r.t. ``(M0, T1, k)``; ``consts = [magnitude, ti_ms_0, ti_ms_1, ...]``."""
    magnitude = consts[0] != 0.0
    m0 = p[0]
    t1 = p[1]
    k = p[2]
    for i in range(consts.shape[0] - 1):
        ti = consts[1 + i]
        e = math.exp(-ti / t1)
        s = m0 * (1.0 - k * e)
        sg = -1.0 if (magnitude and s < 0.0) else 1.0
        f[i] = sg * s
        J[i, 0] = sg * (1.0 - k * e)
        J[i, 1] = -sg * m0 * k * e * ti / (t1 * t1)
        J[i, 2] = -sg * m0 * e
