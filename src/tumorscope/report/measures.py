"""Subject-page section "Habitats, hypoxia and radiomics" (a section of the
:mod:`tumorscope.report.sections` hook): the ``features`` step's habitat fractions over time
and radiomics, and the ``hypoxia`` step's classes, read from the run's files."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import layout
from .blocks import frame_of, render

if TYPE_CHECKING:
    import pandas as pd

    from .sections import SubjectContext

__all__ = ["section"]


def section(ctx: SubjectContext) -> str | None:
    """The HTML block, or None when the subject has none of these results."""
    import pandas as pd

    habitats = radiomics = hypoxia = None
    feats_path = layout.features_path(ctx.out_dir, ctx.subject)
    if feats_path.exists():
        t = pd.read_parquet(feats_path)
        habitats = _habitats(t, ctx.days)
        radiomics = _radiomics(t)
    frames = []
    for v in ctx.study.subjects[ctx.subject]:
        p = layout.hypoxia_path(ctx.out_dir, ctx.subject, v.id)
        if p.exists():
            frames.append(pd.read_parquet(p).assign(visit=v.id))
    if frames:
        hypoxia = pd.concat(frames, ignore_index=True)
    if habitats is None and radiomics is None and hypoxia is None:
        return None
    return render(
        "measures.html.j2",
        habitats=frame_of(habitats),
        radiomics=frame_of(radiomics),
        hypoxia=frame_of(hypoxia),
    )


def _habitats(t: pd.DataFrame, days: object) -> pd.DataFrame | None:
    h = t[t["map"].str.startswith("habitat:")]
    if h.empty:
        return None
    wide = h.pivot_table(
        index=["visit", "lesion_id"], columns="statistic", values="value", aggfunc="first"
    )
    wide = (100.0 * wide).round(1)
    wide.columns = [f"{c} (%)" for c in wide.columns]
    wide = wide.reset_index().rename(columns={"lesion_id": "lesion"})
    get = getattr(days, "get", None)
    if get is not None:
        wide.insert(1, "days on treatment", [get(v) for v in wide["visit"]])
    return wide


def _radiomics(t: pd.DataFrame) -> pd.DataFrame | None:
    r = t[t["statistic"].str.startswith("radiomics:")]
    if r.empty:
        return None
    g = r.groupby(["map", "visit"])
    return g.agg(lesions=("lesion_id", "nunique"), features=("statistic", "nunique")).reset_index()
