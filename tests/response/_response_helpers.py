"""Build small measurement tables for the response tests."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pandas as pd

BASE = date(2026, 1, 5)


def dates(*weeks: float) -> list[str]:
    """ISO dates at the given weeks from 2026-01-05."""
    return [(BASE + timedelta(days=round(7 * w))).isoformat() for w in weeks]


def lesion(
    kind: str, *values: Any, nodal: bool = False, organ: str | None = None
) -> dict[str, Any]:
    """One lesion: a value per visit.

    A value is a diameter (number), a status (str), a (diameter, perpendicular) tuple,
    a (diameter, status) tuple, or None (no row at that visit).
    """
    return {"kind": kind, "values": values, "nodal": nodal, "organ": organ}


def table(
    lesions: dict[str, dict[str, Any]],
    *,
    weeks: tuple[float, ...] | None = None,
    subject: str = "S1",
    visit_cols: dict[str, list[Any]] | None = None,
    baseline_visit: int | None = None,
) -> pd.DataFrame:
    """A measurement table of one subject; visits V1, V2, ... every 6 weeks by default."""
    n = max(len(les["values"]) for les in lesions.values())
    weeks = weeks if weeks is not None else tuple(6.0 * k for k in range(n))
    ds = dates(*weeks)
    rows = []
    for k in range(n):
        for lid, les in lesions.items():
            v = les["values"][k] if k < len(les["values"]) else None
            if v is None:
                continue
            row: dict[str, Any] = {
                "subject": subject,
                "visit": f"V{k + 1}",
                "date": ds[k],
                "lesion_id": lid,
                "kind": les["kind"],
                "nodal": les["nodal"],
                "diameter_mm": None,
                "perpendicular_mm": None,
                "status": None,
            }
            if les["organ"] is not None:
                row["organ"] = les["organ"]
            if isinstance(v, tuple):
                row["diameter_mm"] = v[0]
                if isinstance(v[1], str):
                    row["status"] = v[1]
                else:
                    row["perpendicular_mm"] = v[1]
            elif isinstance(v, str):
                row["status"] = v
            else:
                row["diameter_mm"] = v
            for col, vals in (visit_cols or {}).items():
                row[col] = vals[k]
            if baseline_visit is not None:
                row["baseline"] = k == baseline_visit
            rows.append(row)
    return pd.DataFrame(rows)


def responses(result: pd.DataFrame) -> list[str]:
    return list(result["response"])
