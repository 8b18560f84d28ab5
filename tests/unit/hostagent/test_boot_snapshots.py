"""Boot snapshots without root: the manager on the stand-in runtime (test_lifecycle.py) and the
stand-in envd. Which create restores which snapshot, with which tokens and name, and what is
kept, dropped and left behind. Real capsules restored from one: tests/integration."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.hostagent.fake_envd import Answer, FakeEnvd
from tests.unit.hostagent.test_lifecycle import SPEC, Agent, StandInRuntime, running_agent
from tests.waiting import wait_for
from wrenn_server.hostagent import boot_snapshots, errors, manager
from wrenn_server.hostagent.boot_snapshots import BootSnapshots
from wrenn_server.hostagent.capsule import RUNNING, Capsule
from wrenn_server.hostagent.capsule_spec import CreateSpec
from wrenn_server.hostagent.exec_output import ExecOutput

SECOND = "sb-00000000-0000-4000-8000-0000000000c2"
THIRD = "sb-00000000-0000-4000-8000-0000000000c3"
PROCESS = b'{"type": "start", "pid": 7}\n{"type": "exit", "exit_code": 0, "signal": null}\n'


@pytest.fixture
async def agent(
    tmp_path: Path, envd: FakeEnvd, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Agent]:
    monkeypatch.setattr(manager, "ENVD_START_TIMEOUT", 0.5)
    envd.answers["/processes"] = Answer(200, PROCESS, "application/x-ndjson")
    async with running_agent(tmp_path, envd, boot_snapshots=2) as agent:
        yield agent


def spec(sandbox_id: str, **fields: object) -> CreateSpec:
    return CreateSpec(**{**SPEC.__dict__, "sandbox_id": sandbox_id, **fields})


def snapshot_dirs(agent: Agent) -> set[str]:
    root = agent.m.boot_snapshots.root
    return {p.name for p in root.iterdir() if p.name != "making"}


async def test_a_shape_booted_once_is_restored_the_next_time(agent: Agent) -> None:
    first = await agent.m.create(spec(SPEC.sandbox_id))
    assert agent.runtime.snapshots[first.sandbox_id] is None  # booted
    await wait_for(lambda: agent.m.boot_snapshots.shapes(), 5, what="the shape's boot snapshot")
    [(shape, _at)] = agent.m.boot_snapshots.shapes()
    assert shape == first.shape
    # A private capsule of that shape was booted, warmed, checkpointed and removed; what is kept
    # is its checkpoint and disk, and it was never one of the agent's capsules.
    [maker] = [sid for op, sid in agent.runtime.calls if op == "pause"]
    assert ("destroy", maker) in agent.runtime.calls and maker not in agent.m.capsules
    kept = agent.m.boot_snapshots.root / maker
    assert snapshot_dirs(agent) == {maker}
    assert (kept / "disk.img").read_bytes() == b"disk" and (kept / "checkpoint").is_dir()
    assert not any(agent.m.boot_snapshots.making.iterdir())

    agent.envd.seen.clear()
    agent.envd.bodies.clear()
    second = await agent.m.create(spec(SECOND, default_user="alice", default_env={"A": "1"}))
    assert second.status == RUNNING
    assert agent.runtime.snapshots[SECOND] == kept
    # Its envd answered to the snapshot's token, then was given the capsule's own with its
    # defaults, in one request; later calls carry the new token.
    keys = agent.m.keys
    assert agent.envd.seen[0] == ("GET", "/health", f"Bearer {keys.token_for(maker)}")
    assert [c for c in agent.envd_calls() if c[1] == "/init"] == [("POST", "/init")]
    [init] = [json.loads(b) for b in agent.envd.bodies if b]
    assert init == {"default_user": "alice", "env": {"A": "1"}, "token": keys.token_for(SECOND)}
    await agent.m.exec(SECOND, {"cmd": "true"}, 5, ExecOutput(1024))
    assert agent.envd.seen[-1][2] == f"Bearer {keys.token_for(SECOND)}"
    # One snapshot per shape: restoring it did not ask for another.
    assert [op for op, _ in agent.runtime.calls].count("pause") == 1


async def test_another_shape_or_a_replaced_template_boots(agent: Agent) -> None:
    await agent.m.create(spec(SPEC.sandbox_id))
    await wait_for(lambda: agent.m.boot_snapshots.shapes(), 5, what="the shape's boot snapshot")
    await agent.m.create(spec(SECOND, memory_mb=512))
    assert agent.runtime.snapshots[SECOND] is None
    # The template replaced under its name: its old snapshot does not serve it.
    meta = agent.m.settings.templates_dir / "minimal" / "template.json"
    meta.write_text(json.dumps({"name": "minimal", "type": "image", "created_at": 5}))
    await agent.m.create(spec(THIRD))
    assert agent.runtime.snapshots[THIRD] is None


async def test_a_replaced_templates_old_snapshot_goes_once_the_new_one_is_made(
    agent: Agent,
) -> None:
    """Never restored again (its key names the old template), it must not wait for the LRU."""
    first = await agent.m.create(spec(SPEC.sandbox_id))
    await wait_for(lambda: agent.m.boot_snapshots.shapes(), 5, what="the shape's boot snapshot")
    [old] = snapshot_dirs(agent)
    meta = agent.m.settings.templates_dir / "minimal" / "template.json"
    meta.write_text(json.dumps({"name": "minimal", "type": "image", "created_at": 5}))
    await agent.m.create(spec(SECOND))
    renewed = [(first.shape, 5.0)]
    await wait_for(
        lambda: agent.m.boot_snapshots.shapes() == renewed, 5, what="only the new snapshot kept"
    )
    await wait_for(lambda: old not in snapshot_dirs(agent), 5, what="the old one's files to go")
    assert len(snapshot_dirs(agent)) == 1


async def test_the_least_recently_used_shape_is_dropped(agent: Agent) -> None:
    def memories() -> list[int]:
        return sorted(shape[2] for shape, _at in agent.m.boot_snapshots.shapes())

    for n, memory in enumerate((256, 512, 1024)):
        await agent.m.create(spec(f"sb-00000000-0000-4000-8000-00000000010{n}", memory_mb=memory))
        await wait_for(
            lambda m=memory: m in memories(), 5, what=f"the {memory} MB shape's snapshot"
        )
    assert memories() == [512, 1024]
    await wait_for(lambda: len(snapshot_dirs(agent)) == 2, 5, what="the dropped one's files to go")


async def test_deleting_the_template_drops_its_snapshots(agent: Agent) -> None:
    capsule = await agent.m.create(spec(SPEC.sandbox_id))
    await wait_for(lambda: agent.m.boot_snapshots.shapes(), 5, what="the shape's boot snapshot")
    await agent.m.destroy(capsule.sandbox_id)
    await agent.m.delete_template("minimal")
    assert agent.m.boot_snapshots.shapes() == []
    await wait_for(lambda: not snapshot_dirs(agent), 5, what="its files to go")


async def test_a_failed_snapshot_leaves_nothing_and_is_asked_for_later(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    def tries() -> int:
        return len([c for c in agent.runtime.calls if c[0] == "destroy"])

    agent.envd.answers["/snapshot/prepare"] = Answer(500, b'{"error": {"code": "internal"}}')
    await agent.m.create(spec(SPEC.sandbox_id))
    await wait_for(lambda: tries() == 1, 5, what="a try")
    await wait_for(lambda: agent.m.boot_snapshots._maker.done(), 5, what="the maker to finish")  # type: ignore[union-attr]
    assert agent.m.boot_snapshots.shapes() == [] and not snapshot_dirs(agent)
    assert not any(agent.m.boot_snapshots.making.iterdir())
    assert list(agent.m.capsules) == [SPEC.sandbox_id]
    # Not tried again at once: each try is a boot.
    agent.envd.answers["/snapshot/prepare"] = Answer(200, b"")
    await agent.m.create(spec(SECOND))
    assert agent.runtime.snapshots[SECOND] is None
    assert agent.m.boot_snapshots._maker.done() and tries() == 1  # type: ignore[union-attr]
    # Once the retry delay is over, a create asks again.
    monkeypatch.setattr(boot_snapshots, "RETRY_SEC", 0.0)
    await agent.m.create(spec(THIRD))
    await wait_for(lambda: agent.m.boot_snapshots.shapes(), 5, what="it to be asked for again")


async def test_a_snapshot_that_does_not_restore_is_dropped_and_the_capsule_booted(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """runsc upgraded under the agent, a damaged file: a create must not fail for it, nor every
    later create of the shape."""
    await agent.m.create(spec(SPEC.sandbox_id))
    await wait_for(lambda: agent.m.boot_snapshots.shapes(), 5, what="the shape's boot snapshot")
    [kept] = snapshot_dirs(agent)
    create = agent.runtime.create

    async def restore_fails(capsule: Capsule, snapshot: Path | None = None) -> None:
        if snapshot is not None:
            await create(capsule, snapshot)  # its directory and disk made, then:
            raise errors.Internal()
        await create(capsule)

    monkeypatch.setattr(agent.runtime, "create", restore_fails)
    capsule = await agent.m.create(spec(SECOND))
    assert capsule.status == RUNNING and agent.runtime.snapshots[SECOND] is None  # booted
    assert [op for op, sid in agent.runtime.calls if sid == SECOND] == [
        "create",  # the restore
        "destroy",  # what it left
        "create",  # the boot
    ]
    await agent.m.exec(SECOND, {"cmd": "true"}, 5, ExecOutput(1024))
    assert agent.m.boot_snapshots.shapes() == []
    await wait_for(lambda: kept not in snapshot_dirs(agent), 5, what="its files to go")
    # Not made again at once (each try is a boot): the next create of the shape boots.
    await agent.m.create(spec(THIRD))
    assert agent.runtime.snapshots[THIRD] is None
    assert [op for op, _ in agent.runtime.calls].count("pause") == 1


async def test_templates_with_a_start_command_are_not_snapshotted(agent: Agent) -> None:
    meta = agent.m.settings.templates_dir / "minimal" / "template.json"
    meta.write_text(
        json.dumps({"name": "minimal", "type": "image", "created_at": 0, "start_cmd": "srv"})
    )
    await agent.m.create(spec(SPEC.sandbox_id))
    await agent.m.create(spec(SECOND))
    assert agent.runtime.snapshots[SECOND] is None
    assert agent.m.boot_snapshots.shapes() == []
    assert "pause" not in [op for op, _ in agent.runtime.calls]


async def test_a_restarted_agent_restores_what_the_last_one_kept(
    tmp_path: Path, envd: FakeEnvd, agent: Agent
) -> None:
    """Kept under the same stamp, for the template as it still is: the restarted agent's first
    create of the shape restores it (no boot, no new snapshot made). What was half-made, cut
    short or made under another stamp is removed."""
    first = await agent.m.create(spec(SPEC.sandbox_id))
    await wait_for(lambda: agent.m.boot_snapshots.shapes(), 5, what="the shape's boot snapshot")
    [kept] = snapshot_dirs(agent)
    await agent.m.destroy(first.sandbox_id)
    await agent.m.stop()
    root = agent.m.boot_snapshots.root
    shape = json.loads((root / kept / "shape.json").read_text())
    (root / "making" / "half-made" / "checkpoint").mkdir(parents=True)
    (root / "cut-short" / "checkpoint").mkdir(parents=True)  # no shape.json: not finished
    older = root / "older-stamp"
    shutil.copytree(root / kept, older)
    (older / "shape.json").write_text(json.dumps({**shape, "stamp": "runsc 0, envd 0"}))
    (root / "not-json").mkdir()
    (root / "not-json" / "shape.json").write_text("{")

    runtime = StandInRuntime()
    async with running_agent(tmp_path, envd, boot_snapshots=2, runtime=runtime) as again:
        assert again.m.boot_snapshots.shapes() == [(first.shape, 0.0)]
        assert snapshot_dirs(again) == {kept}
        assert not any(again.m.boot_snapshots.making.iterdir())
        envd.seen.clear()
        capsule = await again.m.create(spec(SECOND))
        assert capsule.status == RUNNING and runtime.snapshots[SECOND] == root / kept
        assert again.envd.seen[0][2] == f"Bearer {again.m.keys.token_for(kept)}"
        await again.m.exec(SECOND, {"cmd": "true"}, 5, ExecOutput(1024))
        assert "pause" not in [op for op, _ in runtime.calls]


@pytest.mark.parametrize("change", ["upgrade", "template replaced", "template deleted"])
async def test_a_restarted_agent_removes_what_it_may_not_restore(
    tmp_path: Path, envd: FakeEnvd, agent: Agent, change: str
) -> None:
    """runsc, envd or the agent upgraded (another stamp), or the template not the one it was
    made of: removed at start, and the shape's next create boots."""
    first = await agent.m.create(spec(SPEC.sandbox_id))
    await wait_for(lambda: agent.m.boot_snapshots.shapes(), 5, what="the shape's boot snapshot")
    await agent.m.destroy(first.sandbox_id)
    await agent.m.stop()
    runtime = StandInRuntime()
    meta = agent.m.settings.templates_dir / "minimal" / "template.json"
    if change == "upgrade":
        runtime.stamp = "runsc 2, envd 1"
    elif change == "template replaced":
        meta.write_text(json.dumps({"name": "minimal", "type": "image", "created_at": 5}))
    else:
        meta.unlink()
    async with running_agent(tmp_path, envd, boot_snapshots=2, runtime=runtime) as again:
        assert again.m.boot_snapshots.shapes() == [] and not snapshot_dirs(again)
        if change != "template deleted":
            await again.m.create(spec(SECOND))
            assert runtime.snapshots[SECOND] is None


