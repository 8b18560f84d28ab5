"""A pause or snapshot the host agent did not see to its end (killed during or right after
runsc's checkpoint): the record says which operation was under way from before the checkpoint
starts, and at start the agent finishes it (a complete checkpoint: paused, resumable) or rolls
it back (a partial one is discarded: running if its sandbox runs, else dead with the reason),
waiting for a checkpoint that still runs. The record and the files are real; what needs root
(runsc, network teardown) is stood in, except the shell that marks a checkpoint complete,
which runs around a stand-in runsc."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from wrenn_server.hostagent import checkpoints, network
from wrenn_server.hostagent.capsule import (
    DEAD,
    PAUSED,
    PAUSING,
    RUNNING,
    SNAPSHOTTING,
    Capsule,
    capsule_dir,
)
from wrenn_server.hostagent.config import AgentSettings
from wrenn_server.hostagent.gvisor import NEW_CHECKPOINT, GVisorRuntime
from wrenn_server.hostagent.network import CapsuleNet, Ipam, names_for
from wrenn_server.hostagent.proc import CommandError
from wrenn_server.hostagent.runsc import Runsc
from wrenn_server.hostagent.templates import TemplateStore

from ...waiting import wait_for
from .capsules import a_capsule

ID = "sb-0123abcd-4567-4def-8901-23456789abcd"


class StandInHost:
    """runsc's view of the sandbox and the teardown, as the runtime asks them."""

    def __init__(self) -> None:
        self.torn_down: list[str] = []
        self.sandbox_runs = False

    async def teardown(self, capsule: Capsule) -> None:
        self.torn_down.append(capsule.sandbox_id)
        capsule.net = None

    async def state(self, cid: str, netns_path: str) -> dict[str, Any] | None:
        return {"id": cid, "status": "running"} if self.sandbox_runs else None


async def _nothing(*_args: object) -> None:
    return None


async def _no_ids() -> list[str]:
    return []


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GVisorRuntime:
    settings = AgentSettings(data_dir=tmp_path, envd_port=49983)
    (settings.templates_dir / "minimal" / "rootfs").mkdir(parents=True)
    (settings.templates_dir / "minimal" / "template.json").write_text(
        json.dumps({"name": "minimal", "type": "image", "created_at": 0})
    )
    settings.capsules_dir.mkdir()
    rt = GVisorRuntime(settings, TemplateStore(settings.templates_dir))
    rt.ipam = Ipam(settings.capsule_subnet, root=tmp_path / "ipam")
    rt.cgroup_root = tmp_path / "cgroup"  # never the host's
    return rt


@pytest.fixture
def host(runtime: GVisorRuntime, monkeypatch: pytest.MonkeyPatch) -> StandInHost:
    stand_in = StandInHost()
    monkeypatch.setattr(runtime, "teardown", stand_in.teardown)
    monkeypatch.setattr(runtime.runsc, "state", stand_in.state)
    monkeypatch.setattr(runtime.runsc, "list_ids", _no_ids)
    monkeypatch.setattr(runtime.runsc, "forget", _nothing)
    monkeypatch.setattr(runtime.dns, "serve", _nothing)
    monkeypatch.setattr(network, "list_netns", _no_ids)
    return stand_in


def _running(runtime: GVisorRuntime, operation: str = "") -> Capsule:
    netns, veth = names_for("0123abcd4567")
    capsule = a_capsule(
        ID,
        capsule_dir(runtime.settings.capsules_dir, ID),
        net=CapsuleNet(netns, veth, IPv4Address("10.11.0.1"), IPv4Address("10.11.0.2")),
        status=RUNNING,
        operation=operation,
    )
    capsule.dir.mkdir()
    capsule.save()
    return capsule


def _image(capsule: Capsule, *, complete: bool, name: str = NEW_CHECKPOINT) -> Path:
    image = capsule.dir / name
    image.mkdir()
    (image / "checkpoint.img").write_bytes(b"state")
    (image / "pages.img").write_bytes(b"\1" * 4096)
    if complete:
        (image / checkpoints.COMPLETE).touch()
    return image


async def _recovered(runtime: GVisorRuntime) -> Capsule | None:
    kept = await runtime.recover()
    assert len(kept) <= 1
    if not kept:
        return None
    on_disk = Capsule.load(kept[0].dir)
    assert (on_disk.status, on_disk.operation) == (kept[0].status, kept[0].operation)
    return kept[0]


# -- the record during a pause -------------------------------------------------------------


