"""Building blocks of the HTML reports: table cells and tables, templates, the methods text,
which maps a page shows, the spider plot's points.

Public so that they can be tested and reused on their own (a new report section builds on
them); :mod:`tumorscope.report.html` assembles the pages from them.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from ..response.best import BEST_PREFIX, DISAGREEMENT_PREFIX

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BEST_PREFIX",
    "DISAGREEMENT_PREFIX",
    "MAX_SHOWN",
    "SHOWN_PARAMETERS",
    "Frame",
    "cell",
    "frame_of",
    "methods_text",
    "render",
    "shown_maps",
    "spider_points",
]

#: Parameters shown on the subject pages, in order (at most :data:`MAX_SHOWN` maps).
SHOWN_PARAMETERS = ("ADC", "D", "Ktrans", "ve", "f", "K", "vp", "T1")
MAX_SHOWN = 4


def shown_maps(maps: Mapping[str, Any]) -> list[str]:
    """Names (``model.parameter``) of the maps to show, in :data:`SHOWN_PARAMETERS` order."""
    order = {p: i for i, p in enumerate(SHOWN_PARAMETERS)}
    names = [k for k in maps if k.rsplit(".", 1)[-1] in order]
    names.sort(key=lambda k: (order[k.rsplit(".", 1)[-1]], k))
    return names[:MAX_SHOWN]


@dataclass
class Frame:
    """A table for the templates: column names and rows of cells (see :func:`cell`)."""

    columns: list[str]
    rows: list[list[dict[str, Any]]] = field(default_factory=list)


def cell(value: Any, *, digits: int = 3) -> dict[str, Any]:
    """A table cell: ``text``, ``num`` (right-aligned, sortable as number), ``sort``, ``html``."""
    out: dict[str, Any] = {"text": "", "num": False, "sort": "", "html": ""}
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return out
    if isinstance(value, (bool, np.bool_)):
        out["text"] = "yes" if value else "no"
    elif isinstance(value, (int, np.integer)):
        out.update(text=str(int(value)), num=True, sort=int(value))
    elif isinstance(value, (float, np.floating)):
        v = float(value)
        if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e5):
            text = f"{v:.{digits}g}"
        else:
            text = f"{v:.{digits}f}".rstrip("0").rstrip(".")
        out.update(text=text, num=True, sort=repr(v))
    elif isinstance(value, dt.date):
        out["text"] = value.isoformat()
    else:
        out["text"] = str(value)
    return out


def frame_of(df: pd.DataFrame | None, *, links: Mapping[str, str] | None = None) -> Frame | None:
    """A DataFrame as the template's table structure (``links``: column -> href pattern)."""
    if df is None:
        return None
    out = Frame([str(c) for c in df.columns])
    for rec in df.itertuples(index=False):
        row = []
        for col, v in zip(df.columns, rec, strict=True):
            c = cell(v)
            if links and col in links and c["text"]:
                from markupsafe import escape

                href = links[col].format(value=c["text"])
                c["html"] = f'<a href="{escape(href)}">{escape(c["text"])}</a>'
            row.append(c)
        out.rows.append(row)
    return out


@functools.cache
def _environment() -> Any:
    """The templates' Jinja2 environment, one per process: it keeps the compiled templates
    (compiling them again for every page cost ~0.08 s a subject)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    return Environment(
        loader=PackageLoader("tumorscope.report", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, **context: Any) -> str:
    """Render one of the report templates with ``context``."""
    env = _environment()
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return env.get_template(template).render(version=__version__, generated=now, **context)


def methods_text(provenances: Sequence[Mapping[str, Any]]) -> list[str]:
    """Sentences describing the fits, from the maps' provenance (one per model and method)."""
    seen: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for p in provenances:
        if not p.get("model"):
            continue  # nothing to say about a map without provenance
        opts = dict(p.get("options") or {})
        key = (str(p.get("model", "?")), str(opts.get("method", "")), str(p.get("backend", "")))
        seen.setdefault(key, p)
    lines = []
    for (model, method, backend), p in sorted(seen.items()):
        opts = {k: v for k, v in dict(p.get("options") or {}).items() if k != "bvalues"}
        bvals = (p.get("options") or {}).get("bvalues")
        text = f"Model {model}" + (f", method {method}" if method else "")
        if bvals:
            text += f", b-values {', '.join(f'{float(b):g}' for b in bvals)} s/mm²"
        rest = ", ".join(
            f"{k}={_short(v)}" for k, v in opts.items() if k != "method" and v is not None
        )
        if rest:
            text += f" ({rest})"
        text += (
            f"; fitted with tumorscope {p.get('tumorscope_version', '?')}"
            + (f" ({backend} backend)" if backend else "")
            + (f", numpy {p['numpy_version']}" if p.get("numpy_version") else "")
            + "."
        )
        lines.append(text)
    return lines


def _short(value: Any) -> str:
    """An option value for the methods text (long arrays are summarised)."""
    if isinstance(value, (list, tuple)) and len(value) > 8:
        nums = [v for v in value if isinstance(v, (int, float))]
        if len(nums) == len(value):
            return f"{len(value)} values from {min(nums):g} to {max(nums):g}"
        return f"{len(value)} values"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    return str(value)


def spider_points(subject: Any, visit: Any, days: Any, a: pd.DataFrame) -> pd.DataFrame:
    """Spider-plot points: the baseline at 0 %, pre-baseline visits left out."""
    import pandas as pd

    change = a["change_from_baseline_pct"].astype(float).to_numpy().copy()
    response = a["response"].astype(str).to_numpy()
    change[response == "baseline"] = 0.0
    out = pd.DataFrame(
        {
            "subject": list(subject) if not isinstance(subject, str) else subject,
            "visit": list(visit),
            "days": list(days),
            "change_pct": change,
            "response": response,
        }
    )
    return out[(out["response"] != "pre-baseline") & out["days"].notna()].reset_index(drop=True)
