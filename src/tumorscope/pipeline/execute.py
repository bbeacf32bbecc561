"""Execution on a worker: one unit of work (:func:`execute_unit`), one subject's steps in
order (:func:`execute_subject`), and what "up to date" means (:func:`up_to_date`).

Nothing here touches the database: a worker returns :class:`~.summary.Outcome` objects, the
client records them (:mod:`.record`).
"""

from __future__ import annotations

import importlib
import os
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

from .. import _interrupt
from .._warnings import capture_warnings
from ..errors import DataError, TumorscopeError
from .hashing import file_sha256, inputs_hash
from .step import Context, Step, Unit, Upstream
from .summary import Outcome

if TYPE_CHECKING:
    from ..io import Study

__all__ = [
    "CONCURRENCY_ENV",
    "MEMORY_ENV",
    "execute_subject",
    "execute_unit",
    "memory_budget",
    "step_concurrency",
    "up_to_date",
]


def _study(ctx: Context) -> Study:
    """The study, opened afresh (once per subject task, see :func:`execute_subject`).

    Never cached beyond one task: ``Study`` caches sidecars and protocols, and a worker
    process outlives a run, so a study kept across tasks would hide a repaired file. Only
    the parse of ``study.yaml`` is reused, by its text (:func:`tumorscope.io.manifest.
    read_manifest`): an edited manifest is parsed again.
    """
    from ..io import open_study

    return open_study(ctx.study_root)


def _step(name: str) -> Step:
    from . import steps  # looked up at call time: a test may replace the table

    for s in steps.STEPS:
        if s.name == name:
            return s
    raise KeyError(name)


