"""Multi-pool Lorentzian fit of Z-spectra (Zaiss et al. 2011, doi:10.1016/j.jmr.2011.05.001;
five pools at 3 T as in Windschuh et al. 2015, doi:10.1002/nbm.3299).

``Z(Δ) = Z0 - Σ_i A_i · (Γ_i²/4) / (Γ_i²/4 + (Δ - B0 - δ_i)²)`` over the pools water
(``δ = 0``), semi-solid MT, amide (3.5 ppm), amine (~2 ppm) and NOE (−3.5 ppm). The water
shift ``B0`` is a fitted parameter and every pool's position is relative to it, so the fit
is done on the B0-corrected axis by construction; a WASSR/WASABI B0 map may be given as the
per-voxel input ``b0`` (start value of ``B0``).

Maps: ``Z0`` (1), ``B0`` (ppm), ``<pool>_amp`` (1), ``<pool>_width`` (ppm, FWHM) and
``<pool>_offset`` (ppm, not for water). Bounds and starting values follow Windschuh et al.
(2015) at 3 T, expressed in ppm; at other fields widths in ppm scale as 1/B0 — give
``bounds=`` per instance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from ...errors import FitError
from ...fitting.engine import BlockFit
from ...fitting.lm import LMOptions
from ...fitting.status import FitStatus
from ...protocol import CESTProtocol
from ..base import Model, ParameterSpec, register_model, resolve_backend

__all__ = ["POOLS", "CESTLorentzian", "lorentzian_jacobian", "lorentzian_signal"]

#: Extra pools (after water): name, start (amp, width ppm, offset ppm), bounds per quantity.
POOLS: tuple[tuple[str, tuple[float, float, float], tuple[tuple[float, float], ...]], ...] = (
    ("mt", (0.1, 60.0, -2.0), ((0.0, 1.0), (10.0, 300.0), (-8.0, 2.0))),
    ("amide", (0.025, 1.0, 3.5), ((0.0, 0.2), (0.4, 3.0), (3.2, 3.8))),
    ("amine", (0.01, 1.5, 2.0), ((0.0, 0.2), (0.5, 5.0), (1.6, 2.6))),
    ("noe", (0.02, 3.0, -3.5), ((0.0, 0.4), (1.0, 5.0), (-4.5, -2.5))),
)

#: Water widths (ppm) tried by the linear step of the start.
_WATER_WIDTHS = (1.0, 1.6, 2.6)


def _specs() -> tuple[ParameterSpec, ...]:
    out = [
        ParameterSpec("Z0", "1", 0.5, 1.5, typical=(0.95, 1.0), description="baseline"),
        ParameterSpec("B0", "ppm", -2.0, 2.0, typical=(-0.3, 0.3), description="water shift"),
        ParameterSpec("water_amp", "1", 0.02, 1.5, typical=(0.6, 0.9)),
        ParameterSpec("water_width", "ppm", 0.2, 10.0, typical=(1.2, 2.5)),
    ]
    typ = {
        "mt": ((0.05, 0.15), (20.0, 40.0), (-2.5, -1.5)),
        "amide": ((0.02, 0.05), (0.8, 1.5), (3.4, 3.6)),
        "amine": ((0.01, 0.03), (1.2, 2.0), (1.9, 2.1)),
        "noe": ((0.02, 0.06), (2.5, 3.5), (-3.6, -3.4)),
    }
    for name, _start, bnds in POOLS:
        for (q, unit), (lo, hi), t in zip(
            (("amp", "1"), ("width", "ppm"), ("offset", "ppm")), bnds, typ[name], strict=True
        ):
            out.append(ParameterSpec(f"{name}_{q}", unit, lo, hi, typical=t))
    return tuple(out)


def lorentzian_signal(offsets_ppm: np.ndarray, params: np.ndarray) -> np.ndarray:
    """``Z (n, K)`` for parameters ``(n, 4 + 3 * n_extra)`` (layout of :data:`POOLS`)."""
    return _eval(np.asarray(offsets_ppm, float), np.asarray(params, float), jac=False)[0]


def lorentzian_jacobian(offsets_ppm: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Analytic Jacobian ``(n, K, p)`` of :func:`lorentzian_signal`."""
    J = _eval(np.asarray(offsets_ppm, float), np.asarray(params, float), jac=True)[1]
    assert J is not None
    return J


