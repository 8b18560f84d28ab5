"""The manager's capsule lifecycle without root: create, pause, resume, destroy and what each
leaves behind when it fails half-way. envd is a real HTTP server on 127.0.0.1 (fake_envd.py);
the isolation (runsc, network, disks) is a stand-in runtime that records what it is asked and
keeps the capsule's record as the real one does. Real capsules: tests/integration."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from tests.unit.hostagent.fake_envd import Answer, FakeEnvd
from wrenn_server.hostagent import errors, manager
from wrenn_server.hostagent.capsule import PAUSED, RUNNING, Capsule
from wrenn_server.hostagent.capsule_spec import CreateSpec
from wrenn_server.hostagent.config import AgentSettings
from wrenn_server.hostagent.manager import SandboxManager
from wrenn_server.hostagent.network import CapsuleNet
from wrenn_server.hostagent.templates import Template, TemplateStore

ID = "sb-00000000-0000-4000-8000-0000000000c1"
SPEC = CreateSpec(sandbox_id=ID, template="minimal", memory_mb=256, disk_size_mb=64)


@dataclass
class StandInRuntime:
    """Records each call; a capsule's envd is the stand-in on 127.0.0.1."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    snapshots: dict[str, Path | None] = field(default_factory=dict)  # what each create restored
    fail_create: bool = False
    stamp: str = "runsc 1, envd 1"  # what checkpoints are tied to: an upgrade changes it

    def _net(self) -> CapsuleNet:
        return CapsuleNet("wrn-x", "wvx", IPv4Address("127.0.0.1"), IPv4Address("127.0.0.1"))

    async def prepare(self) -> None:
        self.calls.append(("prepare", ""))

    def checkpoint_stamp(self) -> str:
        return self.stamp

    async def create(self, capsule: Capsule, snapshot: Path | None = None) -> None:
        self.calls.append(("create", capsule.sandbox_id))
        self.snapshots[capsule.sandbox_id] = snapshot
        if self.fail_create:
            raise errors.Internal()
        capsule.dir.mkdir(parents=True)
        capsule.disk_image.write_bytes(b"disk")
        capsule.net = self._net()
        capsule.save()

    async def destroy(self, capsule: Capsule) -> None:
        self.calls.append(("destroy", capsule.sandbox_id))
        capsule.net = None
        shutil.rmtree(capsule.dir, ignore_errors=True)

    async def teardown(self, capsule: Capsule) -> None:
        self.calls.append(("teardown", capsule.sandbox_id))
        capsule.net = None

    def drop_checkpoint(self, capsule: Capsule) -> None:
        self.calls.append(("drop_checkpoint", capsule.sandbox_id))
        shutil.rmtree(capsule.checkpoint_dir)

    async def pause(self, capsule: Capsule) -> None:
        self.calls.append(("pause", capsule.sandbox_id))
        capsule.checkpoint_dir.mkdir()
        capsule.net = None
        capsule.status = PAUSED
        capsule.save()

    async def resume(self, capsule: Capsule) -> None:
        self.calls.append(("resume", capsule.sandbox_id))
        if not capsule.checkpoint_dir.is_dir():
            raise errors.InvalidState("capsule has no checkpoint to resume from")
        capsule.net = self._net()
        capsule.status = RUNNING
        capsule.auto_paused = False
        capsule.save()

    async def snapshot(self, capsule: Capsule, name: str, overwrite: bool) -> Template:
        raise NotImplementedError

    async def flatten(self, capsule: Capsule, name: str, overwrite: bool) -> Template:
        raise NotImplementedError

    async def sandbox_pid(self, capsule: Capsule) -> int | None:
        return os.getpid()  # a process that outlives the test: the sandbox never "dies"

    def sandbox_running(self, capsule: Capsule) -> bool:
        return True

    def exit_reason(self, capsule: Capsule) -> str:
        return "sandbox exited"

    async def recover(self) -> list[Capsule]:
        return []


@dataclass
class Agent:
    m: SandboxManager
    runtime: StandInRuntime
    envd: FakeEnvd

    def envd_calls(self) -> list[tuple[str, str]]:
        return [(method, path) for method, path, _auth in self.envd.seen]


@pytest.fixture
async def agent(
    tmp_path: Path, envd: FakeEnvd, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Agent]:
    # An envd that never gets ready is given up on in a moment rather than 20 s.
    monkeypatch.setattr(manager, "ENVD_START_TIMEOUT", 0.5)
    async with running_agent(tmp_path, envd, boot_snapshots=0) as agent:
        yield agent


