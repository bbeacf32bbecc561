"""WASABI: simultaneous B0 and B1 mapping from one short off-resonant block pulse
(Schuenke et al. 2017, doi:10.1002/mrm.26133).

``Z(Δω) = | c - d · sin²(arctan(ω1 / (Δω - δω))) · sin²(√(ω1² + (Δω - δω)²) · tp / 2) |``

with ``ω1 = γ · rB1 · B1_nominal`` (rad/s), ``Δω`` the offset and ``δω`` the B0 shift (rad/s;
here both are handled in ppm and converted with the field), ``tp`` the pulse duration.
``sin²(arctan(a/Δ)) = a²/(a² + Δ²)``, which keeps the equation smooth at ``Δ = δω``.

Fit: a grid search over ``(rB1, B0)`` with ``c = 1, d = 2`` (the values of an ideal
normalised acquisition) gives the start, then the batched bounded Levenberg–Marquardt
solver fits all four parameters (the equation has several local minima in ``rB1``; the grid
avoids them, as Schuenke et al. do with their multi-start).

Maps: ``rB1`` (relative B1, 1), ``B0`` (ppm), ``c``, ``d`` (1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from ...errors import FitError
from ...fitting.engine import BlockFit
from ...fitting.grid import product_grid
from ...protocol import CESTProtocol
from ..base import Model, ParameterSpec, register_model
from .bloch import GAMMA_HZ_PER_T, GAMMA_RAD_PER_S_PER_UT

__all__ = ["WASABI", "wasabi_jacobian", "wasabi_signal"]


def _parts(
    off: np.ndarray, p: np.ndarray, field_t: float, b1_ut: float, tp_s: float
) -> tuple[Any, ...]:
    w0 = 2 * np.pi * GAMMA_HZ_PER_T * 1e-6 * field_t  # rad/s per ppm
    a = GAMMA_RAD_PER_S_PER_UT * b1_ut * p[:, 0:1]
    dlt = (off[None, :] - p[:, 1:2]) * w0
    om2 = a * a + dlt * dlt
    om = np.sqrt(om2)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = np.where(om2 > 0, a * a / om2, 1.0)
    v = np.sin(om * tp_s / 2) ** 2
    inner = p[:, 2:3] - p[:, 3:4] * u * v
    return w0, a, dlt, om, om2, u, v, inner


def wasabi_signal(
    offsets_ppm: npt.ArrayLike, params: np.ndarray, *, field_t: float, b1_ut: float, tp_s: float
) -> np.ndarray:
    """WASABI Z ``(n, K)`` for parameters ``(n, 4)`` = ``(rB1, B0 ppm, c, d)``."""
    off = np.asarray(offsets_ppm, dtype=float)
    inner = _parts(off, np.asarray(params, float), field_t, b1_ut, tp_s)[-1]
    return np.abs(inner)


def wasabi_jacobian(
    offsets_ppm: npt.ArrayLike, params: np.ndarray, *, field_t: float, b1_ut: float, tp_s: float
) -> np.ndarray:
    """Analytic Jacobian ``(n, K, 4)`` of :func:`wasabi_signal`."""
    off = np.asarray(offsets_ppm, dtype=float)
    p = np.asarray(params, float)
    w0, a, dlt, om, om2, u, v, inner = _parts(off, p, field_t, b1_ut, tp_s)
    d = p[:, 3:4]
    with np.errstate(invalid="ignore", divide="ignore"):
        du_da = np.where(om2 > 0, 2 * a * dlt**2 / om2**2, 0.0)
        du_dd = np.where(om2 > 0, -2 * a**2 * dlt / om2**2, 0.0)
        dom_da = np.where(om > 0, a / om, 1.0)
        dom_dd = np.where(om > 0, dlt / om, 0.0)
    dv_dom = np.sin(om * tp_s) * tp_s / 2
    sgn = np.where(inner >= 0, 1.0, -1.0)
    J = np.empty((*inner.shape, 4))
    J[..., 0] = -d * (du_da * v + u * dv_dom * dom_da) * (GAMMA_RAD_PER_S_PER_UT * b1_ut)
    J[..., 1] = -d * (du_dd * v + u * dv_dom * dom_dd) * (-w0)
    J[..., 2] = 1.0
    J[..., 3] = -u * v
    return J * sgn[..., None]


@register_model
class WASABI(Model):
    """WASABI B0 and relative-B1 map from a short block-pulse Z-spectrum.

    Parameters
    ----------
    offsets_ppm : CESTProtocol or sequence of float
        A WASABI protocol (its saturated offsets, field, B1 and pulse duration), or the
        offsets (ppm) of the normalised spectrum with the keywords below.
    field_t, b1_ut, tp_s : float, keyword-only
        Field (T), nominal pulse amplitude (µT) and pulse duration (s) when ``offsets_ppm``
        is not a protocol (typical at 3 T: 3.7 µT, 5 ms).
    backend : {"auto", "numpy"}, keyword-only
    """

    name: ClassVar[str] = "wasabi"
    parameters: ClassVar[tuple[ParameterSpec, ...]] = (
        ParameterSpec("rB1", "1", 0.2, 2.0, typical=(0.7, 1.3), description="relative B1"),
        ParameterSpec("B0", "ppm", -1.5, 1.5, typical=(-0.4, 0.4), description="B0 shift"),
        ParameterSpec("c", "1", 0.0, 2.0, typical=(0.9, 1.0), description="offset term"),
        ParameterSpec("d", "1", 0.0, 4.0, typical=(1.7, 2.0), description="amplitude term"),
    )
    measurement_name: ClassVar[str] = "offsets"
    protocol_type: ClassVar[type | None] = CESTProtocol
    thread_safe: ClassVar[bool] = True

    def __init__(
        self,
        offsets_ppm: CESTProtocol | Sequence[float] | npt.ArrayLike,
        *,
        field_t: float | None = None,
        b1_ut: float | None = None,
        tp_s: float | None = None,
        backend: str = "auto",
    ) -> None:
        if isinstance(offsets_ppm, CESTProtocol):
            pr = offsets_ppm
            off = np.asarray(pr.saturated_offsets_ppm, dtype=float)
            field_t, b1_ut, tp_s = pr.field_strength_t, pr.b1_ut, pr.pulse_duration_s
        else:
            off = np.asarray(offsets_ppm, dtype=float).ravel()
        if field_t is None or b1_ut is None or tp_s is None:
            raise FitError(
                "WASABI needs field_t, b1_ut and tp_s (or a CESTProtocol)", field="protocol"
            )
        for name, val in (("field_t", field_t), ("b1_ut", b1_ut), ("tp_s", tp_s)):
            if not (np.isfinite(val) and val > 0):
                raise FitError(f"must be > 0, got {val!r}", field=name)
        if off.size < 6 or not np.all(np.isfinite(off)):
            raise FitError(f"need at least 6 finite offsets, got {off.size}", field="offsets_ppm")
        self.offsets_ppm = off
        self.field_t, self.b1_ut, self.tp_s = float(field_t), float(b1_ut), float(tp_s)
        self.method = "lm"
        self.backend = "numpy" if backend == "auto" else backend

    @property
    def n_measurements(self) -> int:
        return int(self.offsets_ppm.size)

    @classmethod
    def example(cls) -> WASABI:
        return cls(np.linspace(-2.0, 2.0, 31), field_t=3.0, b1_ut=3.7, tp_s=0.005)

    def options(self) -> dict[str, Any]:
        return {
            **super().options(),
            "field_t": self.field_t,
            "b1_ut": self.b1_ut,
            "tp_s": self.tp_s,
        }

    def _kw(self) -> dict[str, float]:
        return {"field_t": self.field_t, "b1_ut": self.b1_ut, "tp_s": self.tp_s}

    def signal(self, params: np.ndarray) -> np.ndarray:
        return wasabi_signal(self.offsets_ppm, params, **self._kw())

    def jacobian(self, params: np.ndarray) -> np.ndarray:
        return wasabi_jacobian(self.offsets_ppm, params, **self._kw())

    def initial_guess(self, y: np.ndarray) -> np.ndarray:
        grid = product_grid(np.arange(0.3, 1.701, 0.02), np.arange(-1.0, 1.001, 0.02))
        g4 = np.c_[grid, np.ones(len(grid)), np.full(len(grid), 2.0)]
        S = self.signal(g4)  # (G, K)
        sse = np.sum(S * S, axis=1)[None, :] - 2 * y @ S.T
        best = np.argmin(sse, axis=1)
        return g4[best]

    def fit_block(self, y: np.ndarray) -> BlockFit:
        return self.solve_nonlinear(y, self.initial_guess(y))
