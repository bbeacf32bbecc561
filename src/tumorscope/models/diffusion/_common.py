"""What the diffusion models share: parameter specs, the b-value check, voxel validation, the
compiled kernels' loader, the base class and the log-linear mono-exponential block fit."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, NamedTuple, TypeVar

import numpy as np

from ...fitting.engine import BlockFit
from ...fitting.linear import weighted_lls
from ...fitting.lm import LMResult, levenberg_marquardt
from ...fitting.status import FitStatus
from ...protocol import DiffusionProtocol
from ..base import Model, ParameterSpec, resolve_backend

#: The module under which the diffusion models are public (and recorded in provenance).
PUBLIC_MODULE = "tumorscope.models.diffusion"

D_MAX = 5e-3  # mm²/s, free water at 37 °C is ~3e-3
S0_SPEC = ParameterSpec(
    "S0", "a.u.", 0.0, np.inf, typical=(100.0, 1000.0), description="signal at b = 0"
)

BValues = Sequence[float] | np.ndarray | DiffusionProtocol
_D = TypeVar("_D", bound="DiffusionModel")


def diffusivity(name: str, description: str) -> ParameterSpec:
    """A diffusivity parameter in mm²/s, bounded to ``[0, D_MAX]``."""
    return ParameterSpec(name, "mm2/s", 0.0, D_MAX, typical=(5e-4, 2.5e-3), description=description)


def bvalues_of(acquisition: BValues) -> np.ndarray:
    """The b-values (float64 copy) of a :class:`DiffusionProtocol` or a sequence of numbers.

    Raises
    ------
    ProtocolError
        Fewer than 2 (distinct) b-values, or negative ones.
    """
    if isinstance(acquisition, DiffusionProtocol):
        return acquisition.b.copy()
    return DiffusionProtocol(tuple(np.asarray(acquisition, dtype=float).ravel())).b.copy()


@functools.cache
def kernels() -> Any:
    """The compiled kernels (:mod:`._numba`), or None without numba."""
    try:
        from . import _numba
    except ImportError:  # pragma: no cover - numba is in the 'fast' extra
        return None
    return _numba


def lm_backend(backend: str) -> str:
    """The diffusion models run blocks in the engine's thread pool: GIL-free serial kernels."""
    return "numba-serial" if backend == "numba" else backend


def invalid_diffusion(y: np.ndarray, base_idx: np.ndarray) -> np.ndarray:
    """NaN/inf anywhere, negative anywhere, or a non-positive mean at the lowest b-value."""
    finite = np.all(np.isfinite(y), axis=1)
    nonneg = np.all(y >= 0, axis=1) if finite.all() else np.all(np.nan_to_num(y) >= 0, axis=1)
    base = y[:, base_idx].mean(axis=1)
    return ~(finite & nonneg & (base > 0))


class DiffusionModel(Model):
    """Base of the diffusion models: the acquisition is a :class:`DiffusionProtocol` (or its
    b-values), given as the first argument of the constructor or to :meth:`from_protocol`.

    The models of this package are public (and named in provenance) as
    ``tumorscope.models.diffusion.<Class>``, whichever module defines them.
    """

    measurement_name: ClassVar[str] = "b-values"
    protocol_type = DiffusionProtocol
    thread_safe: ClassVar[bool] = True
    b: np.ndarray

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith(PUBLIC_MODULE + "."):
            cls.__module__ = PUBLIC_MODULE

    def _acquire(self, acquisition: BValues, method: str, backend: str) -> None:
        """Store the b-values, the checked method and backend (first lines of ``__init__``)."""
        self.b = bvalues_of(acquisition)
        self.method = self._check_method(method)
        resolve_backend(backend, has_kernel=True)
        self.backend = backend

    def options(self) -> dict[str, Any]:
        """``bvalues`` and ``method`` first; subclasses add theirs (recorded in provenance)."""
        return {"bvalues": self.b.tolist(), "method": self.method}

    def _backend(self) -> str:
        """``"numba"`` or ``"numpy"`` (every diffusion model has compiled kernels)."""
        return resolve_backend(self.backend, has_kernel=True)

    @staticmethod
    def _kernel(name: str) -> Any:
        """The compiled kernel ``name`` of :mod:`._numba`, or None without numba."""
        nbm = kernels()
        return None if nbm is None else getattr(nbm, name)

    def _solve(
        self,
        y: np.ndarray,
        p0: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        *,
        fun: Any,
        jac: Any,
        kernel: Any,
        consts: np.ndarray,
    ) -> LMResult:
        """Bounded LM on a block: the compiled ``kernel`` with numba (GIL-free serial solver,
        the engine runs blocks in threads), else ``fun`` and ``jac``."""
        be = self._backend()
        return levenberg_marquardt(
            y,
            p0,
            lo,
            hi,
            fun=fun,
            jac=jac,
            kernel=kernel if be == "numba" else None,
            consts=consts,
            scale=self.scales(),
            options=self.lm_options,
            backend=lm_backend(be),
        )

    @property
    def n_measurements(self) -> int:
        return int(self.b.size)

    def invalid_voxels(self, y: np.ndarray) -> np.ndarray:
        return invalid_diffusion(y, np.flatnonzero(self.b == self.b.min()))


