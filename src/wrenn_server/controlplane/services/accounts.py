"""Accounts: signup, login with email and password, and the current user's profile.

There is no mail server in a self-hosted box, so signup activates the account at once and creates
the user's default team (what the contract's `/v1/auth/activate` does after the email round trip).
The very first account of an installation becomes a platform admin: someone has to be able to
manage hosts, templates and builds, and on a fresh single box that is whoever set it up.

OAuth login (`oauth_login`) takes a profile the provider vouched for (`services/oauth.py`): a
known identity logs in, an active account with the same (verified) email gets the identity linked,
and anyone else gets a new password-less account with a default team, as signup would.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from sqlalchemy import exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models import OAuthIdentity, Team, User
from ..errors import BadRequest, Conflict, NotFound, Unauthorized
from ..security import (
    TokenCodec,
    UserClaims,
    hash_password,
    password_needs_rehash,
    verify_password,
)
from . import teams
from .oauth import ProviderProfile
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


async def create_account(
    session: AsyncSession, *, email: str, password: str, name: str, is_admin: bool | None = None
) -> tuple[User, Team]:
    """An active account with its default team (owner); `email` is already normalized.

    `is_admin` None: the first account of the installation becomes a platform admin.
    """
    if await session.scalar(select(exists().where(User.email == email))):
        raise Conflict("email already registered")
    if is_admin is None:
        is_admin = not await session.scalar(select(func.count()).select_from(User))
    # argon2 takes tens of milliseconds of CPU: off the event loop, so other requests go on.
    password_hash = await asyncio.to_thread(hash_password, password)
    user = User(
        email=email,
        name=name,
        password_hash=password_hash,
        is_active=True,
        is_admin=is_admin,
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
    return user, team


async def _is_first_user(session: AsyncSession) -> bool:
    return not await session.scalar(select(func.count()).select_from(User))


async def signup(
    session: AsyncSession, *, codec: TokenCodec, email: str, password: str, name: str
) -> SignedIn:
    """Create an active account with its default team; `email` is already normalized."""
    user, team = await create_account(session, email=email, password=password, name=name)
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


async def _login_as(session: AsyncSession, codec: TokenCodec, user: User) -> SignedIn:
    landing = await teams.login_team(session, user_id=user.id)
    team_id, role = landing if landing else (None, None)
    return _issue(codec, user, team_id, role)


async def oauth_login(
    session: AsyncSession, *, codec: TokenCodec, profile: ProviderProfile
) -> SignedIn:
    """A session for the provider's user. `Unauthorized` if the linked account is disabled,
    `Conflict` if the email belongs to an account that cannot be linked (inactive or deleted)."""
    identity = await session.scalar(
        select(OAuthIdentity).where(
            OAuthIdentity.provider == profile.provider,
            OAuthIdentity.provider_user_id == profile.provider_user_id,
        )
    )
    if identity is not None:
        user = await session.get(User, identity.user_id)
        if user is None or not user.is_active or user.deleted_at is not None:
            raise Unauthorized("account not found or inactive")
        if identity.email != profile.email:
            identity.email = profile.email
            await session.flush()
        return await _login_as(session, codec, user)

    existing = await session.scalar(select(User).where(User.email == profile.email))
    if existing is not None:
        if not existing.is_active or existing.deleted_at is not None:
            raise Conflict("email already registered")
        session.add(
            OAuthIdentity(
                user_id=existing.id,
                provider=profile.provider,
                provider_user_id=profile.provider_user_id,
                email=profile.email,
            )
        )
        await session.flush()
        return await _login_as(session, codec, existing)

    user = User(
        email=profile.email,
        name=profile.name,
        password_hash=None,
        is_active=True,
        is_admin=await _is_first_user(session),
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        # A signup with the same email committed between the check and the insert.
        raise Conflict("email already registered") from None
    session.add(
        OAuthIdentity(
            user_id=user.id,
            provider=profile.provider,
            provider_user_id=profile.provider_user_id,
            email=profile.email,
        )
    )
    await session.flush()
    team = await teams.create_team(
        session, owner_id=user.id, name=_default_team_name(profile.name), is_default=True
    )
    return _issue(codec, user, team.id, "owner")


async def oauth_link(
    session: AsyncSession, *, codec: TokenCodec, user_id: uuid.UUID, profile: ProviderProfile
) -> SignedIn:
    """Link the provider's user to the account `user_id` (the connect flow) and sign it in.
    `Unauthorized` if the account is gone or inactive; `Conflict` if the provider's user is
    linked to another account or the account has another identity at this provider."""
    user = await session.get(User, user_id)
    if user is None or not user.is_active or user.deleted_at is not None:
        raise Unauthorized("account not found or inactive")
    linked = (
        await session.scalars(
            select(OAuthIdentity).where(
                OAuthIdentity.provider == profile.provider,
                (OAuthIdentity.provider_user_id == profile.provider_user_id)
                | (OAuthIdentity.user_id == user.id),
            )
        )
    ).all()
    if any((i.user_id, i.provider_user_id) != (user.id, profile.provider_user_id) for i in linked):
        raise Conflict("provider account linked elsewhere")
    if not linked:
        session.add(
            OAuthIdentity(
                user_id=user.id,
                provider=profile.provider,
                provider_user_id=profile.provider_user_id,
                email=profile.email,
            )
        )
        try:
            await session.flush()
        except IntegrityError:
            raise Conflict("provider account linked elsewhere") from None
    return await _login_as(session, codec, user)


async def disconnect_provider(
    session: AsyncSession, *, principal: Principal, provider: str
) -> None:
    """Unlink the provider from the caller's account; refused when it is the last way to log in
    (no password and no other identity)."""
    user = await session.get(User, principal.require_user())
    if user is None:
        raise Unauthorized("account not found or inactive")
    identities = (
        await session.scalars(select(OAuthIdentity).where(OAuthIdentity.user_id == user.id))
    ).all()
    mine = [i for i in identities if i.provider == provider]
    if not mine:
        raise NotFound("provider not connected")
    if user.password_hash is None and len(identities) == len(mine):
        raise BadRequest("cannot disconnect the last login method")
    for identity in mine:
        await session.delete(identity)
    await session.flush()


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
