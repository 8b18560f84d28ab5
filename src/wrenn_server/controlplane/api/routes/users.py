"""`/v1/users`: user lookup (user sessions only; people who share a team with the caller, or
anyone for a platform admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ... import ids
from ...db.session import transaction
from ...schemas.common import error_responses
from ...schemas.users import UserSearchResult
from ...services import users
from ..deps import CurrentUser, SessionDep

router = APIRouter(prefix="/v1/users", tags=["users"])


@router.get(
    "/search",
    operation_id="searchUsers",
    summary="Search the users who share a team with the caller (platform admins: all users) by "
    "email prefix (must contain '@'; at most 10 results)",
    responses=error_responses(400, 401),
)
async def search_users(
    email: Annotated[str, Query(max_length=320, description="Email prefix, e.g. 'alice@'")],
    principal: CurrentUser,
    session: SessionDep,
) -> list[UserSearchResult]:
    async with transaction(session):
        found = await users.search_by_email_prefix(
            session, prefix=email, user_id=principal.require_user(), is_admin=principal.is_admin
        )
    return [UserSearchResult(user_id=ids.USER.format(u.id), email=u.email) for u in found]
