"""Recording on the client: each unit's outcome in one transaction (:class:`Recorder`),
the memory of a subject's units (:func:`subject_records`), and the study-level unit that
exports the tables and writes the study report (:func:`publish`).

Only the client writes to the database (SQLite stays safe under Dask).
"""

from __future__ import annotations

import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import layout
from ..errors import ExportError
from .execute import up_to_date
from .hashing import file_sha256, inputs_hash
from .logs import log
from .step import Context, Unit
from .summary import Failure, Outcome, RunSummary

if TYPE_CHECKING:
    from ..io import Study
    from ..study import Store

__all__ = ["Recorder", "publish", "subject_records"]


class Recorder:
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


def subject_records(store: Store, subject: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The last ``step_runs`` row of every unit of a subject, by ``(step, unit key)``."""
    rows = store.read_table("step_runs", subject=subject).to_dict("records")
    return {(str(r["step"]), str(r["unit"])): {str(k): v for k, v in r.items()} for r in rows}


def publish(
    ctx: Context, study: Study, store: Store, recorder: Recorder, *, force: bool, html: bool
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
    index = layout.study_report_path(ctx.out_dir)
    if not force and up_to_date(ctx, record, h):
        assert record is not None
        recorder.record(Outcome(unit, "skipped", h, dict(record["outputs"])))
        return index if html else None
    t0 = time.perf_counter()
    try:
        tables = store.export(layout.tables_dir(ctx.out_dir))
        files = [p for ps in tables.values() for p in ps]
        path = None
        if html:
            path = write_study_report(ctx.out_dir, study, store)
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
