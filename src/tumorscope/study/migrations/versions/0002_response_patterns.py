"""response patterns

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "patterns",
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("pattern", sa.String(length=64), nullable=False),
        sa.Column("visit", sa.String(length=64), nullable=False),
        sa.Column("flag", sa.Boolean(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["subject"],
            ["subjects.subject"],
            name=op.f("fk_patterns_subject_subjects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("subject", "pattern", "visit", name=op.f("pk_patterns")),
    )


def downgrade() -> None:
    op.drop_table("patterns")
