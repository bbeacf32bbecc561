"""Compiled constrained weighted least squares of tensor DKI (numba): the least-distance
programme of :meth:`.dki_tensor.DKITensor._constrained`, solved by the non-negative least
squares of Lawson & Hanson (1974, ch. 23), voxel by voxel, GIL-free; imported only when numba
is installed.

Per voxel: the weights (squared OLS-predicted signal), the QR factorisation of the weighted
design by modified Gram–Schmidt on ``[M | t]`` (accurate ``Qᵀt`` even where ``Q`` loses
orthogonality), then the least-distance programme ``min |z|²`` s.t. ``E z >= f`` in the
whitened variables (``E = G R⁻¹``, ``f = -G c_u``, ``c_u`` the unconstrained solution) by
NNLS on the columns ``a_j = [E_jᵀ; f_j]`` with right-hand side the last unit vector. The
columns are never formed all at once: the dual ``Aᵀ(b - A u)`` is ``G (R⁻¹ r) + f r_last``,
and only the columns of the passive set (at most 23) are built. Each least-squares
subproblem is solved by QR. The same problem as the numpy path (scipy's NNLS on the full
matrix), so the same unique optimum.
"""

from __future__ import annotations

import numba as nb
import numpy as np

#: Sums may be reassociated (vectorised): the last bits only.
_FM = {"contract", "reassoc"}
_EPS = 2.220446049250313e-16


@nb.njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy")
def _mgs(Mt, t, R, qt):
    """Modified Gram–Schmidt QR of ``M`` given as its columns ``Mt (p, m)`` (overwritten by
    Qᵀ) with ``t (m,)`` carried along (overwritten): ``R (p, p)`` upper triangular and
    ``qt = Qᵀt``; False if rank deficient."""
    p, m = Mt.shape
    for j in range(p):
        s = 0.0
        for k in range(m):
            s += Mt[j, k] * Mt[j, k]
        r = np.sqrt(s)
        if not r > 0.0:
            return False
        R[j, j] = r
        inv = 1.0 / r
        for k in range(m):
            Mt[j, k] *= inv
        for c in range(j + 1, p):
            s = 0.0
            for k in range(m):
                s += Mt[j, k] * Mt[c, k]
            R[j, c] = s
            for k in range(m):
                Mt[c, k] -= s * Mt[j, k]
        s = 0.0
        for k in range(m):
            s += Mt[j, k] * t[k]
        qt[j] = s
        for k in range(m):
            t[k] -= s * Mt[j, k]
    return True


@nb.njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy")
def _ls_cols(Acol, nP, x, Q, Rs, qb):
    """Least squares ``min |Σ_q x_q Acol[q] - e_last|`` over the first ``nP`` columns (rows
    of ``Acol``) by modified Gram–Schmidt; ``x[:nP]``. False if a column is (numerically)
    dependent on the ones before it."""
    n = Acol.shape[1]
    for k in range(n):
        qb[k] = 1.0 if k == n - 1 else 0.0
    for j in range(nP):
        s0 = 0.0
        for k in range(n):
            Q[j, k] = Acol[j, k]
            s0 += Acol[j, k] * Acol[j, k]
        for c in range(j):
            s = 0.0
            for k in range(n):
                s += Q[c, k] * Q[j, k]
            Rs[c, j] = s
            for k in range(n):
                Q[j, k] -= s * Q[c, k]
        s = 0.0
        for k in range(n):
            s += Q[j, k] * Q[j, k]
        if not s > 1e-24 * s0:
            return False
        r = np.sqrt(s)
        Rs[j, j] = r
        inv = 1.0 / r
        s = 0.0
        for k in range(n):
            Q[j, k] *= inv
            s += Q[j, k] * qb[k]
        x[j] = s
        for k in range(n):
            qb[k] -= s * Q[j, k]
    for j in range(nP - 1, -1, -1):
        s = x[j]
        for c in range(j + 1, nP):
            s -= Rs[j, c] * x[c]
        x[j] = s / Rs[j, j]
    return True


@nb.njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy")
def _column(G, Rinv, f, j, out):
    """``out = [ (G_j R⁻¹)ᵀ ; f_j ]``."""
    p = Rinv.shape[0]
    for c in range(p):
        s = 0.0
        for b in range(c + 1):
            s += G[j, b] * Rinv[b, c]
        out[c] = s
    out[p] = f[j]


