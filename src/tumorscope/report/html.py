"""Self-contained HTML reports: one per study (``report/index.html``), one per subject.

The subject report is written by the pipeline's ``report_subject`` step on a worker, from the
files the earlier steps wrote (maps, lesion and assessment tables), so it never needs the
database. The study report is written by the client at the end of a run from the database.

Design: Jinja2 templates (``templates/``), matplotlib figures embedded as base64 PNG, tables
sortable by a few lines of inline JavaScript, no external resource at all (the file opens
from disk, offline). Numbers are shown with their units in the column names.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import layout
from ..volume import atomic_write
from .blocks import (
    MAX_SHOWN,
    SHOWN_PARAMETERS,
    frame_of,
    methods_text,
    render,
    shown_maps,
    spider_points,
)

if TYPE_CHECKING:
    import os

    import pandas as pd

    from ..io import Study
    from ..layout import VisitMap
    from ..study import Store

__all__ = [
    "FDM_THRESHOLD",
    "MAX_SHOWN",
    "SHOWN_PARAMETERS",
    "render",
    "write_study_report",
    "write_subject_report",
]

#: ADC change (mm²/s) beyond which a voxel counts as changed in the functional diffusion map
#: (Moffat et al., PNAS 2005, doi:10.1073/pnas.0501532102: 55e-5 mm²/s, the 95 % limit of
#: agreement of repeated ADC in contralateral brain).
FDM_THRESHOLD = 0.55e-3

#: Relaxometry and iron maps shown in a second grid when present (exact ``model.parameter``
#: names of ``fit_relax`` and ``iron``): R2* before ferumoxytol, inversion-recovery T1, T2 and
#: the ferumoxytol ΔR2*. R2* rather than T2* so it reads in the unit of ΔR2*.
RELAX_SHOWN = ("t2star.R2star", "irt1.T1", "t2.T2", "iron.dR2star")


_DIFFUSION_FOR_FDM = ("adc.ADC", "ivim.D", "dki.D")


def _write(path: Path, text: str) -> Path:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def _software() -> pd.DataFrame:
    import importlib.metadata as md

    import pandas as pd

    rows = [("python", platform.python_version())]
    for name in ("tumorscope", "numpy", "scipy", "nibabel", "numba", "pandas", "matplotlib"):
        try:
            rows.append((name, md.version(name)))
        except md.PackageNotFoundError:
            continue
    return pd.DataFrame(rows, columns=["software", "version"])


# ---------------------------------------------------------------------------- subject


def _read_parquet(path: Path) -> pd.DataFrame | None:
    import pandas as pd

    return pd.read_parquet(path) if path.exists() else None


def write_subject_report(
    out_dir: str | os.PathLike[str],
    study: Study,
    subject: str,
    *,
    maps: Mapping[str, Mapping[str, VisitMap]],
    alignments: Sequence[str | os.PathLike[str]] = (),
    cells19f: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Write ``report/sub-<id>.html`` from the files of the earlier steps.

    Parameters
    ----------
    out_dir : path-like
        The output folder of the run (its files: :mod:`tumorscope.layout`).
    study : tumorscope.io.Study
    subject : str
    maps : mapping of visit id to mapping of map name to VisitMap, keyword-only
        The maps of each visit (``{"01": {"ivim.D": (path, status path, unit)}}``,
        :func:`tumorscope.layout.read_map_index`).
    alignments : sequence of path-like, keyword-only
        The visits' alignment files (``align``), in the order they are shown.
    cells19f : sequence of path-like, keyword-only
        The visits' 19F cell tables (``fluorine``).

    Returns
    -------
    Path
    """
    import pandas as pd

    from . import figures

    out_dir = Path(out_dir)
    subj = study.subjects[subject]
    days = {v.id: v.days_on_treatment for v in subj}
    lesions = _read_parquet(layout.lesion_table_path(out_dir, subject))
    tidy = _read_parquet(layout.measurements_path(out_dir, subject))
    assessed = _read_parquet(layout.assessments_path(out_dir, subject))
    main = (study.criteria or ("recist1.1",))[0]
    timeline, flags, atable = _response_section(subject, assessed, days, main)
    flags = _pattern_flags(_read_parquet(layout.patterns_path(out_dir, subject))) + flags
    traj_uri, ltable = _trajectories(lesions, tidy, days)
    mf = _MapFigures.of(subj, maps)
    cells = _cells19f_frame(cells19f)
    from .cest import cest_section

    cest = cest_section(subj, maps, tidy)
    align = _alignment_frame(alignments)
    fdm, fdm_rows, key = _functional_diffusion(subj, mf.per_visit, days)
    fdm_note = (
        f"Voxel-wise change of {key} from baseline in voxels inside the lesions at both visits "
        f"(same grid, no registration); red: increase above {FDM_THRESHOLD:g} mm²/s, blue: "
        f"decrease below −{FDM_THRESHOLD:g} mm²/s, grey: unchanged (Moffat et al. 2005, "
        "doi:10.1073/pnas.0501532102)."
        if key
        else ""
    )
    t = subj.treatment
    html = render(
        "subject.html.j2",
        title=f"{study.name}: subject {subject}",
        treatment=f"{t.agent or 'unknown agent'} from {t.start_date or 'unknown date'}",
        visits=frame_of(_visits_frame(subj)),
        timeline=timeline,
        main_criteria=main,
        assessments=frame_of(atable),
        flags=flags,
        lesions=frame_of(ltable),
        trajectories=traj_uri,
        maps_figure=mf.figure(mf.grid_rows),
        relax_figure=mf.figure(mf.relax_rows),
        alignment=frame_of(align) if align is not None else None,
        cells19f=frame_of(cells[0]) if cells is not None else None,
        cells19f_note=cells[1] if cells is not None else "",
        cest_figure=cest["figure"] if cest else None,
        cest_table=frame_of(cest["table"]) if cest and cest["table"] is not None else None,
        histograms=figures.histograms(mf.hist_values) if mf.hist_values else None,
        fdm=figures.fdm_panels(fdm, threshold=FDM_THRESHOLD) if fdm else None,
        fdm_note=fdm_note,
        fdm_table=frame_of(pd.DataFrame(fdm_rows)) if fdm_rows else None,
        methods=methods_text(mf.provenances) or ["No model was fitted."],
    )
    return _write(layout.subject_report_path(out_dir, subject), html)


