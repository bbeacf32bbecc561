"""The DSC perfusion section of a subject's report: rCBV (and K2) maps per visit and the
per-lesion rCBV trajectories with the threshold of the perfusion pattern.

Reads only what the run wrote: the map index (``dsc.rCBV``, ``dsc.K2``) and the tidy
measurement table (``dsc.rCBV`` / ``mean`` per lesion and visit). Returns the figures (PNG
data URIs) and a note; :func:`tumorscope.report.html.write_subject_report` puts them in the
page when the subject has DSC.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from .sections import SubjectContext

__all__ = ["dsc_section", "section"]

_SHOWN = ("dsc.rCBV", "dsc.K2")


def dsc_section(
    subj: Any,
    maps: Mapping[str, Mapping[str, Any]],
    tidy: pd.DataFrame | None,
    days: Mapping[str, Any],
    *,
    threshold: float,
) -> dict[str, str] | None:
    """``{"maps": uri, "trajectory": uri, "note": text}``, or None without DSC maps.

    Parameters
    ----------
    subj : the study's subject (iterable of visits with ``id``, ``lesions``, ``series``)
    maps : mapping of visit id to the map index of that visit (``{"dsc.rCBV": (path, ...)}``)
    tidy : DataFrame or None
        The subject's measurement table.
    days : mapping of visit id to days on treatment
    threshold : float, keyword-only
        The rCBV threshold of the perfusion pattern (drawn on the trajectory).
    """
    import pandas as pd

    from . import figures, reads

    rows: list[dict[str, Any]] = []
    limits: dict[str, tuple[float, float]] = {}
    for v in subj:
        index = maps.get(v.id, {})
        vmaps: dict[str, Any] = {k: index[k] for k in _SHOWN if index.get(k) is not None}
        if "dsc.rCBV" not in vmaps:
            continue
        arrays = {k: reads.volume(p[0]).data for k, p in vmaps.items()}
        lab = reads.labels(v)
        labels = None if lab is None else lab.data
        z = arrays["dsc.rCBV"].shape[2] // 2
        if labels is not None and labels.any():
            z = int(np.argmax((labels > 0).sum(axis=(0, 1))))
        limits.setdefault("dsc.rCBV", (0.0, max(3.0, threshold * 2)))
        if "dsc.K2" in arrays:
            k2 = arrays["dsc.K2"]
            ref = k2[labels > 0] if labels is not None and labels.any() else k2
            ref = ref[np.isfinite(ref)]
            hi = float(np.percentile(np.abs(ref), 99)) if ref.size else 0.01
            limits.setdefault("dsc.K2", (-hi, hi))
        anat_vol = reads.anatomical(v)
        anat = None if anat_vol is None else anat_vol.data
        rows.append(
            {
                "label": f"visit {v.id}, z={z}",
                "anatomical": None if anat is None else anat[:, :, z],
                "maps": {k: a[:, :, z] for k, a in arrays.items()},
                "labels": None if labels is None else labels[:, :, z],
            }
        )
    if not rows:
        return None
    units = {"dsc.rCBV": "1", "dsc.K2": "1/s"}
    out = {"maps": figures.map_grid(rows, units=units, limits=limits), "trajectory": ""}
    if tidy is not None and len(tidy):
        g = tidy[(tidy["map"] == "dsc.rCBV") & (tidy["statistic"] == "mean")]
        if len(g):
            frame = pd.DataFrame(
                {
                    "lesion_id": g["lesion_id"],
                    "days": [days.get(v) for v in g["visit"]],
                    "value": g["value"],
                }
            )
            thr = pd.DataFrame(
                {
                    "lesion_id": f"threshold {threshold:g}",
                    "days": [frame["days"].min(), frame["days"].max()],
                    "value": [threshold, threshold],
                }
            )
            out["trajectory"] = figures.trajectories(
                {"rCBV (mean in lesion)": pd.concat([frame, thr], ignore_index=True)}
            )
    out["note"] = (
        "Relative CBV from leakage-corrected DSC (docs/dsc.md), normalised to normal-appearing "
        "tissue (the contralateral mirror of the lesions unless a reference label is given); "
        f"K2 is the leakage term. The line labelled 'threshold' is the rCBV threshold {threshold:g} of the "
        "pattern 'perfusion suggests treatment effect' (supporting evidence: the response "
        "call stays that of the criteria)."
    )
    return out


def section(ctx: SubjectContext) -> str | None:
    """The DSC section of the subject page (:mod:`tumorscope.report.sections`), None without
    DSC maps; the threshold drawn is the run's ``perfusion_rcbv_threshold``."""
    from .. import layout
    from ..response.perfusion import DEFAULT_RCBV_THRESHOLD
    from . import reads
    from .blocks import render

    path = layout.measurements_path(ctx.out_dir, ctx.subject)
    tidy = reads.parquet(path)
    threshold = float(ctx.options.get("perfusion_rcbv_threshold", DEFAULT_RCBV_THRESHOLD))
    dsc = dsc_section(
        ctx.study.subjects[ctx.subject], ctx.maps, tidy, ctx.days, threshold=threshold
    )
    return None if dsc is None else render("dsc.html.j2", dsc=dsc)
