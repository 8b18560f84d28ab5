"""Accounts through OAuth providers: signing in with a provider's user, linking a provider to
the signed-in account, and unlinking one.

OAuth login (`oauth_login`) links the provider to an existing account with the same email only
if that account's email is verified: otherwise whoever registered the address first (without
proving it) would share the account of its real owner. Linking while signed in (`oauth_link`)
needs no such proof. A provider vouching for the account's own email verifies it.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models import OAuthIdentity, User
from ..db.types import utcnow
from ..errors import BadRequest, Conflict, EmailTaken, NotFound, Unauthorized
from ..security import TokenCodec
from . import invitations, teams
from .accounts import (
    SIGNUP_CLOSED,
    SignedIn,
    SignupDisabled,
    SignupMode,
    default_team_name,
    is_first_user,
    issue,
    login_as,
    usable,
)
from .oauth import ProviderProfile
from .principals import Principal


def _identity(user: User, profile: ProviderProfile) -> OAuthIdentity:
    return OAuthIdentity(
        user_id=user.id,
        provider=profile.provider,
        provider_user_id=profile.provider_user_id,
        email=profile.email,
    )


def _note_verified(user: User, profile: ProviderProfile) -> None:
    # The provider vouches for its (verified, primary) email: if that is the account's, the
    # account's email is proven too.
    if user.email_verified_at is None and profile.email == user.email:
        user.email_verified_at = utcnow()


async def oauth_login(
    session: AsyncSession, *, codec: TokenCodec, mode: SignupMode, profile: ProviderProfile
) -> SignedIn:
    """A session for the provider's user.

    `Unauthorized` if the linked account is disabled; `Conflict` if the email belongs to an
    account that may not be linked (its email unverified, or it is inactive or deleted);
    `SignupDisabled` for a new user when signup is closed, or is by invitation and the email
    has none."""
    identity = await session.scalar(
        select(OAuthIdentity).where(
            OAuthIdentity.provider == profile.provider,
            OAuthIdentity.provider_user_id == profile.provider_user_id,
        )
    )
    if identity is not None:
        user = await session.get(User, identity.user_id)
        if user is None or not usable(user):
            raise Unauthorized("account not found or inactive")
        identity.email = profile.email
        _note_verified(user, profile)
        await session.flush()
        return await login_as(session, codec, user)

    existing = await session.scalar(select(User).where(User.email == profile.email))
    if existing is not None:
        if not usable(existing) or existing.email_verified_at is None:
            # Unverified: whoever registered this email never proved it is theirs; its owner,
            # who just did, must not share that account. They may prove it with a password
            # reset (which ends the other holder's access), then sign in here.
            raise EmailTaken("email already registered")
        session.add(_identity(existing, profile))
        await session.flush()
        return await login_as(session, codec, existing)

    now = utcnow()
    if mode == "closed":
        raise SignupDisabled(SIGNUP_CLOSED)
    if (
        mode == "invite"
        and await invitations.accept_for_email(session, email=profile.email, now=now) is None
    ):
        raise SignupDisabled("signup needs an invitation: ask an administrator for one")
    user = User(
        email=profile.email,
        name=profile.name,
        password_hash=None,
        is_active=True,
        is_admin=await is_first_user(session),
        email_verified_at=now,
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        # A signup with the same email committed between the check and the insert.
        raise EmailTaken("email already registered") from None
    session.add(_identity(user, profile))
    await session.flush()
    team = await teams.create_team(
        session, owner_id=user.id, name=default_team_name(profile.name), is_default=True
    )
    return issue(codec, user, team.id, "owner")


async def oauth_link(
    session: AsyncSession, *, codec: TokenCodec, user_id: uuid.UUID, profile: ProviderProfile
) -> SignedIn:
    """Link the provider's user to the account `user_id` (the connect flow) and sign it in.
    `Unauthorized` if the account is gone or inactive; `Conflict` if the provider's user is
    linked to another account or the account has another identity at this provider."""
    user = await session.get(User, user_id)
    if user is None or not usable(user):
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
        session.add(_identity(user, profile))
        try:
            await session.flush()
        except IntegrityError:
            raise Conflict("provider account linked elsewhere") from None
    _note_verified(user, profile)
    await session.flush()
    return await login_as(session, codec, user)


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
