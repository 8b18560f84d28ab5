"""Accounts: signup, login with email and password, and the current user's profile.

Who may sign up is the `signup` setting: `open` (anyone), `invite` (only with a platform admin's
invitation for that email, see `invitations`) or `closed` (nobody: admins add accounts). A
refused signup in `invite` or `closed` mode gets one generic answer whatever the email, so it
does not tell which emails have accounts. (`open` cannot hide that: a second account with the
same email must be refused somehow, and signing in would tell anyway; so an `open` signup that
creates no account counts against its client address in the sign-in throttle.)

Signup activates the account at once and creates the user's default team (what the contract's
`/v1/auth/activate` does after its email round trip), unless open signup verifies emails: then
`activation.py` creates it inactive and mails the link. The very first account of an
installation becomes a platform admin. Deleting one's own account: `account_deletion.py`.

Emails are verified (`User.email_verified_at`) when the user proved they receive mail there: an
invitation or a password reset link used, an admin creating the account, or an OAuth provider
vouching for the address. Accounts through OAuth providers: `oauth_accounts.py`.

Login is throttled per account and per client address (`throttle`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models import OAuthIdentity, Team, User, UserToken
from ..db.session import Database, transaction
from ..db.types import utcnow
from ..errors import (
    AccountDisabled,
    AccountNotActivated,
    EmailTaken,
    Forbidden,
    InvalidToken,
    Unauthorized,
)
from ..security import (
    TokenCodec,
    UserClaims,
    hash_credential,
    hash_password,
    password_needs_rehash,
    verify_password,
)
from . import invitations, teams, throttle
from .principals import Principal
from .teams import TEAM_NAME_MAX

SignupMode = Literal["open", "invite", "closed"]

ACTIVATION = "activation"  # the purpose of an activation link's `UserToken`
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


def issue(codec: TokenCodec, user: User, team_id: uuid.UUID | None, role: str | None) -> SignedIn:
    """The user signed in, acting in `team_id` with `role`."""
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


def default_team_name(user_name: str) -> str:
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
        raise EmailTaken("email already registered")
    if is_admin is None:
        is_admin = await is_first_user(session)
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
        raise EmailTaken("email already registered") from None
    team = await teams.create_team(
        session, owner_id=user.id, name=default_team_name(name), is_default=True
    )
    return user, team


async def is_first_user(session: AsyncSession) -> bool:
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
    except EmailTaken:
        if accepted is not None:
            # Someone with the invitation link: still no word on whether the email is taken.
            raise Forbidden(INVALID_INVITATION) from None
        raise
    return issue(codec, user, team.id, "owner")


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
    answer does not reveal which emails have accounts (a deactivated account's right password
    is `AccountDisabled`); `TooManyRequests` while the account or the address is throttled.

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
            or current.deleted_at is not None
            or current.password_hash != stored_hash
        ):
            raise Unauthorized("invalid email or password")
        if not current.is_active and await awaiting_activation(session, current.id):
            raise AccountNotActivated(
                "please check your email and activate your account before signing in"
            )
        if not current.is_active:
            # Told only to whoever knows the password, so it reveals no account (as Go's).
            raise AccountDisabled(
                "your account has been deactivated: contact your administrator to regain access"
            )
        await throttle.attempt_succeeded(session, attempt)
        if stored_hash is not None and password_needs_rehash(stored_hash):
            # Rare (only after the hashing parameters change).
            current.password_hash = await asyncio.to_thread(hash_password, password)
            await session.flush()
        return await login_as(session, codec, current)


async def login_as(session: AsyncSession, codec: TokenCodec, user: User) -> SignedIn:
    """The user signed in, acting in the team they land in (see `teams.login_team`)."""
    landing = await teams.login_team(session, user_id=user.id)
    team_id, role = landing if landing else (None, None)
    return issue(codec, user, team_id, role)


async def awaiting_activation(session: AsyncSession, user_id: uuid.UUID) -> bool:
    """The account signed up with email verification and was never activated: inactive,
    unverified, with an activation link outstanding (an admin's deactivation is none of these)."""
    return bool(
        await session.scalar(
            select(
                exists().where(
                    User.id == user_id,
                    User.is_active.is_(False),
                    User.email_verified_at.is_(None),
                    User.deleted_at.is_(None),
                    UserToken.user_id == User.id,
                    UserToken.purpose == ACTIVATION,
                    UserToken.used_at.is_(None),
                )
            )
        )
    )


def usable(user: User | None) -> bool:
    """The account may sign in: it exists, is active and not deleted."""
    return user is not None and user.is_active and user.deleted_at is None


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


async def rename(
    session: AsyncSession, *, codec: TokenCodec, principal: Principal, name: str
) -> SignedIn:
    """Set the user's display name; a new token (it carries the name) for the same team."""
    user = await session.get(User, principal.require_user(), with_for_update=True)
    if user is None or not usable(user):
        raise Unauthorized("account not found or inactive")
    user.name = name
    await session.flush()
    return issue(codec, user, principal.team_id, principal.role)


async def switch_team(
    session: AsyncSession, *, codec: TokenCodec, principal: Principal, team_id: uuid.UUID
) -> SignedIn:
    """A new token for `team_id`, after checking the membership in the database; the name and
    admin flag come from the database too, never from the old token."""
    user = await session.get(User, principal.require_user())
    if user is None or not usable(user):
        raise Unauthorized("account not found or inactive")
    team, role = await teams.switch_target(session, user_id=user.id, team_id=team_id)
    return issue(codec, user, team.id, role)


async def redeem_one_time_token(
    session: AsyncSession, *, token: str, purpose: str, invalid: str, now: dt.datetime
) -> UserToken:
    """Use up a mailed one-time token (reset, activation): `InvalidToken(invalid)` if it is
    unknown, used or expired. Of two concurrent uses of one token, only one gets it."""
    row = await session.scalar(
        select(UserToken).where(
            UserToken.token_hash == hash_credential(token), UserToken.purpose == purpose
        )
    )
    if row is None or row.used_at is not None or row.expires_at <= now:
        raise InvalidToken(invalid)
    used = await session.execute(
        update(UserToken)
        .where(UserToken.id == row.id, UserToken.used_at.is_(None))
        .values(used_at=now)
    )
    if getattr(used, "rowcount", 0) != 1:
        raise InvalidToken(invalid)
    return row
