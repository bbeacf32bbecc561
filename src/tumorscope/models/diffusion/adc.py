"""Apparent diffusion coefficient: ``S = S0 exp(-b ADC)`` (Stejskal & Tanner 1965,
doi:10.1063/1.1695690), with its fused compiled fast path for the log-linear methods."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Literal

import numpy as np

from ...errors import ProtocolError
from ...fitting.engine import BlockFit, FlatFit
from ...fitting.status import FitStatus
from ..base import FitInput, FitResult, ParameterSpec, register_model
from ._common import (
    D_MAX,
    S0_SPEC,
    BValues,
    DiffusionModel,
    fast_layout,
    invalid_diffusion,
    loglinear,
)
from .equations import _adc_jac, adc_signal

__all__ = ["ADC"]


@register_model
class ADC(DiffusionModel):
    """Apparent diffusion coefficient, ``S = S0 exp(-b ADC)``.

    Parameters
    ----------
    bvalues : DiffusionProtocol or sequence of float
        The acquisition: b-values in s/mm², one per volume (at least two distinct after
        exclusion). ``ADC.from_protocol(protocol, **options)`` is the same.
    method : {"wlls", "lls", "nlls"}, keyword-only, default "wlls"
        ``"wlls"``: log-linear least squares weighted by ``S²`` (approximates least squares on
        the signal; Salvador et al. 2005, doi:10.1002/hbm.20076; Veraart et al. 2013,
        doi:10.1016/j.neuroimage.2013.05.028). ``"lls"``: unweighted log-linear.
        ``"nlls"``: bounded LM on the signal, started from the WLLS estimate.
    b_min, b_max : float, keyword-only, optional
        Use only b-values in ``[b_min, b_max]`` (e.g. ``b_min=200`` excludes the perfusion
        regime, as clinical ADC protocols do). The data still carry every b-value; the
        excluded ones are ignored.
    bounds : mapping, keyword-only, optional
        Replace the default bounds, e.g. ``{"ADC": (0.0, 0.1)}`` (mm²/s, lower < upper) to
        map perfusion-dominated decays (low b-values only) that exceed free water.
    backend : {"auto", "numba", "numpy"}, keyword-only

    Notes
    -----
    Maps: ``"S0"`` (data units), ``"ADC"`` (mm²/s). **ADC bounds**: by default ``[0, 5e-3]``
    mm²/s (free water at 37 °C is ~3e-3; tissue cannot diffuse faster). An estimate outside
    the bounds is returned as the nearest bound (the best estimate within them) with status
    ``AT_BOUND``: e.g. a decay of 0.00885 mm²/s (a perfusion-dominated voxel fitted on low
    b-values) gives 0.005 and ``AT_BOUND``; with ``bounds={"ADC": (0, 0.1)}`` it gives
    0.00885. The bounds in force are recorded in provenance (``options["bounds"]``). Samples ``<= 0`` get zero weight in the log-linear fits
    (magnitude data at high b can be exactly 0). For linear methods ``rss`` is the weighted
    log-domain objective, which with ``S²`` weights approximates the signal RSS.
    """

    name: ClassVar[str] = "adc"
    parameters: ClassVar[tuple[ParameterSpec, ...]] = (
        S0_SPEC,
        ParameterSpec(
            "ADC",
            "mm2/s",
            0.0,
            D_MAX,
            typical=(3e-4, 3e-3),
            description="apparent diffusion coefficient",
        ),
    )
    methods: ClassVar[tuple[str, ...]] = ("wlls", "lls", "nlls")
    native_dtype: ClassVar[bool] = True

    def __init__(
        self,
        bvalues: BValues,
        *,
        method: str = "wlls",
        b_min: float | None = None,
        b_max: float | None = None,
        bounds: Mapping[str, Sequence[float]] | None = None,
        backend: str = "auto",
    ) -> None:
        self._acquire(bvalues, method, backend)
        self._set_bounds(bounds)
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
            **super().options(),
            "b_min": self.b_min,
            "b_max": self.b_max,
            "bounds": {k: list(v) for k, v in self.bound_overrides.items()},
        }

    def _adc_bounds(self) -> tuple[float, float]:
        """Lower and upper ADC bound in force (mm²/s)."""
        lo, hi = self.bounds()
        return float(lo[1]), float(hi[1])

    @classmethod
    def example(cls) -> ADC:
        return cls([0, 50, 400, 800, 1000])

    def kernel(self) -> Any:
        return self._kernel("mono_kernel")

    def consts(self) -> np.ndarray:
        return self.b[self._keep]

    def invalid_voxels(self, y: np.ndarray) -> np.ndarray:
        kb = self.b[self._keep]
        base = self._keep[kb == kb.min()]
        return invalid_diffusion(y, base)

    def signal(self, params: np.ndarray) -> np.ndarray:
        return adc_signal(self.b, params)

    def jacobian(self, params: np.ndarray) -> np.ndarray:
        return _adc_jac(self.b, params)

    def initial_guess(self, y: np.ndarray) -> np.ndarray:
        return self._linear(y, weighted=True).params

    @property
    def handles_invalid(self) -> bool:  # type: ignore[override]
        """The fused log-linear kernels validate voxels themselves (one pass over the data)."""
        return self.method in ("wlls", "lls")

    def _linear(self, y: np.ndarray, *, weighted: bool) -> BlockFit:
        be = self._backend()
        yk = y[:, self._keep] if self._keep.size != self.b.size else y
        kb = self.b[self._keep]
        a_lo, a_hi = self._adc_bounds()
        res = loglinear(yk, kb, weighted=weighted, adc_lo=a_lo, adc_hi=a_hi, backend=be)
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

    def _fit_validated(self, given: FitInput) -> FitResult:
        """Fit the checked input (the hook of :meth:`Model.fit`), with a fast path.

        ``"wlls"`` and ``"lls"`` with numba on float32/float64 data take a fast path: one fused
        compiled pass (:func:`~tumorscope.models.diffusion._adc_numba.adc_fit_range_small` for
        up to 4 b-values, else :func:`~tumorscope.models.diffusion._adc_numba.adc_fit_range`) reads the data
        where they lie (C order, or the F order of NIfTI arrays: no gather copy, no float64
        block), validates, fits, and writes the float32 maps, status, RSS, standard errors and
        the status counts directly; chunks of voxels run in a thread pool of GIL-free serial
        kernels. Results are those of the engine path (same status rules; float32 data in
        float32 tiles with the solve in float64, float64 data in float64).
        Other methods, dtypes or ``backend="numpy"`` go through the engine.
        """
        arr = given.data
        if not (
            self.method in ("wlls", "lls")
            and arr.dtype in (np.float32, np.float64)
            and arr.dtype.isnative
            and self._backend() == "numba"
        ):
            return super()._fit_validated(given)
        from ...fitting import progress

        progress.report("planned", 1)  # one fused pass: one chunk for the progress bar
        flat, order = self._fit_fused(arr, given.mask, given.chunk_voxels)
        progress.report("done", 1)
        return self._result(arr, flat, order=order)

    def _fit_fused(
        self, arr: np.ndarray, mask: np.ndarray | None, chunk_voxels: int | None
    ) -> tuple[FlatFit, Literal["C", "F"]]:
        from numba.core.errors import NumbaIRAssumptionWarning

        from . import _adc_numba as nbm

        nm = arr.shape[-1]
        workers = self._n_workers()
        order, y, V, chunk, n_chunks, fmask, kmask = fast_layout(arr, mask, chunk_voxels, workers)
        maps = np.empty((2, V), dtype=np.float32)  # rows: S0, ADC (contiguous maps)
        stderr = np.empty((2, V), dtype=np.float32)
        rss = np.empty(V, dtype=np.float32)
        status = np.empty(V, dtype=np.uint8)
        counts = np.zeros((max(n_chunks, 1), 256), dtype=np.int64)
        keep = np.zeros(nm, dtype=bool)
        keep[self._keep] = True
        kb = self.b[self._keep]
        is_base = keep & (self.b == kb.min())
        # b (float64); b, used samples, lowest b used (the data's dtype)
        prot: tuple[Any, ...] = (
            np.ascontiguousarray(self.b, dtype=np.float64),
            *(np.asarray(v, dtype=y.dtype) for v in (self.b, keep, is_base)),
        )
        kernel: Any = nbm.adc_fit_range
        if nm <= nbm.SMALL_M:  # the protocol as tuples: nm a compile-time constant
            kernel = nbm.adc_fit_range_small
            prot = tuple(tuple(v) for v in prot)
        weighted = self.method == "wlls"
        a_lo, a_hi = self._adc_bounds()
        # the data flattened without a copy: C order (V, m), or F order as (m, V)
        c_order = bool(y.flags.c_contiguous)
        src = y.reshape(-1) if c_order else y.T.reshape(-1)

        def one(c: int, lo: int | None = None) -> None:
            kernel(
                src,
                c_order,
                kmask,
                mask is not None,
                c * chunk if lo is None else lo,
                min((c + 1) * chunk, V) if lo is None else lo,
                *prot,
                weighted,
                a_lo,
                a_hi,
                maps[0],
                maps[1],
                stderr[0],
                stderr[1],
                rss,
                status,
                counts[c],
            )

        with warnings.catch_warnings():
            # compile (or load) the kernel here, on no voxel: numba's SSA pass warns about
            # its inlined helpers (a pedantic internal check, NumbaIRAssumptionWarning), which
            # is not the user's business; and here, not in the threads below
            warnings.simplefilter("ignore", NumbaIRAssumptionWarning)
            one(0, 0)
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
        res = self._solve(
            y[:, self._keep],
            p0,
            *self.bounds(),
            fun=lambda p: adc_signal(self.b[self._keep], p),
            jac=lambda p: self.jacobian(p)[:, self._keep],
            kernel=self.kernel(),
            consts=self.consts(),
        )
        return BlockFit(res.params, res.status, res.rss, res.stderr)
