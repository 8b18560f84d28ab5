"""`/v1/audit-logs`: the current team's audit events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ...db.session import transaction
from ...schemas.audit import AuditLogEntry, AuditLogPage
from ...schemas.common import error_responses
from ...services import audit
from ..deps import CurrentAdmin, CurrentUser, SessionDep

router = APIRouter(prefix="/v1/audit-logs", tags=["audit"])
admin_router = APIRouter(prefix="/v1/admin/audit-logs", tags=["admin"])

ResourceTypes = Annotated[list[str] | None, Query()]
Actions = Annotated[list[str] | None, Query()]
CursorParam = Annotated[str | None, Query()]
Limit = Annotated[int, Query(ge=1)]


@router.get(
    "",
    operation_id="listAuditLogs",
    summary="List your team's audit events, newest first",
    responses=error_responses(400, 401, 403),
)
async def list_audit_logs(
    principal: CurrentUser,
    session: SessionDep,
    resource_type: ResourceTypes = None,
    action: Actions = None,
    cursor: CursorParam = None,
    limit: Limit = audit.DEFAULT_LIMIT,
) -> AuditLogPage:
    """User sessions only (JWT); API keys are refused (401).

    The public contract does not define this operation, so the shape is ours:
    `{"items": [...], "next_cursor": "..." | null}`, each item with id (`log-...`), team_id,
    actor {type, id, name}, resource_type, resource_id, action, scope, status, metadata and
    created_at. Newest first; `limit` defaults to 50 and is capped at 200 (larger values get 200
    items). `cursor` is the opaque `next_cursor` of the previous page; it encodes the last
    event's (created_at, id), so events recorded while paging never cause duplicates or gaps.
    `resource_type` and `action` take several values, comma-separated or repeated.
    Members see the team's `scope=team` events; owners and admins also see `scope=admin` ones.
    """
    team_id = principal.require_team()
    async with transaction(session):
        page = await audit.list_events(
            session,
            team_id=team_id,
            include_admin_scope=principal.role in ("owner", "admin"),
            resource_types=audit.split_values(resource_type),
            actions=audit.split_values(action),
            cursor=cursor,
            limit=limit,
        )
    return _page(page)


def _page(page: audit.Page) -> AuditLogPage:
    return AuditLogPage(
        items=[AuditLogEntry.of(row) for row in page.items], next_cursor=page.next_cursor
    )


@admin_router.get(
    "",
    operation_id="adminListAuditLogs",
    summary="List platform-wide audit events (shared hosts), newest first (platform admins)",
    responses=error_responses(400, 401, 403),
)
async def list_platform_audit_logs(
    principal: CurrentAdmin,
    session: SessionDep,
    resource_type: ResourceTypes = None,
    action: Actions = None,
    cursor: CursorParam = None,
    limit: Limit = audit.DEFAULT_LIMIT,
) -> AuditLogPage:
    """The events that belong to no team (shared hosts' add, delete, marked_down, marked_up),
    with the same paging and filters as /v1/audit-logs."""
    async with transaction(session):
        page = await audit.list_events(
            session,
            team_id=None,
            include_admin_scope=True,
            resource_types=audit.split_values(resource_type),
            actions=audit.split_values(action),
            cursor=cursor,
            limit=limit,
        )
    return _page(page)
