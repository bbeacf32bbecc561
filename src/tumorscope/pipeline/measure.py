"""The ``measure`` step: a thin adapter over :func:`tumorscope.stages.lesions.measure_subject`.

It finds each visit's maps (the map indexes of the fit steps), their series and the
alignments ``align`` applied among the outputs of the steps it requires, and lets the stage
measure every lesion and write the subject's tables (:func:`tumorscope.layout.
measurements_path`, :func:`~tumorscope.layout.lesion_table_path`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .. import layout
from . import step
from .step import Context, StepOutput, Unit, Upstream, Write

if TYPE_CHECKING:
    from ..io import Study

__all__ = ["measure_inputs", "run_measure"]


def measure_inputs(ctx: Context, study: Study, unit: Unit) -> list[Path]:
    """The manifest and the lesion maps of every visit of the subject."""
    visits = study.subjects[unit.subject]
    return [step._manifest_file(ctx), *(p for v in visits for p in step._lesion_files(v))]


def run_measure(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """Geometry of every lesion at every visit, and statistics of every fitted map in it."""
    from ..stages.lesions import VisitMeasureInputs, measure_subject

    s = unit.subject
    subject = study.subjects[s]
    inputs = {
        v.id: VisitMeasureInputs(
            maps=step.maps_of_visit(ctx, upstream, s, v.id),
            series=step.map_series_of_visit(ctx, upstream, s, v.id),
            alignments=step.applied_alignments(ctx, upstream, s, v.id),
        )
        for v in subject
    }
    res = measure_subject(
        subject,
        inputs,
        measurements_path=layout.measurements_path(ctx.out_dir, s),
        lesion_table_path=layout.lesion_table_path(ctx.out_dir, s),
    )
    rows = [{**r, "step": "measure"} for r in res.rows["measurements"]]
    return StepOutput(
        files=res.files,
        writes=[Write("measurements", {"subject": s, "step": "measure"}, rows)],
        notes=res.warnings,
    )