@contextlib.asynccontextmanager
async def running_agent(
    tmp_path: Path, envd: FakeEnvd, runtime: StandInRuntime | None = None, **settings_: Any
) -> AsyncIterator[Agent]:
    """A manager on the stand-in runtime, `settings_` over the tests' own (a restarted agent
    if one ran over `tmp_path` before)."""
    settings = AgentSettings(
        **{
            "data_dir": tmp_path,
            "envd_port": envd.port,
            "pool_size": 0,
            "memory_reserve_mb": 0,
            "disk_reserve_mb": 0,
            "reaper_interval_sec": 3600,
            **settings_,
        }
    )
    if not (settings.templates_dir / "minimal").exists():
        (settings.templates_dir / "minimal").mkdir(parents=True)
        (settings.templates_dir / "minimal" / "template.json").write_text(
            json.dumps({"name": "minimal", "type": "image", "created_at": 0})
        )
    envd.answers.update(
        {path: Answer(200, b"") for path in ("/init", "/snapshot/prepare")},
    )
    envd.answers["/health"] = Answer(200, b'{"status": "ok"}')
    runtime = runtime or StandInRuntime()
    m = SandboxManager(settings, runtime, TemplateStore(settings.templates_dir))  # type: ignore[arg-type]
    await m.start()
    try:
        yield Agent(m, runtime, envd)
    finally:
        await m.stop()


async def test_create_and_destroy(agent: Agent) -> None:
    spec = CreateSpec(**{**SPEC.__dict__, "default_user": "alice", "default_env": {"A": "1"}})
    capsule = await agent.m.create(spec)
    assert capsule.status == RUNNING and agent.m.get(ID) is capsule
    assert Capsule.load(capsule.dir).status == RUNNING
    assert agent.runtime.calls[-1] == ("create", ID)
    # Its envd was waited for, then given the defaults, with the capsule's own token.
    assert agent.envd_calls()[-2:] == [("GET", "/health"), ("POST", "/init")]
    assert agent.envd.seen[-1][2] == f"Bearer {agent.m.keys.token_for(ID)}"
    assert json.loads(agent.envd.bodies[-1]) == {
        "default_user": "alice",
        "env": {"A": "1"},
        "token": None,
    }
    assert agent.m.envd(ID) is agent.m.clients[ID]

    await agent.m.destroy(ID)
    assert agent.runtime.calls[-1] == ("destroy", ID)
    assert ID not in agent.m.capsules and ID not in agent.m.clients
    assert not capsule.dir.exists()
    with pytest.raises(errors.NotFound):
        agent.m.get(ID)
    # The id is free again.
    assert (await agent.m.create(SPEC)).sandbox_id == ID


async def test_a_taken_id_is_refused_before_anything_is_made(agent: Agent) -> None:
    await agent.m.create(SPEC)
    calls = list(agent.runtime.calls)
    with pytest.raises(errors.AlreadyExists):
        await agent.m.create(SPEC)
    assert agent.runtime.calls == calls


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        (CreateSpec(sandbox_id="sb-nope"), errors.InvalidArgument),
        (CreateSpec(template="no-such-template"), errors.NotFound),
        (CreateSpec(template="../etc"), errors.InvalidArgument),
        (CreateSpec(vcpus=65), errors.InvalidArgument),
    ],
)
async def test_bad_requests_make_nothing(
    agent: Agent, spec: CreateSpec, error: type[errors.AgentError]
) -> None:
    with pytest.raises(error):
        await agent.m.create(spec)
    assert agent.runtime.calls == [("prepare", "")]
    assert agent.m.capsules == {}


async def test_a_capsule_whose_envd_never_answers_is_removed(agent: Agent) -> None:
    agent.envd.answers["/health"] = Answer(503, b"")
    with pytest.raises(errors.Timeout):
        await agent.m.create(SPEC)
    assert agent.runtime.calls[-2:] == [("create", ID), ("destroy", ID)]
    assert agent.m.capsules == {} and agent.m.clients == {}
    assert agent.m.lock_users(ID) == 0
    # Nothing of it is left to block a retry.
    agent.envd.answers["/health"] = Answer(200, b"{}")
    assert (await agent.m.create(SPEC)).status == RUNNING