def _set_threads(threads: int | None) -> None:
    """The worker's share of the cores for numba.

    Not for ITK (registration): its transform depends on its thread count (by ~1e-14,
    measured), and a run on Dask workers must give the same tables and files as a serial run
    (``bench_pipeline.py`` checks it; with ITK on the workers' share they differed), so ITK
    keeps its default (every core) in both.
    """
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
        # the same JSON as the options dict of old: existing output folders stay up to date
        options = {k: ctx.options.get(k) for k in step.option_keys}
        h = inputs_hash(
            step=step.name, version=step.version, options=options, files=files, upstream=upstream
        )
        if not force and up_to_date(ctx, record, h):
            assert record is not None
            return Outcome(
                unit, "skipped", h, dict(record["outputs"]), duration_s=time.perf_counter() - t0
            )
        with capture_warnings() as caught:
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
    """Run every step of one subject (one Dask task; never touches the database): one unit
    at a time in plan order, or two at a time where the steps' requirements allow
    (:func:`step_concurrency`, :func:`_run_plan`).

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
    study: Study | None = None
    try:  # opened once for the subject's units (a broken study fails each unit instead)
        study = _study(ctx)
    except Exception:
        study = None
    width = step_concurrency(threads)
    return _run_plan(ctx, items, records, force, active, threads, on_outcome, study, width)


#: Environment variable: the most units of one subject run at once (``1``: one at a time).
CONCURRENCY_ENV = "TUMORSCOPE_STEP_CONCURRENCY"


def step_concurrency(threads: int | None) -> int:
    """How many units of one subject :func:`execute_subject` runs at once.

    Two when the subject has two or more cores (``threads``, else every core of this
    process) and numba's threading layer is safe to enter from two threads at once (OpenMP
    or TBB; its fallback "workqueue" layer is not), else one. ``TUMORSCOPE_STEP_CONCURRENCY``
    sets it (``1`` runs the units one at a time, in plan order, as before).

    Why two and not more: the fits already run their blocks on every core, so what
    concurrency wins is the time a step leaves cores idle (reading and writing files, Python
    between kernels, registration's serial parts); a second step fills that, a third mostly
    adds memory.
    """
    text = os.environ.get(CONCURRENCY_ENV, "").strip()
    if text:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise DataError(
                f"expected a whole number of units >= 1, got {text!r}", field=CONCURRENCY_ENV
            )
        return value
    cores = threads if threads else (os.cpu_count() or 1)
    if cores < 2 or not _numba_threads_reentrant():
        return 1
    return 2


#: Environment variable: the memory budget of a subject's units running at once, as a multiple
#: of the subject's largest image held as float32 (``0``: one counted unit at a time).
MEMORY_ENV = "TUMORSCOPE_MEMORY_BUDGET"

#: The default budget: two counted units whose estimates (``Step.memory``) add up to at most
#: this many times the subject's largest image run at once. 3 keeps a visit's numpy peak
#: under 4× its largest series (issue 21, target 6) with room for what the steps keep
#: between them and for the estimates' error.
MEMORY_BUDGET = 3.0


def memory_budget() -> float:
    """The memory budget of a subject's units (:data:`MEMORY_BUDGET`, or
    ``TUMORSCOPE_MEMORY_BUDGET``), as a multiple of the subject's largest image (float32).

    Two units of steps with a memory estimate (``Step.memory``) run at once only if their
    estimates add up to at most the budget; ``0`` runs them one at a time (the rule before
    issue 21's last stop). Units without an estimate are not counted.
    """
    text = os.environ.get(MEMORY_ENV, "").strip()
    if not text:
        return MEMORY_BUDGET
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise DataError(
            f"expected a non-negative number (times the largest image), got {text!r}",
            field=MEMORY_ENV,
        )
    return value


def _image_bytes(paths: Sequence[Any]) -> int:
    """Bytes of the largest NIfTI image of ``paths`` held as float32 (headers only; 0 for
    none, or an image whose header cannot be read: the step itself reports it)."""
    from ..volume import _read_header

    largest = 0
    for p in paths:
        name = str(getattr(p, "name", p))
        if not name.endswith((".nii", ".nii.gz")):
            continue
        try:
            shape = _read_header(p).get_data_shape()
        except (DataError, OSError):
            continue
        n = 1
        for k in shape:
            n *= int(k)
        largest = max(largest, 4 * n)
    return largest


def _numba_threads_reentrant() -> bool:
    """Whether compiled parallel kernels may be launched from two threads at once."""
    try:
        import numba
    except ImportError:
        return True
    layer = str(getattr(numba.config, "THREADING_LAYER", "default"))
    if layer == "workqueue":
        return False
    for name in ("omppool", "tbbpool"):  # the default layer takes one of these if it loads
        try:
            importlib.import_module(f"numba.np.ufunc.{name}")
        except ImportError:
            continue
        return True
    return False


def _run_plan(
    ctx: Context,
    items: Sequence[tuple[str, Sequence[Unit]]],
    records: Mapping[tuple[str, str], Mapping[str, Any]],
    force: frozenset[str],
    active: frozenset[str],
    threads: int | None,
    on_outcome: Callable[[Outcome], None] | None,
    study: Study | None,
    width: int,
) -> list[Outcome]:
    """:func:`execute_subject`'s units, up to ``width`` at once in threads (``width`` 1: one
    at a time in the calling thread, in plan order, as a Dask task or a serial run runs them).

    A unit starts once every unit of the steps it requires (``Step.requires``, within this
    run) has finished, in the order of :func:`.schedule.plan_order` (two at a time) or of the plan
    (one at a time); its upstream hashes are then complete,
    as in the one-at-a-time order, so input hashes and outputs are the same. A unit of a
    step that holds something exclusively (``Step.exclusive``) does not start while another
    unit holding the same runs. Units of steps with a memory estimate (``Step.memory``: DWI,
    DCE, relaxometry, CEST, metabolic, measure) run two at once only if their estimates
    (the factor times the largest image of the unit's inputs, float32) add up to at most
    the subject's budget (:func:`memory_budget` times its largest image), so that the
    visit's numpy peak stays bounded by its largest series. Outcomes are passed to
    ``on_outcome`` in this (the calling) thread as they finish (two at a time: once the
    units they made ready have started), and returned in plan order. After a failure no
    further unit starts (the rest are ``blocked``, as one at a time); units already running
    finish and keep their outcome.
    """
    plan = [(step_name, u) for step_name, units in items for u in units]
    left = {step_name: len(units) for step_name, units in items}  # units not yet finished
    budget = _subject_budget(ctx, plan, study) if width > 1 else 0.0
    need: dict[int, float] = {}  # each counted unit's estimate (bytes), when first asked

    def estimate(i: int) -> float:
        if i not in need:
            step, u = _step(plan[i][0]), plan[i][1]
            try:
                assert study is not None  # else no budget (_subject_budget)
                need[i] = (
                    step.memory
                    if step.memory == float("inf")
                    else step.memory * _image_bytes(step.inputs(ctx, study, u))
                )
            except Exception:  # inputs that cannot be listed: the unit reports it itself
                need[i] = float("inf")
        return need[i]

    upstream_all: Upstream = {}
    failed: list[str] = []
    results: dict[int, Outcome] = {}
    waiting = list(range(len(plan)))
    if width > 1:  # the order that shortens the run (.schedule): longest chain first
        waiting = _order(plan, active, estimate, budget, width)
    running: dict[Future[Outcome], int] = {}

    def ready(i: int) -> bool:
        step = _step(plan[i][0])
        held = {g for j in running.values() for g in _step(plan[j][0]).exclusive}
        if held.intersection(step.exclusive):
            return False
        if step.memory:
            counted = [j for j in running.values() if _step(plan[j][0]).memory]
            if counted and (
                budget <= 0 or sum(estimate(j) for j in counted) + estimate(i) > budget
            ):
                return False  # both peaks at once would pass the subject's budget
        return all(left.get(r, 0) == 0 for r in step.requires if r in active)

    def finish(i: int, o: Outcome) -> None:
        results[i] = o
        if on_outcome is not None:
            on_outcome(o)

    pool: Any = (
        ThreadPoolExecutor(max_workers=width, thread_name_prefix="tumorscope-step")
        if width > 1
        else _InThisThread()
    )
    # Units that finished, passed to on_outcome (recorded) once the units they made ready
    # have been started: recording a unit (a database transaction) does not delay the next.
    # One at a time, a unit runs inside submit: each is passed on as soon as it returns.
    finished: list[tuple[int, Outcome]] = []
    with pool:
        while waiting or running or finished:
            _interrupt.check()  # a Ctrl-C swallowed inside the last unit: start no other
            if failed:
                for i in waiting:
                    finish(i, Outcome(plan[i][1], "blocked", error=f"{', '.join(failed)} failed"))
                waiting = []
            for i in list(waiting):
                # nothing running and nothing ready (a step requiring one later in the plan):
                # the earliest waiting unit runs, as one at a time would run it
                stuck = not running and not any(ready(j) for j in waiting)
                if len(running) >= width or not (ready(i) or (stuck and i == min(waiting))):
                    continue
                step_name, u = plan[i]
                step = _step(step_name)
                upstream = {r: upstream_all.get(r, {}) for r in step.requires if r in active}
                fut = pool.submit(
                    execute_unit,
                    step_name,
                    ctx,
                    u,
                    records.get((u.step, u.key)),
                    upstream,
                    step_name in force,
                    threads,
                    study,
                )
                running[fut] = i
                waiting.remove(i)
            for i, o in finished:
                finish(i, o)
            finished = []
            if not running:  # every unit has finished (or was blocked)
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in sorted(done, key=running.__getitem__):  # plan order among the finished
                i = running.pop(fut)
                step_name, u = plan[i]
                o = fut.result()  # execute_unit returns failures as outcomes
                if o.status == "failed":
                    failed.append(f"{u.step} {u.key}")
                else:
                    upstream_all.setdefault(step_name, {})[u.key] = o.outputs
                left[step_name] -= 1
                if width > 1:
                    finished.append((i, o))
                else:
                    finish(i, o)
    return [results[i] for i in range(len(plan))]


def _order(
    plan: Sequence[tuple[str, Unit]],
    active: frozenset[str],
    estimate: Callable[[int], float],
    budget: float,
    width: int,
) -> list[int]:
    """The order in which :func:`_run_plan` starts the plan's units two at a time
    (:func:`.schedule.plan_order`, on the steps' ``cost`` and the units' memory estimates)."""
    from .schedule import Job, plan_order

    jobs = []
    for i, (name, _) in enumerate(plan):
        step = _step(name)
        jobs.append(
            Job(
                name,
                step.cost,
                estimate(i) if step.memory else 0.0,
                tuple(r for r in step.requires if r in active),
                step.exclusive,
            )
        )
    return plan_order(jobs, budget, width)


def _subject_budget(ctx: Context, plan: Sequence[tuple[str, Unit]], study: Study | None) -> float:
    """The memory budget (bytes) of one subject's units: :func:`memory_budget` times the
    subject's largest image (float32, from the headers); 0 when the study cannot be read
    (one counted unit at a time)."""
    factor = memory_budget()
    if not factor or study is None or not plan:
        return 0.0
    try:
        subject = study.subjects[plan[0][1].subject]
        paths = [ser.path for visit in subject for ser in visit.series.values()]
    except Exception:  # a broken study: each unit reports its own error
        return 0.0
    return factor * _image_bytes(paths)


class _InThisThread:
    """The executor of :func:`_run_plan` for one unit at a time: each unit runs at once, in
    the calling thread, and its outcome is handed back as a finished future."""

    def __enter__(self) -> _InThisThread:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn: Callable[..., Outcome], *args: Any) -> Future[Outcome]:
        fut: Future[Outcome] = Future()
        fut.set_result(fn(*args))  # execute_unit returns a unit's failure as its outcome
        return fut


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


def up_to_date(ctx: Context, record: Mapping[str, Any] | None, h: str) -> bool:
    """Whether a unit's last record is ``done`` with input hash ``h`` and every file it wrote
    still has the recorded content hash."""
    if record is None or record.get("status") != "done" or record.get("input_hash") != h:
        return False
    for rel, sha in dict(record.get("outputs") or {}).items():
        p = ctx.out_dir / rel
        if not p.is_file() or file_sha256(p) != sha:
            return False
    return True
