"""Tidy rows and tables the measuring stages (19F, hypoxia) share."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..volume import atomic_write

#: Columns of a ``measurements`` row, after which the pipeline adds ``step``.
MEASUREMENT_COLUMNS = ("subject", "visit", "lesion_id", "map", "statistic", "value", "unit")


def measurement_row(
    keys: Mapping[str, Any], lesion_id: str, map_name: str, statistic: str, value: Any, unit: str
) -> dict[str, Any]:
    """A ``measurements`` row: ``keys`` (subject, visit), then lesion, map, statistic, value
    (a float, or None for NaN and missing values) and unit."""
    val = None if value is None or value != value else float(value)
    return {
        **keys,
        "lesion_id": lesion_id,
        "map": map_name,
        "statistic": statistic,
        "value": val,
        "unit": unit,
    }


def write_parquet(
    path: str | os.PathLike[str],
    rows: list[dict[str, Any]],
    columns: Sequence[str] | None = None,
) -> Path:
    """Rows as a Parquet table (no index), atomically."""
    import pandas as pd

    out = Path(path)
    frame = pd.DataFrame(rows, columns=None if columns is None else list(columns))
    atomic_write(out, lambda tmp: frame.to_parquet(tmp, index=False))
    return out