async def test_a_runtime_failure_leaves_nothing(agent: Agent) -> None:
    agent.runtime.fail_create = True
    with pytest.raises(errors.Internal):
        await agent.m.create(SPEC)
    assert agent.runtime.calls[-2:] == [("create", ID), ("destroy", ID)]
    assert agent.m.capsules == {}
    assert agent.m.lock_users(ID) == 0  # its lock went with it


async def waiting_for_lock(agent: Agent, users: int) -> None:
    """Until `users` operations hold or wait for the capsule's lock."""
    deadline = asyncio.get_running_loop().time() + 5
    while agent.m.lock_users(ID) < users:
        assert asyncio.get_running_loop().time() < deadline, "the operations never queued"
        await asyncio.sleep(0.001)


async def test_an_operation_that_waited_for_a_destroy_finds_no_capsule(agent: Agent) -> None:
    """A pause (or a second destroy) queued behind a destroy must not act on the discarded
    capsule: it answers NOT_FOUND and the runtime never hears of it."""
    await agent.m.create(SPEC)
    async with agent.m.lock(ID):  # as a lifecycle operation in progress would
        destroy = asyncio.create_task(agent.m.destroy(ID))
        pause = asyncio.create_task(agent.m.pause(ID))
        again = asyncio.create_task(agent.m.destroy(ID))
        await waiting_for_lock(agent, 4)
    await destroy
    with pytest.raises(errors.NotFound):
        await pause
    with pytest.raises(errors.NotFound):
        await again
    assert [c for c in agent.runtime.calls if c[0] in ("pause", "destroy")] == [("destroy", ID)]
    assert agent.m.capsules == {} and agent.m.lock_users(ID) == 0


async def test_a_create_that_waited_for_the_same_id_is_refused(agent: Agent) -> None:
    async with agent.m.lock(ID):
        first = asyncio.create_task(agent.m.create(SPEC))
        second = asyncio.create_task(agent.m.create(SPEC))
        await waiting_for_lock(agent, 3)
    capsule = await first
    with pytest.raises(errors.AlreadyExists):
        await second
    assert agent.m.get(ID) is capsule and capsule.status == RUNNING
    assert [c for c in agent.runtime.calls if c[0] == "create"] == [("create", ID)]


async def test_pause_and_resume(agent: Agent) -> None:
    capsule = await agent.m.create(SPEC)
    await agent.m.pause(ID)
    # envd flushed its writes first; the client is gone with the sandbox.
    assert ("POST", "/snapshot/prepare") in agent.envd_calls()
    assert agent.runtime.calls[-1] == ("pause", ID)
    assert capsule.status == PAUSED and ID not in agent.m.clients
    with pytest.raises(errors.InvalidState, match="is paused, not running"):
        agent.m.envd(ID)
    with pytest.raises(errors.InvalidState, match="not running"):
        await agent.m.pause(ID)

    await agent.m.resume(ID, timeout_sec=60)
    assert capsule.status == RUNNING and capsule.timeout_sec == 60
    assert agent.runtime.calls[-2:] == [("resume", ID), ("drop_checkpoint", ID)]
    assert agent.m.envd(ID) is agent.m.clients[ID]
    with pytest.raises(errors.InvalidState, match="not paused"):
        await agent.m.resume(ID)


async def test_a_resume_whose_envd_never_answers_stays_paused(agent: Agent) -> None:
    capsule = await agent.m.create(SPEC)
    await agent.m.pause(ID)
    agent.envd.answers["/health"] = Answer(503, b"")
    with pytest.raises(errors.Timeout):
        await agent.m.resume(ID)
    # Stopped again with its checkpoint kept, so a later resume can succeed.
    assert agent.runtime.calls[-2:] == [("resume", ID), ("teardown", ID)]
    assert capsule.status == PAUSED and capsule.checkpoint_dir.is_dir()
    assert Capsule.load(capsule.dir).status == PAUSED
    agent.envd.answers["/health"] = Answer(200, b"{}")
    await agent.m.resume(ID)
    assert capsule.status == RUNNING


