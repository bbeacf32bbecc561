"""The fused compiled pass of the DTI fits (numba): from the signals straight to the float32
maps, as the ADC fast path (:func:`~._numba.adc_fit_range`); the linear fits, and the
nonlinear one (Cholesky parameterisation, Levenberg–Marquardt with the model inlined)
started from them; imported only when numba is installed."""

from __future__ import annotations

import numba as nb
import numpy as np

from ...fitting.status import FitStatus
from ._dti_nlls import chol_start, nlls_tables, nlls_tile, tile_state
from ._tensor_numba import TILE, _jacobi3, tile_buffers, wls_tile

_CONVERGED = np.uint8(FitStatus.CONVERGED)
_AT_BOUND = np.uint8(FitStatus.AT_BOUND)
_INVALID = np.uint8(FitStatus.INVALID_INPUT)
_FAILED = np.uint8(FitStatus.FAILED)
_NOT_FITTED = np.uint8(FitStatus.NOT_FITTED)


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

    ``lm`` None: the linear fit. Else the nonlinear fit (``weighted`` must be True: it
    starts from WLS), ``lm = [max_iter, ftol, xtol]`` (float64): the voxels of the tile
    whose linear fit succeeded go through :func:`~._dti_nlls.nlls_tile` together (as
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
    if lm is not None:  # (a None lm prunes the nonlinear code from the linear fits' build)
        buf = tile_state(m, TILE)
        Xd, XXp, Xp = nlls_tables(X)
        oq = np.empty((7, TILE))
        ose = np.empty((7, TILE))
        orss = np.empty(TILE)
        ost = np.empty(TILE, np.uint8)
        fitpos = np.empty(TILE, np.int64)
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
            if lm is not None:  # queued for the tile's nonlinear fit
                flags[1, j] = 2.0
                continue
            for q in range(6):
                dd[q, j] = np.float64(params[q + 1, i])
            flags[1, j] = 1.0  # fitted
        if lm is not None:
            nf = 0
            for j in range(nt):
                if flags[1, j] == 2.0:
                    i = idx[j]
                    for k in range(m):
                        buf[0][k, nf] = np.float64(y[i, k])
                    chol_start(c[:, j], buf[1], nf)
                    fitpos[nf] = j
                    nf += 1
            if nf > 0:
                nlls_tile(buf, nf, int(lm[0]), lm[1], lm[2], Xd, XXp, Xp, oq, ose, orss, ost)
            for f in range(nf):
                j = fitpos[f]
                i = idx[j]
                rss[i] = np.float32(orss[f])
                status[i] = ost[f]
                for q in range(7):
                    params[q, i] = np.float32(oq[q, f])
                    se[q, i] = np.float32(ose[q, f])
                if ost[f] == _FAILED:
                    flags[1, j] = 0.0
                    for q in range(7):
                        der[q, i] = nan
                    continue
                for q in range(6):
                    dd[q, j] = np.float64(params[q + 1, i])
                flags[1, j] = 1.0
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
