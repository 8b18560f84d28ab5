"""A host out of disk space or file descriptors: the agent's caller gets RESOURCE_EXHAUSTED saying
which (the control plane's 503), not an internal error, and the failed create or pause leaves
nothing half-made behind. The OSError is raised where the real one comes from (the disk image's
creation, runsc's checkpoint); what is around it that needs root (network, runsc) is stood in."""

from __future__ import annotations

import errno
import json
from ipaddress import IPv4Address
from pathlib import Path

import grpc
import pytest

from wrenn_server.hostagent import errors, storage
from wrenn_server.hostagent.capsule import RUNNING, Capsule, capsule_dir
from wrenn_server.hostagent.config import AgentSettings
from wrenn_server.hostagent.exhaustion import DISK_FULL, NO_FILES
from wrenn_server.hostagent.gvisor import GVisorRuntime
from wrenn_server.hostagent.network import CapsuleNet, Ipam, names_for
from wrenn_server.hostagent.proc import CommandError
from wrenn_server.hostagent.rpc_guard import status_for
from wrenn_server.hostagent.templates import TemplateStore

from .capsules import a_capsule

ID = "sb-0123abcd-4567-4def-8901-23456789abcd"
MKFS_FULL = CommandError(
    ["mkfs.ext4", "disk.img"], 1, "mkfs.ext4: No space left on device while writing out inodes"
)


def _wrapped_enospc() -> BaseException:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as e:
            raise errors.Internal() from e
    except errors.Internal as e:
        return e


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), DISK_FULL),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), DISK_FULL),
        (OSError(errno.EMFILE, "Too many open files"), NO_FILES),
        (OSError(errno.ENFILE, "Too many open files in system"), NO_FILES),
        (MKFS_FULL, DISK_FULL),
        (CommandError(["runsc", "checkpoint"], 128, "open x: too many open files"), NO_FILES),
        (_wrapped_enospc(), DISK_FULL),
    ],
)
def test_exhaustion_is_resource_exhausted(error: BaseException, message: str) -> None:
    assert status_for(error) == (grpc.StatusCode.RESOURCE_EXHAUSTED, message)


@pytest.mark.parametrize(
    "error",
    [
        PermissionError(errno.EACCES, "Permission denied"),
        CommandError(["mount"], 32, "mount: wrong fs type"),
        RuntimeError("boom"),
    ],
)
def test_other_failures_stay_internal(error: BaseException) -> None:
    assert status_for(error) == (grpc.StatusCode.INTERNAL, "internal error")


class StandInHost:
    """What the runtime does as root (teardown of network and mounts, runsc) recorded."""

    def __init__(self) -> None:
        self.torn_down: list[str] = []

    async def teardown(self, capsule: Capsule) -> None:
        self.torn_down.append(capsule.sandbox_id)
        capsule.net = None


def _runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[GVisorRuntime, StandInHost]:
    settings = AgentSettings(data_dir=tmp_path, envd_port=49983)
    (settings.templates_dir / "minimal" / "rootfs").mkdir(parents=True)
    (settings.templates_dir / "minimal" / "template.json").write_text(
        json.dumps({"name": "minimal", "type": "image", "created_at": 0})
    )
    settings.capsules_dir.mkdir()
    runtime = GVisorRuntime(settings, TemplateStore(settings.templates_dir))
    # The address slots of this runtime alone (the host-wide directory holds other agents').
    runtime.ipam = Ipam(settings.capsule_subnet, root=tmp_path / "ipam")
    runtime.cgroup_root = tmp_path / "cgroup"  # never the host's
    host = StandInHost()
    monkeypatch.setattr(runtime, "teardown", host.teardown)
    return runtime, host


def _capsule(runtime: GVisorRuntime, net: CapsuleNet | None = None) -> Capsule:
    return a_capsule(ID, capsule_dir(runtime.settings.capsules_dir, ID), net=net)


@pytest.mark.parametrize(
    ("failure", "message"),
    [(MKFS_FULL, DISK_FULL), (OSError(errno.EMFILE, "Too many open files"), NO_FILES)],
)
async def test_a_create_on_an_exhausted_host_leaves_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    failure: BaseException,
    message: str,
) -> None:
    runtime, host = _runtime(tmp_path, monkeypatch)

    async def create_image(path: Path, size_mb: int) -> None:
        # As far as the real one gets on a full disk: the sparse file exists, mkfs fails.
        path.write_bytes(b"\0" * 4096)
        raise failure

    monkeypatch.setattr(storage, "create_image", create_image)
    capsule = _capsule(runtime)
    with pytest.raises(type(failure)) as exc:
        await runtime.create(capsule)
    assert status_for(exc.value) == (grpc.StatusCode.RESOURCE_EXHAUSTED, message)
    assert not capsule.dir.exists()
    assert host.torn_down == [ID]
    assert runtime.ipam.owned() == {}


async def test_a_pause_on_a_full_disk_keeps_the_capsule_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, host = _runtime(tmp_path, monkeypatch)
    netns, veth = names_for("0123abcd4567")
    net = CapsuleNet(netns, veth, IPv4Address("10.11.0.1"), IPv4Address("10.11.0.2"))
    capsule = _capsule(runtime, net)
    capsule.dir.mkdir()
    capsule.status = RUNNING
    capsule.save()

    async def checkpoint(cid: str, image: Path, netns_path: str) -> None:
        (image / "pages.img").write_bytes(b"\1" * 65536)  # half the memory image written
        raise CommandError(["runsc", "checkpoint"], 128, "write pages.img: no space left on device")

    monkeypatch.setattr(runtime.runsc, "checkpoint", checkpoint)
    with pytest.raises(CommandError) as exc:
        await runtime.pause(capsule)
    assert status_for(exc.value) == (grpc.StatusCode.RESOURCE_EXHAUSTED, DISK_FULL)
    # The half-written image is gone (it would hold the space); the capsule was not torn down.
    assert not (capsule.dir / "checkpoint.new").exists()
    assert not capsule.checkpoint_dir.exists()
    assert host.torn_down == []
    assert capsule.net is net
    assert Capsule.load(capsule.dir).status == RUNNING
