"""The fused compiled pass of the DTI fits (numba): from the signals straight to the float32
maps, as the ADC fast path (:func:`~._numba.adc_fit_range`); the linear fits, and the
nonlinear one (Cholesky parameterisation, Levenberg–Marquardt with the model inlined)
started from them; imported only when numba is installed."""

from __future__ import annotations

import numba as nb
import numpy as np

from ...fitting.status import FitStatus
from ._numba import _exp
from ._tensor_numba import TILE, _jacobi3, tile_buffers, wls_tile

_CONVERGED = np.uint8(FitStatus.CONVERGED)
_AT_BOUND = np.uint8(FitStatus.AT_BOUND)
_INVALID = np.uint8(FitStatus.INVALID_INPUT)
_FAILED = np.uint8(FitStatus.FAILED)
_NOT_FITTED = np.uint8(FitStatus.NOT_FITTED)
_MAX_ITER = np.uint8(FitStatus.MAX_ITER)


@nb.njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def dti_fit_range(
    y, mask, use_mask, lo, hi, X, XX, pinv, weighted, min_diff, params, se, der, rss, status, lm
):
    """Linear DTI fit (WLS or OLS) of voxels ``lo:hi`` of ``y (V, m)`` (float32 or float64,
    any layout: C order, or the F order of NIfTI arrays; read once, tile by tile), written in
    place: ``params (7, V)`` S0 and the six elements, ``se (7, V)`` their standard errors,
    ``der (7, V)`` FA, MD, AD, RD, V1_x, V1_y, V1_z, ``rss (V,)`` (all float32) and
    ``status (V,)``.

    The same numbers as the engine path (:meth:`.dti.DTI._linear`, then :meth:`.dti.DTI.derive`
    on the float32 elements): :func:`~._tensor_numba.wls_tile`; status INVALID_INPUT /
    FAILED (NaN maps), AT_BOUND where ``D - min_diff I`` is not positive definite (Sylvester),
    NOT_FITTED outside ``mask`` (when ``use_mask``); the derived maps from the Jacobi
    eigen-decomposition of the float32-rounded elements, eigenvalues clipped below at
    ``min_diff``, ``V1_z >= 0``.

    ``lm`` (float64) empty: the linear fit. Else the nonlinear fit (``weighted`` must be
    True: it starts from WLS), ``lm = [max_iter, ftol, xtol, b (m), gx (m), gy (m), gz (m)]``:
    :func:`_nlls_voxel` on every voxel whose linear fit succeeded (as
    :meth:`.dti.DTI._nlls`: the S0 and tensor of the signal least squares, their standard
    errors in that parameterisation, the signal RSS; status CONVERGED, MAX_ITER or FAILED).
    """
    m = y.shape[1]
    p = X.shape[1]
    ly, w, A, r, c, z, dv, flags, wl = tile_buffers(m, p, TILE)
    XXt = np.ascontiguousarray(XX.T)
    Xt = np.ascontiguousarray(X.T)
    idx = np.empty(TILE, np.int64)
    dd = np.zeros((6, TILE))  # the float32-rounded tensors of the tile
    dres = np.zeros((7, TILE))
    okd = np.zeros(TILE)
    nan = np.float32(np.nan)
    dof = m - p
    nlls = lm.shape[0] > 0
    mats = np.zeros((3, 7, 7))  # scratch of _nlls_voxel
    vecs = np.zeros((6, 7))
    ee = np.zeros((10, m))
    yv = np.empty(m)
    for t0 in range(lo, hi, TILE):
        t1 = min(t0 + TILE, hi)
        nt = 0
        if use_mask:
            for i in range(t0, t1):
                if mask[i]:
                    idx[nt] = i
                    nt += 1
                else:
                    for q in range(7):
                        params[q, i] = nan
                        se[q, i] = nan
                        der[q, i] = nan
                    rss[i] = nan
                    status[i] = _NOT_FITTED
            for j in range(nt):
                i = idx[j]
                for k in range(m):
                    ly[k, j] = np.float64(y[i, k])
        else:
            nt = t1 - t0
            for j in range(nt):
                idx[j] = t0 + j
            for k in range(m):
                for j in range(nt):
                    ly[k, j] = np.float64(y[t0 + j, k])
        wls_tile(ly, w, A, r, c, z, dv, flags, nt, X, XX, pinv, weighted, XXt, Xt, wl)
        for j in range(nt):
            i = idx[j]
            flags[1, j] = 0.0
            if flags[0, j] > 0.0 or flags[2, j] > 0.0:
                for q in range(7):
                    params[q, i] = nan
                    se[q, i] = nan
                    der[q, i] = nan
                rss[i] = nan
                status[i] = _INVALID if flags[0, j] > 0.0 else _FAILED
                continue
            res = flags[3, j]
            s0 = np.exp(c[0, j])
            scale = res / dof if dof > 0 else np.nan
            params[0, i] = np.float32(s0)
            se[0, i] = np.float32(s0 * np.sqrt(dv[0, j] * scale))
            for q in range(1, 7):
                params[q, i] = np.float32(c[q, j])
                se[q, i] = np.float32(np.sqrt(dv[q, j] * scale))
            rss[i] = np.float32(res)
            # AT_BOUND: D - min_diff I not positive definite (leading minors)
            xx = c[1, j] - min_diff
            xy = c[2, j]
            yy = c[3, j] - min_diff
            xz = c[4, j]
            yz = c[5, j]
            zz = c[6, j] - min_diff
            m2 = xx * yy - xy * xy
            m3 = xx * (yy * zz - yz * yz) - xy * (xy * zz - yz * xz) + xz * (xy * yz - yy * xz)
            status[i] = _CONVERGED if (xx > 0 and m2 > 0 and m3 > 0) else _AT_BOUND
            if nlls:
                for k in range(m):
                    yv[k] = np.float64(y[i, k])
                if not _nlls_voxel(yv, lm, c[:, j], mats, vecs, ee, params, se, rss, status, i):
                    for q in range(7):
                        der[q, i] = nan
                    continue
            for q in range(6):
                dd[q, j] = np.float64(params[q + 1, i])
            flags[1, j] = 1.0  # fitted
        _derived_tile(dd, dres, okd, nt, min_diff)
        for j in range(nt):
            if flags[1, j] == 0.0:
                continue
            i = idx[j]
            if okd[j] > 0.0:
                for q in range(7):
                    der[q, i] = np.float32(dres[q, j])
                continue
            fa, md, ad, rd, vx, vy, vz = _derived(
                dd[0, j], dd[1, j], dd[2, j], dd[3, j], dd[4, j], dd[5, j], min_diff
            )
            der[0, i] = np.float32(fa)
            der[1, i] = np.float32(md)
            der[2, i] = np.float32(ad)
            der[3, i] = np.float32(rd)
            der[4, i] = np.float32(vx)
            der[5, i] = np.float32(vy)
            der[6, i] = np.float32(vz)


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _derived_tile(dd, out, ok, nt, min_diff):
    """The closed form of :func:`_derived` on the tensors ``dd (6, T)`` of a tile, branch-free
    (so that it vectorises): ``out (7, T)`` FA, MD, AD, RD, V1, and ``ok[j]`` = 1 where it is
    accurate (as :func:`_derived`, and Newton's method converged in its 8 steps); the
    others go through :func:`_derived` one by one."""
    for j in range(nt):
        xx, xy, yy, xz, yz, zz = dd[0, j], dd[1, j], dd[2, j], dd[3, j], dd[4, j], dd[5, j]
        q = (xx + yy + zz) / 3.0
        dx, dy, dz = xx - q, yy - q, zz - q
        off = xy * xy + xz * xz + yz * yz
        p2 = dx * dx + dy * dy + dz * dz + 2.0 * off
        pp = np.sqrt(p2 / 6.0)
        ip = 1.0 / pp if p2 > 0.0 else 0.0
        det = dx * (dy * dz - yz * yz) - xy * (xy * dz - yz * xz) + xz * (xy * yz - dy * xz)
        rr = 0.5 * det * ip * ip * ip
        rr = min(max(rr, -1.0), 1.0)
        x1 = 2.0
        step = 0.0
        for _ in range(8):
            step = (x1 * x1 * x1 - 3.0 * x1 - 2.0 * rr) / max(3.0 * x1 * x1 - 3.0, 1e-300)
            x1 -= step
        h = 0.5 * np.sqrt(max(3.0 * (4.0 - x1 * x1), 0.0))
        l1 = q + pp * x1
        l2 = q + pp * (-0.5 * x1 + h)
        l3 = q + pp * (-0.5 * x1 - h)
        r0x, r0y, r0z = xx - l1, xy, xz
        r1x, r1y, r1z = xy, yy - l1, yz
        r2x, r2y, r2z = xz, yz, zz - l1
        ax, ay, az = r0y * r1z - r0z * r1y, r0z * r1x - r0x * r1z, r0x * r1y - r0y * r1x
        bx, by, bz = r0y * r2z - r0z * r2y, r0z * r2x - r0x * r2z, r0x * r2y - r0y * r2x
        cx, cy, cz = r1y * r2z - r1z * r2y, r1z * r2x - r1x * r2z, r1x * r2y - r1y * r2x
        na = ax * ax + ay * ay + az * az
        nb_ = bx * bx + by * by + bz * bz
        nc = cx * cx + cy * cy + cz * cz
        use_b = nb_ > na and nb_ >= nc
        use_c = (not use_b) and nc > na
        vx = bx if use_b else (cx if use_c else ax)
        vy = by if use_b else (cy if use_c else ay)
        vz = bz if use_b else (cz if use_c else az)
        nv = nb_ if use_b else (nc if use_c else na)
        inv = (-1.0 if vz < 0 else 1.0) / np.sqrt(nv)
        den = xx * xx + yy * yy + zz * zz + 2.0 * off
        good = (
            p2 > 0.0
            and abs(step) <= 1e-14 * x1
            and l3 > min_diff
            and (l1 - l2) >= 0.05 * (l1 - l3)
            and nv > 0.0
        )
        ok[j] = 1.0 if good else 0.0
        out[0, j] = np.sqrt(1.5 * p2 / den)
        out[1, j] = q
        out[2, j] = l1
        out[3, j] = q - 0.5 * pp * x1
        out[4, j] = vx * inv
        out[5, j] = vy * inv
        out[6, j] = vz * inv


