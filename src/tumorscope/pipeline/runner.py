"""Run the pipeline over a study: :func:`run_study`.

How a run goes
--------------
1. ``open_study`` checks the manifest and folders (a broken manifest stops the run: nothing
   is written). Stale temporary files of an interrupted run are removed from the output folder.
2. For every subject the steps of :data:`tumorscope.pipeline.steps.STEPS` run in order
   (:func:`execute_subject`), in the calling process (serial), on a local Dask cluster
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
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import DataError, ExportError, TumorscopeError, TumorscopeWarning
from .hashing import file_sha256, inputs_hash
from .steps import DEFAULT_OPTIONS, STEPS, Context, Step, Unit, Upstream, Write

if TYPE_CHECKING:
    from rich.console import Console

    from ..io import Study
    from ..study import Store

__all__ = ["Failure", "Outcome", "RunSummary", "execute_unit", "run_study", "write_reports"]

log = logging.getLogger("tumorscope.pipeline")


@dataclass(frozen=True)
class Failure:
    """A unit of work that failed, and why."""

    step: str
    unit: str
    subject: str | None
    message: str
    file: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = ": ".join(x for x in (self.file, self.field) if x)
        return f"{self.step} {self.unit}: {where + ': ' if where else ''}{self.message}"


@dataclass
class Outcome:
    """What a worker returns for one unit."""

    unit: Unit
    status: str  # "done", "skipped" or "failed"
    input_hash: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    writes: list[Write] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    error_file: str | None = None
    error_field: str | None = None
    traceback: str | None = None
    duration_s: float = 0.0


@dataclass
class RunSummary:
    """How a run ended.

    Attributes
    ----------
    run_id : str
    out_dir : Path
    db_url : str
    log_file : Path
    report : Path or None
        The study report (``report/index.html``).
    done, skipped : list of str
        Units that ran, units that were up to date (``"step sub-001/ses-01"``).
    failed : list of Failure
    blocked : list of str
        Units not run because an earlier step of the subject failed.
    not_wired : dict of str to str
        Steps that could not run in this installation, and why.
    """

    run_id: str
    out_dir: Path
    db_url: str
    log_file: Path
    report: Path | None = None
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    not_wired: dict[str, str] = field(default_factory=dict)
    n_subjects: int = 0
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no unit failed."""
        return not self.failed

    @property
    def exit_code(self) -> int:
        """0 when everything ran, 1 when some unit failed (the CLI's exit code)."""
        return 0 if self.ok else 1

    @property
    def failed_subjects(self) -> list[str]:
        return sorted({f.subject for f in self.failed if f.subject is not None})


# ---------------------------------------------------------------------------- worker side


def _study(ctx: Context) -> Study:
    """The study, opened afresh (once per subject task, see :func:`execute_subject`).

    Never cached beyond one task: ``Study`` caches sidecars and protocols, and a worker
    process outlives a run, so a study kept across tasks would hide a repaired file.
    """
    from ..io import open_study

    return open_study(ctx.study_root)


def _step(name: str) -> Step:
    for s in STEPS:
        if s.name == name:
            return s
    raise KeyError(name)


def _set_threads(threads: int | None) -> None:
    if not threads:
        return
    try:
        import numba

        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
    except ImportError:
        pass


