"""Accounts: signup, login with email and password, OAuth login, and the current user's profile.

Who may sign up is the `signup` setting: `open` (anyone), `invite` (only with a platform admin's
invitation for that email, see `invitations`) or `closed` (nobody: admins add accounts). A
refused signup in `invite` or `closed` mode gets one generic answer whatever the email, so it
does not tell which emails have accounts. (`open` cannot hide that: a second account with the
same email must be refused somehow, and signing in would tell anyway; so an `open` signup that
creates no account counts against its client address in the sign-in throttle.)

Signup activates the account at once and creates the user's default team (what the contract's
`/v1/auth/activate` does after its email round trip). The very first account of an
installation becomes a platform admin.

Emails are verified (`User.email_verified_at`) when the user proved they receive mail there: an
invitation or a password reset link used, an admin creating the account, or an OAuth provider
vouching for the address. OAuth login (`oauth_login`) links the provider to an existing account
with the same email only if that account's email is verified: otherwise whoever registered the
address first (without proving it) would share the account of its real owner. Linking while
signed in (`oauth_link`) needs no such proof.

Login is throttled per account and per client address (`throttle`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models import OAuthIdentity, Team, User
from ..db.session import Database, transaction
from ..errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from ..security import (
    TokenCodec,
    UserClaims,
    hash_password,
    password_needs_rehash,
    verify_password,
)
from . import invitations, teams, throttle
from .oauth import ProviderProfile
from .principals import Principal
from .teams import TEAM_NAME_MAX

SignupMode = Literal["open", "invite", "closed"]

SIGNUP_CLOSED = "signup is closed: ask an administrator for an account"
INVALID_INVITATION = "this invitation is not valid (used, expired, revoked, or for another email)"


class SignupDisabled(Forbidden):
    """A new account is not allowed here (an OAuth sign-in of an unknown user, mostly)."""


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


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _issue(codec: TokenCodec, user: User, team_id: uuid.UUID | None, role: str | None) -> SignedIn:
    claims = UserClaims(
        user_id=user.id,
        team_id=team_id,
        role=role,
        is_admin=user.is_admin,
        name=user.name,
        email=user.email,
        token_version=user.token_version,
    )
    return SignedIn(user=user, team_id=team_id, role=role, token=codec.issue(claims))


def _default_team_name(user_name: str) -> str:
    name = f"{user_name}'s Team"
    return name if len(name) <= TEAM_NAME_MAX else user_name[:TEAM_NAME_MAX]


async def create_account(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    name: str,
    is_admin: bool | None = None,
    verified: bool = False,
) -> tuple[User, Team]:
    """An active account with its default team (owner); `email` is already normalized.

    `is_admin` None: the first account of the installation becomes a platform admin.
    `verified`: the email is proven (an admin made the account, or an invitation was used).
    """
    if await session.scalar(select(exists().where(User.email == email))):
        raise Conflict("email already registered")
    if is_admin is None:
        is_admin = await _is_first_user(session)
    # argon2 takes tens of milliseconds of CPU: off the event loop, so other requests go on.
    password_hash = await asyncio.to_thread(hash_password, password)
    user = User(
        email=email,
        name=name,
        password_hash=password_hash,
        is_active=True,
        is_admin=is_admin,
        email_verified_at=utcnow() if verified else None,
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
    db: Database,
    *,
    codec: TokenCodec,
    mode: SignupMode,
    limits: throttle.Limits,
    email: str,
    password: str,
    name: str,
    invitation: str | None,
    address: str | None,
) -> SignedIn:
    """Create an active account with its default team; `email` is already normalized.

    `closed`: refused. `invite`: `invitation` must be a pending invitation for `email`. Every
    refusal of those two modes is the same `Forbidden`, whether or not the email has an account.
    `open`: the 409 for a taken email tells that it has an account, so each signup is counted
    against `address` like a failed sign-in (committed first, so concurrent ones see each
    other) and the count is given back only if it creates the account: listing accounts from
    one address gets `TooManyRequests`, whatever the email, as guessing passwords does.
    """
    attempt = None
    if mode == "open":
        async with db.sessionmaker() as session, transaction(session, write=True):
            attempt = await throttle.begin_attempt(
                session, limits=limits, email=None, address=address, now=utcnow()
            )
    async with db.sessionmaker() as session, transaction(session, write=True):
        signed_in = await _signup(
            session,
            codec=codec,
            mode=mode,
            email=email,
            password=password,
            name=name,
            invitation=invitation,
        )
        if attempt is not None:
            await throttle.attempt_succeeded(session, attempt)
        return signed_in


async def _signup(
    session: AsyncSession,
    *,
    codec: TokenCodec,
    mode: SignupMode,
    email: str,
    password: str,
    name: str,
    invitation: str | None,
) -> SignedIn:
    if mode == "closed":
        raise Forbidden(SIGNUP_CLOSED)
    if mode == "invite" and not invitation:
        raise Forbidden("signup needs an invitation: ask an administrator for one")
    accepted = None
    if invitation:
        accepted = await invitations.accept_token(
            session, token=invitation, email=email, now=utcnow()
        )
        if accepted is None:
            raise Forbidden(INVALID_INVITATION)
    try:
        user, team = await create_account(
            session, email=email, password=password, name=name, verified=accepted is not None
        )
    except Conflict:
        if accepted is not None:
            # Someone with the invitation link: still no word on whether the email is taken.
            raise Forbidden(INVALID_INVITATION) from None
        raise
    return _issue(codec, user, team.id, "owner")


async def login(
    db: Database,
    *,
    codec: TokenCodec,
    limits: throttle.Limits,
    email: str,
    password: str,
    address: str | None,
) -> SignedIn:
    """A session for valid credentials; one `Unauthorized` for every kind of failure, so the
    answer does not reveal which emails have accounts; `TooManyRequests` while the account or
    the address is throttled.

    Three short transactions: count the attempt (committed before the password is checked, so
    concurrent guesses see each other), check the password outside any transaction (argon2
    takes tens of milliseconds), then clear the count and sign in."""
    async with db.sessionmaker() as session, transaction(session, write=True):
        attempt = await throttle.begin_attempt(
            session, limits=limits, email=email, address=address, now=utcnow()
        )
        user = await session.scalar(select(User).where(User.email == email))
        stored_hash = user.password_hash if user else None
    # verify_password runs (against a dummy hash) even for unknown emails: same timing.
    ok = await asyncio.to_thread(verify_password, stored_hash, password)
    if user is None or not ok:
        raise Unauthorized("invalid email or password")
    async with db.sessionmaker() as session, transaction(session, write=True):
        current = await session.get(User, user.id)
        if (
            current is None
            or not current.is_active
            or current.deleted_at is not None
            or current.password_hash != stored_hash
        ):
            raise Unauthorized("invalid email or password")
        await throttle.attempt_succeeded(session, attempt)
        if stored_hash is not None and password_needs_rehash(stored_hash):
            # Rare (only after the hashing parameters change).
            current.password_hash = await asyncio.to_thread(hash_password, password)
            await session.flush()
        return await _login_as(session, codec, current)


async def _login_as(session: AsyncSession, codec: TokenCodec, user: User) -> SignedIn:
    landing = await teams.login_team(session, user_id=user.id)
    team_id, role = landing if landing else (None, None)
    return _issue(codec, user, team_id, role)


def _usable(user: User | None) -> bool:
    return user is not None and user.is_active and user.deleted_at is None


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
        if user is None or not _usable(user):
            raise Unauthorized("account not found or inactive")
        identity.email = profile.email
        _note_verified(user, profile)
        await session.flush()
        return await _login_as(session, codec, user)

    existing = await session.scalar(select(User).where(User.email == profile.email))
    if existing is not None:
        if not _usable(existing) or existing.email_verified_at is None:
            # Unverified: whoever registered this email never proved it is theirs; its owner,
            # who just did, must not share that account. They may prove it with a password
            # reset (which ends the other holder's access), then sign in here.
            raise Conflict("email already registered")
        session.add(_identity(existing, profile))
        await session.flush()
        return await _login_as(session, codec, existing)

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
        is_admin=await _is_first_user(session),
        email_verified_at=now,
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        # A signup with the same email committed between the check and the insert.
        raise Conflict("email already registered") from None
    session.add(_identity(user, profile))
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
    if user is None or not _usable(user):
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
    if user is None or not _usable(user):
        raise Unauthorized("account not found or inactive")
    team, role = await teams.switch_target(session, user_id=user.id, team_id=team_id)
    return _issue(codec, user, team.id, role)
