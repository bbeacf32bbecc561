"""Hyperpolarised [1-13C]pyruvate → lactate kinetics: kPL, the AUC ratio, an SNR gate.

Two models of the same exchange (equations in :mod:`.kinetics`):

* :class:`PyruvateLactate`, the **input-less** model (Larson et al., Magn Reson Med 2018;
  80:2405-2417, doi:10.1002/mrm.27145; the ``fit_pyr_kinetics`` input-less fit of the
  Hyperpolarized-MRI-Toolbox; Khegai et al. 2014): the measured pyruvate signal drives
  lactate, so no arterial input, bolus timing or pyruvate T1 is needed. With the lactate T1
  fixed, the lactate signal is *linear* in ``kPL`` and in lactate's initial magnetisation
  ``L0`` (:func:`~.kinetics.inputless_basis`), so the fit is a closed-form 2×2 least-squares
  solve for every voxel at once; with ``fit_t1_lactate=True`` the lactate T1 is a single
  nonlinear parameter found per voxel by a bracketed golden-section search around that solve
  (variable projection).
* :class:`PyruvateLactateBoxcar`, the model with a **boxcar input** (Bankson et al., Cancer Res
  2015;75:4708-4717, doi:10.1158/0008-5472.CAN-15-0171; Daniels et al., NMR Biomed 2016;
  29:387-399, doi:10.1002/nbm.3468): pyruvate arrives at a constant rate over a known
  window, both signals are fitted (``kPL`` and the input rate), pyruvate and lactate T1 fixed.
  A registered :class:`~tumorscope.models.base.Model` on the LM engine, kept for comparison.

Both correct for the flip angles (``S = Mz sin θ``, ``Mz → Mz cos θ`` at every frame), so any
variable flip-angle schedule (constant, progressive, metabolite-specific) is allowed.

**AUC ratio** (model-free): ``Σ S_lac / Σ S_pyr`` over the frames (Hill et al., PLoS One
2013;8:e71996, doi:10.1371/journal.pone.0071996), proportional to kPL for a fixed protocol.

**SNR gate** (tumorscope's choice, see ``docs/metabolic.md``): the lactate SNR of a voxel is
the peak of its fitted lactate curve over the noise level (given as ``noise_sigma``, a number or per-voxel
map, else the RMS of the lactate residual). Below ``min_snr`` (default 5) kPL is not reported
(NaN, status ``INVALID_INPUT``, one summary warning); the AUC ratio and the SNR map are kept.

Units: times in s, ``kPL`` in 1/s, ``T1_lactate`` in s (13C T1s are tens of seconds; seconds
as in the toolbox, unlike the ms of proton relaxometry), flip angles in degrees at the
interface.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from ...errors import FitError, ProtocolError, TumorscopeWarning
from ...fitting.engine import BlockFit, fit_blocks, validate_inputs
from ...fitting.status import FitStatus
from ..base import FitResult, Model, ParameterSpec, register_model
from .kinetics import inputless_basis, two_site_signals

__all__ = ["PyruvateLactate", "PyruvateLactateBoxcar", "auc_ratio", "flip_schedule"]

#: Default lactate T1 (s) when it is fixed (Larson 2018 toolbox default R1L = 1/25 s⁻¹).
T1_LACTATE_S = 25.0
#: Default pyruvate T1 (s) of the boxcar model (toolbox default R1P = 1/30 s⁻¹).
T1_PYRUVATE_S = 30.0
#: Default lactate SNR below which kPL is not reported.
MIN_SNR = 5.0
_T1_RANGE = (5.0, 80.0)
#: Fixed-point iterations on the pyruvate loss rate ``kPL + R1P`` (converged to < 1e-6 of kPL
#: in 4 for kPL ≤ 0.5 /s and TR ≤ 5 s: the dependence is weak, the contraction fast).
_FIXED_POINT_ITERATIONS = 5
_KPL_MAX = 5.0


def flip_schedule(
    flip_angles_deg: npt.ArrayLike, n: int, *, field: str = "flip_angles_deg"
) -> np.ndarray:
    """Flip angles as a ``(2, n)`` array in radians from ``(2,)`` (constant) or ``(2, n)``.

    Raises
    ------
    ProtocolError
        Another shape, or angles outside (0, 90] degrees.
    """
    fa = np.asarray(flip_angles_deg, dtype=float)
    if fa.shape == (2,):
        fa = np.repeat(fa[:, None], n, axis=1)
    if fa.shape != (2, n):
        raise ProtocolError(
            f"must have shape (2,) or (2, {n}) (pyruvate row, lactate row), got {fa.shape}",
            field=field,
        )
    if not np.all(np.isfinite(fa)) or np.any(fa <= 0) or np.any(fa > 90):
        raise ProtocolError("flip angles must be in (0, 90] degrees", field=field)
    return np.deg2rad(fa)


def _times(times_s: npt.ArrayLike | None, tr_s: float | None, n: int | None) -> np.ndarray:
    if times_s is None:
        if tr_s is None or n is None:
            raise ProtocolError(
                "give times_s, or tr_s with a (2, n) flip-angle schedule", field="times_s"
            )
        return np.arange(n) * float(tr_s)
    t = np.asarray(times_s, dtype=float).ravel()
    if t.size < 3 or not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        raise ProtocolError(
            f"need at least 3 finite, strictly increasing frame times, got {t.tolist()}",
            field="times_s",
        )
    if tr_s is not None:
        if not np.allclose(np.diff(t), float(tr_s), rtol=1e-3, atol=1e-6):
            raise ProtocolError(f"frame times are not spaced by tr_s = {tr_s} s", field="tr_s")
    return t


def auc_ratio(signals: npt.ArrayLike) -> np.ndarray:
    """Lactate/pyruvate area-under-curve ratio of signals ``(..., 2, n)`` (NaN if ``Σ S_pyr ≤ 0``)."""
    s = np.asarray(signals, dtype=float)
    num = s[..., 1, :].sum(axis=-1)
    den = s[..., 0, :].sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _solve2(
    A: np.ndarray, B: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row least squares of ``y ≈ l0 A + k B`` with ``l0, k ≥ 0``: (l0, k, rss)."""
    aa = (A * A).sum(1)
    bb = (B * B).sum(1)
    ab = (A * B).sum(1)
    ay = (A * y).sum(1)
    by = (B * y).sum(1)
    det = aa * bb - ab * ab
    with np.errstate(divide="ignore", invalid="ignore"):
        l0 = (bb * ay - ab * by) / det
        k = (aa * by - ab * ay) / det
        k_only = np.where(bb > 0, np.maximum(by, 0) / bb, 0.0)
        l_only = np.where(aa > 0, np.maximum(ay, 0) / aa, 0.0)
    bad = ~(det > 1e-300 * aa * bb) | ~np.isfinite(l0) | ~np.isfinite(k)
    neg_k = (k < 0) | bad
    neg_l = (l0 < 0) & ~neg_k
    l0 = np.where(neg_k, l_only, np.where(neg_l, 0.0, l0))
    k = np.where(neg_k, 0.0, np.where(neg_l, k_only, k))
    r = y - l0[:, None] * A - k[:, None] * B
    return l0, k, (r * r).sum(1)