@nb.njit(cache=True, nogil=True)
def _derived(xx, xy, yy, xz, yz, zz, min_diff):
    """FA, MD, AD, RD, V1_x, V1_y, V1_z of the tensor ``xx … zz`` (as :meth:`.dti.DTI.derive`;
    scalars in and out: no array per call).

    Closed form where it is accurate: the eigenvalues from the characteristic cubic of the
    normalised deviator (Smith 1961, doi:10.1145/355578.366316; its largest root by Newton's
    method rather than acos/cos), V1 as the largest cross
    product of two rows of ``D - λ1 I``; FA from the invariants (no cancellation:
    ``FA² = 1.5 |D - MD I|² / |D|²``). Used when the smallest eigenvalue is above
    ``min_diff`` (no clipping) and ``λ1 - λ2 >= 0.05 (λ1 - λ3)`` (V1 well separated, so its
    error is a few ulps); else the Jacobi rotations of :func:`~._tensor_numba.eig3_block`.
    """
    q = (xx + yy + zz) / 3.0
    dx, dy, dz = xx - q, yy - q, zz - q
    off = xy * xy + xz * xz + yz * yz
    p2 = dx * dx + dy * dy + dz * dz + 2.0 * off
    if p2 > 0.0:
        pp = np.sqrt(p2 / 6.0)
        det = dx * (dy * dz - yz * yz) - xy * (xy * dz - yz * xz) + xz * (xy * yz - dy * xz)
        rr = 0.5 * det / (pp * pp * pp)
        rr = min(max(rr, -1.0), 1.0)
        # B = (D - q I) / pp has the eigenvalues x = 2 cos(φ + 2πk/3), cos 3φ = rr: the
        # roots of x³ - 3x - 2rr. The largest by Newton from x = 2 (above it: monotone,
        # quadratic; no acos/cos calls), the other two from x2 + x3 = -x1, x2 x3 = x1² - 3.
        x1 = 2.0
        for _ in range(40):
            step = (x1 * x1 * x1 - 3.0 * x1 - 2.0 * rr) / max(3.0 * x1 * x1 - 3.0, 1e-300)
            x1 -= step
            if step <= 4e-16 * x1:
                break
        h = 0.5 * np.sqrt(max(3.0 * (4.0 - x1 * x1), 0.0))
        l1 = q + pp * x1
        l2 = q + pp * (-0.5 * x1 + h)
        l3 = q + pp * (-0.5 * x1 - h)
        if l3 > min_diff and (l1 - l2) >= 0.05 * (l1 - l3):
            # rows of D - l1 I; V1 is orthogonal to them
            r0x, r0y, r0z = xx - l1, xy, xz
            r1x, r1y, r1z = xy, yy - l1, yz
            r2x, r2y, r2z = xz, yz, zz - l1
            ax, ay, az = r0y * r1z - r0z * r1y, r0z * r1x - r0x * r1z, r0x * r1y - r0y * r1x
            bx, by, bz = r0y * r2z - r0z * r2y, r0z * r2x - r0x * r2z, r0x * r2y - r0y * r2x
            cx, cy, cz = r1y * r2z - r1z * r2y, r1z * r2x - r1x * r2z, r1x * r2y - r1y * r2x
            na = ax * ax + ay * ay + az * az
            nb_ = bx * bx + by * by + bz * bz
            nc = cx * cx + cy * cy + cz * cz
            if nb_ > na and nb_ >= nc:
                ax, ay, az, na = bx, by, bz, nb_
            elif nc > na:
                ax, ay, az, na = cx, cy, cz, nc
            inv = (-1.0 if az < 0 else 1.0) / np.sqrt(na)
            den = xx * xx + yy * yy + zz * zz + 2.0 * off
            return np.sqrt(1.5 * p2 / den), q, l1, q - 0.5 * pp * x1, ax * inv, ay * inv, az * inv
    a3 = np.empty((3, 3))
    v3 = np.empty((3, 3))
    a3[0, 0] = xx
    a3[1, 0] = a3[0, 1] = xy
    a3[1, 1] = yy
    a3[2, 0] = a3[0, 2] = xz
    a3[2, 1] = a3[1, 2] = yz
    a3[2, 2] = zz
    o0, o1, o2 = _jacobi3(a3, v3)
    e0 = max(a3[o0, o0], min_diff)
    e1 = max(a3[o1, o1], min_diff)
    e2 = max(a3[o2, o2], min_diff)
    num = (e0 - e1) ** 2 + (e1 - e2) ** 2 + (e2 - e0) ** 2
    den = e0 * e0 + e1 * e1 + e2 * e2
    fa = np.sqrt(0.5 * num / den) if den > 0 else 0.0
    sg = -1.0 if v3[2, o0] < 0 else 1.0
    return (
        fa,
        (e0 + e1 + e2) / 3.0,
        e0,
        0.5 * (e1 + e2),
        sg * v3[0, o0],
        sg * v3[1, o0],
        sg * v3[2, o0],
    )


