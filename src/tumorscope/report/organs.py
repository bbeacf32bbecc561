"""The "organ watch" section of a subject's report: table, trajectories, flags with reasons.

Reads ``sub-<id>_organs.json`` (:func:`tumorscope.layout.organ_watch_path`, written by the
``organ_watch`` step) and returns an HTML block, or None when the subject has no organ
values.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import layout

if TYPE_CHECKING:
    from .sections import SubjectContext

__all__ = ["organ_section", "section"]


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return html.escape(str(v))


def organ_section(
    out_dir: str | os.PathLike[str], subject: str, days: Mapping[str, int | None]
) -> str | None:
    """HTML of the organ watch of ``subject`` (None without one)."""
    path = layout.organ_watch_path(Path(out_dir), subject)
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    values = data.get("values") or []
    if not values:
        return None
    stats = {
        (m["visit"], m["lesion_id"], m["map"], m["statistic"]): m["value"]
        for m in data.get("measurements") or []
    }
    rows = []
    for v in values:
        key = (v["visit"], v["organ"], v["measure"])
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{_fmt(x)}</td>"
                for x in (
                    v["visit"],
                    days.get(v["visit"]),
                    v["organ"],
                    v["measure"],
                    v["value"],
                    v["unit"],
                    stats.get((*key, "z")),
                    stats.get((*key, "change_from_baseline_pct")),
                )
            )
            + "</tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "visit",
            "day",
            "organ",
            "measure",
            "value",
            "unit",
            "z",
            "change from baseline (%)",
        )
    )
    table = f'<table id="organ-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    flags = []
    for f in data.get("flags") or []:
        state = {True: "FLAG", False: "no", None: "not evaluable"}[f["flag"]]
        flags.append(
            f"<li><b>{html.escape(f['pattern'])}</b> at visit {html.escape(str(f['visit']))}: "
            f"{state} — {html.escape(str(f['reason']))}</li>"
        )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in data.get("notes") or [])
    fig = _trajectories(values, days)
    parts = [
        "<p>Organ values per visit (means over the organ regions of the organ map), z-scores "
        "against the study's reference ranges (<code>organ_reference</code> in study.yaml; "
        "none built in) and flags under published criteria, else change from baseline "
        "(docs/organ-watch.md).</p>",
        f'<ul class="flags">{"".join(flags)}</ul>' if flags else "",
        table,
        f'<img alt="organ trajectories" src="{fig}">' if fig else "",
        f"<details><summary>notes</summary><ul>{notes}</ul></details>" if notes else "",
    ]
    return "\n".join(p for p in parts if p)


def _trajectories(values: list[dict[str, Any]], days: Mapping[str, int | None]) -> str | None:
    try:
        import pandas as pd

        from .figures import trajectories
    except ImportError:  # pragma: no cover - report extra not installed
        return None
    df = pd.DataFrame(values)
    df["days"] = [days.get(v) for v in df["visit"]]
    df = df.dropna(subset=["days", "value"])
    if df.empty:
        return None
    series = {
        f"{m}": g.rename(columns={"organ": "lesion_id"})[["lesion_id", "days", "value"]]
        for m, g in df.groupby("measure", sort=True)
    }
    units = {m: f"{m} ({g['unit'].iloc[0]})" for m, g in df.groupby("measure")}
    return trajectories(series, ylabels=units)


def section(ctx: SubjectContext) -> str | None:
    """The organ-watch section of the subject page (:mod:`tumorscope.report.sections`)."""
    body = organ_section(ctx.out_dir, ctx.subject, ctx.days)
    if body is None:
        return None
    return f'<section id="organ-watch">\n<h2 id="organs">Organ watch</h2>\n{body}\n</section>'
