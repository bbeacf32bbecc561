"""Compiled per-voxel kernel of the multi-pool Lorentzian Z-spectrum (numba).

``consts`` layout: ``[n_extra_pools, offset_0, offset_1, ...]`` (offsets in ppm). Parameter
layout: ``[Z0, B0, A_w, G_w, (A_i, G_i, d_i) for each extra pool]``; the model is
``Z = Z0 - A_w L(Δ - B0; G_w) - Σ A_i L(Δ - B0 - d_i; G_i)`` with
``L(x; G) = (G²/4) / (G²/4 + x²)`` (see :mod:`.lorentzian`).
"""

from __future__ import annotations

import numba as nb

from ...fitting._lm_numba import MODEL_SIGNATURE

__all__ = ["lorentzian_kernel"]


@nb.njit(MODEL_SIGNATURE, cache=True, nogil=True)
def lorentzian_kernel(p, consts, f_out, J_out):
    n_extra = int(consts[0])
    m = f_out.shape[0]
    z0 = p[0]
    b0 = p[1]
    for k in range(m):
        off = consts[1 + k]
        f = z0
        J_out[k, 0] = 1.0
        dsum = 0.0
        for i in range(n_extra + 1):
            if i == 0:
                a = p[2]
                g = p[3]
                x = off - b0
                ja = 2
            else:
                ja = 4 + 3 * (i - 1)
                a = p[ja]
                g = p[ja + 1]
                x = off - b0 - p[ja + 2]
            q = 0.25 * g * g
            den = q + x * x
            L = q / den
            f -= a * L
            J_out[k, ja] = -L
            J_out[k, ja + 1] = -a * 0.5 * g * x * x / (den * den)
            dLdx = -2.0 * a * q * x / (den * den)  # d(A L)/dx
            dsum += dLdx
            if i > 0:
                J_out[k, ja + 2] = dLdx
        J_out[k, 1] = dsum
        f_out[k] = f