@nb.njit(inline="always")
def _chol3(a, b, c, d, e, f):
    """Lower Cholesky factor ``(L11, L21, L22, L31, L32, L33)`` of the 3×3 tensor
    ``xx, xy, yy, xz, yz, zz`` = ``a … f``; ok flag."""
    if not a > 0.0:
        return False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    l11 = np.sqrt(a)
    l21 = b / l11
    l31 = d / l11
    t = c - l21 * l21
    if not t > 0.0:
        return False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    l22 = np.sqrt(t)
    l32 = (e - l31 * l21) / l22
    t = f - l31 * l31 - l32 * l32
    if not t > 0.0:
        return False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    return True, l11, l21, l22, l31, l32, np.sqrt(t)


#: Sums over the measurements in the nonlinear fit may be reassociated (vectorised): they
#: change in the last bits only, the solver's tolerances are far above that.
_FM_SUM = {"contract", "reassoc"}


@nb.njit(cache=True, nogil=True, fastmath=_FM_SUM, error_model="numpy")
def _chol_rss(yv, lm, q, e):
    """Signal RSS of the Cholesky parameters ``q`` (S0, L11, L21, L22, L31, L32, L33) for the
    samples ``yv``; ``e`` receives ``exp(-b |Lᵀg|²)`` (the branch-free, vectorising
    :func:`~._numba._exp`). ``lm[3:]``: b, gx, gy, gz (see :func:`dti_fit_range`)."""
    m = yv.shape[0]
    s0, l11, l21, l22, l31, l32, l33 = q[0], q[1], q[2], q[3], q[4], q[5], q[6]
    for k in range(m):
        gx = lm[3 + m + k]
        gy = lm[3 + 2 * m + k]
        gz = lm[3 + 3 * m + k]
        u1 = l11 * gx + l21 * gy + l31 * gz
        u2 = l22 * gy + l32 * gz
        u3 = l33 * gz
        e[k] = _exp(-lm[3 + k] * (u1 * u1 + u2 * u2 + u3 * u3))
    rss = 0.0
    for k in range(m):
        r = yv[k] - s0 * e[k]
        rss += r * r
    return rss


