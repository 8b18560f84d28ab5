"""Capsules created through the E2B control API keep E2B's lifecycle (an absolute end, then
killed or paused) and their envVars in a table of their own;
E2B snapshots remember the capsule they were taken from.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "e2b_sandboxes",
        sa.Column("sandbox_id", sa.Uuid(), nullable=False),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("auto_pause", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("env", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["sandbox_id"],
            ["sandboxes.id"],
            name=op.f("fk_e2b_sandboxes_sandbox_id_sandboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("sandbox_id", name=op.f("pk_e2b_sandboxes")),
    )
    op.create_index(op.f("ix_e2b_sandboxes_end_at"), "e2b_sandboxes", ["end_at"])
    op.create_table(
        "e2b_snapshots",
        sa.Column("team_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("sandbox_id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("team_id", "name", name=op.f("pk_e2b_snapshots")),
    )
    op.create_index(op.f("ix_e2b_snapshots_sandbox_id"), "e2b_snapshots", ["sandbox_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_e2b_snapshots_sandbox_id"), table_name="e2b_snapshots")
    op.drop_table("e2b_snapshots")
    op.drop_index(op.f("ix_e2b_sandboxes_end_at"), table_name="e2b_sandboxes")
    op.drop_table("e2b_sandboxes")
