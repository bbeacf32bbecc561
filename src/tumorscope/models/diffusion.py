"""Diffusion models: mono-exponential ADC, IVIM and mean-signal (powder-averaged) kurtosis.

b-values are in s/mm², diffusivities in mm²/s, ``f`` and ``K`` dimensionless, ``S0`` in the
units of the data. ``data`` has one value per b-value on its last axis (trace-weighted or
directional images; DKI averages directions of each shell itself).

Signal equations
----------------
* ADC (Stejskal & Tanner 1965, doi:10.1063/1.1695690): ``S = S0 exp(-b ADC)``.
* IVIM (Le Bihan et al. 1988, doi:10.1148/radiology.168.2.3393671):
  ``S = S0 (f exp(-b D*) + (1 - f) exp(-b D))``.
* Mean-signal DKI (Jensen et al. 2005, doi:10.1002/mrm.20508; powder average: Henriques et al.
  2021, doi:10.1016/j.neuroimage.2020.117460): ``S̄(b) = S0 exp(-b D + b² D² K / 6)`` with
  ``S̄`` the mean over the directions of a shell.

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

import functools
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Literal

import numpy as np

from ..errors import FitError, ProtocolError
from ..fitting.engine import DEFAULT_CHUNK_VOXELS, BlockFit, FlatFit, fit_blocks, validate_inputs
from ..fitting.linear import weighted_lls
from ..fitting.lm import LMOptions, levenberg_marquardt
from ..fitting.status import FitStatus
from ..protocol import DiffusionProtocol
from .base import FitResult, Model, ParameterSpec, register_model, resolve_backend

__all__ = ["ADC", "DKI", "IVIM", "adc_signal", "dki_signal", "ivim_signal"]

_D_MAX = 5e-3  # mm²/s, free water at 37 °C is ~3e-3
_S0 = ParameterSpec(
    "S0", "a.u.", 0.0, np.inf, typical=(100.0, 1000.0), description="signal at b = 0"
)


def _diffusivity(name: str, description: str) -> ParameterSpec:
    return ParameterSpec(
        name, "mm2/s", 0.0, _D_MAX, typical=(5e-4, 2.5e-3), description=description
    )


# ---------------------------------------------------------------------- signal equations
def adc_signal(b: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Mono-exponential decay ``S0 exp(-b ADC)``.

    Parameters
    ----------
    b : ndarray, shape (m,)
        b-values, s/mm².
    params : ndarray, shape (..., 2)
        ``(S0, ADC)``, ADC in mm²/s.

    Returns
    -------
    ndarray, shape (..., m)
    """
    p = np.asarray(params, dtype=np.float64)
    return p[..., :1] * np.exp(-p[..., 1:2] * np.asarray(b, dtype=np.float64))


