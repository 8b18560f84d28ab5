"""Helpers shared by the team, member and user-search tests."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import select

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.db.models import AuditLog, TeamMember
from wrenn_server.controlplane.db.session import Database, transaction

from .helpers import PASSWORD, bearer


async def create_team(client: httpx.AsyncClient, token: str, name: str) -> dict[str, Any]:
    resp = await client.post("/v1/teams", json={"name": name}, headers=bearer(token))
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def switch(client: httpx.AsyncClient, token: str, team_id: str) -> str:
    """A token acting in `team_id` (the caller must be a member)."""
    resp = await client.post(
        "/v1/auth/switch-team", json={"team_id": team_id}, headers=bearer(token)
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["team_id"] == team_id
    new: str = resp.json()["token"]
    return new


async def login(client: httpx.AsyncClient, email: str) -> dict[str, Any]:
    resp = await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def add_member(
    client: httpx.AsyncClient, token: str, team_id: str, email: str, role: str = "member"
) -> None:
    """Add `email` to the team (and make them `role`) as its owner or an admin."""
    resp = await client.post(
        f"/v1/teams/{team_id}/members", json={"email": email}, headers=bearer(token)
    )
    assert resp.status_code == 201, resp.text
    if role != "member":
        uid = resp.json()["user_id"]
        resp = await client.patch(
            f"/v1/teams/{team_id}/members/{uid}", json={"role": role}, headers=bearer(token)
        )
        assert resp.status_code == 204, resp.text


async def roles(db: Database, team_id: str) -> dict[str, str]:
    """{user wire id: role} of the team's memberships, straight from the database."""
    async with db.sessionmaker() as session, transaction(session):
        rows = await session.execute(
            select(TeamMember.user_id, TeamMember.role).where(
                TeamMember.team_id == ids.TEAM.parse(team_id)
            )
        )
        return {ids.USER.format(uid): role for uid, role in rows}


async def audit_actions(db: Database, team_id: str, resource_type: str) -> list[tuple[str, Any]]:
    """(action, resource_id) of the team's audit entries about `resource_type`, oldest first."""
    team_uuid: uuid.UUID = ids.TEAM.parse(team_id)
    async with db.sessionmaker() as session, transaction(session):
        rows = await session.execute(
            select(AuditLog.action, AuditLog.resource_id, AuditLog.metadata_)
            .where(AuditLog.team_id == team_uuid, AuditLog.resource_type == resource_type)
            .order_by(AuditLog.created_at, AuditLog.id)
        )
        return [(action, (rid, meta)) for action, rid, meta in rows]
