"""Boot snapshots with real capsules: the first create of a shape boots and has the shape's
snapshot made in the background; later creates of that shape restore it, and each comes up as a
capsule of its own (its token, its files), as a booted one would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.hostagent import cgroups
from wrenn_server.hostagent.capsule import CGROUP_PARENT, capsule_key
from wrenn_server.hostagent.envd_keys import EnvdKeys
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from .conftest import DATA_DIR, AgentProcess, CapsuleFactory, run, wait_for
from .leaks import leaks
from .test_envd_credential import envd_status, token_of

pytestmark = pytest.mark.integration

# A shape no other test creates, so its first create here is the shape's first.
MEMORY_MB = 328


def snapshot_of(memory_mb: int) -> str | None:
    """The handle of the capsule the agent made the shape's kept snapshot of."""
    for shape_file in (DATA_DIR / "boot-snapshots").glob("sb-*/shape.json"):
        shape = json.loads(shape_file.read_text())
        if shape["memory_mb"] == memory_mb and shape["template"] == "minimal":
            return shape_file.parent.name
    return None


async def name_and_user(agent: AgentClient, sandbox_id: str) -> list[str]:
    res = await run(agent, sandbox_id, "uname -n; id -un")
    assert res.exit_code == 0, res.stderr
    return res.stdout.decode().split()


async def test_capsules_restored_from_a_boot_snapshot_are_each_their_own(
    agent: AgentClient, new_capsule: CapsuleFactory, agent_process: AgentProcess
) -> None:
    first = await new_capsule(memory_mb=MEMORY_MB)
    assert await name_and_user(agent, first.sandbox_id) == [
        capsule_key(first.sandbox_id),
        "wrenn-user",
    ]
    maker = await wait_for(lambda: snapshot_of(MEMORY_MB), 60, what="the shape's boot snapshot")
    assert maker is not None
    kept = DATA_DIR / "boot-snapshots" / maker
    assert (kept / "disk.img").is_file() and (kept / "checkpoint").is_dir()
    # Only root can read it (a memory image), and the capsule it was made of left nothing.
    assert kept.stat().st_mode & 0o077 == 0
    assert all(f.stat().st_mode & 0o077 == 0 for f in (kept / "checkpoint").iterdir())

    def left_by_maker() -> list[str]:
        return [str(leak) for leak in leaks(DATA_DIR, seen={maker}) if maker in leak.what]

    await wait_for(lambda: not left_by_maker(), 30, what="the maker's leftovers to go")

    a = await new_capsule(memory_mb=MEMORY_MB)
    b = await new_capsule(memory_mb=MEMORY_MB)
    log = Path(agent_process.log_path).read_text()
    snapshot_token = EnvdKeys(DATA_DIR / "envd.key").token_for(maker)
    for sb in (a, b):
        assert f"{sb.sandbox_id}: restoring the boot snapshot {maker}" in log
        assert sb.memory_mb == MEMORY_MB
        # The template's default user, and the snapshot's host name (a capsule cannot be given
        # another: that needs CAP_SYS_ADMIN); its envd answers to its own token, not to the one
        # the snapshot's envd was made with.
        assert await name_and_user(agent, sb.sandbox_id) == [capsule_key(maker), "wrenn-user"]
        assert await envd_status(sb.sandbox_id, snapshot_token) == 401
        assert await envd_status(sb.sandbox_id, token_of(sb.sandbox_id)) == 200

    # Files are each capsule's own, and the snapshot is untouched by them.
    assert (await run(agent, a.sandbox_id, "echo a-only > ~/mine")).exit_code == 0
    assert (await run(agent, b.sandbox_id, "cat ~/mine")).exit_code != 0
    c = await new_capsule(memory_mb=MEMORY_MB)
    assert (await run(agent, c.sandbox_id, "cat ~/mine")).exit_code != 0
    # A restored capsule pauses and resumes like any other.
    await agent.pause_sandbox(pb.SandboxRef(sandbox_id=a.sandbox_id))
    await agent.resume_sandbox(pb.ResumeSandboxRequest(sandbox_id=a.sandbox_id))
    assert (await run(agent, a.sandbox_id, "cat ~/mine")).stdout == b"a-only\n"
    assert snapshot_of(MEMORY_MB) == maker  # one snapshot of the shape, reused


async def test_an_agent_killed_while_it_makes_one_leaves_nothing(
    agent: AgentClient, new_capsule: CapsuleFactory, agent_process: AgentProcess
) -> None:
    making = DATA_DIR / "boot-snapshots" / "making"

    def maker() -> str | None:
        """The capsule being snapshotted, once its sandbox runs (its cgroups exist)."""
        return next(
            (d.name for d in making.glob("sb-*") if cgroups.existing(f"{CGROUP_PARENT}/{d.name}")),
            None,
        )

    await new_capsule(memory_mb=MEMORY_MB + 8)  # a shape of its own: its snapshot is made next
    handle = await wait_for(maker, 30, interval=0.01, what="the snapshot's capsule")
    assert handle is not None
    agent_process.kill9()
    agent_process.start()
    # Its sandbox, network, slot, cgroups and files: all gone with the restart's sweep.
    assert [str(leak) for leak in leaks(DATA_DIR, seen={handle}) if handle in leak.what] == []
    assert not any(making.iterdir()) and snapshot_of(MEMORY_MB + 8) is None


async def test_a_restarted_agent_restores_the_snapshot_it_kept(
    agent: AgentClient, new_capsule: CapsuleFactory, agent_process: AgentProcess
) -> None:
    """Same runsc, same code: the snapshot is kept across the restart, and the shape's first
    create after it is restored from it (not booted), a capsule of its own."""
    memory_mb = MEMORY_MB + 16  # a shape of its own
    await new_capsule(memory_mb=memory_mb)
    maker = await wait_for(lambda: snapshot_of(memory_mb), 60, what="the shape's boot snapshot")
    agent_process.stop()
    agent_process.start()
    assert snapshot_of(memory_mb) == maker
    sb = await new_capsule(memory_mb=memory_mb)
    log = Path(agent_process.log_path).read_text()
    assert f"{sb.sandbox_id}: restoring the boot snapshot {maker}" in log
    assert await name_and_user(agent, sb.sandbox_id) == [capsule_key(maker), "wrenn-user"]
    assert await envd_status(sb.sandbox_id, token_of(sb.sandbox_id)) == 200
