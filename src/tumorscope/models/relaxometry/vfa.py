"""Variable flip angle T1 (:class:`VFAT1`) from spoiled gradient echo magnitudes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, Literal

import numpy as np
import numpy.typing as npt

from ...errors import DataError
from ...fitting.engine import BlockFit
from ...fitting.polish import gauss_newton_polish
from ...fitting.varpro import varpro_log
from ...protocol import VFAProtocol
from ..base import FitInput, FitResult, ParameterSpec, register_model
from ._common import T1_SPEC, T1Model, solved_block
from .equations import _flip_rad, despot1, spgr_jacobian, spgr_signal, vfa_two_point

__all__ = ["VFAT1"]


@register_model
class VFAT1(T1Model):
    """Variable flip angle T1 mapping from spoiled gradient echo (SPGR) magnitudes.

    Fits :func:`spgr_signal` to one signal per flip angle. Methods:

    ``"nonlinear"`` (default)
        Exact least squares on the magnitudes: ``M0`` is linear and solved in closed form for
        every ``T1``, and ``T1`` is found by a global log-grid plus golden-section search of
        the 1-D reduced residual (variable projection). No starting value, no local minima
        within the grid, per-voxel B1 supported.
    ``"despot1"``
        The linearised DESPOT1 regression of :func:`despot1` (Deoni et al. 2003,
        doi:10.1002/mrm.10407): fast, but it weights the angles unevenly, so it is noisier.
    ``"two_point"``
        DESPOT1 on the first and last flip angle only (what two-angle protocols give).

    Parameters
    ----------
    flip_angles_deg : sequence of float, shape (n_fa,), or VFAProtocol
        Nominal flip angles in degrees, at least two distinct, each in (0, 180); or the whole
        acquisition as a :class:`~tumorscope.protocol.VFAProtocol` (then no ``tr_ms``).
    tr_ms : float
        Repetition time in ms.
    method : {"nonlinear", "despot1", "two_point"}, keyword-only
    backend : {"auto", "numpy", "numba"}, keyword-only
        Accepted for a uniform interface; every method here is closed-form or a vectorised
        1-D search and runs in numpy.

    Notes
    -----
    Maps: ``"M0"`` (a.u.), ``"T1"`` (ms), derived ``"R1"`` (1/s). Pass a B1 map (relative
    flip angle, 1 = nominal) to :meth:`fit` as ``b1=``; the actual flip angles are
    ``b1 * flip_angles_deg`` voxel by voxel. Without it T1 is biased by roughly
    ``(actual/nominal)^2`` (Stikov et al., Magn Reson Med 2015, doi:10.1002/mrm.25135).

    Examples
    --------
    >>> import numpy as np
    >>> m = VFAT1([2, 5, 12], 5.4)
    >>> y = spgr_signal(np.array([[1000.0, 1100.0]]), [2, 5, 12], 5.4)
    >>> fit = m.fit(y)
    >>> round(float(fit["T1"][0]), 3)
    1100.0
    """

    name = "vfat1"
    parameters = (
        ParameterSpec(
            "M0",
            "a.u.",
            0.0,
            np.inf,
            typical=(500.0, 5000.0),
            description="equilibrium signal (includes receive gain and T2* decay)",
        ),
        T1_SPEC,
    )
    methods = ("nonlinear", "despot1", "two_point")
    measurement_name = "flip angles"
    recorded_options = ("flip_angles_deg", "tr_ms", "method")
    protocol_type = VFAProtocol
    voxel_inputs = ("b1",)
    voxel_input_labels: ClassVar[Mapping[str, str]] = {"b1": "B1 map"}

    def __init__(
        self,
        flip_angles_deg: Sequence[float] | npt.ArrayLike | VFAProtocol,
        tr_ms: float | None = None,
        *,
        method: Literal["nonlinear", "despot1", "two_point"] = "nonlinear",
        backend: str = "auto",
    ) -> None:
        proto = self._acquire(
            VFAProtocol, method, backend, flip_angles_deg=flip_angles_deg, tr_ms=tr_ms
        )
        self.flip_angles_deg = np.asarray(proto.flip_angles_deg)
        self.tr_ms = float(proto.tr_ms)

    @property
    def n_measurements(self) -> int:
        return int(self.flip_angles_deg.size)

    def signal(self, params: np.ndarray) -> np.ndarray:
        return spgr_signal(params, self.flip_angles_deg, self.tr_ms)

    def jacobian(self, params: np.ndarray) -> np.ndarray:
        return spgr_jacobian(params, self.flip_angles_deg, self.tr_ms)

    def initial_guess(self, y: np.ndarray) -> np.ndarray:
        m0, t1 = despot1(y, self.flip_angles_deg, self.tr_ms)
        return np.stack(
            [np.nan_to_num(m0, nan=float(np.max(y))), np.nan_to_num(t1, nan=1000.0)], axis=1
        )

    def invalid_voxels(self, y: np.ndarray, *, b1: np.ndarray | None = None) -> np.ndarray:
        """Invalid magnitudes, and (with a B1 map) non-finite or non-positive B1."""
        bad = super().invalid_voxels(y)
        if b1 is not None:
            bad |= ~np.isfinite(b1) | (b1 <= 0)
        return bad

    @classmethod
    def example(cls) -> VFAT1:
        return cls([2.0, 5.0, 10.0, 15.0], 5.0)

    def check_voxel_inputs(self, inputs: Mapping[str, np.ndarray], mask: np.ndarray | None) -> None:
        """A B1 map must be a relative scale near 1 (a map in percent is refused)."""
        b = inputs.get("b1")
        if b is None:
            return
        sel = b[mask] if mask is not None else b
        sel = sel[np.isfinite(sel)]
        if sel.size and float(np.median(sel)) > 3.0:
            raise DataError(
                f"B1 map median is {float(np.median(sel)):g}; expected a relative flip-angle "
                "scale near 1 (divide a map in percent by 100)",
                field="b1",
            )

    def fit(  # type: ignore[override]  # names its one per-voxel input
        self,
        data: npt.ArrayLike,
        mask: npt.ArrayLike | None = None,
        *,
        b1: npt.ArrayLike | None = None,
        chunk_voxels: int | None = None,
    ) -> FitResult:
        """Fit every voxel (within ``mask``); see :meth:`Model.fit`.

        Parameters
        ----------
        data : array_like, shape (..., n_fa)
        mask : array_like of bool, shape data.shape[:-1], optional
        b1 : array_like, shape data.shape[:-1], optional, keyword-only
            Relative flip angle map (actual / nominal, 1 = perfect), a per-voxel input
            (:attr:`voxel_inputs`). Voxels with a non-finite or non-positive B1 get status
            ``INVALID_INPUT``; the provenance options record ``b1_map: true``.
        chunk_voxels : int, optional, keyword-only
        """
        return super().fit(data, mask, chunk_voxels=chunk_voxels, b1=b1)

    def _fit_validated(self, given: FitInput) -> FitResult:
        """The engine's fit, recording a B1 map in the provenance options (``b1_map``)."""
        res = super()._fit_validated(given)
        if "b1" in given.voxel_inputs:
            res.provenance["options"]["b1_map"] = True
        return res

    def fit_block(self, y: np.ndarray, *, b1: np.ndarray | None = None) -> BlockFit:
        if self.method == "nonlinear":
            params, rss, at_bound = self._fit_nonlinear(y, b1)
            return solved_block(
                params,
                rss,
                at_bound,
                lambda p: spgr_jacobian(p, self.flip_angles_deg, self.tr_ms, b1=b1),
            )
        fn = despot1 if self.method == "despot1" else vfa_two_point
        m0, t1 = fn(y, self.flip_angles_deg, self.tr_ms, b1=b1)
        params = np.stack([m0, t1], axis=1)
        with np.errstate(invalid="ignore"):
            pred = spgr_signal(params, self.flip_angles_deg, self.tr_ms, b1=b1)
            rss = np.sum((y - pred) ** 2, axis=1)
        # the linearised estimators are not least-squares solutions of the magnitudes: no
        # Jacobian-based standard errors (they would be another estimator's)
        return solved_block(params, rss, np.zeros(y.shape[0], dtype=bool), None)

    def _fit_nonlinear(
        self, s: np.ndarray, b1: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact least squares: M0 in closed form, T1 by variable projection, then polished."""
        n, nfa = s.shape
        a = np.broadcast_to(_flip_rad(self.flip_angles_deg, b1), (n, nfa))
        sa, ca = np.sin(a), np.cos(a)

        def basis(t1: np.ndarray) -> np.ndarray:
            e1 = np.exp(-self.tr_ms / t1)[:, None]
            return (sa * (1.0 - e1) / (1.0 - e1 * ca))[..., None]

        lo, hi = self.parameters[1].lower, self.parameters[1].upper
        t1, coef, rss, at_bound = varpro_log(basis, s, lo, hi)
        params = np.stack([coef[:, 0], t1], axis=1)
        free = ~at_bound & (coef[:, 0] > 0)
        if free.any():
            b1f = None if b1 is None else b1[free]
            params[free], rss[free] = gauss_newton_polish(
                params[free],
                s[free],
                lambda p: spgr_signal(p, self.flip_angles_deg, self.tr_ms, b1=b1f),
                lambda p: spgr_jacobian(p, self.flip_angles_deg, self.tr_ms, b1=b1f),
                rss[free],
            )
        at_bound |= params[:, 0] <= 0
        return params, rss, at_bound
