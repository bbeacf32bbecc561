"""Arterial input functions (AIFs) for DCE-MRI.

Population AIFs (Parker, Georgiou, McGrath preclinical) return the **whole-blood**
concentration ``Cb`` in mM at the given times (s). The pharmacokinetic models in
:mod:`tumorscope.models.dce` take the **plasma** concentration; convert with
:func:`blood_to_plasma` (``Cp = Cb / (1 - Hct)``).

Design decisions
----------------
* Times are in seconds at the interface, whatever unit the source paper used (Parker and
  Georgiou published their curves in minutes).
* A delay shifts the curve right: ``Cb(t; delay) = Cb(t - delay)``; the curve is zero before
  its own start (``t - delay < 0``).
* The Georgiou AIF is the published tabulated curve (0.1 s grid, 0–300 s), linearly
  interpolated, not the paper's rounded functional form: that form misses the reference
  values by up to 3.4% on the upslope and the second pass (see ``docs/dce.md``). After 300 s
  the tabulated curve is continued by a mono-exponential wash-out fitted to its last 60 s.
* The image-derived AIF (:func:`automatic_aif`) returns the voxels it chose so that a user can
  check them.

References
----------
Parker GJM et al. Experimentally-derived functional form for a population-averaged
high-temporal-resolution arterial input function for dynamic contrast-enhanced MRI. Magn Reson
Med 2006;56:993-1000. doi:10.1002/mrm.21066

Georgiou L et al. A functional form for a representative individual arterial input function
measured from a population using high temporal resolution DCE MRI. Magn Reson Med
2019;81:1955-1963. doi:10.1002/mrm.27524

McGrath DM et al. Comparison of model-based arterial input functions for dynamic
contrast-enhanced MRI in tumor bearing rats. Magn Reson Med 2009;61:1173-1184.
doi:10.1002/mrm.21959

Mouridsen K et al. Automatic selection of arterial input function using cluster analysis.
Magn Reson Med 2006;55:524-531. doi:10.1002/mrm.20759
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt

from ..errors import DataError, FitError, ProtocolError

__all__ = [
    "AutomaticAIF",
    "aif_text",
    "automatic_aif",
    "blood_to_plasma",
    "georgiou",
    "load_aif_csv",
    "mcgrath",
    "parker",
    "plasma_to_blood",
    "population_aif",
    "shift",
]

#: Parker et al. 2006, Table 1 (A in mM·min, T and sigma in min, alpha in mM, beta and s in
#: 1/min, tau in min).
PARKER_PARAMETERS: dict[str, float] = {
    "A1": 0.809,
    "sigma1": 0.0563,
    "T1": 0.17046,
    "A2": 0.33,
    "sigma2": 0.132,
    "T2": 0.365,
    "alpha": 1.05,
    "beta": 0.1685,
    "s": 38.078,
    "tau": 0.483,
}

#: McGrath et al. 2009, model B (rat): amplitudes in mM, rates in 1/s, t0 in s.
MCGRATH_PARAMETERS: dict[str, float] = {
    "A1": 3.4,
    "K1": 0.045,
    "A2": 1.81,
    "K2": 0.0015,
    "t0": 7.0,
}


def _times(times_s: npt.ArrayLike, name: str = "times_s") -> np.ndarray:
    t = np.asarray(times_s, dtype=float)
    if t.ndim != 1 or t.size == 0:
        raise ProtocolError(
            f"expected a non-empty 1-D array of times, got shape {t.shape}", field=name
        )
    if not np.all(np.isfinite(t)):
        raise ProtocolError("times must be finite", field=name)
    return t


def _delay(delay_s: float) -> float:
    d = float(delay_s)
    if not np.isfinite(d):
        raise ProtocolError(f"must be finite, got {delay_s!r}", field="delay_s")
    return d


_CURVE_SECTIONS = """
    Parameters
    ----------
    times_s : array_like, shape (n,)
        Times in s.
    delay_s : float, default 0
        Bolus arrival delay in s (the curve starts at ``t = delay_s``; zero before).

    Returns
    -------
    ndarray, shape (n,)
        Whole-blood concentration in mM.