@nb.njit(cache=True, nogil=True, fastmath=_FM_SUM, error_model="numpy")
def _chol_build(yv, lm, q, e, H, g, Jc):
    """``H = JᵀJ`` (lower triangle) and ``g = Jᵀr`` at ``q``, ``e`` its :func:`_chol_rss`
    exponentials; ``Jc (8, m)`` scratch: the Jacobian's columns and the residuals."""
    m = yv.shape[0]
    s0, l11, l21, l22, l31, l32, l33 = q[0], q[1], q[2], q[3], q[4], q[5], q[6]
    for k in range(m):
        gx = lm[3 + m + k]
        gy = lm[3 + 2 * m + k]
        gz = lm[3 + 3 * m + k]
        u1 = l11 * gx + l21 * gy + l31 * gz
        u2 = l22 * gy + l32 * gz
        u3 = l33 * gz
        ek = e[k]
        s = s0 * ek
        mb2 = -2.0 * lm[3 + k] * s
        Jc[0, k] = ek
        Jc[1, k] = mb2 * u1 * gx
        Jc[2, k] = mb2 * u1 * gy
        Jc[3, k] = mb2 * u2 * gy
        Jc[4, k] = mb2 * u1 * gz
        Jc[5, k] = mb2 * u2 * gz
        Jc[6, k] = mb2 * u3 * gz
        Jc[7, k] = yv[k] - s
    for a in range(7):
        t = 0.0
        for k in range(m):
            t += Jc[a, k] * Jc[7, k]
        g[a] = t
        for b in range(a + 1):
            t = 0.0
            for k in range(m):
                t += Jc[a, k] * Jc[b, k]
            H[a, b] = t


