"""Pieces shared by the relaxometry models: protocol handling, solved blocks, input checks."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np

from ...errors import FitError, ProtocolError
from ...fitting.engine import BlockFit
from ...fitting.status import FitStatus
from ...fitting.uncertainty import stderr_from_jacobian
from ...protocol import Protocol
from ..base import Model, ParameterSpec

_P = TypeVar("_P", bound=Protocol)

#: The T1 parameter and the derived rate map of the T1 models.
T1_SPEC = ParameterSpec(
    "T1", "ms", 5.0, 50000.0, typical=(300.0, 3000.0), description="longitudinal relaxation time"
)
R1_SPEC = ParameterSpec("R1", "1/s", 0.0, np.inf, description="1000 / T1")


class RelaxometryModel(Model):
    """What the relaxometry models share: the acquisition taken as a protocol or its values
    (:meth:`_acquire`), magnitude data (:meth:`invalid_voxels`), and the options they record,
    the attributes named in ``recorded_options`` (arrays as lists)."""

    #: Attributes recorded by :meth:`options` (provenance), in order.
    recorded_options: ClassVar[tuple[str, ...]] = ("method",)

    def _acquire(self, kind: type[_P], method: str, backend: str, **values: Any) -> _P:
        """The acquisition (:func:`protocol_of` ``(kind, **values)``), with the checked
        ``method`` and ``backend`` stored (the first lines of ``__init__``)."""
        proto = protocol_of(kind, **values)
        self.method = self._check_method(method)
        self.backend = check_backend(backend)
        return proto

    def _n_workers(self) -> int:
        """Threads over blocks for a thread-safe model: the cores, but no more than numba's
        thread count of the calling thread (a Dask worker of the pipeline sets it to its share
        of the cores, so that two workers do not run four threads on two cores)."""
        if not self.thread_safe:
            return 1
        n = max(1, os.cpu_count() or 1)
        try:
            import numba

            n = min(n, int(numba.get_num_threads()))
        except ImportError:  # pragma: no cover - numba is in the 'fast' extra
            pass
        return max(1, n)

    def invalid_voxels(self, y: np.ndarray) -> np.ndarray:
        """Magnitudes that cannot be fitted (:func:`invalid_magnitude`)."""
        return invalid_magnitude(y)

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.recorded_options:
            value = getattr(self, name)
            out[name] = value.tolist() if isinstance(value, np.ndarray) else value
        return out


class T1Model(RelaxometryModel):
    """A T1 model (:class:`~.vfa.VFAT1`, :class:`~.ir.IRT1`): derives ``R1 = 1000 / T1``."""

    derived = (R1_SPEC,)

    def derive(self, maps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"R1": rate(maps["T1"])}


def protocol_of(kind: type[_P], **values: Any) -> _P:
    """The acquisition of a model: its first argument if that is already a ``kind`` protocol
    (then no other acquisition value may be given), else ``kind(**values)`` (None values
    left to the protocol's defaults and checks)."""
    first, *rest = values
    value = values[first]
    if isinstance(value, Protocol):
        if not isinstance(value, kind):
            raise ProtocolError(
                f"expected a {kind.__name__}, got {type(value).__name__}",
                file=value.source,
                field=first,
            )
        given = [k for k in rest if values[k] is not None]
        if given:
            raise FitError(
                f"give a {kind.__name__} or the acquisition values, not both", field=given[0]
            )
        return value
    return kind(**{k: v for k, v in values.items() if v is not None or k == first})


def rate(t_ms: np.ndarray) -> np.ndarray:
    """``1000 / t`` (a rate in 1/s from a time in ms), NaN where ``t <= 0``."""
    t = np.asarray(t_ms, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(t > 0, 1000.0 / t, np.nan)


def solved_block(
    params: np.ndarray,
    rss: np.ndarray,
    at_bound: np.ndarray,
    jacobian: Callable[[np.ndarray], np.ndarray] | None,
) -> BlockFit:
    """The :class:`BlockFit` of a block solved in closed form or by variable projection.

    Status ``CONVERGED``, ``AT_BOUND`` where the search ended on its bounds, ``FAILED`` where a
    parameter is not finite. Standard errors from ``jacobian(params) -> (n, m, p)`` at the
    solution (scaled ``JᵀJ``); all NaN when ``jacobian`` is None (an estimator that is not
    least squares on the data, whose Jacobian-based errors would be another estimator's).
    """
    ok = np.all(np.isfinite(params), axis=1)
    status = np.where(at_bound, FitStatus.AT_BOUND, FitStatus.CONVERGED).astype(np.uint8)
    status[~ok] = FitStatus.FAILED
    if jacobian is None:
        return BlockFit(params, status, rss, np.full(params.shape, np.nan))
    J = jacobian(np.where(ok[:, None], params, 1.0))
    stderr = stderr_from_jacobian(J, np.where(ok, rss, np.nan), solver="scaled")
    return BlockFit(params, status, rss, stderr)


def compiled_block(
    params: np.ndarray, rss: np.ndarray, at_bound: np.ndarray, stderr: np.ndarray
) -> BlockFit:
    """:func:`solved_block` of a compiled solver that computed the standard errors itself
    (same statuses; ``stderr`` NaN where a parameter is not finite)."""
    ok = np.all(np.isfinite(params), axis=1)
    status = np.where(at_bound, FitStatus.AT_BOUND, FitStatus.CONVERGED).astype(np.uint8)
    status[~ok] = FitStatus.FAILED
    stderr[~ok] = np.nan
    return BlockFit(params, status, rss, stderr)


def invalid_magnitude(y: np.ndarray) -> np.ndarray:
    """Voxels that cannot be fitted: non-finite, negative or all-zero magnitudes."""
    return ~np.all(np.isfinite(y), axis=1) | np.any(y < 0, axis=1) | ~np.any(y > 0, axis=1)


def check_backend(backend: str) -> str:
    """The backend name, if it is one of ``auto``, ``numpy``, ``numba`` (FitError otherwise)."""
    if backend not in ("auto", "numpy", "numba"):
        raise FitError(
            f"unknown backend {backend!r}; expected 'auto', 'numba' or 'numpy'", field="backend"
        )
    return backend


def copy_model(model: Any) -> Any:
    """A shallow copy of a model (to change an option for one fit without mutating it)."""
    return copy.copy(model)