async def test_a_restarted_agent_keeps_the_newest_up_to_its_limit(
    tmp_path: Path, envd: FakeEnvd, agent: Agent
) -> None:
    for n, memory in enumerate((256, 512)):
        await agent.m.create(spec(f"sb-00000000-0000-4000-8000-00000000010{n}", memory_mb=memory))
        await wait_for(
            lambda n=n: len(agent.m.boot_snapshots.shapes()) == n + 1, 5, what="its snapshot"
        )
    newest = agent.m.boot_snapshots.shapes()[-1]
    await agent.m.stop()
    async with running_agent(tmp_path, envd, boot_snapshots=1) as again:
        assert again.m.boot_snapshots.shapes() == [newest]
        assert len(snapshot_dirs(again)) == 1


async def test_a_snapshot_being_restored_is_removed_only_after(tmp_path: Path) -> None:
    async def never(_key: object) -> None:
        raise AssertionError("not asked")

    store = BootSnapshots(tmp_path / "snaps", 1, never)
    await store.load("stamp", lambda _key: True)
    keys = [(("minimal", 1, memory, 64), 0.0) for memory in (256, 512)]

    def made(key: object, handle: str) -> Path:
        d = tmp_path / handle
        (d / "checkpoint").mkdir(parents=True)
        (d / "disk.img").write_bytes(b"x")
        capsule = type("C", (), {"handle": handle, "disk_image": d / "disk.img"})()
        capsule.checkpoint_dir = d / "checkpoint"  # type: ignore[attr-defined]
        store.keep(key, capsule)  # type: ignore[arg-type]
        return store.root / handle

    first = made(keys[0], "a")
    with store.reading(keys[0]) as snap:
        assert snap is not None and snap.dir == first
        made(keys[1], "b")  # beyond the limit: the first is dropped, not yet removed
        assert store.shapes() == [keys[1]]
        assert snap.retired and first.is_dir()
    await wait_for(lambda: not first.exists(), 5, what="the dropped snapshot to go once read")
    with store.reading(keys[0]) as snap:
        assert snap is None