"""

_F = TypeVar("_F", bound=Callable[..., np.ndarray])


def _population_curve(func: _F) -> _F:
    """Append the Parameters and Returns sections all population AIFs share to a docstring."""
    func.__doc__ = (func.__doc__ or "").rstrip() + "\n" + _CURVE_SECTIONS
    return func


@_population_curve
def parker(times_s: npt.ArrayLike, *, delay_s: float = 0.0) -> np.ndarray:
    r"""Parker population AIF: whole-blood concentration in mM.

    .. math::

        C_b(t) = \sum_{n=1}^{2} \frac{A_n}{\sigma_n\sqrt{2\pi}}
                 e^{-(t-T_n)^2 / 2\sigma_n^2}
                 + \frac{\alpha\, e^{-\beta t}}{1 + e^{-s(t-\tau)}}

    with ``t`` in minutes and the parameters of Parker et al. 2006, Table 1
    (doi:10.1002/mrm.21066). The functional form has no pre-bolus baseline: Cb(0) = 0.080 mM;
    it is set to 0 before the delay.

    """
    t = _times(times_s)
    d = _delay(delay_s)
    p = PARKER_PARAMETERS
    tm = (t - d) / 60.0
    out = np.zeros_like(tm)
    for a, sig, mu in ((p["A1"], p["sigma1"], p["T1"]), (p["A2"], p["sigma2"], p["T2"])):
        out += a / (sig * np.sqrt(2 * np.pi)) * np.exp(-((tm - mu) ** 2) / (2 * sig**2))
    with np.errstate(over="ignore"):
        out += p["alpha"] * np.exp(-p["beta"] * tm) / (1.0 + np.exp(-p["s"] * (tm - p["tau"])))
    out[tm < 0] = 0.0
    return out


@lru_cache(maxsize=1)
def _georgiou_table() -> tuple[float, np.ndarray]:
    ref = resources.files("tumorscope.models") / "data" / "georgiou_aif.json"
    doc = json.loads(ref.read_text(encoding="utf-8"))
    return float(doc["dt_s"]), np.asarray(doc["Cb_mM"], dtype=float)


@_population_curve
def georgiou(times_s: npt.ArrayLike, *, delay_s: float = 0.0) -> np.ndarray:
    """Georgiou population AIF: whole-blood concentration in mM.

    The published tabulated curve (Georgiou et al. 2019 supplement, doi:10.1002/mrm.27524;
    0.1 s grid over 0–300 s, peak 8.65 mM) is linearly interpolated. Beyond 300 s the curve is
    continued as a mono-exponential wash-out with the rate fitted to its last 60 s, so that it
    stays continuous. It is zero before the delay.

    """
    t = _times(times_s)
    tt = t - _delay(delay_s)
    dt, cb = _georgiou_table()
    grid = np.arange(cb.size) * dt
    out = np.interp(tt, grid, cb, left=0.0, right=cb[-1])
    late = tt > grid[-1]
    if np.any(late):
        tail = grid >= grid[-1] - 60.0
        rate = -np.polyfit(grid[tail] - grid[-1], np.log(cb[tail]), 1)[0]
        out[late] = cb[-1] * np.exp(-max(rate, 0.0) * (tt[late] - grid[-1]))
    out[tt < 0] = 0.0
    return out


@_population_curve
def mcgrath(times_s: npt.ArrayLike, *, delay_s: float = 0.0) -> np.ndarray:
    r"""McGrath preclinical (rat) AIF, model B: whole-blood concentration in mM.

    .. math::

        C_b(t) = \begin{cases} (A_1 + A_2)\, t / t_0 & 0 \le t \le t_0 \\
                 A_1 e^{-K_1 (t - t_0)} + A_2 e^{-K_2 (t - t_0)} & t > t_0 \end{cases}

    with A1 = 3.4 mM, K1 = 0.045 /s, A2 = 1.81 mM, K2 = 0.0015 /s, t0 = 7 s (McGrath et al.
    2009, doi:10.1002/mrm.21959). Zero before the delay.

    """
    t = _times(times_s) - _delay(delay_s)
    p = MCGRATH_PARAMETERS
    rise = (p["A1"] + p["A2"]) * t / p["t0"]
    dt = np.maximum(t - p["t0"], 0.0)
    fall = p["A1"] * np.exp(-p["K1"] * dt) + p["A2"] * np.exp(-p["K2"] * dt)
    out = np.where(t <= p["t0"], rise, fall)
    out[t < 0] = 0.0
    return out


_POPULATION = {"parker": parker, "georgiou": georgiou, "mcgrath": mcgrath}


def population_aif(
    name: Literal["parker", "georgiou", "mcgrath"], times_s: npt.ArrayLike, *, delay_s: float = 0.0
) -> np.ndarray:
    """A population AIF by name (whole blood, mM); see :func:`parker` and the others.

    Raises
    ------
    FitError
        If ``name`` is not one of ``"parker"``, ``"georgiou"``, ``"mcgrath"``.
    """
    try:
        func = _POPULATION[name.lower()]
    except (KeyError, AttributeError):
        raise FitError(
            f"unknown population AIF {name!r}; expected one of {sorted(_POPULATION)}", field="aif"
        ) from None
    return func(times_s, delay_s=delay_s)


def _hct(hematocrit: float) -> float:
    h = float(hematocrit)
    if not 0.0 <= h < 1.0:
        raise ProtocolError(f"must be in [0, 1), got {hematocrit!r}", field="hematocrit")
    return h


def blood_to_plasma(cb_mM: npt.ArrayLike, *, hematocrit: float) -> np.ndarray:
    """Plasma concentration from whole-blood concentration: ``Cp = Cb / (1 - Hct)``.

    The contrast agent does not enter red cells, so the plasma holds all of it
    (Tofts et al. JMRI 1999;10:223, doi:10.1002/(SICI)1522-2586(199909)10:3<223::AID-JMRI2>3.0.CO;2-S).

    Parameters
    ----------
    cb_mM : array_like
        Whole-blood concentration (mM).
    hematocrit : float
        Large-vessel hematocrit, in [0, 1).
    """
    return np.asarray(cb_mM, dtype=float) / (1.0 - _hct(hematocrit))


def plasma_to_blood(cp_mM: npt.ArrayLike, *, hematocrit: float) -> np.ndarray:
    """Whole-blood concentration from plasma concentration: ``Cb = Cp (1 - Hct)``."""
    return np.asarray(cp_mM, dtype=float) * (1.0 - _hct(hematocrit))


def shift(times_s: npt.ArrayLike, curve: npt.ArrayLike, delay_s: float) -> np.ndarray:
    """Delay a sampled curve by ``delay_s`` (s), by linear interpolation.

    ``out(t) = curve(t - delay_s)``; before the first sample the curve is taken as zero and
    after the last one as constant.

    Parameters
    ----------
    times_s : array_like, shape (n,)
    curve : array_like, shape (n,)
    delay_s : float
    """
    t = _times(times_s)
    c = np.asarray(curve, dtype=float)
    if c.shape != t.shape:
        raise DataError(
            f"curve has shape {c.shape}, expected {t.shape} like the times", field="curve"
        )
    return np.interp(t - _delay(delay_s), t, c, left=0.0, right=c[-1])


def aif_text(path: Path, field: str = "aif") -> str:
    """The text of an AIF table, or a :class:`DataError` naming the file and ``field`` (the
    option that gave it) when it is missing, not a regular file (a folder, a named pipe) or
    not text."""
    from ..files import regular_file

    if not path.exists():
        raise DataError("AIF file not found", file=path, field=field)
    regular_file(path, field=field)  # a folder or a named pipe: say what it is
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(
            "not a text table (expected CSV or TSV with time_s and a concentration column)",
            file=path,
            field=field,
        ) from None
    except OSError as exc:
        raise DataError(
            f"cannot read the file: {exc.strerror or exc}", file=path, field=field
        ) from None


def load_aif_csv(
    path: str | os.PathLike[str],
    *,
    time_column: str = "time_s",
    concentration_column: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read an AIF from a CSV (or TSV) file with a header row.

    Parameters
    ----------
    path : path-like
        The file. The delimiter (comma, tab or semicolon) is detected.
    time_column : str, default "time_s"
        Column holding the times in s.
    concentration_column : str, optional
        Column holding the concentration in mM. By default the only other column, or the one
        named ``cp_mM``, ``cb_mM``, ``Cp``, ``Cb`` or ``aif_mM``.

    Returns
    -------
    times_s : ndarray, shape (n,)
    concentration_mM : ndarray, shape (n,)

    Raises
    ------
    DataError
        Missing file or column, non-numeric values, fewer than 3 rows or non-increasing times;
        the message names the file, the column and the row.
    """
    p = Path(path)
    text = aif_text(p)
    try:
        dialect = csv.Sniffer().sniff(text.splitlines()[0] if text else "", delimiters=",\t;")
        delim = dialect.delimiter
    except csv.Error:
        delim = ","
    rows = list(csv.DictReader(text.splitlines(), delimiter=delim))
    cols = [c.strip() for c in (rows[0].keys() if rows else [])]
    if time_column not in cols:
        raise DataError(f"no column {time_column!r}; columns are {cols}", file=p, field=time_column)
    if concentration_column is None:
        known = [c for c in ("cp_mM", "cb_mM", "Cp", "Cb", "aif_mM") if c in cols]
        others = [c for c in cols if c != time_column]
        if known:
            concentration_column = known[0]
        elif len(others) == 1:
            concentration_column = others[0]
        else:
            raise DataError(
                f"cannot tell which column holds the concentration among {others}; "
                "pass concentration_column",
                file=p,
            )
    if concentration_column not in cols:
        raise DataError(
            f"no column {concentration_column!r}; columns are {cols}",
            file=p,
            field=concentration_column,
        )
    t = np.empty(len(rows))
    c = np.empty(len(rows))
    for i, row in enumerate(rows):
        for arr, col in ((t, time_column), (c, concentration_column)):
            try:
                arr[i] = float(row[col])
            except (TypeError, ValueError):
                raise DataError(
                    f"row {i + 2}: expected a number, got {row[col]!r}", file=p, field=col
                ) from None
            if not np.isfinite(arr[i]):
                raise DataError(f"row {i + 2}: value is not finite", file=p, field=col)
    if t.size < 3:
        raise DataError(f"expected at least 3 rows, got {t.size}", file=p)
    bad = np.flatnonzero(np.diff(t) <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        raise DataError(
            f"times must be strictly increasing, got {t[i - 1]:g} then {t[i]:g} at row {i + 2}",
            file=p,
            field=time_column,
        )
    return t, c


# --------------------------------------------------------------------------- automatic AIF
@dataclass(frozen=True)
class AutomaticAIF:
    """An image-derived AIF and how it was chosen.

    Attributes
    ----------
    times_s : ndarray, shape (n,)
    concentration_mM : ndarray, shape (n,)
        Mean curve of the chosen voxels (the same kind of concentration as the input, usually
        whole blood; convert with :func:`blood_to_plasma`).
    voxels : ndarray of int, shape (k, d)
        Indices (into the spatial shape of the input) of the chosen voxels.
    curves : ndarray, shape (k, n)
        Their concentration curves.
    scores : ndarray, shape (k,)
        Their scores (peak / width, mM/s), highest first.
    n_candidates : int
        Voxels that passed every criterion before the best ``k`` were kept.
    criteria : dict
        The thresholds used (for provenance).
    """

    times_s: np.ndarray
    concentration_mM: np.ndarray
    voxels: np.ndarray
    curves: np.ndarray
    scores: np.ndarray
    n_candidates: int
    criteria: dict[str, float] = field(default_factory=dict)


def _first_pass_width(
    c: np.ndarray, t: np.ndarray, ipk: np.ndarray, peak: np.ndarray
) -> np.ndarray:
    """Full width at half maximum (s) of the first pass, per row (linear interpolation)."""
    n_vox, n = c.shape
    half = peak / 2.0
    idx = np.arange(n)[None, :]
    above = c >= half[:, None]
    # last sample below half before the peak, first sample below half after it
    before = np.where(~above & (idx < ipk[:, None]), idx, -1).max(axis=1)
    after = np.where(~above & (idx > ipk[:, None]), idx, n).min(axis=1)
    rows = np.arange(n_vox)

    def cross(i0: np.ndarray, i1: np.ndarray) -> np.ndarray:
        c0, c1 = c[rows, i0], c[rows, i1]
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(c1 != c0, (half - c0) / (c1 - c0), 0.0)
        return t[i0] + np.clip(frac, 0, 1) * (t[i1] - t[i0])

    left = np.where(before >= 0, cross(np.maximum(before, 0), np.minimum(before + 1, n - 1)), t[0])
    right = np.where(after < n, cross(np.maximum(after - 1, 0), np.minimum(after, n - 1)), t[-1])
    return np.maximum(right - left, np.min(np.diff(t)))


def _candidate_curves(
    c: np.ndarray, t: np.ndarray, mask: npt.ArrayLike | None, n_voxels: int
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """The finite curves in the mask (N, n), their flat voxel indices and the grid shape."""
    if c.ndim < 2 or c.shape[-1] != t.size:
        raise DataError(
            f"concentration has shape {c.shape}; expected time on the last axis with {t.size} frames",
            field="concentration_mM",
        )
    if n_voxels < 1:
        raise FitError(f"must be >= 1, got {n_voxels}", field="n_voxels")
    spatial = c.shape[:-1]
    if mask is None:
        m = np.ones(spatial, bool)
    else:
        m = np.asarray(mask, dtype=bool)
        if m.shape != spatial:
            raise DataError(f"mask has shape {m.shape}, expected {spatial}", field="mask")
    m = m & np.all(np.isfinite(c), axis=-1)
    flat_idx = np.flatnonzero(m)
    if flat_idx.size == 0:
        raise DataError("no voxel with finite curves in the mask", field="mask")
    return c[m], flat_idx, spatial  # the masked curves only (no copy of a whole series)


def _screen(
    curves: np.ndarray,
    t: np.ndarray,
    peak: np.ndarray,
    ttp: np.ndarray,
    n_baseline: int | None,
    min_cnr: float,
    peak_percentile: float,
    max_arrival_s: float | None,
    max_tail_ratio: float,
) -> tuple[np.ndarray, float]:
    """The candidates passing the criteria in turn (noise, high peak, early, tail) and the
    arrival limit used (s).

    Raises
    ------
    DataError
        None passes (naming the criterion that removed the last candidates).
    """
    keep = peak > 0
    stage = "noise"
    if n_baseline is not None:
        nb = int(n_baseline)
        if not 2 <= nb < t.size:
            raise FitError(
                f"must be between 2 and {t.size - 1} to estimate the noise, got {n_baseline}",
                field="n_baseline",
            )
        keep &= peak >= min_cnr * curves[:, :nb].std(axis=1, ddof=1)
    if keep.any():
        stage = "high"
        keep &= peak >= np.percentile(peak[keep], peak_percentile)
    if max_arrival_s is None and keep.any():
        step = float(np.median(np.diff(t)))
        max_arrival = float(np.percentile(ttp[keep], 25.0)) + step
    else:
        max_arrival = float(max_arrival_s) if max_arrival_s is not None else np.inf
    if keep.any():
        stage = "early"
        keep &= ttp <= max_arrival
    if keep.any():
        stage = "tail"
        n_tail = max(1, t.size // 4)
        tail = curves[:, -n_tail:].mean(axis=1)
        keep &= tail <= max_tail_ratio * peak
    if not keep.any():
        raise DataError(
            f"no voxel passed the automatic AIF criteria (none left after the {stage!r} "
            "criterion); give a mask around an artery or use a population AIF",
            field="aif",
        )
    return keep, max_arrival


def automatic_aif(
    concentration_mM: npt.ArrayLike,
    times_s: npt.ArrayLike,
    *,
    mask: npt.ArrayLike | None = None,
    n_voxels: int = 10,
    peak_percentile: float = 95.0,
    max_arrival_s: float | None = None,
    max_tail_ratio: float = 0.5,
    n_baseline: int | None = None,
    min_cnr: float = 10.0,
) -> AutomaticAIF:
    """Select arterial voxels automatically and average their curves.

    Arteries enhance early, high and narrow. The selection, over the voxels of ``mask``:

    0. **not noise** (with ``n_baseline``): the peak is at least ``min_cnr`` × the standard
       deviation of the baseline frames, which removes background voxels whose T1 and
       concentration are noise (their spikes would otherwise be the "highest" curves);
    1. **high**: peak concentration at or above the ``peak_percentile`` of the candidates;
    2. **early**: time to peak at most ``max_arrival_s`` (default: the 25th percentile of the
       time to peak of the high voxels, plus one frame);
    3. **a first pass, not tissue**: the mean of the last quarter of the curve is at most
       ``max_tail_ratio`` × the peak. Tissue (and voxels where partial volume mixes tissue into
       the artery) keeps a high late plateau relative to its peak, while blood washes out;
    4. the survivors are ranked by peak / FWHM of the first pass (high and narrow) and the best
       ``n_voxels`` are averaged. Ranking on the peak favours the voxels least affected by
       partial volume, which lowers the peak and widens the curve (Mouridsen et al. 2006,
       doi:10.1002/mrm.20759, use the same features with clustering).

    Parameters
    ----------
    concentration_mM : array_like, shape (..., n)
        Concentration curves (time on the last axis), e.g. from
        :func:`tumorscope.models.dce.signal_to_concentration`.
    times_s : array_like, shape (n,)
        Frame times in s.
    mask : array_like of bool, shape (...), optional
        Where to look (e.g. a box around the aorta). Default: every voxel with finite curves.
    n_voxels : int, default 10
        How many voxels to average.
    peak_percentile : float, default 95
        Percentile of the peak concentration a candidate must reach.
    max_arrival_s : float, optional
        Latest allowed time to peak (s).
    max_tail_ratio : float, default 0.5
        Largest allowed (late mean / peak).
    n_baseline : int, optional
        Number of pre-contrast frames; enables the noise criterion.
    min_cnr : float, default 10
        Smallest peak / baseline standard deviation (with ``n_baseline``).

    Returns
    -------
    AutomaticAIF
        The curve and the chosen voxels (indices into the spatial shape), for checking.

    Raises
    ------
    DataError
        Mismatched shapes, or no voxel satisfies the criteria (the message says which
        criterion removed the last candidates).
    """
    c = np.asarray(concentration_mM, dtype=float)
    t = _times(times_s)
    curves, flat_idx, spatial = _candidate_curves(c, t, mask, n_voxels)
    ipk = np.argmax(curves, axis=1)
    peak = curves[np.arange(curves.shape[0]), ipk]
    keep, max_arrival = _screen(
        curves, t, peak, t[ipk], n_baseline, min_cnr, peak_percentile, max_arrival_s,
        max_tail_ratio,
    )  # fmt: skip
    sel = np.flatnonzero(keep)
    width = _first_pass_width(curves[sel], t, ipk[sel], peak[sel])
    score = peak[sel] / width
    order = np.argsort(-score, kind="stable")[:n_voxels]
    chosen = sel[order]
    vox = np.array(np.unravel_index(flat_idx[chosen], spatial)).T
    return AutomaticAIF(
        times_s=t,
        concentration_mM=curves[chosen].mean(axis=0),
        voxels=vox,
        curves=curves[chosen],
        scores=score[order],
        n_candidates=int(sel.size),
        criteria={
            "peak_percentile": float(peak_percentile),
            "max_arrival_s": max_arrival,
            "max_tail_ratio": float(max_tail_ratio),
            "n_voxels": int(n_voxels),
            "min_cnr": float(min_cnr) if n_baseline is not None else 0.0,
        },
    )
