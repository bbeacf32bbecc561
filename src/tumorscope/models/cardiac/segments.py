"""Myocardial segments: the AHA 17-segment model's 16 myocardial segments from a label map.

Cerqueira et al., Circulation 2002 (doi:10.1161/hc0402.102975): basal 1–6 and mid 7–12
(anterior, anteroseptal, inferoseptal, inferior, inferolateral, anterolateral), apical 13–16
(anterior, septal, inferior, lateral); segment 17 (apex) is not in short-axis maps. The
segmentation itself (RV insertion points, slice levels) is the user's: tumorscope reads a
label map whose values are the segment numbers (0 = not myocardium) and reports per-segment
statistics in the bull's-eye order.
"""

from __future__ import annotations

import numpy as np

from ...anatomy import AHA_SEGMENTS
from ...errors import DataError

__all__ = ["AHA_SEGMENTS", "segment_means"]


def segment_means(values: np.ndarray, segments: np.ndarray) -> dict[int, float]:
    """Mean of ``values`` in each AHA segment present in ``segments`` (NaN voxels ignored).

    Raises
    ------
    DataError
        Shapes differ, or a label outside 0–16 (not an AHA segment map).
    """
    v = np.asarray(values, dtype=float)
    s = np.asarray(segments)
    if v.shape != s.shape:
        raise DataError(f"map shape {v.shape} differs from segment map {s.shape}", field="segments")
    labels = {int(x) for x in np.unique(s)} - {0}
    bad = sorted(lab for lab in labels if lab not in AHA_SEGMENTS)
    if bad:
        raise DataError(
            f"segment map has labels {bad}: AHA segments are 1–16 (0 = background)",
            field="segments",
        )
    out: dict[int, float] = {}
    for lab in sorted(labels):
        x = v[(s == lab) & np.isfinite(v)]
        out[lab] = float(x.mean()) if x.size else float("nan")
    return out