def execute_unit(
    step_name: str,
    ctx: Context,
    unit: Unit,
    record: Mapping[str, Any] | None,
    upstream: Upstream,
    force: bool,
    threads: int | None = None,
    study: Study | None = None,
) -> Outcome:
    """Run (or skip) one unit of work. Runs on a worker; never touches the database.

    Parameters
    ----------
    step_name : str
    ctx : Context
    unit : Unit
    record : mapping or None
        The unit's last ``step_runs`` row (``status``, ``input_hash``, ``outputs``).
    upstream : dict
        Output hashes of the required steps for this subject.
    force : bool
        Run even if up to date.
    threads : int, optional
        Threads the numerical kernels may use on this worker.
    study : Study, optional
        The study, already open (default: opened here).

    Returns
    -------
    Outcome
        Never raises for a problem of the unit: failures are returned with their reason.
    """
    t0 = time.perf_counter()
    _set_threads(threads)
    step = _step(step_name)
    try:
        if study is None:
            study = _study(ctx)
        files = [(ctx.in_rel(p), file_sha256(p)) for p in step.inputs(ctx, study, unit)]
        options = {k: ctx.options.get(k) for k in step.option_keys}
        h = inputs_hash(
            step=step.name, version=step.version, options=options, files=files, upstream=upstream
        )
        if not force and _up_to_date(ctx, record, h):
            assert record is not None
            return Outcome(
                unit, "skipped", h, dict(record["outputs"]), duration_s=time.perf_counter() - t0
            )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TumorscopeWarning)
            out = step.run(ctx, study, unit, upstream)
        notes = [*out.notes, *(f"warning: {w.message}" for w in caught)]
        outputs = {ctx.out_rel(p): file_sha256(p) for p in out.files}
        return Outcome(
            unit, "done", h, outputs, out.writes, notes, duration_s=time.perf_counter() - t0
        )
    except TumorscopeError as exc:
        return Outcome(
            unit,
            "failed",
            error=f"{type(exc).__name__}: {exc.message}",
            error_file=exc.file,
            error_field=exc.field,
            traceback=traceback.format_exc(),
            duration_s=time.perf_counter() - t0,
        )
    except Exception as exc:  # a bug or an unexpected library error: recorded, not fatal
        return Outcome(
            unit,
            "failed",
            error=f"internal error {type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
            duration_s=time.perf_counter() - t0,
        )


def execute_subject(
    ctx: Context,
    items: Sequence[tuple[str, Sequence[Unit]]],
    records: Mapping[tuple[str, str], Mapping[str, Any]],
    force: frozenset[str],
    active: frozenset[str],
    threads: int | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    chunk_events: bool = False,
) -> list[Outcome]:
    """Run every step of one subject in order (one Dask task; never touches the database).

    Parameters
    ----------
    ctx : Context
    items : sequence of (step name, units)
        The subject's plan, in step order.
    records : mapping
        The last ``step_runs`` row of each unit, by ``(step, unit key)``.
    force, active : frozenset of str
        Steps to redo; steps that run in this run (requirements outside it are ignored).
    threads : int, optional
        Threads of the numerical kernels on this worker.
    on_outcome : callable, optional
        Called with each outcome as soon as it is known (the serial runner records it at once,
        so an interruption loses at most one unit).
    chunk_events : bool, default False
        On a Dask worker: send the fitting engine's chunk progress to the client as worker
        events (:data:`tumorscope.fitting.progress.TOPIC`).

    Returns
    -------
    list of Outcome
        One per unit, in order; units after a failure of the subject get status ``blocked``.
    """
    if chunk_events:
        from dask.distributed import get_worker

        # bound to this worker here, in the task's thread: a fit may chunk in its own threads
        _forwarding(get_worker(), +1)
        try:
            return execute_subject(
                ctx, items, records, force, active, threads, on_outcome, chunk_events=False
            )
        finally:
            _forwarding(None, -1)
    outcomes: list[Outcome] = []
    upstream_all: Upstream = {}
    failed: list[str] = []
    study: Study | None = None
    try:  # opened once for the subject's units (a broken study fails each unit instead)
        study = _study(ctx)
    except Exception:
        study = None
    for step_name, units in items:
        step = _step(step_name)
        upstream = {r: upstream_all.get(r, {}) for r in step.requires if r in active}
        for u in units:
            if failed:
                o = Outcome(u, "blocked", error=f"{', '.join(failed)} failed")
            else:
                o = execute_unit(
                    step_name,
                    ctx,
                    u,
                    records.get((u.step, u.key)),
                    upstream,
                    step_name in force,
                    threads,
                    study,
                )
                if o.status == "failed":
                    failed.append(f"{u.step} {u.key}")
                else:
                    upstream_all.setdefault(step_name, {})[u.key] = o.outputs
            outcomes.append(o)
            if on_outcome is not None:
                on_outcome(o)
    return outcomes


