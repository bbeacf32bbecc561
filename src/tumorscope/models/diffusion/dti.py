"""Diffusion tensor imaging: ``S = S0 exp(-b gᵀDg)`` (Basser et al. 1994,
doi:10.1016/S0006-3495(94)80775-1), weighted linear and nonlinear with a positive-definite
(Cholesky) parameterisation; FA, MD, AD, RD and the principal direction.

Which method when
-----------------
* ``"wls"`` (default): DIPY's two-pass weighted linear least squares on ``log S`` (weights: the
  squared signal predicted by an OLS pass; Chung et al. 2006,
  doi:10.1016/j.neuroimage.2006.02.052). Fast, unbiased at the SNR of clinical DWI; agrees
  with ``dipy.reconst.dti.TensorModel(fit_method="WLS")`` to rounding.
* ``"ols"``: ordinary linear least squares on ``log S`` (biased at low SNR; for comparison).
* ``"nlls"``: least squares on the signal itself, ``D = L Lᵀ`` with ``L`` lower triangular
  (Koay et al. 2006, doi:10.1016/j.jmr.2006.06.020): the tensor is positive semi-definite by
  construction. Started from the WLS estimate. Use it at low SNR or where WLS gives negative
  eigenvalues (status ``AT_BOUND`` there).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Literal

import numpy as np

from ...fitting.engine import BlockFit, FlatFit
from ...fitting.status import FitStatus
from ...fitting.uncertainty import stderr_from_jacobian
from ..base import FitInput, FitResult, ParameterSpec, register_model
from ._common import D_MAX, S0_SPEC, BValues, DiffusionModel, fast_layout
from .tensor import (
    D_NAMES,
    direction_maps,
    dti_design,
    eigen,
    gradient_table,
    kernel_consts,
    positive_definite,
    scalar_maps,
    tensor_jacobian,
    tensor_signal,
    tensor_wls,
)
from .tensor import (
    _kernels as _tensor_kernels,
)

__all__ = ["DTI"]


def _element(name: str) -> ParameterSpec:
    diag = name[1] == name[2]
    return ParameterSpec(
        name,
        "mm2/s",
        -2 * D_MAX,
        2 * D_MAX,
        typical=(2e-4, 2e-3) if diag else (-5e-4, 5e-4),
        description=f"diffusion tensor element {name[1:]}",
    )


def _derived(name: str, unit: str, description: str) -> ParameterSpec:
    return ParameterSpec(name, unit, description=description)


#: Maps derived from the tensor.
TENSOR_MAPS: tuple[ParameterSpec, ...] = (
    _derived("FA", "1", "fractional anisotropy"),
    _derived("MD", "mm2/s", "mean diffusivity"),
    _derived("AD", "mm2/s", "axial diffusivity (largest eigenvalue)"),
    _derived("RD", "mm2/s", "radial diffusivity (mean of the two smaller eigenvalues)"),
    _derived("V1_x", "1", "principal direction, x component (V1_z >= 0)"),
    _derived("V1_y", "1", "principal direction, y component"),
    _derived("V1_z", "1", "principal direction, z component"),
)


def chol_to_lower(L: np.ndarray) -> np.ndarray:
    """``(n, 6)`` tensor elements ``Dxx, Dxy, Dyy, Dxz, Dyz, Dzz`` of ``L Lᵀ`` from the Cholesky
    elements ``(n, 6)`` in the order ``L11, L21, L22, L31, L32, L33``."""
    l11, l21, l22, l31, l32, l33 = (L[:, i] for i in range(6))
    return np.c_[
        l11 * l11,
        l21 * l11,
        l21 * l21 + l22 * l22,
        l31 * l11,
        l31 * l21 + l32 * l22,
        l31 * l31 + l32 * l32 + l33 * l33,
    ]


def lower_to_chol(d6: np.ndarray) -> np.ndarray:
    """Cholesky elements of the nearest positive-definite tensors (eigenvalues raised to
    ``1e-6 × max(MD, 1e-4)``), the start of the nonlinear fit."""
    evals, evecs = eigen(d6)
    floor = 1e-6 * np.maximum(np.nanmean(evals, axis=1), 1e-4)
    ev = np.maximum(np.nan_to_num(evals, nan=1e-3), floor[:, None])
    evecs = np.where(np.isfinite(evecs), evecs, np.eye(3))
    D = np.einsum("nij,nj,nkj->nik", evecs, ev, evecs)
    L = np.linalg.cholesky(D + 1e-15 * np.eye(3))
    return np.c_[L[:, 0, 0], L[:, 1, 0], L[:, 1, 1], L[:, 2, 0], L[:, 2, 1], L[:, 2, 2]]


class TensorModel(DiffusionModel):
    """What the tensor models (:class:`DTI`, :class:`~.dki_tensor.DKITensor`) share: the
    gradient table beside the b-values (recorded in the options), and compiled linear fits
    that read float32 data and validate the voxels themselves in one pass."""

    native_dtype: ClassVar[bool] = True
    handles_invalid: ClassVar[bool] = True
    g: np.ndarray

    def _acquire_tensor(
        self,
        bvalues: BValues,
        bvecs: Any,
        method: str,
        backend: str,
        *,
        min_directions: int,
        label: str,
    ) -> None:
        """``_acquire`` plus the checked, normalised gradient directions (``self.g``);
        ``label`` names the model in the errors."""
        self._acquire(bvalues, method, backend)
        self.b, self.g = gradient_table(bvalues, bvecs, min_directions=min_directions, model=label)

    def options(self) -> dict[str, Any]:
        return {**super().options(), "bvecs": self.g.tolist()}


@register_model
class DTI(TensorModel):
    """Diffusion tensor, ``S = S0 exp(-b gᵀDg)``.

    Parameters
    ----------
    bvalues : DiffusionProtocol or sequence of float
        The acquisition: b-values in s/mm² with gradient directions (the protocol's ``bvecs``,
        or ``bvecs=``). At least 6 distinct non-coplanar directions at ``b > 0``.
    bvecs : array_like (m, 3) or (3, m), keyword-only, optional
        Gradient directions (normalised here; zero where ``b = 0``), in the frame the tensor
        is to be expressed in (FSL/BIDS ``.bvec``: the image's voxel axes).
    method : {"wls", "ols", "nlls"}, keyword-only, default "wls"
        See :mod:`tumorscope.models.diffusion.dti` ("Which method when").
    backend : {"auto", "numba", "numpy"}, keyword-only

    Notes
    -----
    Maps: ``S0``; the tensor elements ``Dxx, Dxy, Dyy, Dxz, Dyz, Dzz`` (mm²/s, DIPY's order);
    derived ``FA``, ``MD``, ``AD``, ``RD`` (mm²/s) and the principal eigenvector ``V1_x``,
    ``V1_y``, ``V1_z`` (the RGB map is ``|V1| · FA``, :func:`~.tensor.rgb_map`). Eigenvalues
    are clipped below at ``1e-6 / b_max`` for the derived maps (as DIPY); voxels whose
    linear estimate has an eigenvalue below that get status ``AT_BOUND`` (not positive
    definite). Samples ``<= 0`` are replaced by the voxel's smallest positive sample before
    the log; a voxel with a NaN/inf or negative sample, or no positive one, is
    ``INVALID_INPUT``. ``rss`` is the weighted log-domain objective for the linear
    methods and the signal RSS for ``"nlls"``.
    """

    name: ClassVar[str] = "dti"
    parameters: ClassVar[tuple[ParameterSpec, ...]] = (
        S0_SPEC,
        *(_element(n) for n in D_NAMES),
    )
    derived: ClassVar[tuple[ParameterSpec, ...]] = TENSOR_MAPS
    methods: ClassVar[tuple[str, ...]] = ("wls", "ols", "nlls")

    def __init__(
        self,
        bvalues: BValues,
        *,
        bvecs: Any = None,
        method: str = "wls",
        backend: str = "auto",
    ) -> None:
        self._acquire_tensor(bvalues, bvecs, method, backend, min_directions=6, label="DTI")
        self.X = dti_design(self.b, self.g)
        self.min_diffusivity = 1e-6 / float(self.b.max())

    @classmethod
    def example(cls) -> DTI:
        b, g = _example_table()
        return cls(b, bvecs=g)

    def sample_parameters(self, n: int, *, rng: np.random.Generator) -> np.ndarray:
        """Prolate-to-isotropic positive-definite tensors in random orientations."""
        return _random_tensors(n, rng)

    def signal(self, params: np.ndarray) -> np.ndarray:
        return tensor_signal(self.X, params)

    def jacobian(self, params: np.ndarray) -> np.ndarray:
        return tensor_jacobian(self.X, params)

    def initial_guess(self, y: np.ndarray) -> np.ndarray:
        return self._linear(y, weighted=True).params

    def kernel(self) -> Any:
        nbm = _tensor_kernels()
        return None if nbm is None else nbm.tensor_exp_kernel

    def consts(self) -> np.ndarray:
        return kernel_consts(self.X)

    def _linear(self, y: np.ndarray, *, weighted: bool) -> BlockFit:
        coef, se, rss, status = tensor_wls(y, self.X, weighted=weighted, backend=self._backend())
        s0 = np.exp(coef[:, 0])
        params = np.c_[s0, coef[:, 1:]]
        stderr = np.c_[s0 * se[:, 0], se[:, 1:]]
        status[
            (status == FitStatus.CONVERGED) & ~positive_definite(coef[:, 1:7], self.min_diffusivity)
        ] = FitStatus.AT_BOUND
        return BlockFit(params, status, rss, stderr)

    def _fit_validated(self, given: FitInput) -> FitResult:
        """Fit the checked input (the hook of :meth:`Model.fit`), with a fast path.

        With numba on float32/float64 data: one fused compiled pass
        (:func:`~._dti_fused.dti_fit_range`) reads the data where they lie (C or F order, no
        gather copy), fits, and writes the float32 maps, standard errors, status, RSS and the
        derived maps directly; chunks of voxels run in a thread pool of GIL-free serial
        kernels. For ``"wls"`` and ``"ols"`` the numbers are those of the engine path (same
        kernel, same status rules, the derived maps from the float32 elements); for
        ``"nlls"`` the same solver steps as the engine's compiled Levenberg–Marquardt, for
        the voxels of a tile in lockstep (:func:`~._dti_nlls.nlls_tile`; the same optimum to
        far below the solver's tolerance). Other cases go through the engine.
        """
        arr = given.data
        if not (
            arr.dtype in (np.float32, np.float64)
            and arr.dtype.isnative
            and self._backend() == "numba"
        ):
            return super()._fit_validated(given)
        from ...fitting import progress

        progress.report("planned", 1)
        flat, der, order = self._fit_fused(arr, given.mask, given.chunk_voxels)
        progress.report("done", 1)
        return self._result(arr, flat, order=order, derived=der)

    def _fit_fused(
        self, arr: np.ndarray, mask: np.ndarray | None, chunk_voxels: int | None
    ) -> tuple[FlatFit, dict[str, np.ndarray], Literal["C", "F"]]:
        from . import _dti_fused

        workers = self._n_workers()
        if chunk_voxels is None and self.method == "nlls" and workers > 1:
            # ~10x the work of a linear fit per voxel: smaller chunks keep every thread busy
            n_vox = int(np.prod(arr.shape[:-1]))
            chunk_voxels = max(256, -(-n_vox // (4 * workers)))
        order, y, V, chunk, n_chunks, fmask, kmask = fast_layout(arr, mask, chunk_voxels, workers)
        params = np.empty((7, V), dtype=np.float32)
        stderr = np.empty((7, V), dtype=np.float32)
        der = np.empty((7, V), dtype=np.float32)
        rss = np.empty(V, dtype=np.float32)
        status = np.empty(V, dtype=np.uint8)
        X = np.ascontiguousarray(self.X)
        ia, ib = np.tril_indices(X.shape[1])
        XX = np.ascontiguousarray(X[:, ia] * X[:, ib])
        pinv = np.ascontiguousarray(np.linalg.pinv(X))
        weighted = self.method in ("wls", "nlls")
        if self.method == "nlls":
            o = self.lm_options
            lm: np.ndarray | None = np.array([float(o.max_iter), o.ftol, o.xtol])
        else:
            lm = None

        def one(c: int) -> None:
            _dti_fused.dti_fit_range(
                y, kmask, mask is not None, c * chunk, min((c + 1) * chunk, V), X, XX, pinv,
                weighted, self.min_diffusivity, params, stderr, der, rss, status, lm,
            )  # fmt: skip

        if workers == 1 or n_chunks <= 1:
            for c in range(n_chunks):
                one(c)
        else:
            with ThreadPoolExecutor(max_workers=min(workers, n_chunks)) as pool:
                list(pool.map(one, range(n_chunks)))
        counts = np.bincount(status, minlength=256).astype(np.int64)
        flat = FlatFit(params.T, stderr.T, status, rss, fmask, counts)
        return flat, {s.name: der[i] for i, s in enumerate(TENSOR_MAPS)}, order

    def fit_block(self, y: np.ndarray) -> BlockFit:
        if self.method in ("wls", "ols"):
            return self._linear(y, weighted=self.method == "wls")
        return self._nlls(np.asarray(y, dtype=np.float64))

    def _nlls(self, y: np.ndarray) -> BlockFit:
        from ...fitting.lm import levenberg_marquardt
        from ._common import lm_backend

        start = self._linear(y, weighted=True)
        good = start.status <= FitStatus.AT_BOUND
        n = y.shape[0]
        p0 = np.zeros((n, 7))
        p0[:, 0] = np.where(good, start.params[:, 0], 1.0)
        p0[good, 1:] = lower_to_chol(start.params[good, 1:])
        p0[~good, 1:] = [0.03, 0.0, 0.03, 0.0, 0.0, 0.03]
        Xd = self.X[:, 1:]

        def fun(q: np.ndarray) -> np.ndarray:
            return q[:, :1] * np.exp(chol_to_lower(q[:, 1:]) @ Xd.T)

        def jac(q: np.ndarray) -> np.ndarray:
            e = np.exp(chol_to_lower(q[:, 1:]) @ Xd.T)
            s = q[:, :1] * e
            J = np.empty((q.shape[0], self.b.size, 7))
            J[:, :, 0] = e
            # d(gᵀLLᵀg)/dL_ij = 2 (Lᵀg)_j g_i ; log S = -b gᵀLLᵀg
            l11, l21, l22, l31, l32, l33 = (q[:, 1 + i : 2 + i] for i in range(6))
            gx, gy, gz = self.g[:, 0], self.g[:, 1], self.g[:, 2]
            u1 = l11 * gx + l21 * gy + l31 * gz  # (n, m)
            u2 = l22 * gy + l32 * gz
            u3 = l33 * gz
            mb2 = -2.0 * self.b * s
            J[:, :, 1] = mb2 * u1 * gx
            J[:, :, 2] = mb2 * u1 * gy
            J[:, :, 3] = mb2 * u2 * gy
            J[:, :, 4] = mb2 * u1 * gz
            J[:, :, 5] = mb2 * u2 * gz
            J[:, :, 6] = mb2 * u3 * gz
            return J

        lo = np.r_[0.0, np.full(6, -np.inf)]
        hi = np.full(7, np.inf)
        scale = np.r_[max(float(np.nanmedian(p0[:, 0])), 1e-12), np.full(6, 0.03)]
        be = self._backend()
        nbm = _tensor_kernels() if be == "numba" else None
        res = levenberg_marquardt(
            y,
            p0,
            lo,
            hi,
            fun=fun,
            jac=jac,
            kernel=None if nbm is None else nbm.dti_chol_kernel,
            consts=np.r_[self.b, self.g[:, 0], self.g[:, 1], self.g[:, 2]],
            scale=scale,
            options=self.lm_options,
            backend=lm_backend(be) if nbm is not None else "numpy",
        )
        params = np.c_[res.params[:, :1], chol_to_lower(res.params[:, 1:])]
        status = res.status.copy()
        status[status == FitStatus.AT_BOUND] = FitStatus.CONVERGED  # no bounds on L
        status[~good] = start.status[~good]
        if nbm is not None:
            stderr = np.empty_like(params)
            nbm.dti_stderr(params, np.ascontiguousarray(Xd), np.asarray(res.rss, float), stderr)
        else:
            stderr = stderr_from_jacobian(self.jacobian(params), res.rss)
        params[~good] = np.nan
        stderr[~good] = np.nan
        rss = np.where(good, res.rss, np.nan)
        return BlockFit(params, status, rss, stderr)

    def derive(self, maps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        shape = np.shape(maps["Dxx"])
        d6 = np.stack([np.asarray(maps[k], dtype=np.float64).ravel() for k in D_NAMES], axis=1)
        evals, evecs = eigen(d6)
        out = {**scalar_maps(evals, self.min_diffusivity), **direction_maps(evecs)}
        return {k: v.reshape(shape) for k, v in out.items()}


def _example_table() -> tuple[np.ndarray, np.ndarray]:
    """b = 0 and 30 directions at b = 1000 s/mm² (a Fibonacci half-sphere)."""
    k = np.arange(30) + 0.5
    z = k / 30  # z in (0, 1): one hemisphere, no antipodal pairs
    phi = np.pi * (1 + 5**0.5) * k
    r = np.sqrt(1 - z * z)
    v = np.c_[r * np.cos(phi), r * np.sin(phi), z]
    b = np.r_[0.0, np.full(30, 1000.0)]
    return b, np.r_[np.zeros((1, 3)), v]


def _random_tensors(n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, 7)``: S0 in [100, 1000] and positive-definite tensors (eigenvalues 2e-4..2e-3
    mm²/s) in random orientations."""
    ev = np.sort(rng.uniform(2e-4, 2e-3, (n, 3)), axis=1)[:, ::-1]
    q, _ = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    D = np.einsum("nij,nj,nkj->nik", q, ev, q)
    d6 = D[:, [0, 1, 1, 2, 2, 2], [0, 0, 1, 0, 1, 2]]
    return np.c_[rng.uniform(100, 1000, n), d6]
