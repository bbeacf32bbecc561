"""The measurement table that every response criterion reads, and its validation.

One row per lesion per visit. A reader's spreadsheet (CSV) and the lesion measurements that
tumorscope makes from masks (:func:`tumorscope.response.from_lesion_table`) both end up in
this shape.

=================  ========  ==============================================================
column             required  meaning
=================  ========  ==============================================================
``subject``        yes       subject identifier (text)
``visit``          yes       visit identifier (text); visits are ordered by ``date``
``date``           yes       ISO date ``YYYY-MM-DD`` of the visit (one date per visit)
``lesion_id``      yes       stable identity of the lesion across visits
``kind``           yes       ``target``, ``non-target`` or ``new``
``nodal``          no        ``true``/``false`` (default false): a lymph node
``diameter_mm``    no        longest axial diameter; short axis for nodes; empty if not
                             measured
``perpendicular_mm`` no      longest diameter perpendicular to ``diameter_mm`` (RANO)
``status``         no        ``present``, ``absent``, ``unequivocal progression``,
                             ``further progression`` (iRECIST: a further unequivocal increase
                             since the iUPD), ``too small to measure`` (target lesions: 5 mm
                             is used, RECIST 1.1 section 4.3.2), ``equivocal`` (new lesions:
                             not yet progression); empty = not assessed unless a diameter is
                             given
``organ``          no        organ of the lesion; enables the "2 per organ" rule
``baseline``       no        ``true`` on the rows of the baseline visit; visits dated before
                             it are pre-baseline (used for growth rates before treatment).
                             Default: the first visit is the baseline
``steroid_dose_mg`` no       corticosteroid dose at the visit, mg/day dexamethasone-equivalent
                             (RANO)
``clinical_status`` no       ``improved``, ``stable`` or ``worse`` (RANO)
``enhancing``      no        ``true``/``false`` (RANO; default true)
``viable_diameter_mm`` no    longest diameter of the viable (arterially enhancing) part of a
                             lesion (mRECIST); 0 when no enhancing tumour is left
``density_hu``     no        mean attenuation of the lesion, Hounsfield units (Choi)
``radiotherapy_end`` no      ISO date of the end of radiotherapy, one per subject (RANO 2.0:
                             progression within 12 weeks after it needs confirmation)
=================  ========  ==============================================================

Any other column (map statistics such as ``ADC_mean``) is kept as given.

The rules checked here hold for every criterion, except RECIST 1.1's limit of 5 target
lesions and 2 per organ, which ``target_limits=False`` leaves to the criterion (RANO has its
own: 3 target lesions in RANO 2.0, 5 in RANO 2010/iRANO, none per organ); a criterion adds its
own (RECIST 1.1 measurability, RANO's three target lesions) when it runs. Every broken rule raises
:class:`tumorscope.errors.ResponseError` naming the row (the line of the CSV file, header =
line 1; or the 0-based position for a DataFrame), the column and the rule.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ResponseError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CLINICAL_STATUSES",
    "KINDS",
    "MAX_DIAMETER_MM",
    "MAX_TARGETS",
    "MAX_TARGETS_PER_ORGAN",
    "REQUIRED_COLUMNS",
    "STATUSES",
    "read_table",
    "validate_table",
]

REQUIRED_COLUMNS: tuple[str, ...] = ("subject", "visit", "date", "lesion_id", "kind")
KINDS: tuple[str, ...] = ("target", "non-target", "new")
STATUSES: tuple[str, ...] = (
    "present",
    "absent",
    "unequivocal progression",
    "further progression",
    "too small to measure",
    "equivocal",
)
CLINICAL_STATUSES: tuple[str, ...] = ("improved", "stable", "worse")
#: RECIST 1.1 section 3.3.1: "a maximum of five lesions total (and a maximum of two lesions
#: per organ) representative of all involved organs should be identified as target lesions".
MAX_TARGETS = 5
MAX_TARGETS_PER_ORGAN = 2
#: The largest diameter accepted (mm). No lesion can be measured larger than a body: an adult
#: trunk is under 600 mm across and under 1000 mm long, so a size beyond 1 m is a unit error
#: (µm, or a spreadsheet's overflow) or a hostile value, never a measurement.
MAX_DIAMETER_MM = 1000.0

_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f", ""}
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TRAILING_INT = re.compile(r"^(.*?)(\d+)$")


def read_table(path: str | os.PathLike[str], *, target_limits: bool = True) -> pd.DataFrame:
    """Read and validate a measurement table from a CSV (or TSV) file.

    Parameters
    ----------
    path : str or os.PathLike
        A comma-separated file (``.tsv``: tab-separated) with a header row; UTF-8, a byte
        order mark is accepted.
    target_limits : bool, default True
        Check RECIST 1.1's limit of target lesions (see :func:`validate_table`).

    Returns
    -------
    pandas.DataFrame
        The validated, normalised table (see :func:`validate_table`).

    Raises
    ------
    ResponseError
        If the file cannot be parsed or breaks a rule; the message names the line.
    """
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise ResponseError("file not found", file=p)
    sep = "\t" if p.suffix.lower() in (".tsv", ".tab") else ","
    try:
        df = pd.read_csv(
            p, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig", comment=None
        )
        # pandas renames a repeated column ("diameter_mm.1"): look at the header as written
        header = pd.read_csv(
            p,
            sep=sep,
            dtype=str,
            header=None,
            nrows=1,
            keep_default_na=False,
            encoding="utf-8-sig",
            comment=None,
        ).iloc[0]
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise ResponseError(f"cannot read the table: {exc}", file=p) from None
    _check_columns([str(c) for c in header], source=str(p))
    return validate_table(
        df, source=str(p), first_line=2, target_limits=target_limits, real_dates=True
    )


def validate_table(
    table: pd.DataFrame | Mapping[str, Any],
    *,
    source: str | None = None,
    first_line: int | None = None,
    target_limits: bool = True,
    real_dates: bool = False,
) -> pd.DataFrame:
    """Check a measurement table against the rules every criterion relies on.

    Parameters
    ----------
    table : pandas.DataFrame or mapping of column name to sequence
        The measurement table (module docstring). Cells may be text (as read from CSV) or
        typed values.
    source : str, optional
        Where the table came from (a file), used in error messages.
    first_line : int, optional
        Line number of the first data row in ``source`` (2 for a CSV with a header). When
        omitted, rows are named by their 0-based position.
    target_limits : bool, default True
        Check RECIST 1.1 section 3.3.1's "maximum of five lesions total (and a maximum of two
        lesions per organ)" at baseline. False for criteria with limits of their own (RANO,
        iRANO: :mod:`tumorscope.response.rano` checks them) and for a table not yet tied to a
        criterion (:func:`tumorscope.response.from_lesion_table`).
    real_dates : bool, default False
        Dates of measured visits: from :data:`EARLIEST_DATE` (1971-01-01, as the study
        manifest's) to tomorrow. :func:`read_table` (a user's file, ``tumorscope assess``)
        checks them; tables built in code (the pipeline's, from a checked manifest; made-up
        schedules) need not.

    Returns
    -------
    pandas.DataFrame
        A new table with normalised types: ``subject``, ``visit``, ``lesion_id``, ``kind``,
        ``status``, ``organ`` as text (``status``/``organ`` ``None`` when empty),
        ``date`` as ``datetime64``, ``nodal``, ``enhancing`` and ``baseline`` as bool
        (``baseline`` true on every row of each subject's baseline visit),
        ``diameter_mm``, ``perpendicular_mm``, ``steroid_dose_mg`` as float (NaN when empty),
        ``visit_index`` (0 = baseline, negative before it) and ``row`` (where the row came
        from, for messages). Rows are sorted by subject, date and lesion.

    Raises
    ------
    ResponseError
        For the first broken rule: missing column, unknown kind or status, bad date or
        number, a duplicate lesion in one visit, two dates for one visit or two visits on
        one date, visit numbers out of date order, a lesion changing kind, organ or
        nodal-ness, a target lesion with no baseline diameter, a target or non-target
        lesion first seen after baseline, a ``new`` lesion at baseline, more than
        5 target lesions or more than 2 per organ at baseline (with ``target_limits``).
    """
    import pandas as pd

    df = table.copy() if isinstance(table, pd.DataFrame) else pd.DataFrame(dict(table))
    df = df.reset_index(drop=True)
    _check_columns([str(c) for c in df.columns], source=source)
    df.columns = [str(c).strip() for c in df.columns]
    if first_line is None:
        df["row"] = [f"row {i}" for i in range(len(df))]
    else:
        df["row"] = [f"line {i + first_line}" for i in range(len(df))]
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ResponseError(
            f"missing required column(s) {missing}; the table needs {list(REQUIRED_COLUMNS)}",
            file=source,
            field=", ".join(missing),
        )
    if len(df) == 0:
        raise ResponseError("the table has no rows", file=source)

    def fail(i: int, column: str, message: str) -> ResponseError:
        return ResponseError(f"{_at(df, i, 'row')}: {message}", file=source, field=column)

    for col in ("subject", "visit", "lesion_id"):
        df[col] = [_text(v) for v in df[col]]
        for i, v in enumerate(df[col]):
            if v == "":
                raise fail(i, col, f"'{col}' is empty; every row needs one")
            bad = _CONTROL.search(v)
            if bad:
                raise fail(
                    i,
                    col,
                    f"'{col}' holds the control character {bad.group()!r} ({v!r}); an "
                    "identifier is printable text",
                )

    kinds = []
    for i, v in enumerate(df["kind"]):
        k = _text(v).lower().replace("_", "-")
        if k == "nontarget":
            k = "non-target"
        if k not in KINDS:
            raise fail(i, "kind", f"unknown kind {_text(v)!r}; expected one of {list(KINDS)}")
        kinds.append(k)
    df["kind"] = kinds

    dates = []
    for i, v in enumerate(df["date"]):
        s = _text(v)[:10] if not isinstance(v, pd.Timestamp) else v.strftime("%Y-%m-%d")
        if not _ISO_DATE.match(s):
            raise fail(i, "date", f"date {_text(v)!r} is not an ISO date (YYYY-MM-DD)")
        try:
            stamp = pd.Timestamp(s)
        except (ValueError, OverflowError):
            raise fail(i, "date", f"date {s!r} does not exist") from None
        if not pd.Timestamp.min <= stamp <= pd.Timestamp.max:
            raise fail(i, "date", f"date {s!r} is outside the years 1678 to 2261")
        latest = dt.date.today() + dt.timedelta(days=1)
        if real_dates and stamp.date() < EARLIEST_DATE:
            raise fail(
                i, "date", f"date {s} is before {EARLIEST_DATE} (before clinical CT and MRI)"
            )
        if real_dates and stamp.date() > latest:
            raise fail(
                i,
                "date",
                f"date {s} is in the future (today is {dt.date.today()}): a measured visit "
                "has happened; check the year",
            )
        dates.append(stamp)
    df["date"] = pd.to_datetime(pd.Series(dates, dtype="datetime64[ns]"))

    rt_end: list[Any] = []
    for i, v in enumerate(df["radiotherapy_end"] if "radiotherapy_end" in df.columns else []):
        text = _text(v)[:10] if not isinstance(v, pd.Timestamp) else v.strftime("%Y-%m-%d")
        if text in ("", "NaT"):
            rt_end.append(None)
            continue
        if not _ISO_DATE.match(text):
            raise fail(i, "radiotherapy_end", f"{_text(v)!r} is not an ISO date (YYYY-MM-DD)")
        try:
            rt_end.append(pd.Timestamp(text))
        except (ValueError, OverflowError):
            raise fail(i, "radiotherapy_end", f"date {text!r} does not exist") from None
        if real_dates and rt_end[-1].date() < EARLIEST_DATE:
            raise fail(
                i,
                "radiotherapy_end",
                f"date {text} is before {EARLIEST_DATE} (before clinical CT and MRI)",
            )
    df["radiotherapy_end"] = rt_end if rt_end else None
    df["nodal"] = _bools(df, "nodal", default=False, fail=fail)
    df["enhancing"] = _bools(df, "enhancing", default=True, fail=fail)
    has_baseline_col = "baseline" in df.columns
    df["baseline"] = _bools(df, "baseline", default=False, fail=fail)
    sizes = {
        col: _floats(df, col, fail=fail, upper=MAX_DIAMETER_MM)
        for col in ("diameter_mm", "perpendicular_mm", "viable_diameter_mm")
    }
    for col, values in sizes.items():
        df[col] = values
    df["steroid_dose_mg"] = _floats(df, "steroid_dose_mg", fail=fail)
    df["density_hu"] = _floats(df, "density_hu", fail=fail, allow_negative=True)

    statuses: list[str | None] = []
    for i, v in enumerate(df["status"] if "status" in df.columns else [""] * len(df)):
        s = _text(v).lower()
        if s == "":
            statuses.append(None)
            continue
        if s not in STATUSES:
            raise fail(
                i, "status", f"unknown status {_text(v)!r}; expected one of {list(STATUSES)}"
            )
        statuses.append(s)
    df["status"] = statuses
    # the rows as lists (the per-cell ``df.at`` of old cost most of the check)
    for i, (s, kind, diameter) in enumerate(
        zip(statuses, kinds, sizes["diameter_mm"], strict=True)
    ):
        if s == "equivocal" and kind != "new":
            raise fail(i, "status", "'equivocal' applies to new lesions only")
        if s == "too small to measure" and kind != "target":
            raise fail(i, "status", "'too small to measure' applies to target lesions only")
        if s in ("unequivocal progression", "further progression") and kind == "target":
            raise fail(
                i,
                "status",
                f"{s!r} applies to non-target and new lesions; target lesions are measured",
            )
        if s == "absent" and np.isfinite(diameter) and diameter > 0:
            raise fail(i, "status", "status 'absent' with a positive diameter_mm")

    df["organ"] = [(_text(v) or None) for v in df["organ"]] if "organ" in df.columns else None
    cs: list[str | None] = []
    for i, v in enumerate(
        df["clinical_status"] if "clinical_status" in df.columns else [""] * len(df)
    ):
        s = _text(v).lower()
        if s and s not in CLINICAL_STATUSES:
            raise fail(
                i,
                "clinical_status",
                f"unknown clinical_status {_text(v)!r}; expected one of {list(CLINICAL_STATUSES)}",
            )
        cs.append(s or None)
    df["clinical_status"] = cs

    # duplicates
    dup = df.duplicated(["subject", "visit", "lesion_id"], keep="first")
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise fail(
            i,
            "lesion_id",
            f"lesion {_at(df, i, 'lesion_id')} appears twice at visit {_at(df, i, 'visit')} of "
            f"subject {_at(df, i, 'subject')}",
        )

    parts = []
    for subject, sub in df.groupby("subject", sort=True):
        parts.append(_check_subject(str(subject), sub, has_baseline_col, fail, target_limits))
    out = pd.concat(parts, ignore_index=True)
    return out


def _check_subject(
    subject: str, sub: pd.DataFrame, has_baseline_col: bool, fail: Any, target_limits: bool
) -> pd.DataFrame:
    # the subject's rows as lists, in table order: ``index[k]`` names row ``k`` in messages
    index = list(sub.index)
    visits, lesion_ids = list(sub["visit"]), list(sub["lesion_id"])
    # one date per visit, one visit per date
    visit_dates: dict[str, Any] = {}
    for i, v, d in zip(index, visits, sub["date"], strict=True):
        if v in visit_dates and visit_dates[v] != d:
            raise fail(
                i,
                "date",
                f"visit {v} of subject {subject} has two dates "
                f"({visit_dates[v]:%Y-%m-%d} and {d:%Y-%m-%d})",
            )
        visit_dates.setdefault(v, d)
    by_date: dict[Any, str] = {}
    for v, d in visit_dates.items():
        if d in by_date:
            i = int(next(i for i, x in zip(index, visits, strict=True) if x == v))
            raise fail(
                i,
                "date",
                f"visits {by_date[d]} and {v} of subject {subject} share the date {d:%Y-%m-%d}",
            )
        by_date[d] = v
    ordered = sorted(visit_dates, key=lambda v: visit_dates[v])
    _check_visit_numbers(subject, ordered, visit_dates, sub, fail)

    # the baseline visit
    if has_baseline_col and sub["baseline"].any():
        marked = sorted(set(sub.loc[sub["baseline"], "visit"]))
        if len(marked) > 1:
            i = int(sub.index[sub["baseline"].to_numpy()][0])
            raise fail(i, "baseline", f"subject {subject} has several baseline visits {marked}")
        base = marked[0]
        rows_of_base = sub["visit"] == base
        if not sub.loc[rows_of_base, "baseline"].all():
            i = int(sub.index[(rows_of_base & ~sub["baseline"]).to_numpy()][0])
            raise fail(i, "baseline", f"visit {base} is the baseline: mark all its rows true")
    else:
        base = ordered[0]
    number = {v: k - ordered.index(base) for k, v in enumerate(ordered)}
    visit_index = [number[v] for v in visits]
    sub = sub.copy()
    sub["visit_index"] = visit_index
    sub["baseline"] = sub["visit_index"] == 0

    # lesions keep their kind, organ and nodal-ness
    rows_of: dict[str, list[int]] = {}  # lesion -> its rows (positions), in table order
    for k, lid in enumerate(lesion_ids):
        rows_of.setdefault(lid, []).append(k)
    for col in ("kind", "nodal", "organ"):
        values = list(sub[col])
        for lesion in sorted(rows_of):
            rows = rows_of[lesion]
            vals = {values[k] for k in rows if values[k] is not None}
            if len(vals) > 1:
                i = int(index[rows[-1]])
                raise fail(
                    i,
                    col,
                    f"lesion {lesion} of subject {subject} changes {col} across visits "
                    f"({sorted(map(str, vals))}); a lesion keeps its {col}",
                )

    kinds, statuses = list(sub["kind"]), list(sub["status"])
    diameters = list(sub["diameter_mm"])
    at_base = [k for k, x in enumerate(visit_index) if x == 0]
    after = [k for k, x in enumerate(visit_index) if x != 0]
    base_ids = {lesion_ids[k] for k in at_base}
    for k in after:
        i, lid, kind = index[k], lesion_ids[k], kinds[k]
        if visit_index[k] < 0 and kind == "new":
            raise fail(
                i,
                "kind",
                f"lesion {lid} of subject {subject} is 'new' before the baseline visit {base}",
            )
        if kind in ("target", "non-target") and lid not in base_ids:
            raise fail(
                i,
                "kind",
                f"{kind} lesion {lid} of subject {subject} is not in the baseline visit "
                f"{base}; target and non-target lesions are chosen at baseline, a lesion first "
                "seen later is 'new'",
            )
    for k in at_base:
        i, lid, kind = index[k], lesion_ids[k], kinds[k]
        if kind == "new":
            raise fail(
                i,
                "kind",
                f"lesion {lid} is 'new' at the baseline visit {base} of "
                f"subject {subject}; a lesion seen at baseline is target or non-target",
            )
        if kind == "target" and not (np.isfinite(diameters[k]) and diameters[k] > 0):
            raise fail(
                i,
                "diameter_mm",
                f"target lesion {lid} of subject {subject} has no baseline "
                "diameter; every target lesion is measured at baseline",
            )
        if kind == "non-target" and statuses[k] in (
            "absent",
            "unequivocal progression",
            "further progression",
        ):
            raise fail(
                i,
                "status",
                f"non-target lesion {lid} has status "
                f"{statuses[k]!r} at baseline; expected 'present' or empty",
            )
    targets = [k for k in at_base if kinds[k] == "target"]
    groups = [("kind", "", MAX_TARGETS, targets)] if target_limits else []
    organs = list(sub["organ"])
    if target_limits and any(not _missing(organs[k]) for k in targets):
        per_organ: dict[str, list[int]] = {}
        for k in targets:
            if not _missing(organs[k]):
                per_organ.setdefault(organs[k], []).append(k)
        groups += [
            ("organ", f" in {organ}", MAX_TARGETS_PER_ORGAN, per_organ[organ])
            for organ in sorted(per_organ)
        ]
    for fld, where, limit, rows in groups:
        if len(rows) > limit:
            per = " per organ" if fld == "organ" else ""
            raise fail(
                int(index[rows[limit]]),
                fld,
                f"subject {subject} has {len(rows)} target lesions{where} at baseline; "
                f"RECIST 1.1 allows at most {limit}{per}",
            )

    ends = {x for x in sub["radiotherapy_end"] if x is not None and x == x}  # NaT != NaT
    if len(ends) > 1:
        raise fail(
            int(sub.index[-1]),
            "radiotherapy_end",
            f"subject {subject} has several radiotherapy_end dates "
            f"{sorted(f'{x:%Y-%m-%d}' for x in ends)}",
        )
    # visit-level fields have one value per visit
    rows_at: dict[str, list[int]] = {}  # visit -> its rows (positions), in table order
    for k, v in enumerate(visits):
        rows_at.setdefault(v, []).append(k)
    for col in ("steroid_dose_mg", "clinical_status"):
        values = list(sub[col])
        for visit in sorted(rows_at):
            rows = rows_at[visit]
            vals = {
                values[k]
                for k in rows
                if values[k] is not None
                and not (isinstance(values[k], float) and np.isnan(values[k]))
            }
            if len(vals) > 1:
                i = int(index[rows[-1]])
                raise fail(
                    i,
                    col,
                    f"visit {visit} of subject {subject} has several {col} values {sorted(map(str, vals))}",
                )
    return sub.sort_values(["date", "lesion_id"], kind="stable")


#: The earliest date of a measurement: as the study manifest's
#: (:data:`tumorscope.io.manifest.EARLIEST_DATE`; the response layer imports no ``io``). A
#: visit may not be dated after tomorrow (today, with a day of margin for time zones).
EARLIEST_DATE = dt.date(1971, 1, 1)

#: Control characters (NUL, newlines, escapes …) that have no place in an identifier.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_columns(columns: list[str], *, source: str | None) -> None:
    """Column names: each once (a repeated column was used silently, its first copy)."""
    seen: set[str] = set()
    for name in (c.strip() for c in columns):
        if name in seen:
            raise ResponseError(
                f"the column {name!r} appears more than once in the header; keep one",
                file=source,
                field=name,
            )
        seen.add(name)


def _check_visit_numbers(
    subject: str, ordered: list[str], dates: dict[str, Any], sub: pd.DataFrame, fail: Any
) -> None:
    """Visits named with a common prefix and a number must be numbered in date order."""
    matches = [_TRAILING_INT.match(v) for v in ordered]
    if not all(matches) or len({m.group(1) for m in matches if m}) != 1:
        return
    numbers = [int(m.group(2)) for m in matches if m]
    for k in range(1, len(numbers)):
        if numbers[k] <= numbers[k - 1]:
            a, b = ordered[k - 1], ordered[k]  # a is numbered after b but dated before it
            i = int(sub.index[(sub["visit"] == a).to_numpy()][0])
            raise fail(
                i,
                "date",
                f"dates out of order for subject {subject}: visit {a} is dated "
                f"{dates[a]:%Y-%m-%d}, before visit {b} ({dates[b]:%Y-%m-%d})",
            )


def _at(df: pd.DataFrame, i: Any, col: str) -> Any:
    return df.at[i, col]


def _missing(v: Any) -> bool:
    """``None`` or NaN (an empty cell of a text column)."""
    return v is None or (isinstance(v, float) and np.isnan(v))


def _text(v: Any) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    return str(v).strip()


def _bools(df: pd.DataFrame, col: str, *, default: bool, fail: Any) -> list[bool]:
    if col not in df.columns:
        return [default] * len(df)
    out = []
    for i, v in enumerate(df[col]):
        if isinstance(v, bool | np.bool_):
            out.append(bool(v))
            continue
        s = _text(v).lower()
        if s == "":
            out.append(default)
        elif s in _TRUE:
            out.append(True)
        elif s in _FALSE:
            out.append(False)
        else:
            raise fail(i, col, f"{col} {_text(v)!r} is not a boolean (true/false)")
    return out


def _floats(
    df: pd.DataFrame,
    col: str,
    *,
    fail: Any,
    allow_negative: bool = False,
    upper: float | None = None,
) -> list[float]:
    if col not in df.columns:
        return [float("nan")] * len(df)
    out = []
    for i, v in enumerate(df[col]):
        s = _text(v)
        if s == "":
            out.append(float("nan"))
            continue
        try:
            x = float(s)
        except ValueError:
            raise fail(i, col, f"{col} {s!r} is not a number") from None
        if not np.isfinite(x) or (x < 0 and not allow_negative):
            raise fail(
                i, col, f"{col} must be a finite number{'' if allow_negative else ' >= 0'}, got {s}"
            )
        if upper is not None and x > upper:
            raise fail(
                i,
                col,
                f"{col} {s} mm is larger than any body (at most {upper:g} mm); "
                "sizes are in millimetres",
            )
        out.append(x)
    return out