_forward_lock = threading.Lock()
_forward_users = 0


def _forwarding(worker: Any, delta: int) -> None:
    """Install (``+1``) or release (``-1``) the hook that forwards chunk events to the client.

    Counted, because tasks of an in-process cluster share the process-wide hook: it is
    removed when the last task using it ends.
    """
    import functools

    from ..fitting.progress import set_hook

    global _forward_users
    with _forward_lock:
        _forward_users += delta
        if delta > 0:
            set_hook(functools.partial(_forward_chunk_event, worker))
        elif _forward_users == 0:
            set_hook(None)


def _forward_chunk_event(worker: Any, event: str, n: int) -> None:
    """Chunk progress of a fit on a Dask worker, sent to the client as a worker event."""
    from ..fitting.progress import TOPIC

    worker.log_event(TOPIC, [event, n])


def _up_to_date(ctx: Context, record: Mapping[str, Any] | None, h: str) -> bool:
    if record is None or record.get("status") != "done" or record.get("input_hash") != h:
        return False
    for rel, sha in dict(record.get("outputs") or {}).items():
        p = ctx.out_dir / rel
        if not p.is_file() or file_sha256(p) != sha:
            return False
    return True


# ---------------------------------------------------------------------------- client side


def _local_worker_config(threads: int) -> dict[str, Any]:
    """Dask settings for the worker processes of a local cluster.

    Two of Dask's defaults cost this workload dearly, measured on 24 tiny subjects: the nanny
    starts each worker with ``MALLOC_TRIM_THRESHOLD_=65536``, which makes glibc hand freed
    memory back to the system at once, so the many short-lived arrays of a fit are paid for
    again in page faults (a serial run under that setting took 1.4 times as long, system
    time 9 s → 23 s); and the statistical profiler samples each task's stack every 10 ms.
    Here workers keep glibc's default allocator behaviour and no profiler; the BLAS/OpenMP
    pools get the worker's share of the cores (``threads``), like the numba kernels. A cluster
    started by the user (``--scheduler``) keeps its own settings.
    """
    n = int(threads)
    return {
        "distributed.nanny.pre-spawn-environ": {
            "OMP_NUM_THREADS": n,
            "MKL_NUM_THREADS": n,
            "OPENBLAS_NUM_THREADS": n,
        },
        "distributed.worker.profile.enabled": False,
    }


