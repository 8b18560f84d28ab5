"""`/v1/audit-logs`: the current team's audit events; `/v1/admin/audit-logs`: the platform-wide
ones (platform admins)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from ...db.session import transaction
from ...schemas.audit import AuditLogEntry, AuditLogPage
from ...schemas.common import error_responses
from ...services import audit
from ..deps import CurrentAdmin, CurrentUser, SessionDep

router = APIRouter(prefix="/v1/audit-logs", tags=["audit"])
admin_router = APIRouter(prefix="/v1/admin/audit-logs", tags=["admin"])


@dataclass(frozen=True)
class _Query:
    resource_types: list[str]
    actions: list[str]
    cursor: str | None
    limit: int


async def _query(
    resource_type: Annotated[list[str] | None, Query()] = None,
    action: Annotated[list[str] | None, Query()] = None,
    cursor: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1)] = audit.DEFAULT_LIMIT,
) -> _Query:
    return _Query(audit.split_values(resource_type), audit.split_values(action), cursor, limit)


QueryDep = Annotated[_Query, Depends(_query)]


async def _page(
    session: SessionDep, q: _Query, team_id: uuid.UUID | None, include_admin_scope: bool
) -> AuditLogPage:
    async with transaction(session):
        page = await audit.list_events(
            session,
            team_id=team_id,
            include_admin_scope=include_admin_scope,
            resource_types=q.resource_types,
            actions=q.actions,
            cursor=q.cursor,
            limit=q.limit,
        )
    return AuditLogPage(
        items=[AuditLogEntry.of(row) for row in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "",
    operation_id="listAuditLogs",
    summary="List your team's audit events, newest first",
    responses=error_responses(400, 401, 403),
)
async def list_audit_logs(principal: CurrentUser, session: SessionDep, q: QueryDep) -> AuditLogPage:
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
    return await _page(session, q, team_id, principal.role in ("owner", "admin"))


@admin_router.get(
    "",
    operation_id="adminListAuditLogs",
    summary="List platform-wide audit events (shared hosts), newest first (platform admins)",
    responses=error_responses(400, 401, 403),
)
async def list_platform_audit_logs(
    principal: CurrentAdmin, session: SessionDep, q: QueryDep
) -> AuditLogPage:
    """The events that belong to no team (shared hosts' add, register, delete, marked_down,
    marked_up), with the same paging and filters as /v1/audit-logs."""
    return await _page(session, q, None, True)