@nb.njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy")
def ldp_nnls(G, Rinv, f, Acol, uP, max_iter):
    """Lawson–Hanson NNLS ``min |A u - e_last|, u >= 0`` on the columns
    ``a_j = [(G_j R⁻¹)ᵀ; f_j]`` (:func:`_column`); on return the passive columns are the
    first rows of ``Acol (n, n)`` (``n = p + 1``) with their coefficients ``uP``; returns
    their number, or ``-1`` if ``max_iter`` was reached.

    A column whose least-squares coefficient would not be positive when it enters (rounding;
    or dependent on the passive ones) is passed over until ``u`` changes."""
    K, p = G.shape
    n = p + 1
    passive = np.zeros(K, dtype=np.bool_)
    excluded = np.zeros(K, dtype=np.bool_)
    P = np.empty(n, dtype=np.int64)
    nP = 0
    res = np.empty(n)
    v = np.empty(p)
    s = np.empty(n)
    Q = np.empty((n, n))
    Rs = np.empty((n, n))
    qb = np.empty(n)
    # |A| <= max(|f|, column norms of R⁻¹) (the rows of G have unit norm)
    anorm = 0.0
    for j in range(K):
        anorm = max(anorm, abs(f[j]))
    for c in range(p):
        t = 0.0
        for b in range(c + 1):
            t += Rinv[b, c] * Rinv[b, c]
        anorm = max(anorm, np.sqrt(t))
    tol = 10.0 * max(n, K) * _EPS * max(anorm, 1e-300)
    it = 0
    while True:
        # residual, and the dual w = Aᵀ res = G (R⁻¹ res[:p]) + f res[p]; the largest enters
        for k in range(n):
            res[k] = 1.0 if k == p else 0.0
        for q in range(nP):
            for k in range(n):
                res[k] -= uP[q] * Acol[q, k]
        for a in range(p):
            t = 0.0
            for b in range(a, p):
                t += Rinv[a, b] * res[b]
            v[a] = t
        jmax = -1
        wmax = tol
        for j in range(K):
            if passive[j] or excluded[j]:
                continue
            t = f[j] * res[p]
            for a in range(p):
                t += G[j, a] * v[a]
            if t > wmax:
                wmax = t
                jmax = j
        if jmax < 0 or nP >= n:
            return nP
        it += 1
        if it > max_iter:
            return -1
        passive[jmax] = True
        P[nP] = jmax
        _column(G, Rinv, f, jmax, Acol[nP])
        uP[nP] = 0.0
        nP += 1
        if not _ls_cols(Acol, nP, s, Q, Rs, qb) or s[nP - 1] <= 0.0:
            nP -= 1
            passive[jmax] = False
            excluded[jmax] = True
            continue
        while True:
            allpos = True
            for q in range(nP):
                if s[q] <= 0.0:
                    allpos = False
            if allpos:
                for q in range(nP):
                    uP[q] = s[q]
                break
            # step towards s until a coefficient reaches 0; those leave the passive set
            alpha = 2.0
            qmin = 0
            for q in range(nP):
                if s[q] <= 0.0:
                    a = uP[q] / (uP[q] - s[q])
                    if a < alpha:
                        alpha = a
                        qmin = q
            keep = 0
            for q in range(nP):
                uq = uP[q] + alpha * (s[q] - uP[q])
                if q == qmin or (uq <= tol and s[q] <= 0.0):
                    passive[P[q]] = False
                    continue
                if keep != q:
                    P[keep] = P[q]
                    for k in range(n):
                        Acol[keep, k] = Acol[q, k]
                uP[keep] = uq
                keep += 1
            nP = keep
            it += 1
            if it > max_iter:
                return -1
            if not _ls_cols(Acol, nP, s, Q, Rs, qb):
                return -1
        for j in range(K):
            excluded[j] = False


