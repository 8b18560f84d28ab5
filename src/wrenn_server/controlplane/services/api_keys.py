"""Team API keys: create (plaintext returned once), list, revoke.

Keys belong to a team; every member may create and list them. Revoking takes an owner or admin of
the team, or the member who created the key. A revoked key is kept (revoked_at set) so audit
entries that name it stay meaningful, and it disappears from every listing.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .. import ids
from ..db.models import APIKey
from ..errors import Forbidden, NotFound
from ..security import generate_credential
from . import audit
from .principals import Principal


async def create_api_key(
    session: AsyncSession, *, principal: Principal, name: str
) -> tuple[APIKey, str]:
    """The new key's row and its plaintext (which is never stored)."""
    team_id = principal.require_team()
    new = generate_credential()
    key = APIKey(
        id=ids.new_id(),
        team_id=team_id,
        created_by=principal.user_id,
        name=name,
        key_prefix=new.prefix,
        key_hash=new.hash,
    )
    session.add(key)
    await session.flush()
    await record(session, principal, key, "create")
    return key, new.plaintext


async def list_api_keys(session: AsyncSession, *, principal: Principal) -> Sequence[APIKey]:
    team_id = principal.require_team()
    result = await session.scalars(
        select(APIKey)
        .where(APIKey.team_id == team_id, APIKey.revoked_at.is_(None))
        .order_by(APIKey.created_at.desc(), APIKey.id)
    )
    return result.all()


async def revoke_api_key(session: AsyncSession, *, principal: Principal, key_id: uuid.UUID) -> None:
    team_id = principal.require_team()
    key = await session.scalar(
        select(APIKey).where(
            APIKey.id == key_id, APIKey.team_id == team_id, APIKey.revoked_at.is_(None)
        )
    )
    # Keys of other teams are reported missing, not forbidden: their existence is not ours to tell.
    if key is None:
        raise NotFound("API key not found")
    is_creator = principal.user_id is not None and key.created_by == principal.user_id
    if principal.role not in ("owner", "admin") and not is_creator:
        raise Forbidden("only the key's creator or a team owner or admin may revoke it")
    key.revoked_at = dt.datetime.now(dt.UTC)
    await session.flush()
    await record(session, principal, key, "revoke")


async def record(
    session: AsyncSession, principal: Principal, key: APIKey, action: str, **extra: str
) -> None:
    """An audit event about a key, in the key's team."""
    await audit.record(
        session,
        actor=principal.actor,
        team_id=key.team_id,
        resource_type="api_key",
        resource_id=ids.API_KEY.format(key.id),
        action=action,
        metadata={"name": key.name, "key_prefix": key.key_prefix, **extra},
    )
