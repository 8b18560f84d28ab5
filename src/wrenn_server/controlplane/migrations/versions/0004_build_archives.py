"""Build archives move into the database and running builds heartbeat, so that any control
plane process can run a build and notice one whose process died.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "template_build_archives",
        sa.Column("build_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["build_id"],
            ["template_builds.id"],
            name=op.f("fk_template_build_archives_build_id_template_builds"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("build_id", "seq", name=op.f("pk_template_build_archives")),
    )
    # Archives kept on one process's disk are not carried over: the unfinished builds that had
    # one fail (a finished build's archive was deleted already).
    op.execute(
        "UPDATE template_builds SET status = 'failed', "
        "error = 'interrupted by an upgrade: submit the build again', "
        "completed_at = CURRENT_TIMESTAMP "
        "WHERE archive_path IS NOT NULL AND status IN ('pending', 'running')"
    )
    with op.batch_alter_table("template_builds") as batch:
        batch.drop_column("archive_path")
        batch.add_column(sa.Column("archive_sha256", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("template_builds") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("archive_sha256")
        batch.add_column(sa.Column("archive_path", sa.Text(), nullable=True))
    op.drop_table("template_build_archives")
