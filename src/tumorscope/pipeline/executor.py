"""Where the subjects run: in this process, on a local Dask cluster or an existing one.

:class:`Executor` opens (and closes) the Dask client; :func:`run_subjects` sends each subject
to it as one task (:func:`~.execute.execute_subject`) and records the outcomes as they come.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import DataError
from .execute import execute_subject
from .record import subject_records
from .step import Context, Step, Unit
from .summary import Outcome

if TYPE_CHECKING:
    from .._compile import Kernel
    from ..study import Store
    from .progress import Bars
    from .record import Recorder

__all__ = ["WARM_MODULES", "Executor", "local_worker_config", "run_subjects"]


def local_worker_config(threads: int) -> dict[str, Any]:
    """Dask settings for the worker processes of a local cluster.

    Two of Dask's defaults cost this workload dearly, measured on 24 tiny subjects: the nanny
    starts each worker with ``MALLOC_TRIM_THRESHOLD_=65536``, which makes glibc hand freed
    memory back to the system at once, so the many short-lived arrays of a fit are paid for
    again in page faults (a serial run under that setting took 1.4 times as long, system
    time 9 s → 23 s); and the statistical profiler samples each task's stack every 10 ms.
    Here workers keep glibc's default allocator behaviour and no profiler; the BLAS/OpenMP
    pools get the worker's share of the cores (``threads``), like the numba kernels.

    The scheduler and the nannies of a local cluster live in the client's process, on its
    event loop, beside the client's own work (recording the outcomes): their periodic
    callbacks cost that process 2–3 CPU-s of a 37 s run of 24 tiny subjects (~21,000 timer
    callbacks, profiled): every server's event-loop tick every 20 ms (it only measures the
    loop's latency: ``tick.limit``, 3 s, still reports a blocked loop at a 500 ms tick), each
    nanny's memory monitor every 100 ms (now 500 ms: a worker over its memory limit is still
    stopped, up to 0.4 s later), the system monitor's disk counters every 500 ms (for a
    dashboard there is none of), and work stealing every second (a subject is sent only
    when a worker is free: :func:`run_subjects`; nothing to steal). A cluster started by the
    user (``--scheduler``) keeps its own settings.
    """
    n = int(threads)
    return {
        "distributed.nanny.pre-spawn-environ": {
            "OMP_NUM_THREADS": n,
            "MKL_NUM_THREADS": n,
            "OPENBLAS_NUM_THREADS": n,
        },
        "distributed.worker.profile.enabled": False,
        "distributed.admin.tick.interval": "500ms",
        "distributed.worker.memory.monitor-interval": "500ms",
        "distributed.admin.system-monitor.disk": False,
        "distributed.admin.system-monitor.interval": "2s",
        "distributed.scheduler.work-stealing": False,
    }


#: What a worker imports to run a visit's steps (:meth:`Executor.warm_up`).
WARM_MODULES: tuple[str, ...] = (
    "tumorscope.pipeline.steps",
    "tumorscope.pipeline.align",
    "tumorscope.stages.diffusion",
    "tumorscope.stages.dce",
    "tumorscope.stages.relaxometry",
    "tumorscope.report.html",
    "SimpleITK",
    # imported by the steps at their first call: the habitats' k-means (scikit-learn, which
    # imports scipy.stats), the fluorine detection limit (scipy.stats and scipy.optimize), the
    # lesion tracking's assignment and the MRS fits (scipy.optimize)
    "scipy.optimize",
    "scipy.stats",
    "sklearn.cluster",
)


def _import_all(modules: tuple[str, ...]) -> int:
    """Import every module it can (on a worker); the number imported."""
    import importlib

    n = 0
    for name in modules:
        try:
            importlib.import_module(name)
            n += 1
        except ImportError:
            pass
    return n


def _warm_worker(index: int, kernels: Any) -> Any:
    """The kernel warm-up of worker ``index`` (a task): its
    :class:`~tumorscope._compile.WarmReport`."""
    from .._compile import KERNELS, WarmReport, warm_kernels

    try:
        return warm_kernels(KERNELS if kernels is None else kernels, start=index)
    except Exception as exc:  # never fails the run: the kernels compile at first call
        return WarmReport(failed={"warm-up": f"{type(exc).__name__}: {exc}"})


class Executor:
    """Runs :func:`execute_unit` in-process, or on a Dask cluster.

    Parameters
    ----------
    workers : int or None, keyword-only
        Start a local Dask cluster of this many single-threaded worker processes.
    scheduler : str or None, keyword-only
        Connect to an existing Dask scheduler (``tcp://host:port``) instead.
    background : bool, default False, keyword-only
        Start the local cluster in a background thread and return at once: the client does
        its own work (the database, the study's plan, its imports: ~1 s on 24 subjects)
        while the workers start (~1.5 s). Whatever needs the cluster (:attr:`client`,
        :attr:`cluster`) waits for it, and a failed start is raised there. The arguments are
        checked before returning, and an existing scheduler is always reached at once (so
        that an unreachable one is reported before anything is written).
    warm : bool, default False, keyword-only
        Run :meth:`warm_up` as soon as the cluster is up (in the background thread with
        ``background``).
    """

    def __init__(
        self,
        *,
        workers: int | None,
        scheduler: str | None,
        background: bool = False,
        warm: bool = False,
    ) -> None:
        self._client: Any = None
        self._cluster: Any = None
        self._starting: threading.Thread | None = None  # the background start
        self._start_error: BaseException | None = None
        self.n_workers = 1
        self.threads: int | None = None
        self.warming: list[Any] = []  # futures of the kernel warm-up (warm_up)
        self._closing: threading.Thread | None = None  # close_soon's thread
        if not (scheduler or workers):
            return
        import importlib.util

        if importlib.util.find_spec("distributed") is None:  # pragma: no cover - in the extras
            raise DataError(
                "--workers/--scheduler need dask.distributed "
                "(pip install 'tumorscope[distributed]')",
                field="--workers",
            )
        if scheduler:
            from dask.distributed import Client

            try:
                self._client = Client(scheduler, timeout="20s")
            except OSError as exc:
                raise DataError(
                    f"cannot reach the Dask scheduler ({exc})", field="--scheduler"
                ) from exc
            self.n_workers = max(1, len(self._client.scheduler_info()["workers"]))
            if warm:
                self.warm_up()
            return
        assert workers is not None
        if workers < 1:
            raise DataError(f"expected at least 1 worker, got {workers}", field="--workers")
        self.threads = max(1, (os.cpu_count() or 1) // workers)
        self.n_workers = workers
        if not background:
            self._start_local(workers, warm)
            return
        # Dask's imports here, in the caller's thread, before the background start: in that
        # thread they contended with the caller's own imports (the steps, the database) for
        # the interpreter, and the workers were spawned late, one core idle until then.
        # Machine-wide CPU sampled every 0.1 s (4 tiny subjects, 3 alternations): both cores
        # busy from 0.4-0.5 s of the run instead of 0.7-0.9 s.
        import dask.distributed  # noqa: F401

        self._starting = threading.Thread(
            target=self._start_in_background,
            args=(workers, warm),
            name="tumorscope-start-workers",
            daemon=True,
        )
        self._starting.start()

    def _start_local(self, workers: int, warm: bool) -> None:
        """Start the local cluster and its client (and warm the workers up)."""
        import dask
        from dask.distributed import Client, LocalCluster

        assert self.threads is not None
        with dask.config.set(local_worker_config(self.threads)):
            self._cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            )
        self._client = Client(self._cluster)
        if warm:
            self._warm_up(WARM_MODULES, True)

    def _start_in_background(self, workers: int, warm: bool) -> None:
        try:
            self._start_local(workers, warm)
        except BaseException as exc:  # raised to whoever needs the cluster
            self._start_error = exc

    def _started(self) -> None:
        """Wait for a background start; raise its error (once) if it failed."""
        starting = self._starting
        if starting is None or starting is threading.current_thread():
            return
        starting.join()
        self._starting = None
        err, self._start_error = self._start_error, None
        if err is not None:
            _close(self._client, self._cluster)
            self._client = self._cluster = None
            raise err

    @property
    def client(self) -> Any:
        """The Dask client (None: serial), once the cluster has started."""
        self._started()
        return self._client

    @client.setter
    def client(self, value: Any) -> None:
        self._client = value

    @property
    def cluster(self) -> Any:
        """The local cluster started here (None: serial or an existing scheduler)."""
        self._started()
        return self._cluster

    @cluster.setter
    def cluster(self, value: Any) -> None:
        self._cluster = value

    def warm_up(
        self, modules: tuple[str, ...] = WARM_MODULES, *, kernels: bool | Sequence[Kernel] = True
    ) -> None:
        """Import ``modules`` on every worker now (a worker imports each once; done while the
        client does something else, the first subjects do not wait for it). A module that
        cannot be imported is skipped: its step reports that when it runs.

        With ``kernels`` (True: :data:`~tumorscope._compile.KERNELS`, or a table), each worker
        then runs one task of :func:`~tumorscope._compile.warm_kernels` (this returns at once:
        the tasks queue ahead of the subjects). On an empty numba cache the workers share the
        compilation (each kernel compiled by one worker, loaded from the cache by the others)
        instead of each compiling all of them at their first call; on a warm cache each worker
        loads them from the cache. ``TUMORSCOPE_KERNEL_WARM_UP=0`` turns the kernel warm-up
        off (``benchmarks/bench_first_run.py`` compares the two)."""
        if self.client is None:  # (waits for a background start)
            return
        self._warm_up(modules, kernels)

    def _warm_up(self, modules: tuple[str, ...], kernels: bool | Sequence[Kernel]) -> None:
        """:meth:`warm_up` on the started client (also from the background start)."""
        if self._cluster is not None:  # workers started here (not a --scheduler's) exit
            # without the collector's passes over what they hold (~1 s each, beside the
            # client's export of the tables)
            from .._exit import skip_collection_at_exit

            self._client.run(skip_collection_at_exit)
        self._client.run(_import_all, modules)
        if os.environ.get("TUMORSCOPE_KERNEL_WARM_UP", "1") == "0":  # benchmarks' baseline
            kernels = False
        if kernels is not False:
            table = None if kernels is True else tuple(kernels)
            token = uuid.uuid4().hex[:8]
            addresses = sorted(self._client.scheduler_info()["workers"])
            self.warming = [
                self._client.submit(
                    _warm_worker,
                    i,
                    table,
                    key=f"warm-up-kernels-{i}-{token}",
                    workers=[address],
                    allow_other_workers=False,
                    pure=False,
                )
                for i, address in enumerate(addresses)
            ]

    def warm_reports(self) -> list[Any]:
        """The :class:`~tumorscope._compile.WarmReport` of each worker's kernel warm-up (waits
        for them)."""
        return [f.result() for f in self.warming]

    def slots(self) -> int:
        """Subjects that can run at once: the worker threads of the cluster (1 in-process)."""
        if self.client is None:
            return 1
        workers = self.client.scheduler_info().get("workers", {})
        return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))

    @property
    def distributed(self) -> bool:
        """Whether subjects go to Dask workers (does not wait for a background start)."""
        return self._starting is not None or self._client is not None

    @property
    def description(self) -> str:
        """What runs the subjects (does not wait for a background start)."""
        if self._starting is not None or self._cluster is not None:
            return f"local Dask cluster, {self.n_workers} worker process(es)"
        if self._client is None:
            return "serial"
        return f"Dask scheduler {self._client.scheduler.address}, {self.n_workers} worker(s)"

    def close(self) -> None:
        """Close the client and the local cluster (idempotent); waits for a background start
        to end (a failed one is not raised here) and for a close begun by :meth:`close_soon`."""
        starting, self._starting = self._starting, None
        if starting is not None and starting is not threading.current_thread():
            starting.join()
        self._start_error = None
        client, cluster = self._client, self._cluster
        self.client = self.cluster = None
        self.warming = []
        _close(client, cluster)
        closing, self._closing = self._closing, None
        if closing is not None:
            closing.join()

    def close_soon(self) -> None:
        """Begin closing in a background thread and return at once (:meth:`close` waits for
        it). A local cluster's workers take ~1 s to stop (4 s and more on a loaded machine,
        where the nanny kills them after its timeout); :func:`~.runner.run_study` closes its
        workers so as soon as the subjects are done, while the client exports the tables
        and writes the study report, which need no worker."""
        client, cluster = self.client, self.cluster  # (waits for a background start)
        if client is None and cluster is None:
            return
        self.client = self.cluster = None
        self.warming = []
        self._closing = threading.Thread(
            target=_close, args=(client, cluster), name="tumorscope-close-workers", daemon=True
        )
        self._closing.start()


def _worker_threads(client: Any, slots: int) -> list[str]:
    """One name per worker thread of the cluster, ``"<worker address>#<thread>"``, the
    workers' threads interleaved (``slots`` unnamed ``"?<i>"`` if the cluster does not list
    its workers)."""
    try:
        workers = client.scheduler_info().get("workers", {})
    except Exception:  # pragma: no cover - a scheduler that does not answer: no placement
        workers = {}
    names = [
        (k, f"{address}#{k}")
        for address, w in sorted(workers.items())
        for k in range(max(1, int(w.get("nthreads", 1))))
    ]
    if not names:
        return [f"?{i}" for i in range(max(1, slots))]
    return [name for _, name in sorted(names, key=lambda x: x[0])]


def _close(client: Any, cluster: Any) -> None:
    """Close a Dask client, then its local cluster (either may be None)."""
    if client is not None:
        client.close()
    if cluster is not None:
        cluster.close()


def run_subjects(
    plan: Mapping[str, list[tuple[Step, list[Unit]]]],
    ctx: Context,
    store: Store,
    executor: Executor,
    recorder: Recorder,
    force: frozenset[str],
    active: frozenset[str],
    bars: Bars,
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
            "records": subject_records(store, sid),
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
    # run does not end with one worker busy on a big subject while the others idle; the
    # order of the plan among equals.
    queue = sorted(plan, key=lambda sid: -sum(len(units) for _, units in plan[sid]))
    # Each subject is sent to a chosen worker (Dask's work stealing is off: nothing moves a
    # task once placed). Submitted all at once, each subject was a task group of its own
    # (not "root-ish" to Dask's scheduler, hence never queued): every task was assigned at
    # submission, and a worker that finished early sat idle — one of the demo's two workers
    # idled 8–12 s of a 79 s run (task stream, 2026-12-05). So a worker thread holds at most
    # two subjects: the one it runs and the next, sent ahead so that it starts the moment
    # the first returns (sent on return, a subject reached its worker 40–60 ms later, 0.3–0.9
    # s per worker over 24 tiny subjects; 2026-12-06). The last ``slots`` subjects are not
    # sent ahead: each goes to a worker thread that has nothing left, so that the run does
    # not end with one worker on two subjects while another idles.
    threads = _worker_threads(executor.client, executor.slots())
    slots = len(threads)

    def submit(sid: str, where: str | None) -> Any:
        return executor.client.submit(
            execute_subject,
            **args(sid),
            pure=False,
            key=f"{sid}-{token}",
            chunk_events=bars.progress is not None,
            workers=None if where is None else [where],
            allow_other_workers=True,  # (a worker that is gone: another takes it)
        )

    waiting = list(reversed(queue))  # popped from the end: queue order
    held: dict[str, int] = {}  # subjects sent to each worker thread slot, not yet returned
    slot_of: dict[Any, str] = {}  # future -> the slot it was sent to
    running: set[Any] = set()
    done = as_completed([])

    def send(slot: str) -> None:
        fut = submit(waiting.pop(), None if slot.startswith("?") else slot.rsplit("#", 1)[0])
        held[slot] = held.get(slot, 0) + 1
        slot_of[fut] = slot
        running.add(fut)
        done.add(fut)

    def fill() -> None:
        """One subject to every slot that has none; then, while more than ``slots``
        subjects are waiting, one ahead to every slot that has one."""
        for slot in threads:
            if waiting and not held.get(slot):
                send(slot)
        for slot in threads:
            if len(waiting) > slots and held.get(slot, 0) < 2:
                send(slot)

    fill()
    try:
        for fut in done:
            running.discard(fut)  # its result is released once recorded
            held[slot_of.pop(fut)] -= 1
            fill()  # before recording: a freed worker does not wait for it
            for o in fut.result():
                record(o)
            bars.advance_subject()
    except BaseException:
        for fut in running:
            fut.cancel()
        raise
    finally:
        if bars.progress is not None:
            executor.client.unsubscribe_topic(TOPIC)
