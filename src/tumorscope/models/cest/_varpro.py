"""The multi-pool Lorentzian by variable projection (compiled): :func:`lorentzian_varpro`.

The model of :mod:`.lorentzian`, ``Z = Z0 - Σ_c A_c L(Δ - B0 - δ_c; Γ_c)`` (water: ``δ = 0``),
is linear in the six parameters ``a = (Z0, A_water, A_mt, A_amide, A_amine, A_noe)`` once the
ten others ``θ = (B0, Γ_water, (Γ_c, δ_c) of each extra pool)`` are fixed: ``f = Φ(θ) a`` with
the columns ``Φ = [1, -L_water, -L_mt, …]``. The bounded 16-parameter least-squares problem

``min_{θ ∈ box, a ∈ box} ‖y - Φ(θ) a‖²``

is therefore the problem over ``θ`` alone of ``ρ(θ) = min_{a ∈ box} ‖y - Φ(θ) a‖²`` (Golub &
Pereyra 1973, doi:10.1137/0710036): the same minima, found by a Levenberg–Marquardt over the
ten nonlinear parameters, each trial ``θ`` getting its amplitudes from a 6-variable bounded
linear least-squares solve (:func:`_bvls`, an active-set method, Stark & Parker 1995,
warm-started from the last accepted amplitudes).

**Bounds of the amplitudes.** They are kept exactly as in the 16-parameter fit (``Z0`` in
[0.5, 1.5], the water amplitude in [0.02, 1.5], MT [0, 1], amide/amine [0, 0.2], NOE [0, 0.4]):
the linear solve is bounded, not clipped afterwards. An amplitude on its bound is a constant
of the step: its column leaves the projection (only the free columns are projected out), its
θ-derivatives still enter the Jacobian (scaled by the bound value; zero for a pool at
amplitude 0, whose width and offset then stay where they are until the pool comes back).

**Jacobian.** Kaufman's (1975, doi:10.1007/BF01932995) form of the Golub–Pereyra Jacobian:
``J = P⊥ ∂(Φ a)/∂θ``, ``P⊥`` the projector off the free columns of ``Φ`` (modified Gram–Schmidt
of at most six columns); the gradient ``Jᵀ r`` is exact (``r`` is orthogonal to the free
columns at the linear solution), the curvature drops a second-order term. The LM around it is
the one of :func:`._numba.lorentzian_lm` (frozen-bound steps on ``θ``, clipping into the box,
acceptance on the RSS, damping ×10 on a rejection and ÷5 after an accepted step, 300 trial
steps, ``ftol = xtol = 1e-6`` with the step test on all 16 parameters), and the standard
errors are those of the full 16-parameter Jacobian at the solution (as before).

**Newton steps.** The Kaufman matrix ``JᵀJ`` misses the residual term ``Σ r_k ∇²f_k``, which
dominates in the sloppy directions of this model (the residual is the noise, the curvature of
MT width/offset small), so Gauss–Newton converges there only linearly. Each step first tries
the exact Hessian of ``ρ/2`` (:func:`_reduced_normal`: the Schur complement of the free
amplitudes in the full Hessian, the second derivatives of each line analytic), damped by
``λ diag(JᵀJ)``; where that is not positive definite, the Kaufman matrix. Same minimum, the
acceptance test unchanged; 17 trial steps per voxel instead of 29 (Gauss–Newton) on the large
phantom's lesions.

**Start.** :data:`_LM_FIRST` trial steps of the 16-parameter LM (:func:`._numba._lm_voxel`)
come first and choose the basin as before; the variable projection then converges (see
:data:`_LM_FIRST` for why).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._numba import (
    _AT_BOUND,
    _CONVERGED,
    _FAILED,
    _LAM_DOWN,
    _LORENTZIAN,
    _MAX_ITER,
    _chol,
    _chol_back,
    _lm_voxel,
    _normal,
    _padded,
    _signal_jac,
)

__all__ = ["lorentzian_varpro"]

_FM = {"reassoc", "contract", "arcp", "nsz"}
#: Initial damping (relative to the diagonal of the Gauss–Newton matrix). The 16-parameter LM
#: starts at 1e-3; here, with the amplitudes at their optimum for every trial, the first
#: undamped steps move the widths far (an MT line at its 10 ppm bound) and into other local
#: minima: starting at 1 (gradient-like first steps) keeps the noise-free amide amplitude of a
#: tissue the same under B0 shifts of ±0.5 ppm (spread 2e-4, as the 16-parameter LM; 4e-3
#: from 1e-3), reaches lower minima than the 16-parameter LM as often as not, and needs
#: fewer trial steps (docs/cest.md, "Lorentzian by variable projection").
_LAM0 = 1.0
#: Trial steps of the 16-parameter LM (:func:`._numba._lm_voxel`) before the variable
#: projection takes over. Its first steps, damped in all 16 parameters, choose the local
#: minimum (the sloppy MT width/offset against Z0) as the 16-parameter fit did; the
#: variable projection then converges in a few Newton steps. Without them the variable
#: projection reaches other minima in ~30 % of the lesion voxels of the large phantom, the
#: MT line more often at its 10 ppm bound, and a lower rank correlation of the amide amplitude
#: with the amide-fraction truth (0.490 against 0.498); with 12: 0.496 (the 16-parameter LM
#: run to its own convergence and then polished by the variable projection: 0.497), the old
#: fit's RSS lower by > 1 % in 1.8 % of voxels, ours lower in 10.9 % (docs/cest.md).
_LM_FIRST = 12


@nb.njit(cache=True, inline="always")
def _lin_index(n_extra, c):
    """Index in the 16-parameter layout of linear parameter ``c`` (0 = Z0, 1 = water, …)."""
    if c == 0:
        return 0
    if c == 1:
        return 2
    return 4 + 3 * (c - 2)


@nb.njit(cache=True, inline="always")
def _nl_index(n_extra, j):
    """Index in the 16-parameter layout of nonlinear parameter ``j`` (0 = B0, 1 = Γ_water,
    then ``(Γ_c, δ_c)`` of each extra pool)."""
    if j == 0:
        return 1
    if j == 1:
        return 3
    c = (j - 2) // 2
    return 5 + 3 * c + (j - 2) % 2


@nb.njit(cache=True, fastmath=_FM, inline="always")
def _pool(p, c):
    """Pool ``c``'s amplitude, width, centre (ppm) and the row of its width in the
    nonlinear Jacobian (0: water, at ``B0``; then each extra pool at ``B0`` + its offset)."""
    b0 = p[1]
    if c == 0:
        return p[2], p[3], b0, 1
    ja = 4 + 3 * (c - 1)
    return p[ja], p[ja + 1], b0 + p[ja + 2], 2 + 2 * (c - 1)


@nb.njit(cache=True, fastmath=_FM, inline="always")
def _columns(p, off, n_extra, Phi):
    """``Φ (na, m)`` at the nonlinear parameters held in ``p``."""
    m = off.shape[0]
    for k in range(m):
        Phi[0, k] = 1.0
    for c in range(n_extra + 1):
        _, g, d, _ = _pool(p, c)
        q = 0.25 * g * g
        for k in range(m):
            x = off[k] - d
            Phi[1 + c, k] = -q / (q + x * x)


@nb.njit(cache=True, fastmath=_FM, inline="always")
def _gram(Phi, y, na, m, G, b):
    """``G = Φ Φᵀ``, ``b = Φ y`` (``Φ`` zero-padded to a multiple of 8 columns)."""
    mp = Phi.shape[1]
    for r in range(na):
        s = 0.0
        for k in range(m):
            s += Phi[r, k] * y[k]
        b[r] = s
        for c in range(r + 1):
            t = 0.0
            for k in range(mp):
                t += Phi[r, k] * Phi[c, k]
            G[r, c] = t
            G[c, r] = t


@nb.njit(cache=True, inline="always")
def _solve_free(G, b, a, state, na, A, L, rhs, z, idx, sol):
    """``z`` on the free variables (``state == 0``) minimising with the others fixed at
    ``a``; ``False`` if their normal matrix is singular (``idx``, ``sol``: work arrays)."""
    nf = 0
    for i in range(na):
        if state[i] == 0:
            idx[nf] = i
            nf += 1
    for r in range(nf):
        i = idx[r]
        s = b[i]
        for j in range(na):
            if state[j] != 0:
                s -= G[i, j] * a[j]
        rhs[r] = s
        for c in range(nf):
            A[r, c] = G[i, idx[c]]
    if not _chol(A, L, nf):
        return False
    _chol_back(L, rhs, sol, nf)
    for i in range(na):
        z[i] = a[i]
    for r in range(nf):
        z[idx[r]] = sol[r]
    return True


@nb.njit(cache=True)
def _bvls(G, b, lo, hi, a, state, na, A, L, rhs, z, idx, sol):
    """Bounded least squares ``min ‖y - Φᵀa‖²``, ``lo <= a <= hi``, from the normal
    equations ``G a = b`` (active set, Stark & Parker 1995), warm-started at ``a`` (clipped);
    ``state``: 0 free, -1 on the lower, +1 on the upper bound. ``False`` if it failed."""
    for i in range(na):
        if a[i] <= lo[i]:
            a[i] = lo[i]
            state[i] = -1
        elif a[i] >= hi[i]:
            a[i] = hi[i]
            state[i] = 1
        else:
            state[i] = 0
    for _outer in range(4 * na + 4):
        # move the free variables towards their unconstrained optimum, stopping at bounds
        for _inner in range(na + 1):
            nf = 0
            for i in range(na):
                if state[i] == 0:
                    nf += 1
            if nf == 0:
                break
            if not _solve_free(G, b, a, state, na, A, L, rhs, z, idx, sol):
                return False
            alpha = 1.0
            hit = -1
            for i in range(na):
                if state[i] != 0:
                    continue
                if z[i] < lo[i]:
                    t = (lo[i] - a[i]) / (z[i] - a[i]) if z[i] != a[i] else 0.0
                    if t < alpha:
                        alpha = t
                        hit = i
                elif z[i] > hi[i]:
                    t = (hi[i] - a[i]) / (z[i] - a[i]) if z[i] != a[i] else 0.0
                    if t < alpha:
                        alpha = t
                        hit = i
            if hit < 0:
                for i in range(na):
                    if state[i] == 0:
                        a[i] = z[i]
                break
            for i in range(na):
                if state[i] == 0:
                    a[i] += alpha * (z[i] - a[i])
                    if a[i] <= lo[i] or (i == hit and z[i] < lo[i]):
                        a[i] = lo[i]
                        state[i] = -1
                    elif a[i] >= hi[i] or (i == hit and z[i] > hi[i]):
                        a[i] = hi[i]
                        state[i] = 1
        # release the bound variable whose gradient points most into the box
        best = 0.0
        rel = -1
        for i in range(na):
            if state[i] == 0:
                continue
            w = b[i]
            for j in range(na):
                w -= G[i, j] * a[j]  # w = -gradient of ½‖y - Φᵀa‖²
            v = w if state[i] < 0 else -w
            if v > best * (1.0 + 1e-12) and v > 1e-14 * (abs(b[i]) + 1e-300):
                best = v
                rel = i
        if rel < 0:
            return True
        state[rel] = 0
    return True


@nb.njit(cache=True, fastmath=_FM, inline="always")
def _residual(Phi, a, y, na, m, r):
    rss = 0.0
    for k in range(m):
        s = y[k]
        for c in range(na):
            s -= Phi[c, k] * a[c]
        r[k] = s
        rss += s * s
    return rss


@nb.njit(cache=True, fastmath=_FM, inline="always")
def _nl_jacobian(p, off, n_extra, Jn):
    """``∂f/∂θ (nn, m)`` at ``p`` (amplitudes included)."""
    m = off.shape[0]
    for k in range(m):
        Jn[0, k] = 0.0
    for c in range(n_extra + 1):
        a, g, d, jg = _pool(p, c)
        q = 0.25 * g * g
        hg = 0.5 * a * g
        tq = 2.0 * a * q
        for k in range(m):
            x = off[k] - d
            rr = 1.0 / (q + x * x)
            rr *= rr
            Jn[jg, k] = -hg * x * x * rr
            dx = -tq * x * rr
            Jn[0, k] += dx
            if c > 0:
                Jn[jg + 1, k] = dx


@nb.njit(cache=True, fastmath=_FM, inline="always")
def _second_order(p, off, n_extra, r, m, S, T):
    """The residual-weighted second derivatives: ``S[c, i] = Σ_k r_k ∂Φ_ck/∂θ_i`` and
    ``T[i, j] = Σ_k r_k ∂²f_k/∂θ_i∂θ_j`` (``f = Φᵀa``); each pool's line depends on ``B0``, its
    width and its offset only, so both are sparse (five sums over the offsets per pool)."""
    na = S.shape[0]
    nn = T.shape[0]
    for c in range(na):
        for i in range(nn):
            S[c, i] = 0.0
    for i in range(nn):
        for j in range(nn):
            T[i, j] = 0.0
    for c in range(n_extra + 1):
        a, g, d, jg = _pool(p, c)
        q = 0.25 * g * g
        s_g = s_x = s_gg = s_gx = s_xx = 0.0
        for k in range(m):
            x = off[k] - d
            x2 = x * x
            iD = 1.0 / (q + x2)
            iD2 = iD * iD
            iD3 = iD2 * iD
            rk = r[k]
            s_g += rk * x2 * iD2  # × Γ/2: ∂L/∂Γ
            s_x += rk * x * iD2  # × -2q: ∂L/∂x
            s_gg += rk * x2 * (x2 - 3.0 * q) * iD3  # × 1/2: ∂²L/∂Γ²
            s_gx += rk * x * (q - x2) * iD3  # × Γ: ∂²L/∂Γ∂x
            s_xx += rk * (3.0 * x2 - q) * iD3  # × 2q: ∂²L/∂x²
        s_g *= 0.5 * g
        s_x *= -2.0 * q
        s_gg *= 0.5
        s_gx *= g
        s_xx *= 2.0 * q
        # Φ_c = -L(x; Γ), x = Δ - B0 - δ: ∂Φ/∂Γ = -L_Γ, ∂Φ/∂δ = ∂Φ/∂B0 = L_x,
        # ∂²Φ/∂Γ² = -L_ΓΓ, ∂²Φ/∂Γ∂δ = L_Γx, ∂²Φ/∂δ² = -L_xx (the same with B0)
        S[1 + c, jg] = -s_g
        S[1 + c, 0] = s_x
        T[jg, jg] -= a * s_gg
        T[jg, 0] += a * s_gx
        T[0, 0] -= a * s_xx
        if c > 0:
            S[1 + c, jg + 1] = s_x
            T[jg, jg + 1] += a * s_gx
            T[jg + 1, jg + 1] -= a * s_xx
            T[jg + 1, 0] -= a * s_xx
    for i in range(nn):
        for j in range(i):
            t = T[i, j] + T[j, i]
            T[i, j] = t
            T[j, i] = t


@nb.njit(cache=True, fastmath=_FM, inline="always")
def _reduced_normal(Phi, G, state, na, Jn, nn, r, m, H, HN, g, A6, L6, C, CN, idx, S, T, p, off):
    """The step's matrices of the reduced problem in ``θ``, with ``Φ_F`` the free columns of
    ``Φ`` (``G_F`` their Gram matrix, factorised here) and ``r`` orthogonal to them (the
    linear solution):

    * ``g = Jn r``: minus the gradient of ``ρ/2`` (``Jn = ∂f/∂θ``; ``P⊥ Jn r = Jn r``);
    * ``H = (P⊥ Jn)(P⊥ Jn)ᵀ = Jn Jnᵀ - Cᵀ G_F⁻¹ C``, ``C = Φ_F Jnᵀ`` (Gauss–Newton, Kaufman);
    * ``HN``, the exact Hessian of ``ρ/2``: the Schur complement of the free amplitudes in the
      full Hessian ``[[G, C - S], [(C - S)ᵀ, Jn Jnᵀ - T]]`` (``S``, ``T``:
      :func:`_second_order`), i.e. ``Jn Jnᵀ - T - (C - S)ᵀ G_F⁻¹ (C - S)``.

    ``False`` if ``G_F`` is singular."""
    mp = Jn.shape[1]
    nf = 0
    for c in range(na):
        if state[c] == 0:
            idx[nf] = c
            nf += 1
    for a in range(nf):
        for b in range(nf):
            A6[a, b] = G[idx[a], idx[b]]
    if nf > 0 and not _chol(A6, L6, nf):
        return False
    _second_order(p, off, (nn - 2) // 2, r, m, S, T)
    for i in range(nn):
        s = 0.0
        for k in range(m):
            s += Jn[i, k] * r[k]
        g[i] = s
        for j in range(i + 1):
            t = 0.0
            for k in range(mp):
                t += Jn[i, k] * Jn[j, k]
            H[i, j] = t
        for a in range(nf):
            t = 0.0
            ca = idx[a]
            for k in range(mp):
                t += Phi[ca, k] * Jn[i, k]
            C[a, i] = t
            CN[a, i] = t - S[ca, i]
    # W = L⁻¹ C (forward substitution; the diagonal of L6 holds 1 / L_jj), H -= Wᵀ W
    for i in range(nn):
        for a in range(nf):
            t = C[a, i]
            u = CN[a, i]
            for b in range(a):
                t -= L6[a, b] * C[b, i]
                u -= L6[a, b] * CN[b, i]
            C[a, i] = t * L6[a, a]
            CN[a, i] = u * L6[a, a]
    for i in range(nn):
        for j in range(i + 1):
            t = H[i, j]
            u = H[i, j] - T[i, j]
            for a in range(nf):
                t -= C[a, i] * C[a, j]
                u -= CN[a, i] * CN[a, j]
            H[i, j] = t
            H[j, i] = t
            HN[i, j] = u
            HN[j, i] = u
    return True


@nb.njit(cache=True, nogil=True, fastmath=_FM)
def _vp_voxel(off, n_extra, y, p, lo, hi, scale, max_iter, ftol, xtol, out_st, out_rss, se, v):
    """The bounded variable-projection LM of one voxel (``p``: in the 16-parameter layout;
    in: start, out: solution); returns the number of trial steps."""
    m = y.shape[0]
    P = p.shape[0]
    na = n_extra + 2
    nn = 2 + 2 * n_extra
    mp = _padded(m)
    Phi = np.zeros((na, mp))
    C = np.empty((na, nn))
    CN = np.empty((na, nn))
    S = np.empty((na, nn))
    T = np.empty((nn, nn))
    HN = np.empty((nn, nn))
    Jn = np.zeros((nn, mp))
    r = np.zeros(mp)
    G = np.empty((na, na))
    bv = np.empty(na)
    A6 = np.empty((na, na))
    L6 = np.zeros((na, na))
    rhs = np.empty(na)
    z = np.empty(na)
    idx6 = np.empty(na, dtype=np.int64)
    sol6 = np.empty(na)
    a = np.empty(na)
    at = np.empty(na)
    lo_a = np.empty(na)
    hi_a = np.empty(na)
    state = np.zeros(na, dtype=np.int64)
    state_t = np.zeros(na, dtype=np.int64)
    lo_n = np.empty(nn)
    hi_n = np.empty(nn)
    th = np.empty(nn)
    tht = np.empty(nn)
    H = np.empty((nn, nn))
    A = np.empty((nn, nn))
    L = np.zeros((nn, nn))
    g = np.empty(nn)
    rhs_n = np.empty(nn)
    delta = np.empty(nn)
    frozen = np.zeros(nn, dtype=np.bool_)
    pt = np.empty(P)
    for c in range(na):
        i = _lin_index(n_extra, c)
        a[c] = p[i]
        lo_a[c] = lo[i]
        hi_a[c] = hi[i]
    for j in range(nn):
        i = _nl_index(n_extra, j)
        th[j] = p[i]
        lo_n[j] = lo[i]
        hi_n[j] = hi[i]
    _columns(p, off, n_extra, Phi)
    _gram(Phi, y, na, m, G, bv)
    rss = np.inf
    if _bvls(G, bv, lo_a, hi_a, a, state, na, A6, L6, rhs, z, idx6, sol6):
        rss = _residual(Phi, a, y, na, m, r)
    for c in range(na):
        p[_lin_index(n_extra, c)] = a[c]
    status = _MAX_ITER
    lam = _LAM0
    it = 0
    if not np.isfinite(rss):
        status = _FAILED
    elif rss == 0.0:
        status = _CONVERGED
    else:
        build = True
        while it < max_iter:
            if build:
                _nl_jacobian(p, off, n_extra, Jn)
                if not _reduced_normal(
                    Phi, G, state, na, Jn, nn, r, m, H, HN, g, A6, L6, C, CN, idx6, S, T, p, off
                ):
                    break  # the free columns became dependent: MAX_ITER at the last solution
                for i in range(nn):
                    frozen[i] = (
                        (th[i] <= lo_n[i] and g[i] < 0.0)
                        or (th[i] >= hi_n[i] and g[i] > 0.0)
                        or not (H[i, i] > 0.0)
                    )
                build = False
            it += 1
            ok = False
            for use_newton in (True, False):
                M = HN if use_newton else H
                for i in range(nn):
                    for j in range(nn):
                        A[i, j] = 0.0 if (frozen[i] or frozen[j]) else M[i, j]
                    if frozen[i]:
                        A[i, i] = 1.0
                        rhs_n[i] = 0.0
                    else:
                        A[i, i] += lam * H[i, i]
                        rhs_n[i] = g[i]
                ok = _chol(A, L, nn)
                if ok:
                    break
            rss_t = np.inf
            if ok:
                _chol_back(L, rhs_n, delta, nn)
                for i in range(P):
                    pt[i] = p[i]
                for j in range(nn):
                    w = th[j] + delta[j]
                    if w < lo_n[j]:
                        w = lo_n[j]
                    elif w > hi_n[j]:
                        w = hi_n[j]
                    tht[j] = w
                    pt[_nl_index(n_extra, j)] = w
                _columns(pt, off, n_extra, Phi)
                _gram(Phi, y, na, m, G, bv)
                for c in range(na):
                    at[c] = a[c]
                if _bvls(G, bv, lo_a, hi_a, at, state_t, na, A6, L6, rhs, z, idx6, sol6):
                    rss_t = 0.0
                    for k in range(m):
                        s = y[k]
                        for c in range(na):
                            s -= Phi[c, k] * at[c]
                        rss_t += s * s
            if ok and np.isfinite(rss_t) and rss_t < rss:
                small_step = True
                for j in range(nn):
                    if abs(tht[j] - th[j]) > xtol * (abs(th[j]) + scale[_nl_index(n_extra, j)]):
                        small_step = False
                for c in range(na):
                    if abs(at[c] - a[c]) > xtol * (abs(a[c]) + scale[_lin_index(n_extra, c)]):
                        small_step = False
                small_gain = (rss - rss_t) <= ftol * rss
                for j in range(nn):
                    th[j] = tht[j]
                for c in range(na):
                    a[c] = at[c]
                    state[c] = state_t[c]
                    pt[_lin_index(n_extra, c)] = at[c]
                for i in range(P):
                    p[i] = pt[i]
                rss = _residual(Phi, a, y, na, m, r)
                lam = max(lam / _LAM_DOWN, 1e-12)
                build = True
                if small_step or small_gain or rss == 0.0:
                    status = _CONVERGED
                    break
            else:
                lam *= 10.0
                if lam > 1e10:
                    status = _CONVERGED
                    break
    # standard errors from the full 16-parameter Jacobian at the solution (as the LM's)
    f = np.empty(m)
    J = np.zeros((P, mp))
    Hf = np.empty((P, P))
    Lf = np.zeros((P, P))
    gf = np.empty(P)
    df = np.empty(P)
    for i in range(P):
        se[i] = np.nan
    if m > P and np.isfinite(rss):
        _signal_jac(p, off, n_extra, f, J)
        _normal(J, y, f, Hf, gf, P, m)
        if _chol(Hf, Lf, P):
            s2 = rss / (m - P)
            for j in range(P):
                for i in range(P):
                    gf[i] = 1.0 if i == j else 0.0
                _chol_back(Lf, gf, df, P)
                w = df[j] * s2
                se[j] = np.sqrt(w) if w >= 0.0 else np.nan
    finite = np.isfinite(rss)
    for i in range(P):
        if not np.isfinite(p[i]):
            finite = False
    if not finite:
        status = _FAILED
    elif status == _CONVERGED:
        for i in range(P):
            if abs(p[i] - lo[i]) <= 1e-12 * scale[i] or abs(hi[i] - p[i]) <= 1e-12 * scale[i]:
                status = _AT_BOUND
    out_st[v] = status
    out_rss[v] = rss
    return it


@nb.njit(cache=True, parallel=True)
def lorentzian_varpro(off, n_extra, y, p, lo, hi, scale, max_iter, ftol, xtol, st, rss, se, nit):
    """The bounded fit of every row of ``y`` (``p`` in: start, out: solution, in the layout
    of :func:`._numba.lorentzian_lm`, whose arguments and outputs it shares), voxels in
    parallel: :data:`_LM_FIRST` trial steps of the 16-parameter LM, then the variable
    projection to convergence (``max_iter`` trial steps in all)."""
    first = min(_LM_FIRST, max_iter)
    for v in nb.prange(y.shape[0]):
        n = 0
        if first > 0:
            n = _lm_voxel(
                _LORENTZIAN, _LAM_DOWN, off, n_extra, y[v], p[v], lo, hi, scale,
                first, ftol, xtol, st, rss, se[v], np.int64(v), False,
            )  # fmt: skip
        nit[v] = n + _vp_voxel(
            off, n_extra, y[v], p[v], lo, hi, scale, max_iter - n, ftol, xtol, st, rss, se[v],
            np.int64(v),
        )  # fmt: skip
