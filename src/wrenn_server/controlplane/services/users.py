"""Site-wide user lookup: the email-prefix search behind the add-member autocomplete.

Not team-scoped. To keep it from enumerating every account, the prefix must contain '@' (so the
caller already knows the whole local part), LIKE metacharacters in it match only themselves, and
at most `SEARCH_LIMIT` users come back.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models import User
from ..errors import BadRequest

SEARCH_LIMIT = 10
_ESCAPE = "\\"


def escape_like(value: str) -> str:
    """`value` as a literal inside a LIKE pattern that uses `ESCAPE '\\'`."""
    return (
        value.replace(_ESCAPE, _ESCAPE * 2).replace("%", _ESCAPE + "%").replace("_", _ESCAPE + "_")
    )


async def search_by_email_prefix(session: AsyncSession, *, prefix: str) -> Sequence[User]:
    prefix = prefix.strip().lower()
    if "@" not in prefix:
        raise BadRequest("the email prefix must contain '@'")
    if len(prefix) > 320:
        raise BadRequest("the email prefix is too long")
    rows = await session.scalars(
        select(User)
        .where(
            User.email.like(escape_like(prefix) + "%", escape=_ESCAPE),
            User.is_active,
            User.deleted_at.is_(None),
        )
        .order_by(User.email)
        .limit(SEARCH_LIMIT)
    )
    return rows.all()