def _visits_frame(subj: Any) -> pd.DataFrame:
    """The subject's visits: date, days on treatment, baseline, series."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "visit": v.id,
                "date": v.date.isoformat() if v.date else "",
                "days on treatment": v.days_on_treatment,
                "baseline": v.baseline,
                "pre-baseline": v.prebaseline,
                "series": ", ".join(sorted(v.series)),
            }
            for v in subj
        ]
    )


def _response_section(
    subject: str, assessed: pd.DataFrame | None, days: Mapping[str, Any], main: str
) -> tuple[str | None, list[str], pd.DataFrame | None]:
    """Response timeline (spider plot of the main criteria), flags and the assessment table."""
    from . import figures

    flags: list[str] = []
    if assessed is None or not len(assessed):
        return None, flags, None
    atable = assessed[
        [
            "criteria",
            "visit",
            "response",
            "target_sum_mm",
            "change_from_baseline_pct",
            "change_from_nadir_pct",
            "reason",
        ]
    ].copy()
    atable.insert(2, "days on treatment", [days.get(v) for v in atable["visit"]])
    m = assessed[assessed["criteria"] == main]
    sums = spider_points(subject, m["visit"], [days.get(v) for v in m["visit"]], m)
    timeline = figures.spider_plot(sums, title=f"sub-{subject}: target sum ({main})")
    for rec in assessed.to_dict("records"):
        d = json.loads(rec["details"]) if isinstance(rec.get("details"), str) else {}
        if d.get("iupd_since") and rec["response"] == "iUPD":
            flags.append(
                f"{rec['criteria']} visit {rec['visit']}: unconfirmed progression since "
                f"visit {d['iupd_since']} ({rec['response']}): {rec['reason']}"
            )
        if d.get("new_lesions"):
            flags.append(
                f"{rec['criteria']} visit {rec['visit']}: new lesion(s) "
                f"{d.get('new_lesion_ids', '')}"
            )
    return timeline, flags, atable


def _pattern_flags(patterns: pd.DataFrame | None) -> list[str]:
    """The immunotherapy patterns found, in reverse table order (they lead the flags)."""
    flags: list[str] = []
    if patterns is not None and len(patterns):
        for rec in patterns.to_dict("records"):
            if rec["flag"] is True or rec["flag"] == 1:
                at = f" at visit {rec['visit']}" if rec["visit"] else ""
                flags.insert(0, f"{rec['pattern'].upper()}{at}: {rec['reason']}")
    return flags


def _trajectories(
    lesions: pd.DataFrame | None, tidy: pd.DataFrame | None, days: Mapping[str, Any]
) -> tuple[str | None, pd.DataFrame | None]:
    """Lesion trajectories (size and map means over days) and the lesion table."""
    import pandas as pd

    from . import figures

    if lesions is None or not len(lesions):
        return None, None
    keep = [
        c
        for c in (
            "visit",
            "lesion_id",
            "organ",
            "target",
            "nodal",
            "longest_diameter_mm",
            "short_axis_mm",
            "volume_ml",
        )
        if c in lesions
    ]
    series: dict[str, pd.DataFrame] = {}
    for col in ("longest_diameter_mm", "volume_ml"):
        series[col] = pd.DataFrame(
            {
                "lesion_id": lesions["lesion_id"],
                "days": [days.get(v) for v in lesions["visit"]],
                "value": lesions[col],
            }
        )
    if tidy is not None and len(tidy):
        means = tidy[(tidy["map"] != "") & (tidy["statistic"] == "mean")]
        for name in shown_maps(dict.fromkeys(means["map"]))[:4]:
            g = means[means["map"] == name]
            unit = str(g["unit"].iloc[0]) if len(g) else ""
            series[f"{name} mean ({unit})" if unit else f"{name} mean"] = pd.DataFrame(
                {
                    "lesion_id": g["lesion_id"],
                    "days": [days.get(v) for v in g["visit"]],
                    "value": g["value"],
                }
            )
    return figures.trajectories(series), lesions[keep]


@dataclass
class _MapFigures:
    """The maps of every visit, read once for the map grids, histograms and fDM."""

    grid_rows: list[dict[str, Any]] = field(default_factory=list)
    relax_rows: list[dict[str, Any]] = field(default_factory=list)
    hist_values: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    per_visit: dict[str, dict[str, Any]] = field(default_factory=dict)
    limits: dict[str, tuple[float, float]] = field(default_factory=dict)
    provenances: list[dict[str, Any]] = field(default_factory=list)
    units: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, subj: Any, maps: Mapping[str, Mapping[str, VisitMap]]) -> _MapFigures:
        out = cls()
        for v in subj:
            out._add_visit(v, maps.get(v.id, {}))
        return out

    def figure(self, rows: list[dict[str, Any]]) -> str | None:
        """A map grid (rows: visits) with one display range per map for all visits."""
        from . import figures

        return figures.map_grid(rows, units=self.units, limits=self.limits) if rows else None

    def _add_visit(self, v: Any, vmaps: Mapping[str, VisitMap]) -> None:
        from ..files import read_sidecar
        from ..volume import Volume

        main_names = shown_maps(vmaps)
        relax_names = [k for k in RELAX_SHOWN if k in vmaps]
        shown = {k: vmaps[k][0] for k in [*main_names, *relax_names]}
        if not shown:
            return
        labels = v.lesions.load_labels().data if v.lesions is not None else None
        arrays = {k: Volume.from_nifti(p).data for k, p in shown.items()}
        for k, p in shown.items():
            meta = read_sidecar(p)
            if meta:
                self.units[k] = str(meta.get("Units", ""))
                self.provenances.append(meta.get("Provenance") or {})
        anat = v.series["anatomical"].load().data if "anatomical" in v.series else None
        z = arrays[next(iter(arrays))].shape[2] // 2
        if labels is not None and labels.any():
            z = int(np.argmax((labels > 0).sum(axis=(0, 1))))
        self._add_limits(arrays, labels)
        self.per_visit[v.id] = {"arrays": arrays, "labels": labels}
        for names, rows in ((main_names, self.grid_rows), (relax_names, self.relax_rows)):
            if names:
                rows.append(
                    {
                        "label": f"visit {v.id}, z={z}",
                        "anatomical": None if anat is None else anat[:, :, z],
                        "maps": {k: arrays[k][:, :, z] for k in names},
                        "labels": None if labels is None else labels[:, :, z],
                    }
                )
        if labels is not None:
            for k in _DIFFUSION_FOR_FDM:
                if k in arrays:
                    self.hist_values.setdefault(k, {})[v.id] = arrays[k][labels > 0]

    def _add_limits(self, arrays: Mapping[str, np.ndarray], labels: np.ndarray | None) -> None:
        """Display range of each map from its first visit: 1st-99th percentile in the lesions."""
        for k, a in arrays.items():
            if k not in self.limits:
                ref = a[labels > 0] if labels is not None and labels.any() else a
                ref = ref[np.isfinite(ref)]
                if ref.size:
                    lo, hi = np.percentile(ref, [1, 99])
                    pad = 0.5 * (hi - lo)
                    self.limits[k] = (max(float(lo - pad), 0.0), float(hi + pad))


def _functional_diffusion(
    subj: Any, per_visit: Mapping[str, Mapping[str, Any]], days: Mapping[str, Any]
) -> tuple[list[tuple[np.ndarray, np.ndarray, str]], list[dict[str, Any]], str | None]:
    """Functional diffusion maps against baseline: panels, table rows and the map used."""
    fdm: list[tuple[np.ndarray, np.ndarray, str]] = []
    fdm_rows: list[dict[str, Any]] = []
    base = subj.baseline.id
    key = next(
        (k for k in _DIFFUSION_FOR_FDM if base in per_visit and k in per_visit[base]["arrays"]),
        None,
    )
    if key is None or per_visit[base]["labels"] is None:
        return fdm, fdm_rows, key
    b_arr, b_lab = per_visit[base]["arrays"][key], per_visit[base]["labels"]
    for v in subj:
        pv = per_visit.get(v.id)
        if v.id == base or pv is None or pv["labels"] is None or key not in pv["arrays"]:
            continue
        if pv["arrays"][key].shape != b_arr.shape:
            continue
        inside = (b_lab > 0) & (pv["labels"] > 0)
        inside &= np.isfinite(b_arr) & np.isfinite(pv["arrays"][key])
        delta = pv["arrays"][key] - b_arr
        n = int(inside.sum())
        if n == 0:
            continue
        up = int((inside & (delta > FDM_THRESHOLD)).sum())
        down = int((inside & (delta < -FDM_THRESHOLD)).sum())
        z = int(np.argmax(inside.sum(axis=(0, 1))))
        fdm.append((delta[:, :, z], inside[:, :, z], f"visit {v.id} vs {base}, z={z}"))
        fdm_rows.append(
            {
                "visit": v.id,
                "days on treatment": days.get(v.id),
                "voxels": n,
                "increased (%)": 100.0 * up / n,
                "decreased (%)": 100.0 * down / n,
                "unchanged (%)": 100.0 * (n - up - down) / n,
            }
        )
    return fdm, fdm_rows, key


def _alignment_frame(files: Sequence[str | os.PathLike[str]]) -> pd.DataFrame | None:
    """Motion of each series against the anatomical image (the ``align`` step), all visits."""
    import pandas as pd

    rows = []
    for path in files:
        rows += json.loads(Path(path).read_text())
    if not rows:
        return None
    t = pd.DataFrame(rows).sort_values(["visit", "series"], kind="stable")
    return pd.DataFrame(
        {
            "visit": t["visit"],
            "series": t["series"],
            "status": t["status"],
            "lesion motion, mean (mm)": t["mean_displacement_mm"],
            "max (mm)": t["max_displacement_mm"],
            "rotation (deg)": t["rotation_deg"],
            "tolerance (mm)": t["tolerance_mm"],
            "masks moved": t["applied"],
            "note": t["reason"].fillna(""),
        }
    )


def _cells19f_frame(
    files: Sequence[str | os.PathLike[str]],
) -> tuple[pd.DataFrame, str] | None:
    """The 19F cell counts of the ``fluorine`` step (all visits) for the report, and a note."""
    import pandas as pd

    if not files:
        return None
    t = pd.concat([pd.read_parquet(p) for p in files], ignore_index=True)
    if t.empty:
        return None
    table = pd.DataFrame(
        {
            "visit": t["visit"],
            "lesion": t["lesion_id"],
            "status": t["status"],
            "cells": t["cells"],
            "cells SE": t["cells_se"],
            "detection limit (cells/voxel)": t["cells_detection_limit"],
            "voxels above threshold": t["n_detected"],
            "voxels": t["n_voxels"],
        }
    )
    first = t.iloc[0]
    note = (
        "Labelled cells per lesion from the 19F image, calibrated on the reference tubes "
        "(Srinivas et al., Magn Reson Med 2007, doi:10.1002/mrm.21352): only voxels above a "
        "Rician detection threshold (1 % family-wise false-positive rate per lesion) count, "
        "after Rician bias correction; a lesion with none is reported as below detection with "
        "the number of cells one voxel must hold to be detected. Noise σ "
        f"{float(first['noise_sigma']):.3g} (a.u.) from {first['background']}; "
        f"{float(first['fluorine_per_cell']):.3g} 19F atoms per cell."
    )
    return table, note


# ---------------------------------------------------------------------------- study


def target_sums(store: Store, criteria: str) -> pd.DataFrame:
    """Per subject and visit: days on treatment, change of the target sum, response."""
    import pandas as pd

    a = store.read_table("assessments", criteria=criteria)
    v = store.read_table("visits")[["subject", "visit", "days_on_treatment"]]
    if a.empty:
        return pd.DataFrame(columns=["subject", "visit", "days", "change_pct", "response"])
    m = a.merge(v, on=["subject", "visit"], how="left")
    return spider_points(m["subject"], m["visit"], m["days_on_treatment"], m)


def write_study_report(out_dir: str | os.PathLike[str], study: Study, store: Store) -> Path:
    """Write ``report/index.html`` from the database.

    Parameters
    ----------
    out_dir : path-like
        The output folder of the run.
    study : tumorscope.io.Study
    store : tumorscope.study.Store

    Returns
    -------
    Path
    """
    import pandas as pd

    main = (study.criteria or ("recist1.1",))[0]
    visits = store.read_table("visits")
    lesions = store.read_table("lesions")
    maps = store.read_table("maps")
    steps = store.read_table("step_runs")
    assessments = store.read_table("assessments")

    spider, waterfall, best = _response_figures(target_sums(store, main), visits, main)
    failed = steps[steps["status"] == "failed"] if len(steps) else steps
    srows = _subject_rows(study, store, main, best, failed)
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
        spider=spider,
        waterfall=waterfall,
        main_criteria=main,
        not_wired=not_wired,
        assessments=frame_of(atable),
        failures=frame_of(ftable),
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
    if len(after):
        idx = after.groupby("subject")["change_pct"].idxmin()
        best = after.loc[idx, ["subject", "change_pct", "response"]].rename(
            columns={"change_pct": "best_change_pct"}
        )
        waterfall = figures.waterfall_plot(best, title=f"Best change of the target sum ({main})")
    return spider, waterfall, best


def _subject_rows(
    study: Study, store: Store, main: str, best: pd.DataFrame, failed: pd.DataFrame
) -> list[dict[str, Any]]:
    """One row per subject of the study page: last and best response, patterns, failures."""
    subjects = store.read_table("subjects")
    visits = store.read_table("visits")
    lesions = store.read_table("lesions")
    assessments = store.read_table("assessments")
    last = {}
    if len(assessments):
        m = assessments[assessments["criteria"] == main].merge(
            visits[["subject", "visit", "days_on_treatment"]], on=["subject", "visit"]
        )
        for s, g in m.sort_values("days_on_treatment").groupby("subject"):
            last[s] = g["response"].iloc[-1]
    best_by = dict(zip(best["subject"], best["best_change_pct"], strict=True))
    pats = store.read_table("patterns")
    flagged: dict[str, set[str]] = {}
    for rec in pats[pats["flag"] == True].to_dict("records"):  # noqa: E712 (NULL-aware)
        flagged.setdefault(str(rec["subject"]), set()).add(str(rec["pattern"]))
    srows = []
    for sid in study.subjects:
        row = subjects[subjects["subject"] == sid]
        srows.append(
            {
                "subject": sid,
                "treatment": row["treatment_agent"].iloc[0] if len(row) else "",
                "visits": int((visits["subject"] == sid).sum()),
                "lesions": int((lesions["subject"] == sid).sum()),
                f"last response ({main})": last.get(sid, ""),
                "best change (%)": best_by.get(sid),
                "patterns": ", ".join(sorted(flagged.get(sid, ()))),
                "failed steps": ", ".join(
                    sorted(set(failed[failed["subject"] == sid]["step"])) if len(failed) else []
                ),
            }
        )
    return srows
