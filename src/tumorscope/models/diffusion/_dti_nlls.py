"""The nonlinear DTI fit of a tile of voxels in lockstep (numba), called by the fused pass
:func:`~._dti_fused.dti_fit_range`; imported only when numba is installed.

The Levenberg–Marquardt steps are those of the engine's compiled solver
(:func:`~tumorscope.fitting._lm_numba._lm_voxel`: damping 1e-3, ÷10 on an accepted step,
×10 on a rejected one, the same ``ftol``/``xtol`` tests, S0 >= 0) on the Cholesky parameters
``q = (S0, L11, L21, L22, L31, L32, L33)``, ``D = L Lᵀ``, for every voxel of the tile at once:
each array holds one voxel per column, so that every loop runs over voxels and vectorises.
Finished voxels leave the tile (the columns of the others are compacted), so a slow voxel
does not hold back the rest.

``JᵀJ`` and ``Jᵀr`` come from the (S0, D) parameterisation, where the log signal is linear:
with ``J_D = [e, s X_D]`` (``e = exp(X_D D)``, ``s = S0 e``) every entry is a sum over the
measurements of ``e²`` (or ``e r``) times a product of design columns and a power of S0 —
two small matrix products with fixed matrices for the whole tile (BLAS, single-threaded at
these sizes) — and the chain rule ``J_L = J_D T`` (``T = ∂(S0, D)/∂q``, at most 3 non-zeros
per column) gives ``JᵀJ = Tᵀ J_DᵀJ_D T``, ``Jᵀr = Tᵀ J_Dᵀr``. The standard errors of (S0, D)
are those of :func:`~._tensor_numba.dti_stderr`, from ``J_DᵀJ_D`` at the solution.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ...fitting.status import FitStatus
from ._numba import _exp
from ._tensor_numba import _jacobi3

_CONVERGED = np.uint8(FitStatus.CONVERGED)
_MAX_ITER = np.uint8(FitStatus.MAX_ITER)
_FAILED = np.uint8(FitStatus.FAILED)
_FM = {"contract", "reassoc"}

# T = ∂(S0, D)/∂q by columns (q index l): up to 3 (D row, q row of the coefficient or -1 for
# 1, factor); D rows: 0 S0, 1 xx, 2 xy, 3 yy, 4 xz, 5 yz, 6 zz.
_TR = np.array(
    [[0, -1, -1], [1, 2, 4], [2, 3, 5], [3, 5, -1], [4, 5, 6], [5, 6, -1], [6, -1, -1]],
    dtype=np.int64,
)
_TQ = np.array(
    [[-1, -1, -1], [1, 2, 4], [1, 2, 4], [3, 5, -1], [1, 2, 4], [3, 5, -1], [6, -1, -1]],
    dtype=np.int64,
)
_TF = np.array(
    [[1, 0, 0], [2, 1, 1], [1, 2, 1], [2, 1, 0], [1, 1, 2], [1, 2, 0], [2, 0, 0]],
    dtype=np.float64,
)


@nb.njit(cache=True, nogil=True)
def nlls_tables(X):
    """Fixed matrices of :func:`nlls_tile` for the DTI design ``X (m, 7)``: ``Xd (m, 6)`` the
    tensor columns, ``XXp (28, m)`` the products ``f_r f_c`` (packed lower triangle, ``f_0 =
    1``, ``f_{1+a}`` = tensor column ``a``), ``Xp (7, m)`` the ``f_r``."""
    m = X.shape[0]
    Xd = np.empty((m, 6))
    Xp = np.empty((7, m))
    XXp = np.empty((28, m))
    for k in range(m):
        Xp[0, k] = 1.0
        for a in range(6):
            Xd[k, a] = X[k, 1 + a]
            Xp[1 + a, k] = X[k, 1 + a]
    for a in range(7):
        for b in range(a + 1):
            for k in range(m):
                XXp[a * (a + 1) // 2 + b, k] = Xp[a, k] * Xp[b, k]
    return Xd, XXp, Xp


@nb.njit(inline="always")
def _p(a, b):
    """Packed lower-triangle index of the symmetric entry (a, b)."""
    return a * (a + 1) // 2 + b if a >= b else b * (b + 1) // 2 + a


@nb.njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy")
def _evaluate(Y, Q, nt, Xd, XXp, Xp, D, E, E2, ER, rss, HD, gD, HL, gL, coef, M):
    """At the parameters ``Q (7, T)`` of the first ``nt`` columns: the signal RSS ``rss``,
    ``HD = J_DᵀJ_D`` (packed, 28 rows), and ``HL = JᵀJ`` (packed), ``gL = Jᵀr`` of the
    Cholesky parameterisation. The rest is scratch."""
    m = Y.shape[0]
    for j in range(nt):
        l11, l21, l22, l31, l32, l33 = Q[1, j], Q[2, j], Q[3, j], Q[4, j], Q[5, j], Q[6, j]
        D[0, j] = l11 * l11
        D[1, j] = l21 * l11
        D[2, j] = l21 * l21 + l22 * l22
        D[3, j] = l31 * l11
        D[4, j] = l31 * l21 + l32 * l22
        D[5, j] = l31 * l31 + l32 * l32 + l33 * l33
    np.dot(Xd, D, E)  # log(S / S0)
    for j in range(nt):
        rss[j] = 0.0
    for k in range(m):
        for j in range(nt):
            e = _exp(E[k, j])
            r = Y[k, j] - Q[0, j] * e
            E2[k, j] = e * e
            ER[k, j] = e * r
            rss[j] += r * r
    np.dot(XXp, E2, HD)
    np.dot(Xp, ER, gD)
    # powers of S0: J_D = [e, S0 e X_D]
    for a in range(1, 7):
        for b in range(a + 1):
            row = _p(a, b)
            for j in range(nt):
                s0 = Q[0, j]
                HD[row, j] *= s0 * s0 if b > 0 else s0
        for j in range(nt):
            gD[a, j] *= Q[0, j]
    # T's coefficients, then M = HD T and HL = Tᵀ M, gL = Tᵀ gD
    for col in range(7):
        for t in range(3):
            qi = _TQ[col, t]
            f = _TF[col, t]
            for j in range(nt):
                coef[col * 3 + t, j] = f * (Q[qi, j] if qi >= 0 else 1.0)
    for a in range(7):
        for col in range(7):
            row = a * 7 + col
            for j in range(nt):
                M[row, j] = 0.0
            for t in range(3):
                r_ = _TR[col, t]
                if r_ < 0:
                    continue
                h = _p(a, r_)
                for j in range(nt):
                    M[row, j] += HD[h, j] * coef[col * 3 + t, j]
    for i in range(7):
        for col in range(i + 1):
            row = _p(i, col)
            for j in range(nt):
                HL[row, j] = 0.0
            for t in range(3):
                r_ = _TR[i, t]
                if r_ < 0:
                    continue
                for j in range(nt):
                    HL[row, j] += coef[i * 3 + t, j] * M[r_ * 7 + col, j]
        for j in range(nt):
            gL[i, j] = 0.0
        for t in range(3):
            r_ = _TR[i, t]
            if r_ < 0:
                continue
            for j in range(nt):
                gL[i, j] += coef[i * 3 + t, j] * gD[r_, j]


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _solve(HL, gL, Q, lam, nt, A, x, fail):
    """The damped step ``(JᵀJ + λ diag(max(JᵀJ_ii, 1e-30))) x = Jᵀr`` of every column (S0
    frozen where it is at 0 and the gradient points below); packed Cholesky over the tile,
    ``fail[j] = 1`` where not positive definite."""
    for j in range(nt):
        fail[j] = 0.0
    for row in range(28):
        for j in range(nt):
            A[row, j] = HL[row, j]
    for a in range(7):
        d = _p(a, a)
        for j in range(nt):
            A[d, j] += lam[j] * max(HL[d, j], 1e-30)
            x[a, j] = gL[a, j]
    for j in range(nt):
        if Q[0, j] <= 0.0 and gL[0, j] < 0.0:  # frozen S0 (as the engine's solver)
            for b in range(1, 7):
                A[_p(b, 0), j] = 0.0
            A[0, j] = 1.0
            x[0, j] = 0.0
    # Cholesky in place (reciprocal diagonal in the last column block of x's scratch)
    for a in range(7):
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
                    A[aa + a, j] = np.sqrt(s) if ok else 1.0
            else:
                for j in range(nt):
                    A[aa + b, j] /= A[bb + b, j]
    for a in range(7):
        aa = a * (a + 1) // 2
        for b in range(a):
            for j in range(nt):
                x[a, j] -= A[aa + b, j] * x[b, j]
        for j in range(nt):
            x[a, j] /= A[aa + a, j]
    for a in range(6, -1, -1):
        for b in range(a + 1, 7):
            bb = b * (b + 1) // 2 + a
            for j in range(nt):
                x[a, j] -= A[bb, j] * x[b, j]
        for j in range(nt):
            x[a, j] /= A[a * (a + 1) // 2 + a, j]


@nb.njit(cache=True, nogil=True, error_model="numpy")
def chol_start(c, q, k):
    """Column ``k`` of ``q``: the start of the fit from the WLS coefficients ``c`` (log S0,
    D): the Cholesky factor of the nearest positive-definite tensor (eigenvalues raised to
    ``1e-6 × max(MD, 1e-4)``, as :func:`.dti.lower_to_chol`)."""
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
    xx += 1e-15
    yy += 1e-15
    zz += 1e-15
    ok = xx > 0.0
    l11 = np.sqrt(xx) if ok else 0.0
    l21 = xy / l11 if ok else 0.0
    l31 = xz / l11 if ok else 0.0
    t = yy - l21 * l21
    ok = ok and t > 0.0
    l22 = np.sqrt(t) if ok else 0.0
    l32 = (yz - l31 * l21) / l22 if ok else 0.0
    t = zz - l31 * l31 - l32 * l32
    ok = ok and t > 0.0
    l33 = np.sqrt(t) if ok else 0.0
    if not ok:
        f3 = np.sqrt(floor)
        l11, l21, l22, l31, l32, l33 = f3, 0.0, f3, 0.0, 0.0, f3
    q[0, k] = np.exp(c[0])
    q[1, k] = l11
    q[2, k] = l21
    q[3, k] = l22
    q[4, k] = l31
    q[5, k] = l32
    q[6, k] = l33


@nb.njit(cache=True, nogil=True, error_model="numpy")
def tile_state(m, T):
    """The buffers of :func:`nlls_tile` for ``m`` measurements and ``T`` voxels."""
    return (
        np.zeros((m, T)),  # Y
        np.zeros((7, T)),  # Q
        np.zeros((7, T)),  # Qt (trial)
        np.zeros((6, T)),  # D
        np.zeros((m, T)),  # E
        np.zeros((m, T)),  # E2
        np.zeros((m, T)),  # ER
        np.zeros((8, T)),  # per voxel: rss, rss_t, lam, it, scale0, fail, orig, spare
        np.zeros((28, T)),  # HD
        np.zeros((28, T)),  # HDt
        np.zeros((7, T)),  # gD
        np.zeros((28, T)),  # HL
        np.zeros((28, T)),  # HLt
        np.zeros((7, T)),  # gL
        np.zeros((7, T)),  # gLt
        np.zeros((21, T)),  # coef
        np.zeros((49, T)),  # M
        np.zeros((28, T)),  # A
        np.zeros((7, T)),  # x
    )


@nb.njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def _finish(col, st, Q, S, HD, m, out_q, out_se, out_rss, out_st):
    """Write the result of column ``col`` at its voxel (``S[6, col]``): S0 and D, the
    standard errors of (S0, D) from ``HD``, the RSS and the status (FAILED where not
    finite)."""
    j = int(S[6, col])
    rss = S[0, col]
    finite = np.isfinite(rss)
    for a in range(7):
        finite &= np.isfinite(Q[a, col])
    out_rss[j] = rss
    if not finite:
        out_st[j] = _FAILED
        for a in range(7):
            out_q[a, j] = np.nan
            out_se[a, j] = np.nan
        return
    out_st[j] = st
    l11, l21, l22, l31, l32, l33 = Q[1, col], Q[2, col], Q[3, col], Q[4, col], Q[5, col], Q[6, col]
    out_q[0, j] = Q[0, col]
    out_q[1, j] = l11 * l11
    out_q[2, j] = l21 * l11
    out_q[3, j] = l21 * l21 + l22 * l22
    out_q[4, j] = l31 * l11
    out_q[5, j] = l31 * l21 + l32 * l22
    out_q[6, j] = l31 * l31 + l32 * l32 + l33 * l33
    # standard errors: sqrt(diag((J_DᵀJ_D)⁻¹) rss / (m - 7))
    L = np.zeros((7, 7))
    ok = m > 7
    for a in range(7):
        if not ok:
            break
        for b in range(a + 1):
            s = HD[_p(a, b), col]
            for k in range(b):
                s -= L[a, k] * L[b, k]
            if a == b:
                if not s > 0.0:
                    ok = False
                    break
                L[a, a] = np.sqrt(s)
            else:
                L[a, b] = s / L[b, b]
    s2 = rss / (m - 7) if m > 7 else np.nan
    z = np.empty(7)
    for c in range(7):
        if not ok:
            out_se[c, j] = np.nan
            continue
        acc = 0.0
        for a in range(c, 7):
            t = 1.0 if a == c else 0.0
            for b in range(c, a):
                t -= L[a, b] * z[b]
            z[a] = t / L[a, a]
            acc += z[a] * z[a]
        v = acc * s2
        out_se[c, j] = np.sqrt(v) if v >= 0 else np.nan


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _move(src, dst, arrays2d, S):
    """Copy column ``src`` to ``dst`` in every state array."""
    for arr in arrays2d:
        for r in range(arr.shape[0]):
            arr[r, dst] = arr[r, src]
    for r in range(S.shape[0]):
        S[r, dst] = S[r, src]


@nb.njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def nlls_tile(buf, nt, max_iter, ftol, xtol, Xd, XXp, Xp, out_q, out_se, out_rss, out_st):
    """Fit the ``nt`` voxels loaded in the tile buffers ``buf`` (:func:`tile_state`: ``Y``
    the samples and ``Q`` the starts (:func:`chol_start`) of voxels ``0..nt-1`` in their
    columns) and write, per voxel ``j``, ``out_q[:, j]`` = (S0, D), ``out_se[:, j]``,
    ``out_rss[j]``, ``out_st[j]`` (CONVERGED, MAX_ITER or FAILED)."""
    Y, Q, Qt, D, E, E2, ER, S, HD, HDt, gD, HL, HLt, gL, gLt, coef, M, A, x = buf
    m = Y.shape[0]
    for j in range(nt):
        S[2, j] = 1e-3  # lambda
        S[3, j] = 0.0  # trial steps
        S[4, j] = max(Q[0, j], 1e-12)  # scale of S0
        S[6, j] = j  # the voxel of the column
    _evaluate(Y, Q, nt, Xd, XXp, Xp, D, E, E2, ER, S[0], HD, gD, HL, gL, coef, M)
    n = 0  # active columns, compacted to the front
    for j in range(nt):
        rss = S[0, j]
        if not np.isfinite(rss):
            _finish(j, _FAILED, Q, S, HD, m, out_q, out_se, out_rss, out_st)
        elif rss == 0.0:
            _finish(j, _CONVERGED, Q, S, HD, m, out_q, out_se, out_rss, out_st)
        else:
            if n != j:
                _move(j, n, (Y, Q, HD, HL, gL), S)
            n += 1
    while n > 0:
        _solve(HL, gL, Q, S[2], n, A, x, S[5])
        for a in range(7):
            for j in range(n):
                Qt[a, j] = Q[a, j] + x[a, j]
        for j in range(n):
            Qt[0, j] = max(Qt[0, j], 0.0)
        _evaluate(Y, Qt, n, Xd, XXp, Xp, D, E, E2, ER, S[1], HDt, gD, HLt, gLt, coef, M)
        keep = 0
        for j in range(n):
            S[3, j] += 1.0
            rss, rss_t = S[0, j], S[1, j]
            done = False
            st = _MAX_ITER
            if S[5, j] == 0.0 and np.isfinite(rss_t) and rss_t < rss:
                small_step = True
                for a in range(7):
                    scale = S[4, j] if a == 0 else 0.03
                    if abs(Qt[a, j] - Q[a, j]) > xtol * (abs(Q[a, j]) + scale):
                        small_step = False
                small_gain = (rss - rss_t) <= ftol * rss
                for a in range(7):
                    Q[a, j] = Qt[a, j]
                    gL[a, j] = gLt[a, j]
                for r in range(28):
                    HL[r, j] = HLt[r, j]
                    HD[r, j] = HDt[r, j]
                S[0, j] = rss_t
                S[2, j] = max(S[2, j] / 10.0, 1e-12)
                if small_step or small_gain or rss_t == 0.0:
                    done = True
                    st = _CONVERGED
            else:
                S[2, j] *= 10.0
                if S[2, j] > 1e10:
                    done = True
                    st = _CONVERGED
            if not done and S[3, j] >= max_iter:
                done = True
            if done:
                _finish(j, st, Q, S, HD, m, out_q, out_se, out_rss, out_st)
            else:
                if keep != j:
                    _move(j, keep, (Y, Q, HD, HL, gL), S)
                keep += 1
        n = keep
