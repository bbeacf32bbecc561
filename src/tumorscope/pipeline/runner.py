"""Run the pipeline over a study: :func:`run_study`.

How a run goes
--------------
1. ``open_study`` checks the manifest and folders (a broken manifest stops the run: nothing
   is written). The output folder is claimed (:mod:`.outdir`): it must be new, empty or a
   tumorscope output (else nothing is written), and it is locked for the whole run (a second
   run on it exits or waits). Under the lock, tumorscope's own temporary files that a killed
   run left are removed (``.tumorscope-tmp-*``, in the folders of the output layout only).
2. For every subject the steps of :data:`tumorscope.pipeline.steps.STEPS` run in order
   (:func:`~.execute.execute_subject`), in the calling process (serial), on a local Dask cluster
   (``workers=N``) or an existing one (``scheduler="tcp://…"``) as one task per subject. For
   each unit of work (a step on a subject or visit) the worker hashes the inputs, compares
   with the memory the client sent along, and either skips the unit (up to date) or runs it.
3. The client records each unit's outcome — its rows and its ``step_runs`` memory — in one
   database transaction. Only the client writes to the database.
4. A unit that fails is recorded as failed with its reason (the file and field when the error
   names them); the later steps of that subject do not run; other subjects go on.
5. Finally the tables are exported (Parquet and CSV) and the study report is written.

Up to date means: the last record of the unit says ``done``, its input hash (input files'
content, step version, options, the output hashes of the steps it reads) is unchanged, and
every file it wrote still has the recorded content hash. ``force=("fit_dwi",)`` redoes every
unit of a step; the steps after it run again only if its outputs changed.

Interrupting a run (Ctrl-C, a killed process) loses at most the units in flight: their files
are written atomically (temporary name, then rename) and their rows were never committed; the
next run redoes exactly them.

The parts of a run, by module: :mod:`.execute` (worker side: a unit, a subject, up to date),
:mod:`.executor` (serial or Dask), :mod:`.record` (the database, on the client),
:mod:`.outdir` (the output folder: marker, lock, clean-up), :mod:`.progress` (bars),
:mod:`.summary` (:class:`RunSummary`), :mod:`.logs`, :mod:`.options`
(:class:`~.options.RunOptions`); this module plans the run and ties them together.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__, layout
from ..errors import DataError, StudyError, TumorscopeError
from ..owned import check_outside
from .checks import check_aif_file, check_scheduler, check_sqlite_url, check_workers, disk_errors
from .execute import execute_subject, execute_unit, memory_budget, step_concurrency
from .executor import Executor, run_subjects
from .logs import attach_log, detach_log, log
from .options import RunOptions, resolve_options
from .outdir import (
    check_lock_timeout,
    check_output_study,
    claim_output_folder,
    sweep_temporaries,
)
from .progress import Bars
from .record import Recorder, publish
from .reporting import write_reports
from .step import Context, Step, Unit
from .steps import STEPS
from .summary import Failure, Outcome, RunSummary, SummaryPrinter

if TYPE_CHECKING:
    from rich.console import Console

    from ..io import Study
    from ..study import Store

__all__ = [
    "Failure",
    "Outcome",
    "RunOptions",
    "RunSummary",
    "SummaryPrinter",
    "execute_subject",
    "execute_unit",
    "run_study",
    "write_reports",
]


#: What the client imports to write the study report (:func:`.record.publish`).
_STUDY_REPORT_MODULES = (
    "tumorscope.report.study",
    "tumorscope.report.figures",
)


def _preload(modules: tuple[str, ...]) -> None:
    """Import ``modules`` in a background thread (a Dask run's client waits for its workers;
    the study report's imports, ~1 s, are then done when it comes). A module that cannot be
    imported is left for its user to report."""
    import importlib
    import threading

    def load() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # reported by the code that needs it
                continue

    threading.Thread(target=load, name="tumorscope-preload", daemon=True).start()


def _plan_order(summary: RunSummary, plan: Mapping[str, list[tuple[Step, list[Unit]]]]) -> None:
    """The summary's units in plan order (subjects, then steps, then visits), whatever order
    they finished in (subjects on Dask workers, two units of a subject at once)."""
    rank = {
        f"{u.step} {u.key}": i
        for i, u in enumerate(u for items in plan.values() for _, units in items for u in units)
    }
    last = len(rank)
    for labels in (summary.done, summary.skipped, summary.blocked):
        labels.sort(key=lambda label: rank.get(label, last))
    summary.failed.sort(key=lambda f: rank.get(f"{f.step} {f.unit}", last))


def run_study(
    study: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    db_url: str | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    force: Sequence[str] = (),
    steps: Sequence[str] | None = None,
    options: RunOptions | Mapping[str, Any] | None = None,
    report: bool = True,
    progress: bool = False,
    console: Console | None = None,
    adopt_folder: bool = False,
    lock_timeout: float = 0.0,
    executor: Executor | None = None,
    close_executor: bool = False,
    preflight: bool = True,
) -> RunSummary:
    """Run the whole analysis of a study: fits, lesion measurements, response, report.

    Parameters
    ----------
    study : path-like
        The study folder (holding ``study.yaml``).
    out_dir : path-like, optional
        Where results go (default: ``<study>/derivatives/tumorscope``). Created if missing.
    db_url : str, optional
        Database URL (default: ``sqlite:///<out_dir>/tumorscope.sqlite``).
    workers : int, optional
        Run on a local Dask cluster of this many worker processes (at least 1; None: serially,
        in this process).
    scheduler : str, optional
        Run on an existing Dask cluster (``tcp://host:port``); overrides ``workers``.
    force : sequence of str
        Steps to redo even if up to date (names of :data:`~tumorscope.pipeline.steps.STEPS`,
        or ``"report"``).
    steps : sequence of str, optional
        Run only these steps (default: all). A step whose required steps are left out runs
        without their outputs (e.g. ``measure`` without ``fit_dce`` measures only geometry
        and the diffusion maps).
    options : RunOptions or mapping, optional
        Run options (:class:`~tumorscope.pipeline.options.RunOptions`). A mapping sets some of
        them by name over the ``options:`` of ``study.yaml``, over the defaults; a
        ``RunOptions`` is used as it is.
    report : bool, default True
        Write the HTML reports (``report_subject`` and the study report). The tables are
        exported (Parquet and CSV, ``<out_dir>/tables``) in any case.
    progress : bool, default False
        Show Rich progress bars (subjects and units).
    console : rich.console.Console, optional
        Where progress bars and messages about the output folder go.
    adopt_folder : bool, default False
        Write into ``out_dir`` even if it is a non-empty folder that is not a tumorscope
        output (no ``.tumorscope-output.json``); tumorscope removes none of its files.
    lock_timeout : float, default 0
        Seconds to wait for another run that holds ``out_dir`` (0: fail at once).
    executor : Executor, optional
        An executor started by the caller (``tumorscope demo`` starts its workers while it
        writes the phantom); used instead of ``workers`` and ``scheduler``, and left open
        unless ``close_executor``.
    close_executor : bool, default False
        Close the given ``executor`` too: as for one started here, its workers are stopped
        as soon as the subjects are done, while the tables and the study report are written
        (:meth:`~.executor.Executor.close_soon`), and the run returns when they have stopped.
    preflight : bool, default True
        Check every visit's sidecars, lesion tables and image headers before anything is
        written (:func:`tumorscope.io.preflight.metadata_problems`; the image data are
        checked per subject by the ``register`` step). ``tumorscope demo`` turns it off for
        a study it has just written or validated.

    Returns
    -------
    RunSummary
        What ran, what was up to date, what failed and why; ``exit_code`` is 1 if anything
        failed.

    Raises
    ------
    StudyError
        If the manifest or folder structure is broken, or (``preflight``) a sidecar, lesion
        table or image header of any visit is (every such error listed; nothing is written).
    DataError
        If ``out_dir`` is not empty and not a tumorscope output (without ``adopt_folder``),
        or another run holds it past ``lock_timeout`` (naming the holder): nothing is
        written. For unusable options (an unknown step in ``force``, an unknown or bad run
        option, in ``options`` or in ``study.yaml``, no Dask).
    ExportError
        If the database cannot be opened.
    """
    from ..io import open_study
    from ..study import check_url
    from ..volume import max_image_bytes

    root = Path(study).resolve()
    check_workers(workers)
    if scheduler is not None:
        check_scheduler(scheduler)
    check_lock_timeout(lock_timeout)
    if db_url is not None:
        check_url(db_url)  # an unsupported database stops the run before anything is written
    study_obj = open_study(root)
    out = (Path(out_dir) if out_dir is not None else layout.default_out_dir(root)).resolve()
    # not the study, nor inside it but below derivatives/ (tumorscope.owned.check_outside)
    check_outside(out, root, what="the study", option="--out", study=True)
    if db_url is not None:
        check_sqlite_url(db_url, out)  # a file, in a folder that exists (or is out)
    wanted = _wanted_steps(force, steps, report)
    implied = _implied_register(wanted, steps)
    opts = resolve_options(options, study_obj.manifest.options)
    check_aif_file(opts.dce_aif)
    ctx = Context(root, out, opts)
    step_concurrency(None)  # a bad TUMORSCOPE_STEP_CONCURRENCY stops the run here
    memory_budget()  # and a bad TUMORSCOPE_MEMORY_BUDGET, before anything is written
    max_image_bytes()  # and a bad TUMORSCOPE_MAX_IMAGE_BYTES
    # another study's results: stop (a moved study is recognised by its name)
    moved = check_output_study(out, root, study_obj.manifest.name)
    if preflight:
        _preflight(study_obj)

    given = executor
    if executor is None:
        # a local cluster starts in the background while this process claims the folder,
        # opens the database, imports the steps and plans the study (~1.6 s on 24 subjects),
        # and is warmed up there as `tumorscope run --workers` warms its own (the workers
        # import the steps' modules and share the numba kernels' loading or compilation)
        local = bool(workers) and not scheduler
        executor = Executor(workers=workers, scheduler=scheduler, background=True, warm=local)
    try:
        return disk_errors(out, _run)(
            study_obj,
            out,
            ctx,
            wanted,
            opts,
            db_url=db_url,
            executor=executor,
            owned=executor is not given or close_executor,
            run_options={"workers": workers, "scheduler": scheduler, "force": list(force)},
            notes=[m for m in (moved, implied) if m],
            force=force,
            progress=progress,
            console=console,
            adopt_folder=adopt_folder,
            lock_timeout=lock_timeout,
        )
    finally:
        if executor is not given or close_executor:
            executor.close()  # (idempotent) also when the folder could not be claimed


def _preflight(study_obj: Study) -> None:
    """Every error of the study's sidecars, lesion tables and image headers, before the
    output folder is touched (:mod:`tumorscope.io.preflight`): exit 2, nothing written."""
    from ..io.preflight import metadata_problems

    errors = metadata_problems(study_obj)
    if errors:
        raise StudyError(
            errors,
            file=study_obj.root / "study.yaml",
            note="nothing was written (`tumorscope validate STUDY` lists every problem, "
            "the image data's too)",
        )


def _run(
    study_obj: Study,
    out: Path,
    ctx: Context,
    wanted: set[str],
    opts: RunOptions,
    *,
    db_url: str | None,
    executor: Executor,
    owned: bool,
    run_options: dict[str, Any],
    force: Sequence[str],
    progress: bool,
    console: Console | None,
    adopt_folder: bool,
    lock_timeout: float,
    notes: Sequence[str] = (),
) -> RunSummary:
    """:func:`run_study` once its arguments are checked and its executor is starting: the
    folder claimed, the database opened, the subjects run, the tables published."""
    from ..study import default_url, open_store

    root = ctx.study_root
    run_id = dt.datetime.now().strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    said: list[str] = []
    for msg in notes:
        _say(msg, said, console)
    folder = claim_output_folder(
        out,
        run_id=run_id,
        study=root,
        study_name=study_obj.manifest.name,
        adopt=adopt_folder,
        lock_timeout=lock_timeout,
        say=lambda msg: _say(msg, said, console),
    )
    try:
        log_file = layout.log_path(out, run_id)
        url = db_url or default_url(out)
        summary = RunSummary(run_id, out, url, log_file, n_subjects=len(study_obj))
        handler = attach_log(log_file)
        t0 = time.perf_counter()
        try:
            store = open_store(url)
        except BaseException:
            detach_log(handler)
            raise
        status = "interrupted"
        try:
            log.info("tumorscope %s: run %s of %s into %s", __version__, run_id, root, out)
            for msg in said:
                log.info("%s", msg)
            n_tmp = sweep_temporaries(out)
            if n_tmp:
                log.info("removed %d temporary file(s) of an interrupted run", n_tmp)
            active_steps = _active_steps(wanted, summary)
            log.info("executor: %s", executor.description)
            _record_start(store, run_id, log_file, opts, run_options)
            plan = _plan(study_obj, active_steps)
            recorder = Recorder(store, summary, run_id)
            n_units = sum(len(u) for i in plan.values() for _, u in i)
            bars = Bars(progress, console, len(plan), n_units)
            active = frozenset(s.name for s in active_steps)
            with bars:
                if executor.distributed and "report" in wanted:
                    _preload(_STUDY_REPORT_MODULES)  # while the workers run the subjects
                try:
                    run_subjects(
                        plan, ctx, store, executor, recorder, frozenset(force), active, bars
                    )
                finally:
                    _plan_order(summary, plan)
            if owned:
                executor.close_soon()  # the workers stop while the client publishes
            summary.report = publish(
                ctx, study_obj, store, recorder, force="report" in force, html="report" in wanted
            )
            status = "ok" if summary.ok else "failed"
        finally:
            summary.duration_s = time.perf_counter() - t0
            _record_end(store, summary, status)
            if owned:
                executor.close()  # or waits for close_soon's thread
            store.close()
            detach_log(handler)
    finally:
        folder.release()
    return summary


def _say(msg: str, notes: list[str], console: Console | None) -> None:
    """A message about the output folder: on the console (or the log's warnings), kept."""
    notes.append(msg)
    if console is None:
        log.warning("%s", msg)
        return
    from rich.markup import escape

    console.print(f"[yellow]{escape(msg)}[/yellow]", soft_wrap=True)


def _wanted_steps(force: Sequence[str], steps: Sequence[str] | None, report: bool) -> set[str]:
    """The steps a run does (``steps``, less the reports without ``report``), checked."""
    names = {s.name for s in STEPS} | {"report"}
    for what, given in (("--force", force), ("--steps", steps or ())):
        unknown = sorted(set(given) - names)
        if unknown:
            raise DataError(
                f"unknown step(s) {unknown}; expected one of {', '.join(sorted(names))}",
                field=what,
            )
    if steps is not None and not steps:
        raise DataError(
            f"expected at least one step name; expected names of {', '.join(sorted(names))}",
            field="--steps",
        )
    wanted = set(names if steps is None else steps)
    if not report:
        wanted -= {"report", "report_subject", "report_viewer"}
    return wanted


def _implied_register(wanted: set[str], steps: Sequence[str] | None) -> str | None:
    """Add ``register`` to a run's ``--steps`` that need it (returns the note to show).

    Every step's rows in the database hang on the subjects, visits and series ``register``
    records (a fresh folder would fail every unit on the database's foreign keys); it is
    skipped when up to date, so running it costs the hashing of the inputs.
    """
    if steps is None or "register" in wanted:
        return None
    needing = sorted(s.name for s in STEPS if s.name in wanted and "register" in s.requires)
    if not needing:
        return None
    wanted.add("register")
    return (
        f"--steps: added register, which {', '.join(needing)} need(s) "
        "(skipped when it is up to date)"
    )


def _active_steps(wanted: set[str], summary: RunSummary) -> list[Step]:
    """The wanted steps that can run here (the others go to ``summary.not_wired``)."""
    active = []
    for step in STEPS:
        if step.name not in wanted:
            continue
        why = step.missing()
        if why is None:
            active.append(step)
        else:
            summary.not_wired[step.name] = why
            log.warning("step %s is not available: %s", step.name, why)
    return active


def _record_start(
    store: Store, run_id: str, log_file: Path, opts: RunOptions, run_options: dict[str, Any]
) -> None:
    """The ``runs`` row of a run that starts (its options as JSON lists and values)."""
    from ..study.store import utcnow

    options = {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()}
    row = {
        "run_id": run_id,
        "started_at": utcnow(),
        "status": "running",
        "n_done": 0,
        "n_skipped": 0,
        "n_failed": 0,
        "log_file": str(log_file),
        "version": __version__,
        "options": {**options, **run_options},
    }
    with store.transaction() as s:
        store.upsert(s, "runs", [row])


def _record_end(store: Store, summary: RunSummary, status: str) -> None:
    """The end of a run in the ``runs`` row and the log."""
    from ..study.store import utcnow

    row = {
        "run_id": summary.run_id,
        "finished_at": utcnow(),
        "status": status,
        "n_done": len(summary.done),
        "n_skipped": len(summary.skipped),
        "n_failed": len(summary.failed),
    }
    try:
        with store.transaction() as s:
            store.upsert(s, "runs", [row])
    except TumorscopeError:  # pragma: no cover - the run's own outcome matters more
        log.exception("could not record the end of the run")
    log.info(
        "run %s %s: %d done, %d up to date, %d failed, %d not run (%.1f s)",
        summary.run_id,
        status,
        len(summary.done),
        len(summary.skipped),
        len(summary.failed),
        len(summary.blocked),
        summary.duration_s,
    )


def _plan(study: Study, steps: Sequence[Step]) -> dict[str, list[tuple[Step, list[Unit]]]]:
    plan: dict[str, list[tuple[Step, list[Unit]]]] = {}
    for subject in study:
        items: list[tuple[Step, list[Unit]]] = []
        for step in steps:
            if step.scope == "subject":
                units = [Unit(step.name, subject.id)]
            else:
                units = [Unit(step.name, subject.id, v.id) for v in subject]
            units = [u for u in units if step.applies(study, u)]
            if units:
                items.append((step, units))
        plan[subject.id] = items
    return plan
