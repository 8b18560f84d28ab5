"""Accounts: signup, login with email and password, and the current user's profile.

There is no mail server in a self-hosted box, so signup activates the account at once and creates
the user's default team (what the contract's `/v1/auth/activate` does after the email round trip).
The very first account of an installation becomes a platform admin: someone has to be able to
manage hosts, templates and builds, and on a fresh single box that is whoever set it up.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from sqlalchemy import exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models import OAuthIdentity, User
from ..errors import Conflict, Unauthorized
from ..security import (
    TokenCodec,
    UserClaims,
    hash_password,
    password_needs_rehash,
    verify_password,
)
from . import teams
from .principals import Principal
from .teams import TEAM_NAME_MAX


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A signed-in user: the account, the team the token acts in, and the token."""

    user: User
    team_id: uuid.UUID | None
    role: str | None
    token: str


@dataclass(frozen=True, slots=True)
class Profile:
    user: User
    providers: list[str]


def _issue(codec: TokenCodec, user: User, team_id: uuid.UUID | None, role: str | None) -> SignedIn:
    claims = UserClaims(
        user_id=user.id,
        team_id=team_id,
        role=role,
        is_admin=user.is_admin,
        name=user.name,
        email=user.email,
    )
    return SignedIn(user=user, team_id=team_id, role=role, token=codec.issue(claims))


def _default_team_name(user_name: str) -> str:
    name = f"{user_name}'s Team"
    return name if len(name) <= TEAM_NAME_MAX else user_name[:TEAM_NAME_MAX]


async def signup(
    session: AsyncSession, *, codec: TokenCodec, email: str, password: str, name: str
) -> SignedIn:
    """Create an active account with its default team; `email` is already normalized."""
    if await session.scalar(select(exists().where(User.email == email))):
        raise Conflict("email already registered")
    first_user = not await session.scalar(select(func.count()).select_from(User))
    # argon2 takes tens of milliseconds of CPU: off the event loop, so other requests go on.
    password_hash = await asyncio.to_thread(hash_password, password)
    user = User(
        email=email,
        name=name,
        password_hash=password_hash,
        is_active=True,
        is_admin=first_user,
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        # Another signup with the same email committed between the check and the insert.
        raise Conflict("email already registered") from None
    team = await teams.create_team(
        session, owner_id=user.id, name=_default_team_name(name), is_default=True
    )
    return _issue(codec, user, team.id, "owner")


async def login(session: AsyncSession, *, codec: TokenCodec, email: str, password: str) -> SignedIn:
    """A session for valid credentials; one `Unauthorized` for every kind of failure, so the
    answer does not reveal which emails have accounts."""
    user = await session.scalar(select(User).where(User.email == email))
    # verify_password runs (against a dummy hash) even for unknown emails: same timing.
    ok = await asyncio.to_thread(verify_password, user.password_hash if user else None, password)
    if user is None or not ok or not user.is_active or user.deleted_at is not None:
        raise Unauthorized("invalid email or password")
    assert user.password_hash is not None
    if password_needs_rehash(user.password_hash):
        # Rare (only after the hashing parameters change), so login runs in a read transaction
        # and this one write upgrades it.
        user.password_hash = await asyncio.to_thread(hash_password, password)
        await session.flush()
    landing = await teams.login_team(session, user_id=user.id)
    team_id, role = landing if landing else (None, None)
    return _issue(codec, user, team_id, role)


async def profile(session: AsyncSession, *, principal: Principal) -> Profile:
    user = await session.get(User, principal.require_user())
    if user is None:
        raise Unauthorized("account not found or inactive")
    providers = (
        await session.scalars(
            select(OAuthIdentity.provider)
            .where(OAuthIdentity.user_id == user.id)
            .order_by(OAuthIdentity.provider)
        )
    ).all()
    return Profile(user=user, providers=list(providers))


async def switch_team(
    session: AsyncSession, *, codec: TokenCodec, principal: Principal, team_id: uuid.UUID
) -> SignedIn:
    """A new token for `team_id`, after checking the membership in the database; the name and
    admin flag come from the database too, never from the old token."""
    user = await session.get(User, principal.require_user())
    if user is None or not user.is_active or user.deleted_at is not None:
        raise Unauthorized("account not found or inactive")
    team, role = await teams.switch_target(session, user_id=user.id, team_id=team_id)
    return _issue(codec, user, team.id, role)
