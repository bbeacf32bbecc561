"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("n_done", sa.Integer(), nullable=False),
        sa.Column("n_skipped", sa.Integer(), nullable=False),
        sa.Column("n_failed", sa.Integer(), nullable=False),
        sa.Column("log_file", sa.Text(), nullable=True),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_runs")),
    )
    op.create_table(
        "step_runs",
        sa.Column("step", sa.String(length=64), nullable=False),
        sa.Column("unit", sa.String(length=128), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("input_hash", sa.String(length=64), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_file", sa.Text(), nullable=True),
        sa.Column("error_field", sa.Text(), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("step", "unit", name=op.f("pk_step_runs")),
    )
    op.create_table(
        "subjects",
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("treatment_agent", sa.String(length=128), nullable=True),
        sa.Column("treatment_start", sa.Date(), nullable=True),
        sa.Column("n_visits", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("subject", name=op.f("pk_subjects")),
    )
    op.create_table(
        "lesions",
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("lesion_id", sa.String(length=64), nullable=False),
        sa.Column("organ", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("nodal", sa.Boolean(), nullable=False),
        sa.Column("first_visit", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["subject"],
            ["subjects.subject"],
            name=op.f("fk_lesions_subject_subjects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("subject", "lesion_id", name=op.f("pk_lesions")),
    )
    op.create_table(
        "visits",
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("visit", sa.String(length=64), nullable=False),
        sa.Column("date", sa.Date(), nullable=True),
        sa.Column("days_on_treatment", sa.Integer(), nullable=True),
        sa.Column("baseline", sa.Boolean(), nullable=False),
        sa.Column("prebaseline", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["subject"],
            ["subjects.subject"],
            name=op.f("fk_visits_subject_subjects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("subject", "visit", name=op.f("pk_visits")),
    )
    op.create_table(
        "assessments",
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("visit", sa.String(length=64), nullable=False),
        sa.Column("criteria", sa.String(length=32), nullable=False),
        sa.Column("response", sa.String(length=64), nullable=True),
        sa.Column("target_sum_mm", sa.Float(), nullable=True),
        sa.Column("change_from_baseline_pct", sa.Float(), nullable=True),
        sa.Column("change_from_nadir_pct", sa.Float(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["subject", "visit"],
            ["visits.subject", "visits.visit"],
            name=op.f("fk_assessments_subject_visits"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("subject", "visit", "criteria", name=op.f("pk_assessments")),
    )
    op.create_table(
        "maps",
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("visit", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("parameter", sa.String(length=64), nullable=False),
        sa.Column("step", sa.String(length=64), nullable=False),
        sa.Column("unit", sa.String(length=32), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("n_fitted", sa.Integer(), nullable=True),
        sa.Column("n_converged", sa.Integer(), nullable=True),
        sa.Column("provenance", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["subject", "visit"],
            ["visits.subject", "visits.visit"],
            name=op.f("fk_maps_subject_visits"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("subject", "visit", "model", "parameter", name=op.f("pk_maps")),
    )
    op.create_table(
        "measurements",
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("visit", sa.String(length=64), nullable=False),
        sa.Column("lesion_id", sa.String(length=64), nullable=False),
        sa.Column("map", sa.String(length=64), nullable=False),
        sa.Column("statistic", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("unit", sa.String(length=32), nullable=False),
        sa.Column("step", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["subject", "visit"],
            ["visits.subject", "visits.visit"],
            name=op.f("fk_measurements_subject_visits"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "subject", "visit", "lesion_id", "map", "statistic", name=op.f("pk_measurements")
        ),
    )
    op.create_table(
        "series",
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("visit", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=64), nullable=False),
        sa.Column("suffix", sa.String(length=64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("shape", sa.String(length=64), nullable=False),
        sa.Column("n_measurements", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["subject", "visit"],
            ["visits.subject", "visits.visit"],
            name=op.f("fk_series_subject_visits"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("subject", "visit", "role", name=op.f("pk_series")),
    )


def downgrade() -> None:
    op.drop_table("series")
    op.drop_table("measurements")
    op.drop_table("maps")
    op.drop_table("assessments")
    op.drop_table("visits")
    op.drop_table("lesions")
    op.drop_table("subjects")
    op.drop_table("step_runs")
    op.drop_table("runs")
