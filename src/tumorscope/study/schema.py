"""The study database schema (SQLAlchemy 2.0 declarative tables).

Design
------
Rows are keyed by the study's own identifiers (subject id, visit id, lesion id, series role,
model and parameter names) rather than by surrogate integers. Natural keys make "a re-run
replaces its rows" a plain ``DELETE … WHERE`` + ``INSERT`` in one transaction, keep exported
tables readable without joins, and are identical on SQLite and PostgreSQL.

Every result row belongs to a visit (``subject``, ``visit``) through a foreign key with
``ON DELETE CASCADE``; visits belong to subjects. ``step_runs`` is the pipeline's memory: one
row per step and unit of work with the content hash of its inputs and the hashes of the files
it wrote, so a re-run can tell what is up to date without looking at timestamps.

Units follow ``docs/architecture.md``; where a number has a unit it is in the column name
(``target_sum_mm``) or in a ``unit`` column (``measurements``, ``maps``).

The schema is created and upgraded only by the Alembic migrations shipped in
``tumorscope/study/migrations`` (see :func:`tumorscope.study.store.open_store`); a test checks
that the migrations and these classes agree.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

__all__ = [
    "TABLES",
    "Alignment",
    "Assessment",
    "Base",
    "Lesion",
    "Map",
    "Measurement",
    "Pattern",
    "Run",
    "SeriesRow",
    "StepRun",
    "Subject",
    "Visit",
]

#: Constraint naming convention, so that migrations name constraints the same on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every tumorscope table."""

    metadata = MetaData(naming_convention=NAMING)


def _deleted_with(table: str, *columns: str) -> tuple[ForeignKeyConstraint]:
    """``__table_args__``: ``columns`` refer to the same columns of ``table``, and a row goes
    when its parent row goes."""
    return (ForeignKeyConstraint(columns, [f"{table}.{c}" for c in columns], ondelete="CASCADE"),)


class _OfSubject:
    """A row of a subject: ``subject`` first in the primary key (the rest of it follows in the
    table), deleted with the subject.

    A mixin's columns would otherwise follow the table's own (and a base mixin's those of the
    mixin): ``sort_order`` puts them first, subject before visit.
    """

    subject: Mapped[str] = mapped_column(String(64), primary_key=True, sort_order=-2)

    @declared_attr.directive
    def __table_args__(cls) -> tuple[ForeignKeyConstraint]:
        return _deleted_with("subjects", "subject")


class _OfVisit(_OfSubject):
    """A row of a visit: ``subject`` and ``visit`` first in the primary key, deleted with the
    visit."""

    visit: Mapped[str] = mapped_column(String(64), primary_key=True, sort_order=-1)

    @declared_attr.directive
    def __table_args__(cls) -> tuple[ForeignKeyConstraint]:
        return _deleted_with("visits", "subject", "visit")


class Subject(Base):
    """A subject: treatment agent and start date (from ``study.yaml``)."""

    __tablename__ = "subjects"
    subject: Mapped[str] = mapped_column(String(64), primary_key=True)
    treatment_agent: Mapped[str | None] = mapped_column(String(128))
    treatment_start: Mapped[dt.date | None] = mapped_column(Date)
    n_visits: Mapped[int] = mapped_column(Integer)


class Visit(_OfSubject, Base):
    """A visit: date, days on treatment (negative before the start), baseline flags."""

    __tablename__ = "visits"
    visit: Mapped[str] = mapped_column(String(64), primary_key=True)
    date: Mapped[dt.date | None] = mapped_column(Date)
    days_on_treatment: Mapped[int | None] = mapped_column(Integer)
    baseline: Mapped[bool] = mapped_column(Boolean)
    prebaseline: Mapped[bool] = mapped_column(Boolean)


class SeriesRow(_OfVisit, Base):
    """An image series of a visit: role, file (relative to the study root), content hash."""

    __tablename__ = "series"
    role: Mapped[str] = mapped_column(String(64), primary_key=True)
    suffix: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    shape: Mapped[str] = mapped_column(String(64))
    n_measurements: Mapped[int] = mapped_column(Integer)


class Lesion(_OfSubject, Base):
    """A lesion of a subject, as the lesion tables name it (kind: target/non-target/new)."""

    __tablename__ = "lesions"
    lesion_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organ: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    nodal: Mapped[bool] = mapped_column(Boolean)
    first_visit: Mapped[str] = mapped_column(String(64))


