"""`/v1/me`: the signed-in user's profile."""

from __future__ import annotations

from fastapi import APIRouter

from ... import ids
from ...db.session import transaction
from ...schemas.auth import MeResponse
from ...schemas.common import error_responses
from ...services import accounts
from ..deps import CurrentUser, SessionDep

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
