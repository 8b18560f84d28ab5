"""`/v1/auth`: signup and login with email and password, switching the active team, and what
the sign-in pages need to know (`/v1/auth/options`)."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, BackgroundTasks, Request, Response, status

from ... import ids
from ...db.session import transaction
from ...errors import ServiceUnavailable
from ...mail import MailedLinks, Mailer
from ...schemas.auth import (
    ActivateRequest,
    AuthOptionsResponse,
    AuthResponse,
    LoginRequest,
    ResendActivationRequest,
    SignupRequest,
    SignupResponse,
    normalize_email,
)
from ...schemas.common import error_responses
from ...schemas.teams import SwitchTeamRequest
from ...services import accounts, activation, throttle
from ...settings import Settings
from ..deps import CodecDep, CurrentUser, DatabaseDep, SessionDep, SettingsDep

router = APIRouter(prefix="/v1/auth", tags=["auth"])


def auth_fields(signed_in: accounts.SignedIn) -> dict[str, str]:
    return {
        "token": signed_in.token,
        "user_id": ids.USER.format(signed_in.user.id),
        "team_id": ids.TEAM.format(signed_in.team_id) if signed_in.team_id else "",
        "email": signed_in.user.email,
        "name": signed_in.user.name,
    }


def login_limits(settings: Settings) -> throttle.Limits:
    return throttle.Limits(
        account_threshold=settings.login_max_failures,
        address_threshold=settings.login_max_failures_per_address,
        max_lock_sec=settings.login_lockout_max_sec,
        first_lock_sec=settings.login_lockout_first_sec,
    )


def client_address(request: Request) -> str | None:
    # The peer as uvicorn reports it: behind a reverse proxy on this machine, the
    # X-Forwarded-For address it trusts (uvicorn's forwarded_allow_ips).
    return request.client.host if request.client else None


@router.get(
    "/options",
    operation_id="authOptions",
    summary="What the sign-in pages may offer: the signup mode and password reset by mail",
)
async def options(settings: SettingsDep) -> AuthOptionsResponse:
    return AuthOptionsResponse(
        signup=settings.signup,
        password_reset=Mailer.from_settings(settings) is not None,
        email_verification=_verification(settings) is not None,
    )


def _verification(settings: Settings) -> tuple[Mailer, MailedLinks] | None:
    """The mailer and links of signup with email verification, if it is on (open signup)."""
    mailer = Mailer.from_settings(settings)
    if (
        settings.signup != "open"
        or not settings.signup_verify_email
        or mailer is None
        or not settings.public_url
    ):
        return None
    ttl = dt.timedelta(seconds=settings.activation_ttl_sec)
    return mailer, MailedLinks(base_url=settings.public_url, page="activate", ttl=ttl)


@router.post(
    "/signup",
    operation_id="signup",
    status_code=status.HTTP_201_CREATED,
    summary="Create an account (active at once, or after its email is confirmed when signup "
    "verifies emails) and its default team; by invitation or closed "
    "as the installation's signup setting says (open signups that create no account are "
    "throttled per client address like failed logins: 429 with Retry-After)",
    responses=error_responses(400, 403, 409, 429),
)
async def signup(
    body: SignupRequest,
    request: Request,
    background: BackgroundTasks,
    db: DatabaseDep,
    codec: CodecDep,
    settings: SettingsDep,
) -> SignupResponse:
    verification = _verification(settings)
    if verification is not None and not body.invitation:
        mailer, links = verification
        pending = await activation.signup(
            db,
            links=links,
            limits=login_limits(settings),
            email=body.email,
            password=body.password,
            name=body.name,
            address=client_address(request),
        )
        background.add_task(
            activation.send_link, mailer, links, email=pending.user.email, token=pending.token
        )
        return SignupResponse(
            message="Account created. Please check your email to activate your account.",
            activation_required=True,
            token="",
            user_id=ids.USER.format(pending.user.id),
            team_id="",
            email=pending.user.email,
            name=pending.user.name,
        )
    signed_in = await accounts.signup(
        db,
        codec=codec,
        mode=settings.signup,
        limits=login_limits(settings),
        email=body.email,
        password=body.password,
        name=body.name,
        invitation=body.invitation,
        address=client_address(request),
    )
    return SignupResponse.model_validate(
        {"message": "Account created and activated.", **auth_fields(signed_in)}
    )


@router.post(
    "/activate",
    operation_id="activate",
    summary="Activate an account with its mailed link's token (single use, expiring): the "
    "default team is created and the user signed in",
    responses=error_responses(400),
)
async def activate(body: ActivateRequest, db: DatabaseDep, codec: CodecDep) -> AuthResponse:
    signed_in = await activation.activate(db, codec=codec, token=body.token)
    return AuthResponse(**auth_fields(signed_in))


@router.post(
    "/activate/resend",
    operation_id="resendActivation",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Mail a new activation link (older ones stop working): the same answer whether or "
    "not the email awaits activation (503 if email verification is off)",
    responses=error_responses(400, 503),
)
async def resend_activation(
    body: ResendActivationRequest,
    background: BackgroundTasks,
    db: DatabaseDep,
    settings: SettingsDep,
) -> Response:
    verification = _verification(settings)
    if verification is None:
        raise ServiceUnavailable("email verification is not enabled on this server")
    mailer, links = verification
    # After the answer: its timing does not tell whether a mail went out.
    background.add_task(activation.resend, db, mailer, links, email=normalize_email(body.email))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/login",
    operation_id="login",
    summary="Log in with email and password (throttled per account and per client address: "
    "429 with Retry-After; 403 account_not_activated before the email is confirmed)",
    responses=error_responses(400, 401, 403, 429),
)
async def login(
    body: LoginRequest,
    request: Request,
    db: DatabaseDep,
    codec: CodecDep,
    settings: SettingsDep,
) -> AuthResponse:
    signed_in = await accounts.login(
        db,
        codec=codec,
        limits=login_limits(settings),
        email=normalize_email(body.email),
        password=body.password,
        address=client_address(request),
    )
    return AuthResponse(**auth_fields(signed_in))


@router.post(
    "/switch-team",
    operation_id="switchTeam",
    summary="Switch the active team: a new token, after checking the membership in the database",
    responses=error_responses(401, 403, 404),
)
async def switch_team(
    body: SwitchTeamRequest, principal: CurrentUser, session: SessionDep, codec: CodecDep
) -> AuthResponse:
    team_id = ids.TEAM.parse(body.team_id, not_found=True)
    async with transaction(session):
        signed_in = await accounts.switch_team(
            session, codec=codec, principal=principal, team_id=team_id
        )
    return AuthResponse(**auth_fields(signed_in))
