"""The report's metabolic section: kPL, AUC ratio and MRS ratios per lesion and visit.

Reads the per-visit tables of the pipeline's ``metabolic`` step
(:func:`tumorscope.layout.metabolic_path`) and returns an HTML block (a table with one row per
lesion and visit, and a short methods note) that :func:`tumorscope.report.html.write_subject_report`
places in the subject's page. No files, no pipeline: paths in, HTML out.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sections import SubjectContext

__all__ = ["METABOLIC_COLUMNS", "metabolic_block", "section"]

#: (map, statistic) → column of the table, in order.
METABOLIC_COLUMNS: dict[tuple[str, str], str] = {
    ("hp13c.kPL", "roi_fit"): "kPL (1/s, lesion curve)",
    ("hp13c.kPL", "median"): "kPL (1/s, voxel median)",
    ("hp13c.AUC_ratio", "roi_fit"): "lactate/pyruvate AUC",
    ("mrs.Cho", "mean"): "tCho",
    ("mrs.tCho_over_Cr", "mean"): "tCho/Cr",
    ("mrs.tCho_over_NAA", "mean"): "tCho/NAA",
    ("mrs.Lac", "mean"): "Lac",
    ("dmi.Lac_over_Glx", "mean"): "2H Lac/Glx",
}

_NOTE = (
    "Hyperpolarised [1-13C]pyruvate: kPL by the input-less two-site model with flip-angle and "
    "T1 correction (Larson et al. 2018, doi:10.1002/mrm.27145), fitted to the lesion's mean "
    "curves and voxel by voxel (voxels under the lactate SNR gate not reported); AUC ratio "
    "model-free (Hill et al. 2013). 1H MRS: linear-combination fit of a simulated basis, "
    "concentrations in mM against the water reference where one was acquired (else a.u.), "
    "means over the lesion voxels covered by the spectroscopic voxel(s)."
)


def metabolic_block(
    tables: Sequence[str | os.PathLike[str]], days: Mapping[str, int | None] | None = None
) -> str:
    """The section's HTML, or ``""`` when no visit has metabolic values."""
    import pandas as pd

    from .blocks import frame_of, render

    frames = [pd.read_parquet(p) for p in map(Path, tables) if Path(p).is_file()]
    frames = [f for f in frames if len(f)]
    if not frames:
        return ""
    tidy = pd.concat(frames, ignore_index=True)
    tidy = tidy[
        [(m, s) in METABOLIC_COLUMNS for m, s in zip(tidy["map"], tidy["statistic"], strict=True)]
    ]
    if tidy.empty:
        return ""
    tidy = tidy.assign(
        column=[
            METABOLIC_COLUMNS[(m, s)] for m, s in zip(tidy["map"], tidy["statistic"], strict=True)
        ]
    )
    wide = tidy.pivot_table(
        index=["lesion_id", "visit"], columns="column", values="value", aggfunc="first"
    )
    wide = wide[[c for c in METABOLIC_COLUMNS.values() if c in wide.columns]].reset_index()
    if days:
        wide.insert(2, "day", [days.get(v) for v in wide["visit"]])
    wide = wide.rename(columns={"lesion_id": "lesion"})
    return render("metabolic.html.j2", table=frame_of(wide), note=_NOTE)


def section(ctx: SubjectContext) -> str | None:
    """The metabolic section of the subject page (:mod:`tumorscope.report.sections`): the
    ``metabolic`` step's table of every visit."""
    from .. import layout

    tables = [
        layout.metabolic_path(ctx.out_dir, ctx.subject, v.id)
        for v in ctx.study.subjects[ctx.subject]
    ]
    return metabolic_block(tables, ctx.days) or None