async def test_a_restored_sandbox_that_dies_while_it_starts_is_restored_once_more(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed during its restore (a host under memory pressure, an operator), a capsule whose
    checkpoint is intact resumes on the agent's second try; a second death is the caller's
    error, the capsule left paused with its checkpoint."""
    capsule = await agent.m.create(SPEC)
    await agent.m.pause(ID)
    restore = agent.runtime.resume
    dying = [True]  # whether each next restore's sandbox dies

    async def resume(capsule: Capsule) -> None:
        await restore(capsule)
        dead = dying.pop(0) if dying else False
        agent.envd.answers["/health"] = Answer(503 if dead else 200, b"{}")
        monkeypatch.setattr(agent.runtime, "sandbox_running", lambda _c: not dead)

    monkeypatch.setattr(agent.runtime, "resume", resume)
    await agent.m.resume(ID)
    assert capsule.status == RUNNING
    assert [op for op, sid in agent.runtime.calls if sid == ID][-4:] == [
        "resume",
        "teardown",  # stopped, its checkpoint kept
        "resume",
        "drop_checkpoint",
    ]

    await agent.m.pause(ID)
    dying[:] = [True, True]
    with pytest.raises(errors.RestoreFailed, match="still paused: try again, or destroy it"):
        await agent.m.resume(ID)
    assert capsule.status == PAUSED and capsule.checkpoint_dir.is_dir()
    await agent.m.resume(ID)
    assert capsule.status == RUNNING


async def test_a_restore_that_fails_is_tried_once_more(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """runsc's restore itself failing (the sandbox killed inside it) leaves the checkpoint as
    it was: a second try resumes; two failures leave the capsule paused for a later resume."""
    capsule = await agent.m.create(SPEC)
    await agent.m.pause(ID)
    restore = agent.runtime.resume
    failing = [True]

    async def resume(capsule: Capsule) -> None:
        if failing and failing.pop(0):
            raise errors.RestoreFailed()
        await restore(capsule)

    monkeypatch.setattr(agent.runtime, "resume", resume)
    await agent.m.resume(ID)
    assert capsule.status == RUNNING and not failing
    assert agent.m.envd(ID) is agent.m.clients[ID]

    await agent.m.pause(ID)
    failing[:] = [True, True]
    with pytest.raises(errors.RestoreFailed):
        await agent.m.resume(ID)
    assert not failing  # tried twice, not more
    assert capsule.status == PAUSED and capsule.checkpoint_dir.is_dir()
    assert Capsule.load(capsule.dir).status == PAUSED
    await agent.m.resume(ID)
    assert capsule.status == RUNNING


async def test_pause_all(agent: Agent) -> None:
    other = "sb-00000000-0000-4000-8000-0000000000c2"
    await agent.m.create(SPEC)
    await agent.m.create(CreateSpec(**{**SPEC.__dict__, "sandbox_id": other}))
    await agent.m.pause(other)
    assert await agent.m.pause_all() == ([ID], [])
    assert {c.status for c in agent.m.capsules.values()} == {PAUSED}
    # Paused on the agent's own decision, unlike the one a caller paused.
    assert {c.sandbox_id: c.auto_paused for c in agent.m.capsules.values()} == {
        ID: True,
        other: False,
    }


def big_template(agent: Agent, name: str, files: int) -> Path:
    """An image template whose rootfs holds `files` empty files, 200 to a directory."""
    d = agent.m.settings.templates_dir / name
    (d / "rootfs").mkdir(parents=True)
    (d / "template.json").write_text(json.dumps({"name": name, "type": "image", "created_at": 0}))
    for i in range(0, files, 200):
        sub = d / "rootfs" / str(i)
        sub.mkdir()
        for j in range(200):
            (sub / str(j)).touch()
    return d


async def test_deleting_a_big_template_does_not_stall_the_agent(agent: Agent) -> None:
    """Every RPC, the TTL reaper and the heartbeats share the agent's event loop: a template
    of many files is removed off it, so a coroutine ticking every 10 ms keeps ticking."""
    d = big_template(agent, "big", 20_000)
    ticks: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        while True:
            ticks.append(loop.time())
            if done.is_set():
                return
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # its first tick
    start = asyncio.get_running_loop().time()
    await agent.m.delete_template("big")
    took = asyncio.get_running_loop().time() - start
    done.set()
    await task
    assert not d.exists() and not agent.m.templates.exists("big")
    assert not list(agent.m.settings.templates_dir.glob(".trash-*"))
    max_gap = max(b - a for a, b in itertools.pairwise(ticks))
    # Removed on the loop, the gap would be the whole delete (20k files: well over 0.2 s).
    bound = min(0.2, took / 2)
    assert max_gap < bound, f"the event loop stalled {max_gap:.3f} s during a {took:.3f} s delete"


async def test_a_template_in_use_is_not_deleted(agent: Agent) -> None:
    await agent.m.create(SPEC)
    with pytest.raises(errors.InvalidState, match="in use by 1 capsule"):
        await agent.m.delete_template("minimal")
    assert agent.m.templates.exists("minimal")