def ivim_signal(b: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Bi-exponential IVIM signal ``S0 (f exp(-b D*) + (1 - f) exp(-b D))``.

    Parameters
    ----------
    b : ndarray, shape (m,)
        b-values, s/mm².
    params : ndarray, shape (..., 4)
        ``(S0, D, f, D_star)``; D and D* in mm²/s, f in 0–1.

    Returns
    -------
    ndarray, shape (..., m)

    References
    ----------
    Le Bihan et al. 1988, doi:10.1148/radiology.168.2.3393671.
    """
    p = np.asarray(params, dtype=np.float64)
    bb = np.asarray(b, dtype=np.float64)
    s0, d, f, ds = (p[..., i : i + 1] for i in range(4))
    return s0 * (f * np.exp(-bb * ds) + (1.0 - f) * np.exp(-bb * d))


def dki_signal(b: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Mean-signal kurtosis ``S0 exp(-b D + b² D² K / 6)``.

    Parameters
    ----------
    b : ndarray, shape (m,)
        b-values, s/mm².
    params : ndarray, shape (..., 3)
        ``(S0, D, K)``; D in mm²/s, K dimensionless.

    Returns
    -------
    ndarray, shape (..., m)

    References
    ----------
    Jensen et al. 2005, doi:10.1002/mrm.20508.
    """
    p = np.asarray(params, dtype=np.float64)
    bb = np.asarray(b, dtype=np.float64)
    s0, d, k = (p[..., i : i + 1] for i in range(3))
    return s0 * np.exp(-bb * d + (bb * d) ** 2 * k / 6.0)


# ---------------------------------------------------------------------- helpers
def _bvalues(bvalues: Any) -> np.ndarray:
    if isinstance(bvalues, DiffusionProtocol):
        return bvalues.b.copy()
    return DiffusionProtocol(tuple(np.asarray(bvalues, dtype=float).ravel())).b.copy()


@functools.cache
def _numba() -> Any:
    try:
        from . import _diffusion_numba
    except ImportError:  # pragma: no cover - numba is in the 'fast' extra
        return None
    return _diffusion_numba


def _lm_backend(backend: str) -> str:
    """The diffusion models run blocks in the engine's thread pool: GIL-free serial kernels."""
    return "numba-serial" if backend == "numba" else backend


def _invalid_diffusion(y: np.ndarray, base_idx: np.ndarray) -> np.ndarray:
    """NaN/inf anywhere, negative anywhere, or a non-positive mean at the lowest b-value."""
    finite = np.all(np.isfinite(y), axis=1)
    nonneg = np.all(y >= 0, axis=1) if finite.all() else np.all(np.nan_to_num(y) >= 0, axis=1)
    base = y[:, base_idx].mean(axis=1)
    return ~(finite & nonneg & (base > 0))


class _DiffusionModel(Model):
    measurement_name: ClassVar[str] = "b-values"
    thread_safe: ClassVar[bool] = True
    b: np.ndarray

    @property
    def n_measurements(self) -> int:
        return int(self.b.size)

    def invalid_voxels(self, y: np.ndarray) -> np.ndarray:
        return _invalid_diffusion(y, np.flatnonzero(self.b == self.b.min()))


def _loglinear(
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
        nbm = _numba()
        params = np.empty((n, 2))
        stderr = np.empty((n, 2))
        rss = np.empty(n)
        status = np.empty(n, dtype=np.uint8)
        nbm.loglinear_block_serial(
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
    invalid = _invalid_diffusion(y, base_idx)
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


# ---------------------------------------------------------------------- ADC
@register_model
class ADC(_DiffusionModel):
    """Apparent diffusion coefficient, ``S = S0 exp(-b ADC)``.

    Parameters
    ----------
    bvalues : sequence of float or DiffusionProtocol
        b-values in s/mm², one per volume (at least two distinct after exclusion).
    method : {"wlls", "lls", "nlls"}, keyword-only, default "wlls"
        ``"wlls"``: log-linear least squares weighted by ``S²`` (approximates least squares on
        the signal; Salvador et al. 2005, doi:10.1002/hbm.20076; Veraart et al. 2013,
        doi:10.1016/j.neuroimage.2013.05.028). ``"lls"``: unweighted log-linear.
        ``"nlls"``: bounded LM on the signal, started from the WLLS estimate.
    b_min, b_max : float, keyword-only, optional
        Use only b-values in ``[b_min, b_max]`` (e.g. ``b_min=200`` excludes the perfusion
        regime, as clinical ADC protocols do). The data still carry every b-value; the
        excluded ones are ignored.
    backend : {"auto", "numba", "numpy"}, keyword-only

    Notes
    -----
    Maps: ``"S0"`` (data units), ``"ADC"`` (mm²/s, bounded to [0, 5e-3]; values outside are
    clipped with status ``AT_BOUND``). Samples ``<= 0`` get zero weight in the log-linear fits
    (magnitude data at high b can be exactly 0). For linear methods ``rss`` is the weighted
    log-domain objective, which with ``S²`` weights approximates the signal RSS.
    """

    name: ClassVar[str] = "adc"
    parameters: ClassVar[tuple[ParameterSpec, ...]] = (
        _S0,
        ParameterSpec(
            "ADC",
            "mm2/s",
            0.0,
            _D_MAX,
            typical=(3e-4, 3e-3),
            description="apparent diffusion coefficient",
        ),
    )
    methods: ClassVar[tuple[str, ...]] = ("wlls", "lls", "nlls")
    native_dtype: ClassVar[bool] = True

    def __init__(
        self,
        bvalues: Sequence[float] | np.ndarray | DiffusionProtocol,
        *,
        method: str = "wlls",
        b_min: float | None = None,
        b_max: float | None = None,
        backend: str = "auto",
    ) -> None:
        self.b = _bvalues(bvalues)
        self.method = self._check_method(method)
        resolve_backend(backend, has_kernel=True)
        self.backend = backend
        self.b_min = None if b_min is None else float(b_min)
        self.b_max = None if b_max is None else float(b_max)
        keep = np.ones(self.b.size, dtype=bool)
        if self.b_min is not None:
            keep &= self.b >= self.b_min
        if self.b_max is not None:
            keep &= self.b <= self.b_max
        if np.unique(self.b[keep]).size < 2:
            raise ProtocolError(
                f"need at least 2 distinct b-values in [{self.b_min}, {self.b_max}], "
                f"got {sorted(set(self.b[keep].tolist()))}",
                field="bvalues",
            )
        self._keep = np.flatnonzero(keep)

    def options(self) -> dict[str, Any]:
        return {
            "bvalues": self.b.tolist(),
            "method": self.method,
            "b_min": self.b_min,
            "b_max": self.b_max,
        }

    @classmethod
    def example(cls) -> ADC:
        return cls([0, 50, 400, 800, 1000])

    def kernel(self) -> Any:
        nbm = _numba()
        return None if nbm is None else nbm.mono_kernel

    def consts(self) -> np.ndarray:
        return self.b[self._keep]

    def invalid_voxels(self, y: np.ndarray) -> np.ndarray:
        kb = self.b[self._keep]
        base = self._keep[kb == kb.min()]
        return _invalid_diffusion(y, base)

    def signal(self, params: np.ndarray) -> np.ndarray:
        return adc_signal(self.b, params)

    def jacobian(self, params: np.ndarray) -> np.ndarray:
        p = np.asarray(params, dtype=np.float64)
        e = np.exp(-p[:, 1:2] * self.b)
        return np.stack([e, -p[:, :1] * self.b * e], axis=-1)

    def initial_guess(self, y: np.ndarray) -> np.ndarray:
        return self._linear(y, weighted=True).params

    @property
    def handles_invalid(self) -> bool:  # type: ignore[override]
        """The fused log-linear kernels validate voxels themselves (one pass over the data)."""
        return self.method in ("wlls", "lls")

    def _linear(self, y: np.ndarray, *, weighted: bool) -> BlockFit:
        be = resolve_backend(self.backend, has_kernel=True)
        yk = y[:, self._keep] if self._keep.size != self.b.size else y
        kb = self.b[self._keep]
        res = _loglinear(yk, kb, weighted=weighted, adc_lo=0.0, adc_hi=_D_MAX, backend=be)
        if self._keep.size != self.b.size and self.handles_invalid:
            # samples outside [b_min, b_max] must also be valid numbers
            bad = ~np.all(np.isfinite(y) & (y >= 0), axis=1)
            if bad.any():
                res.params[bad] = np.nan
                if res.stderr is not None:
                    res.stderr[bad] = np.nan
                res.rss[bad] = np.nan
                res.status[bad] = FitStatus.INVALID_INPUT
        return res

    def fit(
        self, data: np.ndarray, mask: np.ndarray | None = None, *, chunk_voxels: int | None = None
    ) -> FitResult:
        """Fit every voxel (see :meth:`Model.fit`).

        ``"wlls"`` and ``"lls"`` with numba on float32/float64 data take a fast path: one fused
        compiled pass (:func:`~tumorscope.models._diffusion_numba.adc_fit_range`) reads the data
        where they lie (C order, or the F order of NIfTI arrays: no gather copy, no float64
        block), validates, fits, and writes the float32 maps, status, RSS, standard errors and
        the status counts directly; chunks of voxels run in a thread pool of GIL-free serial
        kernels. Results are those of the engine path (same status rules, float64 arithmetic).
        Other methods, dtypes or ``backend="numpy"`` go through the engine.
        """
        arr, m = validate_inputs(
            data, mask, n_measurements=self.n_measurements, what=self.measurement_name
        )
        if (
            self.method in ("wlls", "lls")
            and arr.dtype in (np.float32, np.float64)
            and arr.dtype.isnative
            and resolve_backend(self.backend, has_kernel=True) == "numba"
        ):
            from ..fitting import progress

            progress.report("planned", 1)  # one fused pass: one chunk for the progress bar
            flat, order = self._fit_fused(arr, m, chunk_voxels)
            progress.report("done", 1)
            return self._result(arr, flat, order=order)
        flat = fit_blocks(
            self.fit_block,
            arr,
            m,
            n_params=len(self.parameters),
            invalid_fn=None if self.handles_invalid else self.invalid_voxels,
            chunk_voxels=chunk_voxels,
            n_workers=self._n_workers(),
            native_dtype=self.native_dtype,
        )
        return self._result(arr, flat)

    def _fit_fused(
        self, arr: np.ndarray, mask: np.ndarray | None, chunk_voxels: int | None
    ) -> tuple[FlatFit, Literal["C", "F"]]:
        nbm = _numba()
        nm = arr.shape[-1]
        # F-ordered data (NIfTI) are flattened in F order: a view, like C order for C data
        order: Literal["C", "F"] = (
            "F" if (arr.flags.f_contiguous and not arr.flags.c_contiguous) else "C"
        )
        y = arr.reshape(-1, nm, order=order)
        V = y.shape[0]
        if chunk_voxels is not None and int(chunk_voxels) < 1:
            raise FitError(f"must be >= 1, got {chunk_voxels}", field="chunk_voxels")
        workers = self._n_workers()
        if chunk_voxels is not None:
            chunk = int(chunk_voxels)
        else:  # at least 4 chunks per worker (load balance on a shared machine)
            chunk = min(DEFAULT_CHUNK_VOXELS, max(4096, math.ceil(V / (4 * workers))))
        n_chunks = math.ceil(V / chunk) if V else 0
        if mask is None:
            fmask = np.ones(V, dtype=bool)
            kmask = np.zeros(0, dtype=bool)
        else:
            fmask = np.ascontiguousarray(mask.reshape(-1, order=order))
            kmask = fmask
        maps = np.empty((2, V), dtype=np.float32)  # rows: S0, ADC (contiguous maps)
        stderr = np.empty((2, V), dtype=np.float32)
        rss = np.empty(V, dtype=np.float32)
        status = np.empty(V, dtype=np.uint8)
        counts = np.zeros((max(n_chunks, 1), 256), dtype=np.int64)
        keep = np.zeros(nm, dtype=bool)
        keep[self._keep] = True
        kb = self.b[self._keep]
        is_base = keep & (self.b == kb.min())
        b = np.ascontiguousarray(self.b, dtype=np.float64)
        weighted = self.method == "wlls"

        def one(c: int) -> None:
            nbm.adc_fit_range(
                y,
                kmask,
                mask is not None,
                c * chunk,
                min((c + 1) * chunk, V),
                b,
                keep,
                is_base,
                weighted,
                0.0,
                _D_MAX,
                maps[0],
                maps[1],
                stderr[0],
                stderr[1],
                rss,
                status,
                counts[c],
            )

        if workers == 1 or n_chunks <= 1:
            for c in range(n_chunks):
                one(c)
        else:
            with ThreadPoolExecutor(max_workers=min(workers, n_chunks)) as pool:
                list(pool.map(one, range(n_chunks)))
        return FlatFit(maps.T, stderr.T, status, rss, fmask, counts.sum(axis=0)), order

    def fit_block(self, y: np.ndarray) -> BlockFit:
        if self.method in ("wlls", "lls"):
            return self._linear(y, weighted=self.method == "wlls")
        y = y.astype(np.float64, copy=False)
        start = self._linear(y, weighted=True)
        p0 = np.where(np.isfinite(start.params), start.params, [[1.0, 1e-3]])
        p0[:, 0] = np.where(np.isfinite(start.params[:, 0]), p0[:, 0], y.max(axis=1))
        yk = y[:, self._keep]
        be = resolve_backend(self.backend, has_kernel=True)
        lo, hi = self.bounds()
        res = levenberg_marquardt(
            yk,
            p0,
            lo,
            hi,
            fun=lambda p: adc_signal(self.b[self._keep], p),
            jac=lambda p: self.jacobian(p)[:, self._keep],
            kernel=self.kernel() if be == "numba" else None,
            consts=self.consts(),
            scale=self.scales(),
            options=self.lm_options,
            backend=_lm_backend(be),
        )
        return BlockFit(res.params, res.status, res.rss, res.stderr)


# ---------------------------------------------------------------------- IVIM
_N_DSTAR_GRID = 16


@register_model
class IVIM(_DiffusionModel):
    """Intravoxel incoherent motion, ``S = S0 (f exp(-b D*) + (1 - f) exp(-b D))``.

    Parameters
    ----------
    bvalues : sequence of float or DiffusionProtocol
        b-values in s/mm² (at least 4 distinct; at least 2 distinct ``>= b_threshold`` and one
        below it).
    method : {"segmented", "full", "bayes"}, keyword-only, default "segmented"
        See the module docstring ("Which IVIM method when").
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
        _S0,
        _diffusivity("D", "tissue diffusion coefficient"),
        ParameterSpec("f", "1", 0.0, 1.0, typical=(0.05, 0.3), description="perfusion fraction"),
        ParameterSpec(
            "D_star",
            "mm2/s",
            _D_MAX,
            0.5,
            typical=(1e-2, 0.1),
            description="pseudo-diffusion coefficient",
        ),
    )
    methods: ClassVar[tuple[str, ...]] = ("segmented", "full", "bayes")

    def __init__(
        self,
        bvalues: Sequence[float] | np.ndarray | DiffusionProtocol,
        *,
        method: str = "segmented",
        b_threshold: float = 200.0,
        bounds: Mapping[str, Sequence[float]] | None = None,
        prior: Mapping[str, Sequence[float] | float] | None = None,
        backend: str = "auto",
    ) -> None:
        self.b = _bvalues(bvalues)
        self.method = self._check_method(method)
        self._set_bounds(bounds)
        resolve_backend(backend, has_kernel=True)
        self.backend = backend
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
            "bvalues": self.b.tolist(),
            "method": self.method,
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
        nbm = _numba()
        return None if nbm is None else nbm.ivim_kernel

    def consts(self) -> np.ndarray:
        return self.b

    def signal(self, params: np.ndarray) -> np.ndarray:
        return ivim_signal(self.b, params)

    def jacobian(self, params: np.ndarray) -> np.ndarray:
        return _ivim_jac(self.b, params)

    # -- steps
    def _segmented_D(self, y: np.ndarray) -> BlockFit:
        sel = self.b >= self.b_threshold
        be = resolve_backend(self.backend, has_kernel=True)
        return _loglinear(
            y[:, sel], self.b[sel], weighted=True, adc_lo=0.0, adc_hi=_D_MAX, backend=be
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
        if resolve_backend(self.backend, has_kernel=True) == "numba":
            _numba().ivim_grid_init_serial(
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
        lo, hi = self.bounds()
        be = resolve_backend(self.backend, has_kernel=True)
        nbm = _numba() if be == "numba" else None
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

        res = levenberg_marquardt(
            yy,
            p0,
            lo,
            hi,
            fun=fun,
            jac=jac,
            kernel=None if nbm is None else nbm.ivim_map_kernel,
            consts=c,
            scale=self.scales(),
            options=self.lm_options,
            backend=_lm_backend(be),
        )
        # report the data RSS (without the prior rows)
        with np.errstate(invalid="ignore", over="ignore"):
            rss = np.sum((y - ivim_signal(b, res.params)) ** 2, axis=1)
        return BlockFit(res.params, res.status, rss, res.stderr)

    def fit(
        self, data: np.ndarray, mask: np.ndarray | None = None, *, chunk_voxels: int | None = None
    ) -> FitResult:
        """Fit every voxel (see :meth:`Model.fit`). ``"bayes"`` runs two passes."""
        if self.method != "bayes" or self.prior is not None:
            return super().fit(data, mask, chunk_voxels=chunk_voxels)
        arr, m = validate_inputs(
            data, mask, n_measurements=self.n_measurements, what=self.measurement_name
        )
        first = IVIM(
            self.b,
            method="segmented",
            b_threshold=self.b_threshold,
            bounds=self.bound_overrides,
            backend=self.backend,
        )
        flat = fit_blocks(
            first.fit_block,
            arr,
            m,
            n_params=4,
            invalid_fn=self.invalid_voxels,
            chunk_voxels=chunk_voxels,
            n_workers=self._n_workers(),
        )
        prior = _empirical_prior(flat.params, flat.status, flat.rss, self.b.size)
        second = IVIM(
            self.b,
            method="bayes",
            b_threshold=self.b_threshold,
            bounds=self.bound_overrides,
            prior=prior,
            backend=self.backend,
        )
        second.lm_options = self.lm_options
        flat2 = fit_blocks(
            second.fit_block,
            arr,
            m,
            n_params=4,
            invalid_fn=self.invalid_voxels,
            chunk_voxels=chunk_voxels,
            n_workers=self._n_workers(),
        )
        res = second._result(arr, flat2)
        res.provenance["options"]["prior_source"] = "empirical (segmented first pass)"
        return res


def _ivim_jac(b: np.ndarray, params: np.ndarray) -> np.ndarray:
    p = np.asarray(params, dtype=np.float64)
    s0, d, f, ds = (p[:, i : i + 1] for i in range(4))
    e1 = np.exp(-b * d)
    e2 = np.exp(-b * ds)
    return np.stack(
        [f * e2 + (1 - f) * e1, -s0 * (1 - f) * b * e1, s0 * (e2 - e1), -s0 * f * b * e2],
        axis=-1,
    )


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


# ---------------------------------------------------------------------- DKI
@register_model
class DKI(_DiffusionModel):
    """Mean-signal (powder-averaged) diffusion kurtosis, ``S̄ = S0 exp(-b D + b² D² K / 6)``.

    Parameters
    ----------
    bvalues : sequence of float or DiffusionProtocol
        b-values in s/mm², one per volume (several directions per shell allowed).
        At least 3 distinct shells (e.g. 0, 1000, 2000).
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
        _S0,
        _diffusivity("D", "mean-signal apparent diffusivity"),
        ParameterSpec("K", "1", 0.0, 3.0, typical=(0.3, 1.5), description="mean-signal kurtosis"),
    )
    methods: ClassVar[tuple[str, ...]] = ("wlls", "nlls")

    def __init__(
        self,
        bvalues: Sequence[float] | np.ndarray | DiffusionProtocol,
        *,
        method: str = "wlls",
        b_tolerance: float = 20.0,
        k_max: float = 3.0,
        backend: str = "auto",
    ) -> None:
        self.b = _bvalues(bvalues)
        self.method = self._check_method(method)
        resolve_backend(backend, has_kernel=True)
        self.backend = backend
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
            "bvalues": self.b.tolist(),
            "method": self.method,
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
        nbm = _numba()
        return None if nbm is None else nbm.dki_kernel

    def consts(self) -> np.ndarray:
        """Shell b-values then sqrt(directions per shell) (the kernel fits weighted shell means)."""
        return np.r_[self.shell_b, np.sqrt(self._ng)]

    def invalid_voxels(self, y: np.ndarray) -> np.ndarray:
        return _invalid_diffusion(y, np.flatnonzero(self._shell == 0))

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
        return resolve_backend(self.backend, has_kernel=True) == "numba"

    @property
    def native_dtype(self) -> bool:  # type: ignore[override]
        return self.handles_invalid

    def fit_block(self, y: np.ndarray) -> BlockFit:
        lo, hi = self.bounds()
        n = y.shape[0]
        be = resolve_backend(self.backend, has_kernel=True)
        if be == "numba":
            ys = np.empty((n, self.shell_b.size))
            params = np.empty((n, 3))
            stderr = np.empty((n, 3))
            rss = np.empty(n)
            status = np.empty(n, dtype=np.uint8)
            refit = np.empty(n, dtype=np.bool_)
            _numba().dki_wlls_block_serial(
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
                stderr[keep] = _jac_stderr(J, rss[keep])
            p0 = np.where(np.isfinite(p), p, [[1.0, 1e-3, 0.5]])
            bad0 = ~ok
            p0[bad0, 0] = ys[bad0].max(axis=1)
            p0 = np.clip(p0, lo, hi)
        if refit.any():
            # weights n_directions: the powder average of g directions has variance sigma²/g
            sw = np.sqrt(self._ng)
            res = levenberg_marquardt(
                ys[refit] * sw,
                np.clip(p0[refit], lo, hi),
                lo,
                hi,
                fun=lambda q: dki_signal(self.shell_b, q) * sw,
                jac=lambda q: _dki_jac(self.shell_b, q) * sw[None, :, None],
                kernel=self.kernel() if be == "numba" else None,
                consts=self.consts(),
                scale=self.scales(),
                options=self.lm_options,
                backend=_lm_backend(be),
            )
            params[refit] = res.params
            status[refit] = res.status
            rss[refit] = res.rss
            stderr[refit] = res.stderr
        return BlockFit(params, status, rss, stderr)


def _dki_jac(b: np.ndarray, params: np.ndarray) -> np.ndarray:
    p = np.asarray(params, dtype=np.float64)
    s0, d, k = (p[:, i : i + 1] for i in range(3))
    e = np.exp(-b * d + (b * d) ** 2 * k / 6.0)
    return np.stack([e, s0 * e * (-b + b * b * d * k / 3.0), s0 * e * (b * d) ** 2 / 6.0], axis=-1)


def _jac_stderr(J: np.ndarray, rss: np.ndarray) -> np.ndarray:
    from ..fitting.lm import _stderr

    return _stderr(J, rss)