def _pinv_diagonal(m: np.ndarray) -> np.ndarray:
    """Diagonal of ``np.linalg.pinv`` of each symmetric matrix ``m`` (v, p, p).

    For 2 × 2 matrices far from singular (determinant > 1e-8 of the product of the
    diagonal: condition number below ~4e8) the closed-form inverse ``(d, a) / det``, equal to
    the pseudo-inverse there up to rounding (~1e-16 × the condition number); the others, and
    larger matrices, by ``np.linalg.pinv`` (an SVD per voxel: 0.5 s for 500,000 voxels).
    """
    if m.shape[1:] != (2, 2):
        return np.einsum("vii->vi", np.linalg.pinv(m))
    a, b, d = m[:, 0, 0], m[:, 0, 1], m[:, 1, 1]
    det = a * d - b * b
    good = np.isfinite(det) & (det > 1e-8 * a * d) & (a > 0) & (d > 0)
    out = np.empty((m.shape[0], 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        out[:, 0] = d / det
        out[:, 1] = a / det
    if not good.all():
        out[~good] = np.einsum("vii->vi", np.linalg.pinv(m[~good]))
    return out


def _n_workers() -> int:
    """Threads over blocks for the compiled kernels (they release the GIL): the cores, no
    more than numba's thread count (a Dask worker of the pipeline sets it to its share)."""
    import os

    n = max(1, os.cpu_count() or 1)
    try:
        import numba

        n = min(n, int(numba.get_num_threads()))
    except ImportError:  # pragma: no cover - numba is optional
        return 1
    return max(1, n)


def _compiled() -> Any:
    """The compiled kernels' module, or None without numba."""
    try:
        from . import _hp13c_numba
    except ImportError:  # pragma: no cover - numba is optional
        return None
    return _hp13c_numba


class PyruvateLactate:
    """Input-less kPL model of hyperpolarised [1-13C]pyruvate → lactate (Larson 2018).

    Parameters
    ----------
    times_s : array_like, shape (n,), or None
        Frame times in s (at least 3, increasing); None with ``tr_s``: ``0, tr, 2 tr, …``.
    flip_angles_deg : array_like, shape (2,) or (2, n)
        Flip angles of pyruvate (row 0) and lactate (row 1), constant or per frame.
    tr_s : float, optional, keyword-only
        Time between frames; checked against ``times_s`` when both are given.
    fit_t1_lactate : bool, default False, keyword-only
        Fit the lactate T1 (in 5–80 s) instead of fixing it.
    t1_lactate_s : float, default 25, keyword-only
        The fixed lactate T1 (s).
    t1_pyruvate_s : float or None, default 30, keyword-only
        Pyruvate T1 (s) of the toolbox's between-frame pyruvate model (constant input over
        each interval, loss rate ``kPL + 1/T1P``, iterated to a fixed point in kPL; exact
        for a piecewise-constant input). None: pyruvate interpolated exponentially between
        frames (no pyruvate T1 needed; exact once the bolus has arrived).
    min_snr : float, default 5, keyword-only
        Lactate SNR (peak of the fitted lactate curve / noise) below which kPL is not reported; 0 turns
        the gate off.
    noise_sigma : float, optional, keyword-only
        Noise standard deviation of the signals (else per voxel from the lactate residual).
    engine : {"auto", "numba", "numpy"}, default "auto", keyword-only
        The compiled fixed point (:mod:`._hp13c_numba`, with a pyruvate T1; same results to
        ~1e-15) when numba is installed, else numpy. Not part of the options: it does not
        change the results.

    Examples
    --------
    >>> import numpy as np
    >>> from tumorscope.models.metabolic import PyruvateLactate, two_site_signals
    >>> t = np.arange(20) * 3.0
    >>> s = two_site_signals(t, np.deg2rad(np.full((2, 20), 20.0)), [0.05], r1p=1/30,
    ...                      r1l=1/25, input_rate=1.0, input_start_s=0, input_duration_s=8)
    >>> fit = PyruvateLactate(t, [20, 20]).fit(s * 1e3)
    >>> round(float(fit["kPL"][0]), 2)
    0.05
    """

    name: ClassVar[str] = "pyruvate_lactate"
    #: How messages name the product (``malate`` for :class:`~.fumarate.FumarateMalate`).
    product: ClassVar[str] = "lactate"

    def __init__(
        self,
        times_s: npt.ArrayLike | None,
        flip_angles_deg: npt.ArrayLike,
        *,
        tr_s: float | None = None,
        fit_t1_lactate: bool = False,
        t1_lactate_s: float = T1_LACTATE_S,
        t1_pyruvate_s: float | None = T1_PYRUVATE_S,
        min_snr: float = MIN_SNR,
        noise_sigma: float | None = None,
        engine: Literal["auto", "numba", "numpy"] = "auto",
    ) -> None:
        if engine not in ("auto", "numba", "numpy"):
            raise FitError(f"must be 'auto', 'numba' or 'numpy', got {engine!r}", field="engine")
        if engine == "numba" and _compiled() is None:
            raise FitError("numba is not installed (pip install tumorscope[fast])", field="engine")
        self.engine = engine
        fa = np.asarray(flip_angles_deg, dtype=float)
        n = fa.shape[-1] if fa.ndim == 2 else None
        self.times_s = _times(times_s, tr_s, n)
        self.flips_rad = flip_schedule(fa, self.times_s.size)
        self.tr_s = None if tr_s is None else float(tr_s)
        self.fit_t1_lactate = bool(fit_t1_lactate)
        t1 = float(t1_lactate_s)
        if not np.isfinite(t1) or t1 <= 0:
            raise ProtocolError(f"must be > 0 s, got {t1_lactate_s!r}", field="t1_lactate_s")
        self.t1_lactate_s = t1
        if t1_pyruvate_s is not None and not (np.isfinite(t1_pyruvate_s) and t1_pyruvate_s > 0):
            raise ProtocolError(f"must be > 0 s, got {t1_pyruvate_s!r}", field="t1_pyruvate_s")
        self.t1_pyruvate_s = None if t1_pyruvate_s is None else float(t1_pyruvate_s)
        if not np.isfinite(min_snr) or min_snr < 0:
            raise FitError(f"must be >= 0, got {min_snr!r}", field="min_snr")
        self.min_snr = float(min_snr)
        if noise_sigma is not None and not (np.isfinite(noise_sigma) and noise_sigma > 0):
            raise FitError(f"must be > 0, got {noise_sigma!r}", field="noise_sigma")
        self.noise_sigma = None if noise_sigma is None else float(noise_sigma)
        self.parameters = (
            ParameterSpec("kPL", "1/s", 0.0, _KPL_MAX, typical=(0.005, 0.2)),
            ParameterSpec("L0", "a.u.", 0.0, np.inf, description="lactate Mz before frame 1"),
        ) + (
            (ParameterSpec("T1_lactate", "s", *_T1_RANGE, typical=(15.0, 40.0)),)
            if self.fit_t1_lactate
            else ()
        )

    @property
    def n_frames(self) -> int:
        return int(self.times_s.size)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    def options(self) -> dict[str, Any]:
        return {
            "times_s": self.times_s.tolist(),
            "flip_angles_deg": np.rad2deg(self.flips_rad).tolist(),
            "tr_s": self.tr_s,
            "fit_t1_lactate": self.fit_t1_lactate,
            "t1_lactate_s": self.t1_lactate_s,
            "t1_pyruvate_s": self.t1_pyruvate_s,
            "min_snr": self.min_snr,
            "noise_sigma": self.noise_sigma,
        }

    def __repr__(self) -> str:
        return f"PyruvateLactate(n_frames={self.n_frames}, fit_t1_lactate={self.fit_t1_lactate})"

    # ------------------------------------------------------------------ numerics
    def lactate_signal(self, pyruvate: np.ndarray, params: np.ndarray) -> np.ndarray:
        """Lactate signal ``(v, n)`` predicted from pyruvate signals ``(v, n)`` and parameters
        ``(v, p)`` (kPL, L0[, T1_lactate])."""
        r1l = 1.0 / params[:, 2] if self.fit_t1_lactate else 1.0 / self.t1_lactate_s
        kernels = self._kernels()
        if kernels is not None:
            decay = self._decay(params[:, 0])
            assert decay is not None
            A, B = kernels.inputless_basis_decay(
                np.ascontiguousarray(pyruvate, dtype=float),
                *self._schedule(),
                self._per_voxel(r1l, pyruvate.shape[0]),
                np.ascontiguousarray(decay, dtype=float),
            )
        else:
            A, B = inputless_basis(
                pyruvate, self.times_s, self.flips_rad, r1l, self._decay(params[:, 0])
            )
        return params[:, 1:2] * A + params[:, 0:1] * B

    def _peak(self, pyruvate: np.ndarray, params: np.ndarray) -> np.ndarray:
        """Peak of the absolute fitted lactate signal per voxel (``params``: kPL, L0, T1)."""
        kernels = self._kernels()
        decay = self._decay(params[:, 0])
        if kernels is None or decay is None:
            return np.asarray(np.max(np.abs(self.lactate_signal(pyruvate, params)), axis=1))
        v = pyruvate.shape[0]
        return np.asarray(
            kernels.peak_signal(
                np.ascontiguousarray(pyruvate, dtype=float),
                *self._schedule(),
                self._per_voxel(1.0 / params[:, 2], v),
                np.ascontiguousarray(decay, dtype=float),
                np.ascontiguousarray(params[:, 1]),
                np.ascontiguousarray(params[:, 0]),
            )
        )

    def _kernels(self) -> Any:
        """The compiled kernels when they apply (a pyruvate T1, numba, engine not numpy)."""
        if self.t1_pyruvate_s is None or getattr(self, "engine", "auto") == "numpy":
            return None
        return _compiled()

    def _schedule(self) -> tuple[np.ndarray, ...]:
        """Intervals and the sines/cosines of the flips, as the kernels take them."""
        fp, fl = self.flips_rad
        return (
            np.diff(self.times_s),
            np.sin(fp),
            np.cos(fp),
            np.sin(fl),
            np.cos(fl),
        )

    @staticmethod
    def _per_voxel(x: npt.ArrayLike, v: int) -> np.ndarray:
        return np.ascontiguousarray(np.broadcast_to(np.asarray(x, dtype=float), (v,)))

    def _decay(self, kpl: np.ndarray) -> np.ndarray | None:
        if self.t1_pyruvate_s is None:
            return None
        return np.nan_to_num(kpl, nan=0.05) + 1.0 / self.t1_pyruvate_s

    def _fixed(
        self,
        pyr: np.ndarray,
        lac: np.ndarray,
        t1: np.ndarray | float,
        iterations: int = 0,
    ) -> tuple[np.ndarray, ...]:
        """Closed-form (L0, kPL) at lactate T1 ``t1``, iterated on the pyruvate loss rate
        (``iterations`` times, default :data:`_FIXED_POINT_ITERATIONS`)."""
        r1l = 1.0 / np.asarray(t1, dtype=float)
        n_it = iterations or _FIXED_POINT_ITERATIONS
        kernels = self._kernels()
        if kernels is not None:
            assert self.t1_pyruvate_s is not None
            v = pyr.shape[0]
            return tuple(
                kernels.fixed_point(
                    np.ascontiguousarray(pyr, dtype=float),
                    np.ascontiguousarray(lac, dtype=float),
                    *self._schedule(),
                    self._per_voxel(r1l, v),
                    1.0 / self.t1_pyruvate_s,
                    n_it,
                )
            )
        k = np.full(pyr.shape[0], 0.05)
        for _ in range(1 if self.t1_pyruvate_s is None else n_it):
            A, B = inputless_basis(pyr, self.times_s, self.flips_rad, r1l, self._decay(k))
            l0, k, rss = _solve2(A, B, lac)
        return l0, k, rss, A, B

    def _block(self, y: np.ndarray) -> BlockFit:
        n = self.n_frames
        pyr, lac = y[:, :n], y[:, n:]
        v = y.shape[0]
        if self.fit_t1_lactate:
            t1 = self._search_t1(pyr, lac)
        else:
            t1 = np.full(v, self.t1_lactate_s)
        p = len(self.parameters)
        kernels = self._kernels()
        if kernels is not None and not self.fit_t1_lactate:
            # the normal matrix of the Jacobian [B, A] summed in the kernel
            assert self.t1_pyruvate_s is not None
            l0, k, rss, bb, ab, aa = kernels.fixed_point_normal(
                np.ascontiguousarray(pyr, dtype=float),
                np.ascontiguousarray(lac, dtype=float),
                *self._schedule(),
                self._per_voxel(1.0 / t1, v),
                1.0 / self.t1_pyruvate_s,
                _FIXED_POINT_ITERATIONS,
            )
            normal = np.stack([np.stack([bb, ab], 1), np.stack([ab, aa], 1)], 1)
        else:
            l0, k, rss, A, B = self._fixed(pyr, lac, t1)
            # standard errors from the Jacobian of the lactate signal (the pyruvate is an input)
            cols = [B, A]
            if self.fit_t1_lactate:
                h = 1e-4 * t1
                up = self.lactate_signal(pyr, np.stack([k, l0, t1 + h], 1))
                dn = self.lactate_signal(pyr, np.stack([k, l0, t1 - h], 1))
                cols.append((up - dn) / (2 * h[:, None]))
            J = np.stack(cols, axis=2)
            normal = np.einsum("vmi,vmj->vij", J, J)
        params = np.stack([k, l0, t1][:p], axis=1)
        dof = max(n - p, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            var = _pinv_diagonal(normal)
            se = np.sqrt(np.clip(var, 0, None) * (rss / dof)[:, None])
        status = np.full(v, FitStatus.CONVERGED, np.uint8)
        at_bound = (k <= 0) | (l0 <= 0)
        if self.fit_t1_lactate:
            at_bound |= (t1 <= _T1_RANGE[0] * 1.001) | (t1 >= _T1_RANGE[1] * 0.999)
        status[at_bound] = FitStatus.AT_BOUND
        bad = ~np.all(np.isfinite(params), axis=1)
        status[bad] = FitStatus.FAILED
        params[bad] = np.nan
        return BlockFit(params, status, rss, se)

    def _search_t1(self, pyr: np.ndarray, lac: np.ndarray) -> np.ndarray:
        """Per-voxel T1_lactate minimising the projected residual: a 10-point log grid, then
        golden-section search (28 steps: the bracket shrinks to 1.5e-6 of itself) in the
        bracket around the best grid point. The search iterates the pyruvate loss rate twice
        per trial T1 (enough to rank trials); the final solve at the found T1 iterates fully."""
        lo, hi = _T1_RANGE
        grid = np.geomspace(lo, hi, 10)
        v = pyr.shape[0]
        rss = np.stack([self._fixed(pyr, lac, np.full(v, g), 2)[2] for g in grid], axis=1)
        best = np.argmin(rss, axis=1)
        a = grid[np.maximum(best - 1, 0)]
        b = grid[np.minimum(best + 1, grid.size - 1)]
        g = (np.sqrt(5.0) - 1) / 2
        c = b - g * (b - a)
        d = a + g * (b - a)
        fc = self._fixed(pyr, lac, c, 2)[2]
        fd = self._fixed(pyr, lac, d, 2)[2]
        for _ in range(28):
            left = fc < fd
            b = np.where(left, d, b)
            a = np.where(left, a, c)
            new = np.where(left, b - g * (b - a), a + g * (b - a))
            fn = self._fixed(pyr, lac, new, 2)[2]
            d, fd, c, fc = (
                np.where(left, c, new),
                np.where(left, fc, fn),
                np.where(left, new, d),
                np.where(left, fn, fd),
            )
        return 0.5 * (a + b)

    # ------------------------------------------------------------------ the fit
    def _as_flat(self, signals: npt.ArrayLike) -> np.ndarray:
        arr = np.asarray(signals)
        n = self.n_frames
        if arr.ndim >= 2 and arr.shape[-2:] == (2, n):
            return arr.reshape(*arr.shape[:-2], 2 * n)
        raise FitError(
            f"signals must have shape (..., 2, {n}) (pyruvate, lactate; {n} frames on the last "
            f"axis), got {arr.shape}",
            field="signals",
        )

    def fit(
        self,
        signals: npt.ArrayLike,
        mask: npt.ArrayLike | None = None,
        *,
        noise_sigma: npt.ArrayLike | None = None,
        chunk_voxels: int | None = None,
    ) -> FitResult:
        """Fit kPL (and L0, T1_lactate) in every voxel.

        Parameters
        ----------
        signals : array_like, shape (..., 2, n)
            Pyruvate (index 0) and lactate (index 1) signals, frames on the last axis
            (magnitude or real, phased; not rescaled).
        mask : array_like of bool, shape signals.shape[:-2], optional
        noise_sigma : float or array_like of shape signals.shape[:-2], optional, keyword-only
            Noise level for the SNR gate (overrides the model's).
        chunk_voxels : int, optional, keyword-only

        Returns
        -------
        FitResult
            Maps ``kPL`` (1/s), ``L0``, [``T1_lactate`` (s)], ``AUC_ratio``, ``SNR_lactate``.
        """
        flat = self._as_flat(signals)
        arr, m = validate_inputs(flat, mask, n_measurements=2 * self.n_frames, what="frames")
        shape = arr.shape[:-1]
        sigma_in = self.noise_sigma if noise_sigma is None else noise_sigma
        sig = None
        if sigma_in is not None:
            sig = np.broadcast_to(np.asarray(sigma_in, dtype=float), shape)
            if np.any(~(sig > 0)):
                raise FitError("noise_sigma must be > 0 everywhere", field="noise_sigma")
        n = self.n_frames
        flat_y = np.asarray(arr.reshape(-1, 2 * n), dtype=float)  # no copy of float64 data
        auc = None
        if self._kernels() is not None and not self.fit_t1_lactate:
            from ._hp13c_compiled import fit_compiled

            fl, peak, auc = fit_compiled(self, flat_y, m, chunk_voxels)
            fitted = fl.status <= FitStatus.AT_BOUND
        else:
            fl = fit_blocks(
                self._block,
                arr,
                m,
                n_params=len(self.parameters),
                chunk_voxels=chunk_voxels,
                n_workers=_n_workers() if self._kernels() is not None else 1,
            )
            fitted = fl.status <= FitStatus.AT_BOUND
            peak = np.full(flat_y.shape[0], np.nan)
            if fitted.any():
                p_all = fl.params[fitted].astype(float)
                if not self.fit_t1_lactate:
                    t1 = np.full((p_all.shape[0], 1), self.t1_lactate_s)
                    p_all = np.concatenate([p_all, t1], 1)
                peak[fitted] = self._peak(flat_y[fitted, :n], p_all)
        if auc is None:
            auc = auc_ratio(flat_y.reshape(-1, 2, n)).astype(np.float32)
        if sig is None:
            noise = np.sqrt(fl.rss.astype(float) / max(n - len(self.parameters), 1))
        else:
            noise = sig.reshape(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            snr = (peak / noise).astype(np.float32)
        auc[~fl.mask | (fl.status == FitStatus.INVALID_INPUT)] = np.nan
        snr[~fitted] = np.nan
        gated = fitted & ~(snr >= self.min_snr)
        params, stderr, status = fl.params.copy(), fl.stderr.copy(), fl.status.copy()
        params[gated] = np.nan
        stderr[gated] = np.nan
        status[gated] = FitStatus.INVALID_INPUT
        counts = np.bincount(status, minlength=256)
        n_fit = int(counts.sum() - counts[FitStatus.NOT_FITTED])
        if gated.any():
            warnings.warn(
                f"{self.name}: {int(gated.sum()):,} of {n_fit:,} voxels below the {self.product} SNR "
                f"gate ({self.min_snr:g}): kPL not reported",
                TumorscopeWarning,
                stacklevel=2,
            )
        other = int(counts[FitStatus.FAILED])
        if other:
            warnings.warn(f"{self.name}: {other:,} voxels failed", TumorscopeWarning, stacklevel=2)
        maps = {s.name: params[:, i].reshape(shape) for i, s in enumerate(self.parameters)}
        maps["AUC_ratio"] = auc.reshape(shape)
        maps["SNR_lactate"] = snr.reshape(shape)
        units = {s.name: s.unit for s in self.parameters}
        units |= {"AUC_ratio": "1", "SNR_lactate": "1"}
        from ... import __version__

        return FitResult(
            maps=maps,
            units=units,
            status=status.reshape(shape),
            rss=fl.rss.reshape(shape),
            stderr={s.name: stderr[:, i].reshape(shape) for i, s in enumerate(self.parameters)},
            provenance={
                "model": self.name,
                "model_class": f"{type(self).__module__}.{type(self).__qualname__}",
                "options": self.options(),
                "method": "inputless-linear" + ("+golden-T1" if self.fit_t1_lactate else ""),
                "tumorscope_version": __version__,
                "numpy_version": np.__version__,
                "input": {"shape": list(np.shape(signals)), "fitted_voxels": int(fl.mask.sum())},
            },
            mask=fl.mask.reshape(shape),
        )

    def predict(self, fit: FitResult, signals: npt.ArrayLike) -> np.ndarray:
        """Lactate signal ``(..., n)`` of the fitted maps, driven by the measured pyruvate."""
        flat = self._as_flat(signals).astype(float)
        shape = flat.shape[:-1]
        y = flat.reshape(-1, 2 * self.n_frames)
        P = np.stack([np.asarray(fit[n], float).reshape(-1) for n in self.parameter_names], 1)
        if not self.fit_t1_lactate:
            P = np.concatenate([P, np.full((P.shape[0], 1), self.t1_lactate_s)], 1)
        out = self.lactate_signal(y[:, : self.n_frames], P)
        return out.reshape(*shape, self.n_frames)


@register_model
class PyruvateLactateBoxcar(Model):
    """Two-site pyruvate → lactate model with a boxcar pyruvate input (for comparison).

    Pyruvate arrives at rate ``Rin`` (signal units of Mz per s) from ``bolus_start_s`` for
    ``bolus_duration_s``; no magnetisation before. Fits ``kPL`` (1/s) and ``Rin`` to both
    signals; pyruvate and lactate T1 fixed. Data: ``(..., 2, n)`` as :class:`PyruvateLactate`,
    or flattened ``(..., 2n)`` (pyruvate frames, then lactate frames). ``kPL`` is found by a
    grid with ``Rin`` solved linearly, then bounded Levenberg–Marquardt (the ``kPL`` column of
    the Jacobian by central differences; ``Rin`` enters linearly).
    """

    name = "pyruvate_lactate_boxcar"
    parameters = (
        ParameterSpec("kPL", "1/s", 0.0, _KPL_MAX, typical=(0.01, 0.2)),
        ParameterSpec("Rin", "a.u./s", 0.0, np.inf, typical=(100.0, 1000.0)),
    )
    methods = ("lm",)
    measurement_name = "frames (pyruvate then lactate)"
    backend = "numpy"

    def __init__(
        self,
        times_s: npt.ArrayLike | None,
        flip_angles_deg: npt.ArrayLike,
        *,
        tr_s: float | None = None,
        bolus_start_s: float = 0.0,
        bolus_duration_s: float = 8.0,
        t1_pyruvate_s: float = T1_PYRUVATE_S,
        t1_lactate_s: float = T1_LACTATE_S,
    ) -> None:
        fa = np.asarray(flip_angles_deg, dtype=float)
        self.times_s = _times(times_s, tr_s, fa.shape[-1] if fa.ndim == 2 else None)
        self.flips_rad = flip_schedule(fa, self.times_s.size)
        self.bolus_start_s = float(bolus_start_s)
        self.bolus_duration_s = float(bolus_duration_s)
        if not self.bolus_duration_s > 0:
            raise ProtocolError("must be > 0 s", field="bolus_duration_s")
        for f, val in (("t1_pyruvate_s", t1_pyruvate_s), ("t1_lactate_s", t1_lactate_s)):
            if not (np.isfinite(val) and val > 0):
                raise ProtocolError(f"must be > 0 s, got {val!r}", field=f)
        self.t1_pyruvate_s = float(t1_pyruvate_s)
        self.t1_lactate_s = float(t1_lactate_s)
        self.method = "lm"

    @classmethod
    def example(cls) -> PyruvateLactateBoxcar:
        return cls(np.arange(20) * 3.0, [20.0, 30.0])

    @property
    def n_measurements(self) -> int:
        return 2 * int(self.times_s.size)

    def options(self) -> dict[str, Any]:
        return {
            "times_s": self.times_s.tolist(),
            "flip_angles_deg": np.rad2deg(self.flips_rad).tolist(),
            "bolus_start_s": self.bolus_start_s,
            "bolus_duration_s": self.bolus_duration_s,
            "t1_pyruvate_s": self.t1_pyruvate_s,
            "t1_lactate_s": self.t1_lactate_s,
        }

    def _unit(self, kpl: np.ndarray) -> np.ndarray:
        s = two_site_signals(
            self.times_s,
            self.flips_rad,
            kpl,
            r1p=1.0 / self.t1_pyruvate_s,
            r1l=1.0 / self.t1_lactate_s,
            input_rate=1.0,
            input_start_s=self.bolus_start_s,
            input_duration_s=self.bolus_duration_s,
        )
        return s.reshape(kpl.size, -1)

    def signal(self, params: np.ndarray) -> np.ndarray:
        p = np.atleast_2d(np.asarray(params, dtype=float))
        return p[:, 1:2] * self._unit(p[:, 0])

    def jacobian(self, params: np.ndarray) -> np.ndarray:
        p = np.atleast_2d(np.asarray(params, dtype=float))
        h = 1e-6 + 1e-5 * np.abs(p[:, 0])
        unit = self._unit(p[:, 0])
        dk = (self._unit(p[:, 0] + h) - self._unit(np.maximum(p[:, 0] - h, 0.0))) / (
            (p[:, 0] + h - np.maximum(p[:, 0] - h, 0.0))[:, None]
        )
        return np.stack([p[:, 1:2] * dk, unit], axis=2)

    def initial_guess(self, y: np.ndarray) -> np.ndarray:
        grid = np.geomspace(1e-3, 1.0, 25)
        units = self._unit(grid)  # (g, m)
        uu = (units * units).sum(1)
        rin = np.clip(y @ units.T / uu, 0, None)  # (v, g)
        rss = (y * y).sum(1)[:, None] - 2 * rin * (y @ units.T) + rin**2 * uu
        best = np.argmin(rss, axis=1)
        return np.stack([grid[best], rin[np.arange(y.shape[0]), best]], axis=1)

    def sample_parameters(self, n: int, *, rng: np.random.Generator) -> np.ndarray:
        return np.stack([rng.uniform(0.01, 0.2, n), rng.uniform(100, 1000, n)], axis=1)

    def fit(  # type: ignore[override]
        self,
        data: npt.ArrayLike,
        mask: npt.ArrayLike | None = None,
        *,
        chunk_voxels: int | None = None,
    ) -> FitResult:
        """Fit ``(..., 2, n)`` or ``(..., 2n)`` signals (see the class docstring)."""
        arr = np.asarray(data)
        n = int(self.times_s.size)
        if arr.ndim >= 2 and arr.shape[-2:] == (2, n):
            arr = arr.reshape(*arr.shape[:-2], 2 * n)
        return super().fit(arr, mask, chunk_voxels=chunk_voxels)
