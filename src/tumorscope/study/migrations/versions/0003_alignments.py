"""alignments of the series of a visit (the pipeline's align step)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alignments",
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("visit", sa.String(length=64), nullable=False),
        sa.Column("series", sa.String(length=64), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("mean_displacement_mm", sa.Float(), nullable=True),
        sa.Column("max_displacement_mm", sa.Float(), nullable=True),
        sa.Column("rotation_deg", sa.Float(), nullable=True),
        sa.Column("tolerance_mm", sa.Float(), nullable=True),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.Column("metric", sa.Float(), nullable=True),
        sa.Column("matrix", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["subject", "visit"],
            ["visits.subject", "visits.visit"],
            name=op.f("fk_alignments_subject_visits"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("subject", "visit", "series", name=op.f("pk_alignments")),
    )


def downgrade() -> None:
    op.drop_table("alignments")
