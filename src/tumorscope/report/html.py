"""Self-contained HTML reports: one per study (``report/index.html``), one per subject.

The subject report is written by the pipeline's ``report_subject`` step on a worker, from the
files the earlier steps wrote (maps, lesion and assessment tables), so it never needs the
database. The study report is written by the client at the end of a run from the database.

Design: Jinja2 templates (``templates/``), figures embedded as SVG ``data:`` URIs, tables
sortable by a few lines of inline JavaScript, no external resource at all (the file opens
from disk, offline). Numbers are shown with their units in the column names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from markupsafe import Markup

from .. import layout
from ..volume import atomic_write
from . import reads
from .blocks import (
    BEST_PREFIX,
    DISAGREEMENT_PREFIX,
    MAX_SHOWN,
    SHOWN_PARAMETERS,
    frame_of,
    methods_text,
    render,
    shown_maps,
    spider_points,
)
from .sections import SubjectContext, subject_sections
from .study import write_study_report
from .viewer import viewer_path, write_viewer

if TYPE_CHECKING:
    import os

    import pandas as pd

    from ..io import Study
    from ..layout import VisitMap

__all__ = [
    "FDM_THRESHOLD",
    "MAX_SHOWN",
    "SHOWN_PARAMETERS",
    "render",
    "write_study_report",
    "write_subject_report",
]

#: Published voxel-wise repeatability of ADC (mm²/s): 55e-5 mm²/s, the 95 % limit of agreement
#: of repeated ADC in contralateral brain (Moffat et al., PNAS 2005,
#: doi:10.1073/pnas.0501532102). The ``functional`` step uses it (``pipeline.functional.
#: PUBLISHED_RC``) when a study has no test–retest visits.
FDM_THRESHOLD = 0.55e-3

#: Relaxometry and iron maps shown in a second grid when present (exact ``model.parameter``
#: names of ``fit_relax`` and ``iron``): R2* before ferumoxytol, inversion-recovery T1, T2 and
#: the ferumoxytol ΔR2*. R2* rather than T2* so it reads in the unit of ΔR2*.
RELAX_SHOWN = ("t2star.R2star", "irt1.T1", "t2.T2", "iron.dR2star")


_DIFFUSION_FOR_FDM = ("adc.ADC", "ivim.D", "dki.D")  # their histograms are shown


def _write(path: Path, text: str) -> Path:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


# ---------------------------------------------------------------------------- subject


def _read_parquet(path: Path) -> pd.DataFrame | None:
    return reads.parquet(path)


def write_subject_report(
    out_dir: str | os.PathLike[str],
    study: Study,
    subject: str,
    *,
    maps: Mapping[str, Mapping[str, VisitMap]],
    alignments: Sequence[str | os.PathLike[str]] = (),
    cells19f: Sequence[str | os.PathLike[str]] = (),
    functional: Sequence[str | os.PathLike[str]] = (),
    perfusion_rcbv_threshold: float = 1.75,
    viewer: bool = True,
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
    functional : sequence of path-like, keyword-only
        The files of the ``functional`` step (its table, thresholds and label maps).
    perfusion_rcbv_threshold : float, keyword-only
        The rCBV threshold shown in the DSC section (:mod:`tumorscope.report.dsc`).
    viewer : bool, default True, keyword-only
        Write the subject's viewer too. False: it was written by
        :func:`write_subject_viewer` (the pipeline's ``report_viewer`` step, which runs
        beside ``measure`` and ``assess``); the page embeds it if it exists.

    Returns
    -------
    Path
    """

    with reads.once():  # the maps, labels and tables several blocks show: read once
        return _subject_page(
            Path(out_dir),
            study,
            subject,
            maps=maps,
            alignments=alignments,
            cells19f=cells19f,
            functional=functional,
            perfusion_rcbv_threshold=perfusion_rcbv_threshold,
            own_viewer=viewer,
        )


def write_subject_viewer(
    out_dir: str | os.PathLike[str],
    study: Study,
    subject: str,
    *,
    maps: Mapping[str, Mapping[str, VisitMap]],
    functional: Sequence[str | os.PathLike[str]] = (),
) -> Path | None:
    """Write the subject's viewer alone (:func:`tumorscope.report.viewer.write_viewer`): what
    the subject page would write, from the maps and the ``functional`` step's
    registrations only, so that it can be written before the response is assessed.

    Parameters are those of :func:`write_subject_report`. Returns the viewer page, or None
    when no visit has an image to show.
    """
    with reads.once():
        return write_viewer(
            Path(out_dir), study, subject, maps=maps, registrations=_registrations(functional)
        )


