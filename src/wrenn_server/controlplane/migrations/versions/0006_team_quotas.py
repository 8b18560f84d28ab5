"""Per-team quota overrides (a row per team whose limits differ from the platform defaults), and
the free disk space hosts report, for placement.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL in a column means "the platform default" (settings), so changing a default reaches
    # every team that was never given its own value.
    op.create_table(
        "team_quotas",
        sa.Column("team_id", sa.Uuid(), nullable=False),
        sa.Column("max_capsules", sa.Integer(), nullable=True),
        sa.Column("max_vcpus", sa.Integer(), nullable=True),
        sa.Column("max_memory_mb", sa.Integer(), nullable=True),
        sa.Column("max_disk_mb", sa.Integer(), nullable=True),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_team_quotas_team_id_teams"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("team_id", name=op.f("pk_team_quotas")),
    )
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("disk_free_mb", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("disk_free_mb")
    op.drop_table("team_quotas")
