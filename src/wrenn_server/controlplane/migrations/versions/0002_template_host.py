"""Templates remember the host holding their files (snapshots and built images).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("templates") as batch:
        batch.add_column(sa.Column("host_id", sa.Uuid(), nullable=True))
        batch.create_index(batch.f("ix_templates_host_id"), ["host_id"])
        batch.create_foreign_key(
            batch.f("fk_templates_host_id_hosts"), "hosts", ["host_id"], ["id"], ondelete="CASCADE"
        )


def downgrade() -> None:
    with op.batch_alter_table("templates") as batch:
        batch.drop_constraint(batch.f("fk_templates_host_id_hosts"), type_="foreignkey")
        batch.drop_index(batch.f("ix_templates_host_id"))
        batch.drop_column("host_id")