async def test_a_pause_keeps_its_operation_in_the_record_until_paused(
    runtime: GVisorRuntime, host: StandInHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    capsule = _running(runtime)
    _image(capsule, complete=True, name="checkpoint")  # a resume's leftover, older than the disk
    seen: list[tuple[str, str, bool]] = []

    async def checkpoint(cid: str, image: Path, netns_path: str) -> None:
        on_disk = Capsule.load(capsule.dir)
        seen.append((on_disk.status, on_disk.operation, capsule.checkpoint_dir.exists()))
        (image / "pages.img").write_bytes(b"\1" * 4096)
        (image / checkpoints.COMPLETE).touch()

    monkeypatch.setattr(runtime.runsc, "checkpoint", checkpoint)
    await runtime.pause(capsule)
    # Saved before runsc started, with no older checkpoint left to be mistaken for this one's.
    assert seen == [(RUNNING, PAUSING, False)]
    on_disk = Capsule.load(capsule.dir)
    assert (on_disk.status, on_disk.operation) == (PAUSED, "")
    assert (capsule.checkpoint_dir / "pages.img").is_file()
    assert not (capsule.dir / NEW_CHECKPOINT).exists()


async def test_a_failed_checkpoint_clears_the_operation(
    runtime: GVisorRuntime, host: StandInHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    capsule = _running(runtime)

    async def checkpoint(cid: str, image: Path, netns_path: str) -> None:
        raise CommandError(["runsc", "checkpoint"], 1, "checkpoint failed")

    monkeypatch.setattr(runtime.runsc, "checkpoint", checkpoint)
    with pytest.raises(CommandError):
        await runtime.pause(capsule)
    on_disk = Capsule.load(capsule.dir)
    assert (on_disk.status, on_disk.operation) == (RUNNING, "")
    assert not (capsule.dir / NEW_CHECKPOINT).exists()
    assert host.torn_down == []


# -- recovery ------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", [PAUSING, SNAPSHOTTING])
@pytest.mark.parametrize("renamed", [False, True], ids=["checkpoint.new", "checkpoint"])
async def test_a_complete_checkpoint_makes_the_capsule_paused(
    runtime: GVisorRuntime, host: StandInHost, operation: str, renamed: bool
) -> None:
    """Killed after runsc's checkpoint succeeded: before or after the image was renamed."""
    capsule = _running(runtime, operation)
    _image(capsule, complete=True, name="checkpoint" if renamed else NEW_CHECKPOINT)
    kept = await _recovered(runtime)
    assert kept is not None
    assert (kept.status, kept.operation) == (PAUSED, "")
    # No caller learnt of the pause: the control plane takes it as the agent's own.
    assert kept.auto_paused
    assert (kept.checkpoint_dir / "pages.img").read_bytes() == b"\1" * 4096
    assert not (kept.dir / NEW_CHECKPOINT).exists()
    assert host.torn_down == [ID]


async def test_a_complete_checkpoint_replaces_an_older_one_left_beside_it(
    runtime: GVisorRuntime, host: StandInHost
) -> None:
    capsule = _running(runtime, PAUSING)
    older = _image(capsule, complete=True, name="checkpoint")
    (older / "pages.img").write_bytes(b"older")
    _image(capsule, complete=True)
    kept = await _recovered(runtime)
    assert kept is not None and kept.status == PAUSED
    assert (kept.checkpoint_dir / "pages.img").read_bytes() == b"\1" * 4096


async def test_a_partial_checkpoint_of_a_running_sandbox_is_rolled_back(
    runtime: GVisorRuntime, host: StandInHost
) -> None:
    capsule = _running(runtime, PAUSING)
    _image(capsule, complete=False)
    host.sandbox_runs = True
    kept = await _recovered(runtime)
    assert kept is not None
    assert (kept.status, kept.operation) == (RUNNING, "")
    assert kept.net is not None
    assert not (kept.dir / NEW_CHECKPOINT).exists()
    assert not kept.checkpoint_dir.exists()
    assert host.torn_down == []


@pytest.mark.parametrize(("operation", "word"), [(PAUSING, "pause"), (SNAPSHOTTING, "snapshot")])
async def test_a_partial_checkpoint_of_a_stopped_sandbox_is_dead_with_the_reason(
    runtime: GVisorRuntime, host: StandInHost, operation: str, word: str
) -> None:
    capsule = _running(runtime, operation)
    _image(capsule, complete=False)
    kept = await _recovered(runtime)
    assert kept is not None
    assert (kept.status, kept.operation) == (DEAD, "")
    assert f"during a {word}" in kept.exit_reason
    assert not (kept.dir / NEW_CHECKPOINT).exists()
    assert host.torn_down == [ID]


async def test_a_snapshot_interrupted_after_its_pause_leaves_the_capsule_paused(
    runtime: GVisorRuntime, host: StandInHost
) -> None:
    capsule = _running(runtime, SNAPSHOTTING)
    _image(capsule, complete=True, name="checkpoint")
    capsule.status = PAUSED
    capsule.net = None
    capsule.save()
    staging = runtime.templates.staging("snap")
    (staging / "disk.img").write_bytes(b"half copied")
    kept = await _recovered(runtime)
    assert kept is not None
    assert (kept.status, kept.operation) == (PAUSED, "")
    assert (kept.checkpoint_dir / "pages.img").is_file()
    assert not staging.exists()


async def test_an_adopted_capsule_drops_a_resume_s_leftover_checkpoint(
    runtime: GVisorRuntime, host: StandInHost
) -> None:
    capsule = _running(runtime)
    _image(capsule, complete=True, name="checkpoint")
    host.sandbox_runs = True
    kept = await _recovered(runtime)
    assert kept is not None and kept.status == RUNNING
    assert not kept.checkpoint_dir.exists()


Writer = Callable[[list[str]], "subprocess.Popen[bytes]"]


@pytest.fixture
def writer() -> Iterator[Writer]:
    """Starts processes standing in for a runsc checkpoint the killed agent left running."""
    made: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str]) -> subprocess.Popen[bytes]:
        made.append(subprocess.Popen(argv))
        return made[-1]

    yield start
    for proc in made:
        proc.kill()
        proc.wait()


