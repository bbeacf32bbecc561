"""Intravoxel incoherent motion: ``S = S0 (f exp(-b D*) + (1 - f) exp(-b D))`` (Le Bihan et al.
1988, doi:10.1148/radiology.168.2.3393671), and the empirical-Bayes prior helpers.

Which IVIM method when
----------------------
* ``"segmented"`` (default; the usual clinical way, e.g. Gurney-Champion et al. 2018,
  doi:10.1371/journal.pone.0194590): D and the perfusion-free intercept from a weighted
  log-linear fit of ``b >= b_threshold`` (200 s/mm², the threshold: settable), then
  ``S0, f, D*`` with D fixed, by variable projection (closed-form amplitudes, a grid and a
  safeguarded Newton search in D*: :mod:`._ivim_varpro`). **Perfusion correction**: at ``b = 200`` a slow pseudo-diffusion
  (D* ~ 0.01 mm²/s) still leaves ``f exp(-200 D*)`` ~ 15 % of the perfusion signal, which
  biases D up and D* with it (DIPY's noise-free test voxel, D* = 0.00885: 0.0110 without
  correction). The fit therefore subtracts the current perfusion estimate
  ``S0 f exp(-b D*)`` from the ``b >= b_threshold`` samples, refits D, refits
  ``S0, f, D*``, up to ``perfusion_correction`` times (default 10; stops when D moves by
  < 1e-5 relative): noise-free voxels come out exact (D* 0.008854). The price is variance: the
  corrected estimate tends to the bi-exponential least-squares fit, noisier than the
  classic biased segmented fit at low SNR (measured in ``docs/diffusion.md``);
  ``perfusion_correction=0`` is the classic segmented fit. Robust, the best D; use it for D
  and f in clinical protocols with few low b-values.
* Every method fits ``f`` in ``[0, 1]`` (blood, cysts, vessels reach 1) and flags the
  parameters the data cannot determine: the derived map ``unidentified`` (bit 1: D, where
  ``1 - f < 2 %``; bit 2: D*, where ``f < 2 %`` or D* is on a bound) and status ``AT_BOUND``
  there, with the best estimate within the bounds in the maps. Negative samples (zero-mean
  noise around a vanished signal) are valid input.
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
from . import _ivim_varpro
from ._common import D_MAX, S0_SPEC, BValues, DiffusionModel, diffusivity, kernels, loglinear
from .equations import _ivim_jac, ivim_signal

__all__ = ["IVIM", "unidentified"]

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
    perfusion_correction : int, keyword-only, default 10
        ``"segmented"`` (and the first pass of ``"bayes"``): at most this many
        perfusion-corrected refits of D (see the module notes); 0 = classic segmented fit.
    prior : mapping, keyword-only, optional
        ``"bayes"`` only: fixed prior instead of the empirical one, with keys ``D`` (mean,
        sd in mm²/s), ``f`` (mean, sd), ``log_D_star`` (mean, sd of ln(D*/(mm²/s))) and
        ``sigma`` (noise SD in data units).
    backend : {"auto", "numba", "numpy"}, keyword-only

    Notes
    -----
    Maps: ``S0``, ``D`` (mm²/s, [0, 5e-3]), ``f`` ([0, 1]), ``D_star`` (mm²/s,
    [5e-3, 0.5]); derived ``unidentified`` (0-3, see :func:`unidentified`). The default
    bounds follow the OSIPI IVIM code collection tests (D ≤ 5e-3 ≤ D*, f in [0, 1]; D* up
    to 0.5 rather than 0.2): they keep D* above D (no label switching).
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
    derived: ClassVar[tuple[ParameterSpec, ...]] = (
        ParameterSpec(
            "unidentified",
            "1",
            0.0,
            3.0,
            description="bit 1: D not identifiable; bit 2: D* not identifiable",
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
        perfusion_correction: int = 10,
        backend: str = "auto",
    ) -> None:
        self._acquire(bvalues, method, backend)
        self._set_bounds(bounds)
        self.b_threshold = float(b_threshold)
        self.perfusion_correction = int(perfusion_correction)
        if self.perfusion_correction < 0:
            raise FitError(
                f"must be >= 0, got {perfusion_correction}", field="perfusion_correction"
            )
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
            "perfusion_correction": self.perfusion_correction,
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
        return self._loglinear_D(y[:, self.b >= self.b_threshold])

    def invalid_voxels(self, y: np.ndarray) -> np.ndarray:
        """NaN/inf anywhere or a non-positive mean at the lowest b. Negative samples are
        valid: normalised or complex-averaged data carry zero-mean noise, and a vanished
        signal (blood at high b) gives negative samples half of the time."""
        base = y[:, self.b == self.b.min()].mean(axis=1)
        return ~(np.all(np.isfinite(y), axis=1) & (base > 0))

    def initial_guess(self, y: np.ndarray) -> np.ndarray:
        """Segmented D, then a D* grid with the two amplitudes (S0·f, S0·(1 - f)) solved by
        non-negative 2×2 least squares per grid point (variable projection)."""
        return self._grid_init(y, self._segmented_D(y))

    def _dstar_grid(self) -> np.ndarray:
        """The D* grid of the start values (16 geometric points inside the bounds)."""
        lo, hi = self.bounds()
        grid = np.geomspace(max(lo[3], 1e-3) * 1.1, min(hi[3], 1.0) * 0.95, _N_DSTAR_GRID)
        return np.clip(np.sort(grid), lo[3], hi[3])

    def _grid_init(self, y: np.ndarray, lin: BlockFit) -> np.ndarray:
        d = np.where(np.isfinite(lin.params[:, 1]), lin.params[:, 1], 1e-3)
        lo, hi = self.bounds()
        grid = self._dstar_grid()
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
        if self.method == "full":
            res = self.solve_nonlinear(y, self._grid_init(y, lin))
            return self._flag_unidentified(BlockFit(res.params, res.status, res.rss, res.stderr))
        # segmented: D fixed at the high-b estimate, then S0, f, D* (variable projection)
        fit = self._fixed_D(y, lin)
        # perfusion correction: the b >= b_threshold signal still holds S0 f exp(-b D*);
        # subtract the current estimate of it, refit D, refit S0, f, D* (see the class notes)
        sel = self.b >= self.b_threshold
        act = np.arange(y.shape[0])  # voxels still being corrected
        for _ in range(self.perfusion_correction):
            ok = fit.status[act] <= FitStatus.AT_BOUND
            if fit.stderr is not None:  # only where the perfusion estimate is determined
                se, pa = fit.stderr[act], fit.params[act]
                with np.errstate(invalid="ignore"):
                    ok &= (se[:, 2] < CORRECTION_SE * pa[:, 2]) & (
                        se[:, 3] < CORRECTION_SE * pa[:, 3]
                    )
            act = act[ok]
            if act.size == 0:
                break
            pf = fit.params[act]
            perf = (pf[:, 0] * pf[:, 2])[:, None] * np.exp(-np.outer(pf[:, 3], self.b[sel]))
            lin2 = self._loglinear_D(y[act][:, sel] - perf)
            good = (lin2.status <= FitStatus.AT_BOUND) & np.isfinite(lin2.params[:, 1])
            if not good.all():
                act, pf = act[good], pf[good]
                lin2 = BlockFit(
                    lin2.params[good],
                    lin2.status[good],
                    lin2.rss[good],
                    None if lin2.stderr is None else lin2.stderr[good],
                )
            if act.size == 0:
                break
            new = self._fixed_D(y[act], lin2)
            step = np.abs(new.params[:, 1] - fit.params[act, 1])
            fit.params[act] = new.params
            fit.status[act] = new.status
            fit.rss[act] = new.rss
            if fit.stderr is not None and new.stderr is not None:
                fit.stderr[act] = new.stderr
            act = act[step > 1e-5 * np.abs(new.params[:, 1])]
            if act.size == 0:
                break
        return self._flag_unidentified(fit)

    def _loglinear_D(self, y_hi: np.ndarray) -> BlockFit:
        """Weighted log-linear (S0, D) of the ``b >= b_threshold`` samples; samples <= 0
        (Gaussian noise around a vanished signal) get zero weight instead of failing the voxel."""
        sel = self.b >= self.b_threshold
        yy = np.ascontiguousarray(np.maximum(y_hi, 0.0))
        be = self._backend()
        return loglinear(yy, self.b[sel], weighted=True, adc_lo=0.0, adc_hi=D_MAX, backend=be)

    def _fixed_D(self, y: np.ndarray, lin: BlockFit) -> BlockFit:
        """S0, f, D* with D fixed at ``lin``'s estimate: variable projection (the amplitudes
        ``S0 f`` and ``S0 (1 - f)`` in closed form, a grid and a safeguarded Newton search in
        D*, :mod:`._ivim_varpro`); where that estimate failed, all four by bounded LM from the
        grid start."""
        d = lin.params[:, 1]
        ok = np.isfinite(d)
        lo, hi = self.bounds()
        n = y.shape[0]
        if ok.all():  # the usual case: no copies of the block
            params, res_status, rss, stderr = self._varpro(y, d)
        else:
            params = np.empty((n, 4))
            res_status = np.empty(n, dtype=np.uint8)
            rss = np.empty(n)
            stderr = np.full((n, 4), np.nan)
            if ok.any():
                params[ok], res_status[ok], rss[ok], stderr[ok] = self._varpro(y[ok], d[ok])
            free = BlockFit(lin.params[~ok], lin.status[~ok], lin.rss[~ok], None)
            res = self.solve_nonlinear(y[~ok], self._grid_init(y[~ok], free))
            params[~ok], res_status[~ok], rss[~ok] = res.params, res.status, res.rss
            if res.stderr is not None:
                stderr[~ok] = res.stderr
        res = BlockFit(params, res_status, rss, stderr)
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
        stderr[ok, 1] = lin.stderr[ok, 1] if lin.stderr is not None else np.nan
        return BlockFit(res.params, status, res.rss, stderr)

    def _varpro(
        self, y: np.ndarray, d: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Params ``(n, 4)``, status, rss and standard errors of the fixed-D fit of the rows
        ``y`` with the finite D ``d``, by :mod:`._ivim_varpro` (compiled or numpy)."""
        lo, hi = self.bounds()
        grid = self._dstar_grid()
        e2 = np.exp(-np.outer(grid, self.b))
        cons = _ivim_varpro.constraints(lo[0], hi[0], lo[2], hi[2])
        yy = np.ascontiguousarray(y, dtype=np.float64)
        dd = np.ascontiguousarray(d, dtype=np.float64)
        kernel = _ivim_varpro.kernel() if self._backend() == "numba" else None
        if kernel is not None:
            out = np.empty((y.shape[0], 6))
            se = np.empty((y.shape[0], 4))
            args = (float(lo[3]), float(hi[3]), _ivim_varpro.MAX_NEWTON, _ivim_varpro.XTOL)
            kernel(yy, self.b, dd, grid, e2, cons, *args, out, se)
        else:
            out, se = _ivim_varpro.fixed_d_varpro_numpy(
                yy, self.b, dd, grid, e2, cons, float(lo[3]), float(hi[3])
            )
        return out[:, :4], out[:, 5].astype(np.uint8), out[:, 4], se

    def _flag_unidentified(self, fit: BlockFit) -> BlockFit:
        """Status AT_BOUND where D or D* is not identifiable (:func:`unidentified`)."""
        flags = unidentified(fit.params[:, 2], fit.params[:, 3], self.bounds())
        conv = fit.status == FitStatus.CONVERGED
        fit.status[conv & (flags > 0)] = FitStatus.AT_BOUND
        return fit

    def derive(self, maps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``"unidentified"``: bit 1 = D not identifiable, bit 2 = D* not identifiable."""
        return {"unidentified": unidentified(maps["f"], maps["D_star"], self.bounds())}

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
        return self._flag_unidentified(BlockFit(res.params, res.status, rss, res.stderr))

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
                perfusion_correction=self.perfusion_correction,
                backend=self.backend,
            )

        flat = variant("segmented")._fit_engine(given)
        second = variant("bayes", _empirical_prior(flat.params, flat.status, flat.rss, self.b.size))
        second.lm_options = self.lm_options
        flat2 = second._fit_engine(given)
        res = second._result(given.data, flat2, order=flat2.order)
        res.provenance["options"]["prior_source"] = "empirical (segmented first pass)"
        return res


#: Perfusion correction only where the standard errors of f and D* are below this fraction
#: of their values (a noisy perfusion estimate subtracted from the high-b signal biases D).
CORRECTION_SE = 0.25

#: Fractions below which a compartment is taken as absent (:func:`unidentified`).
F_UNIDENTIFIED = 0.02


def unidentified(
    f: np.ndarray, d_star: np.ndarray, bounds: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """Which IVIM parameters the estimate cannot determine: bit 1 (value 1) D, bit 2 (value 2)
    D*; 0 = both identifiable, 3 = neither.

    * D is not identifiable when the tissue fraction ``1 - f`` is below
      :data:`F_UNIDENTIFIED` (2 %): pure blood, cysts, vessels (f up to 1).
    * D* is not identifiable when ``f`` is below 2 % (no perfusion signal) or D* sits on one
      of its bounds (the decay is faster than the lowest b-values sample, or as slow as D).

    The maps keep the best estimate within the bounds; the fit's status is ``AT_BOUND`` for
    such voxels and the ``unidentified`` map says which parameter to ignore. NaN inputs give
    NaN.
    """
    lo, hi = bounds
    f = np.asarray(f, dtype=np.float64)
    ds = np.asarray(d_star, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        no_d = (1.0 - f) < F_UNIDENTIFIED
        at = (np.abs(ds - lo[3]) <= 1e-9 * hi[3]) | (np.abs(hi[3] - ds) <= 1e-9 * hi[3])
        no_ds = (f < F_UNIDENTIFIED) | at
    flags = (no_d.astype(np.uint8) | (no_ds.astype(np.uint8) << 1)).astype(np.float32)
    return np.where(np.isnan(f) | np.isnan(ds), np.float32(np.nan), flags)


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