def _subject_page(
    out_dir: Path,
    study: Study,
    subject: str,
    *,
    maps: Mapping[str, Mapping[str, VisitMap]],
    alignments: Sequence[str | os.PathLike[str]],
    cells19f: Sequence[str | os.PathLike[str]],
    functional: Sequence[str | os.PathLike[str]],
    perfusion_rcbv_threshold: float,
    own_viewer: bool = True,
) -> Path:
    from . import figures
    from .diffusion import TENSOR_NOTE, tensor_rgb_figure

    subj = study.subjects[subject]
    days = {v.id: v.days_on_treatment for v in subj}
    lesions = _read_parquet(layout.lesion_table_path(out_dir, subject))
    tidy = _read_parquet(layout.measurements_path(out_dir, subject))
    assessed = _read_parquet(layout.assessments_path(out_dir, subject))
    main = (study.criteria or ("recist1.1",))[0]
    timeline, flags, atable = _response_section(subject, assessed, days, main)
    patterns = _read_parquet(layout.patterns_path(out_dir, subject))
    flags = _pattern_flags(patterns) + flags
    best, disagree = _best_responses(patterns)
    traj_uri, ltable = _trajectories(lesions, tidy, days)
    mf = _MapFigures.of(subj, maps)
    cells = _cells19f_frame(cells19f)
    align = _alignment_frame(alignments)
    fdm, fdm_table, fdm_note = _functional_section(functional, days)
    t = subj.treatment
    ctx = SubjectContext(
        out_dir,
        study,
        subject,
        maps,
        days,
        {"fluorine": list(cells19f)},
        options={"perfusion_rcbv_threshold": perfusion_rcbv_threshold},
    )
    # the sections before the viewer: the maps they read (CEST, DSC) are kept for it
    sections = [Markup(b) for b in subject_sections(ctx)]
    if own_viewer:
        viewer = write_viewer(
            out_dir,
            study,
            subject,
            maps=maps,
            registrations=_registrations(functional),
            loaded=mf.volumes,
        )
    else:  # written beforehand (write_subject_viewer)
        written = viewer_path(out_dir, subject)
        viewer = written if written.exists() else None
    html = render(
        "subject.html.j2",
        title=f"{study.name}: subject {subject}",
        treatment=f"{t.agent or 'unknown agent'} from {t.start_date or 'unknown date'}",
        visits=frame_of(_visits_frame(subj)),
        timeline=timeline,
        main_criteria=main,
        assessments=frame_of(atable),
        best=frame_of(best),
        disagreements=disagree,
        flags=flags,
        lesions=frame_of(ltable),
        trajectories=traj_uri,
        maps_figure=mf.figure(mf.grid_rows),
        relax_figure=mf.figure(mf.relax_rows),
        tensor_figure=tensor_rgb_figure(maps),
        tensor_note=TENSOR_NOTE,
        alignment=frame_of(align) if align is not None else None,
        cells19f=frame_of(cells[0]) if cells is not None else None,
        cells19f_note=cells[1] if cells is not None else "",
        histograms=figures.histograms(mf.hist_values) if mf.hist_values else None,
        fdm=fdm,
        fdm_note=fdm_note,
        fdm_table=frame_of(fdm_table),
        methods=methods_text(mf.provenances) or ["No model was fitted."],
        viewer=viewer.name if viewer is not None else None,
        sections=sections,
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


def _best_responses(patterns: pd.DataFrame | None) -> tuple[pd.DataFrame | None, list[str]]:
    """Best overall response per criterion (a table) and the criteria's disagreements."""
    import pandas as pd

    if patterns is None or not len(patterns):
        return None, []
    rows, disagree = [], []
    for rec in patterns.to_dict("records"):
        name = str(rec["pattern"])
        d = json.loads(rec["details"]) if isinstance(rec.get("details"), str) else {}
        if name.startswith(BEST_PREFIX):
            rows.append(
                {
                    "criteria": name.removeprefix(BEST_PREFIX),
                    "best overall response": d.get("best_response", ""),
                    "visit": d.get("visit", ""),
                    "confirmed at": d.get("confirmed_at", ""),
                    "confirmation rule": d.get("confirmation", ""),
                    "reason": rec["reason"],
                }
            )
        elif name.startswith(DISAGREEMENT_PREFIX) and rec["flag"] in (True, 1):
            disagree.append(str(rec["reason"]))
    return (pd.DataFrame(rows) if rows else None), disagree


def _pattern_flags(patterns: pd.DataFrame | None) -> list[str]:
    """The immunotherapy patterns found, in reverse table order (they lead the flags)."""
    flags: list[str] = []
    if patterns is not None and len(patterns):
        for rec in patterns.to_dict("records"):
            if str(rec["pattern"]).startswith((BEST_PREFIX, DISAGREEMENT_PREFIX)):
                continue
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
    volumes: dict[str, dict[str, Any]] = field(default_factory=dict)  # visit -> name -> Volume
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

        main_names = shown_maps(vmaps)
        relax_names = [k for k in RELAX_SHOWN if k in vmaps]
        shown = {k: vmaps[k][0] for k in [*main_names, *relax_names]}
        if not shown:
            return
        lab = reads.labels(v)
        labels = None if lab is None else lab.data
        volumes = {k: reads.volume(p) for k, p in shown.items()}
        self.volumes[v.id] = volumes  # the viewer shows them too: read once
        arrays = {k: vol.data for k, vol in volumes.items()}
        for k, p in shown.items():
            meta = read_sidecar(p)
            if meta:
                self.units[k] = str(meta.get("Units", ""))
                self.provenances.append(meta.get("Provenance") or {})
        anat_vol = reads.anatomical(v)
        anat = None if anat_vol is None else anat_vol.data
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


def _registrations(files: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """Each follow-up's registration to baseline, from the ``functional`` step's JSON."""
    for f in files:
        p = Path(f)
        if p.name.endswith("_functional.json"):
            return dict(json.loads(p.read_text()).get("registrations", {}))
    return {}


def _functional_section(
    files: Sequence[str | os.PathLike[str]], days: Mapping[str, Any]
) -> tuple[str | None, pd.DataFrame | None, str]:
    """Functional diffusion / parametric response maps of the ``functional`` step: panels
    (one per follow-up, the slice with most assessed voxels), the table of fractions and
    lesion-level changes, and a note naming each threshold and its source."""
    import pandas as pd

    from ..volume import Volume
    from . import figures

    paths = [Path(f) for f in files]
    tables = [p for p in paths if p.name.endswith("_functional.parquet")]
    if not tables:
        return None, None, ""
    t = pd.read_parquet(tables[0])
    meta_path = tables[0].with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    thr = meta.get("thresholds", {})
    note = " ".join(
        f"{name}: threshold {v['threshold']:.3g} ({v['source']})." for name, v in thr.items()
    )
    note += "".join(f" {n}." for n in meta.get("notes", []))
    if t.empty:
        return None, None, note
    fdm = t[t["map"].str.startswith("fdm:")]
    wide = fdm.pivot_table(
        index=["visit", "lesion_id", "map"], columns="statistic", values="value", aggfunc="first"
    ).reset_index()
    delta = t[t["statistic"].isin(["delta_mean", "delta_mean_pct", "delta_call"])]
    dw = delta.pivot_table(
        index=["visit", "lesion_id", "map"], columns="statistic", values="value", aggfunc="first"
    ).reset_index()
    dw["map"] = "fdm:" + dw["map"]
    table = wide.merge(dw, on=["visit", "lesion_id", "map"], how="left")
    calls = {1.0: "increase", -1.0: "decrease", 0.0: "no change"}
    out = pd.DataFrame(
        {
            "visit": table["visit"],
            "days on treatment": [days.get(v) for v in table["visit"]],
            "lesion": table["lesion_id"],
            "map": table["map"].str.removeprefix("fdm:"),
            "voxels": table.get("n_voxels"),
            "increased (%)": 100.0 * table.get("increased_fraction", np.nan),
            "decreased (%)": 100.0 * table.get("decreased_fraction", np.nan),
            "unchanged (%)": 100.0 * table.get("unchanged_fraction", np.nan),
            "threshold": table.get("threshold"),
            "Δ mean": table.get("delta_mean"),
            "Δ mean (%)": table.get("delta_mean_pct"),
            "lesion change beyond RC": [
                calls.get(c, "") for c in table.get("delta_call", [np.nan] * len(table))
            ],
        }
    )
    panels = []
    for p in sorted(x for x in paths if x.name.endswith(".nii.gz") and "_fdm-" in x.name):
        lab = np.asarray(Volume.from_nifti(p).data)
        if not (lab > 0).any():
            continue
        z = int(np.argmax((lab > 0).sum(axis=(0, 1))))
        sl = lab[:, :, z]
        surrogate = np.where(sl == 2, 2.0, np.where(sl == 3, -2.0, 0.0))
        visit = p.name.split("_ses-")[1].split("_")[0]
        panels.append((surrogate, sl > 0, f"visit {visit}, {p.name.split('_fdm-')[1][:-7]}, z={z}"))
    uri = figures.fdm_panels(panels, threshold=1.0) if panels else None
    return uri, out, note


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
