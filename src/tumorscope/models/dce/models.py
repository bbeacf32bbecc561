"""The registered DCE pharmacokinetic models on the fitting engine.

``Tofts``, ``ExtendedTofts``, ``Patlak``, ``TwoCXM``, ``TwoCUM``: each takes its acquisition
first (a :class:`~tumorscope.protocol.DynamicProtocol`, whose frame times it uses, or the
frame times themselves) and the plasma AIF as the named input ``aif_mM``::

    Tofts(protocol, aif_mM=cp).fit(concentration_mM, mask=None) -> FitResult
    Tofts(times_s, cp, fit_delay=True)

The pure equations and linearised solutions are in :mod:`tumorscope.models.dce.kinetics`.

Fitting strategy (design notes in ``docs/dce.md``)
--------------------------------------------------
1. Starting values from the linearised least-squares solutions (Murase 2004,
   doi:10.1002/mrm.20023; Flouri et al. 2016, doi:10.1002/mrm.25991), clipped into the
   bounds. For the 2CXM/2CUM voxels whose linear solution falls outside the bounds, an
   extended-Tofts-derived point and the middle of the typical ranges are tried as well and
   the start with the lowest exact-model residual is kept.
   With ``fit_delay=True``, the start is searched over a delay grid (one linearised fit per
   candidate delay, the exact model residual decides).
2. Bounded Levenberg–Marquardt on the exact model with its analytic Jacobian, all voxels at
   once (compiled per-voxel kernel when numba is installed, vectorised numpy otherwise).

``method="linear"`` returns step 1 without the non-linear refinement. ``method="varpro"`` (the
default of Tofts, extended Tofts and 2CXM) replaces step 2 by variable projection over the
rates, compiled (:mod:`tumorscope.models.dce._varpro`), with LM for the voxels it leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from ...errors import FitError
from ...fitting.engine import BlockFit
from ...fitting.lm import LMOptions
from ...fitting.status import FitStatus
from ...protocol import DynamicProtocol
from ..base import Model, ParameterSpec, register_model, resolve_backend
from . import kinetics as kin

__all__ = ["ExtendedTofts", "Patlak", "Tofts", "TwoCUM", "TwoCXM"]


class _DCEModel(Model):
    """Shared machinery of the DCE models (protocol: frame times and a plasma AIF)."""

    measurement_name: ClassVar[str] = "frames"
    protocol_type = DynamicProtocol  # from_protocol(protocol, aif_mM=...)
    methods: ClassVar[tuple[str, ...]] = ("lm", "linear")
    #: The method used when none is given.
    default_method: ClassVar[str] = "lm"
    base_parameters: ClassVar[tuple[ParameterSpec, ...]] = ()
    _equation: ClassVar[Callable[..., Any]]
    _linear: ClassVar[Callable[..., np.ndarray]]

    def __init__(
        self,
        acquisition: DynamicProtocol | npt.ArrayLike,
        aif_mM: npt.ArrayLike,
        *,
        fit_delay: bool = False,
        delay_range_s: tuple[float, float] = (-10.0, 30.0),
        method: str | None = None,
        backend: str = "auto",
    ) -> None:
        times_s = acquisition.t if isinstance(acquisition, DynamicProtocol) else acquisition
        t, cp = kin.check_times_aif(times_s, aif_mM)
        t.setflags(write=False)
        cp.setflags(write=False)
        self.times_s = t
        self.aif_mM = cp
        self.fit_delay = bool(fit_delay)
        lo, hi = (float(v) for v in delay_range_s)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise FitError(
                f"expected (lower, upper) with lower < upper, got {delay_range_s!r}",
                field="delay_range_s",
            )
        self.delay_range_s = (lo, hi)
        params = self.base_parameters
        if self.fit_delay:
            typ = (max(lo, 0.0), min(hi, 10.0)) if max(lo, 0.0) < min(hi, 10.0) else (lo, hi)
            params = (*params, ParameterSpec("delay", "s", lo, hi, typical=typ))
        self.parameters = params  # type: ignore[misc]
        self.method = self._check_method(self.default_method if method is None else method)
        resolve_backend(backend, has_kernel=kin.HAVE_NUMBA)  # unknown names raise here
        self.backend = backend
        # strongly correlated parameters (Fp, vp; the delay) can need more than the engine's
        # default 100 trial steps from a grid start; rare voxels only, so the cost is small
        self.lm_options = LMOptions(max_iter=400)

    # ------------------------------------------------------------------ engine hooks
    def _n_workers(self) -> int:
        """Threads over blocks (thread-safe models): the cores, but no more than numba's thread
        count of the calling thread (a pipeline's Dask worker sets it to its share of the
        cores), as the relaxometry models do."""
        n = super()._n_workers()
        if self.thread_safe and kin.HAVE_NUMBA:
            import numba

            n = min(n, int(numba.get_num_threads()))
        return max(1, n)

    @property
    def n_measurements(self) -> int:
        return int(self.times_s.size)

    def signal(self, params: np.ndarray) -> np.ndarray:
        out = type(self)._equation(params, self.times_s, self.aif_mM, fit_delay=self.fit_delay)
        return np.asarray(out)

    def jacobian(self, params: np.ndarray) -> np.ndarray:
        _, jac = type(self)._equation(
            params, self.times_s, self.aif_mM, fit_delay=self.fit_delay, jacobian=True
        )
        return np.asarray(jac)

    def kernel(self) -> Any:
        if not kin.HAVE_NUMBA:
            return None
        from ._kernels import KERNELS

        return KERNELS[self.name]

    def consts(self) -> np.ndarray:
        from ._kernels import pack_consts

        return pack_consts(self.times_s, self.aif_mM, self.fit_delay)

    def options(self) -> dict[str, Any]:
        return {
            "times_s": self.times_s.tolist(),
            "aif_mM": self.aif_mM.tolist(),
            "fit_delay": self.fit_delay,
            "delay_range_s": list(self.delay_range_s),
            "method": self.method,
        }

    # ------------------------------------------------------------------ starting values
    def _clip(self, p: np.ndarray) -> np.ndarray:
        lo, hi = self.bounds()
        mid = np.array([0.5 * (s.typical[0] + s.typical[1]) for s in self.parameters])  # type: ignore[index]
        p = np.where(np.isfinite(p), p, mid[: p.shape[1]])
        # keep starts strictly inside the bounds (LM freezes parameters sitting on a bound)
        span = hi - lo
        eps = np.where(np.isfinite(span), 1e-6 * span, 1e-6)
        return np.clip(
            p, lo[: p.shape[1]] + eps[: p.shape[1]], hi[: p.shape[1]] - eps[: p.shape[1]]
        )

    def _clip_base(self, p: np.ndarray) -> np.ndarray:
        nb = len(self.base_parameters)
        full = np.zeros((p.shape[0], len(self.parameters)))
        full[:, :nb] = p
        if self.fit_delay:
            full[:, nb] = 0.0
        return self._clip(full)[:, :nb]

    def _alternatives(self, y: np.ndarray, cp: np.ndarray) -> list[np.ndarray]:
        """Other starting points (base parameters) to compare with the linearised one."""
        return []

    def _rss(self, y: np.ndarray, p: np.ndarray) -> np.ndarray:
        r = y - self.signal(p)
        return np.einsum("ij,ij->i", r, r)

    def initial_guess(self, y: np.ndarray) -> np.ndarray:
        """Linearised least-squares start (and a delay grid with ``fit_delay``).

        Where the linearised solution falls outside the bounds (or is not finite), the
        model's alternative starts (:meth:`_alternatives`) are also tried and the one with the
        lowest exact-model residual is kept; with ``fit_delay`` the residual also picks the
        delay among the grid values.
        """
        nb = len(self.base_parameters)
        n = y.shape[0]
        if not self.fit_delay:
            delays = [0.0]
        else:
            lo, hi = self.delay_range_s
            step = max(float(np.min(np.diff(self.times_s))), 1.0)
            delays = list(np.arange(lo, hi + 1e-9, step))
        lower, upper = self.bounds()
        best_p = np.zeros((n, len(self.parameters)))
        best_rss = np.full(n, np.inf)
        from ..aif import shift

        def full(base: np.ndarray, d: float) -> np.ndarray:
            out = np.empty((base.shape[0], len(self.parameters)))
            out[:, :nb] = base
            if self.fit_delay:
                out[:, nb] = d
            return out

        for d in delays:
            cp = self.aif_mM if d == 0.0 else shift(self.times_s, self.aif_mM, d)
            raw = np.asarray(type(self)._linear(y, self.times_s, cp))
            start = self._clip_base(raw)
            inside = np.all(np.isfinite(raw) & (raw > lower[:nb]) & (raw < upper[:nb]), axis=1)
            need = ~inside
            alts = self._alternatives(y[need], cp) if need.any() else []
            if len(delays) == 1 and not alts:  # nothing to compare
                best_p = full(start, d)
                break
            cand = full(start, d)
            rss = self._rss(y, cand) if len(delays) > 1 else np.full(n, np.inf)
            if alts:
                rss_need = self._rss(y[need], cand[need])
                best_need = cand[need]
                for alt in alts:
                    p_alt = full(alt, d)
                    r_alt = self._rss(y[need], p_alt)
                    better = r_alt < rss_need
                    rss_need = np.where(better, r_alt, rss_need)
                    best_need[better] = p_alt[better]
                cand[need] = best_need
                rss[need] = rss_need
            better = rss < best_rss
            if len(delays) == 1:
                better[:] = True
            best_rss = np.where(better, rss, best_rss)
            best_p[better] = cand[better]
        return self._clip(best_p)

    # ------------------------------------------------------------------ fitting
    def fit_block(self, y: np.ndarray) -> BlockFit:
        p0 = self.initial_guess(y)
        if self.method != "linear":  # "lm", and "varpro" where it falls back to LM
            return self.solve_nonlinear(y, p0)
        # "linear": the starting values themselves
        rss = self._rss(y, p0)
        lo, hi = self.bounds()
        ok = np.all(np.isfinite(p0), axis=1) & np.isfinite(rss)
        at_bound = np.any(
            (p0 <= lo + 1e-6 * np.abs(hi - lo)) | (p0 >= hi - 1e-6 * np.abs(hi - lo)), axis=1
        )
        status = np.where(
            ok, np.where(at_bound, FitStatus.AT_BOUND, FitStatus.CONVERGED), FitStatus.FAILED
        ).astype(np.uint8)
        return BlockFit(p0, status, rss, None)

    def sample_parameters(self, n: int, *, rng: np.random.Generator) -> np.ndarray:
        p = super().sample_parameters(n, rng=rng)
        if self.fit_delay:
            p[:, -1] = rng.uniform(0.0, 5.0, n)
        return p

    @classmethod
    def example(cls) -> Model:
        """Parker AIF (Hct 0.42, 10 s delay), 2.5 s frames over 5 min."""
        from ..aif import blood_to_plasma, parker

        t = np.arange(0.0, 300.0, 2.5)
        return cls(t, blood_to_plasma(parker(t, delay_s=10.0), hematocrit=0.42))


def _kep(maps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"kep": np.asarray(maps["Ktrans"], float) / np.asarray(maps["ve"], float)}


def _flow_derived(maps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    fp = np.asarray(maps["Fp"], float)
    ps = np.asarray(maps["PS"], float)
    with np.errstate(divide="ignore", invalid="ignore"):
        e = ps / (fp + ps)
    return {"E": e, "Ktrans": e * fp / 100.0}


_KTRANS = ParameterSpec(
    "Ktrans", "1/min", 0.0, 5.0, typical=(0.02, 0.5), description="volume transfer constant"
)
_VE = ParameterSpec(
    "ve", "1", 1e-3, 1.0, typical=(0.1, 0.6), description="extravascular extracellular fraction"
)
_VP = ParameterSpec("vp", "1", 0.0, 1.0, typical=(0.005, 0.1), description="plasma fraction")
_FP = ParameterSpec(
    "Fp", "mL/100mL/min", 1e-2, 1000.0, typical=(10.0, 100.0), description="plasma flow"
)
_PS = ParameterSpec(
    "PS", "mL/100mL/min", 0.0, 500.0, typical=(1.0, 30.0), description="permeability-surface"
)
_VP_FLOW = ParameterSpec("vp", "1", 1e-4, 1.0, typical=(0.01, 0.1), description="plasma fraction")
_KEP = ParameterSpec("kep", "1/min", 0.0, np.inf, description="efflux rate constant Ktrans/ve")
_E = ParameterSpec("E", "1", 0.0, 1.0, description="extraction fraction PS/(Fp+PS)")
_KTRANS_D = ParameterSpec("Ktrans", "1/min", 0.0, np.inf, description="E·Fp (1/min)")

_DOC_PARAMS = """
    Parameters
    ----------
    acquisition : DynamicProtocol or array_like of shape (n,)
        The acquisition: a protocol (its frame times are used) or the frame times (s),
        strictly increasing.
    aif_mM : array_like, shape (n,)
        Plasma AIF (mM) at the frame times (convert blood with
        :func:`tumorscope.models.aif.blood_to_plasma`).
    fit_delay : bool, default False
        Also fit the bolus arrival delay ``"delay"`` (s) of the tissue relative to the AIF.
    delay_range_s : (float, float), default (-10, 30)
        Bounds of the delay (s).
    method : {"lm", "linear"} (and "varpro" for Tofts, extended Tofts, 2CXM), optional
        ``"lm"``: non-linear least squares (bounded Levenberg–Marquardt) from the linearised
        start; ``"linear"``: the linearised solution only; ``"varpro"`` (Tofts, extended
        Tofts and 2CXM, their default): the same least-squares estimate by variable
        projection over the rates (``docs/dce.md``). Default: the model's
        :attr:`default_method`.
    backend : {"auto", "numba", "numpy"}, default "auto"
        Solver backend (see ``docs/fitting.md``).

    Raises
    ------
    ProtocolError
        Frame times not strictly increasing, fewer than 3, or an AIF of another length.
