"""User lookup: the email-prefix search behind the add-member autocomplete.

It must not tell anyone which emails have accounts: a user finds only the people they already
share a team with (platform admins, who see every account anyway, find anyone). Someone else is
added by typing their whole address. The prefix must also contain '@', LIKE metacharacters in
it match only themselves, and at most `SEARCH_LIMIT` users come back.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models import Team, TeamMember, User
from ..errors import BadRequest

SEARCH_LIMIT = 10
_ESCAPE = "\\"


def escape_like(value: str) -> str:
    """`value` as a literal inside a LIKE pattern that uses `ESCAPE '\\'`."""
    return (
        value.replace(_ESCAPE, _ESCAPE * 2).replace("%", _ESCAPE + "%").replace("_", _ESCAPE + "_")
    )


async def search_by_email_prefix(
    session: AsyncSession, *, prefix: str, user_id: uuid.UUID, is_admin: bool
) -> Sequence[User]:
    prefix = prefix.strip().lower()
    if "@" not in prefix:
        raise BadRequest("the email prefix must contain '@'")
    if len(prefix) > 320:
        raise BadRequest("the email prefix is too long")
    query = select(User).where(
        User.email.like(escape_like(prefix) + "%", escape=_ESCAPE),
        User.is_active,
        User.deleted_at.is_(None),
    )
    if not is_admin:
        my_teams = (
            select(TeamMember.team_id)
            .join(Team, Team.id == TeamMember.team_id)
            .where(TeamMember.user_id == user_id, Team.deleted_at.is_(None))
        )
        co_members = select(TeamMember.user_id).where(TeamMember.team_id.in_(my_teams))
        query = query.where(User.id.in_(co_members))
    rows = await session.scalars(query.order_by(User.email).limit(SEARCH_LIMIT))
    return rows.all()
