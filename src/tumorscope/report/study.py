"""The study report (``report/index.html``), written by the client at the end of a run from
the database: the subjects with their best overall response under each criterion (and where
the conventional and the immune criteria disagree, with the reason), spider and waterfall
plots, every assessment, the failures and the methods.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import layout
from ..response.best import AFTER_PD
from ..volume import atomic_write
from .blocks import BEST_PREFIX, DISAGREEMENT_PREFIX, frame_of, methods_text, render, spider_points

if TYPE_CHECKING:
    import os

    import pandas as pd

    from ..io import Study
    from ..study import Store

__all__ = ["target_sums", "write_study_report"]


def _write(path: Path, text: str) -> Path:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def _software() -> pd.DataFrame:
    import importlib.metadata as md

    import pandas as pd

    rows = [("python", platform.python_version())]
    for name in ("tumorscope", "numpy", "scipy", "nibabel", "numba", "pandas"):
        try:
            rows.append((name, md.version(name)))
        except md.PackageNotFoundError:
            continue
    return pd.DataFrame(rows, columns=["software", "version"])


def target_sums(
    store: Store,
    criteria: str,
    *,
    assessments: pd.DataFrame | None = None,
    visits: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per subject and visit: days on treatment, change of the target sum, response
    (``assessments``, ``visits``: the tables already read, else read from ``store``)."""
    import pandas as pd

    if assessments is None:
        a = store.read_table("assessments", criteria=criteria)
    else:
        a = assessments[assessments["criteria"] == criteria]
    v = (store.read_table("visits") if visits is None else visits)[
        ["subject", "visit", "days_on_treatment"]
    ]
    if a.empty:
        return pd.DataFrame(columns=["subject", "visit", "days", "change_pct", "response"])
    m = a.merge(v, on=["subject", "visit"], how="left")
    return spider_points(m["subject"], m["visit"], m["days_on_treatment"], m)


def write_study_report(
    out_dir: str | os.PathLike[str], study: Study, store: Store, *, incomplete: str | None = None
) -> Path:
    """Write ``report/index.html`` from the database.

    Parameters
    ----------
    out_dir : path-like
        The output folder of the run.
    study : tumorscope.io.Study
    store : tumorscope.study.Store
    incomplete : str, optional
        Why the results are incomplete (the last run did not finish), shown at the top.

    Returns
    -------
    Path
    """
    import pandas as pd

    main = (study.criteria or ("recist1.1",))[0]
    visits = store.read_table("visits")
    lesions = store.read_table("lesions")
    maps = store.read_table("maps")
    failed = store.read_table("step_runs", status="failed")
    assessments = store.read_table("assessments")

    sums = target_sums(store, main, assessments=assessments, visits=visits)
    spider, waterfall, best = _response_figures(sums, visits, main)
    srows = _subject_rows(study, store, main, best, failed, visits=visits, lesions=lesions)
    atable = None
    if len(assessments):
        atable = assessments[
            [
                "subject",
                "visit",
                "criteria",
                "response",
                "target_sum_mm",
                "change_from_baseline_pct",
                "change_from_nadir_pct",
                "reason",
            ]
        ]
    ftable = None
    if len(failed):
        ftable = failed[["step", "unit", "error_file", "error_field", "error"]].rename(
            columns={"error_file": "file", "error_field": "field", "error": "reason"}
        )
    methods = (
        methods_text([p for p in maps["provenance"] if isinstance(p, dict)]) if len(maps) else []
    )
    methods.append(
        f"Lesion geometry: RECIST longest axial diameter and short axis, volume, IBSI maximum "
        f"3-D diameter (tumorscope.lesions.geometry); response: {', '.join(study.criteria)} "
        "(tumorscope.response)."
    )
    not_wired = ""
    html = render(
        "study.html.j2",
        title=f"{study.name}: report",
        n_subjects=len(study),
        n_visits=len(visits),
        n_lesions=len(lesions),
        n_maps=len(maps),
        criteria=list(study.criteria),
        subjects=frame_of(pd.DataFrame(srows), links={"subject": "sub-{value}.html"}),
        disagreements=[
            f"sub-{r['subject']}: {r['criteria disagree']}" for r in srows if r["criteria disagree"]
        ],
        spider=spider,
        waterfall=waterfall,
        main_criteria=main,
        not_wired=not_wired,
        assessments=frame_of(atable),
        failures=frame_of(ftable),
        incomplete=incomplete,
        methods=methods,
        software=frame_of(_software()),
    )
    return _write(layout.study_report_path(out_dir), html)