@nb.njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy")
def _cwls_voxel(y, X, pinv, G, c, vm, vp, RR, Mt, Acol, uP, fK):
    """Constrained WLS ``min |sqrt(w) (X c - log y)|²`` s.t. ``G c >= 0`` of one voxel
    ``y (m,)`` (float64, valid: samples ``<= 0`` take the smallest positive one), written to
    ``c (p,)``; False where the programme could not be solved. ``pinv = pinv(X)`` (the OLS
    pass of the weights); the rest scratch (see :func:`cwls_block`): ``vm[0]`` and ``vm[1]``
    hold ``log y`` and ``sqrt(w)`` on return."""
    m = y.shape[0]
    p = X.shape[1]
    K = G.shape[0]
    ly, sw, t = vm[0], vm[1], vm[2]
    qt, cu, r = vp[0], vp[1], vp[2]
    R, Rinv = RR[0], RR[1]
    minpos = np.inf
    for k in range(m):
        val = y[k]
        if val > 0.0 and val < minpos:
            minpos = val
    if minpos == np.inf:
        minpos = 1.0
    for k in range(m):
        val = y[k]
        ly[k] = np.log(val if val > 0.0 else minpos)
    for a in range(p):
        s = 0.0
        for k in range(m):
            s += pinv[a, k] * ly[k]
        cu[a] = s
    for k in range(m):
        s = 0.0
        for a in range(p):
            s += X[k, a] * cu[a]
        sw[k] = np.exp(min(max(s, -350.0), 350.0))
        t[k] = sw[k] * ly[k]
    for a in range(p):
        for k in range(m):
            Mt[a, k] = sw[k] * X[k, a]
    if not _mgs(Mt, t, R, qt):
        return False
    # R⁻¹ (upper triangular), column by column
    for col in range(p):
        for a in range(p - 1, -1, -1):
            if a > col:
                Rinv[a, col] = 0.0
                continue
            s = 1.0 if a == col else 0.0
            for b in range(a + 1, col + 1):
                s -= R[a, b] * Rinv[b, col]
            Rinv[a, col] = s / R[a, a]
    for a in range(p):
        s = 0.0
        for b in range(a, p):
            s += Rinv[a, b] * qt[b]
        cu[a] = s  # the unconstrained solution
    for j in range(K):
        s = 0.0
        for b in range(p):
            s += G[j, b] * cu[b]
        fK[j] = -s
    nP = ldp_nnls(G, Rinv, fK, Acol, uP, 50 * K)
    if nP < 0:
        return False
    # r = A u - e_last; z = -r[:p] / r[p]; c = R⁻¹ (z + Qᵀt)
    for k in range(p + 1):
        s = -1.0 if k == p else 0.0
        for q in range(nP):
            s += uP[q] * Acol[q, k]
        r[k] = s
    if not abs(r[p]) > 1e-12:
        return False  # infeasible (cannot happen: c = 0 satisfies every constraint)
    for a in range(p):
        s = 0.0
        for b in range(a, p):
            s += Rinv[a, b] * (-r[b] / r[p] + qt[b])
        c[a] = s
    return True


@nb.njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy")
def cwls_block(Y, X, pinv, G, coef, status, rss):
    """The constrained step of :meth:`.dki_tensor.DKITensor.fit_block` on a block: every
    voxel of status 0 (CONVERGED) whose WLS coefficients ``coef (n, p)`` break a constraint
    (``G c < -1e-12 max|c|``) is refitted by :func:`_cwls_voxel`; where solved, ``coef`` is
    replaced, ``status`` set to 2 (AT_BOUND) and ``rss`` to the weighted log-domain RSS at
    the constrained estimate (weights of the OLS pass). ``Y (n, m)`` float32 or float64."""
    n, m = Y.shape
    p = X.shape[1]
    K = G.shape[0]
    vm = np.empty((3, m))  # log y, sqrt(weights), weighted log y
    vp = np.empty((3, p + 1))  # Qᵀt, unconstrained solution, residual of the LDP
    RR = np.zeros((2, p, p))  # R, R⁻¹
    Mt = np.empty((p, m))
    Acol = np.empty((p + 1, p + 1))
    uP = np.empty(p + 1)
    fK = np.empty(K)
    yv = np.empty(m)
    c = np.empty(p)
    for i in range(n):
        if status[i] != 0:
            continue
        cmax = 0.0
        for a in range(p):
            cmax = max(cmax, abs(coef[i, a]))
        viol = False
        for j in range(K):
            s = 0.0
            for a in range(p):
                s += G[j, a] * coef[i, a]
            if s < -1e-12 * cmax:
                viol = True
                break
        if not viol:
            continue
        for k in range(m):
            yv[k] = np.float64(Y[i, k])
        if not _cwls_voxel(yv, X, pinv, G, c, vm, vp, RR, Mt, Acol, uP, fK):
            continue
        r2 = 0.0
        for k in range(m):
            t = vm[0, k]
            for a in range(p):
                t -= X[k, a] * c[a]
            r2 += vm[1, k] * vm[1, k] * t * t
        for a in range(p):
            coef[i, a] = c[a]
        rss[i] = r2
        status[i] = 2
