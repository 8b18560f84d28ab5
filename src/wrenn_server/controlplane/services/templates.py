"""Which template a name means, and the names templates are stored under on the hosts.

Names are unique per team. The platform's templates (team `ids.PLATFORM_TEAM_ID`) are a
namespace of their own that every team sees: a team cannot take a platform template's name
(409 `name_reserved`), so a name is ambiguous for a team only where the platform named a
template after one the team already had; the team's own is then what the name means to it, as
it did before. The host agents store a template's files under its `storage_name`, unique across
the platform: a platform template's is its name, a team's is its name and the row's id (so
two teams' `x` never meet on a host, nor a team's name a platform template's).
"""

from __future__ import annotations

import uuid

from sqlalchemy import case, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from .. import ids
from ..db.models.accounts import Team
from ..db.models.capsules import Template
from ..errors import BadRequest, Conflict, NameReserved, NameTaken, NotFound

# A team's storage name keeps this much of its name, so names on a host stay recognisable
# and the whole fits the agent's 128 characters (`.` and 32 hex digits follow).
_STORAGE_NAME_KEEP = 90


def storage_name(team_id: uuid.UUID, name: str, template_id: uuid.UUID) -> str:
    """The name a new template's files are stored under on its host."""
    if team_id == ids.PLATFORM_TEAM_ID:
        return name
    return f"{name[:_STORAGE_NAME_KEEP]}.{template_id.hex}"


async def find_visible(session: AsyncSession, team_id: uuid.UUID, name: str) -> Template | None:
    """The template `name` means to the team: its own, else the platform's."""
    query = (
        select(Template)
        .where(
            Template.name == name,
            or_(Template.team_id == team_id, Template.team_id == ids.PLATFORM_TEAM_ID),
        )
        .order_by(case((Template.team_id == team_id, 0), else_=1))
        .limit(1)
    )
    return (await session.scalars(query)).first()


async def visible_template(session: AsyncSession, team_id: uuid.UUID, name: str) -> Template:
    """The template a request names, if the team may use it. A name in a request body, not the
    resource of the URL: an unknown one makes the request invalid (400), as a missing one
    would."""
    template = await find_visible(session, team_id, name)
    if template is None:
        raise BadRequest(f"template {name!r} not found")
    return template


async def owned(session: AsyncSession, team_id: uuid.UUID, name: str) -> Template | None:
    """The team's own template of that name (the platform's, for the platform team)."""
    return await session.scalar(
        select(Template).where(Template.team_id == team_id, Template.name == name)
    )


async def platform_template(session: AsyncSession, name: str) -> Template | None:
    return await owned(session, ids.PLATFORM_TEAM_ID, name)


async def by_id(session: AsyncSession, template_id: uuid.UUID | None) -> Template | None:
    """A capsule's template, if it still exists."""
    return await session.get(Template, template_id) if template_id is not None else None


async def any_team(session: AsyncSession, name: str, team_id: uuid.UUID | None) -> Template:
    """A template for a platform admin, who may name any team's: `team_id`'s, or the only one
    of that name (409 when several teams have one, 404 when none has)."""
    query = select(Template).where(Template.name == name)
    if team_id is not None:
        query = query.where(Template.team_id == team_id)
    found = list(await session.scalars(query.limit(2)))
    if not found:
        raise NotFound(f"template {name!r} not found")
    if len(found) > 1:
        raise Conflict(f"several teams have a template named {name!r}: say whose with ?team_id=")
    return found[0]


async def lock_names(session: AsyncSession, team_id: uuid.UUID) -> None:
    """Serialize the team's template writes (its row's lock; SQLite's writers already are), so
    a check for a free name and the insert it allows cannot interleave with another's."""
    await session.execute(select(Team.id).where(Team.id == team_id).with_for_update())


async def check_name(
    session: AsyncSession, team_id: uuid.UUID, name: str, *, overwrite: bool
) -> Template | None:
    """Whether the team may give a template `name`: the template it replaces (with
    `overwrite`), else None. A platform template's name is reserved (409 `name_reserved`); a
    name the team already has is taken unless it is replaced (409 `template_name_taken`); a
    new platform name must not be the storage name of a team's template from before names were
    per team (it holds that name on its host)."""
    if team_id != ids.PLATFORM_TEAM_ID and await platform_template(session, name) is not None:
        # The Go system's answer: a platform template's name is no team's to take.
        raise NameReserved(f"{name!r} is the name of a platform template")
    existing = await owned(session, team_id, name)
    if existing is not None and not overwrite:
        raise NameTaken(f"a template named {name!r} already exists")
    if existing is None and team_id == ids.PLATFORM_TEAM_ID:
        stored = await session.scalar(select(Template.id).where(Template.storage_name == name))
        if stored is not None:
            raise NameTaken(f"a team's template is stored as {name!r}: choose another name")
    return existing
