"""Template names are unique per team: templates get an id (the new primary key) and a
storage name (what the host agents key their files by, unique across the platform); capsules
record the id of the template they came from.

Existing templates keep their name as their storage name: their files on the hosts are stored
under it. Names were global until now, so each capsule's template name finds its row.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("templates") as batch:
        batch.add_column(sa.Column("id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("storage_name", sa.Text(), nullable=True))
    bind = op.get_bind()
    set_id = sa.text("UPDATE templates SET id = :id, storage_name = name WHERE name = :name")
    set_id = set_id.bindparams(sa.bindparam("id", type_=sa.Uuid()))
    for name in bind.execute(sa.text("SELECT name FROM templates")).scalars().all():
        bind.execute(set_id, {"id": uuid.uuid4(), "name": name})
    # Rebuilt on SQLite (nothing refers to templates, so no other table is touched).
    with op.batch_alter_table("templates", recreate="always") as batch:
        batch.alter_column("id", existing_type=sa.Uuid(), nullable=False)
        batch.alter_column("storage_name", existing_type=sa.Text(), nullable=False)
        batch.drop_constraint("pk_templates", type_="primary")
        batch.create_primary_key("pk_templates", ["id"])
        batch.create_unique_constraint("uq_templates_team_id_name", ["team_id", "name"])
        batch.create_unique_constraint("uq_templates_storage_name", ["storage_name"])

    # A plain column added in place: rebuilding sandboxes on SQLite would fire the foreign key
    # actions of the tables that refer to it.
    with op.batch_alter_table("sandboxes") as batch:
        batch.add_column(sa.Column("template_id", sa.Uuid(), nullable=True))
        batch.create_index("ix_sandboxes_template_id", ["template_id"])
    op.execute(
        "UPDATE sandboxes SET template_id = "
        "(SELECT templates.id FROM templates WHERE templates.name = sandboxes.template)"
    )


def downgrade() -> None:
    # Names become global again and the agents' files are found by name: a template stored
    # under another name (a team's, made since) would be lost, so the downgrade stops.
    bind = op.get_bind()
    renamed = bind.execute(
        sa.text("SELECT COUNT(*) FROM templates WHERE storage_name <> name")
    ).scalar_one()
    if renamed:
        raise RuntimeError(
            f"{renamed} template(s) are stored under a name of their own (teams' templates made "
            "since names became per team): delete them before downgrading"
        )
    with op.batch_alter_table("templates", recreate="always") as batch:
        batch.drop_constraint("uq_templates_storage_name", type_="unique")
        batch.drop_constraint("uq_templates_team_id_name", type_="unique")
        batch.drop_constraint("pk_templates", type_="primary")
        batch.create_primary_key("pk_templates", ["name"])
        batch.drop_column("storage_name")
        batch.drop_column("id")
    with op.batch_alter_table("sandboxes") as batch:
        batch.drop_index("ix_sandboxes_template_id")
        batch.drop_column("template_id")
