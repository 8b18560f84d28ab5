"""Rows a single box needs before anyone calls the API: its host agent as a host, and the base
template as a platform template."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from .. import ids
from ..agents.local import ensure_local_host
from ..db.models.capsules import Template


async def bootstrap_single_box(
    session: AsyncSession, *, agent_address: str, base_template: str, data_dir: Path
) -> None:
    if agent_address:
        await ensure_local_host(session, agent_address, data_dir)
    if await session.get(Template, base_template) is None:
        session.add(Template(name=base_template, team_id=ids.PLATFORM_TEAM_ID, type="base"))
        await session.flush()
