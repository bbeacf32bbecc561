"""The reports of a run: the ``report_subject`` step and :func:`write_reports`.

Both hand :mod:`tumorscope.report` plain values — the output folder, each visit's maps, the
alignment and 19F files — found among the outputs of the earlier steps (``upstream``); the
report itself imports no pipeline.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .. import layout
from ..errors import DataError
from .outdir import check_lock_timeout, check_output_study, lock_output_folder
from .step import Context, StepOutput, Unit, Upstream, _lesion_files, _manifest_file, maps_of_visit

if TYPE_CHECKING:
    from ..io import Study
    from ..study import Store

__all__ = [
    "report_inputs",
    "run_report_subject",
    "run_report_viewer",
    "subject_report",
    "write_reports",
]


def report_inputs(ctx: Context, study: Study, unit: Unit) -> list[Path]:
    """The manifest, the anatomical images and the lesion maps of the subject."""
    files = [_manifest_file(ctx)]
    for visit in study.subjects[unit.subject]:
        anat = visit.series.get("anatomical")
        if anat is not None:
            files.append(anat.path)
        files += _lesion_files(visit)
    return files


def _viewer_files(ctx: Context, subject: str) -> list[Path]:
    """The viewer's page and volumes script that exist (the NiiVue bundle it copies into
    ``report/static`` is shared by all subjects and not an output of one)."""
    from ..report.viewer import viewer_data_path, viewer_path

    files = [viewer_path(ctx.out_dir, subject), viewer_data_path(ctx.out_dir, subject)]
    return [p for p in files if p.exists()]


def _functional_files(ctx: Context, upstream: Upstream) -> list[Path]:
    rels = sorted(rel for outputs in upstream.get("functional", {}).values() for rel in outputs)
    return [ctx.out_dir / rel for rel in rels]


def run_report_viewer(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """The subject's interactive viewer (:func:`tumorscope.report.write_subject_viewer`):
    every map of every visit, placed by the ``functional`` step's registrations. A step of
    its own so that it runs beside ``measure`` and ``assess``, which the subject page
    waits for."""
    from ..report import write_subject_viewer

    s = unit.subject
    maps = {v.id: maps_of_visit(ctx, upstream, s, v.id) for v in study.subjects[s]}
    write_subject_viewer(
        ctx.out_dir, study, s, maps=maps, functional=_functional_files(ctx, upstream)
    )
    return StepOutput(files=_viewer_files(ctx, s))


def run_report_subject(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """The subject's HTML report (:func:`tumorscope.report.write_subject_report`), embedding
    the viewer of the ``report_viewer`` step; without that step in the run (``--steps``)
    the page writes the viewer itself, and the viewer's files are its outputs."""
    own_viewer = "report_viewer" not in upstream
    page = subject_report(ctx, study, unit.subject, upstream, viewer=own_viewer)
    return StepOutput(files=[page, *(_viewer_files(ctx, unit.subject) if own_viewer else [])])


def subject_report(
    ctx: Context, study: Study, subject: str, upstream: Upstream, *, viewer: bool = True
) -> Path:
    """Write a subject's report from the outputs of its earlier steps (``upstream``);
    ``viewer``: write the viewer too (False: the ``report_viewer`` step wrote it)."""
    from ..report import write_subject_report

    maps = {v.id: maps_of_visit(ctx, upstream, subject, v.id) for v in study.subjects[subject]}
    alignments = [
        ctx.out_dir / rel
        for outputs in upstream.get("align", {}).values()
        for rel in sorted(outputs)
        if rel.endswith("_align.json")
    ]
    cells = sorted(
        rel
        for outputs in upstream.get("fluorine", {}).values()
        for rel in outputs
        if rel.endswith("_cells19F.parquet")
    )
    return write_subject_report(
        ctx.out_dir,
        study,
        subject,
        maps=maps,
        alignments=alignments,
        cells19f=[ctx.out_dir / rel for rel in cells],
        functional=_functional_files(ctx, upstream),
        perfusion_rcbv_threshold=ctx.options.perfusion_rcbv_threshold,
        viewer=viewer,
    )