class Map(_OfVisit, Base):
    """A fitted parameter map of a visit: file, unit, model, provenance and fit quality."""

    __tablename__ = "maps"
    model: Mapped[str] = mapped_column(String(64), primary_key=True)
    parameter: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[str] = mapped_column(String(64))
    unit: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    n_fitted: Mapped[int | None] = mapped_column(Integer)
    n_converged: Mapped[int | None] = mapped_column(Integer)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON)


class Measurement(_OfVisit, Base):
    """One number about one lesion at one visit (tidy: ``map`` is "" for geometry)."""

    __tablename__ = "measurements"
    lesion_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    map: Mapped[str] = mapped_column(String(64), primary_key=True)
    statistic: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[float | None] = mapped_column(Float)
    unit: Mapped[str] = mapped_column(String(32))
    step: Mapped[str] = mapped_column(String(64))


class Assessment(_OfVisit, Base):
    """A response assessment of a subject at a visit under one set of criteria."""

    __tablename__ = "assessments"
    criteria: Mapped[str] = mapped_column(String(32), primary_key=True)
    response: Mapped[str | None] = mapped_column(String(64))
    target_sum_mm: Mapped[float | None] = mapped_column(Float)
    change_from_baseline_pct: Mapped[float | None] = mapped_column(Float)
    change_from_nadir_pct: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)


class Pattern(_OfSubject, Base):
    """An immunotherapy response pattern of a subject (``visit`` is "" for a subject-level
    call): pseudoprogression, mixed response, hyperprogression, durable response.

    ``flag`` is NULL when the pattern cannot be evaluated (e.g. no pre-baseline scan for
    hyperprogression); ``reason`` says why either way.
    """

    __tablename__ = "patterns"
    pattern: Mapped[str] = mapped_column(String(64), primary_key=True)
    visit: Mapped[str] = mapped_column(String(64), primary_key=True)
    flag: Mapped[bool | None] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)


class Alignment(_OfVisit, Base):
    """How a series of a visit lies against the visit's anatomical image (``align`` step).

    ``matrix`` is the rigid world transform (RAS+, mm, 4×4, row-major) from the reference's
    space to the series' space; the displacements are those of the lesion voxels under it.
    ``applied`` says whether ``measure`` resampled the lesion masks through it (the mean
    displacement exceeded the tolerance); ``status`` is ``"registered"`` or ``"skipped"``
    (a series without anatomical contrast, e.g. 19F), with ``reason``.
    """

    __tablename__ = "alignments"
    series: Mapped[str] = mapped_column(String(64), primary_key=True)
    reference: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    mean_displacement_mm: Mapped[float | None] = mapped_column(Float)
    max_displacement_mm: Mapped[float | None] = mapped_column(Float)
    rotation_deg: Mapped[float | None] = mapped_column(Float)
    tolerance_mm: Mapped[float | None] = mapped_column(Float)
    applied: Mapped[bool] = mapped_column(Boolean)
    metric: Mapped[float | None] = mapped_column(Float)
    matrix: Mapped[list[Any] | None] = mapped_column(JSON)


class StepRun(Base):
    """The pipeline's memory of one step on one unit of work (a visit, subject or study)."""

    __tablename__ = "step_runs"
    step: Mapped[str] = mapped_column(String(64), primary_key=True)
    unit: Mapped[str] = mapped_column(String(128), primary_key=True)
    subject: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # "done" or "failed"
    input_hash: Mapped[str] = mapped_column(String(64))
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON)  # relative path -> sha256
    error: Mapped[str | None] = mapped_column(Text)
    error_file: Mapped[str | None] = mapped_column(Text)
    error_field: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[str] = mapped_column(String(64))
    finished_at: Mapped[dt.datetime] = mapped_column(DateTime)
    duration_s: Mapped[float] = mapped_column(Float)


class Run(Base):
    """One invocation of the pipeline: when, with what options, how it ended."""

    __tablename__ = "runs"
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(16))  # running, ok, failed
    n_done: Mapped[int] = mapped_column(Integer, default=0)
    n_skipped: Mapped[int] = mapped_column(Integer, default=0)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)
    log_file: Mapped[str | None] = mapped_column(Text)
    version: Mapped[str] = mapped_column(String(32))
    options: Mapped[dict[str, Any]] = mapped_column(JSON)


#: Result tables by name, in an order safe for inserting (parents first).
TABLES: dict[str, type[Base]] = {
    "subjects": Subject,
    "visits": Visit,
    "series": SeriesRow,
    "lesions": Lesion,
    "maps": Map,
    "measurements": Measurement,
    "assessments": Assessment,
    "patterns": Pattern,
    "alignments": Alignment,
    "step_runs": StepRun,
    "runs": Run,
}
