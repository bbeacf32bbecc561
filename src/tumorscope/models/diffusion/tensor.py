"""What the tensor models (:class:`~.dti.DTI`, :class:`~.dki_tensor.DKITensor`) share: the
gradient table check, the design matrices, the weighted linear fit, the eigen-decomposition
and the scalar maps (FA, MD, AD, RD, principal direction, MK, AK, RK).

Conventions are DIPY's (``dipy.reconst.dti``, ``dipy.reconst.dki``), so that the numbers can
be compared one to one:

* tensor elements in lower-triangular order ``Dxx, Dxy, Dyy, Dxz, Dyz, Dzz`` (mm²/s);
* kurtosis tensor elements ``Wxxxx, Wyyyy, Wzzzz, Wxxxy, Wxxxz, Wxyyy, Wyyyz, Wxzzz, Wyzzz,
  Wxxyy, Wxxzz, Wyyzz, Wxxyz, Wxyyz, Wxyzz`` (dimensionless);
* ``log S = log S0 - b gᵀDg + b² MD² W(g) / 6`` (Jensen et al. 2005, doi:10.1002/mrm.20508),
  with ``W(g) = Σ W_ijkl g_i g_j g_k g_l`` and the directional kurtosis
  ``K(g) = MD² W(g) / (gᵀDg)²``.

The linear methods are DIPY's two-pass weighted least squares (Chung et al. 2006,
doi:10.1016/j.neuroimage.2006.02.052; Veraart et al. 2013, doi:10.1016/j.neuroimage.2013.05.028):
an ordinary least-squares fit of ``log S`` predicts the signal, whose squares weight the second
fit. Samples ``<= 0`` are replaced by the smallest positive sample of the voxel before the log
(DIPY uses the smallest positive value of the whole data set).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ...errors import ProtocolError
from ...fitting.status import FitStatus
from ...protocol import DiffusionProtocol

#: Tensor element names (DIPY's lower-triangular order).
D_NAMES = ("Dxx", "Dxy", "Dyy", "Dxz", "Dyz", "Dzz")
#: Kurtosis tensor element names (DIPY's order).
W_NAMES = (
    "Wxxxx", "Wyyyy", "Wzzzz", "Wxxxy", "Wxxxz", "Wxyyy", "Wyyyz", "Wxzzz", "Wyzzz",
    "Wxxyy", "Wxxzz", "Wyyzz", "Wxxyz", "Wxyyz", "Wxyzz",
)  # fmt: skip
#: Index triples (i, j, k, l) of each W element and its multiplicity in W(g).
_W_IDX = (
    (0, 0, 0, 0), (1, 1, 1, 1), (2, 2, 2, 2), (0, 0, 0, 1), (0, 0, 0, 2), (0, 1, 1, 1),
    (1, 1, 1, 2), (0, 2, 2, 2), (1, 2, 2, 2), (0, 0, 1, 1), (0, 0, 2, 2), (1, 1, 2, 2),
    (0, 0, 1, 2), (0, 1, 1, 2), (0, 1, 2, 2),
)  # fmt: skip
_W_MULT = np.array([1, 1, 1, 4, 4, 4, 4, 4, 4, 6, 6, 6, 12, 12, 12], dtype=float)


def gradient_table(
    acquisition: DiffusionProtocol | Any, bvecs: Any, *, min_directions: int, model: str
) -> tuple[np.ndarray, np.ndarray]:
    """b-values (s/mm²) and unit gradient directions ``(m, 3)`` of a tensor model.

    ``bvecs`` (if given) wins over the protocol's. Directions are normalised; those of
    ``b > 0`` volumes must be non-zero, and at least ``min_directions`` distinct (up to sign)
    non-coplanar directions with ``b > 0`` are needed.

    Raises
    ------
    ProtocolError
        No directions, a shape that does not match the b-values, a zero direction at
        ``b > 0``, or too few distinct directions (field ``bvecs``).
    """
    if isinstance(acquisition, DiffusionProtocol):
        b = acquisition.b.copy()
        vec = bvecs if bvecs is not None else acquisition.bvecs
        src = acquisition.source
    else:
        b = DiffusionProtocol(tuple(np.asarray(acquisition, dtype=float).ravel())).b.copy()
        vec, src = bvecs, None
    if vec is None:
        raise ProtocolError(
            f"{model} needs gradient directions (a .bvec file beside the series, or bvecs=)",
            file=src,
            field="bvecs",
        )
    g = np.asarray(vec, dtype=float)
    if g.ndim == 2 and g.shape[0] == 3 and g.shape[1] != 3:
        g = g.T
    if g.shape != (b.size, 3) or not np.all(np.isfinite(g)):
        raise ProtocolError(
            f"expected {b.size} finite gradient directions of 3 components, got shape {g.shape}",
            file=src,
            field="bvecs",
        )
    norm = np.linalg.norm(g, axis=1)
    dw = b > 0
    if np.any(norm[dw] < 1e-6):
        raise ProtocolError(
            f"zero gradient direction at b > 0 (volumes {np.flatnonzero(dw & (norm < 1e-6))})",
            file=src,
            field="bvecs",
        )
    g = np.where(norm[:, None] > 1e-6, g / np.maximum(norm, 1e-12)[:, None], 0.0)
    # distinct directions up to sign
    gd = g[dw] * np.where(g[dw] @ np.array([1.0, 1e-3, 1e-6]) < 0, -1.0, 1.0)[:, None]
    n_dir = np.unique(np.round(gd, 4), axis=0).shape[0]
    rank = np.linalg.matrix_rank(dti_design(b, g)) if dw.any() else 0
    if n_dir < min_directions or rank < 7:
        raise ProtocolError(
            f"{model} needs at least {min_directions} distinct non-coplanar gradient "
            f"directions at b > 0, got {n_dir}",
            file=src,
            field="bvecs",
        )
    return b, g


def dti_design(b: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``(m, 7)``: columns ``log S0, Dxx, Dxy, Dyy, Dxz, Dyz, Dzz`` of ``log S``."""
    x, y, z = g[:, 0], g[:, 1], g[:, 2]
    return np.c_[
        np.ones(b.size), -b * x * x, -2 * b * x * y, -b * y * y, -2 * b * x * z, -2 * b * y * z,
        -b * z * z,
    ]  # fmt: skip


