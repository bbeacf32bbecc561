"""The DSC arterial input function: manual ROI, automatic selection, venous scaling.

* Manual: the mean ΔR2* of a given ROI (:func:`roi_aif`).
* Automatic (:func:`select_aif`): the shared image-derived AIF of
  :func:`tumorscope.models.aif.automatic_aif` on ΔR2* — not noise, high peak, early arrival,
  a first pass that washes out (not tissue), ranked by peak/width (narrow) — followed by
  a cluster step after Mouridsen et al. 2006: the ranked candidates are split in two by
  k-means (k = 2, seeded with the best- and worst-ranked curves) on their curves as measured
  (not area-normalised, so that the amplitude lost to partial volume separates the clusters
  as well as the shape), and the cluster with the higher peak / first moment (high, early)
  is averaged.
* Partial-volume scaling (:func:`scale_to_vof`): the AIF is multiplied by
  ``∫VOF / ∫AIF`` so that its area equals that of a venous output function (a large vein,
  e.g. the superior sagittal sinus, free of partial volume), as both carry the same amount of
  tracer (Knutsson et al. 2010; van Osch et al. 2003).

References
----------
Mouridsen K, Christensen S, Gyldensted L, Østergaard L. Automatic selection of arterial input
function using cluster analysis. Magn Reson Med 2006;55:524-531. doi:10.1002/mrm.20759

van Osch MJP, van der Grond J, Bakker CJG. Partial volume effects on arterial input functions:
shape and amplitude distortions and their correction. J Magn Reson Imaging 2005;22:704-709.
doi:10.1002/jmri.20455

Knutsson L, van Westen D, Petersen ET, et al. Absolute quantification of cerebral blood flow:
correlation between dynamic susceptibility contrast MRI and model-free arterial spin
labeling. Magn Reson Imaging 2010;28:1-7. doi:10.1016/j.mri.2009.06.006
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ...errors import DataError
from ..aif import AutomaticAIF, automatic_aif

__all__ = ["roi_aif", "scale_to_vof", "select_aif"]


def roi_aif(delta_r2: npt.ArrayLike, roi: npt.ArrayLike) -> np.ndarray:
    """Mean curve of the voxels of ``roi`` (finite curves only).

    Raises
    ------
    DataError
        ROI of another shape, or without a finite curve.
    """
    d = np.asarray(delta_r2, dtype=float)
    r = np.asarray(roi, bool)
    if r.shape != d.shape[:-1]:
        raise DataError(f"AIF ROI shape {r.shape} vs data {d.shape[:-1]}", field="aif_roi")
    rows = d[r]
    rows = rows[np.all(np.isfinite(rows), axis=1)]
    if rows.shape[0] == 0:
        raise DataError("the AIF ROI has no voxel with a finite curve", field="aif_roi")
    return rows.mean(axis=0)


def _kmeans2(x: np.ndarray, n_iter: int = 50) -> np.ndarray:
    """Deterministic 2-means (seeded with the first and last rows, which are ranked)."""
    cent = np.stack([x[0], x[-1]])
    lab = np.zeros(x.shape[0], int)
    for _ in range(n_iter):
        d = ((x[:, None, :] - cent[None]) ** 2).sum(axis=2)
        new = np.argmin(d, axis=1)
        if np.array_equal(new, lab) and _ > 0:
            break
        lab = new
        for j in (0, 1):
            if np.any(lab == j):
                cent[j] = x[lab == j].mean(axis=0)
    return lab


def select_aif(
    delta_r2: npt.ArrayLike,
    times_s: npt.ArrayLike,
    *,
    mask: npt.ArrayLike | None = None,
    n_candidates: int = 20,
    n_baseline: int | None = None,
) -> AutomaticAIF:
    """Automatic AIF on ΔR2* (see the module docstring).

    Returns
    -------
    AutomaticAIF
        ``concentration_mM`` holds the AIF in the units of ``delta_r2`` (1/s); ``voxels``
        the voxels averaged (the chosen cluster).
    """
    t = np.asarray(times_s, dtype=float)
    sel = automatic_aif(delta_r2, t, mask=mask, n_voxels=n_candidates, n_baseline=n_baseline)
    curves = sel.curves
    if curves.shape[0] < 4:
        return sel
    lab = _kmeans2(curves)
    score = []
    for j in (0, 1):
        c = curves[lab == j]
        if c.shape[0] == 0:
            score.append(-np.inf)
            continue
        m = c.mean(axis=0)
        first_moment = np.trapezoid(m * t, t) / np.trapezoid(m, t)
        score.append(m.max() / first_moment)
    keep = lab == int(np.argmax(score))
    crit = dict(sel.criteria)
    crit["cluster_size"] = float(keep.sum())
    return AutomaticAIF(
        times_s=t,
        concentration_mM=curves[keep].mean(axis=0),
        voxels=sel.voxels[keep],
        curves=curves[keep],
        scores=sel.scores[keep],
        n_candidates=sel.n_candidates,
        criteria=crit,
    )


def scale_to_vof(
    aif: npt.ArrayLike, vof: npt.ArrayLike, times_s: npt.ArrayLike
) -> tuple[np.ndarray, float]:
    """AIF scaled so that its area equals the venous output function's.

    Returns
    -------
    scaled : ndarray
    factor : float
        ``∫VOF / ∫AIF`` (> 1 when partial volume lowered the AIF).

    Raises
    ------
    DataError
        Shapes differ or an area is not positive.
    """
    a = np.asarray(aif, dtype=float)
    v = np.asarray(vof, dtype=float)
    t = np.asarray(times_s, dtype=float)
    if a.shape != t.shape or v.shape != t.shape:
        raise DataError(f"AIF {a.shape}, VOF {v.shape}, times {t.shape} differ", field="vof")
    ia, iv = float(np.trapezoid(a, t)), float(np.trapezoid(v, t))
    if not (ia > 0 and iv > 0):
        raise DataError(f"areas must be positive: AIF {ia:g}, VOF {iv:g}", field="vof")
    return a * (iv / ia), iv / ia