def _response_figures(
    post: pd.DataFrame, visits: pd.DataFrame, main: str
) -> tuple[str | None, str | None, pd.DataFrame]:
    """Spider and waterfall plots of the main criteria, and each subject's best change."""
    import pandas as pd

    from . import figures

    spider = waterfall = None
    best = pd.DataFrame(columns=["subject", "best_change_pct", "response"])
    if not len(post):
        return spider, waterfall, best
    spider = figures.spider_plot(post, title=f"Target sum over time ({main})")
    after = post.merge(
        visits[["subject", "visit", "baseline", "prebaseline"]], on=["subject", "visit"]
    )
    base_dates = visits[visits["baseline"]].set_index("subject")["days_on_treatment"]
    after = after[after["days"] > after["subject"].map(base_dates)]
    after = after.dropna(subset=["change_pct"])
    # RECIST 1.1 stops at progression: no best change from the visits after it
    after = after[after["response"] != AFTER_PD]
    if len(after):
        idx = after.groupby("subject")["change_pct"].idxmin()
        best = after.loc[idx, ["subject", "change_pct", "response"]].rename(
            columns={"change_pct": "best_change_pct"}
        )
        waterfall = figures.waterfall_plot(best, title=f"Best change of the target sum ({main})")
    return spider, waterfall, best


def _subject_rows(
    study: Study,
    store: Store,
    main: str,
    best: pd.DataFrame,
    failed: pd.DataFrame,
    *,
    visits: pd.DataFrame,
    lesions: pd.DataFrame,
) -> list[dict[str, Any]]:
    """One row per subject of the study page: best overall response under each criterion,
    the disagreement of conventional and immune criteria, best change, patterns, failures."""
    subjects = store.read_table("subjects")
    best_by = dict(zip(best["subject"], best["best_change_pct"], strict=True))
    pats = store.read_table("patterns")
    flagged: dict[str, set[str]] = {}
    bor: dict[tuple[str, str], str] = {}
    disagree: dict[str, list[str]] = {}
    for rec in pats[pats["flag"] == True].to_dict("records"):  # noqa: E712 (NULL-aware)
        sid, name = str(rec["subject"]), str(rec["pattern"])
        if name.startswith(BEST_PREFIX):
            d = rec["details"] or {}
            shown = str(d.get("best_response", ""))
            if d.get("confirmed_at"):
                shown += f" (confirmed {d['confirmed_at']})"
            bor[sid, name.removeprefix(BEST_PREFIX)] = shown
        elif name.startswith(DISAGREEMENT_PREFIX):
            disagree.setdefault(sid, []).append(str(rec["reason"]))
        else:
            flagged.setdefault(sid, set()).add(name)
    criteria = list(study.criteria or (main,))
    srows = []
    for sid in study.subjects:
        row = subjects[subjects["subject"] == sid]
        srows.append(
            {
                "subject": sid,
                "treatment": row["treatment_agent"].iloc[0] if len(row) else "",
                "visits": int((visits["subject"] == sid).sum()),
                "lesions": int((lesions["subject"] == sid).sum()),
                **{f"best response ({c})": bor.get((sid, c), "") for c in criteria},
                "best change (%)": best_by.get(sid),
                "criteria disagree": "; ".join(disagree.get(sid, [])),
                "patterns": ", ".join(sorted(flagged.get(sid, ()))),
                "failed steps": ", ".join(
                    sorted(set(failed[failed["subject"] == sid]["step"])) if len(failed) else []
                ),
            }
        )
    return srows
