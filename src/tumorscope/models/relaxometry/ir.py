"""Inversion recovery T1 (:class:`IRT1`), magnitude data with polarity restoration."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from ...fitting.engine import BlockFit
from ...fitting.polish import gauss_newton_polish
from ...fitting.varpro import varpro_log
from ...protocol import InversionRecoveryProtocol
from ..base import ParameterSpec, register_model, resolve_backend
from ._common import T1_SPEC, T1Model, compiled_block, solved_block
from .equations import ir_jacobian, ir_signal

__all__ = ["IRT1"]


@register_model
class IRT1(T1Model):
    """Inversion recovery T1 mapping, magnitude data with polarity restoration.

    Fits the three-parameter :func:`ir_signal` ``M0 (1 - k exp(-TI/T1))``. For magnitude
    data the sign of the points before the null is unknown: following the RD-NLS-PR method
    of Barral et al. (Magn Reson Med 2010, doi:10.1002/mrm.22497), the points up to the
    minimum magnitude are negated (two candidates: with and without the minimum itself), each
    candidate is fitted and the one with the smaller residual is kept. Every fit is exact least
    squares: ``M0`` and ``M0·k`` are linear and solved in closed form for each ``T1``, ``T1``
    by a global log-grid and a 1-D search (variable projection: golden section in numpy, a
    safeguarded Newton compiled), then polished by Gauss–Newton (compiled: only where the
    Newton search did not converge, since it already ends at the minimiser).

    Parameters
    ----------
    inversion_times_ms : sequence of float, shape (n_ti,), or InversionRecoveryProtocol
        Inversion times in ms (> 0, at least three distinct; any order), or the acquisition
        as a :class:`~tumorscope.protocol.InversionRecoveryProtocol`.
    magnitude : bool, default True, keyword-only
        False for phase-corrected real (signed) data: no polarity restoration.
    backend : {"auto", "numba", "numpy"}, keyword-only
        ``"numba"`` (the default when numba is installed) runs the same estimator compiled,
        voxel by voxel (:func:`._ir_numba.ir_varpro`); ``"numpy"`` vectorised.

    Notes
    -----
    Maps: ``"M0"`` (a.u.), ``"T1"`` (ms), ``"k"`` (1; 2 for an ideal inversion with full
    recovery, lower for imperfect inversion or short TR) and derived ``"R1"`` (1/s).
    """

    name = "irt1"
    parameters = (
        ParameterSpec("M0", "a.u.", typical=(500.0, 5000.0), description="signal at full recovery"),
        T1_SPEC,
        ParameterSpec(
            "k",
            "1",
            typical=(1.8, 2.0),
            description="inversion factor (2 = ideal inversion, full recovery)",
        ),
    )
    methods = ("rdnls",)
    measurement_name = "inversion times"
    recorded_options = ("inversion_times_ms", "magnitude", "method")
    protocol_type = InversionRecoveryProtocol
    #: Blocks run in a thread pool (the compiled search releases the GIL; numpy is safe).
    thread_safe: ClassVar[bool] = True

    def __init__(
        self,
        inversion_times_ms: Sequence[float] | npt.ArrayLike | InversionRecoveryProtocol,
        *,
        magnitude: bool = True,
        backend: str = "auto",
    ) -> None:
        proto = self._acquire(
            InversionRecoveryProtocol, "rdnls", backend, inversion_times_ms=inversion_times_ms
        )
        self.inversion_times_ms = np.asarray(proto.inversion_times_ms)
        self.magnitude = bool(magnitude)

    @property
    def n_measurements(self) -> int:
        return int(self.inversion_times_ms.size)

    def signal(self, params: np.ndarray) -> np.ndarray:
        s = ir_signal(params, self.inversion_times_ms)
        return np.abs(s) if self.magnitude else s

    def jacobian(self, params: np.ndarray) -> np.ndarray:
        J = ir_jacobian(params, self.inversion_times_ms)
        if self.magnitude:
            J = J * np.sign(ir_signal(params, self.inversion_times_ms))[..., None]
        return J

    def invalid_voxels(self, y: np.ndarray) -> np.ndarray:
        if self.magnitude:
            return super().invalid_voxels(y)
        return ~np.all(np.isfinite(y), axis=1) | ~np.any(y != 0, axis=1)

    @classmethod
    def example(cls) -> IRT1:
        return cls([50.0, 150.0, 400.0, 800.0, 1500.0, 3000.0])

    def sample_parameters(self, n: int, *, rng: np.random.Generator) -> np.ndarray:
        m0 = rng.uniform(500.0, 5000.0, n)
        t1 = rng.uniform(300.0, 2000.0, n)
        k = rng.uniform(1.8, 2.0, n)
        return np.stack([m0, t1, k], axis=1)

    def kernel(self) -> Any:
        """The compiled signal and Jacobian (numba) of this model (magnitude or signed)."""
        try:
            from ._numba import ir_kernel
        except ImportError:  # pragma: no cover - numba is in the 'fast' extra
            return None
        return ir_kernel

    def consts(self) -> np.ndarray:
        return np.concatenate([[1.0 if self.magnitude else 0.0], self.inversion_times_ms])

    def fit_block(self, y: np.ndarray) -> BlockFit:
        ti = self.inversion_times_ms
        lo, hi = self.parameters[1].lower, self.parameters[1].upper
        if resolve_backend(self.backend, has_kernel=self.kernel() is not None) == "numba":
            from ._ir_numba import ir_varpro

            params, rss, at_bound, stderr = ir_varpro(y, ti, lo, hi, magnitude=self.magnitude)
            return compiled_block(params, rss, at_bound, stderr)
        order = np.argsort(ti, kind="stable")
        m = y.shape[1]

        def basis(t1: np.ndarray) -> np.ndarray:
            e = np.exp(-ti[None, :] / t1[:, None])
            return np.stack([np.ones_like(e), e], axis=-1)

        if self.magnitude:
            # candidates: negate the first j points in TI order, j = argmin and argmin + 1
            kmin = np.argmin(y[:, order], axis=1)
            best = None
            for extra in (0, 1):
                j = kmin + extra
                rank = np.empty(m, dtype=np.int64)
                rank[order] = np.arange(m)
                sign = np.where(rank[None, :] < j[:, None], -1.0, 1.0)
                ys = y * sign
                t1, coef, rss, at_bound = varpro_log(basis, ys, lo, hi, nonneg=False)
                cand = (t1, coef, rss, at_bound, ys)
                if best is None:
                    best = cand
                else:
                    take = rss < best[2]
                    best = tuple(
                        np.where(take.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
                        for a, b in zip(cand, best, strict=True)
                    )  # type: ignore[assignment]
            assert best is not None
            t1, coef, rss, at_bound, ys = best
        else:
            ys = y
            t1, coef, rss, at_bound = varpro_log(basis, ys, lo, hi, nonneg=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            m0 = coef[:, 0]
            k = np.where(m0 != 0, -coef[:, 1] / m0, np.nan)
        params = np.stack([m0, t1, k], axis=1)
        free = np.all(np.isfinite(params), axis=1) & ~at_bound
        if free.any():
            params[free], rss[free] = gauss_newton_polish(
                params[free],
                ys[free],
                lambda p: ir_signal(p, ti),
                lambda p: ir_jacobian(p, ti),
                rss[free],
            )
        return solved_block(params, rss, at_bound, lambda p: ir_jacobian(p, ti))