def _eval(off: np.ndarray, p: np.ndarray, *, jac: bool) -> tuple[np.ndarray, np.ndarray | None]:
    n, P = p.shape
    n_extra = (P - 4) // 3
    f = np.broadcast_to(p[:, :1], (n, off.size)).copy()
    J = np.zeros((n, off.size, P)) if jac else None
    dsum = np.zeros((n, off.size))
    for i in range(n_extra + 1):
        if i == 0:
            ja, a, g = 2, p[:, 2:3], p[:, 3:4]
            x = off[None, :] - p[:, 1:2]
        else:
            ja = 4 + 3 * (i - 1)
            a, g = p[:, ja : ja + 1], p[:, ja + 1 : ja + 2]
            x = off[None, :] - p[:, 1:2] - p[:, ja + 2 : ja + 3]
        q = 0.25 * g * g
        den = q + x * x
        L = q / den
        f -= a * L
        if J is not None:
            J[..., ja] = -L
            J[..., ja + 1] = -a * 0.5 * g * x * x / den**2
            d = -2.0 * a * q * x / den**2
            dsum += d
            if i > 0:
                J[..., ja + 2] = d
    if J is not None:
        J[..., 0] = 1.0
        J[..., 1] = dsum
    return f, J


@register_model
class CESTLorentzian(Model):
    """Five-pool Lorentzian fit of normalised Z-spectra (water, MT, amide, amine, NOE).

    Parameters
    ----------
    offsets_ppm : CESTProtocol or sequence of float
        Saturation offsets (ppm) of the normalised spectra (the M0 volumes removed).
    bounds : mapping, keyword-only
        Per-parameter ``(lower, upper)`` replacing the defaults.
    backend : {"auto", "numba", "numpy"}, keyword-only

    Notes
    -----
    Status: the bounds are part of the model (physically plausible ranges of each pool, as in
    Windschuh et al. 2015), and at SNR ~100 some pool parameter usually rests on one (an
    amplitude at 0: the pool is not detected; a broad amine or MT line at its width limit).
    Such a fit is reported ``CONVERGED``, and the derived map ``n_at_bound`` counts the
    parameters on a bound per voxel so that they can be excluded where it matters.
    ``MAX_ITER`` and ``FAILED`` keep their meaning. Solver tolerances: 300 trial steps,
    ``ftol = xtol = 1e-6``. With numba the fit is one compiled loop with the model inlined: 12
    trial steps of the 16-parameter LM (the damping divided by 5, not 10, after an accepted
    step), then the same bounded problem by variable projection — the amplitudes and ``Z0``
    from a bounded linear solve per trial, Newton/Gauss–Newton steps over B0, the widths and
    the offsets (:func:`._varpro.lorentzian_varpro`); the numpy backend uses the generic
    solver.

    Start values: ``Z0`` the largest Z, ``B0`` the per-voxel input ``b0`` when given, else the
    offset of the sampled minimum within ±2 ppm; water amplitude ``Z0 - min Z``; the other
    pools from :data:`POOLS`.
    """

    name: ClassVar[str] = "cest_lorentzian"
    parameters: ClassVar[tuple[ParameterSpec, ...]] = _specs()
    measurement_name: ClassVar[str] = "offsets"
    protocol_type: ClassVar[type | None] = CESTProtocol
    voxel_inputs: ClassVar[tuple[str, ...]] = ("b0",)
    voxel_input_labels: ClassVar[Mapping[str, str]] = {"b0": "B0 map (ppm)"}
    derived: ClassVar[tuple[ParameterSpec, ...]] = (
        ParameterSpec("n_at_bound", "1", 0.0, 16.0, description="parameters on a bound"),
    )

    def __init__(
        self,
        offsets_ppm: CESTProtocol | Sequence[float] | npt.ArrayLike,
        *,
        bounds: Mapping[str, Sequence[float]] | None = None,
        backend: str = "auto",
    ) -> None:
        if isinstance(offsets_ppm, CESTProtocol):
            off = np.asarray(offsets_ppm.saturated_offsets_ppm, dtype=float)
        else:
            off = np.asarray(offsets_ppm, dtype=float).ravel()
        if off.size < len(self.parameters) or not np.all(np.isfinite(off)):
            raise FitError(
                f"need at least {len(self.parameters)} finite offsets for a 5-pool fit, "
                f"got {off.size}",
                field="offsets_ppm",
            )
        self.offsets_ppm = off
        self.method = "lm"
        self.backend = backend
        self.lm_options = LMOptions(max_iter=300, ftol=1e-6, xtol=1e-6)
        self._set_bounds(bounds)

    @property
    def n_measurements(self) -> int:
        return int(self.offsets_ppm.size)

    @classmethod
    def example(cls) -> CESTLorentzian:
        return cls(np.r_[-15.0, -10.0, np.arange(-6.0, 6.01, 0.25), 10.0, 15.0])

    def options(self) -> dict[str, Any]:
        return {**super().options(), "bounds": dict(self.bound_overrides)}

    def signal(self, params: np.ndarray) -> np.ndarray:
        return lorentzian_signal(self.offsets_ppm, params)

    def jacobian(self, params: np.ndarray) -> np.ndarray:
        return lorentzian_jacobian(self.offsets_ppm, params)

    def kernel(self) -> Any:
        try:
            from ._numba import lorentzian_kernel
        except ImportError:  # pragma: no cover - numba is in the 'fast' extra
            return None
        return lorentzian_kernel

    def consts(self) -> np.ndarray:
        return np.r_[float(len(POOLS)), self.offsets_ppm]

    def initial_guess(self, y: np.ndarray, b0: np.ndarray | None = None) -> np.ndarray:
        n = y.shape[0]
        off = self.offsets_ppm
        near = np.flatnonzero(np.abs(off) <= 2.0)
        if near.size == 0:
            near = np.arange(off.size)
        if b0 is None:
            b0 = off[near[np.argmin(y[:, near], axis=1)]]
        z0 = np.max(y, axis=1)
        p = np.empty((n, len(self.parameters)))
        p[:, 0] = z0
        p[:, 1] = b0
        p[:, 2] = np.maximum(z0 - np.min(y, axis=1), 0.05)
        p[:, 3] = 1.5
        for i, (_name, start, _b) in enumerate(POOLS):
            p[:, 4 + 3 * i : 7 + 3 * i] = start
        lo, hi = self.bounds()
        p = np.clip(p, lo, hi)
        return self._linear_amplitudes(y, p, lo, hi)

    def _linear_amplitudes(
        self, y: np.ndarray, p: np.ndarray, lo: np.ndarray, hi: np.ndarray
    ) -> np.ndarray:
        """Refine the start: with positions and widths fixed, ``Z0`` and the amplitudes
        enter linearly; the best water width of a few is kept. Halves the LM iterations."""
        if self.kernel() is not None and self.backend != "numpy":
            from ._numba import lorentzian_start

            p = np.ascontiguousarray(p, dtype=np.float64)
            lorentzian_start(
                np.ascontiguousarray(self.offsets_ppm, dtype=np.float64),
                len(POOLS),
                np.ascontiguousarray(y, dtype=np.float64),
                p,
                np.ascontiguousarray(lo, dtype=np.float64),
                np.ascontiguousarray(hi, dtype=np.float64),
                np.asarray(_WATER_WIDTHS),
            )
            return p
        amp_idx = [0, 2, *(4 + 3 * i for i in range(len(POOLS)))]
        n, m = y.shape
        x = self.offsets_ppm[None, :] - p[:, 1:2]  # (n, m)
        cols = np.empty((n, m, len(amp_idx)))
        cols[..., 0] = 1.0
        for i in range(len(POOLS)):
            j = 4 + 3 * i
            qq = 0.25 * p[:, j + 1 : j + 2] ** 2
            cols[..., 2 + i] = -qq / (qq + (x - p[:, j + 2 : j + 3]) ** 2)
        best = p.copy()
        best_rss = np.full(n, np.inf)
        for gw in _WATER_WIDTHS:
            qw = 0.25 * gw * gw
            cols[..., 1] = -qw / (qw + x**2)
            H = np.einsum("nmi,nmj->nij", cols, cols) + 1e-9 * np.eye(len(amp_idx))
            g = np.einsum("nmi,nm->ni", cols, y)
            a = np.clip(np.linalg.solve(H, g[..., None])[..., 0], lo[amp_idx], hi[amp_idx])
            rss = np.sum((np.einsum("nmi,ni->nm", cols, a) - y) ** 2, axis=1)
            take = rss < best_rss
            best[take, 3] = gw
            best[np.ix_(take, amp_idx)] = a[take]
            best_rss[take] = rss[take]
        return best

    def invalid_voxels(self, y: np.ndarray, b0: np.ndarray | None = None) -> np.ndarray:
        bad = ~np.all(np.isfinite(y), axis=1)
        if b0 is not None:
            bad |= ~np.isfinite(b0)
        return bad

    def fit_block(self, y: np.ndarray, b0: np.ndarray | None = None) -> BlockFit:
        p0 = self.initial_guess(y, b0)
        if resolve_backend(self.backend, has_kernel=self.kernel() is not None) == "numba":
            res = self._solve_compiled(y, p0)
        else:
            res = self.solve_nonlinear(y, p0)
        res.status[res.status == FitStatus.AT_BOUND] = FitStatus.CONVERGED
        return res

    def _solve_compiled(self, y: np.ndarray, p0: np.ndarray) -> BlockFit:
        """The bounded fit by variable projection (one compiled loop over voxels and
        iterations, :func:`._varpro.lorentzian_varpro`: an LM over the ten widths, offsets and
        B0 with the six amplitudes from a bounded linear solve per trial)."""
        from ._varpro import lorentzian_varpro

        lo, hi = self.bounds()
        y = np.ascontiguousarray(y, dtype=np.float64)
        n, npar = p0.shape
        p = np.ascontiguousarray(np.clip(p0, lo, hi), dtype=np.float64)
        status = np.empty(n, dtype=np.uint8)
        rss = np.empty(n)
        stderr = np.empty((n, npar))
        n_iter = np.empty(n, dtype=np.int32)
        opts = self.lm_options
        lorentzian_varpro(
            np.ascontiguousarray(self.offsets_ppm, dtype=np.float64),
            len(POOLS),
            y,
            p,
            np.ascontiguousarray(lo, dtype=np.float64),
            np.ascontiguousarray(hi, dtype=np.float64),
            np.ascontiguousarray(self.scales(), dtype=np.float64),
            int(opts.max_iter),
            float(opts.ftol),
            float(opts.xtol),
            status,
            rss,
            stderr,
            n_iter,
        )
        return BlockFit(p, status, rss, stderr)

    def derive(self, maps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        lo, hi = self.bounds()
        sc = self.scales()
        n = np.zeros(np.shape(maps["Z0"]), dtype=np.float32)
        for i, name in enumerate(self.parameter_names):
            v = np.asarray(maps[name], dtype=float)
            tol = 1e-5 * sc[i]
            n += (np.abs(v - lo[i]) <= tol) | (np.abs(v - hi[i]) <= tol)
        return {"n_at_bound": np.where(np.isfinite(maps["Z0"]), n, np.nan)}