"""


class _ToftsFamily(_DCEModel):
    """Tofts and extended Tofts: derived ``"kep"`` = Ktrans/ve; variable projection.

    ``method="varpro"`` (the default): Ktrans and vp are linear once kep is fixed, so the
    least-squares problem is one-dimensional in kep; the compiled kernel
    (:mod:`tumorscope.models.dce._varpro`) solves it per voxel from the linearised kep. Voxels
    whose solution is not strictly inside the bounds (vp < 0 ...) or that do not converge are
    refitted by the bounded Levenberg–Marquardt solver (``method="lm"``) from the projected
    solution clipped into the bounds. With ``fit_delay`` (the delay is not projected) or without
    numba, ``"varpro"`` is ``"lm"``.
    """

    derived = (_KEP,)
    # the kernels (varpro, LM, Murase) release the GIL: the engine runs blocks in threads
    thread_safe = True
    methods: ClassVar[tuple[str, ...]] = ("varpro", "lm", "linear")
    default_method: ClassVar[str] = "varpro"
    _with_vp: ClassVar[bool]

    def derive(self, maps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _kep(maps)

    def fit_block(self, y: np.ndarray) -> BlockFit:
        if self.method != "varpro" or self.fit_delay or not kin.HAVE_NUMBA:
            return super().fit_block(y)
        if resolve_backend(self.backend, has_kernel=True) != "numba":
            return super().fit_block(y)
        from ._varpro import tofts_varpro

        # bounds of (Ktrans, ve, vp); Tofts has no vp: its third entry is filler, not read
        lo, hi = (np.resize(b[:3], 3).astype(np.float64) for b in self.bounds())
        p, rss, se, ok, _ = tofts_varpro(
            np.asarray(self.times_s, dtype=np.float64),
            np.asarray(self.aif_mM, dtype=np.float64),
            np.ascontiguousarray(y, dtype=np.float64),
            self._with_vp,
            lo,
            hi,
        )
        npar = len(self.parameters)
        p, se = p[:, :npar], se[:, :npar]
        status = np.full(y.shape[0], FitStatus.CONVERGED, dtype=np.uint8)
        bad = ~ok
        if bad.any():
            yb = y[bad]
            start = p[bad]
            lost = ~np.all(np.isfinite(start), axis=1)
            if lost.any():
                start[lost] = self.initial_guess(yb[lost])
            res = self.solve_nonlinear(yb, self._clip(start))
            p[bad] = res.params
            rss[bad] = res.rss
            status[bad] = res.status
            se[bad] = np.nan if res.stderr is None else res.stderr
        return BlockFit(p, status, rss, se)


@register_model
class Tofts(_ToftsFamily):
    __doc__ = (
        """Standard Tofts model: ``"Ktrans"`` (1/min), ``"ve"``; derived ``"kep"`` (1/min).

    Equation in :func:`tumorscope.models.dce.kinetics.tofts` (Tofts et al. 1999,
    doi:10.1002/(SICI)1522-2586(199909)10:3<223::AID-JMRI2>3.0.CO;2-S).
