"""Signup with email verification (`signup_verify_email`, open signup with SMTP): the account is
created inactive, without a team, and a link is mailed; `POST /v1/auth/activate` with the
link's token activates it, proves the email, creates the default team and signs the user in.

The token is 256 random bits; only its SHA-256 is stored (`UserToken`, purpose `activation`),
it works once and expires (`activation_ttl_sec`). Until then signing in with the right password
is `AccountNotActivated`. A new link can be asked for (`resend`: the same answer whether or not
the email awaits activation, at most one mail a minute); it replaces the older ones.

A second signup for an email awaiting activation replaces the first one's name and password and
mails a new link, but only once the first one's link has expired (`SignupCooldown` before): an
address someone else signed up with is not lost for good, and a link its owner just asked for
cannot be made to set a stranger's password.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models import User, UserToken
from ..db.session import Database, transaction
from ..db.types import utcnow
from ..errors import AlreadyActivated, EmailTaken, InvalidToken, SignupCooldown
from ..mail import MailedLinks, Mailer, MailError
from ..security import TokenCodec, hash_password, new_one_time_token
from . import accounts, teams, throttle
from .accounts import ACTIVATION, SignedIn

log = logging.getLogger("wrenn.controlplane.activation")

RESEND_COOLDOWN = dt.timedelta(seconds=60)
INVALID_ACTIVATION = "activation link is invalid or has expired"


@dataclass(frozen=True, slots=True)
class Pending:
    """An account created inactive, and the token its activation mail carries."""

    user: User
    token: str


async def signup(
    db: Database,
    *,
    links: MailedLinks,
    limits: throttle.Limits,
    email: str,
    password: str,
    name: str,
    address: str | None,
) -> Pending:
    """An inactive account for `email` (normalized) and its activation token. Counted against
    `address` like an open signup (`accounts.signup`), given back only if it succeeds."""
    async with db.sessionmaker() as session, transaction(session, write=True):
        attempt = await throttle.begin_attempt(
            session, limits=limits, email=None, address=address, now=utcnow()
        )
    password_hash = await asyncio.to_thread(hash_password, password)
    async with db.sessionmaker() as session, transaction(session, write=True):
        pending = await _create_pending(
            session, links=links, email=email, password_hash=password_hash, name=name
        )
        await throttle.attempt_succeeded(session, attempt)
        return pending


async def _create_pending(
    session: AsyncSession, *, links: MailedLinks, email: str, password_hash: str, name: str
) -> Pending:
    now = utcnow()
    user = await session.scalar(select(User).where(User.email == email).with_for_update())
    if user is not None:
        if not await accounts.awaiting_activation(session, user.id):
            raise EmailTaken("email already registered")
        if user.updated_at > now - links.ttl:
            raise SignupCooldown(
                "an activation mail was recently sent to this address: check your inbox, or "
                "ask for it again (POST /v1/auth/activate/resend)"
            )
        user.password_hash = password_hash
        user.name = name
        await _use_up(session, user, now)
    else:
        user = User(
            email=email,
            name=name,
            password_hash=password_hash,
            is_active=False,
            is_admin=await accounts.is_first_user(session),
        )
        session.add(user)
        try:
            await session.flush()
        except IntegrityError:
            raise EmailTaken("email already registered") from None
    return Pending(user=user, token=await _new_token(session, user, links, now))


async def _new_token(
    session: AsyncSession, user: User, links: MailedLinks, now: dt.datetime
) -> str:
    plaintext, token_hash = new_one_time_token()
    session.add(
        UserToken(
            user_id=user.id,
            purpose=ACTIVATION,
            token_hash=token_hash,
            created_at=now,
            expires_at=now + links.ttl,
        )
    )
    await session.flush()
    return plaintext


async def _use_up(session: AsyncSession, user: User, now: dt.datetime) -> None:
    await session.execute(
        update(UserToken)
        .where(
            UserToken.user_id == user.id,
            UserToken.purpose == ACTIVATION,
            UserToken.used_at.is_(None),
        )
        .values(used_at=now)
    )


async def send_link(mailer: Mailer, links: MailedLinks, *, email: str, token: str) -> None:
    """Mail the activation link; runs after the answer went out, so failures are logged."""
    minutes = max(1, int(links.ttl.total_seconds() // 60))
    try:
        await mailer.send(
            email,
            "Activate your Wrenn account",
            f"Welcome to Wrenn! To activate the account {email}, open this link within "
            f"{minutes} minutes:\n\n{links.link(token)}\n\nIt activates the account with the "
            f"password chosen at signup. If you did not sign up for Wrenn, ignore this mail: "
            f"no account is created.\n",
        )
    except MailError as exc:
        log.warning("activation mail not sent: %s", exc)


async def resend(db: Database, mailer: Mailer, links: MailedLinks, *, email: str) -> None:
    """Mail a new activation link to `email` if its account awaits activation (and none was
    sent in the last minute); older links stop working. After the answer: failures logged."""
    now = utcnow()
    try:
        async with db.sessionmaker() as session, transaction(session, write=True):
            user = await session.scalar(select(User).where(User.email == email).with_for_update())
            if user is None or not await accounts.awaiting_activation(session, user.id):
                return
            recent = await session.scalar(
                select(
                    exists().where(
                        UserToken.user_id == user.id,
                        UserToken.purpose == ACTIVATION,
                        UserToken.created_at > now - RESEND_COOLDOWN,
                    )
                )
            )
            if recent:
                return
            await _use_up(session, user, now)
            token = await _new_token(session, user, links, now)
        await send_link(mailer, links, email=email, token=token)
    except Exception:
        log.exception("activation resend failed")


async def activate(db: Database, *, codec: TokenCodec, token: str) -> SignedIn:
    """Activate the token's account: `InvalidToken` if unknown, used or expired;
    `AlreadyActivated` if the account is active. Creates the default team and signs in."""
    now = utcnow()
    async with db.sessionmaker() as session, transaction(session, write=True):
        row = await accounts.redeem_one_time_token(
            session, token=token, purpose=ACTIVATION, invalid=INVALID_ACTIVATION, now=now
        )
        user = await session.get(User, row.user_id, with_for_update=True)
        if user is None or user.deleted_at is not None:
            raise InvalidToken(INVALID_ACTIVATION)
        if user.is_active or user.email_verified_at is not None:
            raise AlreadyActivated("this account has already been activated")
        await _use_up(session, user, now)
        user.is_active = True
        user.email_verified_at = now
        await session.flush()
        team = await teams.create_team(
            session, owner_id=user.id, name=accounts.default_team_name(user.name), is_default=True
        )
        return accounts.issue(codec, user, team.id, "owner")