def _write_later(image: Path, after: float) -> list[str]:
    """argv of a process that names the image like runsc checkpoint does, and marks it
    complete after `after` seconds, as the shell around runsc does when runsc succeeded."""
    code = "import sys, time; time.sleep(float(sys.argv[1])); open(sys.argv[2], 'w').close()"
    mark = str(image / checkpoints.COMPLETE)
    return [sys.executable, "-c", code, str(after), mark, checkpoints.image_arg(image)]


async def test_recovery_waits_for_a_checkpoint_still_being_written(
    runtime: GVisorRuntime, host: StandInHost, writer: Writer
) -> None:
    capsule = _running(runtime, PAUSING)
    image = _image(capsule, complete=False)
    proc = writer(_write_later(image, 1.0))
    await wait_for(lambda: checkpoints.writers(image), 10, what="the writer started")
    kept = await _recovered(runtime)
    assert kept is not None
    assert (kept.status, kept.operation) == (PAUSED, "")
    assert proc.poll() is not None


async def test_a_checkpoint_that_does_not_end_is_killed_and_discarded(
    runtime: GVisorRuntime,
    host: StandInHost,
    writer: Writer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(checkpoints, "CHECKPOINT_TIMEOUT", 0.5)
    capsule = _running(runtime, PAUSING)
    image = _image(capsule, complete=False)
    proc = writer(_write_later(image, 600))
    await wait_for(lambda: checkpoints.writers(image), 10, what="the writer started")
    kept = await _recovered(runtime)
    assert kept is not None and kept.status == DEAD
    assert proc.wait(10) == -9
    assert not image.exists()


# -- the mark of a complete checkpoint -----------------------------------------------------


@pytest.mark.parametrize(("code", "complete"), [(0, True), (1, False)])
async def test_the_checkpoint_is_marked_complete_only_when_runsc_succeeded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, complete: bool
) -> None:
    fake = tmp_path / "runsc"
    fake.write_text(
        "#!/bin/sh\n"
        'for a; do case "$a" in --image-path=*) img="${a#--image-path=}";; esac; done\n'
        'echo pages > "$img/pages.img"\n'
        f"exit {code}\n"
    )
    fake.chmod(0o755)
    runsc = Runsc(str(fake), tmp_path / "root")
    # Without nsenter (root's): the stand-in runs in this network namespace.
    monkeypatch.setattr(runsc, "_in_netns", lambda _ns, *args: [*runsc._base(), *args])
    image = tmp_path / "image"
    image.mkdir()
    if complete:
        await runsc.checkpoint("cid", image, "/nonexistent")
    else:
        with pytest.raises(CommandError):
            await runsc.checkpoint("cid", image, "/nonexistent")
    assert (image / "pages.img").is_file()
    assert checkpoints.is_complete(image) is complete
