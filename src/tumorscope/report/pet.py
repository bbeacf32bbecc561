"""The PET/MRI section of a subject's report: uptake beside ADC and Ktrans per lesion and
visit, the ΔTLG-against-ΔADC scatter, and the PET flags.

Reads the ``pet`` step's per-visit tables (:func:`tumorscope.layout.pet_path`), ``measure``'s
long table (ADCmean, ADCmin, Ktrans, diameter) and the patterns; nothing from the pipeline.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import layout

if TYPE_CHECKING:
    import pandas as pd

    from ..io import Study
    from .sections import SubjectContext

__all__ = ["PetSection", "pet_section", "section"]


@dataclass(frozen=True)
class PetSection:
    """What the template shows: the table, the scatter (data URI or None) and a note."""

    table: pd.DataFrame
    scatter: str | None
    note: str


def _table(out_dir: Path, study: Study, subject: str) -> pd.DataFrame | None:
    import pandas as pd

    from ..stages.pet import mri_beside

    parts = []
    for v in study.subjects[subject]:
        p = layout.pet_path(out_dir, subject, v.id)
        if p.exists():
            parts.append(pd.read_parquet(p))
    if not parts:
        return None
    t = pd.concat(parts, ignore_index=True)
    if t.empty:
        return None
    t["visit"] = t["visit"].astype(str)
    mri = mri_beside(layout.measurements_path(out_dir, subject))
    if mri is not None:
        t = t.merge(mri, on=["visit", "lesion_id"], how="left")
    return t


def _scatter(t: pd.DataFrame, baseline: str) -> str | None:
    """ΔTLG41 (%) against ΔADCmean (%) per lesion and follow-up visit."""
    from .figures import DPI
    from .svg import CYCLE, Axes, Svg

    if "ADC_mean" not in t.columns:
        return None
    base = t[t["visit"] == baseline].set_index("lesion_id")
    pts: dict[str, list[tuple[float, float, str]]] = {}
    for r in t[t["visit"] != baseline].itertuples():
        if r.lesion_id not in base.index:
            continue
        b = base.loc[r.lesion_id]
        if not (b["tlg41_g"] > 0 and b["ADC_mean"] > 0 and math.isfinite(r.ADC_mean)):
            continue
        dt = 100.0 * (r.tlg41_g - b["tlg41_g"]) / b["tlg41_g"]
        da = 100.0 * (r.ADC_mean - b["ADC_mean"]) / b["ADC_mean"]
        pts.setdefault(str(r.visit), []).append((dt, da, str(r.lesion_id)))
    if not pts:
        return None
    svg = Svg(4.6 * DPI, 3.6 * DPI)
    ax = Axes(svg, 0.75 * DPI, 0.2 * DPI, 3.7 * DPI, 2.85 * DPI)
    ax.font = 10.0
    for k, (visit, p) in enumerate(sorted(pts.items())):
        c = CYCLE[k % len(CYCLE)]
        ax.scatter(
            [x for x, _, _ in p],
            [y for _, y, _ in p],
            colours=c,
            edge=None,
            radius=3.0,
            label=f"visit {visit}",
        )
        for x, y, lid in p:
            ax.note(x, y, lid)
    ax.hline(0, colour="#999", width=0.8)
    ax.vline(0, colour="#999", width=0.8)
    ax.xlabel = "ΔTLG41 from baseline (%)"
    ax.ylabel = "ΔADCmean from baseline (%)"
    ax.draw()
    return svg.data_uri()


def pet_section(out_dir: str | os.PathLike[str], study: Study, subject: str) -> PetSection | None:
    """The subject's PET/MRI section, or None when the subject has no PET."""
    import pandas as pd

    out = Path(out_dir)
    t = _table(out, study, subject)
    if t is None:
        return None
    cols = {
        "visit": "visit",
        "lesion_id": "lesion",
        "suv_max": "SUVmax",
        "suv_peak": "SUVpeak",
        "sul_peak": "SULpeak",
        "mtv41_ml": "MTV41 (mL)",
        "tlg41_g": "TLG41 (g)",
        "mtv_percist_ml": "MTV PERCIST (mL)",
        "tlg_percist_g": "TLG PERCIST (g)",
        "ADC_mean": "ADCmean (mm²/s)",
        "ADC_min": "ADCmin (mm²/s)",
        "Ktrans_mean": "Ktrans mean (1/min)",
        "liver_sul_mean": "liver SULmean",
    }
    table = pd.DataFrame({label: t[c] for c, label in cols.items() if c in t.columns})
    baseline = study.subjects[subject].baseline.id
    liver = t["liver_sul_mean"].dropna()
    note = (
        "FDG uptake per lesion (SUVbw and SUL by lean body mass, Janmahasatian; SULpeak: the "
        "hottest 1 mL sphere, PERCIST 1.0) beside the lesion's ADC and Ktrans at the same visit. "
        "MTV41: voxels ≥ 41 % of SUVmax; MTV PERCIST: SUL ≥ 1.5 × liver SULmean + 2 SD; TLG = "
        "MTV × SUVmean. "
        + (
            f"Liver SULmean {liver.min():.2f}–{liver.max():.2f} over the visits. "
            if len(liver)
            else "No liver reference: PERCIST thresholds not available. "
        )
        + "PERCIST and imPERCIST calls are in the response table (criteria percist, impercist); "
        "ΔTLG and ΔADCmean per visit are in their details, without a call (no verified cut-off)."
    )
    return PetSection(table=table, scatter=_scatter(t, baseline), note=note)


def section(ctx: SubjectContext) -> str | None:
    """The PET/MRI section of the subject page (:mod:`tumorscope.report.sections`)."""
    from .blocks import frame_of, render

    pet = pet_section(ctx.out_dir, ctx.study, ctx.subject)
    if pet is None:
        return None
    return render("pet.html.j2", pet_table=frame_of(pet.table), scatter=pet.scatter, note=pet.note)
