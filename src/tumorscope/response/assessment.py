"""`assess`: one response per subject and visit, for every supported criterion; and
`from_lesion_table`, which turns the lesion measurements tumorscope makes from masks into the
measurement table.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ResponseError
from ._core import Subject, subjects_from_table
from .table import read_table, validate_table

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CRITERIA", "assess", "assess_validated", "from_lesion_table"]

#: Criterion names accepted by :func:`assess`.
CRITERIA: tuple[str, ...] = (
    "recist1.1",
    "irecist",
    "rano",
    "irano",
    "mrecist",
    "choi",
    "percist",
    "impercist",
)

_ALIASES = {
    "recist": "recist1.1",
    "recist1_1": "recist1.1",
    "recist11": "recist1.1",
    "irecist1.1": "irecist",
}


def assess(
    table: pd.DataFrame | str | os.PathLike[str],
    *,
    criteria: str = "recist1.1",
    check_measurability: bool = True,
    confirm_window_days: int | None = None,
    radiotherapy_end: Mapping[str, Any] | None = None,
    n_lesions: int | None = None,
) -> pd.DataFrame:
    """Time-point response of every subject at every visit.

    Parameters
    ----------
    table : pandas.DataFrame or path
        The measurement table (:mod:`tumorscope.response.table`), or a CSV file holding it.
        It is validated first; nothing is computed from an invalid table.
    criteria : {"recist1.1", "irecist", "rano", "irano", "mrecist", "choi", "percist", "impercist"}
        Default "recist1.1". PERCIST 1.0 (Wahl et al. 2009, J Nucl Med 50:122S) and imPERCIST
        (Ito et al. 2019, J Nucl Med 60:335) read FDG PET's own table (``sul_peak`` and the
        liver reference; :mod:`~tumorscope.response.percist`, whose columns they return,
        with iPERCIST confirmation in ``ipercist``).
        RECIST 1.1 (Eisenhauer et al. 2009, doi:10.1016/j.ejca.2008.10.026), iRECIST
        (Seymour et al. 2017, doi:10.1016/S1470-2045(17)30074-8), RANO 2.0 (Wen et al. 2023,
        doi:10.1200/JCO.23.01059), iRANO (Okada et al. 2015,
        doi:10.1016/S1470-2045(15)00088-1), mRECIST (Lencioni & Llovet 2010,
        doi:10.1055/s-0030-1247132; needs ``viable_diameter_mm``) or Choi (Choi et al. 2007,
        doi:10.1200/JCO.2006.07.3049; uses ``density_hu``). The rules and the design
        decisions are in the docstrings of the modules :mod:`~tumorscope.response.recist`,
        :mod:`~tumorscope.response.irecist`, :mod:`~tumorscope.response.rano`,
        :mod:`~tumorscope.response.mrecist` and :mod:`~tumorscope.response.choi`.
    check_measurability : bool, default True
        RECIST/iRECIST/mRECIST: reject target lesions under 10 mm (nodes under 15 mm short axis) at
        baseline.
    confirm_window_days : int, optional
        RANO/iRANO only: days after baseline in which progression is preliminary (default 0
        for RANO, 182 for iRANO).
    radiotherapy_end : mapping of subject to date, optional
        RANO/iRANO only: end of radiotherapy per subject; progression within 12 weeks after
        it needs confirmation (RANO 2.0). Overrides the table's ``radiotherapy_end`` column.
    n_lesions : int, optional
        PERCIST/imPERCIST only: lesions in the measure (PERCIST: 1, the hottest, or 5, its
        five-lesion option; imPERCIST: up to 5, the default).

    Returns
    -------
    pandas.DataFrame
        One row per subject and visit, sorted by subject and date, columns ``subject``,
        ``visit``, ``date``, ``days_from_baseline``, ``response``, ``sum_mm``,
        ``change_from_baseline_pct``, ``change_from_nadir_pct``, ``nadir_mm``,
        ``target_response``, ``nontarget_response``, ``new_lesions`` (bool),
        ``new_lesion_ids``, ``reason`` (plain language), ``criteria``; iRECIST adds
        ``new_lesion_target_sum_mm``, ``new_target_ids`` and ``iupd_since``; RANO adds
        ``spd_mm2``, ``nadir_mm2``, ``steroid_dose_mg``, ``clinical_status`` (and its
        ``change_*`` columns refer to the SPD); Choi adds ``density_hu`` and
        ``density_change_pct``; mRECIST's sizes are the viable diameters. The baseline visit's response is
        ``baseline``, earlier visits ``pre-baseline``.

    Raises
    ------
    ResponseError
        If the table breaks a rule (the message names the row and the rule) or the criterion
        is unknown.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"subject": ["1", "1"], "visit": ["1", "2"],
    ...                   "date": ["2026-01-05", "2026-03-02"], "lesion_id": ["L1", "L1"],
    ...                   "kind": ["target", "target"], "diameter_mm": [50, 30]})
    >>> assess(t)[["visit", "response", "change_from_baseline_pct"]].to_string(index=False)
    'visit response  change_from_baseline_pct\\n    1 baseline                       NaN\\n    2       PR                     -40.0'
    """
    import pandas as pd

    name = str(criteria).strip().lower()
    name = _ALIASES.get(name, name)
    if name not in CRITERIA:
        raise ResponseError(
            f"unknown criteria {criteria!r}; expected one of {list(CRITERIA)}", field="criteria"
        )
    # RECIST 1.1's 5 targets and 2 per organ are not RANO's (rano.py checks RANO's limits)
    limits = name not in ("rano", "irano")
    if name in ("percist", "impercist"):
        # FDG PET: its own table (sul_peak and the liver reference), see response/percist.py
        from .percist import COLUMNS as PET_COLUMNS
        from .percist import assess_percist, validate_pet_table

        if isinstance(table, str | os.PathLike):
            table = pd.read_csv(table, dtype={"subject": str, "visit": str, "lesion_id": str})
        rows = assess_percist(validate_pet_table(table), variant=name, n_lesions=n_lesions)
        pet = pd.DataFrame(rows, columns=PET_COLUMNS)
        pet["date"] = pd.to_datetime(pet["date"])
        return pet.sort_values(["subject", "date"], kind="stable").reset_index(drop=True)
    if isinstance(table, str | os.PathLike):
        df = read_table(table, target_limits=limits)
    else:
        df = validate_table(table, target_limits=limits)
    return assess_validated(
        df,
        name,
        check_measurability=check_measurability,
        confirm_window_days=confirm_window_days,
        radiotherapy_end=radiotherapy_end,
    )


def assess_validated(
    df: pd.DataFrame,
    name: str,
    *,
    subjects: list[Subject] | None = None,
    check_measurability: bool = True,
    confirm_window_days: int | None = None,
    radiotherapy_end: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """:func:`assess` of a table :func:`validate_table` returned (with the target limits of
    criterion ``name``, a key of :data:`CRITERIA` but PERCIST's), and its
    :func:`subjects_from_table` if already grouped: for callers that validated the table
    themselves (nothing is checked twice)."""
    import pandas as pd

    if subjects is None:
        subjects = subjects_from_table(df)
    if name == "recist1.1":
        from .recist import COLUMNS, assess_recist

        rows = assess_recist(subjects, check_measurability=check_measurability)
    elif name == "irecist":
        from .irecist import COLUMNS, assess_irecist

        rows = assess_irecist(subjects, check_measurability=check_measurability)
    elif name == "mrecist":
        from .mrecist import assess_mrecist
        from .recist import COLUMNS

        rows = assess_mrecist(df, check_measurability=check_measurability)
    elif name == "choi":
        from .choi import COLUMNS, assess_choi

        rows = assess_choi(subjects)
    else:
        from .rano import COLUMNS, assess_rano

        rt = {
            str(k): v
            for k, v in zip(df["subject"], df["radiotherapy_end"], strict=True)
            if v is not None and not pd.isna(v)
        }
        rt.update(radiotherapy_end or {})
        rows = assess_rano(
            subjects,
            immunotherapy=name == "irano",
            confirm_window_days=confirm_window_days,
            radiotherapy_end=rt,
        )
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["date"] = pd.to_datetime(out["date"])
    return out.sort_values(["subject", "date"], kind="stable").reset_index(drop=True)


_LESION_COLUMNS = (
    "subject",
    "visit",
    "date",
    "lesion_id",
    "target",
    "nodal",
    "longest_diameter_mm",
    "short_axis_mm",
)


def from_lesion_table(
    lesions: pd.DataFrame,
    *,
    baseline: Mapping[str, str] | None = None,
    missing: Literal["absent", "not assessed"] = "absent",
    nontarget_progression_pct: float | None = None,
    radiotherapy_end: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Measurement table from per-lesion, per-visit geometry (the output of lesion measurement).

    Parameters
    ----------
    lesions : pandas.DataFrame
        One row per lesion and visit, columns ``subject``, ``visit``, ``date``,
        ``lesion_id``, ``target`` (bool), ``nodal`` (bool), ``longest_diameter_mm``,
        ``short_axis_mm``; optional ``bidimensional_product_mm2``, ``volume_ml``, ``organ``,
        ``baseline`` (bool, rows of the baseline visit), ``present`` (rows with false, a
        lesion not found at that visit, are treated as missing; the visit still counts as
        read, so a visit where every lesion is gone is assessed, e.g. CR) and any map
        statistics (``ADC_mean``, ``Ktrans_mean``, ...), which are carried over unchanged.
    baseline : mapping of subject to visit, optional
        The baseline visit of each subject (overrides a ``baseline`` column). Default: the
        first visit, so give it when a pre-treatment scan precedes the baseline.
    missing : {"absent", "not assessed"}, default "absent"
        What a lesion missing from a later visit means. ``"absent"`` (the default for
        measurements from masks: the lesion was not found, so it disappeared) adds a row with
        status ``absent`` (diameter 0 for target lesions); ``"not assessed"`` leaves it out,
        which makes the visit NE when a target lesion is missing.
    nontarget_progression_pct : float, optional
        If given, a non-target lesion whose ``volume_ml`` grew at least this much (percent)
        from baseline is marked ``unequivocal progression``. RECIST 1.1 leaves non-target
        progression to the reader; this is an explicit, opt-in rule for automated pipelines.
    radiotherapy_end : mapping of subject to date, optional
        End of radiotherapy per subject (the manifest's ``treatment.radiotherapy_end_date``),
        written to the ``radiotherapy_end`` column for RANO 2.0's post-radiotherapy window.

    Returns
    -------
    pandas.DataFrame
        The validated measurement table (without the limit of target lesions, which
        depends on the criterion and is checked by :func:`assess`): lesions seen at baseline are ``target`` (if
        ``target``) or ``non-target``; a lesion first seen after baseline is ``new``
        (RECIST 1.1 section 4.3.2). ``diameter_mm`` is the short axis for nodes and the
        longest diameter otherwise; ``perpendicular_mm`` is the other one of the two.

    Raises
    ------
    ResponseError
        If a required column is missing or the result breaks a rule of the measurement table.
    """
    import numpy as np
    import pandas as pd

    missing_cols = [c for c in _LESION_COLUMNS if c not in lesions.columns]
    if missing_cols:
        raise ResponseError(
            f"lesion table lacks column(s) {missing_cols}; expected {list(_LESION_COLUMNS)}",
            field=", ".join(missing_cols),
        )
    if missing not in ("absent", "not assessed"):
        raise ResponseError(
            f"missing must be 'absent' or 'not assessed', got {missing!r}", field="missing"
        )
    df = lesions.copy().reset_index(drop=True)
    for col in ("subject", "visit", "lesion_id"):
        df[col] = df[col].astype(str)
    df["date"] = pd.to_datetime(df["date"]).dt.strftime("%Y-%m-%d")
    # every visit with a row was read, even when none of its lesions was found (a complete
    # response): its date and order come from all rows
    visits = df[["subject", "visit", "date"]]
    if "present" in df.columns:
        # rows of lesions not found at a visit (tracking "disappeared") carry no measure
        df = df[[_as_bool(x) for x in df["present"]]].reset_index(drop=True)
    rows: list[dict[str, Any]] = []
    extra = [
        c
        for c in df.columns
        if c
        not in (
            *_LESION_COLUMNS,
            "baseline",
            "organ",
            "kind",
            "diameter_mm",
            "perpendicular_mm",
            "status",
        )
    ]
    for subject_key, read in visits.groupby("subject", sort=True):
        subject = str(subject_key)
        sub = df[df["subject"] == subject]
        visit_dates = read.groupby("visit")["date"].first().sort_values()
        order = list(visit_dates.index)
        if baseline is not None and subject in baseline:
            base = str(baseline[subject])
        elif "baseline" in sub.columns and sub["baseline"].astype(bool).any():
            base = str(sub.loc[sub["baseline"].astype(bool), "visit"].iloc[0])
        else:
            base = order[0]
        if base not in set(sub["visit"]):
            raise ResponseError(
                f"baseline visit {base} of subject {subject} has no rows", field="baseline"
            )
        b = order.index(base)
        at_base = sub[sub["visit"] == base]
        base_ids = set(at_base["lesion_id"])
        base_volume = dict(
            zip(
                at_base["lesion_id"], at_base.get("volume_ml", pd.Series(dtype=float)), strict=False
            )
        )
        info = {r["lesion_id"]: r for _, r in sub.sort_values("date").iterrows()}
        for k, visit in enumerate(order):
            here = sub[sub["visit"] == visit]
            present = set(here["lesion_id"])
            for _, r in here.iterrows():
                lid = r["lesion_id"]
                nodal = _as_bool(r["nodal"])
                if k < b:
                    kind = (
                        "target"
                        if _as_bool(r["target"]) and lid in base_ids
                        else ("non-target" if lid in base_ids else None)
                    )
                    if kind is None:
                        continue  # seen only before baseline: not part of the assessment
                elif lid in base_ids:
                    kind = "target" if _as_bool(info[lid]["target"]) else "non-target"
                else:
                    kind = "new"
                longest, short = float(r["longest_diameter_mm"]), float(r["short_axis_mm"])
                status = "present" if kind != "target" else ""
                if (
                    kind == "non-target"
                    and nontarget_progression_pct is not None
                    and k > b
                    and "volume_ml" in r
                    and float(base_volume.get(lid, math.nan)) > 0
                    and 100.0 * (float(r["volume_ml"]) / float(base_volume[lid]) - 1.0)
                    >= nontarget_progression_pct
                ):
                    status = "unequivocal progression"
                sizes = (short, longest) if nodal else (longest, short)
                rows.append(_row(subject, visit, visit_dates[visit], r, kind, sizes, status))
                rows[-1].update(baseline=visit == base, **{c: r[c] for c in extra})
            if k > b and missing == "absent":
                for lid in sorted(base_ids - present):
                    r0 = info[lid]
                    kind = "target" if _as_bool(r0["target"]) else "non-target"
                    rows.append(
                        _row(subject, visit, visit_dates[visit], r0, kind, (0.0, 0.0), "absent")
                    )
                    rows[-1].update(baseline=False, **dict.fromkeys(extra, np.nan))
    out = pd.DataFrame(rows)
    if radiotherapy_end:
        ends = {str(k): v for k, v in radiotherapy_end.items() if v is not None}
        out["radiotherapy_end"] = [
            None if s not in ends else pd.Timestamp(ends[s]).strftime("%Y-%m-%d")
            for s in out["subject"]
        ]
    # the criterion's own limits of target lesions are checked by assess
    return validate_table(out, target_limits=False)


def _row(
    subject: str, visit: str, date: str, r: Any, kind: str, sizes: tuple[float, float], status: str
) -> dict[str, Any]:
    row = {
        "subject": subject,
        "visit": visit,
        "date": date,
        "lesion_id": r["lesion_id"],
        "kind": kind,
        "nodal": _as_bool(r["nodal"]),
        "diameter_mm": sizes[0],
        "perpendicular_mm": sizes[1],
        "status": status,
    }
    if "organ" in r:
        row["organ"] = r["organ"]
    return row


def _as_bool(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes", "y", "t")
    return bool(v)
