"""`/v1/admin/users` and `/v1/admin/invitations`: platform admins add accounts, deactivate and
reactivate them, and invite people to sign up (when signup is by invitation).

Every route depends on `CurrentAdmin` (re-read from the database on each call). Changes are
audited with scope `admin`.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response, status

from ... import ids
from ...db.session import transaction
from ...mail import Mailer, MailError
from ...schemas.accounts_admin import (
    CreatedInvitation,
    CreatedUser,
    CreateUserRequest,
    InvitationOut,
    InvitationRequest,
    SetActiveRequest,
)
from ...schemas.admin import AdminAccount
from ...schemas.common import error_responses
from ...services import admin, invitations
from ...settings import Settings
from ..deps import CurrentAdmin, SessionDep, SettingsDep

log = logging.getLogger("wrenn.controlplane.invitations")

router = APIRouter(prefix="/v1/admin", tags=["admin"])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@router.post(
    "/users",
    operation_id="adminCreateUser",
    status_code=status.HTTP_201_CREATED,
    summary="Add an account with its default team (platform admins); its email counts as verified",
    responses=error_responses(400, 401, 403, 409),
)
async def create_user(
    body: CreateUserRequest, principal: CurrentAdmin, session: SessionDep
) -> CreatedUser:
    generated = None if body.password else secrets.token_urlsafe(18)
    async with transaction(session, write=True):
        user = await admin.create_user(
            session,
            actor=principal.actor,
            email=body.email,
            name=body.name,
            password=body.password or generated or "",
            is_admin=body.is_admin,
        )
    return CreatedUser(**AdminAccount.of(user).model_dump(), password=generated)


@router.put(
    "/users/{id}/active",
    operation_id="adminSetUserActive",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Deactivate or reactivate an account (platform admins): a deactivated user cannot "
    "sign in, and their sessions (for good) and API keys (until reactivated) stop working",
    responses=error_responses(400, 401, 403, 404),
)
async def set_user_active(
    id: str, body: SetActiveRequest, principal: CurrentAdmin, session: SessionDep
) -> Response:
    user_id = ids.USER.parse(id)
    async with transaction(session, write=True):
        await admin.set_user_active(
            session,
            actor=principal.actor,
            actor_user_id=principal.require_user(),
            user_id=user_id,
            active=body.active,
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _signup_link(settings: Settings, request: Request, token: str, email: str) -> str:
    # The fragment keeps the token out of server logs and Referer headers.
    base = settings.public_url or str(request.base_url)
    return f"{base.rstrip('/')}/signup#" + urlencode({"invitation": token, "email": email})


@router.post(
    "/invitations",
    operation_id="adminCreateInvitation",
    status_code=status.HTTP_201_CREATED,
    summary="Invite an email to sign up (platform admins): the link is returned once, and "
    "mailed when a mail server is configured",
    responses=error_responses(400, 401, 403, 409),
)
async def create_invitation(
    body: InvitationRequest,
    principal: CurrentAdmin,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
) -> CreatedInvitation:
    async with transaction(session, write=True):
        invitation, token = await invitations.create(
            session,
            actor=principal.actor,
            invited_by=principal.require_user(),
            email=body.email,
            ttl=dt.timedelta(seconds=settings.invitation_ttl_sec),
            now=_now(),
        )
    url = _signup_link(settings, request, token, invitation.email)
    mailed = False
    mailer = Mailer.from_settings(settings)
    if mailer is not None:
        try:
            await mailer.send(
                invitation.email,
                "You are invited to Wrenn",
                f"{principal.name} invited you to create an account on Wrenn.\n\n"
                f"Sign up with this link (valid until {invitation.expires_at:%Y-%m-%d %H:%M} "
                f"UTC):\n\n{url}\n",
            )
            mailed = True
        except MailError as exc:
            log.warning("invitation mail not sent: %s", exc)
    return CreatedInvitation(
        **InvitationOut.of(invitation).model_dump(), token=token, url=url, mailed=mailed
    )


@router.get(
    "/invitations",
    operation_id="adminListInvitations",
    summary="Pending invitations, newest first (platform admins)",
    responses=error_responses(401, 403),
)
async def list_invitations(principal: CurrentAdmin, session: SessionDep) -> list[InvitationOut]:
    async with transaction(session):
        pending = await invitations.list_pending(session, now=_now())
    return [InvitationOut.of(i) for i in pending]


@router.delete(
    "/invitations/{id}",
    operation_id="adminRevokeInvitation",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke a pending invitation (platform admins)",
    responses=error_responses(400, 401, 403, 404),
)
async def revoke_invitation(id: str, principal: CurrentAdmin, session: SessionDep) -> Response:
    invitation_id = ids.INVITATION.parse(id)
    async with transaction(session, write=True):
        await invitations.revoke(
            session, actor=principal.actor, invitation_id=invitation_id, now=_now()
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
