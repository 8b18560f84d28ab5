"""Passwords: a signed-in user changes theirs, anyone asks for a reset link by mail, and the
link's token sets a new one.

Both a change and a reset revoke every JWT the user holds (`User.token_version`), so a session
someone else obtained ends with them. A reset token is 256 random bits mailed to the account's
address; only its SHA-256 is stored, it works once and expires (`password_reset_ttl_sec`). A
request for a reset never says whether the email has an account: the route answers the same
and the work (look-up, mail) happens after the answer. One link per account per minute at
most, so the endpoint cannot flood someone's mailbox.

The first time an account's email is proven by a reset link, whatever its holder set up before
that proof goes: its API keys are revoked and its OAuth identities unlinked. That is the
pre-registration attack's end: someone who signed up with another person's address (never
proving it) keeps nothing once the real owner takes the account over.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid

from sqlalchemy import delete, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .. import ids
from ..db.models import APIKey, OAuthIdentity, User, UserToken
from ..db.session import Database, transaction
from ..db.types import utcnow
from ..errors import BadRequest, InvalidToken, Unauthorized, WrongPassword
from ..mail import MailedLinks, Mailer, MailError
from ..security import hash_password, new_one_time_token, verify_password
from . import accounts, audit, throttle

log = logging.getLogger("wrenn.controlplane.passwords")

RESET = "password_reset"
RESET_COOLDOWN = dt.timedelta(seconds=60)
INVALID_RESET = "this reset link is not valid (used, expired, or replaced by a newer one)"


async def _revoke_sessions(session: AsyncSession, user: User) -> None:
    user.token_version += 1
    await session.flush()


async def change_password(
    db: Database,
    *,
    user_id: uuid.UUID,
    limits: throttle.Limits,
    current: str | None,
    new: str,
    confirm: str | None,
    address: str | None,
) -> str:
    """Set a new password. An account with a password must give the current one (checked like a
    sign-in, throttled with it: `WrongPassword` if wrong); an OAuth-only account adds one with
    `confirm` equal to `new`. Every JWT of the user is revoked, this request's included.
    Returns the account's email (for the notice)."""
    async with db.sessionmaker() as session, transaction(session):
        user = await session.get(User, user_id)
        if user is None:
            raise Unauthorized("account not found or inactive")
        stored_hash, email = user.password_hash, user.email
    attempt = None
    if stored_hash is not None:
        if not current:
            raise BadRequest("current_password is required to change a password")
        async with db.sessionmaker() as session, transaction(session, write=True):
            attempt = await throttle.begin_attempt(
                session, limits=limits, email=email, address=address, now=utcnow()
            )
        if not await asyncio.to_thread(verify_password, stored_hash, current):
            raise WrongPassword("current password is incorrect")
    elif confirm != new:
        raise BadRequest("confirm_password must match new_password")
    new_hash = await asyncio.to_thread(hash_password, new)
    async with db.sessionmaker() as session, transaction(session, write=True):
        user = await session.get(User, user_id, with_for_update=True)
        if user is None or user.password_hash != stored_hash:
            # Changed (or reset) meanwhile: the current password checked is no longer it.
            raise WrongPassword("current password is incorrect")
        user.password_hash = new_hash
        await _revoke_sessions(session, user)
        if attempt is not None:
            await throttle.attempt_succeeded(session, attempt)
        return user.email


async def notify_changed(mailer: Mailer, *, email: str, reset: bool) -> None:
    """Tell the account's address its password changed, so an owner who did not do it learns
    of it. Runs after the answer went out; failures are logged."""
    how = "reset through a mailed link" if reset else "changed"
    try:
        await mailer.send(
            email,
            f"Your Wrenn password was {'reset' if reset else 'changed'}",
            f"The password of the Wrenn account {email} was just {how}, and every session of "
            f"the account was signed out.\n\nIf you did not do this, reset your password now "
            f"and tell your administrator.\n",
        )
    except MailError as exc:
        log.warning("password change notice not sent: %s", exc)


