"""Functional response: change of a map statistic beyond measurement repeatability, and
voxel-wise functional diffusion maps / parametric response maps.

Repeatability follows the QIBA metrology terms (Raunig DL, Obuchowski NA, et al.
Quantitative imaging biomarkers: a review of statistical methods for technical performance
assessment. Stat Methods Med Res 2015;24:27-67. doi:10.1177/0962280214537344): from
test-retest pairs, the within-subject standard deviation wSD, the within-subject coefficient
of variation wCV and the repeatability coefficient RC = 1.96·√2·wSD ≈ 2.77·wSD, the least
difference between two measurements of one subject that is significant at the 95% level.

Voxel-wise maps follow the functional diffusion map (Moffat BA, Chenevert TL, Lawrence TS,
et al. Functional diffusion map: a noninvasive MRI biomarker for early stratification of
clinical brain tumor response. PNAS 2005;102:5524-5529. doi:10.1073/pnas.0501532102) and its
generalisation to any map, the parametric response map (Galbán CJ, Chenevert TL, Meyer CR,
et al. The parametric response map is an imaging biomarker for early cancer treatment
outcome. Nat Med 2009;15:572-576. doi:10.1038/nm.1919): on co-registered visits, each lesion
voxel is "increased", "decreased" or "unchanged" depending on whether its change exceeds a
threshold (the 95% confidence interval of the voxel-wise change in unaffected tissue in those
papers). No default threshold is given: it depends on the map, the tissue and the scanner.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from ..errors import DataError, ResponseError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Repeatability",
    "ResponseMap",
    "functional_change",
    "joint_response_map",
    "parametric_response_map",
    "repeatability",
]

_Z95_SQRT2 = 1.959963984540054 * math.sqrt(2.0)  # ≈ 2.77


@dataclass(frozen=True)
class Repeatability:
    """Test-retest repeatability of one measurement.

    Attributes
    ----------
    wsd : float
        Within-subject standard deviation, in the units of the measurement.
    wcv : float
        Within-subject coefficient of variation (fraction, 0.05 = 5%).
    rc : float
        Repeatability coefficient 2.77·wSD, units of the measurement.
    rc_pct : float
        Relative repeatability coefficient 2.77·wCV, percent.
    limits_pct : tuple of float
        Lower and upper limits of a significant relative change, percent. With the log
        method they are asymmetric, ``100·(exp(∓2.77·s_log) - 1)``; with the RMS method
        ``(-rc_pct, +rc_pct)``.
    n_subjects : int
    method : {"log", "rms"}
    """

    wsd: float
    wcv: float
    rc: float
    rc_pct: float
    limits_pct: tuple[float, float]
    n_subjects: int
    method: str


def repeatability(
    test: npt.ArrayLike, retest: npt.ArrayLike, *, method: Literal["log", "rms"] = "log"
) -> Repeatability:
    """wSD, wCV and repeatability coefficients from test-retest pairs.

    Parameters
    ----------
    test, retest : array_like, shape (n,)
        Two measurements of the same quantity in each of ``n >= 2`` subjects (or lesions).
    method : {"log", "rms"}, default "log"
        How the wCV is estimated (Raunig et al. 2015, doi:10.1177/0962280214537344):
        ``"log"`` from the SD of log differences, ``s = sqrt(mean((ln a - ln b)²) / 2)``,
        ``wCV = sqrt(exp(s²) - 1)``, recommended when the error is proportional to the value;
        ``"rms"`` as the root mean square of the per-subject CVs,
        ``wCV = sqrt(mean((a - b)² / (2·m²)))`` with ``m = (a + b)/2``.

    Returns
    -------
    Repeatability
        ``wsd = sqrt(mean((a - b)²) / 2)``, ``rc = 2.77·wsd``, ``rc_pct = 2.77·wcv·100``.

    Raises
    ------
    DataError
        If the arrays differ in shape, hold fewer than 2 pairs, non-finite values, or (log and
        rms methods) values that are not positive.

    Examples
    --------
    >>> r = repeatability([1.0, 2.0, 3.0], [1.1, 1.8, 3.3], method="rms")
    >>> round(r.wcv, 4)
    0.0698
    """
    a = np.asarray(test, dtype=float).ravel()
    b = np.asarray(retest, dtype=float).ravel()
    if a.shape != b.shape:
        raise DataError(f"test has {a.size} values but retest {b.size}", field="retest")
    if a.size < 2:
        raise DataError(f"need at least 2 test-retest pairs, got {a.size}", field="test")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise DataError("test and retest must be finite", field="test")
    if np.any(a <= 0) or np.any(b <= 0):
        raise DataError(
            "the wCV needs positive measurements (a ratio scale); got values <= 0", field="test"
        )
    d = a - b
    wsd = float(np.sqrt(np.mean(d**2) / 2.0))
    if method == "log":
        s = float(np.sqrt(np.mean((np.log(a) - np.log(b)) ** 2) / 2.0))
        wcv = float(np.sqrt(np.expm1(s**2)))
        limits = (100.0 * math.expm1(-_Z95_SQRT2 * s), 100.0 * math.expm1(_Z95_SQRT2 * s))
    elif method == "rms":
        m = (a + b) / 2.0
        wcv = float(np.sqrt(np.mean(d**2 / (2.0 * m**2))))
        limits = (-100.0 * _Z95_SQRT2 * wcv, 100.0 * _Z95_SQRT2 * wcv)
    else:
        raise DataError(f"unknown method {method!r}; expected 'log' or 'rms'", field="method")
    return Repeatability(
        wsd=wsd,
        wcv=wcv,
        rc=_Z95_SQRT2 * wsd,
        rc_pct=100.0 * _Z95_SQRT2 * wcv,
        limits_pct=limits,
        n_subjects=int(a.size),
        method=method,
    )


def functional_change(
    table: pd.DataFrame,
    *,
    statistic: str,
    rc: float | None = None,
    rc_pct: float | None = None,
    repeatability: Repeatability | None = None,
) -> pd.DataFrame:
    """Per-lesion change of a map statistic from baseline, judged against repeatability.

    A change is real (95% level) when it lies outside the repeatability limits (Raunig et al.
    2015, doi:10.1177/0962280214537344): ``|change| > rc`` for an absolute RC, ``|change_pct|
    > rc_pct`` for a relative one, or ``change_pct`` outside ``repeatability.limits_pct``.

    Parameters
    ----------
    table : pandas.DataFrame
        A measurement table (:func:`tumorscope.response.validate_table`) or a lesion table,
        with columns ``subject``, ``visit``, ``date``, ``lesion_id`` and ``statistic``. The
        baseline is the visit with ``visit_index == 0`` when that column exists, else the
        first visit of each subject.
    statistic : str
        Column to judge, e.g. ``"ADC_mean"`` (mm²/s) or ``"Ktrans_mean"`` (1/min).
    rc, rc_pct, repeatability
        Exactly one: the absolute repeatability coefficient (units of ``statistic``), the
        relative one (percent), or a :class:`Repeatability` (its asymmetric limits are used).

    Returns
    -------
    pandas.DataFrame
        One row per lesion and visit after baseline: ``subject``, ``visit``, ``date``,
        ``lesion_id``, ``statistic``, ``value``, ``baseline_value``, ``change``,
        ``change_pct``, ``call`` (``increase``, ``decrease``, ``no change`` or ``NE`` when a
        value is missing) and ``reason``.

    Raises
    ------
    ResponseError
        If the column is missing or not exactly one of ``rc``, ``rc_pct``, ``repeatability``
        is given.
    """
    import pandas as pd

    given = [x is not None for x in (rc, rc_pct, repeatability)]
    if sum(given) != 1:
        raise ResponseError("give exactly one of rc, rc_pct or repeatability", field="rc")
    for col in ("subject", "visit", "date", "lesion_id", statistic):
        if col not in table.columns:
            raise ResponseError(f"the table has no column {col!r}", field=col)
    if rc is not None and not rc > 0:
        raise ResponseError(f"rc must be > 0, got {rc}", field="rc")
    if rc_pct is not None and not rc_pct > 0:
        raise ResponseError(f"rc_pct must be > 0, got {rc_pct}", field="rc_pct")
    lo, hi = -math.inf, math.inf
    if repeatability is not None:
        lo, hi = repeatability.limits_pct
    elif rc_pct is not None:
        lo, hi = -rc_pct, rc_pct
    df = table.copy()
    df["date"] = pd.to_datetime(df["date"])
    out = []
    for subject, sub in df.groupby("subject", sort=True):
        if "visit_index" in sub.columns:
            base_rows = sub[sub["visit_index"] == 0]
            later = sub[sub["visit_index"] > 0]
        else:
            first = sub["date"].min()
            base_rows = sub[sub["date"] == first]
            later = sub[sub["date"] > first]
        base = {
            str(k): float(v)
            for k, v in zip(base_rows["lesion_id"], base_rows[statistic], strict=True)
        }
        for rec in later.sort_values(["date", "lesion_id"]).to_dict("records"):
            lid = str(rec["lesion_id"])
            v = float(rec[statistic])
            b = base.get(lid, math.nan)
            change = v - b
            change_pct = 100.0 * change / b if b not in (0.0,) and math.isfinite(b) else math.nan
            if not (math.isfinite(v) and math.isfinite(b)):
                call, reason = "NE", "no value at baseline" if not math.isfinite(b) else "no value"
            elif rc is not None:
                call = "increase" if change > rc else "decrease" if change < -rc else "no change"
                reason = f"{statistic} changed {change:+.4g} (RC {rc:.4g})"
            else:
                call = (
                    "increase"
                    if change_pct > hi
                    else "decrease"
                    if change_pct < lo
                    else "no change"
                )
                reason = f"{statistic} changed {change_pct:+.1f}% (limits {lo:+.1f}% / {hi:+.1f}%)"
            out.append(
                {
                    "subject": subject,
                    "visit": rec["visit"],
                    "date": rec["date"],
                    "lesion_id": lid,
                    "statistic": statistic,
                    "value": v,
                    "baseline_value": b,
                    "change": change,
                    "change_pct": change_pct,
                    "call": call,
                    "reason": reason,
                }
            )
    cols = ["subject", "visit", "date", "lesion_id", "statistic", "value", "baseline_value",
            "change", "change_pct", "call", "reason"]  # fmt: skip
    return pd.DataFrame(out, columns=cols)


@dataclass(frozen=True)
class ResponseMap:
    """Result of a voxel-wise response map.

    Attributes
    ----------
    labels : ndarray of int16, shape like the inputs
        0 outside the mask (or where a value is not finite); otherwise ``1 + Σ_m s_m·3^m``
        with ``s_m`` = 0 unchanged, 1 increased, 2 decreased for map ``m``. For one map:
        1 unchanged, 2 increased, 3 decreased.
    legend : dict of int to str
        What each label means, e.g. ``{2: "ADC increased"}``.
    fractions : dict of str to float
        Fraction of the assessed voxels in each class (keys as in ``legend``), summing to 1.
    n_voxels : int
        Number of assessed voxels (in the mask, finite at both visits).
    n_excluded : int
        Mask voxels left out because a value was not finite.
    """

    labels: np.ndarray
    legend: dict[int, str]
    fractions: dict[str, float]
    n_voxels: int
    n_excluded: int

    def to_nifti(self, path: str | os.PathLike[str], *, affine: npt.ArrayLike) -> Path:
        """Write the label map (int16 NIfTI, atomically) for viewing; returns the path."""
        from ..volume import Volume

        vol = Volume(
            self.labels.astype(np.int16),
            np.asarray(affine, dtype=float),
            meta={"legend": self.legend},
        )
        return vol.to_nifti(path)


def parametric_response_map(
    before: npt.ArrayLike,
    after: npt.ArrayLike,
    mask: npt.ArrayLike,
    *,
    threshold: float,
    name: str = "ADC",
) -> ResponseMap:
    """Functional diffusion map / parametric response map of one map on co-registered visits.

    Each voxel of ``mask`` is "increased" when ``after - before > threshold``, "decreased"
    when ``< -threshold``, else "unchanged" (Moffat et al. 2005, doi:10.1073/pnas.0501532102;
    Galbán et al. 2009, doi:10.1038/nm.1919).

    Parameters
    ----------
    before, after : array_like, same shape
        The map at the two visits, on the same grid (co-registered), same units.
    mask : array_like of bool, same shape
        The lesion voxels (usually the baseline mask, or the intersection of both masks).
    threshold : float
        Change (units of the map) beyond which a voxel counts as changed; > 0.
    name : str, default "ADC"
        Name of the map, used in the legend.

    Returns
    -------
    ResponseMap
        Labels 1 unchanged, 2 increased, 3 decreased; fractions of the assessed voxels.

    Raises
    ------
    DataError
        If shapes differ, the threshold is not positive or no voxel can be assessed.
    """
    return joint_response_map({name: before}, {name: after}, mask, thresholds={name: threshold})


def joint_response_map(
    before: Mapping[str, npt.ArrayLike],
    after: Mapping[str, npt.ArrayLike],
    mask: npt.ArrayLike,
    *,
    thresholds: Mapping[str, float],
) -> ResponseMap:
    """Voxel-wise response of several maps jointly (e.g. ADC and Ktrans).

    Each map is classified as in :func:`parametric_response_map`; the label encodes the
    combination (``1 + Σ_m s_m·3^m``, maps in the order of ``before``), so that, for
    example, "ADC increased, Ktrans decreased" voxels (a response pattern) can be counted and
    shown.

    Parameters
    ----------
    before, after : mapping of name to array_like
        The maps at the two visits, same names, all of one shape.
    mask : array_like of bool
    thresholds : mapping of name to float
        One positive threshold per map, in the map's units.

    Returns
    -------
    ResponseMap
    """
    names = list(before)
    if not names or set(names) != set(after) or set(names) != set(thresholds):
        raise DataError(
            f"before {sorted(before)}, after {sorted(after)} and thresholds {sorted(thresholds)} "
            "must name the same maps",
            field="thresholds",
        )
    m = np.asarray(mask).astype(bool)
    valid = m.copy()
    states = []
    for name in names:
        b = np.asarray(before[name], dtype=float)
        a = np.asarray(after[name], dtype=float)
        if b.shape != m.shape or a.shape != m.shape:
            raise DataError(
                f"map {name}: before {b.shape}, after {a.shape} and mask {m.shape} must have one "
                "shape (co-registered visits)",
                field=name,
            )
        thr = float(thresholds[name])
        if not thr > 0:
            raise DataError(f"threshold of {name} must be > 0, got {thr}", field="thresholds")
        valid &= np.isfinite(a) & np.isfinite(b)
        with np.errstate(invalid="ignore"):
            d = a - b
        s = np.zeros(m.shape, dtype=np.int16)
        s[d > thr] = 1
        s[d < -thr] = 2
        states.append(s)
    n = int(valid.sum())
    if n == 0:
        raise DataError("no voxel to assess: the mask is empty or no value is finite", field="mask")
    labels = np.ones(m.shape, dtype=np.int16)
    for k, s in enumerate(states):
        labels += s * np.int16(3**k)
    labels[~valid] = 0
    legend: dict[int, str] = {}
    word = ("unchanged", "increased", "decreased")
    for code in range(3 ** len(names)):
        parts = [f"{name} {word[(code // 3**k) % 3]}" for k, name in enumerate(names)]
        legend[code + 1] = ", ".join(parts)
    counts = np.bincount(labels[valid].ravel(), minlength=3 ** len(names) + 1)
    fractions = {legend[c]: float(counts[c]) / n for c in legend}
    return ResponseMap(labels, legend, fractions, n, int(m.sum()) - n)
