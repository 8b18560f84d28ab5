"""Invitations to sign up: made by platform admins for one email each.

With `signup = invite` they are the only way in (besides an admin adding the account): signup
needs a valid invitation for the same email, and so does an OAuth sign-in of a new user (the
provider vouching for that email). An invitation works once and until it expires; inviting an
email again replaces its earlier pending invitation. Accepting one counts as proof of the email
(the admin vouched for it, and the link was sent to that address or handed over by the admin).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

from sqlalchemy import ColumnElement, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .. import ids
from ..db.models import Invitation, User
from ..errors import EmailTaken, NotFound
from ..security import hash_credential, new_one_time_token
from . import audit


def _pending(now: dt.datetime) -> tuple[ColumnElement[bool], ...]:
    return (
        Invitation.accepted_at.is_(None),
        Invitation.revoked_at.is_(None),
        Invitation.expires_at > now,
    )


async def create(
    session: AsyncSession,
    *,
    actor: audit.Actor,
    invited_by: uuid.UUID | None,
    email: str,
    ttl: dt.timedelta,
    now: dt.datetime,
) -> tuple[Invitation, str]:
    """A new invitation for `email` (already normalized) and its token (shown once).
    `Conflict` if an account already uses the email (admins may know that)."""
    if await session.scalar(select(exists().where(User.email == email))):
        raise EmailTaken("an account with this email already exists")
    await session.execute(
        update(Invitation).where(Invitation.email == email, *_pending(now)).values(revoked_at=now)
    )
    plaintext, token_hash = new_one_time_token()
    invitation = Invitation(
        id=ids.new_id(),
        email=email,
        token_hash=token_hash,
        invited_by=invited_by,
        created_at=now,
        expires_at=now + ttl,
    )
    session.add(invitation)
    await session.flush()
    await audit.record(
        session,
        actor=actor,
        team_id=None,
        resource_type="invitation",
        resource_id=ids.INVITATION.format(invitation.id),
        action="create",
        scope="admin",
        metadata={"email": email, "expires_at": invitation.expires_at.isoformat()},
    )
    return invitation, plaintext


async def list_pending(session: AsyncSession, *, now: dt.datetime) -> Sequence[Invitation]:
    rows = await session.scalars(
        select(Invitation).where(*_pending(now)).order_by(Invitation.created_at.desc())
    )
    return rows.all()


async def revoke(
    session: AsyncSession, *, actor: audit.Actor, invitation_id: uuid.UUID, now: dt.datetime
) -> None:
    invitation = await session.get(Invitation, invitation_id, with_for_update=True)
    if invitation is None or invitation.accepted_at is not None or invitation.revoked_at:
        raise NotFound("invitation not found")
    invitation.revoked_at = now
    await session.flush()
    await audit.record(
        session,
        actor=actor,
        team_id=None,
        resource_type="invitation",
        resource_id=ids.INVITATION.format(invitation.id),
        action="revoke",
        scope="admin",
        metadata={"email": invitation.email},
    )


async def accept_token(
    session: AsyncSession, *, token: str, email: str, now: dt.datetime
) -> Invitation | None:
    """The pending invitation with this token for this email, marked accepted; None if there
    is none (unknown, used, revoked, expired, or made for another email)."""
    invitation = await session.scalar(
        select(Invitation)
        .where(Invitation.token_hash == hash_credential(token), *_pending(now))
        .with_for_update()
    )
    if invitation is None or invitation.email != email:
        return None
    return await _accept(session, invitation, now)


async def accept_for_email(
    session: AsyncSession, *, email: str, now: dt.datetime
) -> Invitation | None:
    """A pending invitation for `email` (an OAuth sign-in whose provider verified the email),
    marked accepted; None if there is none."""
    invitation = await session.scalar(
        select(Invitation)
        .where(Invitation.email == email, *_pending(now))
        .order_by(Invitation.created_at.desc())
        .limit(1)
        .with_for_update()
    )
    return None if invitation is None else await _accept(session, invitation, now)


async def _accept(
    session: AsyncSession, invitation: Invitation, now: dt.datetime
) -> Invitation | None:
    # Conditional, so two concurrent signups with one invitation cannot both use it.
    result = await session.execute(
        update(Invitation)
        .where(Invitation.id == invitation.id, Invitation.accepted_at.is_(None))
        .values(accepted_at=now)
    )
    if getattr(result, "rowcount", 0) != 1:
        return None
    return invitation
