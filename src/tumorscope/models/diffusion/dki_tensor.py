"""Tensor diffusion kurtosis imaging: ``log S = log S0 - b gᵀDg + b² MD² W(g) / 6`` (Jensen et
al. 2005, doi:10.1002/mrm.20508; Jensen & Helpern 2010, doi:10.1002/nbm.1518), weighted linear
with or without the constraints of Tabesh et al. 2011 (doi:10.1002/mrm.22932); FA, MD, AD,
RD and the kurtosis maps MK, AK, RK.

Which method when
-----------------
* ``"cwls"`` (default): the weighted linear fit, then, for the voxels whose estimate breaks
  a constraint, the constrained weighted least-squares problem of Tabesh et al. 2011 solved
  exactly (a least-distance quadratic programme, by non-negative least squares after
  Lawson & Hanson 1974, ch. 23: compiled with numba, :mod:`._cwls_numba`; else scipy's
  NNLS, the same optimum). The constraints, on :data:`N_CONSTRAINT_DIRECTIONS`
  directions ``g`` spread over the sphere: ``gᵀDg >= 0`` (diffusivity), ``K(g) >= 0``
  (kurtosis of a mixture of Gaussian compartments) and ``K(g) <= 3 / (b_max gᵀDg)`` (the
  signal decays monotonically up to ``b_max``); all three are linear in the fitted
  coefficients. Voxels where a constraint is active get status ``AT_BOUND``.
* ``"wls"``: DIPY's two-pass weighted linear least squares without constraints (agrees with
  ``dipy.reconst.dki.DiffusionKurtosisModel(fit_method="WLS")`` to rounding). Noisy voxels
  can have negative or implausibly large kurtosis (clipped in the MK/AK/RK maps only).

DIPY's own constrained fit (``fit_method="CWLS"``) imposes semidefinite-programming
constraints (Dela Haije et al. 2020) with cvxpy: a stricter but much slower formulation;
where no constraint is active the three fits are identical.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ...errors import ProtocolError
from ...fitting.engine import BlockFit
from ...fitting.status import FitStatus
from ..base import ParameterSpec, register_model
from ._common import S0_SPEC, BValues
from .dti import TENSOR_MAPS, TensorModel, _element, _example_table
from .tensor import (
    D_NAMES,
    W_NAMES,
    direction_maps,
    dki_design,
    dti_design,
    eigen,
    kernel_consts,
    kurtosis_maps_fast,
    log_signal,
    positive_definite,
    scalar_maps,
    tensor_jacobian,
    tensor_signal,
    tensor_wls,
    w_monomials,
)

__all__ = ["DKITensor"]

#: Directions (a Fibonacci half-sphere: K(g) = K(-g)) on which the constraints are imposed.
N_CONSTRAINT_DIRECTIONS = 100


def _half_sphere(n: int) -> np.ndarray:
    k = np.arange(n) + 0.5
    z = k / n
    phi = np.pi * (1 + 5**0.5) * k
    r = np.sqrt(1 - z * z)
    return np.c_[r * np.cos(phi), r * np.sin(phi), z]


def _kurtosis_element(name: str) -> ParameterSpec:
    return ParameterSpec(
        name, "1", typical=(-1.0, 1.0), description=f"kurtosis tensor element {name[1:]}"
    )


@register_model
class DKITensor(TensorModel):
    """Diffusion kurtosis tensor (21 parameters and S0).

    Parameters
    ----------
    bvalues : DiffusionProtocol or sequence of float
        b-values in s/mm² with gradient directions (protocol ``bvecs`` or ``bvecs=``): at least
        2 non-zero shells (e.g. 1000 and 2000) and 15 distinct directions.
    bvecs : array_like (m, 3) or (3, m), keyword-only, optional
    method : {"cwls", "wls"}, keyword-only, default "cwls"
        See :mod:`tumorscope.models.diffusion.dki_tensor` ("Which method when").
    backend : {"auto", "numba", "numpy"}, keyword-only

    Notes
    -----
    Maps: ``S0``; ``Dxx … Dzz`` (mm²/s) and the kurtosis tensor ``Wxxxx … Wxyzz``
    (dimensionless; DIPY's orders, ``W = coefficient / MD²`` with ``MD = trace(D) / 3``;
    DIPY takes MD from eigenvalues clipped at ``1e-6 / b_max``: the same where D is
    positive definite); derived ``FA``, ``MD``, ``AD``,
    ``RD``, principal direction ``V1_*``, and ``MK``, ``AK``, ``RK``
    (:func:`~.tensor.kurtosis_maps`: the exact integrals that Tabesh's closed forms give,
    clipped to ``[-3/7, 10]``; 0 where an eigenvalue is ``<= 2e-7`` mm²/s, as DIPY).
    """

    name: ClassVar[str] = "dki_tensor"
    parameters: ClassVar[tuple[ParameterSpec, ...]] = (
        S0_SPEC,
        *(_element(n) for n in D_NAMES),
        *(_kurtosis_element(n) for n in W_NAMES),
    )
    derived: ClassVar[tuple[ParameterSpec, ...]] = (
        *TENSOR_MAPS,
        ParameterSpec("MK", "1", description="mean kurtosis"),
        ParameterSpec("AK", "1", description="axial kurtosis (along V1)"),
        ParameterSpec("RK", "1", description="radial kurtosis (perpendicular to V1)"),
    )
    methods: ClassVar[tuple[str, ...]] = ("cwls", "wls")

    def __init__(
        self,
        bvalues: BValues,
        *,
        bvecs: Any = None,
        method: str = "cwls",
        backend: str = "auto",
    ) -> None:
        self._acquire_tensor(bvalues, bvecs, method, backend, min_directions=15, label="DKI")
        shells = np.unique(np.round(self.b[self.b > 0] / 100.0))
        if shells.size < 2 or np.linalg.matrix_rank(dki_design(self.b, self.g)) < 22:
            raise ProtocolError(
                "tensor DKI needs at least 2 non-zero b-value shells and 15 distinct "
                f"directions (a design of rank 22); got shells {sorted(set(self.b.tolist()))}",
                field="bvalues",
            )
        self.X = dki_design(self.b, self.g)
        self.min_diffusivity = 1e-6 / float(self.b.max())
        cg = _half_sphere(N_CONSTRAINT_DIRECTIONS)
        dg = -dti_design(np.ones(len(cg)), cg)[:, 1:]  # gᵀDg rows (no b)
        wg = w_monomials(cg)  # MD² W(g) rows
        z6 = np.zeros((len(cg), 6))
        z1 = np.zeros((len(cg), 1))
        bmax = float(self.b.max())
        # G c >= 0 on (log S0, D(6), MD²W(15))
        self._G = np.r_[
            np.c_[z1, dg, np.zeros((len(cg), 15))],
            np.c_[z1, z6, wg],
            np.c_[z1, 3.0 / bmax * dg, -wg],
        ]
        self._G /= np.linalg.norm(self._G, axis=1, keepdims=True)  # same set, better scaled
        self._Xc = np.ascontiguousarray(self.X)
        self._pinv = np.ascontiguousarray(np.linalg.pinv(self.X))

    @classmethod
    def example(cls) -> DKITensor:
        b, g = _example_table()
        return cls(np.r_[b, 2 * b[1:]], bvecs=np.r_[g, g[1:]])

    def sample_parameters(self, n: int, *, rng: np.random.Generator) -> np.ndarray:
        """Positive-definite tensors and an isotropic ``W = K/3 (δδ + …)`` (``W(g) = K``,
        ``K(g) = MD² K / (gᵀDg)²``), K in [0.3, 1.2] and below 0.6 × the monotonic-decay
        limit ``3 λ3 / (b_max MD²)`` (every constraint of ``"cwls"`` inactive), plus a little anisotropy."""
        from .dti import _random_tensors

        p = _random_tensors(n, rng)
        ev, _ = eigen(p[:, 1:7])
        md = ev.mean(axis=1)
        k = np.minimum(rng.uniform(0.3, 1.2, n), 0.6 * 3.0 * ev[:, 2] / (self.b.max() * md * md))
        w = np.zeros((n, 15))
        w[:, 0:3] = k[:, None]  # Wiiii = K
        w[:, 9:12] = k[:, None] / 3.0  # Wiijj = K/3
        # a little anisotropy (|W(g) - K| <= 0.25 K: the constraints stay inactive)
        w += rng.uniform(-0.003, 0.003, (n, 15)) * k[:, None]
        return np.c_[p, w]

    def signal(self, params: np.ndarray) -> np.ndarray:
        return tensor_signal(self.X, params)

    def jacobian(self, params: np.ndarray) -> np.ndarray:
        return tensor_jacobian(self.X, params)

    def initial_guess(self, y: np.ndarray) -> np.ndarray:
        return self.fit_block(y).params

    def kernel(self) -> Any:
        from .tensor import _kernels

        nbm = _kernels()
        return None if nbm is None else nbm.tensor_exp_kernel

    def consts(self) -> np.ndarray:
        return kernel_consts(self.X)

    def fit_block(self, y: np.ndarray) -> BlockFit:
        be = self._backend()
        coef, se, rss, status = tensor_wls(y, self.X, weighted=True, backend=be, pinv=self._pinv)
        good = status == FitStatus.CONVERGED
        if self.method == "cwls" and be == "numba":
            from . import _cwls_numba

            _cwls_numba.cwls_block(y, self._Xc, self._pinv, self._G, coef, status, rss)
        elif self.method == "cwls":
            with np.errstate(invalid="ignore"):
                viol = good & np.any(
                    coef @ self._G.T < -1e-12 * np.abs(coef).max(axis=1)[:, None], axis=1
                )
            for i in np.flatnonzero(viol):
                c = self._constrained(np.asarray(y[i], dtype=np.float64))
                if c is not None:
                    coef[i] = c
                    status[i] = FitStatus.AT_BOUND
            done = viol & (status == FitStatus.AT_BOUND)
            if done.any():  # weighted log-domain RSS at the constrained estimate
                logy, _ = log_signal(y[done])
                w = np.exp(2.0 * np.clip(logy @ self._pinv.T @ self.X.T, -350, 350))
                rss[done] = np.sum(w * (logy - coef[done] @ self.X.T) ** 2, axis=1)
        s0 = np.exp(coef[:, 0])
        md2 = ((coef[:, 1] + coef[:, 3] + coef[:, 6]) / 3.0) ** 2  # MD = trace / 3
        with np.errstate(invalid="ignore", divide="ignore"):
            w = np.where(md2[:, None] > 0, coef[:, 7:] / md2[:, None], 0.0)
            sw = np.where(md2[:, None] > 0, se[:, 7:] / md2[:, None], np.nan)
        w[np.isnan(md2)] = np.nan
        params = np.c_[s0, coef[:, 1:7], w]
        stderr = np.c_[s0 * se[:, 0], se[:, 1:7], sw]
        nonpd = (status == FitStatus.CONVERGED) & ~positive_definite(
            coef[:, 1:7], self.min_diffusivity
        )
        status[nonpd] = FitStatus.AT_BOUND
        return BlockFit(params, status, rss, stderr)

    def _constrained(self, y: np.ndarray) -> np.ndarray | None:
        """Constrained WLS of one voxel: ``min |sqrt(w) (X c - log y)|²`` s.t. ``G c >= 0`` as
        a least-distance programme solved by NNLS (Lawson & Hanson 1974, ch. 23)."""
        from scipy.optimize import nnls

        pos = y > 0
        ly = np.log(np.where(pos, y, y[pos].min() if pos.any() else 1.0))
        sw = np.exp(np.clip(ly @ self._pinv.T @ self.X.T, -350, 350))
        M = sw[:, None] * self.X
        t = sw * ly
        Q, R = np.linalg.qr(M)
        try:
            Rinv = np.linalg.inv(R)
        except np.linalg.LinAlgError:  # pragma: no cover - rank checked in __init__
            return None
        cu = Rinv @ (Q.T @ t)  # the unconstrained solution
        E = self._G @ Rinv  # constraints on z = R c - Qᵀt:  E z >= -G cu
        f = -(self._G @ cu)
        A = np.r_[E.T, f[None, :]]
        e = np.zeros(A.shape[0])
        e[-1] = 1.0
        u, _ = nnls(A, e, maxiter=50 * A.shape[1])
        r = A @ u - e
        if not abs(r[-1]) > 1e-12:
            return None  # infeasible (cannot happen: c = 0 satisfies every constraint)
        z = -r[:-1] / r[-1]
        return Rinv @ (z + Q.T @ t)

    def derive(self, maps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        shape = np.shape(maps["Dxx"])
        d6 = np.stack([np.asarray(maps[k], dtype=np.float64).ravel() for k in D_NAMES], axis=1)
        w15 = np.stack([np.asarray(maps[k], dtype=np.float64).ravel() for k in W_NAMES], axis=1)
        evals, evecs = eigen(d6)
        out = {**scalar_maps(evals, self.min_diffusivity), **direction_maps(evecs)}
        out.update(kurtosis_maps_fast(evals, evecs, w15, backend=self._backend()))
        return {k: np.asarray(v).reshape(shape) for k, v in out.items()}