@nb.njit(cache=True, nogil=True, fastmath=_FM_SUM, error_model="numpy")
def _d_build(lm, s0, e, H, Jc):
    """``H = JᵀJ`` (lower triangle) of the signal in the (S0, D) parameterisation, ``e`` the
    exponentials at the point (as :func:`~._tensor_numba.dti_stderr`)."""
    m = e.shape[0]
    for k in range(m):
        b = lm[3 + k]
        gx = lm[3 + m + k]
        gy = lm[3 + 2 * m + k]
        gz = lm[3 + 3 * m + k]
        ms = -s0 * e[k] * b
        Jc[0, k] = e[k]
        Jc[1, k] = ms * gx * gx
        Jc[2, k] = 2.0 * ms * gx * gy
        Jc[3, k] = ms * gy * gy
        Jc[4, k] = 2.0 * ms * gx * gz
        Jc[5, k] = 2.0 * ms * gy * gz
        Jc[6, k] = ms * gz * gz
    for a in range(7):
        for bb in range(a + 1):
            t = 0.0
            for k in range(m):
                t += Jc[a, k] * Jc[bb, k]
            H[a, bb] = t


@nb.njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def _nlls_voxel(yv, lm, c, mats, vecs, ee, params, se, rss_out, status, i):
    """Nonlinear DTI fit of one voxel (as :meth:`.dti.DTI._nlls` with the compiled solver):
    the start from the WLS coefficients ``c`` (log S0, D) by :func:`.dti.lower_to_chol`
    (eigenvalues raised to ``1e-6 × max(MD, 1e-4)``), then the bounded Levenberg–Marquardt
    of :func:`~tumorscope.fitting._lm_numba._lm_voxel` (same damping, steps, tests; S0 >= 0,
    the scale of S0 its start) with the model inlined, then the standard errors of S0 and D
    (:func:`~._tensor_numba.dti_stderr`). Writes column ``i`` of ``params``, ``se`` and
    ``rss_out[i]``, ``status[i]``; False (maps NaN) if the fit failed."""
    max_iter = int(lm[0])
    ftol = lm[1]
    xtol = lm[2]
    m = yv.shape[0]
    H, A, Lw = mats[0], mats[1], mats[2]
    q, pt, g, delta, scale = vecs[0], vecs[1], vecs[2], vecs[3], vecs[4]
    ecur, etry, Jc = ee[0], ee[1], ee[2:10]
    # start: the nearest positive-definite tensor to WLS's, its Cholesky factor
    xx, xy, yy, xz, yz, zz = c[1], c[2], c[3], c[4], c[5], c[6]
    floor = 1e-6 * max((xx + yy + zz) / 3.0, 1e-4)
    ax, ay, az = xx - floor, yy - floor, zz - floor
    m2 = ax * ay - xy * xy
    m3 = ax * (ay * az - yz * yz) - xy * (xy * az - yz * xz) + xz * (xy * yz - ay * xz)
    if not (ax > 0 and m2 > 0 and m3 > 0):
        a3 = np.empty((3, 3))
        v3 = np.empty((3, 3))
        a3[0, 0] = xx
        a3[1, 0] = a3[0, 1] = xy
        a3[1, 1] = yy
        a3[2, 0] = a3[0, 2] = xz
        a3[2, 1] = a3[1, 2] = yz
        a3[2, 2] = zz
        _jacobi3(a3, v3)
        ev0 = max(a3[0, 0], floor)
        ev1 = max(a3[1, 1], floor)
        ev2 = max(a3[2, 2], floor)
        d3 = np.empty((3, 3))
        for r_ in range(3):
            for c_ in range(r_ + 1):
                d3[r_, c_] = (
                    v3[r_, 0] * ev0 * v3[c_, 0]
                    + v3[r_, 1] * ev1 * v3[c_, 1]
                    + v3[r_, 2] * ev2 * v3[c_, 2]
                )
        xx, xy, yy, xz, yz, zz = d3[0, 0], d3[1, 0], d3[1, 1], d3[2, 0], d3[2, 1], d3[2, 2]
    ok, l11, l21, l22, l31, l32, l33 = _chol3(xx + 1e-15, xy, yy + 1e-15, xz, yz, zz + 1e-15)
    if not ok:
        f3 = np.sqrt(floor)
        l11, l21, l22, l31, l32, l33 = f3, 0.0, f3, 0.0, 0.0, f3
    s0 = np.exp(c[0])
    q[0], q[1], q[2], q[3], q[4], q[5], q[6] = s0, l11, l21, l22, l31, l32, l33
    scale[0] = max(s0, 1e-12)
    for a in range(1, 7):
        scale[a] = 0.03
    # Levenberg-Marquardt (fitting._lm_numba._lm_voxel, the model inlined)
    rss = _chol_rss(yv, lm, q, ecur)
    _chol_build(yv, lm, q, ecur, H, g, Jc)
    st = _MAX_ITER
    lam = 1e-3
    it = 0
    if not np.isfinite(rss):
        st = _FAILED
    elif rss == 0.0:
        st = _CONVERGED
    else:
        build = False
        while it < max_iter:
            if build:
                _chol_build(yv, lm, q, ecur, H, g, Jc)
                build = False
            frozen = q[0] <= 0.0 and g[0] < 0.0
            for a in range(7):
                for b in range(a + 1):
                    A[a, b] = 0.0 if (frozen and (a == 0 or b == 0)) else H[a, b]
                if frozen and a == 0:
                    A[0, 0] = 1.0
                    pt[0] = 0.0
                else:
                    A[a, a] += lam * max(H[a, a], 1e-30)
                    pt[a] = g[a]
            it += 1
            ok = _solve7(A, pt, delta, Lw)
            rss_t = np.inf
            if ok:
                for a in range(7):
                    pt[a] = q[a] + delta[a]
                pt[0] = max(pt[0], 0.0)
                rss_t = _chol_rss(yv, lm, pt, etry)
            if ok and np.isfinite(rss_t) and rss_t < rss:
                small_step = True
                for a in range(7):
                    if abs(pt[a] - q[a]) > xtol * (abs(q[a]) + scale[a]):
                        small_step = False
                small_gain = (rss - rss_t) <= ftol * rss
                for a in range(7):
                    q[a] = pt[a]
                for k in range(m):
                    ecur[k] = etry[k]
                rss = rss_t
                lam = max(lam / 10.0, 1e-12)
                build = True
                if small_step or small_gain or rss == 0.0:
                    st = _CONVERGED
                    break
            else:
                lam *= 10.0
                if lam > 1e10:
                    st = _CONVERGED
                    break
    finite = np.isfinite(rss)
    for a in range(7):
        finite &= np.isfinite(q[a])
    nan = np.float32(np.nan)
    if not finite:
        for a in range(7):
            params[a, i] = nan
            se[a, i] = nan
        rss_out[i] = np.float32(rss)
        status[i] = _FAILED
        return False
    l11, l21, l22, l31, l32, l33 = q[1], q[2], q[3], q[4], q[5], q[6]
    d = pt
    d[0] = l11 * l11
    d[1] = l21 * l11
    d[2] = l21 * l21 + l22 * l22
    d[3] = l31 * l11
    d[4] = l31 * l21 + l32 * l22
    d[5] = l31 * l31 + l32 * l32 + l33 * l33
    params[0, i] = np.float32(q[0])
    for a in range(6):
        params[1 + a, i] = np.float32(d[a])
    rss_out[i] = np.float32(rss)
    status[i] = st  # AT_BOUND (S0 = 0) is reported as CONVERGED, as the engine path
    # standard errors of (S0, D) (dti_stderr): J = [e, s X_D], e = exp(-b gᵀDg) at the solution
    _d_build(lm, q[0], ecur, H, Jc)
    okc = m > 7 and _chol_lower(H, Lw)
    s2 = rss / (m - 7) if m > 7 else np.nan
    for col in range(7):
        if not okc:
            se[col, i] = nan
            continue
        acc = 0.0
        for a in range(col, 7):
            t = 1.0 if a == col else 0.0
            for b in range(col, a):
                t -= Lw[a, b] * delta[b]
            delta[a] = t / Lw[a, a]
            acc += delta[a] * delta[a]
        var = acc * s2
        se[col, i] = np.float32(np.sqrt(var)) if var >= 0 else nan
    return True


@nb.njit(inline="always")
def _chol_lower(A, L):
    """Lower Cholesky factor of the 7×7 SPD matrix given by its lower triangle ``A``; the
    upper triangle of ``L`` holds nothing of use (``L[0, 1..6]``: the reciprocal diagonal)."""
    for j in range(7):
        s = A[j, j]
        for k in range(j):
            s -= L[j, k] * L[j, k]
        if not (s > 0.0):
            return False
        dj = np.sqrt(s)
        L[j, j] = dj
        inv = 1.0 / dj
        for r in range(j + 1, 7):
            t = A[r, j]
            for k in range(j):
                t -= L[r, k] * L[j, k]
            L[r, j] = t * inv
    return True


@nb.njit(inline="always")
def _solve7(A, b, x, L):
    """``x = A⁻¹ b`` for the 7×7 SPD ``A`` (lower triangle) by Cholesky; False if not SPD."""
    if not _chol_lower(A, L):
        return False
    for r in range(7):
        t = b[r]
        for k in range(r):
            t -= L[r, k] * x[k]
        x[r] = t / L[r, r]
    for r in range(6, -1, -1):
        t = x[r]
        for k in range(r + 1, 7):
            t -= L[k, r] * x[k]
        x[r] = t / L[r, r]
    return True
