"""`/v1/auth`: signup and login with email and password, and switching the active team."""

from __future__ import annotations

from fastapi import APIRouter, status

from ... import ids
from ...db.session import transaction
from ...schemas.auth import (
    AuthResponse,
    LoginRequest,
    SignupRequest,
    SignupResponse,
    normalize_email,
)
from ...schemas.common import error_responses
from ...schemas.teams import SwitchTeamRequest
from ...services import accounts
from ..deps import CodecDep, CurrentUser, SessionDep

router = APIRouter(prefix="/v1/auth", tags=["auth"])


def _auth_fields(signed_in: accounts.SignedIn) -> dict[str, str]:
    return {
        "token": signed_in.token,
        "user_id": ids.USER.format(signed_in.user.id),
        "team_id": ids.TEAM.format(signed_in.team_id) if signed_in.team_id else "",
        "email": signed_in.user.email,
        "name": signed_in.user.name,
    }


@router.post(
    "/signup",
    operation_id="signup",
    status_code=status.HTTP_201_CREATED,
    summary="Create an account (active at once) and its default team",
    responses=error_responses(400, 409),
)
async def signup(body: SignupRequest, session: SessionDep, codec: CodecDep) -> SignupResponse:
    async with transaction(session, write=True):
        signed_in = await accounts.signup(
            session, codec=codec, email=body.email, password=body.password, name=body.name
        )
    return SignupResponse(message="Account created and activated.", **_auth_fields(signed_in))


@router.post(
    "/login",
    operation_id="login",
    summary="Log in with email and password",
    responses=error_responses(400, 401),
)
async def login(body: LoginRequest, session: SessionDep, codec: CodecDep) -> AuthResponse:
    async with transaction(session):
        signed_in = await accounts.login(
            session, codec=codec, email=normalize_email(body.email), password=body.password
        )
    return AuthResponse(**_auth_fields(signed_in))


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
    return AuthResponse(**_auth_fields(signed_in))
