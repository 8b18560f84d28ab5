"""The single box's platform templates: the base template always, the code runner's once its
agent (same data dir) has built it, registered once whatever the number of starts."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.db.models.capsules import Template
from wrenn_server.controlplane.db.session import Database, transaction
from wrenn_server.controlplane.services.bootstrap import bootstrap_single_box
from wrenn_server.controlplane.settings import Settings

from ..waiting import wait_for


async def _bootstrap(db: Database, data_dir: Path, agent_address: str) -> dict[str, str]:
    async with db.sessionmaker() as session, transaction(session, write=True):
        await bootstrap_single_box(
            session, agent_address=agent_address, base_template="minimal", data_dir=data_dir
        )
    async with db.sessionmaker() as session:
        rows = (await session.scalars(select(Template))).all()
    assert all(r.team_id == ids.PLATFORM_TEAM_ID and r.type == "base" for r in rows)
    return {r.name: r.type for r in rows}


def _built(data_dir: Path, name: str) -> None:
    template = data_dir / "templates" / name
    template.mkdir(parents=True)
    (template / "template.json").write_text(json.dumps({"name": name, "type": "image"}))


async def test_the_code_runner_is_registered_once_built(db: Database, tmp_path: Path) -> None:
    address = f"unix:{tmp_path / 'agent.sock'}"
    assert await _bootstrap(db, tmp_path, address) == {"minimal": "base"}

    # Half-built (no template.json yet) is not built.
    (tmp_path / "templates" / "code-runner-beta" / "rootfs").mkdir(parents=True)
    assert await _bootstrap(db, tmp_path, address) == {"minimal": "base"}

    (tmp_path / "templates" / "code-runner-beta" / "rootfs").rmdir()
    (tmp_path / "templates" / "code-runner-beta").rmdir()
    _built(tmp_path, "code-runner-beta")
    expected = {"minimal": "base", "code-runner-beta": "base"}
    assert await _bootstrap(db, tmp_path, address) == expected
    assert await _bootstrap(db, tmp_path, address) == expected

    # The code interpreter's, built on it, likewise.
    _built(tmp_path, "code-interpreter-v1")
    expected["code-interpreter-v1"] = "base"
    assert await _bootstrap(db, tmp_path, address) == expected


async def test_without_a_local_agent_nothing_is_looked_up(db: Database, tmp_path: Path) -> None:
    _built(tmp_path, "code-runner-beta")
    assert await _bootstrap(db, tmp_path, "") == {"minimal": "base"}


async def test_one_built_while_the_control_plane_runs_is_registered(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    settings = settings.model_copy(
        update={"agent_address": f"unix:{tmp_path / 'agent.sock'}", "reconcile_interval_sec": 0.2}
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):

        async def registered() -> bool:
            async with db.sessionmaker() as session:
                return (
                    await session.scalar(
                        select(Template).where(Template.name == "code-runner-beta")
                    )
                    is not None
                )

        assert not await registered()
        _built(tmp_path, "code-runner-beta")
        await wait_for(registered, what="the code runner registered without a restart")
