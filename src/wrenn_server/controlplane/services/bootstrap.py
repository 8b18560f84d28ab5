"""Rows a single box needs before anyone calls the API: its host agent as a host, the base
template as a platform template, and the optional platform templates its agent has built (the
code runner's `code-runner-beta` and the code interpreter's `code-interpreter-v1` on it, made by
`wrenn image build code-runner|code-interpreter` or `wrenn up --code-runner`)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .. import ids
from ..agents.local import ensure_local_host
from ..db.models.capsules import Template

# Built on the host, not by every install: registered once the single box's agent has it.
OPTIONAL_PLATFORM_TEMPLATES = ("code-runner-beta", "code-interpreter-v1")


def built_on_single_box(data_dir: Path, name: str) -> bool:
    """Whether the single box's agent (same data dir) holds the template: its metadata file is
    written last, when the template is complete). A control plane that may not look (another
    user than the agent's) registers none."""
    try:
        return (data_dir / "templates" / name / "template.json").is_file()
    except OSError:
        return False


async def bootstrap_single_box(
    session: AsyncSession, *, agent_address: str, base_template: str, data_dir: Path
) -> None:
    await _register(session, [base_template])
    if agent_address:
        await ensure_local_host(session, agent_address, data_dir)
        await register_built_templates(session, data_dir=data_dir)


async def register_built_templates(session: AsyncSession, *, data_dir: Path) -> None:
    """Register the optional platform templates the single box's agent has built; run at start
    and periodically, so one built while the control plane runs is usable without a restart."""
    await _register(
        session, [n for n in OPTIONAL_PLATFORM_TEMPLATES if built_on_single_box(data_dir, n)]
    )


async def _register(session: AsyncSession, names: list[str]) -> None:
    for name in names:
        # Files stored under the name that are a team's template (one from before names were
        # per team) are not the platform's to register.
        taken = await session.scalar(select(Template.id).where(Template.storage_name == name))
        if taken is None:
            session.add(
                Template(name=name, storage_name=name, team_id=ids.PLATFORM_TEAM_ID, type="base")
            )
            await session.flush()