"""
        + _DOC_PARAMS
    )

    name = "tofts"
    base_parameters = (_KTRANS, _VE)
    _with_vp = False
    _equation = staticmethod(kin.tofts)
    _linear = staticmethod(kin.linear_tofts)


@register_model
class ExtendedTofts(_ToftsFamily):
    __doc__ = (
        """Extended Tofts model: ``"Ktrans"`` (1/min), ``"ve"``, ``"vp"``; derived ``"kep"``.

    Equation in :func:`tumorscope.models.dce.kinetics.extended_tofts`.
"""
        + _DOC_PARAMS
    )

    name = "extended_tofts"
    base_parameters = (_KTRANS, _VE, _VP)
    _with_vp = True
    _equation = staticmethod(kin.extended_tofts)
    _linear = staticmethod(kin.linear_extended_tofts)


@register_model
class Patlak(_DCEModel):
    __doc__ = (
        """Patlak model: ``"Ktrans"`` (1/min), ``"vp"``.

    Equation in :func:`tumorscope.models.dce.kinetics.patlak`; the model is linear, so
    ``method="linear"`` is the exact least-squares solution (without delay).
"""
        + _DOC_PARAMS
    )

    name = "patlak"
    base_parameters = (
        ParameterSpec("Ktrans", "1/min", 0.0, 5.0, typical=(0.0, 0.2)),
        _VP,
    )
    _equation = staticmethod(kin.patlak)
    _linear = staticmethod(kin.linear_patlak)


class _FlowModel(_DCEModel):
    """2CXM / 2CUM: alternative starts (high-flow limit, typical) where the linear one fails.

    At high flow the 2CXM tends to the extended Tofts model and the 2CUM to the Patlak model,
    both with PS = Ktrans: ``_high_flow`` is that limit's linearised fit.
    """

    derived = (_E, _KTRANS_D)
    # the compiled LM and linear solves release the GIL: the engine runs blocks in threads
    # (numba's own prange threads spin while they wait, which costs CPU on a shared machine)
    thread_safe = True
    _high_flow: ClassVar[Callable[..., np.ndarray]]

    #: Ranges of :meth:`sample_parameters`, by parameter (narrower than the typical ranges).
    _SAMPLE_RANGES: ClassVar[dict[str, tuple[float, float]]] = {
        "Fp": (20.0, 100.0),
        "PS": (3.0, 30.0),
        "ve": (0.1, 0.5),
        "vp": (0.02, 0.1),
    }

    def derive(self, maps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _flow_derived(maps)

    def sample_parameters(self, n: int, *, rng: np.random.Generator) -> np.ndarray:
        ranges = [self._SAMPLE_RANGES[s.name] for s in self.base_parameters]
        p = np.column_stack([rng.uniform(lo, hi, n) for lo, hi in ranges])
        if self.fit_delay:
            p = np.column_stack([p, rng.uniform(0.0, 5.0, n)])
        return p

    def _from_etofts(self, y: np.ndarray, cp: np.ndarray) -> np.ndarray:
        """High-flow start: Fp = 100 and PS = Ktrans of the high-flow limit's linear fit."""
        lin = np.asarray(type(self)._high_flow(y, self.times_s, cp))
        kt = np.clip(np.nan_to_num(lin[:, 0], nan=0.1), 1e-3, 5.0)
        return np.column_stack([np.full(y.shape[0], 100.0), kt * 100.0, lin[:, 1:]])

    def _alternatives(self, y: np.ndarray, cp: np.ndarray) -> list[np.ndarray]:
        nb = len(self.base_parameters)
        mid = np.array([0.5 * (s.typical[0] + s.typical[1]) for s in self.base_parameters])  # type: ignore[index]
        return [
            self._clip_base(self._from_etofts(y, cp)),
            self._clip_base(np.broadcast_to(mid, (y.shape[0], nb)).copy()),
        ]