class ReportResult(type(Path())):  # type: ignore[misc]
    """The study report's path, with ``incomplete``: why its results are incomplete."""

    incomplete: str | None

    def __new__(cls, path: Path, incomplete: str | None = None) -> ReportResult:
        self = super().__new__(cls, path)
        self.incomplete = incomplete
        return self


def last_run_unfinished(store: Store) -> str | None:
    """Why the results are incomplete when the last run recorded did not finish (killed,
    interrupted: its ``runs`` row says ``running`` or ``interrupted``), else None."""
    runs = store.read_table("runs")
    if not len(runs):
        return None
    last = runs.sort_values("started_at").iloc[-1]
    status = str(last["status"])
    if status in ("ok", "failed"):
        return None
    how = "was interrupted" if status == "interrupted" else "never recorded its end (killed?)"
    return (
        f"run {last['run_id']} (started {last['started_at']}) {how}: its results are "
        "incomplete; run `tumorscope run` again to finish it"
    )


def write_reports(
    study: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    db_url: str | None = None,
    lock_timeout: float = 0.0,
) -> ReportResult:
    """Write the HTML reports again from the results of earlier runs (nothing is refitted).

    Subject reports are written for the subjects whose ``measure`` step is recorded as done.
    The output folder is locked as a run locks it (:mod:`tumorscope.pipeline.outdir`): the
    reports are not rewritten while a run writes into the folder.

    Parameters
    ----------
    study, out_dir, db_url, lock_timeout
        As for :func:`tumorscope.pipeline.run_study`.

    Returns
    -------
    ReportResult
        The study report, ``<out_dir>/report/index.html`` (a :class:`~pathlib.Path`), and
        ``incomplete``: why the results are incomplete (the last run did not finish, also
        shown on the page), else None.

    Raises
    ------
    DataError
        If the output folder holds no results of a run (no database, or an empty file), the
        results of another study, or results of a later output format. Nothing is written.
    """
    from ..io import open_study
    from ..report import write_study_report
    from ..study import default_url, open_store

    root = Path(study).resolve()
    check_lock_timeout(lock_timeout)
    study_obj = open_study(root)
    out = (Path(out_dir) if out_dir is not None else layout.default_out_dir(root)).resolve()
    url = db_url or default_url(out)
    database = layout.database_path(out)
    if db_url is None and not database.exists():
        raise DataError(
            f"no results here: run `tumorscope run` first ({layout.DATABASE_NAME} is missing)",
            file=out,
        )
    if db_url is None and database.is_file() and database.stat().st_size == 0:
        raise DataError(
            "not the database of a run (an empty file); nothing was written. Run "
            "`tumorscope run` into this folder again to rebuild it",
            file=database,
        )
    # another study's results (or a marker of a later tumorscope): nothing is written
    check_output_study(out, root, study_obj.manifest.name)
    ctx = Context(root, out)
    run_id = "report-" + dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    folder = lock_output_folder(out, run_id=run_id, lock_timeout=lock_timeout)
    store = open_store(url)
    try:
        incomplete = last_run_unfinished(store)
        runs = store.read_table("step_runs", status="done")
        for sid in study_obj.subjects:
            mine = runs[runs["subject"] == sid]
            if "measure" not in set(mine["step"]):
                continue
            upstream: Upstream = {}
            for r in mine.to_dict("records"):
                upstream.setdefault(str(r["step"]), {})[str(r["unit"])] = dict(r["outputs"])
            subject_report(ctx, study_obj, sid, upstream)
        return ReportResult(
            write_study_report(out, study_obj, store, incomplete=incomplete), incomplete
        )
    finally:
        store.close()
        folder.release()
