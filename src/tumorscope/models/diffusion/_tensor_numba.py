"""Compiled kernels of the tensor models (numba); imported only when numba is installed.

* :func:`tensor_wls_rows`: the weighted linear fit of :func:`.tensor.tensor_wls`, fused
  with the log and the validation (any design: DTI's 7 columns, DKI's 22).
* :func:`dti_chol_kernel`: the DTI signal and Jacobian in the Cholesky parameterisation,
  for the compiled Levenberg–Marquardt solver.
* :func:`kurtosis_maps_tab`: MK, AK, RK by the quadrature of :func:`.tensor.kurtosis_maps`.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ...fitting._lm_numba import MODEL_SIGNATURE
from ._numba import _exp, _log_pos


@nb.njit(inline="always")
def _cholesky(A, p):
    """In-place lower Cholesky factor of the SPD ``A[:p, :p]``; False if not positive."""
    for j in range(p):
        s = A[j, j]
        for k in range(j):
            s -= A[j, k] * A[j, k]
        if not (s > 0.0):
            return False
        d = np.sqrt(s)
        A[j, j] = d
        for i in range(j + 1, p):
            t = A[i, j]
            for k in range(j):
                t -= A[i, k] * A[j, k]
            A[i, j] = t / d
    return True


@nb.njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def tensor_wls_rows(y, X, XX, pinv, weighted, coef, dinv, rss, code):
    """Fused two-pass WLS (``weighted``) or OLS of ``log y`` on ``X (m, p)``, row by row.

    ``XX (m, P)``: products of the column pairs of ``X`` (packed lower triangle, row-major
    ``a >= b``); ``pinv = pinv(X)`` (the OLS pass). Samples ``<= 0`` take the row's smallest
    positive sample. Writes ``coef (n, p)``, ``dinv (n, p)`` = ``diag((XᵀWX)⁻¹)``, ``rss``
    (weighted log-domain) and ``code``: 0 solved, 1 invalid input (NaN/inf or negative, or no
    positive sample), 2 singular. Serial and GIL-free: the engine runs blocks in threads.
    """
    n, m = y.shape
    p = X.shape[1]
    P = XX.shape[1]
    ly = np.empty(m)
    w = np.empty(m)
    Ap = np.empty(P)
    L = np.empty((p, p))
    r = np.empty(p)
    z = np.empty(p)
    c = np.empty(p)
    for i in range(n):
        bad = False
        minpos = np.inf
        for k in range(m):
            v = np.float64(y[i, k])
            bad |= not (v >= 0.0) or v == np.inf
            minpos = v if (v > 0.0 and v < minpos) else minpos
        if bad or minpos == np.inf:
            code[i] = 1
            continue
        for k in range(m):
            v = np.float64(y[i, k])
            ly[k] = np.log(v if v > 0.0 else minpos)
        if weighted:
            for j in range(p):
                t = 0.0
                for k in range(m):
                    t += pinv[j, k] * ly[k]
                c[j] = t
            for k in range(m):
                t = 0.0
                for j in range(p):
                    t += X[k, j] * c[j]
                w[k] = np.exp(2.0 * min(max(t, -350.0), 350.0))
        else:
            for k in range(m):
                w[k] = 1.0
        for q in range(P):
            Ap[q] = 0.0
        for a in range(p):
            r[a] = 0.0
        for k in range(m):
            wk = w[k]
            wl = wk * ly[k]
            for q in range(P):
                Ap[q] += wk * XX[k, q]
            for a in range(p):
                r[a] += wl * X[k, a]
        q = 0
        for a in range(p):
            for b in range(a + 1):
                L[a, b] = Ap[q]
                q += 1
        if not _cholesky(L, p):
            code[i] = 2
            continue
        for a in range(p):
            t = r[a]
            for b in range(a):
                t -= L[a, b] * z[b]
            z[a] = t / L[a, a]
        for a in range(p - 1, -1, -1):
            t = z[a]
            for b in range(a + 1, p):
                t -= L[b, a] * c[b]
            c[a] = t / L[a, a]
        res = 0.0
        for k in range(m):
            t = ly[k]
            for j in range(p):
                t -= X[k, j] * c[j]
            res += w[k] * t * t
        for j in range(p):
            coef[i, j] = c[j]
        # diag((LLᵀ)⁻¹)_j = sum over rows of (L⁻¹)_{aj}²: column j of L⁻¹ by forward substitution
        for col in range(p):
            s = 0.0
            for a in range(col, p):
                t = 1.0 if a == col else 0.0
                for b in range(col, a):
                    t -= L[a, b] * z[b]
                z[a] = t / L[a, a]
                s += z[a] * z[a]
            dinv[i, col] = s
        rss[i] = res
        code[i] = 0


@nb.njit(MODEL_SIGNATURE, cache=True)
def dti_chol_kernel(q, c, f, J):
    """``S = S0 exp(-b |Lᵀg|²)``, ``q = (S0, L11, L21, L22, L31, L32, L33)``;
    ``consts = [b_1..b_m, gx_1..gx_m, gy_1..gy_m, gz_1..gz_m]``."""
    m = c.shape[0] // 4
    s0 = q[0]
    l11, l21, l22, l31, l32, l33 = q[1], q[2], q[3], q[4], q[5], q[6]
    for k in range(m):
        b = c[k]
        gx = c[m + k]
        gy = c[2 * m + k]
        gz = c[3 * m + k]
        u1 = l11 * gx + l21 * gy + l31 * gz
        u2 = l22 * gy + l32 * gz
        u3 = l33 * gz
        e = np.exp(-b * (u1 * u1 + u2 * u2 + u3 * u3))
        s = s0 * e
        f[k] = s
        mb2 = -2.0 * b * s
        J[k, 0] = e
        J[k, 1] = mb2 * u1 * gx
        J[k, 2] = mb2 * u1 * gy
        J[k, 3] = mb2 * u2 * gy
        J[k, 4] = mb2 * u1 * gz
        J[k, 5] = mb2 * u2 * gz
        J[k, 6] = mb2 * u3 * gz


@nb.njit(parallel=True, cache=True, nogil=True)
def eig3_block(d6, evals, evecs):
    """Eigenvalues (decreasing) and eigenvectors (columns) of symmetric 3×3 tensors given as
    ``(n, 6)`` lower-triangular elements ``xx, xy, yy, xz, yz, zz``: cyclic Jacobi rotations
    to machine precision (at most 12 sweeps); NaN rows for non-finite tensors."""
    n = d6.shape[0]
    nchunk = 64 if n >= 64 * 256 else max(1, n // 256)
    for ch in nb.prange(nchunk):
        _eig3_rows(d6, evals, evecs, ch * n // nchunk, (ch + 1) * n // nchunk)


@nb.njit(inline="always")
def _jacobi3(a, v):
    """Diagonalise the symmetric ``a (3, 3)`` in place by cyclic Jacobi rotations (at most 12
    sweeps, to machine precision), accumulating them into ``v`` (set to the identity first);
    returns the indices of the diagonal in decreasing order."""
    for j in range(3):
        for k in range(3):
            v[j, k] = 1.0 if j == k else 0.0
    for _sweep in range(12):
        off = a[0, 1] * a[0, 1] + a[0, 2] * a[0, 2] + a[1, 2] * a[1, 2]
        diag = a[0, 0] * a[0, 0] + a[1, 1] * a[1, 1] + a[2, 2] * a[2, 2]
        if off <= 1e-30 * diag or off == 0.0:
            break
        for pq in range(3):
            p = 0 if pq < 2 else 1
            q = 1 if pq == 0 else 2
            apq = a[p, q]
            if apq == 0.0:
                continue
            theta = (a[q, q] - a[p, p]) / (2.0 * apq)
            t = (1.0 if theta >= 0 else -1.0) / (abs(theta) + np.sqrt(theta * theta + 1.0))
            c = 1.0 / np.sqrt(t * t + 1.0)
            s = t * c
            for k in range(3):  # A <- A J (columns p, q)
                akp = a[k, p]
                akq = a[k, q]
                a[k, p] = c * akp - s * akq
                a[k, q] = s * akp + c * akq
            for k in range(3):  # A <- Jᵀ A (rows p, q)
                apk = a[p, k]
                aqk = a[q, k]
                a[p, k] = c * apk - s * aqk
                a[q, k] = s * apk + c * aqk
            for k in range(3):
                vkp = v[k, p]
                vkq = v[k, q]
                v[k, p] = c * vkp - s * vkq
                v[k, q] = s * vkp + c * vkq
    # sort decreasing
    o0, o1, o2 = 0, 1, 2
    d = (a[0, 0], a[1, 1], a[2, 2])
    if d[o0] < d[o1]:
        o0, o1 = o1, o0
    if d[o1] < d[o2]:
        o1, o2 = o2, o1
    if d[o0] < d[o1]:
        o0, o1 = o1, o0
    return o0, o1, o2


@nb.njit(cache=True, nogil=True)
def _eig3_rows(d6, evals, evecs, lo, hi):
    """:func:`eig3_block` on rows ``lo:hi`` (buffers allocated once)."""
    a = np.empty((3, 3))
    v = np.empty((3, 3))
    for i in range(lo, hi):
        a[0, 0] = d6[i, 0]
        a[1, 0] = a[0, 1] = d6[i, 1]
        a[1, 1] = d6[i, 2]
        a[2, 0] = a[0, 2] = d6[i, 3]
        a[2, 1] = a[1, 2] = d6[i, 4]
        a[2, 2] = d6[i, 5]
        finite = True
        for j in range(6):
            finite &= np.isfinite(d6[i, j])
        if not finite:
            for j in range(3):
                evals[i, j] = np.nan
                for k in range(3):
                    evecs[i, j, k] = np.nan
            continue
        o0, o1, o2 = _jacobi3(a, v)
        d = (a[0, 0], a[1, 1], a[2, 2])
        evals[i, 0] = d[o0]
        evals[i, 1] = d[o1]
        evals[i, 2] = d[o2]
        for k in range(3):
            evecs[i, k, 0] = v[k, o0]
            evecs[i, k, 1] = v[k, o1]
            evecs[i, k, 2] = v[k, o2]


@nb.njit(MODEL_SIGNATURE, cache=True)
def tensor_exp_kernel(p, c, f, J):
    """``S = S0 exp(Σ_j<6 X_kj D_j + MD² Σ_j>=6 X_kj W_j)``, ``MD = (Dxx + Dyy + Dzz) / 3``:
    DTI (6 tensor columns) and tensor DKI (6 + 15); ``p = (S0, D…, W…)``,
    ``consts = [m, X[:, 1:] row-major]``."""
    m = int(c[0])
    q = (c.shape[0] - 1) // m
    s0 = p[0]
    md = (p[1] + p[3] + p[6]) / 3.0
    md2 = md * md
    for k in range(m):
        o = 1 + k * q
        td = 0.0
        for j in range(min(q, 6)):
            td += c[o + j] * p[1 + j]
        tw = 0.0
        for j in range(6, q):
            tw += c[o + j] * p[1 + j]
        e = np.exp(td + md2 * tw)
        s = s0 * e
        f[k] = s
        J[k, 0] = e
        extra = 2.0 * md / 3.0 * tw
        for j in range(min(q, 6)):
            J[k, 1 + j] = s * (c[o + j] + (extra if (j == 0 or j == 2 or j == 5) else 0.0))
        for j in range(6, q):
            J[k, 1 + j] = s * md2 * c[o + j]


#: Voxels per tile of :func:`tensor_wls_tiled` (the per-tile buffers stay in cache).
TILE = 128


@nb.njit(cache=True, nogil=True)
def tile_buffers(m, p, T):
    """``ly, w (m, T)``, ``A (P, T)``, ``r, c, z, dv (p, T)``, ``flags (4, T)``, ``wl (m, T)``
    (zeros: the columns of a partial tile past its voxels stay finite)."""
    P = p * (p + 1) // 2
    return (
        np.zeros((m, T)),
        np.zeros((m, T)),
        np.zeros((P, T)),
        np.zeros((p, T)),
        np.zeros((p, T)),
        np.zeros((p, T)),
        np.zeros((p, T)),
        np.zeros((4, T)),
        np.zeros((m, T)),
    )


@nb.njit(inline="always", fastmath={"contract"}, error_model="numpy")
def wls_tile(ly, w, A, r, c, z, dv, flags, nt, X, XX, pinv, weighted, XXt, Xt, wl):
    """The two-pass WLS (``weighted``) or OLS of :func:`tensor_wls_rows` on a tile of ``nt``
    voxels (the buffers of :func:`tile_buffers`; ``XXt = XXᵀ``, ``Xt = Xᵀ`` contiguous).

    In: ``ly[:, :nt]`` the raw samples (float64, one voxel per column). Out: ``ly`` their
    logs (samples ``<= 0`` take the voxel's smallest positive sample), ``c`` the
    coefficients, ``dv`` = ``diag((XᵀWX)⁻¹)``, ``flags[0]`` > 0 invalid input, ``flags[2]``
    > 0 singular, ``flags[3]`` the weighted log-domain RSS (``flags[1]``, ``wl``: scratch).
    The OLS pass, the predicted signal and the normal equations ``XᵀWX`` (packed), ``XᵀWy``
    are matrix products over the whole tile (BLAS while single-threaded there, i.e. DTI; the
    columns past ``nt`` are finite leftovers, never read back; else loops); logs and exps are the branch-free
    :func:`~._numba._log_pos` / :func:`~._numba._exp`; the packed Cholesky solve runs on all
    voxels of the tile at once, voxels innermost (every loop vectorises).
    """
    m = ly.shape[0]
    p = X.shape[1]
    bad, minpos, fail, res = flags[0], flags[1], flags[2], flags[3]
    for j in range(nt):
        bad[j] = 0.0
        minpos[j] = np.inf
        fail[j] = 0.0
    for k in range(m):
        for j in range(nt):
            v = ly[k, j]
            bad[j] += 0.0 if (v >= 0.0 and v != np.inf) else 1.0
            minpos[j] = v if (v > 0.0 and v < minpos[j]) else minpos[j]
    for j in range(nt):
        bad[j] += 1.0 if minpos[j] == np.inf else 0.0
        minpos[j] = minpos[j] if minpos[j] < np.inf else 1.0
    for k in range(m):
        for j in range(nt):
            v = ly[k, j]
            v = v if (v > 0.0 and v < np.inf) else minpos[j]
            ly[k, j] = _log_pos(v)
    T = ly.shape[1]
    P = XXt.shape[0]
    # BLAS for the products only while OpenBLAS keeps them on one thread (m n k < 4 × 65536):
    # its threads would compete with the engine's on a shared machine (DKI: loops instead)
    blas = P * m * T < 200_000
    if weighted:
        # OLS pass and predicted log signal (columns past nt: unused)
        if blas:
            np.dot(pinv, ly, c)
            np.dot(X, c, w)
        else:
            for a in range(p):
                for j in range(nt):
                    c[a, j] = 0.0
                for k in range(m):
                    pk = pinv[a, k]
                    for j in range(nt):
                        c[a, j] += pk * ly[k, j]
            for k in range(m):
                for j in range(nt):
                    w[k, j] = 0.0
                for a in range(p):
                    xk = X[k, a]
                    for j in range(nt):
                        w[k, j] += xk * c[a, j]
        for k in range(m):
            for j in range(nt):
                t = w[k, j]
                t = min(max(t, -350.0), 350.0)
                w[k, j] = _exp(2.0 * t)
    else:
        for k in range(m):
            for j in range(nt):
                w[k, j] = 1.0
    for k in range(m):
        for j in range(nt):
            wl[k, j] = w[k, j] * ly[k, j]
    if blas:
        np.dot(XXt, w, A)
        np.dot(Xt, wl, r)
    else:
        for q in range(P):
            for j in range(nt):
                A[q, j] = 0.0
        for a in range(p):
            for j in range(nt):
                r[a, j] = 0.0
        for k in range(m):
            for q in range(P):
                xq = XXt[q, k]
                for j in range(nt):
                    A[q, j] += xq * w[k, j]
            for a in range(p):
                xa = Xt[a, k]
                for j in range(nt):
                    r[a, j] += xa * wl[k, j]
    # packed Cholesky, in place, all voxels of the tile at once (voxels innermost: every
    # loop vectorises); dv holds the reciprocals of the diagonal meanwhile
    for a in range(p):
        aa = a * (a + 1) // 2
        for b in range(a + 1):
            bb = b * (b + 1) // 2
            for k in range(b):
                for j in range(nt):
                    A[aa + b, j] -= A[aa + k, j] * A[bb + k, j]
            if a == b:
                for j in range(nt):
                    s = A[aa + a, j]
                    ok = s > 0.0
                    fail[j] += 0.0 if ok else 1.0
                    d = np.sqrt(s) if ok else 1.0
                    A[aa + a, j] = d
                    dv[a, j] = 1.0 / d
            else:
                for j in range(nt):
                    A[aa + b, j] *= dv[b, j]
    # forward (z) and back (c) substitution
    for a in range(p):
        aa = a * (a + 1) // 2
        for j in range(nt):
            z[a, j] = r[a, j]
        for b in range(a):
            for j in range(nt):
                z[a, j] -= A[aa + b, j] * z[b, j]
        for j in range(nt):
            z[a, j] *= dv[a, j]
    for a in range(p - 1, -1, -1):
        for j in range(nt):
            c[a, j] = z[a, j]
        for b in range(a + 1, p):
            bb = b * (b + 1) // 2 + a
            for j in range(nt):
                c[a, j] -= A[bb, j] * c[b, j]
        for j in range(nt):
            c[a, j] *= dv[a, j]
    for j in range(nt):
        res[j] = 0.0
    for k in range(m):
        for j in range(nt):
            r[0, j] = ly[k, j]
        for a in range(p):
            xa = X[k, a]
            for j in range(nt):
                r[0, j] -= xa * c[a, j]
        for j in range(nt):
            res[j] += w[k, j] * r[0, j] * r[0, j]
    # diag((LLᵀ)⁻¹) = column sums of (L⁻¹)²: column ``col`` of L⁻¹ (in z) by forward
    # substitution, its squares accumulated into r (dv: the reciprocal diagonal until the end)
    for col in range(p):
        for j in range(nt):
            r[col, j] = 0.0
    for col in range(p):
        for a in range(col, p):
            aa = a * (a + 1) // 2
            for j in range(nt):
                z[a, j] = 1.0 if a == col else 0.0
            for b in range(col, a):
                for j in range(nt):
                    z[a, j] -= A[aa + b, j] * z[b, j]
            for j in range(nt):
                z[a, j] *= dv[a, j]
                r[col, j] += z[a, j] * z[a, j]
    for col in range(p):
        for j in range(nt):
            dv[col, j] = r[col, j]


@nb.njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def tensor_wls_tiled(y, X, XX, pinv, weighted, coef, dinv, rss, code):
    """:func:`tensor_wls_rows` tile by tile (:func:`wls_tile`, :data:`TILE` voxels): the
    data are transposed into ``(m, TILE)`` buffers. Same outputs and codes."""
    n, m = y.shape
    p = X.shape[1]
    ly, w, A, r, c, z, dv, flags, wl = tile_buffers(m, p, TILE)
    XXt = np.ascontiguousarray(XX.T)
    Xt = np.ascontiguousarray(X.T)
    for t0 in range(0, n, TILE):
        nt = min(TILE, n - t0)
        for k in range(m):
            for j in range(nt):
                ly[k, j] = np.float64(y[t0 + j, k])
        wls_tile(ly, w, A, r, c, z, dv, flags, nt, X, XX, pinv, weighted, XXt, Xt, wl)
        for j in range(nt):
            i = t0 + j
            cd = (
                np.uint8(1)
                if flags[0, j] > 0.0
                else (np.uint8(2) if flags[2, j] > 0.0 else np.uint8(0))
            )
            code[i] = cd
            good = cd == 0
            for a in range(p):
                coef[i, a] = c[a, j] if good else np.nan
                dinv[i, a] = dv[a, j] if good else np.nan
            rss[i] = flags[3, j] if good else np.nan


@nb.njit(cache=True, nogil=True, error_model="numpy")
def dti_stderr(params, Xd, rss, out):
    """Standard errors of DTI estimates ``params (n, 7)`` = ``(S0, D6)`` for the tensor
    columns ``Xd (m, 6)`` of the design: ``sqrt(diag((JᵀJ)⁻¹) rss / (m - 7))`` with ``J`` the
    Jacobian of :func:`.tensor.tensor_signal` (as :func:`~tumorscope.fitting.uncertainty.
    stderr_from_jacobian` with its Cholesky solver); NaN where ``JᵀJ`` is not positive
    definite, a variance is negative or ``m <= 7``."""
    n = params.shape[0]
    m = Xd.shape[0]
    p = 7
    H = np.empty((p, p))
    jr = np.empty(p)
    z = np.empty(p)
    for i in range(n):
        for a in range(p):
            for b in range(p):
                H[a, b] = 0.0
        s0 = params[i, 0]
        for k in range(m):
            t = 0.0
            for j in range(6):
                t += Xd[k, j] * params[i, 1 + j]
            e = np.exp(t)
            s = s0 * e
            jr[0] = e
            for j in range(6):
                jr[1 + j] = s * Xd[k, j]
            for a in range(p):
                for b in range(a + 1):
                    H[a, b] += jr[a] * jr[b]
        ok = m > p and _cholesky(H, p)
        scale = rss[i] / (m - p) if m > p else np.nan
        for col in range(p):
            if not ok:
                out[i, col] = np.nan
                continue
            acc = 0.0
            for a in range(col, p):
                t = 1.0 if a == col else 0.0
                for b in range(col, a):
                    t -= H[a, b] * z[b]
                z[a] = t / H[a, a]
                acc += z[a] * z[a]
            var = acc * scale
            out[i, col] = np.sqrt(var) if var >= 0 else np.nan


@nb.njit(parallel=True, cache=True, nogil=True)
def kurtosis_maps_tab(evals, evecs, wm, pts, minv, tabs, wts, min_eval, kmin, kmax, out):
    """:func:`kurtosis_maps_rows` in parallel over chunks of rows."""
    n = evals.shape[0]
    nchunk = 64 if n >= 64 * 64 else max(1, n // 64)
    for ch in nb.prange(nchunk):
        _kurtosis_rows(
            evals, evecs, wm, pts, minv, tabs, wts, min_eval, kmin, kmax, out,
            ch * n // nchunk, (ch + 1) * n // nchunk,
        )  # fmt: skip


@nb.njit(cache=True, nogil=True)
def kurtosis_maps_rows(evals, evecs, wm, pts, minv, tabs, wts, min_eval, kmin, kmax, out):
    """:func:`kurtosis_maps_tab` serially (small blocks)."""
    _kurtosis_rows(
        evals, evecs, wm, pts, minv, tabs, wts, min_eval, kmin, kmax, out, 0, evals.shape[0]
    )


@nb.njit(cache=True, nogil=True)
def _kurtosis_rows(evals, evecs, wm, pts, minv, tabs, wts, min_eval, kmin, kmax, out, lo, hi):
    """MK, AK, RK (``out`` columns) of every row by the quadrature of
    :func:`.tensor.kurtosis_maps`: ``evals (n, 3)`` decreasing, ``evecs (n, 3, 3)`` columns,
    ``wm (n, 15)`` the W elements times their multiplicities. W is expressed in the voxel's
    eigenframe first: ``W(E u)`` at the 15 points ``pts (15, 3)`` (eigenframe), solved for the
    monomial coefficients with ``minv`` (rows of the inverse of the points' monomial matrix:
    ``ne`` of them, the monomials the nodes need); then every quadrature node costs ``ne``
    products with its tabulated monomials. 0 where an eigenvalue is ``<= min_eval``, NaN
    where one is NaN; others clipped to ``[kmin, kmax]``. ``tabs (3, G, ne + 3)``: per map
    (MK, AK, RK; unused rows zero) the nodes' ``ne`` monomials and squared coordinates,
    ``wts (3, G)`` their weights (0 past a map's nodes; see
    :func:`.tensor._eigenframe_tables`)."""
    G = tabs.shape[1]
    ne = minv.shape[0]
    val = np.empty(15)
    cf = np.empty(15)
    for i in range(lo, hi):
        l1, l2, l3 = evals[i, 0], evals[i, 1], evals[i, 2]
        if not (np.isfinite(l1) and np.isfinite(l2) and np.isfinite(l3)):
            out[i, 0] = np.nan
            out[i, 1] = np.nan
            out[i, 2] = np.nan
            continue
        if not (l1 > min_eval and l2 > min_eval and l3 > min_eval):
            out[i, 0] = 0.0
            out[i, 1] = 0.0
            out[i, 2] = 0.0
            continue
        md = (l1 + l2 + l3) / 3.0
        md2 = md * md
        for t in range(15):
            a, b, cc = pts[t, 0], pts[t, 1], pts[t, 2]
            x = evecs[i, 0, 0] * a + evecs[i, 0, 1] * b + evecs[i, 0, 2] * cc
            y = evecs[i, 1, 0] * a + evecs[i, 1, 1] * b + evecs[i, 1, 2] * cc
            z = evecs[i, 2, 0] * a + evecs[i, 2, 1] * b + evecs[i, 2, 2] * cc
            x2, y2, z2 = x * x, y * y, z * z
            val[t] = (
                wm[i, 0] * x2 * x2
                + wm[i, 1] * y2 * y2
                + wm[i, 2] * z2 * z2
                + wm[i, 3] * x2 * x * y
                + wm[i, 4] * x2 * x * z
                + wm[i, 5] * x * y2 * y
                + wm[i, 6] * y2 * y * z
                + wm[i, 7] * x * z2 * z
                + wm[i, 8] * y * z2 * z
                + wm[i, 9] * x2 * y2
                + wm[i, 10] * x2 * z2
                + wm[i, 11] * y2 * z2
                + wm[i, 12] * x2 * y * z
                + wm[i, 13] * x * y2 * z
                + wm[i, 14] * x * y * z2
            )
        for k in range(ne):
            t_ = 0.0
            for t in range(15):
                t_ += minv[k, t] * val[t]
            cf[k] = t_
        for which in range(3):
            tot = 0.0
            for g in range(G):
                wt = wts[which, g]
                if wt == 0.0:
                    continue
                wg = 0.0
                for k in range(ne):
                    wg += cf[k] * tabs[which, g, k]
                dg = l1 * tabs[which, g, ne] + l2 * tabs[which, g, ne + 1]
                dg += l3 * tabs[which, g, ne + 2]
                tot += wt * wg / (dg * dg)
            out[i, which] = min(max(md2 * tot, kmin), kmax)
