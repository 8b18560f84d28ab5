"""Leases, so that several control plane processes can share one database and only one runs
the reconciler and the stats sampler.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    leases = op.create_table(
        "leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    # The row exists from the start: taking the lease is then one conditional UPDATE.
    op.bulk_insert(
        leases,
        [
            {
                "name": "background",
                "holder": None,
                "expires_at": dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
            }
        ],
    )


def downgrade() -> None:
    op.drop_table("leases")