async def request_reset(db: Database, mailer: Mailer, links: MailedLinks, *, email: str) -> None:
    """Mail a reset link to `email` if it is an active account's (and none was sent in the
    last minute). Runs after the answer went out; failures are logged, never raised."""
    now = utcnow()
    try:
        async with db.sessionmaker() as session, transaction(session, write=True):
            user = await session.scalar(
                select(User).where(User.email == email, User.is_active, User.deleted_at.is_(None))
            )
            if user is None:
                return
            recent = await session.scalar(
                select(
                    exists().where(
                        UserToken.user_id == user.id,
                        UserToken.purpose == RESET,
                        UserToken.created_at > now - RESET_COOLDOWN,
                    )
                )
            )
            if recent:
                return
            plaintext, token_hash = new_one_time_token()
            session.add(
                UserToken(
                    user_id=user.id,
                    purpose=RESET,
                    token_hash=token_hash,
                    created_at=now,
                    expires_at=now + links.ttl,
                )
            )
        minutes = max(1, int(links.ttl.total_seconds() // 60))
        await mailer.send(
            user.email,
            "Reset your Wrenn password",
            f"Someone (hopefully you) asked to reset the password of the Wrenn account "
            f"{user.email}.\n\nTo choose a new password, open this link within {minutes} "
            f"minutes:\n\n{links.link(plaintext)}\n\nIf you did not ask for this, ignore this "
            f"mail: your password stays as it is.\n",
        )
    except MailError as exc:
        log.warning("password reset mail not sent: %s", exc)
    except Exception:
        log.exception("password reset request failed")


async def confirm_reset(db: Database, *, token: str, new: str) -> str:
    """Set the password of the reset token's account; `InvalidToken` if the token is unknown,
    used, expired, or its account inactive. The token and every other pending reset token of
    the account are used up; every JWT of the user is revoked. The account's email."""
    new_hash = await asyncio.to_thread(hash_password, new)
    now = utcnow()
    async with db.sessionmaker() as session, transaction(session, write=True):
        row = await accounts.redeem_one_time_token(
            session, token=token, purpose=RESET, invalid=INVALID_RESET, now=now
        )
        user = await session.get(User, row.user_id, with_for_update=True)
        if user is None or not user.is_active or user.deleted_at is not None:
            raise InvalidToken(INVALID_RESET)
        await session.execute(
            update(UserToken)
            .where(
                UserToken.user_id == user.id,
                UserToken.purpose == RESET,
                UserToken.used_at.is_(None),
            )
            .values(used_at=now)
        )
        user.password_hash = new_hash
        await _revoke_sessions(session, user)
        if user.email_verified_at is None:
            user.email_verified_at = now
            await _forget_unproven_holder(session, user, now)
        await throttle.clear_account(session, throttle.account_key(user.email))
        return user.email


async def _forget_unproven_holder(session: AsyncSession, user: User, now: dt.datetime) -> None:
    """The address was just proven for the first time: revoke the account's API keys and
    unlink its OAuth identities, which whoever held it before the proof may have set up."""
    actor = audit.Actor(type="user", id=ids.USER.format(user.id), name=user.name)
    keys = (
        await session.scalars(
            select(APIKey).where(APIKey.created_by == user.id, APIKey.revoked_at.is_(None))
        )
    ).all()
    for key in keys:
        key.revoked_at = now
        await audit.record(
            session,
            actor=actor,
            team_id=key.team_id,
            resource_type="api_key",
            resource_id=ids.API_KEY.format(key.id),
            action="revoke",
            metadata={
                "name": key.name,
                "key_prefix": key.key_prefix,
                "reason": "email_verified",
            },
        )
    await session.execute(delete(OAuthIdentity).where(OAuthIdentity.user_id == user.id))
    await session.flush()
