"""`/v1/me/password`: change the signed-in user's password, and reset a forgotten one through a
link sent by mail (the contract's paths and status codes)."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, BackgroundTasks, Request, Response, status

from ...errors import ServiceUnavailable
from ...mail import MailedLinks, Mailer
from ...schemas.auth import (
    ChangePasswordRequest,
    PasswordResetConfirm,
    PasswordResetRequest,
    normalize_email,
)
from ...schemas.common import error_responses
from ...services import passwords
from ...settings import Settings
from ..deps import CurrentUser, DatabaseDep, SettingsDep
from .auth import client_address, login_limits

router = APIRouter(prefix="/v1/me/password", tags=["account"])

_NO_CONTENT = status.HTTP_204_NO_CONTENT


def _reset_mail(settings: Settings) -> tuple[Mailer, MailedLinks]:
    mailer = Mailer.from_settings(settings)
    if mailer is None or not settings.public_url:
        raise ServiceUnavailable("password reset by mail is not configured on this server")
    ttl = dt.timedelta(seconds=settings.password_reset_ttl_sec)
    links = MailedLinks(base_url=settings.public_url, page="reset-password", ttl=ttl)
    return mailer, links


@router.post(
    "",
    operation_id="changePassword",
    status_code=_NO_CONTENT,
    summary="Change the password (or add one to an OAuth-only account; 401 wrong_password if "
    "the current one is wrong); every session of the user ends, this one included",
    responses=error_responses(400, 401, 429),
)
async def change_password(
    body: ChangePasswordRequest,
    principal: CurrentUser,
    request: Request,
    background: BackgroundTasks,
    db: DatabaseDep,
    settings: SettingsDep,
) -> Response:
    email = await passwords.change_password(
        db,
        user_id=principal.require_user(),
        limits=login_limits(settings),
        current=body.current_password,
        new=body.new_password,
        confirm=body.confirm_password,
        address=client_address(request),
    )
    _notify(background, settings, email, reset=False)
    return Response(status_code=_NO_CONTENT)


def _notify(background: BackgroundTasks, settings: Settings, email: str, *, reset: bool) -> None:
    mailer = Mailer.from_settings(settings)
    if mailer is not None:
        background.add_task(passwords.notify_changed, mailer, email=email, reset=reset)


@router.post(
    "/reset",
    operation_id="requestPasswordReset",
    status_code=_NO_CONTENT,
    summary="Mail a password reset link: the same answer whether or not the email has an "
    "account (503 if no mail server is configured)",
    responses=error_responses(400, 503),
)
async def request_reset(
    body: PasswordResetRequest,
    background: BackgroundTasks,
    db: DatabaseDep,
    settings: SettingsDep,
) -> Response:
    mailer, links = _reset_mail(settings)
    # After the answer: its timing does not tell whether a mail went out.
    background.add_task(
        passwords.request_reset, db, mailer, links, email=normalize_email(body.email)
    )
    return Response(status_code=_NO_CONTENT)


@router.post(
    "/reset/confirm",
    operation_id="confirmPasswordReset",
    status_code=_NO_CONTENT,
    summary="Set a new password with a reset link's token (single use); every session of the "
    "user ends",
    responses=error_responses(400),
)
async def confirm_reset(
    body: PasswordResetConfirm,
    background: BackgroundTasks,
    db: DatabaseDep,
    settings: SettingsDep,
) -> Response:
    email = await passwords.confirm_reset(db, token=body.token, new=body.new_password)
    _notify(background, settings, email, reset=True)
    return Response(status_code=_NO_CONTENT)
