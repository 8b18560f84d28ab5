"""`/v1/me`: the signed-in user's profile: read it, rename yourself, delete your account."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from ... import ids
from ...db.session import transaction
from ...schemas.auth import AuthResponse, DeleteAccountRequest, MeResponse, UpdateMeRequest
from ...schemas.common import error_responses
from ...services import account_deletion, accounts
from ..deps import CodecDep, CurrentUser, DatabaseDep, HostsDep, SessionDep
from .auth import auth_fields

router = APIRouter(prefix="/v1/me", tags=["account"])


@router.get(
    "", operation_id="getMe", summary="Get current user profile", responses=error_responses(401)
)
async def get_me(principal: CurrentUser, session: SessionDep) -> MeResponse:
    async with transaction(session):
        found = await accounts.profile(session, principal=principal)
    return MeResponse(
        user_id=ids.USER.format(found.user.id),
        name=found.user.name,
        email=found.user.email,
        has_password=found.user.password_hash is not None,
        providers=found.providers,
        team_id=ids.TEAM.format(principal.team_id) if principal.team_id else "",
        role=principal.role,
        is_admin=found.user.is_admin,
    )


@router.patch(
    "",
    operation_id="updateMe",
    summary="Change your display name; a new token carrying it (same team; older tokens stay "
    "valid)",
    responses=error_responses(400, 401),
)
async def update_me(
    body: UpdateMeRequest, principal: CurrentUser, session: SessionDep, codec: CodecDep
) -> AuthResponse:
    async with transaction(session, write=True):
        signed_in = await accounts.rename(session, codec=codec, principal=principal, name=body.name)
    return AuthResponse(**auth_fields(signed_in))


@router.delete(
    "",
    operation_id="deleteMe",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete your account (confirmation: your email). Refused (409 "
    "owns_team_with_members) while you own a team with other members; the teams you own go "
    "with it, their capsules destroyed; your API keys are revoked and every session ends",
    responses=error_responses(400, 401, 409, 503),
)
async def delete_me(
    body: DeleteAccountRequest, principal: CurrentUser, db: DatabaseDep, hosts: HostsDep
) -> Response:
    await account_deletion.delete_account(
        db, hosts, principal=principal, confirmation=body.confirmation
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