def w_monomials(g: np.ndarray) -> np.ndarray:
    """``(m, 15)``: multiplicity × ``g_i g_j g_k g_l`` of each W element (``W(g)`` = row · W)."""
    cols = [g[:, i] * g[:, j] * g[:, k] * g[:, l] for i, j, k, l in _W_IDX]
    return np.stack(cols, axis=1) * _W_MULT


def dki_design(b: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``(m, 22)``: the DTI columns, then ``b² W-monomials / 6`` (coefficients ``MD² W``)."""
    return np.c_[dti_design(b, g), (b * b / 6.0)[:, None] * w_monomials(g)]


def log_signal(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``log`` of the samples, those ``<= 0`` replaced by the voxel's smallest positive sample;
    and whether the voxel is invalid (NaN/inf or negative anywhere, no positive sample)."""
    y = np.asarray(y, dtype=np.float64)
    finite = np.all(np.isfinite(y), axis=1)
    pos = y > 0
    bad = ~finite | np.any(np.nan_to_num(y) < 0, axis=1) | ~pos.any(axis=1)
    minpos = np.min(np.where(pos, y, np.inf), axis=1)
    minpos = np.where(np.isfinite(minpos), minpos, 1.0)
    yc = np.where(pos, y, minpos[:, None])
    yc = np.where(bad[:, None], 1.0, yc)
    return np.log(yc), bad


def wls_numpy(
    logy: np.ndarray, X: np.ndarray, *, weighted: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two-pass WLS (or OLS) of ``logy (n, m)`` on ``X (m, p)``: coefficients ``(n, p)``,
    their standard errors ``(n, p)``, the weighted log-domain RSS ``(n,)`` and an ``ok``
    flag (system solved)."""
    n, m = logy.shape
    p = X.shape[1]
    pinv = np.linalg.pinv(X)
    coef = logy @ pinv.T
    if weighted:
        w = np.exp(np.clip(coef @ X.T, -700, 700)) ** 2  # squared predicted signal
        XtWX = np.einsum("mi,nm,mj->nij", X, w, X)
        XtWy = np.einsum("mi,nm->ni", X, w * logy)
    else:
        w = np.ones((n, m))
        XtWX = np.broadcast_to(X.T @ X, (n, p, p)).copy()
        XtWy = logy @ X
    ok = np.all(np.isfinite(XtWX), axis=(1, 2)) & np.all(np.isfinite(XtWy), axis=1)
    XtWX[~ok] = np.eye(p)
    XtWy[~ok] = 0.0
    try:
        cov = np.linalg.inv(XtWX)
    except np.linalg.LinAlgError:  # pragma: no cover - one singular voxel in the batch
        cov = np.linalg.pinv(XtWX)
    coef = np.einsum("nij,nj->ni", cov, XtWy)
    r = logy - coef @ X.T
    rss = np.sum(w * r * r, axis=1)
    dof = max(m - p, 1)
    with np.errstate(invalid="ignore"):
        se = np.sqrt(np.maximum(np.diagonal(cov, axis1=1, axis2=2), 0.0) * (rss / dof)[:, None])
    if m <= p:
        se[:] = np.nan
    ok &= np.all(np.isfinite(coef), axis=1)
    return coef, se, rss, ok


def lower_to_matrix(d6: np.ndarray) -> np.ndarray:
    """``(n, 3, 3)`` symmetric tensors from ``(n, 6)`` lower-triangular elements."""
    d6 = np.asarray(d6, dtype=np.float64)
    xx, xy, yy, xz, yz, zz = (d6[:, i] for i in range(6))
    return np.stack(
        [np.stack([xx, xy, xz], -1), np.stack([xy, yy, yz], -1), np.stack([xz, yz, zz], -1)], -2
    )


def eigen(d6: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues ``(n, 3)`` in decreasing order and eigenvectors ``(n, 3, 3)`` (columns),
    NaN where the tensor is not finite (compiled Jacobi rotations with numba, else LAPACK)."""
    nbm = _kernels()
    if nbm is not None:
        n = d6.shape[0]
        ev = np.empty((n, 3))
        vecs = np.empty((n, 3, 3))
        d6c = np.ascontiguousarray(d6, dtype=np.float64)
        if n < SERIAL_BELOW:  # a parallel launch costs more than the work (and waits for
            nbm._eig3_rows(d6c, ev, vecs, 0, n)  # every thread on a busy machine)
        else:
            nbm.eig3_block(d6c, ev, vecs)
        return ev, vecs
    D = lower_to_matrix(d6)
    good = np.all(np.isfinite(D), axis=(1, 2))
    D[~good] = np.eye(3)
    evals, evecs = np.linalg.eigh(D)
    evals, evecs = evals[:, ::-1].copy(), evecs[:, :, ::-1].copy()
    evals[~good] = np.nan
    evecs[~good] = np.nan
    return evals, evecs


def scalar_maps(evals: np.ndarray, min_diffusivity: float) -> dict[str, np.ndarray]:
    """FA, MD, AD, RD from eigenvalues (clipped below at ``min_diffusivity``, as DIPY)."""
    ev = np.maximum(evals, min_diffusivity)
    ev = np.where(np.isnan(evals), np.nan, ev)
    md = ev.mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        num = (ev[:, 0] - ev[:, 1]) ** 2 + (ev[:, 1] - ev[:, 2]) ** 2 + (ev[:, 2] - ev[:, 0]) ** 2
        den = (ev * ev).sum(axis=1)
        fa = np.sqrt(0.5 * num / np.where(den > 0, den, np.nan))
    fa = np.where(den == 0, 0.0, fa)
    return {"FA": fa, "MD": md, "AD": ev[:, 0], "RD": 0.5 * (ev[:, 1] + ev[:, 2])}


def direction_maps(evecs: np.ndarray) -> dict[str, np.ndarray]:
    """Principal eigenvector components ``V1_x, V1_y, V1_z`` (sign: ``V1_z >= 0``)."""
    v = evecs[:, :, 0]
    sign = np.where(v[:, 2] < 0, -1.0, 1.0)
    v = v * sign[:, None]
    return {"V1_x": v[:, 0], "V1_y": v[:, 1], "V1_z": v[:, 2]}


def rgb_map(fa: np.ndarray, v1: np.ndarray) -> np.ndarray:
    """Direction-encoded colour ``|V1| · FA`` in ``[0, 1]`` (red x, green y, blue z), shape
    ``fa.shape + (3,)``; NaN maps give 0 (Pajevic & Pierpaoli 1999, doi:10.1002/(SICI)1522-2594(199909)42:3<526::AID-MRM15>3.0.CO;2-J)."""
    rgb = np.abs(np.asarray(v1, dtype=np.float64)) * np.clip(np.asarray(fa), 0, 1)[..., None]
    return np.clip(np.nan_to_num(rgb, nan=0.0), 0.0, 1.0)


def status_of(ok: np.ndarray, bad: np.ndarray, at_bound: np.ndarray) -> np.ndarray:
    """Status codes from the solve flag, the invalid-input flag and the bound flag."""
    st = np.where(at_bound, FitStatus.AT_BOUND, FitStatus.CONVERGED).astype(np.uint8)
    st[~ok] = FitStatus.FAILED
    st[bad] = FitStatus.INVALID_INPUT
    return st


#: Eigenvalues at or below this (mm²/s) make the kurtosis maps 0, as in DIPY (a tensor that is
#: not positive definite has no defined directional kurtosis).
MIN_KURTOSIS_EVAL = 2e-7
#: Quadrature of the kurtosis maps: Gauss-Legendre nodes in cos(angle to V1) on a hemisphere
#: (K(g) = K(-g)) × equally spaced azimuths; exponential convergence for smooth K(g).
N_POLAR, N_AZIMUTH = 24, 48


def _quadrature() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenframe directions ``(G, 3)`` and weights ``(G,)`` of the sphere mean, and the
    ``(N_AZIMUTH, 3)`` directions of the circle perpendicular to V1."""
    u, w = np.polynomial.legendre.leggauss(N_POLAR)
    u, w = 0.5 * (u + 1.0), 0.5 * w  # [0, 1], weights summing to 1
    phi = 2 * np.pi * np.arange(N_AZIMUTH) / N_AZIMUTH
    s = np.sqrt(1 - u * u)
    c = np.stack(
        [
            np.repeat(u, phi.size),
            np.outer(s, np.cos(phi)).ravel(),
            np.outer(s, np.sin(phi)).ravel(),
        ],
        axis=1,
    )
    wt = np.repeat(w, phi.size) / phi.size
    circle = np.stack([np.zeros(phi.size), np.cos(phi), np.sin(phi)], axis=1)
    return c, wt, circle


def kurtosis_maps(
    evals: np.ndarray,
    evecs: np.ndarray,
    w15: np.ndarray,
    *,
    min_kurtosis: float = -3.0 / 7.0,
    max_kurtosis: float = 10.0,
    chunk: int = 2048,
) -> dict[str, np.ndarray]:
    """Mean, axial and radial kurtosis (MK, AK, RK) of kurtosis tensors.

    ``MK`` is the mean of ``K(g) = MD² W(g) / (gᵀDg)²`` over the sphere, ``AK = K(V1)``,
    ``RK`` the mean over the circle perpendicular to V1: the definitions of Jensen & Helpern
    2010 (doi:10.1002/nbm.1518) whose closed forms Tabesh et al. 2011
    (doi:10.1002/mrm.22932) give and DIPY's ``analytical=True`` evaluates. Here they are
    integrated numerically (see :data:`N_POLAR`; error below 1e-4 even for near-zero
    eigenvalues, where ``K(g)`` is sharply peaked, see ``docs/diffusion.md``). Results are
    clipped to ``[min_kurtosis, max_kurtosis]`` (DIPY's defaults) and 0 where an eigenvalue
    is ``<= MIN_KURTOSIS_EVAL`` (as DIPY).
    """
    n = evals.shape[0]
    out = {k: np.zeros(n) for k in ("MK", "AK", "RK")}
    c, wt, circle = _quadrature()
    wm = np.asarray(w15, dtype=np.float64) * _W_MULT
    for s in range(0, n, chunk):
        sl = slice(s, min(s + chunk, n))
        ev, E, W = evals[sl], evecs[sl], wm[sl]
        good = np.all(ev > MIN_KURTOSIS_EVAL, axis=1) & np.all(np.isfinite(W), axis=1)
        ev = np.where(good[:, None], ev, 1e-3)
        E = np.where(good[:, None, None], E, np.eye(3))
        W = np.where(good[:, None], W, 0.0)
        md2 = ev.mean(axis=1) ** 2

        def kdir(cc: np.ndarray, ev=ev, E=E, W=W, md2=md2) -> np.ndarray:
            g = np.einsum("nij,gj->ngi", E, cc)  # lab-frame directions (n, G, 3)
            dg = (cc * cc) @ ev.T  # (G, n)
            mono = np.stack(
                [g[..., i] * g[..., j] * g[..., k] * g[..., m] for i, j, k, m in _W_IDX], -1
            )
            wg = np.einsum("ngk,nk->ng", mono, W)
            return md2[:, None] * wg / (dg.T * dg.T)

        mk = kdir(c) @ wt
        rk = kdir(circle).mean(axis=1)
        ak = kdir(np.array([[1.0, 0.0, 0.0]]))[:, 0]
        for key, val in (("MK", mk), ("AK", ak), ("RK", rk)):
            out[key][sl] = np.where(good, np.clip(val, min_kurtosis, max_kurtosis), 0.0)
    nan = ~np.all(np.isfinite(evals), axis=1)
    for key in out:
        out[key][nan] = np.nan
    return out


#: Blocks of fewer voxels than this use the serial compiled kernels of the maps (eigenvalues,
#: kurtosis maps) rather than the parallel ones.
SERIAL_BELOW = 4096


def _kernels() -> Any:
    try:
        from . import _tensor_numba
    except ImportError:  # pragma: no cover - numba is in the 'fast' extra
        return None
    return _tensor_numba


def tensor_wls(
    y: np.ndarray,
    X: np.ndarray,
    *,
    weighted: bool,
    backend: str,
    pinv: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two-pass WLS (or OLS) of a block on the design ``X``: coefficients, standard errors,
    weighted log-domain RSS and status (CONVERGED, INVALID_INPUT or FAILED; NaN outputs for
    the last two). The compiled kernel with ``backend="numba"`` (``pinv``: ``pinv(X)`` if
    the caller has it), else numpy (same numbers)."""
    n = y.shape[0]
    if backend == "numba":
        return _wls_compiled(y, X, weighted=weighted, pinv=pinv)
    logy, bad = log_signal(y)
    coef, se, rss, ok = wls_numpy(logy, X, weighted=weighted)
    status = status_of(ok, bad, np.zeros(n, dtype=bool))
    nan = status >= FitStatus.INVALID_INPUT
    coef[nan] = np.nan
    se[nan] = np.nan
    rss[nan] = np.nan
    return coef, se, rss, status


def _wls_compiled(
    y: np.ndarray, X: np.ndarray, *, weighted: bool, pinv: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`tensor_wls` by the fused compiled kernel (one pass over the block)."""
    n, m = y.shape
    p = X.shape[1]
    ia, ib = np.tril_indices(p)
    XX = np.ascontiguousarray(X[:, ia] * X[:, ib])
    coef = np.full((n, p), np.nan)
    dinv = np.full((n, p), np.nan)
    rss = np.full(n, np.nan)
    code = np.empty(n, dtype=np.uint8)
    yy = y if y.dtype in (np.float32, np.float64) else y.astype(np.float64)
    _kernels().tensor_wls_tiled(
        yy, np.ascontiguousarray(X), XX,
        np.ascontiguousarray(np.linalg.pinv(X) if pinv is None else pinv), weighted,
        coef, dinv, rss, code,
    )  # fmt: skip
    with np.errstate(invalid="ignore"):
        se = np.sqrt(dinv * (rss / (m - p))[:, None]) if m > p else dinv * np.nan
    status = np.where(
        code == 0,
        FitStatus.CONVERGED,
        np.where(code == 1, FitStatus.INVALID_INPUT, FitStatus.FAILED),
    ).astype(np.uint8)
    return coef, se, rss, status


@functools.cache
def _eigenframe_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tables of :func:`~._tensor_numba.kurtosis_maps_tab`: 15 fixed points (a seeded draw on
    the sphere, well conditioned), the rows of the inverse of their monomial matrix that give
    the 6 monomials even in every coordinate (``x⁴, y⁴, z⁴, x²y², x²z², y²z²``), and per map
    (MK, AK, RK) the quadrature nodes' even monomials and squared coordinates and their
    weights.

    The nodes are those of :func:`kurtosis_maps` folded by the symmetries of the azimuth grid
    (``φ → -φ``, ``φ → π - φ``; the eigenframe denominator ``(gᵀΛg)²`` is invariant): each
    quarter-circle node carries the weight of its orbit (4, or 2 on the axes), and the 9
    monomials odd in y or z (every odd quartic monomial is) cancel over an orbit. The same
    sums as the full grid, to rounding, for a quarter of the nodes and 6 of the 15 products.
    """
    c, wt, circle = _quadrature()
    pts = np.random.default_rng(131).normal(size=(15, 3))  # the best of seeds 0-199
    pts /= np.linalg.norm(pts, axis=1)[:, None]

    def mono(u: np.ndarray) -> np.ndarray:
        return np.stack([u[:, i] * u[:, j] * u[:, k] * u[:, m] for i, j, k, m in _W_IDX], 1)

    even = np.array([0, 1, 2, 9, 10, 11])  # xxxx, yyyy, zzzz, xxyy, xxzz, yyzz
    minv = np.linalg.inv(mono(pts))[even]
    q = N_AZIMUTH // 4
    assert N_AZIMUTH % 4 == 0
    fac = np.where((np.arange(q + 1) == 0) | (np.arange(q + 1) == q), 2.0, 4.0)
    c_q = c.reshape(N_POLAR, N_AZIMUTH, 3)[:, : q + 1].reshape(-1, 3)
    w_q = (wt.reshape(N_POLAR, N_AZIMUTH)[:, : q + 1] * fac).ravel()
    G = c_q.shape[0]
    tabs = np.zeros((3, G, 9))
    wts = np.zeros((3, G))
    for which, (nodes, w) in enumerate(
        (
            (c_q, w_q),
            (np.array([[1.0, 0.0, 0.0]]), np.ones(1)),
            (circle[: q + 1], fac / N_AZIMUTH),
        )
    ):
        tabs[which, : len(nodes), :6] = mono(nodes)[:, even]
        tabs[which, : len(nodes), 6:] = nodes * nodes
        wts[which, : len(nodes)] = w
    return pts, np.ascontiguousarray(minv), tabs, wts


def kurtosis_maps_fast(
    evals: np.ndarray, evecs: np.ndarray, w15: np.ndarray, *, backend: str
) -> dict[str, np.ndarray]:
    """:func:`kurtosis_maps` with the compiled kernel when ``backend="numba"``."""
    if backend != "numba":
        return kurtosis_maps(evals, evecs, w15)
    pts, minv, tabs, wts = _eigenframe_tables()
    out = np.empty((evals.shape[0], 3))
    nbm = _kernels()
    kern = nbm.kurtosis_maps_rows if evals.shape[0] < SERIAL_BELOW else nbm.kurtosis_maps_tab
    kern(
        np.ascontiguousarray(evals, dtype=np.float64),
        np.ascontiguousarray(evecs, dtype=np.float64),
        np.ascontiguousarray(np.asarray(w15, dtype=np.float64) * _W_MULT),
        pts,
        minv,
        tabs,
        wts,
        MIN_KURTOSIS_EVAL,
        -3.0 / 7.0,
        10.0,
        out,
    )
    return {"MK": out[:, 0], "AK": out[:, 1], "RK": out[:, 2]}


def positive_definite(d6: np.ndarray, min_diffusivity: float) -> np.ndarray:
    """Whether each tensor's smallest eigenvalue is ``> min_diffusivity`` (False if NaN):
    Sylvester's criterion on ``D - min_diffusivity I`` (its leading principal minors all
    positive), no eigen-decomposition."""
    d = np.asarray(d6, dtype=np.float64)
    xx, xy, yy, xz, yz, zz = (d[:, i] for i in range(6))
    xx, yy, zz = xx - min_diffusivity, yy - min_diffusivity, zz - min_diffusivity
    m2 = xx * yy - xy * xy
    m3 = xx * (yy * zz - yz * yz) - xy * (xy * zz - yz * xz) + xz * (xy * yz - yy * xz)
    with np.errstate(invalid="ignore"):
        return (xx > 0) & (m2 > 0) & (m3 > 0)


def tensor_signal(X: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Signal of parameter rows ``(S0, D(6)[, W(15)])`` for the design ``X`` (DTI or DKI):
    ``S0 exp(X_D · D + MD² X_W · W)``, ``MD = trace(D) / 3``."""
    p = np.asarray(params, dtype=np.float64)
    t = p[:, 1:7] @ X[:, 1:7].T
    if X.shape[1] > 7:
        md = (p[:, 1] + p[:, 3] + p[:, 6]) / 3.0
        t = t + (md * md)[:, None] * (p[:, 7:] @ X[:, 7:].T)
    return p[:, :1] * np.exp(t)


def tensor_jacobian(X: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Jacobian ``(n, m, p)`` of :func:`tensor_signal`."""
    p = np.asarray(params, dtype=np.float64)
    s = tensor_signal(X, p)
    J = np.empty((p.shape[0], X.shape[0], p.shape[1]))
    J[:, :, 0] = s / p[:, :1]
    J[:, :, 1:7] = s[:, :, None] * X[None, :, 1:7]
    if X.shape[1] > 7:
        md = (p[:, 1] + p[:, 3] + p[:, 6]) / 3.0
        tw = p[:, 7:] @ X[:, 7:].T
        for j in (0, 2, 5):
            J[:, :, 1 + j] += s * (2.0 * md / 3.0)[:, None] * tw
        J[:, :, 7:] = (s * (md * md)[:, None])[:, :, None] * X[None, :, 7:]
    return J


def kernel_consts(X: np.ndarray) -> np.ndarray:
    """``consts`` of the compiled :func:`~._tensor_numba.tensor_exp_kernel` for ``X``."""
    return np.r_[float(X.shape[0]), np.ascontiguousarray(X[:, 1:]).ravel()]