def loglinear(
    y: np.ndarray,
    b: np.ndarray,
    *,
    weighted: bool,
    adc_lo: float,
    adc_hi: float,
    backend: str,
    base_idx: np.ndarray | None = None,
) -> BlockFit:
    """(Weighted) log-linear mono-exponential fit of a block; params (S0, ADC).

    Voxels with NaN/inf or negative values, or a non-positive mean at ``base_idx`` (default:
    the lowest b), get status INVALID_INPUT and NaN parameters.
    """
    n = y.shape[0]
    bb = np.ascontiguousarray(b, dtype=np.float64)
    if base_idx is None:
        base_idx = np.flatnonzero(bb == bb.min())
    y = np.ascontiguousarray(y)
    with np.errstate(invalid="ignore", divide="ignore"):
        logy = np.log(y)  # -inf/NaN where y <= 0: those samples get zero weight
    if backend == "numba":
        params = np.empty((n, 2))
        stderr = np.empty((n, 2))
        rss = np.empty(n)
        status = np.empty(n, dtype=np.uint8)
        kernels().loglinear_block_serial(
            y,
            logy,
            bb,
            np.ascontiguousarray(base_idx, dtype=np.int64),
            weighted,
            adc_lo,
            adc_hi,
            params,
            stderr,
            rss,
            status,
        )
        return BlockFit(params, status, rss, stderr)
    y = y.astype(np.float64)
    invalid = invalid_diffusion(y, base_idx)
    pos = (y > 0) & ~invalid[:, None]
    w = np.where(pos, y * y if weighted else 1.0, 0.0)
    A = np.c_[np.ones(bb.size), -bb]
    lin = weighted_lls(A, np.where(pos, logy, 0.0), w)
    s0 = np.exp(lin.coef[:, 0])
    adc = lin.coef[:, 1]
    status = np.full(n, FitStatus.CONVERGED, dtype=np.uint8)
    out = (adc < adc_lo) | (adc > adc_hi)
    status[out] = FitStatus.AT_BOUND
    adc = np.clip(adc, adc_lo, adc_hi)
    npos = pos.sum(axis=1)
    status[~lin.ok | (npos < 2)] = FitStatus.FAILED
    status[invalid] = FitStatus.INVALID_INPUT
    # stderr with the number of usable samples
    se = lin.stderr * np.sqrt((bb.size - 2) / np.maximum(npos - 2, 1))[:, None]
    se[npos <= 2] = np.nan
    stderr = np.c_[s0 * se[:, 0], se[:, 1]]
    params = np.c_[s0, adc]
    nan = status >= FitStatus.INVALID_INPUT
    params[nan] = np.nan
    stderr[nan] = np.nan
    lin.rss[nan] = np.nan
    return BlockFit(params, status, lin.rss, stderr)


class FastLayout(NamedTuple):
    """How a fused fast path walks a volume: the flat ``(V, n)`` view of the data in its own
    memory order (F-ordered NIfTI data flattened in F order is a view, like C for C data),
    the chunking over ``workers`` threads and the flat mask (``kmask`` empty without one)."""

    order: Literal["C", "F"]
    y: np.ndarray
    n_voxels: int
    chunk: int
    n_chunks: int
    fmask: np.ndarray
    kmask: np.ndarray


def fast_layout(
    arr: np.ndarray, mask: np.ndarray | None, chunk_voxels: int | None, workers: int
) -> FastLayout:
    """The :class:`FastLayout` of ``arr`` (measurements on the last axis) for ``workers``
    threads: at least 4 chunks per worker (load balance on a shared machine) unless
    ``chunk_voxels`` is given."""
    from ...errors import FitError
    from ...fitting.engine import DEFAULT_CHUNK_VOXELS

    nm = arr.shape[-1]
    order: Literal["C", "F"] = (
        "F" if (arr.flags.f_contiguous and not arr.flags.c_contiguous) else "C"
    )
    y = arr.reshape(-1, nm, order=order)
    V = y.shape[0]
    if chunk_voxels is not None and int(chunk_voxels) < 1:
        raise FitError(f"must be >= 1, got {chunk_voxels}", field="chunk_voxels")
    if chunk_voxels is not None:
        chunk = int(chunk_voxels)
    else:
        chunk = min(DEFAULT_CHUNK_VOXELS, max(4096, math.ceil(V / (4 * workers))))
    n_chunks = math.ceil(V / chunk) if V else 0
    if mask is None:
        fmask, kmask = np.ones(V, dtype=bool), np.zeros(0, dtype=bool)
    else:
        fmask = np.ascontiguousarray(mask.reshape(-1, order=order))
        kmask = fmask
    return FastLayout(order, y, V, chunk, n_chunks, fmask, kmask)
