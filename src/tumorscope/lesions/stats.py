"""Statistics of a parameter map inside a lesion, as a tidy table.

One row per statistic: ``lesion_id, visit, map, statistic, value, unit, note``. Voxels whose
fit failed (non-finite value, or ``status`` other than converged) are left out and counted
(``n_excluded``). A lesion where every voxel is excluded gives NaN statistics with the reason
in ``note`` and one :class:`~tumorscope.errors.TumorscopeWarning` (or a
:class:`~tumorscope.errors.DataError` with ``strict=True``).

Definitions follow the IBSI intensity-based statistics [1]_ where IBSI defines them:
``sd`` is the population standard deviation (IBSI variance, denominator *n*), ``skewness``
and ``kurtosis`` are the moment estimators (kurtosis is excess kurtosis, 0 for a normal
distribution), percentiles use linear interpolation (``numpy.percentile``), and ``entropy`` is
the IBSI intensity-histogram entropy in bits after fixed-bin-number discretisation of the
lesion's valid values into ``entropy_bins`` bins between their min and max.

References
----------
.. [1] Zwanenburg A, et al. Image Biomarker Standardisation Initiative, reference manual,
       sections 3.3 and 3.4. arXiv:1612.07003. doi:10.1148/radiol.2020191145
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..errors import DataError, TumorscopeWarning
from ..units import PARAMETER_UNITS
from ..volume import Volume

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DISTRIBUTION_STATISTICS",
    "STATS_COLUMNS",
    "SUMMARY_STATISTICS",
    "lesion_statistics",
    "statistics_table",
    "valid_voxels",
]

#: Columns of every table this module returns.
STATS_COLUMNS: tuple[str, ...] = ("lesion_id", "visit", "map", "statistic", "value", "unit", "note")

#: The distribution of the valid values: location, spread and the default percentiles.
DISTRIBUTION_STATISTICS: tuple[str, ...] = ("mean", "median", "sd", "p10", "p25", "p75", "p90")

#: Statistic names, in table order (histogram rows, when asked for, follow).
SUMMARY_STATISTICS: tuple[str, ...] = (
    "n_voxels",
    "n_valid",
    "n_excluded",
    *DISTRIBUTION_STATISTICS,
    "min",
    "max",
    "skewness",
    "kurtosis",
    "entropy",
)

_COUNTS = {"n_voxels", "n_valid", "n_excluded"}
_DIMENSIONLESS = {"skewness", "kurtosis"}


def valid_voxels(
    values: np.ndarray, status: np.ndarray | None = None, *, converged: Any = None
) -> np.ndarray:
    """Boolean array: finite value and (if ``status`` is given) a converged fit.

    Parameters
    ----------
    values : ndarray
        Map values.
    status : ndarray, optional
        Per-voxel fit status, same shape. String statuses are valid when equal to
        ``"converged"``; integer codes when equal to ``0``, unless ``converged`` says otherwise.
    converged : scalar, optional
        The status value meaning "converged".
    """
    ok = np.isfinite(values)
    if status is not None:
        st = np.asarray(status)
        if st.shape != values.shape:
            raise DataError(
                f"status shape {st.shape} does not match the map shape {values.shape}",
                field="status",
            )
        code = converged
        if code is None:
            code = "converged" if st.dtype.kind in "USO" else 0
        ok &= st == code
    return np.asarray(ok)


def lesion_statistics(
    values: Volume | npt.ArrayLike,
    mask: Volume | npt.ArrayLike,
    *,
    lesion_id: str = "",
    visit: str = "",
    map_name: str = "",
    unit: str | None = None,
    status: npt.ArrayLike | None = None,
    converged: Any = None,
    percentiles: Sequence[float] = (10, 25, 75, 90),
    entropy_bins: int = 32,
    histogram_bins: int | None = None,
    strict: bool = False,
) -> pd.DataFrame:
    """Statistics of one map inside one lesion.

    Parameters
    ----------
    values : Volume or array_like, shape (X, Y, Z)
        The parameter map (e.g. ``ADC`` in mm²/s).
    mask : Volume or array_like of bool, shape (X, Y, Z)
        The lesion on the map's grid. If both are Volumes their grids must agree (resample the
        mask first with :func:`tumorscope.preprocessing.resample_mask`).
    lesion_id, visit, map_name : str
        Written into the table and used in error messages.
    unit : str, optional
        Unit of the map; default from :data:`tumorscope.units.PARAMETER_UNITS` by ``map_name``.
    status : array_like, optional
        Per-voxel fit status; voxels that did not converge are excluded (see
        :func:`valid_voxels`).
    converged : scalar, optional
        Status value meaning converged (default ``"converged"`` or ``0``).
    percentiles : sequence of float, default (10, 25, 75, 90)
        Percentiles reported as ``p10`` … (linear interpolation).
    entropy_bins : int, default 32
        Fixed bin number for the entropy (IBSI FBN discretisation).
    histogram_bins : int, optional
        If given, add ``histogram_min``, ``histogram_bin_width`` and ``histogram_00`` …
        rows (fraction of valid voxels per bin, equal-width bins between min and max).
    strict : bool, default False
        Raise :class:`DataError` instead of returning NaN rows when no voxel is valid.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`STATS_COLUMNS`; one row per statistic (:data:`SUMMARY_STATISTICS`).
        ``note`` is empty unless statistics are NaN, when it says why.

    Raises
    ------
    DataError
        If the mask is empty, the shapes or grids differ, or (``strict``) no voxel is valid.
    """

    where = _where(lesion_id, visit, map_name)
    data, m = _aligned(values, mask, where)
    if not m.any():
        raise DataError("lesion mask is empty", field=where)
    st = None if status is None else np.asarray(status)
    ok = valid_voxels(data, st, converged=converged) & m
    x = data[ok].astype(np.float64)
    unit = PARAMETER_UNITS.get(map_name, "") if unit is None else unit
    names, vals, units, notes = _statistics_of(
        x,
        int(m.sum()),
        where=where,
        unit=unit,
        percentiles=percentiles,
        entropy_bins=entropy_bins,
        histogram_bins=histogram_bins,
        strict=strict,
    )
    key = (lesion_id, visit, map_name)
    return long_frame(STATS_COLUMNS, key, names, vals, unit=units, note=notes)


def _statistics_of(
    x: np.ndarray,
    n_vox: int,
    *,
    where: str,
    unit: str,
    percentiles: Sequence[float] = (10, 25, 75, 90),
    entropy_bins: int = 32,
    histogram_bins: int | None = None,
    strict: bool = False,
) -> tuple[list[str], list[float], list[str], list[str]]:
    """Names, values, units and notes of the statistics of a lesion's valid values ``x``
    (float64, in C order of the voxels) out of its ``n_vox`` voxels (:func:`lesion_statistics`).
    """
    n_ok = int(x.size)
    note = ""
    stats: dict[str, float] = {
        "n_voxels": float(n_vox),
        "n_valid": float(n_ok),
        "n_excluded": float(n_vox - n_ok),
    }
    pct_names = [f"p{p:g}" for p in percentiles]
    if n_ok == 0:
        note = f"all {n_vox} lesion voxels excluded (non-finite value or fit not converged)"
        if strict:
            raise DataError(note, field=where)
        warnings.warn(f"{where}: {note}; statistics are NaN", TumorscopeWarning, stacklevel=3)
        for name in ("mean", "median", "sd", *pct_names, "min", "max"):
            stats[name] = np.nan
        stats.update(skewness=np.nan, kurtosis=np.nan, entropy=np.nan)
    else:
        mean = float(x.mean())
        dev = x - mean
        dev2 = dev * dev  # what ``dev**2`` computes (numpy squares); **3 and **4 call pow()
        m2 = float(dev2.mean())
        stats["mean"] = mean
        stats["median"] = float(np.median(x))
        stats["sd"] = float(np.sqrt(m2))
        for name, p in zip(pct_names, np.percentile(x, list(percentiles)), strict=True):
            stats[name] = float(p)
        stats["min"] = float(x.min())
        stats["max"] = float(x.max())
        if m2 > 0:
            # products instead of ``dev**3``, ``dev**4`` (pow per voxel: 200x slower, most
            # of the statistics' time); each term within an ulp or two of pow's
            stats["skewness"] = float((dev2 * dev).mean() / m2**1.5)
            stats["kurtosis"] = float((dev2 * dev2).mean() / m2**2 - 3.0)
        else:
            stats["skewness"] = stats["kurtosis"] = np.nan
            note = "constant values: skewness and kurtosis undefined"
        stats["entropy"] = _fbn_entropy(x, entropy_bins)

    names = list(stats)
    units = [_unit_of(n, unit) for n in names]
    vals = [stats[n] for n in names]
    if histogram_bins is not None:
        hist_names, hist_vals, hist_units = _histogram_rows(x, histogram_bins, unit)
        names += hist_names
        vals += hist_vals
        units += hist_units
    notes = [note if not np.isfinite(v) else "" for v in vals]
    return names, vals, units, notes


def statistics_table(
    maps: Mapping[str, Volume | npt.ArrayLike],
    masks: Mapping[str, Volume | npt.ArrayLike],
    *,
    visit: str = "",
    status: Mapping[str, npt.ArrayLike] | npt.ArrayLike | None = None,
    units: Mapping[str, str] | None = None,
    histogram_bins: int | None = None,
) -> pd.DataFrame:
    """Statistics of every map in every lesion of one visit (concatenated tidy table).

    Parameters
    ----------
    maps : mapping of str to Volume or array, shape (X, Y, Z)
        Parameter maps by name (``ADC``, ``Ktrans`` …).
    masks : mapping of str to Volume or array of bool
        Lesion masks by lesion id, on the maps' grid.
    visit : str
        Visit id written into the table.
    status : array or mapping of str to array, optional
        One status array for all maps (one fit) or one per map name.
    units : mapping, optional
        Units by map name (default :data:`~tumorscope.units.PARAMETER_UNITS`).
    histogram_bins : int, optional
        Passed to :func:`lesion_statistics`.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`STATS_COLUMNS`, lesions × maps × statistics rows.
    """
    import pandas as pd

    if not masks:
        return pd.DataFrame(columns=list(STATS_COLUMNS))
    # each map once as a flat view of its memory (no copy: maps read from NIfTI are
    # Fortran-ordered), each lesion's voxels once, listed in C order with their offsets in
    # either memory order: a lesion's values and validity are then a gather of its own
    # voxels, never a pass over (or a C-ordered copy of) the whole volume
    arrays = {
        name: np.asarray(values.data if isinstance(values, Volume) else values)
        for name, values in maps.items()
    }
    flat: dict[str, tuple[np.ndarray, bool, np.ndarray | None, bool]] = {}
    cols: dict[str, list[Any]] = {c: [] for c in STATS_COLUMNS}
    for lesion_id, mask in masks.items():
        m = np.asarray(mask.data if isinstance(mask, Volume) else mask).astype(bool)
        offsets: dict[bool, np.ndarray] = {}  # by "Fortran order": the lesion's voxel offsets
        for name, values in maps.items():
            data = arrays[name]
            where = _where(str(lesion_id), visit, name)
            _check_pair(values, mask, data, m, where)
            if not offsets:
                coords = np.nonzero(m)  # in C order of the voxels
                if coords[0].size == 0:
                    raise DataError("lesion mask is empty", field=where)
                offsets[False] = np.ravel_multi_index(coords, m.shape)
                offsets[True] = np.ravel_multi_index(coords, m.shape, order="F")
            if name not in flat:
                st = status.get(name) if isinstance(status, Mapping) else status
                st_arr = None if st is None else np.asarray(st)
                if st_arr is not None and st_arr.shape != data.shape:
                    raise DataError(
                        f"status shape {st_arr.shape} does not match the map shape {data.shape}",
                        field="status",
                    )
                values_flat, values_f = _flat(data)
                st_flat, st_f = (None, False) if st_arr is None else _flat(st_arr)
                flat[name] = (values_flat, values_f, st_flat, st_f)
            values_flat, values_f, st_flat, st_f = flat[name]
            inside = values_flat[offsets[values_f]]
            ok = np.isfinite(inside)
            if st_flat is not None:
                ok &= _converged(st_flat[offsets[st_f]])
            x = inside[ok].astype(np.float64)
            unit = units.get(name) if units is not None else None
            unit = PARAMETER_UNITS.get(name, "") if unit is None else unit
            names, vals, unit_col, notes = _statistics_of(
                x, int(offsets[False].size), where=where, unit=unit, histogram_bins=histogram_bins
            )
            n = len(names)
            cols["lesion_id"] += [str(lesion_id)] * n
            cols["visit"] += [visit] * n
            cols["map"] += [name] * n
            cols["statistic"] += names
            cols["value"] += vals
            cols["unit"] += unit_col
            cols["note"] += notes
    frame = pd.DataFrame(cols, columns=list(STATS_COLUMNS))
    frame["value"] = frame["value"].astype(float)
    return frame


def _flat(a: np.ndarray) -> tuple[np.ndarray, bool]:
    """``a`` as one axis without a copy when its memory allows (C or Fortran order), and
    whether the offsets into it are in Fortran order."""
    if not a.flags.c_contiguous and a.flags.f_contiguous:
        return a.reshape(-1, order="F"), True
    return a.reshape(-1), False  # a copy only for a non-contiguous array


def _converged(st: np.ndarray) -> np.ndarray:
    """Status values meaning a converged fit, as :func:`valid_voxels` decides by default."""
    return np.asarray(st == ("converged" if st.dtype.kind in "USO" else 0))


def long_frame(
    columns: Sequence[str],
    key: tuple[str, str, str],
    names: Sequence[str],
    values: Sequence[float],
    **extra: Sequence[Any],
) -> pd.DataFrame:
    """One lesion's rows on one map at one visit: the long layout of the statistics
    (:data:`STATS_COLUMNS`) and of the radiomics features
    (:data:`tumorscope.lesions.radiomics.RADIOMICS_COLUMNS`).

    ``columns`` begin with ``lesion_id``, ``visit``, ``map`` (``key``, the same on every
    row), the name column (``names``) and ``value`` (``values``, as float); ``extra`` gives the
    columns after those by name.
    """
    import pandas as pd

    first = dict(zip(columns[:5], (*key, names, np.asarray(values, dtype=float)), strict=True))
    return pd.DataFrame({**first, **extra}, columns=list(columns))


# ---------------------------------------------------------------------------- internals


def _where(lesion_id: str, visit: str, map_name: str) -> str:
    parts = []
    if lesion_id:
        parts.append(f"lesion {lesion_id}")
    if visit:
        parts.append(f"visit {visit}")
    if map_name:
        parts.append(f"map {map_name}")
    return ", ".join(parts) or "lesion"


def _aligned(
    values: Volume | npt.ArrayLike, mask: Volume | npt.ArrayLike, where: str
) -> tuple[np.ndarray, np.ndarray]:
    data = np.asarray(values.data if isinstance(values, Volume) else values)
    m = np.asarray(mask.data if isinstance(mask, Volume) else mask).astype(bool)
    _check_pair(values, mask, data, m, where)
    return data, m


def _check_pair(
    values: Volume | npt.ArrayLike,
    mask: Volume | npt.ArrayLike,
    data: np.ndarray,
    m: np.ndarray,
    where: str,
) -> None:
    """A map and a lesion mask on one grid (the arrays are those of ``values`` and ``mask``)."""
    if isinstance(values, Volume) and isinstance(mask, Volume) and not values.same_grid(mask):
        raise DataError(
            f"mask grid {mask.spatial_shape} (affine diagonal "
            f"{np.round(np.diag(mask.affine)[:3], 3).tolist()}) differs from the map grid "
            f"{values.spatial_shape} (affine diagonal "
            f"{np.round(np.diag(values.affine)[:3], 3).tolist()}); register and resample the "
            "mask onto the map with tumorscope.preprocessing.resample_mask first",
            file=mask.source,
            field=where,
        )
    if data.ndim != 3:
        raise DataError(f"expected a 3-D map, got shape {data.shape}", field=where)
    if data.shape != m.shape:
        raise DataError(
            f"mask shape {m.shape} does not match the map shape {data.shape}; resample the "
            "mask onto the map's grid first",
            field=where,
        )


def _unit_of(statistic: str, unit: str) -> str:
    if statistic in _COUNTS:
        return "voxels"
    if statistic in _DIMENSIONLESS:
        return "1"
    if statistic == "entropy":
        return "bit"
    return unit


def _fbn_entropy(x: np.ndarray, n_bins: int) -> float:
    """IBSI intensity-histogram entropy (bits) after fixed-bin-number discretisation."""
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return 0.0
    levels = np.floor(n_bins * (x - lo) / (hi - lo)).astype(np.int64)
    levels = np.minimum(levels, n_bins - 1)
    p = np.bincount(levels, minlength=n_bins) / x.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def _histogram_rows(
    x: np.ndarray, n_bins: int, unit: str
) -> tuple[list[str], list[float], list[str]]:
    if n_bins < 1:
        raise DataError(f"histogram_bins must be >= 1, got {n_bins}", field="histogram_bins")
    if x.size:
        lo, hi = float(x.min()), float(x.max())
        counts, edges = np.histogram(x, bins=n_bins, range=(lo, hi if hi > lo else lo + 1.0))
        frac = (counts / x.size).tolist()
        width = float(edges[1] - edges[0])
    else:
        lo, width, frac = np.nan, np.nan, [np.nan] * n_bins
    names = ["histogram_min", "histogram_bin_width"] + [f"histogram_{i:02d}" for i in range(n_bins)]
    return names, [lo, width, *frac], [unit, unit] + ["1"] * n_bins
