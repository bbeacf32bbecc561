"""Mono-exponential decay: T2* / R2* (:class:`T2Star`), T2 (:class:`T2`, :class:`T2Offset`).

Each is exact least squares (variable projection) for a plain or offset exponential, or the
Rician expected magnitude (the noise floor of magnitude images) fitted by Levenberg–Marquardt
with a scalar noise level (given or estimated, :mod:`.noise`) or a per-voxel noise map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from ...errors import FitError
from ...fitting.engine import BlockFit, validate_inputs
from ...fitting.polish import gauss_newton_polish
from ...fitting.varpro import varpro_log
from ...protocol import MultiEchoProtocol
from ..base import FitInput, FitResult, ParameterSpec, register_model, resolve_backend
from ._common import RelaxometryModel, compiled_block, copy_model, rate, solved_block
from .equations import (
    monoexp_jacobian,
    monoexp_signal,
    t2star_rician_jacobian,
    t2star_rician_signal,
)
from .noise import background_sigma_rows, decay_sigma, valid_rows

__all__ = ["T2", "T2Offset", "T2Star"]


def _loglinear_start(a: np.ndarray, te_ms: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(S0, R)`` from a weighted log-linear fit of amplitudes ``a (n, m)`` (weights ``a²``).

    Voxels with fewer than two positive amplitudes fall back to ``S0 = max(y)``, ``R = 0``.
    """
    x = np.asarray(te_ms, dtype=float) * 1e-3
    pos = a > 0
    w = np.where(pos, a * a, 0.0)
    z = np.log(np.where(pos, a, 1.0))
    sw = w.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        xm = (w * x).sum(axis=1) / sw
        zm = (w * z).sum(axis=1) / sw
        sxx = (w * (x - xm[:, None]) ** 2).sum(axis=1)
        sxz = (w * (x - xm[:, None]) * (z - zm[:, None])).sum(axis=1)
        slope = sxz / sxx
        r = -slope
        s0 = np.exp(zm + r * xm)
    ok = (pos.sum(axis=1) >= 2) & np.isfinite(r) & np.isfinite(s0) & (sxx > 0)
    return np.stack([np.where(ok, s0, y.max(axis=1)), np.where(ok, r, 0.0)], axis=1)


_FLOORS = ("none", "rician", "offset")
_S0_SPEC = ParameterSpec(
    "S0", "a.u.", 0.0, np.inf, typical=(500.0, 5000.0), description="signal extrapolated to TE = 0"
)