class _Executor:
    """Runs :func:`execute_unit` in-process, or on a Dask cluster."""

    def __init__(self, *, workers: int | None, scheduler: str | None) -> None:
        self.client: Any = None
        self.cluster: Any = None
        self.n_workers = 1
        self.threads: int | None = None
        if scheduler or workers:
            try:
                import dask
                from dask.distributed import Client, LocalCluster
            except ImportError as exc:  # pragma: no cover - dask is in the extras
                raise DataError(
                    "--workers/--scheduler need dask.distributed "
                    "(pip install 'tumorscope[distributed]')",
                    field="--workers",
                ) from exc
            if scheduler:
                try:
                    self.client = Client(scheduler, timeout="20s")
                except OSError as exc:
                    raise DataError(
                        f"cannot reach the Dask scheduler ({exc})", field="--scheduler"
                    ) from exc
                self.n_workers = max(1, len(self.client.scheduler_info()["workers"]))
            else:
                assert workers is not None
                if workers < 1:
                    raise DataError(f"expected at least 1 worker, got {workers}", field="--workers")
                self.threads = max(1, (os.cpu_count() or 1) // workers)
                with dask.config.set(_local_worker_config(self.threads)):
                    self.cluster = LocalCluster(
                        n_workers=workers,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=None,
                    )
                self.client = Client(self.cluster)
                self.n_workers = workers

    @property
    def description(self) -> str:
        if self.client is None:
            return "serial"
        if self.cluster is not None:
            return f"local Dask cluster, {self.n_workers} worker process(es)"
        return f"Dask scheduler {self.client.scheduler.address}, {self.n_workers} worker(s)"

    def close(self) -> None:
        """Close the client and the local cluster (idempotent)."""
        client, cluster = self.client, self.cluster
        self.client = self.cluster = None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


def _sweep_temporaries(out_dir: Path) -> int:
    """Remove temporary files an interrupted run left (``.<name>-<random><suffix>``)."""
    n = 0
    if not out_dir.is_dir():
        return 0
    for p in out_dir.rglob(".*-*"):
        if p.is_file() and p.parent != out_dir:
            p.unlink(missing_ok=True)
            n += 1
    return n


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


class _Recorder:
    """Writes outcomes to the database (one transaction per unit) and to the summary."""

    def __init__(self, store: Store, summary: RunSummary, run_id: str) -> None:
        self.store = store
        self.summary = summary
        self.run_id = run_id
        self.lock = threading.RLock()

    def record(self, outcome: Outcome) -> None:
        from ..study.store import utcnow

        u = outcome.unit
        label = f"{u.step} {u.key}"
        with self.lock:
            if outcome.status == "skipped":
                self.summary.skipped.append(label)
                log.info("up to date: %s", label)
                return
            row = {
                "step": u.step,
                "unit": u.key,
                "subject": u.subject or None,
                "status": outcome.status,
                "input_hash": outcome.input_hash,
                "outputs": outcome.outputs,
                "error": outcome.error,
                "error_file": outcome.error_file,
                "error_field": outcome.error_field,
                "run_id": self.run_id,
                "finished_at": utcnow(),
                "duration_s": outcome.duration_s,
            }
            if outcome.status == "failed":
                f = Failure(
                    u.step,
                    u.key,
                    u.subject or None,
                    outcome.error or "",
                    outcome.error_file,
                    outcome.error_field,
                )
                self.summary.failed.append(f)
                log.error("FAILED %s", f)
                if outcome.traceback:
                    log.debug("%s", outcome.traceback)
                with self.store.transaction() as s:
                    self.store.upsert(s, "step_runs", [row])
                return
            for note in outcome.notes:
                log.info("%s: %s", label, note)
            try:
                with self.store.transaction() as s:
                    for w in outcome.writes:
                        if w.mode == "upsert":
                            self.store.upsert(s, w.table, w.rows)
                        else:
                            self.store.replace(s, w.table, w.where, w.rows)
                    self.store.upsert(s, "step_runs", [row])
            except ExportError as exc:  # rolled back: the unit failed, the run goes on
                failed = Outcome(
                    u,
                    "failed",
                    outcome.input_hash,
                    error=f"ExportError: {exc.message}",
                    error_file=exc.file,
                    error_field=exc.field,
                    traceback=traceback.format_exc(),
                    duration_s=outcome.duration_s,
                )
                self.record(failed)  # re-entrant lock
                return
            self.summary.done.append(label)
            log.info("done: %s (%.2f s)", label, outcome.duration_s)

    def block(self, unit: Unit, why: str) -> None:
        with self.lock:
            self.summary.blocked.append(f"{unit.step} {unit.key}")
            log.warning("not run: %s %s (%s)", unit.step, unit.key, why)


def run_study(
    study: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    db_url: str | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    force: Sequence[str] = (),
    steps: Sequence[str] | None = None,
    options: Mapping[str, Any] | None = None,
    report: bool = True,
    progress: bool = False,
    console: Console | None = None,
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
        Run on a local Dask cluster of this many worker processes.
    scheduler : str, optional
        Run on an existing Dask cluster (``tcp://host:port``); overrides ``workers``.
    force : sequence of str
        Steps to redo even if up to date (names of :data:`~tumorscope.pipeline.steps.STEPS`,
        or ``"report"``).
    steps : sequence of str, optional
        Run only these steps (default: all). A step whose required steps are left out runs
        without their outputs (e.g. ``measure`` without ``fit_dce`` measures only geometry
        and the diffusion maps).
    options : mapping, optional
        Overrides of :data:`~tumorscope.pipeline.steps.DEFAULT_OPTIONS`.
    report : bool, default True
        Write the HTML reports (``report_subject`` and the study report). The tables are
        exported (Parquet and CSV, ``<out_dir>/tables``) in any case.
    progress : bool, default False
        Show Rich progress bars (subjects and units).
    console : rich.console.Console, optional
        Where progress bars go.

    Returns
    -------
    RunSummary
        What ran, what was up to date, what failed and why; ``exit_code`` is 1 if anything
        failed.

    Raises
    ------
    StudyError
        If the manifest or folder structure is broken (nothing is written).
    DataError
        For unusable options (an unknown step in ``force``, no Dask).
    ExportError
        If the database cannot be opened.
    """
    from ..io import open_study
    from ..study import default_url, open_store
    from ..study.store import utcnow

    root = Path(study).resolve()
    study_obj = open_study(root)
    out = Path(out_dir) if out_dir is not None else root / "derivatives" / "tumorscope"
    out = out.resolve()
    names = {s.name for s in STEPS} | {"report"}
    for what, given in (("--force", force), ("--steps", steps or ())):
        unknown = sorted(set(given) - names)
        if unknown:
            raise DataError(
                f"unknown step(s) {unknown}; expected one of {', '.join(sorted(names))}",
                field=what,
            )
    wanted = set(names if steps is None else steps)
    if not report:
        wanted -= {"report", "report_subject"}
    opts = {**DEFAULT_OPTIONS, **dict(options or {})}
    bad_opts = sorted(set(opts) - set(DEFAULT_OPTIONS))
    if bad_opts:
        raise DataError(
            f"unknown option(s) {bad_opts}; expected {sorted(DEFAULT_OPTIONS)}", field="options"
        )
    ctx = Context(root, out, opts)

    out.mkdir(parents=True, exist_ok=True)
    run_id = dt.datetime.now().strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    log_file = out / "logs" / f"run-{run_id}.log"
    url = db_url or default_url(out)
    summary = RunSummary(run_id, out, url, log_file, n_subjects=len(study_obj))
    handler = _attach_log(log_file)
    t0 = time.perf_counter()
    store = open_store(url)
    executor: _Executor | None = None
    try:
        log.info("tumorscope %s: run %s of %s into %s", __version__, run_id, root, out)
        n_tmp = _sweep_temporaries(out)
        if n_tmp:
            log.info("removed %d temporary file(s) of an interrupted run", n_tmp)
        active_steps = []
        for step in STEPS:
            if step.name not in wanted:
                continue
            why = step.missing()
            if why is None:
                active_steps.append(step)
            else:
                summary.not_wired[step.name] = why
                log.warning("step %s is not available: %s", step.name, why)
        executor = _Executor(workers=workers, scheduler=scheduler)
        log.info("executor: %s", executor.description)
        with store.transaction() as s:
            store.upsert(
                s,
                "runs",
                [
                    {
                        "run_id": run_id,
                        "started_at": utcnow(),
                        "status": "running",
                        "n_done": 0,
                        "n_skipped": 0,
                        "n_failed": 0,
                        "log_file": str(log_file),
                        "version": __version__,
                        "options": {
                            **{k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()},
                            "workers": workers,
                            "scheduler": scheduler,
                            "force": list(force),
                        },
                    }
                ],
            )
        plan = _plan(study_obj, active_steps)
        recorder = _Recorder(store, summary, run_id)
        bars = _Bars(progress, console, len(plan), sum(len(u) for i in plan.values() for _, u in i))
        active = frozenset(s.name for s in active_steps)
        with bars:
            _run_subjects(plan, ctx, store, executor, recorder, frozenset(force), active, bars)
        summary.report = _publish(
            ctx, study_obj, store, recorder, force="report" in force, html="report" in wanted
        )
        status = "ok" if summary.ok else "failed"
    except BaseException:
        status = "interrupted"
        raise
    finally:
        summary.duration_s = time.perf_counter() - t0
        try:
            with store.transaction() as s:
                store.upsert(
                    s,
                    "runs",
                    [
                        {
                            "run_id": run_id,
                            "finished_at": utcnow(),
                            "status": status,
                            "n_done": len(summary.done),
                            "n_skipped": len(summary.skipped),
                            "n_failed": len(summary.failed),
                        }
                    ],
                )
        except TumorscopeError:  # pragma: no cover - the run's own outcome matters more
            log.exception("could not record the end of the run")
        log.info(
            "run %s %s: %d done, %d up to date, %d failed, %d not run (%.1f s)",
            run_id,
            status,
            len(summary.done),
            len(summary.skipped),
            len(summary.failed),
            len(summary.blocked),
            summary.duration_s,
        )
        if executor is not None:
            executor.close()
        store.close()
        _detach_log(handler)
    return summary


def _subject_records(store: Store, subject: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The last ``step_runs`` row of every unit of a subject, by ``(step, unit key)``."""
    rows = store.read_table("step_runs", subject=subject).to_dict("records")
    return {(str(r["step"]), str(r["unit"])): {str(k): v for k, v in r.items()} for r in rows}


def _run_subjects(
    plan: Mapping[str, list[tuple[Step, list[Unit]]]],
    ctx: Context,
    store: Store,
    executor: _Executor,
    recorder: _Recorder,
    force: frozenset[str],
    active: frozenset[str],
    bars: _Bars,
) -> None:
    """Every subject's steps: in this process one after the other, or one Dask task each.

    A subject is one task (its steps depend on each other; units of a few tenths of a second
    would otherwise cost more in scheduling than in work). The client records each unit's
    outcome in its own transaction as the subject's task returns.
    """

    def record(o: Outcome) -> None:
        if o.status == "blocked":
            recorder.block(o.unit, o.error or "")
        else:
            recorder.record(o)
        bars.advance_units(1)

    def args(sid: str) -> dict[str, Any]:
        return {
            "ctx": ctx,
            "items": [(step.name, units) for step, units in plan[sid]],
            "records": _subject_records(store, sid),
            "force": force,
            "active": active,
            "threads": executor.threads,
        }

    if executor.client is None:
        from ..fitting.progress import chunk_progress

        with chunk_progress(bars.chunks):
            for sid in plan:
                execute_subject(**args(sid), on_outcome=record)
                bars.advance_subject()
        return
    from dask.distributed import as_completed

    from ..fitting.progress import TOPIC

    if bars.progress is not None:
        executor.client.subscribe_topic(TOPIC, lambda ev: bars.chunks(*ev[1]))

    token = uuid.uuid4().hex[:8]  # task keys unique across runs on one cluster
    # Subjects with more units of work first (longest-processing-time order), so that the
    # run does not end with one worker busy on a big subject while the others idle.
    futures = [
        executor.client.submit(
            execute_subject,
            **args(sid),
            pure=False,
            key=f"{sid}-{token}",
            priority=sum(len(units) for _, units in plan[sid]),
            chunk_events=bars.progress is not None,
        )
        for sid in plan
    ]
    try:
        for fut in as_completed(futures):
            for o in fut.result():
                record(o)
            bars.advance_subject()
    except BaseException:
        for fut in futures:
            fut.cancel()
        raise
    finally:
        if bars.progress is not None:
            executor.client.unsubscribe_topic(TOPIC)


def _publish(
    ctx: Context, study: Study, store: Store, recorder: _Recorder, *, force: bool, html: bool
) -> Path | None:
    """Export the tables and write the study report (a study-level unit, hashed too).

    Its input hash is the hash of every other unit's memory (status, input and output hashes),
    so it is redone exactly when some unit's result changed.
    """
    import json

    from ..report import write_study_report

    unit = Unit("report", "")
    state = store.read_table("step_runs")
    state = state[state["step"] != "report"]
    h = inputs_hash(
        step="report",
        version="1",
        files=[],
        upstream=json.loads(
            state[["step", "unit", "status", "input_hash", "outputs"]].to_json(orient="records")
        ),
        options={"html": html},
    )
    record = store.get("step_runs", step="report", unit=unit.key)
    index = ctx.out_dir / "report" / "index.html"
    if not force and _up_to_date(ctx, record, h):
        assert record is not None
        recorder.record(Outcome(unit, "skipped", h, dict(record["outputs"])))
        return index if html else None
    t0 = time.perf_counter()
    try:
        tables = store.export(ctx.out_dir / "tables")
        files = [p for ps in tables.values() for p in ps]
        path = None
        if html:
            path = write_study_report(ctx, study, store)
            files.append(path)
        outputs = {ctx.out_rel(p): file_sha256(p) for p in files}
        recorder.record(Outcome(unit, "done", h, outputs, duration_s=time.perf_counter() - t0))
        return path
    except Exception as exc:
        recorder.record(
            Outcome(
                unit,
                "failed",
                error=f"{type(exc).__name__}: {exc}",
                traceback=traceback.format_exc(),
                duration_s=time.perf_counter() - t0,
            )
        )
        return None


def write_reports(
    study: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    db_url: str | None = None,
) -> Path:
    """Write the HTML reports again from the results of earlier runs (nothing is refitted).

    Subject reports are written for the subjects whose ``measure`` step is recorded as done.

    Parameters
    ----------
    study, out_dir, db_url
        As for :func:`run_study`.

    Returns
    -------
    Path
        The study report, ``<out_dir>/report/index.html``.

    Raises
    ------
    DataError
        If the output folder holds no results of a run.
    """
    from ..io import open_study
    from ..report import write_study_report, write_subject_report
    from ..study import default_url, open_store

    root = Path(study).resolve()
    study_obj = open_study(root)
    out = (Path(out_dir) if out_dir is not None else root / "derivatives" / "tumorscope").resolve()
    url = db_url or default_url(out)
    if db_url is None and not (out / "tumorscope.sqlite").exists():
        raise DataError(
            "no results here: run `tumorscope run` first (tumorscope.sqlite is missing)",
            file=out,
        )
    ctx = Context(root, out, dict(DEFAULT_OPTIONS))
    store = open_store(url)
    try:
        runs = store.read_table("step_runs", status="done")
        for sid in study_obj.subjects:
            mine = runs[runs["subject"] == sid]
            if "measure" not in set(mine["step"]):
                continue
            upstream: Upstream = {}
            for r in mine.to_dict("records"):
                upstream.setdefault(str(r["step"]), {})[str(r["unit"])] = dict(r["outputs"])
            write_subject_report(ctx, study_obj, sid, upstream)
        return write_study_report(ctx, study_obj, store)
    finally:
        store.close()


class _Bars:
    """Rich progress bars for subjects and units (no-ops when disabled)."""

    def __init__(self, enabled: bool, console: Console | None, n_subjects: int, n_units: int):
        self.progress: Any = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self.progress = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            )
            self.t_subjects = self.progress.add_task("subjects", total=n_subjects)
            self.t_units = self.progress.add_task("units of work", total=n_units)
            # total grows as fits start: each fit announces its chunks
            self.t_chunks = self.progress.add_task("voxel chunks", total=0)
            self._lock = threading.Lock()

    def __enter__(self) -> _Bars:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def advance_units(self, n: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.t_units, n)

    def chunks(self, event: str, n: int) -> None:
        """A fitting-engine chunk event (``"planned"`` n chunks, or ``"done"``)."""
        if self.progress is None:
            return
        with self._lock:
            if event == "planned":
                task = self.progress.tasks[self.t_chunks]
                self.progress.update(self.t_chunks, total=(task.total or 0) + n)
            elif event == "done":
                self.progress.advance(self.t_chunks, n)

    def advance_subject(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.t_subjects, 1)


def _attach_log(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.DEBUG)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    return handler


def _detach_log(handler: logging.Handler) -> None:
    log.removeHandler(handler)
    handler.close()


#: Type of a function that prints a summary (the CLI's).
SummaryPrinter = Callable[[RunSummary], None]
