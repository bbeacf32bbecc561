"""Mean-signal (powder-averaged) diffusion kurtosis: ``S̄(b) = S0 exp(-b D + b² D² K / 6)`` with
``S̄`` the mean over the directions of a shell (Jensen et al. 2005, doi:10.1002/mrm.20508;
powder average: Henriques et al. 2021, doi:10.1016/j.neuroimage.2020.117460)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ...errors import FitError, ProtocolError
from ...fitting.engine import BlockFit
from ...fitting.linear import weighted_lls
from ...fitting.status import FitStatus
from ...fitting.uncertainty import stderr_from_jacobian
from ..base import ParameterSpec, register_model
from ._common import S0_SPEC, BValues, DiffusionModel, diffusivity, invalid_diffusion, kernels
from .equations import _dki_jac, dki_signal

__all__ = ["DKI"]


@register_model
class DKI(DiffusionModel):
    """Mean-signal (powder-averaged) diffusion kurtosis, ``S̄ = S0 exp(-b D + b² D² K / 6)``.

    Parameters
    ----------
    bvalues : DiffusionProtocol or sequence of float
        The acquisition: b-values in s/mm², one per volume (several directions per shell
        allowed). At least 3 distinct shells (e.g. 0, 1000, 2000).
        ``DKI.from_protocol(protocol, **options)`` is the same.
    method : {"wlls", "nlls"}, keyword-only, default "wlls"
        ``"wlls"``: weighted log-quadratic least squares on the shell means (weights
        ``n_directions · S̄²``, as DIPY's ``MeanDiffusionKurtosisModel``); voxels whose
        estimate breaks the constraints are refitted by bounded LM. ``"nlls"``: bounded LM
        on the shell means for every voxel, started from the WLLS estimate.
    b_tolerance : float, keyword-only, default 20
        b-values within this distance (s/mm²) belong to one shell.
    k_max : float, keyword-only, default 3
        Upper bound of K. K is constrained to ``[0, k_max]``: negative kurtosis is not
        physical for a mixture of Gaussian compartments (Tabesh et al. 2011,
        doi:10.1002/mrm.22932); voxels at a bound get status ``AT_BOUND``.
    backend : {"auto", "numba", "numpy"}, keyword-only

    Notes
    -----
    Maps: ``S0``, ``D`` (mean-signal apparent diffusivity Dapp, mm²/s), ``K`` (mean-signal
    kurtosis Kapp). Directions of each shell are averaged arithmetically before fitting.
    """

    name: ClassVar[str] = "dki"
    parameters: ClassVar[tuple[ParameterSpec, ...]] = (
        S0_SPEC,
        diffusivity("D", "mean-signal apparent diffusivity"),
        ParameterSpec("K", "1", 0.0, 3.0, typical=(0.3, 1.5), description="mean-signal kurtosis"),
    )
    methods: ClassVar[tuple[str, ...]] = ("wlls", "nlls")

    def __init__(
        self,
        bvalues: BValues,
        *,
        method: str = "wlls",
        b_tolerance: float = 20.0,
        k_max: float = 3.0,
        backend: str = "auto",
    ) -> None:
        self._acquire(bvalues, method, backend)
        self.b_tolerance = float(b_tolerance)
        self.k_max = float(k_max)
        if not (np.isfinite(self.k_max) and self.k_max > 0):
            raise FitError(f"must be > 0, got {k_max}", field="k_max")
        order = np.argsort(self.b, kind="stable")
        shell = np.zeros(self.b.size, dtype=int)
        current, ref = 0, self.b[order[0]]
        for i in order:
            if self.b[i] - ref > self.b_tolerance:
                current += 1
                ref = self.b[i]
            shell[i] = current
        n_shell = current + 1
        if n_shell < 3:
            raise ProtocolError(
                f"DKI needs at least 3 distinct b-value shells, got {n_shell} "
                f"({sorted(set(self.b.tolist()))} with tolerance {self.b_tolerance:g})",
                field="bvalues",
            )
        self._shell = shell
        self._ng = np.bincount(shell, minlength=n_shell).astype(float)
        avg = np.zeros((self.b.size, n_shell))
        avg[np.arange(self.b.size), shell] = 1.0 / self._ng[shell]
        self._avg = avg
        self.shell_b = avg.T @ self.b  # mean b of each shell

    def options(self) -> dict[str, Any]:
        return {
            **super().options(),
            "b_tolerance": self.b_tolerance,
            "k_max": self.k_max,
        }

    @classmethod
    def example(cls) -> DKI:
        return cls([0, 500, 1000, 1500, 2000, 2500])

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = super().bounds()
        hi[2] = self.k_max
        return lo, hi

    def sample_parameters(self, n: int, *, rng: np.random.Generator) -> np.ndarray:
        """Typical ranges, with K below the monotonic-decay limit 3/(b_max D) (Tabesh 2011)."""
        p = super().sample_parameters(n, rng=rng)
        p[:, 2] = np.minimum(p[:, 2], 0.8 * 3.0 / (self.b.max() * p[:, 1]))
        return p

    def kernel(self) -> Any:
        return self._kernel("dki_kernel")

    def consts(self) -> np.ndarray:
        """Shell b-values then sqrt(directions per shell) (the kernel fits weighted shell means)."""
        return np.r_[self.shell_b, np.sqrt(self._ng)]

    def invalid_voxels(self, y: np.ndarray) -> np.ndarray:
        return invalid_diffusion(y, np.flatnonzero(self._shell == 0))

    def signal(self, params: np.ndarray) -> np.ndarray:
        return dki_signal(self.b, params)

    def jacobian(self, params: np.ndarray) -> np.ndarray:
        return _dki_jac(self.b, params)

    def powder_average(self, y: np.ndarray) -> np.ndarray:
        """Mean over the directions of each shell, ``(n, m) -> (n, n_shells)``."""
        return np.asarray(y, dtype=np.float64) @ self._avg

    def _wlls(self, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        bs = self.shell_b
        A = np.c_[np.ones(bs.size), -bs, bs * bs / 6.0]
        pos = ys > 0
        w = np.where(pos, self._ng * ys * ys, 0.0)
        lin = weighted_lls(A, np.log(np.where(pos, ys, 1.0)), w)
        s0 = np.exp(lin.coef[:, 0])
        d = lin.coef[:, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            k = lin.coef[:, 2] / (d * d)
        return np.c_[s0, d, k], lin.ok & (pos.sum(axis=1) >= 3), lin.rss

    def initial_guess(self, y: np.ndarray) -> np.ndarray:
        p, ok, _ = self._wlls(self.powder_average(y))
        lo, hi = self.bounds()
        p = np.where(np.isfinite(p), p, [[1.0, 1e-3, 0.5]])
        p[~ok] = np.c_[y[~ok].max(axis=1), np.full((~ok).sum(), 1e-3), np.full((~ok).sum(), 0.5)]
        return np.clip(p, lo, hi)

    @property
    def handles_invalid(self) -> bool:  # type: ignore[override]
        """With numba the fused kernel validates, averages and fits in one pass."""
        return self._backend() == "numba"

    @property
    def native_dtype(self) -> bool:  # type: ignore[override]
        return self.handles_invalid

    def fit_block(self, y: np.ndarray) -> BlockFit:
        lo, hi = self.bounds()
        n = y.shape[0]
        be = self._backend()
        if be == "numba":
            ys = np.empty((n, self.shell_b.size))
            params = np.empty((n, 3))
            stderr = np.empty((n, 3))
            rss = np.empty(n)
            status = np.empty(n, dtype=np.uint8)
            refit = np.empty(n, dtype=np.bool_)
            kernels().dki_wlls_block_serial(
                np.ascontiguousarray(y),
                self._shell.astype(np.int64),
                self._ng,
                self.shell_b,
                float(hi[1]),
                float(hi[2]),
                ys,
                params,
                stderr,
                rss,
                status,
                refit,
            )
            valid = status != FitStatus.INVALID_INPUT
            if self.method == "nlls":
                refit = valid
            p0 = params
        else:
            ys = self.powder_average(y)
            p, ok, _ = self._wlls(ys)
            inside = ok & np.all((p >= lo) & (p <= hi), axis=1) & np.all(np.isfinite(p), axis=1)
            refit = np.ones(n, dtype=bool) if self.method == "nlls" else ~inside
            params = p.copy()
            status = np.full(n, FitStatus.CONVERGED, dtype=np.uint8)
            rss = np.full(n, np.nan)
            stderr = np.full((n, 3), np.nan)
            keep = ~refit
            if keep.any():
                # WLLS estimates inside the constraints: residuals and standard errors in the
                # signal domain from the Jacobian of the non-linear model at the estimate
                pk = params[keep]
                J = _dki_jac(self.shell_b, pk) * np.sqrt(self._ng)[None, :, None]
                r = (ys[keep] - dki_signal(self.shell_b, pk)) * np.sqrt(self._ng)
                rss[keep] = np.sum(r * r, axis=1)
                stderr[keep] = stderr_from_jacobian(J, rss[keep])
            p0 = np.where(np.isfinite(p), p, [[1.0, 1e-3, 0.5]])
            bad0 = ~ok
            p0[bad0, 0] = ys[bad0].max(axis=1)
            p0 = np.clip(p0, lo, hi)
        if refit.any():
            # weights n_directions: the powder average of g directions has variance sigma²/g
            sw = np.sqrt(self._ng)
            res = self._solve(
                ys[refit] * sw,
                np.clip(p0[refit], lo, hi),
                lo,
                hi,
                fun=lambda q: dki_signal(self.shell_b, q) * sw,
                jac=lambda q: _dki_jac(self.shell_b, q) * sw[None, :, None],
                kernel=self.kernel(),
                consts=self.consts(),
            )
            params[refit] = res.params
            status[refit] = res.status
            rss[refit] = res.rss
            stderr[refit] = res.stderr
        return BlockFit(params, status, rss, stderr)
