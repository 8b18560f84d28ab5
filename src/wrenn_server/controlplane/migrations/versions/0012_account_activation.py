"""Mailed one-time tokens may also activate an account (signup with email verification).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _purposes(purposes: str) -> None:
    with op.batch_alter_table("user_tokens") as batch:
        batch.drop_constraint(batch.f("ck_user_tokens_purpose"), type_="check")
        batch.create_check_constraint(batch.f("ck_user_tokens_purpose"), f"purpose IN ({purposes})")


def upgrade() -> None:
    _purposes("'password_reset', 'activation'")


def downgrade() -> None:
    op.execute("DELETE FROM user_tokens WHERE purpose = 'activation'")
    _purposes("'password_reset'")
