"""Teams carry a parking policy: how long their capsules made without a timeout of their own
may sit idle before they are paused (0: never), and whether such capsules resume on the next
request.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Constant defaults as strings: with an SQL expression for a default, a batch on SQLite
    # recreates the table instead of adding the columns.
    with op.batch_alter_table("teams") as batch:
        batch.add_column(
            sa.Column("park_after_sec", sa.Integer(), server_default="0", nullable=False)
        )
        batch.add_column(sa.Column("park_resume", sa.Boolean(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("teams") as batch:
        batch.drop_column("park_resume")
        batch.drop_column("park_after_sec")