@register_model
class TwoCXM(_FlowModel):
    __doc__ = (
        """Two-compartment exchange model: ``"Fp"``, ``"PS"`` (mL/100 mL/min), ``"ve"``,
    ``"vp"``; derived ``"E"`` = PS/(Fp+PS) and ``"Ktrans"`` = E·Fp/100 (1/min).

    Equation in :func:`tumorscope.models.dce.kinetics.two_cxm` (Sourbron & Buckley 2013,
    doi:10.1002/nbm.2940).
"""
        + _DOC_PARAMS
    )

    name = "2cxm"
    base_parameters = (_FP, _PS, _VE, _VP_FLOW)
    methods: ClassVar[tuple[str, ...]] = ("varpro", "lm", "linear")
    default_method: ClassVar[str] = "varpro"
    _equation = staticmethod(kin.two_cxm)
    _linear = staticmethod(kin.linear_2cxm)
    _high_flow = staticmethod(kin.linear_extended_tofts)

    def fit_block(self, y: np.ndarray) -> BlockFit:
        """``"varpro"``: variable projection over the two rates from the linearised ones.

        The curve is ``A F_α + B F_β``, linear in (A, B) once the rates (α, β) are fixed; the
        compiled kernel (:func:`tumorscope.models.dce._varpro.two_cxm_varpro`) solves the
        two-dimensional problem from the rates of the linearised solution (Flouri et al.
        2016). Voxels whose linearised rates are not real and positive, whose solution is not
        strictly inside the bounds or that do not converge go to the LM path (its starts and
        alternatives). With ``fit_delay`` or without numba, ``"varpro"`` is ``"lm"``.
        """
        if self.method != "varpro" or self.fit_delay or not kin.HAVE_NUMBA:
            return super().fit_block(y)
        if resolve_backend(self.backend, has_kernel=True) != "numba":
            return super().fit_block(y)
        from ._kernels import flouri_many
        from ._varpro import two_cxm_varpro

        t = np.asarray(self.times_s, dtype=np.float64)
        cp = np.asarray(self.aif_mM, dtype=np.float64)
        yc = np.ascontiguousarray(y, dtype=np.float64)
        x = flouri_many(t, cp, yc)
        ssum, prod = x[:, 0], x[:, 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            al = 0.5 * (ssum + np.sqrt(ssum * ssum - 4.0 * prod))
            start = np.ascontiguousarray(np.column_stack([al, prod / al]))
        lo, hi = (np.asarray(b, dtype=np.float64) for b in self.bounds())
        p, rss, se, ok, _ = two_cxm_varpro(t, cp, yc, start, lo, hi)
        status = np.full(y.shape[0], FitStatus.CONVERGED, dtype=np.uint8)
        bad = ~ok
        if bad.any():
            yb = y[bad]
            res = self.solve_nonlinear(yb, self.initial_guess(yb))
            p[bad] = res.params
            rss[bad] = res.rss
            status[bad] = res.status
            se[bad] = np.nan if res.stderr is None else res.stderr
        return BlockFit(p, status, rss, se)


@register_model
class TwoCUM(_FlowModel):
    __doc__ = (
        """Two-compartment uptake model: ``"Fp"``, ``"PS"`` (mL/100 mL/min), ``"vp"``;
    derived ``"E"`` and ``"Ktrans"`` (1/min) as for :class:`TwoCXM`.

    Equation in :func:`tumorscope.models.dce.kinetics.two_cum` (Sourbron & Buckley 2013,
    doi:10.1002/nbm.2940). Valid while the interstitium does not fill (short acquisitions).
"""
        + _DOC_PARAMS
    )

    name = "2cum"
    base_parameters = (_FP, _PS, _VP_FLOW)
    _equation = staticmethod(kin.two_cum)
    _linear = staticmethod(kin.linear_2cum)
    _high_flow = staticmethod(kin.linear_patlak)
