"""The ``register`` step: check every series and lesion map of a subject and record them.

It writes no file: its rows (``subjects``, ``visits``, ``series``, ``lesions``) are the
study as the database knows it, and its failure (a broken series, a lesion map that does not
match its table) stops the subject's other steps.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .step import (
    Context,
    StepOutput,
    Unit,
    Upstream,
    Write,
    _lesion_files,
    _manifest_file,
    _problems_error,
    _series_files,
)

if TYPE_CHECKING:
    from ..io import Study
    from ..io.study import Subject, Visit

__all__ = ["register_inputs", "run_register"]


def register_inputs(ctx: Context, study: Study, unit: Unit) -> list[Path]:
    """The manifest, every series (with its sidecars) and every lesion map of the subject."""
    files = [_manifest_file(ctx)]
    for visit in study.subjects[unit.subject]:
        for series in visit.series.values():
            files += _series_files(series.path)
        files += _lesion_files(visit)
    return files


def run_register(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """Check every series and lesion map of the subject; record subject, visits, series."""
    from ..io.study import validate_visit

    subject = study.subjects[unit.subject]
    threads = _threads()
    if threads > 1:  # the images decompressed on the unit's share of the cores
        with ThreadPoolExecutor(threads, thread_name_prefix="tumorscope-scan") as pool:
            problems = [p for visit in subject for p in validate_visit(study, visit, pool=pool)]
    else:
        problems = [p for visit in subject for p in validate_visit(study, visit)]
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise _problems_error(errors, f"subject {unit.subject}")
    s = unit.subject
    subject_row = {
        "subject": s,
        "treatment_agent": subject.treatment.agent,
        "treatment_start": subject.treatment.start_date,
        "n_visits": len(subject.visits),
    }
    writes = [
        Write("subjects", {"subject": s}, [subject_row], mode="upsert"),
        Write("visits", {"subject": s}, [_visit_row(s, v) for v in subject], mode="upsert"),
        Write("series", {"subject": s}, [r for v in subject for r in _series_rows(s, v)]),
        Write("lesions", {"subject": s}, _lesion_rows(s, subject)),
    ]
    return StepOutput(files=[], writes=writes, notes=[str(p) for p in problems])


def _threads() -> int:
    """This thread's share of the cores (:func:`tumorscope._threads.share_of_cores`: the
    executor sets it per unit, one in a serial run)."""
    from .._threads import share_of_cores

    return share_of_cores(load=True)


def _visit_row(s: str, visit: Visit) -> dict[str, Any]:
    return {
        "subject": s,
        "visit": visit.id,
        "date": visit.date,
        "days_on_treatment": visit.days_on_treatment,
        "baseline": visit.baseline,
        "prebaseline": visit.prebaseline,
    }


def _series_rows(s: str, visit: Visit) -> list[dict[str, Any]]:
    import nibabel as nib

    from ..files import file_sha256

    rows = []
    for role, ser in visit.series.items():
        img: Any = nib.load(str(ser.path))
        shape = tuple(int(n) for n in img.shape)
        rows.append(
            {
                "subject": s,
                "visit": visit.id,
                "role": role,
                "suffix": ser.suffix,
                "path": ser.relpath,
                "sha256": file_sha256(ser.path),
                "shape": "x".join(map(str, shape)),
                "n_measurements": shape[3] if len(shape) > 3 else 1,
            }
        )
    return rows


def _lesion_rows(s: str, subject: Subject) -> list[dict[str, Any]]:
    """One row per lesion of the subject, at the first visit it appears."""
    base = subject.baseline
    baseline_ids = set() if base.lesions is None else {r.lesion_id for r in base.lesions.table}
    lesions: dict[str, dict[str, Any]] = {}
    for visit in subject:
        if visit.lesions is None:
            continue
        for info in visit.lesions.table:
            if info.lesion_id in lesions:
                continue
            if info.target:
                kind = "target"
            elif visit.prebaseline or info.lesion_id in baseline_ids:
                kind = "non-target"
            else:
                kind = "new"
            lesions[info.lesion_id] = {
                "subject": s,
                "lesion_id": info.lesion_id,
                "organ": info.organ,
                "kind": kind,
                "nodal": info.nodal,
                "first_visit": visit.id,
            }
    return list(lesions.values())
