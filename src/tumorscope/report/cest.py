"""The CEST section of the subject report: map grid and per-lesion contrast over visits.

Reads the maps of ``fit_cest`` from the map index (``cest.B0``, ``cest.MTRasym_3p5ppm``,
``cest_lorentzian.amide_amp``, ``cest.AREX_amide``, where present) and the per-lesion medians
from the measurements table. Called by :func:`tumorscope.report.html.write_subject_report`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from ..layout import VisitMap
    from .sections import SubjectContext

__all__ = ["CEST_SHOWN", "cest_section", "section"]

#: CEST maps shown, in order (exact ``model.parameter`` names of ``fit_cest``).
CEST_SHOWN = (
    "cest.B0",
    "cest.MTRasym_3p5ppm",
    "cest_lorentzian.amide_amp",
    "cest.AREX_amide",
    "cest.MTRasym_3p5ppm_B1corr",
)


def cest_section(
    subj: Any, maps: Mapping[str, Mapping[str, VisitMap]], tidy: pd.DataFrame | None
) -> dict[str, Any] | None:
    """``{"figure": data URI, "table": DataFrame or None}``, or None without CEST maps.

    The figure has one row per visit (axial slice through the largest lesion area) and one
    display range per map (1st–99th percentile inside the lesions of the first visit, padded).
    The table holds the per-lesion median of each shown map at each visit.
    """
    import pandas as pd

    from ..files import read_sidecar
    from . import figures, reads

    rows: list[dict[str, Any]] = []
    units: dict[str, str] = {}
    limits: dict[str, tuple[float, float]] = {}
    for v in subj:
        vmaps = maps.get(v.id, {})
        names = [k for k in CEST_SHOWN if k in vmaps]
        if not names:
            continue
        arrays = {k: reads.volume(vmaps[k][0]).data for k in names}
        for k in names:
            units[k] = str((read_sidecar(vmaps[k][0]) or {}).get("Units", ""))
        lab = reads.labels(v)
        labels = None if lab is None else lab.data
        z = arrays[names[0]].shape[2] // 2
        if labels is not None and labels.any():
            z = int(np.argmax((labels > 0).sum(axis=(0, 1))))
        for k, a in arrays.items():
            if k in limits:
                continue
            ref = a[labels > 0] if labels is not None and labels.any() else a
            ref = ref[np.isfinite(ref)]
            if ref.size:
                lo, hi = np.percentile(ref, [1, 99])
                pad = 0.25 * (hi - lo) + 1e-6
                limits[k] = (float(lo - pad), float(hi + pad))
        rows.append(
            {
                "label": f"visit {v.id}, z={z}",
                "anatomical": None,
                "maps": {k: a[:, :, z] for k, a in arrays.items()},
                "labels": None if labels is None else labels[:, :, z],
            }
        )
    if not rows:
        return None
    table = None
    if tidy is not None and len(tidy):
        med = tidy[tidy["map"].isin(CEST_SHOWN) & (tidy["statistic"] == "median")]
        if len(med):
            table = (
                med.pivot_table(
                    index=["lesion_id", "map"], columns="visit", values="value", aggfunc="first"
                )
                .reset_index()
                .rename_axis(None, axis=1)
            )
            table.columns = [
                str(c) if c in ("lesion_id", "map") else f"visit {c}" for c in table.columns
            ]
            table = pd.DataFrame(table)
    return {
        "figure": figures.map_grid(rows, units=units, limits=limits),
        "table": table,
    }


def section(ctx: SubjectContext) -> str | None:
    """The CEST section of the subject page (:mod:`tumorscope.report.sections`)."""
    from .. import layout
    from . import reads
    from .blocks import frame_of, render

    path = layout.measurements_path(ctx.out_dir, ctx.subject)
    tidy = reads.parquet(path)
    cest = cest_section(ctx.study.subjects[ctx.subject], ctx.maps, tidy)
    if cest is None:
        return None
    rows = frame_of(cest["table"]) if cest["table"] is not None else None
    return render("cest.html.j2", figure=cest["figure"], cest_rows=rows)
