"""Intravoxel incoherent motion: ``S = S0 (f exp(-b D*) + (1 - f) exp(-b D))`` (Le Bihan et al.
1988, doi:10.1148/radiology.168.2.3393671), and the empirical-Bayes prior helpers.

Which IVIM method when
----------------------
* ``"segmented"`` (default; the usual clinical way, e.g. Gurney-Champion et al. 2018,
  doi:10.1371/journal.pone.0194590): D and the perfusion-free intercept from a weighted
  log-linear fit of ``b >= b_threshold`` (200 s/mm²), then ``S0, f, D*`` with D fixed. Robust,
  fast, the best D; use it for D and f in clinical protocols with few low b-values.
* ``"full"``: all four parameters free (bounded LM started from the segmented estimate). Lowest
  bias for f and D* when SNR is high (≳ 100) and many low b-values are sampled.
* ``"bayes"``: empirical-Bayes maximum a posteriori. A first segmented pass over all masked
  voxels gives a population prior (median and robust spread of ``D``, ``f`` and ``log D*``, and
  the noise level); every voxel is then refitted with those Gaussian priors as extra residual
  rows. Where the data cannot determine D* (low f, low SNR) the estimate shrinks towards the
  population instead of running to a bound; where they can, the prior is weak. Use it for
  D* maps and noisy tumour data (after Orton et al. 2014, doi:10.1002/mrm.24649, and
  Barbieri et al. 2016, doi:10.1002/mrm.25765, as a fast MAP rather than MCMC). Its result
  depends on the population in the mask (documented in provenance, ``prior``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from ...errors import FitError, ProtocolError
from ...fitting.engine import BlockFit
from ...fitting.lm import LMOptions
from ...fitting.status import FitStatus
from ..base import FitInput, FitResult, ParameterSpec, register_model
from ._common import D_MAX, S0_SPEC, BValues, DiffusionModel, diffusivity, kernels, loglinear
from .equations import _ivim_jac, ivim_signal

__all__ = ["IVIM"]

_N_DSTAR_GRID = 16


@register_model
class IVIM(DiffusionModel):
    """Intravoxel incoherent motion, ``S = S0 (f exp(-b D*) + (1 - f) exp(-b D))``.

    Parameters
    ----------
    bvalues : DiffusionProtocol or sequence of float
        The acquisition: b-values in s/mm² (at least 4 distinct; at least 2 distinct
        ``>= b_threshold`` and one below it). ``IVIM.from_protocol(protocol, **options)`` is
        the same.
    method : {"segmented", "full", "bayes"}, keyword-only, default "segmented"
        See :mod:`tumorscope.models.diffusion.ivim` ("Which IVIM method when").
    b_threshold : float, keyword-only, default 200
        b-value (s/mm²) from which the perfusion signal is taken as negligible (segmented
        first step and initial guesses).
    bounds : mapping, keyword-only, optional
        Replace default bounds, e.g. ``{"D_star": (0.002, 0.1)}`` (lower < upper).
    prior : mapping, keyword-only, optional
        ``"bayes"`` only: fixed prior instead of the empirical one, with keys ``D`` (mean,
        sd in mm²/s), ``f`` (mean, sd), ``log_D_star`` (mean, sd of ln(D*/(mm²/s))) and
        ``sigma`` (noise SD in data units).
    backend : {"auto", "numba", "numpy"}, keyword-only

    Notes
    -----
    Maps: ``S0``, ``D`` (mm²/s, [0, 5e-3]), ``f`` ([0, 1]), ``D_star`` (mm²/s,
    [5e-3, 0.2]). The default bounds are those of the OSIPI IVIM code collection tests
    (D ≤ 5e-3 ≤ D* ≤ 0.2): they keep D* above D (no label switching).
    """

    name: ClassVar[str] = "ivim"
    parameters: ClassVar[tuple[ParameterSpec, ...]] = (
        S0_SPEC,
        diffusivity("D", "tissue diffusion coefficient"),
        ParameterSpec("f", "1", 0.0, 1.0, typical=(0.05, 0.3), description="perfusion fraction"),
        ParameterSpec(
            "D_star",
            "mm2/s",
            D_MAX,
            0.5,
            typical=(1e-2, 0.1),
            description="pseudo-diffusion coefficient",
        ),
    )
    methods: ClassVar[tuple[str, ...]] = ("segmented", "full", "bayes")

    def __init__(
        self,
        bvalues: BValues,
        *,
        method: str = "segmented",
        b_threshold: float = 200.0,
        bounds: Mapping[str, Sequence[float]] | None = None,
        prior: Mapping[str, Sequence[float] | float] | None = None,
        backend: str = "auto",
    ) -> None:
        self._acquire(bvalues, method, backend)
        self._set_bounds(bounds)
        self.b_threshold = float(b_threshold)
        # ftol = xtol = 1e-6: a relative RSS change of 1e-6 moves the parameters by ~1e-3 of
        # their standard error; measured on 50,000 noisy voxels it cuts the mean LM trials
        # from 8.5 to 6.0 and the MAX_ITER voxels from 0.6% to 0.01% with identical errors
        self.lm_options = LMOptions(ftol=1e-6, xtol=1e-6)
        hi = np.unique(self.b[self.b >= self.b_threshold])
        lo = np.unique(self.b[self.b < self.b_threshold])
        if np.unique(self.b).size < 4 or hi.size < 2 or lo.size < 1:
            raise ProtocolError(
                "IVIM needs at least 4 distinct b-values, 2 of them >= b_threshold "
                f"({self.b_threshold:g} s/mm²) and 1 below; got {sorted(set(self.b.tolist()))}",
                field="bvalues",
            )
        self.prior = None if prior is None else _check_prior(prior)
        if self.prior is not None and self.method != "bayes":
            raise FitError("prior= is only used by method='bayes'", field="prior")

    def options(self) -> dict[str, Any]:
        return {
            **super().options(),
            "b_threshold": self.b_threshold,
            "prior": self.prior,
            "bounds": {k: list(v) for k, v in self.bound_overrides.items()},
        }

    @classmethod
    def example(cls) -> IVIM:
        return cls([0, 10, 20, 40, 80, 150, 300, 500, 800, 1000])

    def sample_parameters(self, n: int, *, rng: np.random.Generator) -> np.ndarray:
        """Uniform in the typical ranges, except D* in [0.02, 0.1] (identifiable)."""
        p = super().sample_parameters(n, rng=rng)
        p[:, 3] = rng.uniform(0.02, 0.1, n)
        return p

    def kernel(self) -> Any:
        return self._kernel("ivim_kernel")

    def consts(self) -> np.ndarray:
        return self.b

    def signal(self, params: np.ndarray) -> np.ndarray:
        return ivim_signal(self.b, params)

    def jacobian(self, params: np.ndarray) -> np.ndarray:
        return _ivim_jac(self.b, params)

    # -- steps
    def _segmented_D(self, y: np.ndarray) -> BlockFit:
        sel = self.b >= self.b_threshold
        be = self._backend()
        return loglinear(
            y[:, sel], self.b[sel], weighted=True, adc_lo=0.0, adc_hi=D_MAX, backend=be
        )

    def initial_guess(self, y: np.ndarray) -> np.ndarray:
        """Segmented D, then a D* grid with the two amplitudes (S0·f, S0·(1 - f)) solved by
        non-negative 2×2 least squares per grid point (variable projection)."""
        return self._grid_init(y, self._segmented_D(y))

    def _grid_init(self, y: np.ndarray, lin: BlockFit) -> np.ndarray:
        d = np.where(np.isfinite(lin.params[:, 1]), lin.params[:, 1], 1e-3)
        lo, hi = self.bounds()
        grid = np.geomspace(max(lo[3], 1e-3) * 1.1, min(hi[3], 1.0) * 0.95, _N_DSTAR_GRID)
        e2 = np.exp(-np.outer(grid, self.b))  # (G, m)
        out = np.empty((y.shape[0], 4))
        if self._backend() == "numba":
            kernels().ivim_grid_init_serial(
                np.ascontiguousarray(y), self.b, np.ascontiguousarray(d), e2, grid, out
            )
        else:
            e1 = np.exp(-np.outer(d, self.b))  # (n, m)
            best = np.full(y.shape[0], np.inf)
            s11 = np.einsum("nm,nm->n", e1, e1)
            y1 = np.einsum("nm,nm->n", y, e1)
            out[:, 0], out[:, 1], out[:, 2], out[:, 3] = 0.0, d, 0.1, 0.02
            for g, ds in enumerate(grid):
                s22 = float(e2[g] @ e2[g])
                s12 = e1 @ e2[g]
                y2 = y @ e2[g]
                det = s11 * s22 - s12 * s12
                ok = det > 0
                with np.errstate(divide="ignore", invalid="ignore"):
                    a = (s11 * y2 - s12 * y1) / det
                    c = (s22 * y1 - s12 * y2) / det
                neg_a = a < 0
                neg_c = ~neg_a & (c < 0)
                a = np.where(neg_a, 0.0, np.where(neg_c, np.maximum(y2 / s22, 0.0), a))
                c = np.where(neg_a, np.maximum(y1 / s11, 0.0), np.where(neg_c, 0.0, c))
                r = np.sum((y - a[:, None] * e2[g] - c[:, None] * e1) ** 2, axis=1)
                better = ok & (r < best)
                best[better] = r[better]
                s0 = a + c
                out[better, 0] = s0[better]
                with np.errstate(divide="ignore", invalid="ignore"):
                    out[better, 2] = np.where(s0 > 0, a / s0, 0.0)[better]
                out[better, 3] = ds
        bad = out[:, 0] <= 0
        out[bad, 0] = y[bad].max(axis=1)
        out[bad, 2] = 0.1
        out[bad, 3] = grid[_N_DSTAR_GRID // 2]
        return np.clip(out, lo, hi)

    def fit_block(self, y: np.ndarray) -> BlockFit:
        if self.method == "bayes":
            if self.prior is None:
                raise FitError(
                    "method 'bayes' needs a prior; call fit() to estimate it", field="prior"
                )
            return self._map_block(y, self.prior)
        lin = self._segmented_D(y)
        p0 = self._grid_init(y, lin)
        if self.method == "full":
            return self.solve_nonlinear(y, p0)
        # segmented: D fixed at the high-b estimate, then S0, f, D* with per-voxel bounds
        d = lin.params[:, 1]
        ok = np.isfinite(d)
        lo, hi = self.bounds()
        lower = np.tile(lo, (y.shape[0], 1))
        upper = np.tile(hi, (y.shape[0], 1))
        lower[ok, 1] = upper[ok, 1] = d[ok]
        p0[ok, 1] = d[ok]
        res = self.solve_nonlinear(y, p0, lower=lower, upper=upper)
        status = res.status.copy()
        # D sits on its (degenerate) bound by construction: re-derive AT_BOUND from f, D*
        sc = self.scales()
        free_at_bound = np.zeros(y.shape[0], dtype=bool)
        for j in (0, 2, 3):
            free_at_bound |= np.abs(res.params[:, j] - lo[j]) <= 1e-12 * sc[j]
            free_at_bound |= np.abs(hi[j] - res.params[:, j]) <= 1e-12 * sc[j]
        conv = (status == FitStatus.AT_BOUND) | (status == FitStatus.CONVERGED)
        status[conv] = np.where(free_at_bound[conv], FitStatus.AT_BOUND, FitStatus.CONVERGED)
        status[ok & (lin.status == FitStatus.AT_BOUND) & conv] = FitStatus.AT_BOUND
        stderr = res.stderr.copy() if res.stderr is not None else np.full((y.shape[0], 4), np.nan)
        stderr[:, 1] = lin.stderr[:, 1] if lin.stderr is not None else np.nan
        return BlockFit(res.params, status, res.rss, stderr)

    # -- empirical Bayes
    def _map_block(self, y: np.ndarray, prior: Mapping[str, Any]) -> BlockFit:
        n, m = y.shape
        sigma = float(prior["sigma"])
        (mu_d, sd_d), (mu_f, sd_f), (mu_l, sd_l) = prior["D"], prior["f"], prior["log_D_star"]
        w = np.array([sigma / sd_d, sigma / sd_f, sigma / sd_l])
        mu = np.array([mu_d, mu_f, mu_l])
        c = np.r_[m, self.b, w[0], mu[0], w[1], mu[1], w[2], mu[2]]
        yy = np.c_[y, np.zeros((n, 3))]
        p0 = self.initial_guess(y)
        b = self.b

        def fun(p: np.ndarray) -> np.ndarray:
            prior_rows = np.c_[p[:, 1], p[:, 2], np.log(p[:, 3])] - mu
            return np.c_[ivim_signal(b, p), w * prior_rows]

        def jac(p: np.ndarray) -> np.ndarray:
            J = np.zeros((p.shape[0], m + 3, 4))
            J[:, :m] = _ivim_jac(b, p)
            J[:, m, 1] = w[0]
            J[:, m + 1, 2] = w[1]
            J[:, m + 2, 3] = w[2] / p[:, 3]
            return J

        res = self._solve(
            yy,
            p0,
            *self.bounds(),
            fun=fun,
            jac=jac,
            kernel=self._kernel("ivim_map_kernel"),
            consts=c,
        )
        # report the data RSS (without the prior rows)
        with np.errstate(invalid="ignore", over="ignore"):
            rss = np.sum((y - ivim_signal(b, res.params)) ** 2, axis=1)
        return BlockFit(res.params, res.status, rss, res.stderr)

    def _fit_validated(self, given: FitInput) -> FitResult:
        """Fit the checked input (the hook of :meth:`Model.fit`). ``"bayes"`` without a given
        prior runs two passes: a segmented fit of every voxel gives the prior of the second."""
        if self.method != "bayes" or self.prior is not None:
            return super()._fit_validated(given)

        def variant(method: str, prior: Mapping[str, Any] | None = None) -> IVIM:
            return IVIM(
                self.b,
                method=method,
                b_threshold=self.b_threshold,
                bounds=self.bound_overrides,
                prior=prior,
                backend=self.backend,
            )

        flat = variant("segmented")._fit_engine(given)
        second = variant("bayes", _empirical_prior(flat.params, flat.status, flat.rss, self.b.size))
        second.lm_options = self.lm_options
        res = second._result(given.data, second._fit_engine(given))
        res.provenance["options"]["prior_source"] = "empirical (segmented first pass)"
        return res


def _check_prior(prior: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("D", "f", "log_D_star"):
        if key not in prior:
            raise FitError(f"prior needs key {key!r} (mean, sd)", field="prior")
        mean, sd = (float(v) for v in prior[key])
        if not (np.isfinite(mean) and np.isfinite(sd) and sd > 0):
            raise FitError(
                f"prior[{key!r}] needs a finite mean and sd > 0, got {prior[key]}", field="prior"
            )
        out[key] = [mean, sd]
    if "sigma" not in prior:
        raise FitError("prior needs key 'sigma' (noise SD, data units)", field="prior")
    sigma = float(prior["sigma"])
    if not (np.isfinite(sigma) and sigma > 0):
        raise FitError(f"prior['sigma'] must be > 0, got {sigma}", field="prior")
    out["sigma"] = sigma
    return out


def _empirical_prior(
    params: np.ndarray, status: np.ndarray, rss: np.ndarray, m: int
) -> dict[str, Any]:
    """Population prior from a first pass: medians and 1.4826·MAD (robust SD)."""
    ok = (status <= FitStatus.AT_BOUND) & np.all(np.isfinite(params), axis=1)
    if ok.sum() < 1:
        raise FitError(
            "no voxel could be fitted in the first (segmented) pass; cannot estimate the prior",
            field="data",
        )
    p = params[ok].astype(np.float64)

    def robust(x: np.ndarray, floor: float) -> list[float]:
        med = float(np.median(x))
        sd = float(1.4826 * np.median(np.abs(x - med)))
        return [med, max(sd, floor)]

    sigma = float(np.sqrt(np.median(rss[ok].astype(np.float64)) / max(m - 4, 1)))
    s0 = float(np.median(p[:, 0]))
    return {
        "D": robust(p[:, 1], 1e-5),
        "f": robust(p[:, 2], 0.01),
        "log_D_star": robust(np.log(p[:, 3]), 0.1),
        "sigma": max(sigma, 1e-6 * max(s0, 1e-12)),
    }
