"""Self-contained HTML reports (study and subject) with embedded SVG figures.

:func:`write_study_report` (from the database), :func:`write_subject_report` and
:func:`write_subject_viewer` (from the files of a run) are called by the pipeline; :mod:`tumorscope.report.figures` holds the plots.
"""

from __future__ import annotations

from .html import (
    FDM_THRESHOLD,
    render,
    write_study_report,
    write_subject_report,
    write_subject_viewer,
)

__all__ = [
    "FDM_THRESHOLD",
    "render",
    "write_study_report",
    "write_subject_report",
    "write_subject_viewer",
]