class _DecayModel(RelaxometryModel):
    """Shared machinery of :class:`T2`, :class:`T2Offset` and :class:`T2Star`.

    The solver works in ``(S0, R)`` with ``R`` in 1/s; subclasses state how their second
    parameter maps to ``R`` (:meth:`_rate_of`, :meth:`_drate`).
    """

    measurement_name = "echo times"
    methods = ("nlls",)
    protocol_type = MultiEchoProtocol
    voxel_inputs = ("noise_sigma_map",)
    recorded_options = ("echo_times_ms", "floor", "method")
    _rate_bounds: tuple[float, float] = (0.2, 1000.0)

    def __init__(
        self,
        echo_times_ms: Sequence[float] | npt.ArrayLike | MultiEchoProtocol,
        *,
        floor: str,
        noise_sigma: float | None,
        backend: str,
    ) -> None:
        proto = self._acquire(MultiEchoProtocol, "nlls", backend, echo_times_ms=echo_times_ms)
        self.echo_times_ms = np.asarray(proto.echo_times_ms)
        if floor not in _FLOORS:
            raise FitError(f"unknown floor {floor!r}; expected one of {_FLOORS}", field="floor")
        self.floor = floor
        n_par = len(self.parameters)
        if self.echo_times_ms.size < n_par:
            raise FitError(
                f"{self.echo_times_ms.size} echoes cannot determine {n_par} parameters "
                f"({', '.join(self.parameter_names)}); need at least {n_par}",
                field="echo_times_ms",
            )
        if noise_sigma is not None:
            if floor != "rician":
                raise FitError(
                    f"noise_sigma is only used with floor='rician', not {floor!r}",
                    field="noise_sigma",
                )
            s = float(noise_sigma)
            if not np.isfinite(s) or s < 0:
                raise FitError(
                    f"must be a finite number >= 0, got {noise_sigma!r}", field="noise_sigma"
                )
            noise_sigma = s
        self.noise_sigma = noise_sigma
        self._sigma_estimated: str | bool = False

    # -- parameterisation ---------------------------------------------------------------
    def _rate_of(self, q: np.ndarray) -> np.ndarray:
        return q

    def _drate(self, q: np.ndarray) -> np.ndarray:
        return np.ones_like(q)

    def _from_rate(self, r: np.ndarray) -> np.ndarray:
        return r

    def _rate_params(self, params: np.ndarray) -> np.ndarray:
        p = np.array(params, dtype=float, copy=True)
        p[..., 1] = self._rate_of(p[..., 1])
        return p

    # -- model ----------------------------------------------------------------------------
    @property
    def n_measurements(self) -> int:
        return int(self.echo_times_ms.size)

    def _sigma(self) -> float:
        return 0.0 if self.noise_sigma is None else float(self.noise_sigma)

    def signal(self, params: np.ndarray) -> np.ndarray:
        pr = self._rate_params(params)
        if self.floor == "rician":
            return t2star_rician_signal(pr, self.echo_times_ms, self._sigma())
        return monoexp_signal(pr, self.echo_times_ms)

    def jacobian(self, params: np.ndarray) -> np.ndarray:
        pr = self._rate_params(params)
        if self.floor == "rician":
            J = t2star_rician_jacobian(pr, self.echo_times_ms, self._sigma())
        else:
            J = monoexp_jacobian(pr, self.echo_times_ms)
        J[..., 1] *= self._drate(np.asarray(params, dtype=float)[..., 1:2])
        return J

    def invalid_voxels(
        self, y: np.ndarray, *, noise_sigma_map: np.ndarray | None = None
    ) -> np.ndarray:
        """Invalid magnitudes, and (with a noise map) non-finite or non-positive σ."""
        bad = super().invalid_voxels(y)
        if noise_sigma_map is not None:
            bad |= ~(np.isfinite(noise_sigma_map) & (noise_sigma_map > 0))
        return bad

    _time_parameter: ClassVar[bool] = False
    #: Blocks run in a thread pool: the compiled paths (variable projection, serial LM)
    #: release the GIL, the numpy paths are thread-safe.
    thread_safe: ClassVar[bool] = True

    def kernel(self) -> Any:
        """The compiled decay kernel (numba): the Rician expected magnitude, which with
        ``σ = 0`` (``floor="none"``) is the plain exponential. None for ``floor="offset"``.

        The plain fit itself runs the compiled variable projection
        (:mod:`._varpro_numba`) when this backend is numba; the kernel is the model's
        per-voxel signal for the LM solver."""
        if self.floor == "offset":
            return None
        try:
            from ._numba import rician_decay_kernel
        except ImportError:  # pragma: no cover - numba is in the 'fast' extra
            return None
        return rician_decay_kernel

    def consts(self) -> np.ndarray:
        mode = 1.0 if self._time_parameter else 0.0
        return np.concatenate([[self._sigma(), mode], self.echo_times_ms * 1e-3])

    def options(self) -> dict[str, Any]:
        out = super().options()
        if self.floor == "rician":
            out["noise_sigma"] = self.noise_sigma
            out["noise_sigma_estimated"] = self._sigma_estimated
        return out

    # -- fitting ----------------------------------------------------------------------------
    def _compiled(self) -> bool:
        """True when the plain fit runs the compiled variable projection."""
        return (
            self.floor != "offset"
            and resolve_backend(self.backend, has_kernel=self.kernel() is not None) == "numba"
        )

    def _varpro(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact least-squares mono-exponential (+ offset) in rate space (compiled for the
        plain exponential with the numba backend, the same estimator in numpy otherwise)."""
        te_s = self.echo_times_ms * 1e-3
        offset = self.floor == "offset"
        lo, hi = self._rate_bounds
        if self._compiled():
            from ._varpro_numba import monoexp_varpro

            return monoexp_varpro(y, te_s, lo, hi)[:3]

        def basis(r: np.ndarray) -> np.ndarray:
            e = np.exp(-te_s[None, :] * r[:, None])
            if offset:
                return np.stack([e, np.ones_like(e)], axis=-1)
            return e[..., None]

        r, coef, rss, at_bound = varpro_log(basis, y, lo, hi, nonneg=True)
        pr = np.column_stack([coef[:, 0], r] + ([coef[:, 1]] if offset else []))
        free = ~at_bound & (coef[:, 0] > 0)
        if free.any():
            pr[free], rss[free] = gauss_newton_polish(
                pr[free],
                y[free],
                lambda p: monoexp_signal(p, self.echo_times_ms),
                lambda p: monoexp_jacobian(p, self.echo_times_ms),
                rss[free],
            )
        at_bound |= pr[:, 0] <= 0
        return pr, rss, at_bound

    def fit_block(self, y: np.ndarray, *, noise_sigma_map: np.ndarray | None = None) -> BlockFit:
        if noise_sigma_map is not None:
            return self._fit_block_sigma_map(y, noise_sigma_map)
        sigma = self._sigma()
        if self.floor == "rician" and sigma > 0:
            # start: log-linear fit of floor-corrected magnitudes (Gudbjartsson & Patz 1995:
            # A ≈ sqrt(M² - σ²)) weighted by A² (the delta-method variance of log A), then the
            # Rician-mean model by LM
            if self._compiled():
                return self._fit_block_rician_compiled(y, sigma)
            yc = np.sqrt(np.maximum(y**2 - sigma**2, 0.0))
            pr0 = _loglinear_start(yc, self.echo_times_ms, y)
            lo_r, hi_r = self._rate_bounds
            pr0[:, 1] = np.clip(pr0[:, 1], lo_r, hi_r)
            p0 = pr0.copy()
            p0[:, 1] = self._from_rate(pr0[:, 1])
            return self.solve_nonlinear(y, p0)
        if self._compiled():
            return self._fit_block_compiled(y)
        pr, rss, at_bound = self._varpro(y)
        params = pr.copy()
        with np.errstate(divide="ignore", invalid="ignore"):
            params[:, 1] = self._from_rate(pr[:, 1])
        return solved_block(params, rss, at_bound, self.jacobian)

    def _fit_block_compiled(self, y: np.ndarray) -> BlockFit:
        """The plain exponential by the compiled variable projection, standard errors
        included (:func:`._varpro_numba.monoexp_varpro`); statuses as :func:`solved_block`."""
        from ._varpro_numba import monoexp_varpro

        lo, hi = self._rate_bounds
        pr, rss, at_bound, stderr = monoexp_varpro(
            y, self.echo_times_ms * 1e-3, lo, hi, time_mode=self._time_parameter
        )
        params = pr
        with np.errstate(divide="ignore", invalid="ignore"):
            params[:, 1] = self._from_rate(pr[:, 1])
        return compiled_block(params, rss, at_bound, stderr)

    def _fit_block_rician_compiled(self, y: np.ndarray, sigma: float) -> BlockFit:
        """The Rician-floor fit compiled (:func:`._rician_numba.rician_decay_fit`): the
        log-linear start and the LM of :meth:`solve_nonlinear` in one pass per voxel, the
        model inlined (same estimator, statuses and standard errors)."""
        from ._rician_numba import rician_decay_fit

        lo, hi = self.bounds()
        opts = self.lm_options
        params, status, rss, stderr = rician_decay_fit(
            y,
            self.echo_times_ms * 1e-3,
            sigma,
            time_mode=self._time_parameter,
            rate_bounds=self._rate_bounds,
            lower=lo,
            upper=hi,
            scale=self.scales(),
            max_iter=opts.max_iter,
            ftol=opts.ftol,
            xtol=opts.xtol,
        )
        return BlockFit(params, status, rss, stderr)

    def _fit_block_sigma_map(self, y: np.ndarray, sigma: np.ndarray) -> BlockFit:
        """Fit with a per-voxel σ: ``E[M](A, σ) = σ E[M](A/σ, 1)``, so each voxel is divided
        by its σ, fitted with σ = 1 and scaled back (``S0`` × σ, ``rss`` × σ²; the float32
        map value is scaled, as the maps are stored)."""
        unit = self
        if self.noise_sigma != 1.0:
            unit = copy_model(self)
            unit.noise_sigma = 1.0
        res = unit.fit_block(y / sigma[:, None])
        f32 = np.float32
        res.params[:, 0] = res.params[:, 0].astype(f32) * sigma
        if res.stderr is not None:
            res.stderr[:, 0] = res.stderr[:, 0].astype(f32) * sigma
        res.rss = np.asarray(res.rss).astype(f32) * sigma**2
        return res

    def check_voxel_inputs(self, inputs: Mapping[str, np.ndarray], mask: np.ndarray | None) -> None:
        """A noise map needs ``floor="rician"`` and no scalar ``noise_sigma``."""
        if "noise_sigma_map" in inputs and (self.floor != "rician" or self.noise_sigma is not None):
            raise FitError(
                "noise_sigma_map needs floor='rician' and no scalar noise_sigma",
                field="noise_sigma_map",
            )

    def fit(  # type: ignore[override]  # names its one per-voxel input
        self,
        data: npt.ArrayLike,
        mask: npt.ArrayLike | None = None,
        *,
        noise_sigma_map: npt.ArrayLike | None = None,
        chunk_voxels: int | None = None,
    ) -> FitResult:
        """Fit every voxel (within ``mask``); see :meth:`Model.fit`.

        With ``floor="rician"`` and no ``noise_sigma``, the noise level is first estimated
        from the data (:meth:`estimate_noise_sigma`) and recorded in the provenance.

        Parameters
        ----------
        data : array_like, shape (..., n_echoes)
        mask : array_like of bool, shape data.shape[:-1], optional
        noise_sigma_map : array_like, shape data.shape[:-1], optional, keyword-only
            A spatially varying Rician noise level (parallel imaging, coil sensitivity), a
            per-voxel input (:attr:`voxel_inputs`), with ``floor="rician"`` and no scalar
            ``noise_sigma``. Because ``E[M](A, σ) = σ E[M](A/σ, 1)``, each voxel is divided
            by its σ, fitted with σ = 1 and scaled back (``S0`` × σ, ``rss`` × σ²): exact, and
            the fast kernel is kept. Voxels with a non-finite or non-positive σ get
            ``INVALID_INPUT``.
        chunk_voxels : int, optional, keyword-only
        """
        return super().fit(data, mask, chunk_voxels=chunk_voxels, noise_sigma_map=noise_sigma_map)

    def _fit_validated(self, given: FitInput) -> FitResult:
        """The engine's fit, after estimating a Rician noise level that is not given; a noise
        map is recorded in the provenance options (``noise_sigma: "map"`` and its median)."""
        sig = given.voxel_inputs.get("noise_sigma_map")
        if sig is not None:
            res = super()._fit_validated(given)
            good = np.isfinite(sig) & (sig > 0)
            res.provenance["options"]["noise_sigma"] = "map"
            res.provenance["options"]["noise_sigma_map_median"] = (
                float(np.median(sig[good])) if good.any() else None
            )
            return res
        if self.floor == "rician" and self.noise_sigma is None:
            return self.with_noise_estimated(given.data, given.mask)._fit_validated(given)
        return super()._fit_validated(given)

    def with_noise_estimated(
        self, data: npt.ArrayLike, mask: npt.ArrayLike | None = None
    ) -> _DecayModel:
        """A copy whose Rician noise level is estimated from ``data`` (:meth:`estimate_noise`,
        within ``mask``), recorded in the provenance as estimated; the model itself if the
        noise level is given or the floor is not Rician.

        What :meth:`fit` does first; done apart, the noise level can come from the whole
        volume (its background) while only the body is fitted.
        """
        if self.floor != "rician" or self.noise_sigma is not None:
            return self
        model = copy_model(self)
        model.noise_sigma, model._sigma_estimated = self.estimate_noise(data, mask)
        return model

    def estimate_noise_sigma(
        self, data: npt.ArrayLike, mask: npt.ArrayLike | None = None, *, max_voxels: int = 5000
    ) -> float:
        """Rician noise level of multi-echo magnitude data (see :meth:`estimate_noise`)."""
        return self.estimate_noise(data, mask, max_voxels=max_voxels)[0]

    def estimate_noise(
        self, data: npt.ArrayLike, mask: npt.ArrayLike | None = None, *, max_voxels: int = 5000
    ) -> tuple[float, str]:
        """Rician noise level of multi-echo magnitude data, and how it was obtained.

        1. ``"background"``: signal-free voxels, when the data hold enough of them. Starting
           from the 5 % quantile of the first echo read as a Rayleigh quantile, voxels whose
           first echo is below ``3σ`` are selected and σ is re-estimated by Rayleigh maximum
           likelihood, ``σ² = mean(M²)/2``, over their *later* echoes (the selection
           truncates only the first), until it settles. The selection is accepted as
           background only if it holds at least 2 % of the voxels (and 50) and its mean
           magnitude does not decay across the later echoes (within 10 %): tissue decays,
           noise does not (Gudbjartsson & Patz 1995, doi:10.1002/mrm.1910340618).
        2. ``"decays"``: otherwise every voxel (an evenly spaced subset of ``max_voxels``) is
           fitted with σ as a third parameter, ``E[M] = R_σ(S0 e^{-TE R})``, from a small
           starting σ, and the median σ is taken over the voxels in which it is identifiable:
           the decay is seen going from clearly above the floor (fitted amplitude > 5σ at
           the first echo) onto it (< 2σ at the last), σ's standard error is below 30 % and
           the residuals are as large as σ says (mean square > 0.15 σ²: a large σ that turns
           a slow decay into a fast decay onto a high floor fits with residuals far below σ).
        3. ``"none"``: fewer than 10 such voxels: no voxel decays onto the floor, so the floor
           cannot bias the fits; σ = 0 (a plain mono-exponential fit).

        A σ measured elsewhere (e.g. :func:`tumorscope.models.fluorine.rayleigh_sigma` over a
        chosen background region) is always better: pass it as ``noise_sigma``.

        Parameters
        ----------
        data : array_like, shape (..., n_echoes)
        mask : array_like of bool, shape data.shape[:-1], optional
            Voxels to use (the background step needs signal-free voxels: a tight tissue mask
            removes them).

        Returns
        -------
        sigma : float
            In signal units.
        method : {"background", "decays", "none"}
        """
        arr, m = validate_inputs(
            data, mask, n_measurements=self.n_measurements, what=self.measurement_name
        )
        if self.echo_times_ms.size < 4:
            raise FitError(
                f"estimating the noise level needs at least 4 echoes, got "
                f"{self.echo_times_ms.size}; pass noise_sigma",
                field="noise_sigma",
            )
        # rows of voxels as a view in the data's memory order (a NIfTI series is Fortran-
        # ordered: each echo contiguous), read one echo at a time: no copy of the series
        order: Literal["C", "F"] = (
            "F" if arr.flags.f_contiguous and not arr.flags.c_contiguous else "C"
        )
        flat = arr.reshape(-1, arr.shape[-1], order=order)
        keep = valid_rows(flat, None if m is None else m.reshape(-1, order=order))
        if not keep.any():
            return 0.0, "none"
        bg = background_sigma_rows(flat, None if keep.all() else keep)
        if bg is not None:
            return bg, "background"
        # the voxels in C order (as the subsample below has always taken them)
        rows = arr.reshape(-1, arr.shape[-1])
        if m is not None:
            rows = rows[m.reshape(-1)]
        y = np.asarray(rows, dtype=np.float64)
        y = y[np.all(np.isfinite(y), axis=1) & np.all(y >= 0, axis=1)]
        y = y[np.any(y > 0, axis=1)]
        if y.shape[0] > max_voxels:
            y = y[np.linspace(0, y.shape[0] - 1, max_voxels).astype(np.int64)]
        if y.shape[0] == 0:
            return 0.0, "none"
        sigma = self._decay_sigma(y)
        return (sigma, "decays") if sigma > 0 else (0.0, "none")

    def _decay_sigma(self, y: np.ndarray) -> float:
        """σ fitted with every decay (:func:`.noise.decay_sigma`), from a plain fit."""
        plain = copy_model(self)
        plain.floor = "none"
        start, _, _ = plain._varpro(y)
        return decay_sigma(y, self.echo_times_ms, start, self._rate_bounds)


@register_model
class T2Star(_DecayModel):
    """Multi-echo gradient echo T2*/R2*, noise-floor aware.

    With the default ``floor="rician"`` the model is the expected magnitude of a
    mono-exponential decay under Rician noise (:func:`t2star_rician_signal`; Gudbjartsson &
    Patz 1995, doi:10.1002/mrm.1910340618; Feng et al. 2013, doi:10.1002/mrm.24607). Short T2*
    (iron-laden tissue) reaches the noise floor within a few echoes; a plain exponential fit
    then mistakes the floor for slow decay and underestimates R2*, the Rician model does not.

    Parameters
    ----------
    echo_times_ms : sequence of float, shape (n_echoes,), or MultiEchoProtocol
        Echo times in ms, > 0, strictly increasing, at least 2 (4 to estimate the noise); or
        the acquisition as a :class:`~tumorscope.protocol.MultiEchoProtocol`.
    noise_sigma : float, optional, keyword-only
        Rician noise level (SD of each of the real and imaginary channels, signal units),
        e.g. from a background region. Estimated from the decays when omitted
        (:meth:`estimate_noise_sigma`); the value used is recorded in the provenance.
    floor : {"rician", "none"}, default "rician", keyword-only
        ``"none"`` fits a plain exponential (exact least squares, variable projection).
    backend : {"auto", "numba", "numpy"}, keyword-only
        Solver of the Rician model: the compiled per-voxel start and LM in one pass
        (``"numba"``, the default when numba is installed; :mod:`._rician_numba`) or the
        vectorised numpy LM. The plain fit is exact least squares
        (variable projection), compiled with numba and vectorised with numpy (same estimates).

    Notes
    -----
    Maps: ``"S0"`` (a.u.), ``"R2star"`` (1/s), derived ``"T2star"`` (ms).
    """

    name = "t2star"
    parameters = (
        _S0_SPEC,
        ParameterSpec(
            "R2star",
            "1/s",
            0.0,
            5000.0,
            typical=(10.0, 300.0),
            description="transverse relaxation rate (gradient echo)",
        ),
    )
    derived = (ParameterSpec("T2star", "ms", 0.0, np.inf, description="1000 / R2star"),)
    _rate_bounds = (0.1, 5000.0)

    def __init__(
        self,
        echo_times_ms: Sequence[float] | npt.ArrayLike | MultiEchoProtocol,
        *,
        noise_sigma: float | None = None,
        floor: Literal["rician", "none"] = "rician",
        backend: str = "auto",
    ) -> None:
        if floor == "offset":
            raise FitError(
                "T2Star has floor 'rician' or 'none'; use T2Offset for an offset", field="floor"
            )
        super().__init__(echo_times_ms, floor=floor, noise_sigma=noise_sigma, backend=backend)

    def derive(self, maps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"T2star": rate(maps["R2star"])}

    @classmethod
    def example(cls) -> T2Star:
        return cls([2.0, 4.0, 6.0, 8.0, 12.0, 16.0, 20.0, 25.0], noise_sigma=1.0)

    def sample_parameters(self, n: int, *, rng: np.random.Generator) -> np.ndarray:
        return np.stack([rng.uniform(500.0, 5000.0, n), rng.uniform(10.0, 300.0, n)], axis=1)


@register_model
class T2(_DecayModel):
    """Multi-echo spin echo T2 (mono-exponential).

    ``S0 exp(-TE/T2)`` by exact least squares (variable projection). ``floor="rician"`` fits
    the Rician expected magnitude instead (as :class:`T2Star`), with ``noise_sigma`` given or
    estimated. For an additive offset use :class:`T2Offset`. Stimulated echoes from imperfect
    refocusing (multi-echo CPMG) are not modelled: drop the first echo, or use sequences
    with crushers, when they matter (Milford et al. 2015, doi:10.1371/journal.pone.0145255).

    Parameters
    ----------
    echo_times_ms : sequence of float, shape (n_echoes,), or MultiEchoProtocol
    floor : {"none", "rician"}, default "none", keyword-only
    noise_sigma : float, optional, keyword-only
        Only with ``floor="rician"``.
    backend : {"auto", "numba", "numpy"}, keyword-only
        The compiled (numba, default when installed) or the numpy solver, for every floor
        but ``"offset"`` (numpy).

    Notes
    -----
    Maps: ``"S0"`` (a.u.), ``"T2"`` (ms), derived ``"R2"`` (1/s).
    """

    name = "t2"
    parameters: ClassVar[tuple[ParameterSpec, ...]] = (
        _S0_SPEC,
        ParameterSpec(
            "T2", "ms", 1.0, 5000.0, typical=(30.0, 300.0), description="transverse relaxation time"
        ),
    )
    derived = (ParameterSpec("R2", "1/s", 0.0, np.inf, description="1000 / T2"),)
    _rate_bounds = (0.2, 1000.0)
    _time_parameter = True

    def __init__(
        self,
        echo_times_ms: Sequence[float] | npt.ArrayLike | MultiEchoProtocol,
        *,
        floor: Literal["none", "rician"] = "none",
        noise_sigma: float | None = None,
        backend: str = "auto",
    ) -> None:
        if floor == "offset" and type(self) is T2:
            raise FitError("use T2Offset for a mono-exponential with an offset", field="floor")
        super().__init__(echo_times_ms, floor=floor, noise_sigma=noise_sigma, backend=backend)

    def _rate_of(self, q: np.ndarray) -> np.ndarray:
        return rate(q)

    def _drate(self, q: np.ndarray) -> np.ndarray:
        return -1000.0 / np.asarray(q, dtype=float) ** 2

    def _from_rate(self, r: np.ndarray) -> np.ndarray:
        return rate(r)

    def derive(self, maps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"R2": rate(maps["T2"])}

    @classmethod
    def example(cls) -> T2:
        return cls([10.0, 20.0, 30.0, 40.0, 60.0, 80.0, 120.0, 160.0])

    def sample_parameters(self, n: int, *, rng: np.random.Generator) -> np.ndarray:
        return np.stack([rng.uniform(500.0, 5000.0, n), rng.uniform(30.0, 300.0, n)], axis=1)


@register_model
class T2Offset(T2):
    """Mono-exponential T2 with a constant offset, ``S0 exp(-TE/T2) + offset``.

    The offset absorbs a noise floor or a long-T2 background crudely (it biases T2 less than
    ignoring the floor, more than the Rician model; Milford et al. 2015,
    doi:10.1371/journal.pone.0145255). Exact least squares: ``S0`` and the offset are linear.
    At least three echoes.

    Notes
    -----
    Maps: ``"S0"``, ``"T2"`` (ms), ``"offset"`` (a.u.), derived ``"R2"`` (1/s).
    """

    name = "t2_offset"
    parameters = (
        *T2.parameters,
        ParameterSpec(
            "offset", "a.u.", typical=(0.0, 50.0), description="constant added to the decay"
        ),
    )

    def __init__(
        self,
        echo_times_ms: Sequence[float] | npt.ArrayLike | MultiEchoProtocol,
        *,
        backend: str = "auto",
    ) -> None:
        _DecayModel.__init__(self, echo_times_ms, floor="offset", noise_sigma=None, backend=backend)

    @classmethod
    def example(cls) -> T2Offset:
        return cls([10.0, 20.0, 30.0, 40.0, 60.0, 80.0, 120.0, 160.0])

    def sample_parameters(self, n: int, *, rng: np.random.Generator) -> np.ndarray:
        base = super().sample_parameters(n, rng=rng)
        return np.column_stack([base, rng.uniform(0.0, 50.0, n)])
