"""DSC deconvolution: CBF, CBV, MTT and Tmax from tissue and arterial curves.

The indicator-dilution model (Østergaard et al. 1996, eq. 1):
``C(t) = (ρ/kH) · CBF · (AIF ⊗ R)(t)``, with ``R`` the residue function (``R(0) = 1``),
``kH = (1 − Hct_large)/(1 − Hct_small)`` the haematocrit factor and ``ρ`` the tissue density.
The discretised convolution ``c = A · k`` with ``k = CBF·R`` (1/s) is inverted by a
truncated or regularised SVD of the AIF matrix ``A``, which is factorised **once per AIF**
(one SVD for every voxel):

``svd``
    standard SVD (sSVD, Østergaard et al. 1996): lower-triangular Toeplitz matrix
    ``A[i, j] = Δt · AIF[i − j]`` (``i ≥ j``), singular values below ``threshold · s_max``
    discarded (default 0.2, the paper's 20 %). Biased by a bolus delay between AIF and tissue.
``csvd``
    block-circulant SVD (Wu et al. 2003): AIF and tissue curve zero-padded to ``L = 2N``,
    circulant ``D[i, j] = Δt · AIF_pad[(i − j) mod L]``, fixed threshold (default 0.2).
    Insensitive to the delay (a time shift of the tissue curve is a circular shift of ``k``).
``osvd``
    oscillation-index SVD (Wu et al. 2003): the block-circulant matrix, with a per-voxel
    threshold: the smallest candidate ``P_SVD`` (0.01, 0.02, …, 0.99 of ``s_max``) whose
    residue has an oscillation index ``O ≤ OI`` (default 0.095), where
    ``O = (1/L)(1/k_max) Σ_{j=2}^{L−1} |k[j] − 2k[j−1] + k[j−2]|`` (Wu 2003, eq. 7).
    All candidates are evaluated for all voxels at once on the projected data ``Uᵀc``.
``tikhonov``
    Tikhonov regularisation (filter factors ``s²/(s² + λ²)``) of the block-circulant
    system, ``λ`` per voxel at the corner of the L-curve (maximum curvature of
    ``(log‖Ak − c‖, log‖k‖)`` from its analytic derivatives, as Hansen's ``l_corner``, 1992;
    used for DSC by Sourbron et al. 2007), over 40 values of ``λ`` log-spaced in
    ``[1e-3, 1] · s_max``, all voxels at once.

Outputs (Østergaard 1996; Wu 2003)
-----------------------------------
* ``CBF = 100 · 60 · (kH/ρ) · max_t k(t)`` in mL/100 mL/min (mL/100 g/min when
  ``tissue_density`` is in g/mL: the issue names the unit mL/100 mL/min, exact for ρ = 1);
* ``CBV = 100 · (kH/ρ) · ∫C dt / ∫AIF dt`` in mL/100 mL, the area ratio: both integrals by
  the trapezoid rule over the same time grid (all frames given), independent of the
  deconvolution. With ``hematocrit_factor=1`` and ``tissue_density=1`` this is exactly
  ``100·∫C/∫AIF``;
* ``MTT = 60 · CBV/CBF`` in s (central volume theorem);
* ``Tmax`` in s: the time of the maximum of ``k`` (``argmax · Δt``). On the block-circulant
  grid a maximum in the second half (index ≥ N) is a tissue curve *ahead* of the AIF and is
  reported as ``(index − L) · Δt`` (negative).

Defaults: ``kH = (1 − 0.45)/(1 − 0.25) = 0.733`` (Rempp et al. 1994), ``ρ = 1.04 g/mL``.

The AIF and the tissue curves must be in the same units (ΔR2* in 1/s, or concentration), as
the ratio is what matters; frames must be equally spaced for the deconvolution (the CBV area
ratio only needs the given times).

References
----------
Østergaard L, Weisskoff RM, Chesler DA, Gyldensted C, Rosen BR. High resolution measurement
of cerebral blood flow using intravascular tracer bolus passages. Part I: Mathematical
approach and statistical analysis. Magn Reson Med 1996;36:715-725. doi:10.1002/mrm.1910360511

Wu O, Østergaard L, Weisskoff RM, Benner T, Rosen BR, Sorensen AG. Tracer arrival
timing-insensitive technique for estimating flow in MR perfusion-weighted imaging using
singular value decomposition with a block-circulant deconvolution matrix. Magn Reson Med
2003;50:164-174. doi:10.1002/mrm.10522

Rempp KA, Brix G, Wenz F, Becker CR, Gückel F, Lorenz WJ. Quantification of regional cerebral
blood flow and volume with dynamic susceptibility contrast-enhanced MR imaging. Radiology
1994;193:637-641. doi:10.1148/radiology.193.3.7972800

Hansen PC. Analysis of discrete ill-posed problems by means of the L-curve. SIAM Rev
1992;34:561-580. doi:10.1137/1034115

Sourbron S, Luypaert R, Morhard D, Seelos K, Reiser M, Peller M. Deconvolution of bolus-
tracking data: a comparison of discretization methods. Phys Med Biol 2007;52:6761-6778.
doi:10.1088/0031-9155/52/22/014
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from ...errors import FitError, TumorscopeWarning
from ...fitting.engine import validate_inputs
from ...fitting.status import FitStatus, summarize_counts
from ..base import FitResult

__all__ = [
    "DEFAULT_HEMATOCRIT_FACTOR",
    "DEFAULT_TISSUE_DENSITY",
    "DSC",
    "convolution_matrix",
    "oscillation_index",
]

#: ``(1 − Hct_large)/(1 − Hct_small)`` with Hct 0.45 in large and 0.25 in small vessels
#: (Rempp et al. 1994).
DEFAULT_HEMATOCRIT_FACTOR = (1.0 - 0.45) / (1.0 - 0.25)
#: Brain tissue density, g/mL.
DEFAULT_TISSUE_DENSITY = 1.04

_METHODS = ("osvd", "csvd", "svd", "tikhonov")
_DEFAULT_THRESHOLD = {"svd": 0.2, "csvd": 0.2}
#: Candidate oSVD thresholds (fractions of the largest singular value), smallest first.
OSVD_THRESHOLDS = np.round(np.arange(0.01, 1.0, 0.01), 2)
_N_LAMBDA = 40
_CHUNK = 16384
_OSVD_BLOCK = 2048


def convolution_matrix(aif: npt.ArrayLike, dt_s: float, *, circulant: bool) -> np.ndarray:
    """The discrete convolution matrix of an AIF.

    Parameters
    ----------
    aif : array_like, shape (N,)
    dt_s : float
        Frame spacing (s).
    circulant : bool
        False: ``N × N`` lower-triangular Toeplitz ``A[i, j] = Δt·AIF[i − j]`` (Østergaard
        1996). True: ``2N × 2N`` block-circulant ``D[i, j] = Δt·AIF_pad[(i − j) mod 2N]`` of
        the AIF zero-padded to ``2N`` (Wu 2003).

    Returns
    -------
    ndarray
    """
    a = np.asarray(aif, dtype=float)
    n = a.size
    if circulant:
        L = 2 * n
        pad = np.zeros(L)
        pad[:n] = a
        idx = (np.arange(L)[:, None] - np.arange(L)[None, :]) % L
        return dt_s * pad[idx]
    d = np.arange(n)[:, None] - np.arange(n)[None, :]
    return dt_s * np.where(d >= 0, a[np.clip(d, 0, n - 1)], 0.0)


def _have_numba() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:  # pragma: no cover - numba is in the 'fast' extra
        return False
    return True


def _osvd_numpy(
    k: np.ndarray, coef: np.ndarray, Vt: np.ndarray, ranks: np.ndarray, oi_max: float
) -> np.ndarray:
    """numpy version of :func:`._numba.osvd_search` (same contract, in place on ``k``)."""
    n = k.shape[0]
    out = np.full(n, ranks.size - 1)
    for lo in range(0, n, _OSVD_BLOCK):  # blocks that stay in cache
        hi = min(n, lo + _OSVD_BLOCK)
        kb = k[lo:hi].copy()
        todo = np.arange(hi - lo)
        prev = int(ranks[0])
        for j, r in enumerate(ranks):
            if r < prev:
                kb -= coef[lo + todo, r:prev] @ Vt[r:prev]
                prev = int(r)
            ok = oscillation_index(kb) <= oi_max
            if ok.any():
                hit = todo[ok]
                k[lo + hit] = kb[ok]
                out[lo + hit] = j
                todo, kb = todo[~ok], kb[~ok]
                if todo.size == 0:
                    break
        k[lo + todo] = kb
    return out


def oscillation_index(k: npt.ArrayLike) -> np.ndarray:
    """Wu et al. 2003 oscillation index of residues ``k (..., L)``.

    ``O = (1/L)(1/k_max) Σ_{j=2}^{L−1} |k[j] − 2k[j−1] + k[j−2]|`` (0 where ``k_max ≤ 0``).
    """
    r = np.asarray(k, dtype=float)
    L = r.shape[-1]
    d2 = np.abs(r[..., 2:] - 2.0 * r[..., 1:-1] + r[..., :-2]).sum(axis=-1)
    kmax = r.max(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(kmax > 0, d2 / (L * kmax), 0.0)


@dataclass(frozen=True)
class _Factor:
    """The AIF matrix, factorised once: ``A = U diag(s) Vt``; ``Pu = U[:N].T`` projects a
    (zero-padded) tissue curve of N frames."""

    Pu: np.ndarray  # (N, L) = U[:N]: c (n, N) @ Pu -> U^T c_pad (n, L)
    s: np.ndarray  # (L,)
    Vt: np.ndarray  # (L, L)
    A: np.ndarray  # (L, L) for residuals


class DSC:
    """Deconvolution of DSC-MRI curves: CBF, CBV, MTT, Tmax per voxel.

    Not a registered signal :class:`~tumorscope.models.base.Model`: the residue function is
    estimated non-parametrically (no ``signal(params)``), but ``fit`` returns the same
    :class:`~tumorscope.models.base.FitResult` (maps, units, status, provenance, ``to_nifti``).

    Parameters
    ----------
    times_s : array_like, shape (N,)
        Frame times (s), equally spaced (relative spread of the spacing below 1e-3).
    aif : array_like, shape (N,)
        Arterial input function in the units of the tissue curves (ΔR2* in 1/s or
        concentration); finite, with a positive area.
    method : {"osvd", "csvd", "svd", "tikhonov"}, keyword-only
        See the module docstring. Default ``"osvd"``.
    hematocrit_factor : float, keyword-only
        ``kH = (1 − Hct_large)/(1 − Hct_small)``, default 0.733.
    tissue_density : float, keyword-only
        ``ρ`` in g/mL, default 1.04.
    threshold : float, optional, keyword-only
        Truncation threshold (fraction of the largest singular value) of ``svd`` and ``csvd``
        (default 0.2, Østergaard 1996).
    oscillation_index_max : float, keyword-only
        ``OI`` of ``osvd`` (default 0.095, Wu 2003).
    backend : {"auto", "numba", "numpy"}, keyword-only
        The oSVD threshold search compiled (numba, when installed) or in numpy; same results.

    Examples
    --------
    >>> import numpy as np
    >>> from tumorscope.models import DSC
    >>> t = np.arange(60) * 1.5
    >>> aif = np.where(t > 10, (t - 10) ** 3 * np.exp(-(t - 10) / 1.5), 0.0)
    >>> c = 0.04 * aif  # CBV = 100·∫C/∫AIF = 4 with kH = ρ = 1
    >>> fit = DSC(t, aif, hematocrit_factor=1, tissue_density=1).fit(c)
    >>> float(np.round(fit["CBV"], 4))
    4.0
    """

    name: ClassVar[str] = "dsc"
    methods: ClassVar[tuple[str, ...]] = _METHODS
    units: ClassVar[dict[str, str]] = {
        "CBF": "mL/100mL/min",
        "CBV": "mL/100mL",
        "MTT": "s",
        "Tmax": "s",
        "threshold": "1",
    }

    def __init__(
        self,
        times_s: npt.ArrayLike,
        aif: npt.ArrayLike,
        *,
        method: str = "osvd",
        hematocrit_factor: float = DEFAULT_HEMATOCRIT_FACTOR,
        tissue_density: float = DEFAULT_TISSUE_DENSITY,
        threshold: float | None = None,
        oscillation_index_max: float = 0.095,
        backend: str = "auto",
    ) -> None:
        t = np.asarray(times_s, dtype=float)
        if t.ndim != 1 or t.size < 3 or not np.all(np.isfinite(t)):
            raise FitError(
                f"need at least 3 finite frame times, got shape {t.shape}", field="times_s"
            )
        dt = np.diff(t)
        if np.any(dt <= 0):
            raise FitError("frame times must be strictly increasing", field="times_s")
        if np.ptp(dt) > 1e-3 * dt.mean():
            raise FitError(
                f"deconvolution needs equally spaced frames; spacing varies from {dt.min():g} "
                f"to {dt.max():g} s (resample first)",
                field="times_s",
            )
        a = np.asarray(aif, dtype=float)
        if a.shape != t.shape:
            raise FitError(f"AIF has shape {a.shape}, the times {t.shape}", field="aif")
        if not np.all(np.isfinite(a)):
            raise FitError("AIF has non-finite values", field="aif")
        area = float(np.trapezoid(a, t))
        if not area > 0:
            raise FitError(f"AIF area must be positive, got {area:g}", field="aif")
        if method not in _METHODS:
            raise FitError(
                f"unknown method {method!r} for DSC; expected one of "
                + ", ".join(repr(m) for m in _METHODS),
                field="method",
            )
        for val, fname in (
            (hematocrit_factor, "hematocrit_factor"),
            (tissue_density, "tissue_density"),
        ):
            if not (np.isfinite(val) and val > 0):
                raise FitError(f"must be a finite number > 0, got {val!r}", field=fname)
        if threshold is not None and not 0 < threshold < 1:
            raise FitError(f"must be in (0, 1), got {threshold!r}", field="threshold")
        if not oscillation_index_max > 0:
            raise FitError(
                f"must be > 0, got {oscillation_index_max!r}", field="oscillation_index_max"
            )
        self.times_s = t
        self.aif = a
        self.dt_s = float(dt.mean())
        self.aif_area = area
        self.method = method
        self.hematocrit_factor = float(hematocrit_factor)
        self.tissue_density = float(tissue_density)
        self.threshold = (
            float(threshold) if threshold is not None else _DEFAULT_THRESHOLD.get(method)
        )
        self.oscillation_index_max = float(oscillation_index_max)
        if backend not in ("auto", "numba", "numpy"):
            raise FitError(
                f"unknown backend {backend!r}; expected 'auto', 'numba' or 'numpy'",
                field="backend",
            )
        if backend == "numba" and not _have_numba():
            raise FitError(
                "backend 'numba' needs numba (pip install tumorscope[fast])", field="backend"
            )
        self.backend = backend
        self._factor = self._factorise()

    # ------------------------------------------------------------------ factorisation
    def _factorise(self) -> _Factor:
        circ = self.method != "svd"
        A = convolution_matrix(self.aif, self.dt_s, circulant=circ)
        U, s, Vt = np.linalg.svd(A)
        n = self.aif.size
        return _Factor(Pu=np.ascontiguousarray(U[:n]), s=s, Vt=Vt, A=A)

    @property
    def n_measurements(self) -> int:
        return int(self.times_s.size)

    def options(self) -> dict[str, Any]:
        """Options recorded in provenance."""
        out: dict[str, Any] = {
            "method": self.method,
            "hematocrit_factor": self.hematocrit_factor,
            "tissue_density": self.tissue_density,
            "dt_s": self.dt_s,
        }
        if self.method in ("svd", "csvd"):
            out["threshold"] = self.threshold
        if self.method == "osvd":
            out["oscillation_index_max"] = self.oscillation_index_max
        return out

    def __repr__(self) -> str:
        return "DSC(" + ", ".join(f"{k}={v!r}" for k, v in self.options().items()) + ")"

    # ------------------------------------------------------------------ residues
    def residue(self, curves: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``k = CBF·R`` (1/s) of curves ``(n, N)``, the threshold used, the fitted curves.

        Returns
        -------
        k : ndarray, shape (n, L)
            ``L = N`` for ``svd``, ``2N`` otherwise.
        threshold : ndarray, shape (n,)
            Fraction of ``s_max`` (``svd``/``csvd``/``osvd``) or ``λ/s_max`` (``tikhonov``).
        fitted : ndarray, shape (n, N)
            ``A·k`` on the N frames (for the residual).
        """
        c = np.asarray(curves, dtype=float)
        f = self._factor
        if self.method in ("svd", "csvd"):
            assert self.threshold is not None
            r = int(np.sum(f.s >= self.threshold * f.s[0]))
            b = c @ f.Pu[:, :r]  # only the kept components are needed
            k = (b / f.s[:r]) @ f.Vt[:r]
            return k, np.full(c.shape[0], self.threshold), b @ f.Pu[:, :r].T
        b = c @ f.Pu  # (n, L) = U^T c_pad
        if self.method == "osvd":
            k, thr, filt = self._osvd(b)
        else:
            k, thr, filt = self._tikhonov(b)
        return k, thr, (b * filt) @ f.Pu.T

    def _osvd(self, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-voxel smallest threshold with ``O ≤ OI``, built rank by rank: the residue of
        rank ``r`` is the partial sum of the first ``r`` SVD components, so going from the
        smallest threshold (highest rank) up removes components incrementally; a candidate
        threshold that keeps the same rank as the previous one is not evaluated again.
        Returns the residues, thresholds and the filter factors (1 kept, 0 not) per voxel."""
        f = self._factor
        s, Vt = f.s, f.Vt
        L = b.shape[1]
        ranks = np.array([int(np.sum(s >= p * s[0])) for p in OSVD_THRESHOLDS])
        # distinct ranks only: a threshold that keeps the rank of the previous one gives the
        # same residue, so it cannot pass where the previous failed
        first = np.concatenate([[True], ranks[1:] < ranks[:-1]])
        cand_p, cand_r = OSVD_THRESHOLDS[first], ranks[first]
        coef = b / s
        k = coef[:, : cand_r[0]] @ Vt[: cand_r[0]]
        if self.backend == "numba" or (self.backend == "auto" and _have_numba()):
            from ._numba import osvd_search

            j = osvd_search(
                k,
                coef,
                np.ascontiguousarray(Vt),
                cand_r.astype(np.int64),
                self.oscillation_index_max,
            )
        else:
            j = _osvd_numpy(k, coef, Vt, cand_r, self.oscillation_index_max)
        rank_out = cand_r[j]
        filt = (np.arange(L)[None, :] < rank_out[:, None]).astype(float)
        return k, cand_p[j], filt

    def _tikhonov(self, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tikhonov with the L-curve corner per voxel.

        With filter factors ``f = s²/(s² + λ²)``, ``f' = −2f(1−f)/λ`` and
        ``f'' = 2f(1−f)(3−4f)/λ²`` (Hansen's ``lcfun``), ``η = ‖x‖² = Σ f²β²/s²`` and
        ``ρ = ‖Ax − b‖² = Σ (1−f)²β²`` and their first and second derivatives in ``λ`` are sums
        over the projected data ``β = Uᵀc``: one matrix product of ``β²`` with a table of
        six weights per ``λ`` gives them for every voxel and ``λ``. The curvature of
        ``(½ log ρ, ½ log η)`` is ``κ = (x'y'' − x''y')/(x'² + y'²)^{3/2}`` and the corner is
        its maximum (the convention of Hansen's ``l_corner``).
        """
        f = self._factor
        s = f.s
        lams = s[0] * np.logspace(-3, 0, _N_LAMBDA)
        s2 = s[:, None] ** 2
        lam = lams[None, :]
        ff = s2 / (s2 + lam**2)  # (L, nλ)
        f1 = -2.0 * ff * (1 - ff) / lam
        f2 = 2.0 * ff * (1 - ff) * (3 - 4 * ff) / lam**2
        W = np.concatenate(
            [
                ff**2 / s2,
                2 * ff * f1 / s2,
                2 * (f1**2 + ff * f2) / s2,
                (1 - ff) ** 2,
                -2 * (1 - ff) * f1,
                2 * (f1**2 - (1 - ff) * f2),
            ],
            axis=1,
        )
        G = (b * b) @ W  # (n, 6 nλ)
        m = lams.size
        eta, d_eta, dd_eta, rho, d_rho, dd_rho = (G[:, i * m : (i + 1) * m] for i in range(6))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            x1, y1 = d_rho / (2 * rho), d_eta / (2 * eta)
            x2 = (dd_rho * rho - d_rho**2) / (2 * rho**2)
            y2 = (dd_eta * eta - d_eta**2) / (2 * eta**2)
            kappa = (x1 * y2 - x2 * y1) / (x1**2 + y1**2) ** 1.5
        kappa = np.where(np.isfinite(kappa), kappa, -np.inf)
        lam_best = lams[np.argmax(kappa, axis=1)]
        filt = s[None, :] ** 2 / (s[None, :] ** 2 + lam_best[:, None] ** 2)
        return (b * filt / s) @ f.Vt, lam_best / s[0], filt

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        concentration: npt.ArrayLike,
        mask: npt.ArrayLike | None = None,
        *,
        chunk_voxels: int | None = None,
    ) -> FitResult:
        """CBF, CBV, MTT and Tmax of every voxel (within ``mask``).

        Parameters
        ----------
        concentration : array_like, shape (..., N)
            Tissue curves, frames on the last axis, in the AIF's units.
        mask : array_like of bool, shape (...), optional
        chunk_voxels : int, optional, keyword-only
            Voxels per block (bounds memory; results do not depend on it).

        Returns
        -------
        FitResult
            Maps ``CBF``, ``CBV``, ``MTT``, ``Tmax``, ``threshold`` (float32, NaN outside the
            mask and where the input is not finite); ``rss`` is ``‖A·k − c‖²`` on the N
            frames; no standard errors.
        """
        arr, m = validate_inputs(
            concentration, mask, n_measurements=self.n_measurements, what="frames"
        )
        shape = arr.shape[:-1]
        flat = arr.reshape(-1, arr.shape[-1])
        nvox = flat.shape[0]
        sel = np.ones(nvox, bool) if m is None else m.reshape(-1).astype(bool)
        finite = np.all(np.isfinite(flat), axis=1)
        status = np.full(nvox, FitStatus.NOT_FITTED, np.uint8)
        status[sel & ~finite] = FitStatus.INVALID_INPUT
        good = np.flatnonzero(sel & finite)
        status[good] = FitStatus.CONVERGED
        names = ("CBF", "CBV", "MTT", "Tmax", "threshold")
        out = {k: np.full(nvox, np.nan, np.float32) for k in names}
        rss = np.full(nvox, np.nan, np.float32)
        step = int(chunk_voxels) if chunk_voxels else _CHUNK
        if step < 1:
            raise FitError(f"must be >= 1, got {chunk_voxels!r}", field="chunk_voxels")
        for start in range(0, good.size, step):
            idx = good[start : start + step]
            vals, r = self._fit_rows(flat[idx].astype(float))
            for k in names:
                out[k][idx] = vals[k]
            rss[idx] = r
        msg = summarize_counts(np.bincount(status, minlength=256))
        if msg:
            warnings.warn(f"dsc: {msg}", TumorscopeWarning, stacklevel=2)
        from ... import __version__

        prov = {
            "model": self.name,
            "model_class": f"{type(self).__module__}.{type(self).__qualname__}",
            "options": self.options(),
            "backend": "numpy",
            "tumorscope_version": __version__,
            "numpy_version": np.__version__,
            "input": {
                "shape": list(arr.shape),
                "dtype": str(arr.dtype),
                "fitted_voxels": int(good.size),
            },
        }
        return FitResult(
            maps={k: v.reshape(shape) for k, v in out.items()},
            units={k: self.units[k] for k in names},
            status=status.reshape(shape),
            rss=rss.reshape(shape),
            stderr={},
            provenance=prov,
            mask=sel.reshape(shape),
        )

    def _fit_rows(self, c: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        n = self.aif.size
        k, thr, fitted = self.residue(c)
        L = k.shape[1]
        scale = self.hematocrit_factor / self.tissue_density
        kmax = k.max(axis=1)
        cbf = 100.0 * 60.0 * scale * kmax
        cbv = 100.0 * scale * np.trapezoid(c, self.times_s, axis=1) / self.aif_area
        with np.errstate(divide="ignore", invalid="ignore"):
            mtt = np.where(cbf > 0, 60.0 * cbv / cbf, np.nan)
        j = np.argmax(k, axis=1)
        tmax = np.where(j >= n, j - L, j) * self.dt_s if L > n else j * self.dt_s
        rss = np.sum((fitted - c) ** 2, axis=1)
        return {"CBF": cbf, "CBV": cbv, "MTT": mtt, "Tmax": tmax, "threshold": thr}, rss
