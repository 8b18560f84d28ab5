"""Slow or failing steps of a pause (runsc's checkpoint, the stopped sandbox letting go of the
disk image) end in a true state: paused (the checkpoint is whole), running as before (the
checkpoint failed, the sandbox runs on), or dead with the reason (the sandbox stopped with the
failed checkpoint); never a capsule listed running that nothing answers in. A resume or snapshot
that needs a disk image still held is refused (retryable) and the capsule stays paused.

The manager's part runs over test_lifecycle's stand-in runtime; the gVisor runtime's part runs
for real with what needs root (runsc, network, loop devices) stood in. Real gVisor, with the disk
held busy from the host: tests/integration/test_slow_disk_release.py."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from wrenn_server.hostagent import errors, manager, network, storage
from wrenn_server.hostagent.capsule import DEAD, PAUSED, RUNNING, Capsule, capsule_dir
from wrenn_server.hostagent.config import AgentSettings
from wrenn_server.hostagent.gvisor import GVisorRuntime
from wrenn_server.hostagent.network import CapsuleNet, Ipam, names_for
from wrenn_server.hostagent.proc import CommandError
from wrenn_server.hostagent.templates import TemplateStore

from . import test_lifecycle
from .capsules import a_capsule
from .test_lifecycle import ID, SPEC, Agent

agent = test_lifecycle.agent  # the manager over a stand-in runtime (fixture)

CHECKPOINT_FAILED = CommandError(["runsc", "checkpoint"], 128, "checkpoint failed: ...")

# -- the manager ------------------------------------------------------------------------------


def _checkpoint_fails(agent: Agent, error: BaseException, *, sandbox_stops: bool) -> None:
    async def pause(capsule: Capsule) -> None:
        agent.runtime.calls.append(("pause", capsule.sandbox_id))
        raise error

    agent.runtime.pause = pause  # type: ignore[method-assign]
    agent.runtime.sandbox_running = lambda capsule: not sandbox_stops  # type: ignore[method-assign]


async def test_a_failed_checkpoint_leaves_a_running_capsule_running(agent: Agent) -> None:
    capsule = await agent.m.create(SPEC)
    _checkpoint_fails(agent, CHECKPOINT_FAILED, sandbox_stops=False)
    with pytest.raises(CommandError):
        await agent.m.pause(ID)
    assert capsule.status == RUNNING and Capsule.load(capsule.dir).status == RUNNING
    assert agent.m.envd(ID) is agent.m.clients[ID]  # still answering, through the same client
    assert ("teardown", ID) not in agent.runtime.calls


async def test_a_checkpoint_past_its_timeout_is_a_retryable_error(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(manager, "CHECKPOINT_SETTLE", 0.3)
    capsule = await agent.m.create(SPEC)
    _checkpoint_fails(agent, TimeoutError(), sandbox_stops=False)
    with pytest.raises(errors.Unavailable, match="keeps running"):
        await agent.m.pause(ID)
    assert capsule.status == RUNNING
    assert agent.m.envd(ID) is agent.m.clients[ID]


async def test_a_sandbox_that_stops_after_its_checkpoint_timed_out_makes_the_capsule_dead(
    agent: Agent,
) -> None:
    """Measured with runsc: its save goes on inside the sandbox after the checkpoint command
    is killed, and the sandbox then exits; the pause waits for that instead of calling the
    capsule running."""
    capsule = await agent.m.create(SPEC)
    _checkpoint_fails(agent, TimeoutError(), sandbox_stops=False)
    asked = 0

    def running(capsule: Capsule) -> bool:
        nonlocal asked
        asked += 1
        return asked < 3  # still saving at first, then gone

    agent.runtime.sandbox_running = running  # type: ignore[method-assign]
    with pytest.raises(TimeoutError):
        await agent.m.pause(ID)
    assert capsule.status == DEAD
    assert capsule.exit_reason.endswith("(its checkpoint took too long)")


async def test_a_sandbox_stopped_by_a_failed_checkpoint_makes_the_capsule_dead(
    agent: Agent,
) -> None:
    capsule = await agent.m.create(SPEC)
    _checkpoint_fails(agent, CHECKPOINT_FAILED, sandbox_stops=True)
    with pytest.raises(CommandError):
        await agent.m.pause(ID)
    assert capsule.status == DEAD and Capsule.load(capsule.dir).status == DEAD
    assert "during a pause that failed" in capsule.exit_reason
    assert ("teardown", ID) in agent.runtime.calls and ID not in agent.m.clients
    # Every later call says so instead of failing on a half torn-down capsule.
    with pytest.raises(errors.InvalidState, match="is dead: its sandbox stopped"):
        agent.m.envd(ID)
    with pytest.raises(errors.InvalidState, match="is dead, not running"):
        await agent.m.pause(ID)
    await agent.m.destroy(ID)
    assert ID not in agent.m.capsules


async def test_a_resume_refused_while_the_disk_is_held_stays_paused(agent: Agent) -> None:
    capsule = await agent.m.create(SPEC)
    await agent.m.pause(ID)

    async def resume(capsule: Capsule) -> None:
        raise errors.Unavailable(storage.DISK_HELD)

    agent.runtime.resume = resume  # type: ignore[method-assign]
    with pytest.raises(errors.Unavailable, match="still held"):
        await agent.m.resume(ID)
    assert capsule.status == PAUSED and capsule.checkpoint_dir.is_dir()


# -- the gVisor runtime -----------------------------------------------------------------------


class Host:
    """The root-only parts of a pause stood in, recording what they were asked; `held` is the
    disk image a host process keeps attached."""

    def __init__(self) -> None:
        self.held = False
        self.calls: list[str] = []
        self.state: dict[str, Any] | None = {"status": "running"}

    async def checkpoint(self, cid: str, image: Path, netns_path: str, **_kw: Any) -> None:
        self.calls.append("checkpoint")
        (image / "pages.img").write_bytes(b"\1" * 4096)

    async def released(self, image: Path, timeout: float) -> bool:
        self.calls.append("released?")
        return not self.held

    async def quietly(self, *args: Any) -> None:
        self.calls.append("teardown step")

    async def state_of(self, cid: str, netns_path: str) -> dict[str, Any] | None:
        return self.state

    async def thaw(self, cid: str, netns_path: str) -> None:
        self.calls.append("thaw")

    async def none(self) -> list[str]:
        return []


def _runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[GVisorRuntime, Host]:
    settings = AgentSettings(data_dir=tmp_path, envd_port=49983, disk_release_timeout_sec=0.1)
    (settings.templates_dir / "minimal" / "rootfs").mkdir(parents=True)
    (settings.templates_dir / "minimal" / "template.json").write_text(
        json.dumps({"name": "minimal", "type": "image", "created_at": 0})
    )
    settings.capsules_dir.mkdir()
    runtime = GVisorRuntime(settings, TemplateStore(settings.templates_dir))
    runtime.ipam = Ipam(settings.capsule_subnet, root=tmp_path / "ipam")
    runtime.cgroup_root = tmp_path / "cgroup"  # never the host's
    host = Host()
    monkeypatch.setattr(runtime.runsc, "checkpoint", host.checkpoint)
    monkeypatch.setattr(runtime.runsc, "destroy", host.quietly)
    monkeypatch.setattr(runtime.runsc, "state", host.state_of)
    monkeypatch.setattr(runtime.runsc, "thaw", host.thaw)
    monkeypatch.setattr(runtime, "_kill_netns_pids", host.quietly)
    monkeypatch.setattr(runtime.dns, "stop", host.quietly)
    monkeypatch.setattr(network, "teardown", host.quietly)
    monkeypatch.setattr(storage, "released", host.released)
    # A restart's sweeps list the host's namespaces and runsc's sandboxes: never the real ones
    # (the sweep would take another agent's capsules on this host for strays).
    monkeypatch.setattr(network, "list_netns", host.none)
    monkeypatch.setattr(runtime.runsc, "list_ids", host.none)
    return runtime, host


def _running(runtime: GVisorRuntime) -> Capsule:
    owner = runtime._owner(ID)
    slot = runtime.ipam.allocate(owner)
    hosts = list(slot.hosts())
    net = CapsuleNet(*names_for("000000000000"), hosts[0], hosts[1])
    capsule = a_capsule(ID, capsule_dir(runtime.settings.capsules_dir, ID), net=net, status=RUNNING)
    capsule.dir.mkdir()
    capsule.disk_image.write_bytes(b"")
    capsule.save()
    return capsule


async def test_a_pause_whose_disk_is_not_let_go_ends_paused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    runtime, host = _runtime(tmp_path, monkeypatch)
    capsule = _running(runtime)
    host.held = True
    with caplog.at_level(logging.WARNING):
        await runtime.pause(capsule)
    # The checkpoint is whole and the sandbox stopped: paused, in memory and on disk, with its
    # network released; the log says the disk was not let go of in time.
    assert capsule.status == PAUSED and Capsule.load(capsule.dir).status == PAUSED
    assert capsule.net is None and runtime.ipam.owned() == {}
    assert (capsule.checkpoint_dir / "pages.img").is_file()
    assert "disk_still_held sandbox=" + ID in caplog.text

    # Mounting the image again now would corrupt it: the resume is refused, nothing is booted.
    with pytest.raises(errors.Unavailable, match="still held"):
        await runtime.resume(capsule)
    assert capsule.status == PAUSED and runtime.ipam.owned() == {}
    with pytest.raises(errors.Unavailable, match="still held"):
        await runtime.snapshot(capsule, "snap", overwrite=False)
    assert not runtime.templates.exists("snap")
    assert not [p for p in runtime.settings.templates_dir.iterdir() if p.name.startswith(".")]
    assert capsule.status == PAUSED and Capsule.load(capsule.dir).operation == ""


async def test_a_pause_whose_disk_is_let_go_does_not_warn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    runtime, host = _runtime(tmp_path, monkeypatch)
    capsule = _running(runtime)
    with caplog.at_level(logging.WARNING):
        await runtime.pause(capsule)
    assert capsule.status == PAUSED and "released?" in host.calls
    assert "disk_still_held" not in caplog.text


@pytest.mark.parametrize(("left", "thawed"), [("paused", True), ("running", False)])
async def test_a_failed_checkpoint_thaws_a_sandbox_it_left_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, left: str, thawed: bool
) -> None:
    runtime, host = _runtime(tmp_path, monkeypatch)
    capsule = _running(runtime)
    net = capsule.net

    async def checkpoint(cid: str, image: Path, netns_path: str, **_kw: Any) -> None:
        host.state = {"status": left}  # runsc stopped the sandbox's tasks to save them
        raise CHECKPOINT_FAILED

    monkeypatch.setattr(runtime.runsc, "checkpoint", checkpoint)
    with pytest.raises(CommandError):
        await runtime.pause(capsule)
    assert ("thaw" in host.calls) is thawed
    assert capsule.status == RUNNING and capsule.net is net
    assert not (capsule.dir / "checkpoint.new").exists()


@pytest.mark.parametrize(
    ("stderr", "raised"),
    [
        ("restore failed: loading kernel: ...", errors.RestoreFailed),
        # The host out of room says so (RESOURCE_EXHAUSTED at the RPC edge), not "restore again".
        ("write: no space left on device", CommandError),
    ],
)
async def test_a_restore_that_fails_leaves_the_capsule_paused_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stderr: str, raised: type[Exception]
) -> None:
    runtime, _host = _runtime(tmp_path, monkeypatch)
    capsule = _running(runtime)
    await runtime.pause(capsule)

    async def boot(capsule: Capsule, restore_from: Path | None) -> None:
        assert restore_from == capsule.checkpoint_dir
        raise CommandError(["runsc", "restore"], 128, stderr)  # _boot tore down what it made

    monkeypatch.setattr(runtime, "_boot", boot)
    with pytest.raises(raised):
        await runtime.resume(capsule)
    assert capsule.status == PAUSED and Capsule.load(capsule.dir).status == PAUSED
    assert (capsule.checkpoint_dir / "pages.img").is_file()
