"""Who is calling: a user (JWT) or a team's API key, re-checked against the database.

A JWT's role and is_admin are hints; here the user must still exist and be active, the token
must carry the user's current token version (a password change or reset, or a deactivation,
revokes older tokens), the token's team must still exist and the user must still be a member,
and role/is_admin are read fresh.
An API key must exist, be unrevoked, belong to a team that is not deleted, and its creator must
still be an active member of that team: a key acts for its team only as long as the person who
made it could (removing a member also revokes their keys; a deactivated user's keys rest until
the user is reactivated).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .. import ids
from ..db.models import APIKey, Team, TeamMember, User
from ..errors import Forbidden, Unauthorized
from ..security import TokenCodec, hash_credential, looks_like_api_key
from .audit import Actor

# last_used is a hint for the UI: refreshing it at most once a minute keeps API-key requests
# from each being a database write.
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class Principal:
    kind: Literal["user", "api_key"]
    team_id: uuid.UUID | None
    # The user, or for an API key the user who created it (None if that user is gone).
    user_id: uuid.UUID | None
    # Membership role in `team_id`, from the database; None for API keys.
    role: str | None
    is_admin: bool
    name: str
    email: str | None = None
    api_key_id: uuid.UUID | None = None
    api_key_last_used: dt.datetime | None = None

    @property
    def actor(self) -> Actor:
        if self.kind == "api_key" and self.api_key_id is not None:
            return Actor(type="api_key", id=ids.API_KEY.format(self.api_key_id), name=self.name)
        user = ids.USER.format(self.user_id) if self.user_id else None
        return Actor(type="user", id=user, name=self.name)

    def require_team(self) -> uuid.UUID:
        if self.team_id is None:
            raise Forbidden("no active team: create or switch to a team first")
        return self.team_id

    def require_user(self) -> uuid.UUID:
        if self.kind != "user" or self.user_id is None:
            raise Unauthorized("this endpoint needs a user session (Authorization: Bearer)")
        return self.user_id


async def principal_from_token(
    session: AsyncSession, *, codec: TokenCodec, token: str
) -> Principal:
    claims = codec.verify(token)
    user = await session.get(User, claims.user_id)
    if user is None or not user.is_active or user.deleted_at is not None:
        raise Unauthorized("account not found or inactive")
    if claims.token_version != user.token_version:
        raise Unauthorized("token revoked (password changed or account deactivated): sign in again")
    role: str | None = None
    if claims.team_id is not None:
        role = await session.scalar(
            select(TeamMember.role)
            .join(Team, Team.id == TeamMember.team_id)
            .where(
                TeamMember.team_id == claims.team_id,
                TeamMember.user_id == user.id,
                Team.deleted_at.is_(None),
            )
        )
        if role is None:
            raise Unauthorized("no longer a member of the token's team: sign in again")
    return Principal(
        kind="user",
        team_id=claims.team_id,
        user_id=user.id,
        role=role,
        is_admin=user.is_admin,
        name=user.name,
        email=user.email,
    )


async def principal_from_api_key(session: AsyncSession, *, key: str) -> Principal:
    if not looks_like_api_key(key):
        raise Unauthorized("invalid API key")
    row = (
        await session.execute(
            select(APIKey)
            .join(Team, Team.id == APIKey.team_id)
            .join(
                TeamMember,
                (TeamMember.team_id == APIKey.team_id) & (TeamMember.user_id == APIKey.created_by),
            )
            .join(User, User.id == APIKey.created_by)
            .where(
                APIKey.key_hash == hash_credential(key),
                APIKey.revoked_at.is_(None),
                Team.deleted_at.is_(None),
                User.is_active,
                User.deleted_at.is_(None),
            )
        )
    ).scalar_one_or_none()
    if row is None:
        raise Unauthorized("invalid API key")
    return Principal(
        kind="api_key",
        team_id=row.team_id,
        user_id=row.created_by,
        role=None,
        is_admin=False,
        name=row.name,
        api_key_id=row.id,
        api_key_last_used=row.last_used,
    )


def needs_last_used_refresh(principal: Principal, now: dt.datetime) -> bool:
    if principal.api_key_id is None:
        return False
    last = principal.api_key_last_used
    return last is None or now - last >= LAST_USED_RESOLUTION


# An execution option marking a write that changes nothing a principal is checked on (an API
# key's last use): the authentication cache keeps its entries (services/auth_cache.py).
NEUTRAL_WRITE = "wrenn_auth_neutral"


async def touch_api_key(session: AsyncSession, *, key_id: uuid.UUID, now: dt.datetime) -> None:
    # Neutral for the authentication cache: a key's first use each minute used to empty it for
    # every credential of the process. The caller drops that key's own entry instead.
    statement = update(APIKey).where(APIKey.id == key_id).values(last_used=now)
    await session.execute(statement.execution_options(**{NEUTRAL_WRITE: True}))
