"""What an agent restarted after a crash repairs at its start (GVisorRuntime.recover) is told,
one structured log line each (`fields`: what, found, done): a record without a live sandbox is
destroyed, a directory without a readable record removed, an address slot and a netns that no
capsule holds released, a sandbox runsc still has without a capsule record killed, a netns and
cgroups no agent's slot names removed. What needs
root (runsc, network) is stood in, as in test_slow_steps."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from wrenn_server import log as log_setup
from wrenn_server.hostagent import network
from wrenn_server.hostagent.capsule import capsule_key

from .test_slow_steps import ID, _running, _runtime

STRAY = "sb-ffffffff-0000-4000-8000-0000000000ff"
OTHER = "sb-aaaaaaaa-0000-4000-8000-0000000000aa"
UNCLAIMED = "sb-bbbbbbbb-0000-4000-8000-0000000000bb"


def _repairs(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, str]]:
    """(what, found, done) of each repair line, as the agent's JSON log writes them."""
    formatter = log_setup.JsonFormatter()
    lines = [json.loads(formatter.format(r)) for r in caplog.records]
    fields: list[dict[str, Any]] = [line["fields"] for line in lines if "fields" in line]
    return [(f["repair"], f["found"], f["done"]) for f in fields]


async def test_each_repair_at_start_is_a_structured_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    runtime, host = _runtime(tmp_path, monkeypatch)
    capsule = _running(runtime)  # its record says running; runsc knows no such sandbox
    host.state = None
    (runtime.settings.capsules_dir / STRAY).mkdir()  # a directory without meta.json
    # A slot and a netns of this data dir a crash left without a capsule, and runsc state.
    runtime.ipam.allocate(runtime._owner(STRAY))
    [slot] = [s for s, owner in runtime.ipam.owned().items() if owner.endswith(STRAY)]
    stray_netns = network.NETNS_PREFIX + capsule_key(STRAY)
    # Another agent's capsule (a slot of another data dir names it), and a namespace and empty
    # cgroups no slot names (an agent's whose /run was wiped).
    runtime.ipam.allocate(f"/another/agent:{OTHER}")
    netns = {stray_netns, network.NETNS_PREFIX + capsule_key(OTHER)}
    netns.add(network.NETNS_PREFIX + capsule_key(UNCLAIMED))
    for controller in ("memory", "pids"):
        for handle in (OTHER, UNCLAIMED):
            (runtime.cgroup_root / controller / "wrenn" / handle).mkdir(parents=True)
    torn: list[tuple[str, ...]] = []
    forgotten: list[str] = []

    async def list_netns() -> list[str]:
        return sorted(netns)

    async def teardown(*names: str) -> None:
        torn.append(names)
        netns.discard(names[0])

    async def list_ids() -> list[str]:
        return ["sb-00000000-0000-4000-8000-0000000000ee"]

    async def forget(cid: str) -> None:
        forgotten.append(cid)

    monkeypatch.setattr(network, "list_netns", list_netns)
    monkeypatch.setattr(network, "teardown", teardown)
    monkeypatch.setattr(runtime.runsc, "list_ids", list_ids)
    monkeypatch.setattr(runtime.runsc, "forget", forget)
    with caplog.at_level(logging.WARNING):
        assert await runtime.recover() == []

    assert not capsule.dir.exists() and not (runtime.settings.capsules_dir / STRAY).exists()
    assert list(runtime.ipam.owned().values()) == [f"/another/agent:{OTHER}"]
    assert netns == {network.NETNS_PREFIX + capsule_key(OTHER)}
    assert sorted(p.name for p in runtime.cgroup_root.glob("*/wrenn/*")) == [OTHER, OTHER]
    assert forgotten == ["sb-00000000-0000-4000-8000-0000000000ee"]
    assert _repairs(caplog) == [
        (
            ID,
            "a record (running) without a live sandbox or a checkpoint to resume",
            "destroyed (its leftovers removed)",
        ),
        (STRAY, "a capsule directory without a readable record", "removed"),
        (stray_netns, "a network namespace of no capsule", "its processes killed, removed"),
        (STRAY, f"address slot {slot} held for no capsule", "released"),
        (
            "sb-00000000-0000-4000-8000-0000000000ee",
            "a sandbox (runsc state) without a capsule record",
            "killed",
        ),
        (
            network.NETNS_PREFIX + capsule_key(UNCLAIMED),
            "a capsule network namespace no agent claims",
            "removed",
        ),
        (UNCLAIMED, "capsule cgroups no agent claims", "removed"),
    ]  # nothing of the other agent's


class Killed(BaseException):
    """The agent killed -9 at this point (nothing after it runs)."""


async def test_a_destroy_cut_short_is_not_taken_for_a_paused_capsule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed while it removes a paused capsule's files (its disk already gone, its record and
    checkpoint not yet), the agent must not restart with a paused capsule no resume can
    restore: what a destroy began, the restart finishes."""
    runtime, _host = _runtime(tmp_path, monkeypatch)
    capsule = _running(runtime)
    await runtime.pause(capsule)
    assert capsule.checkpoint_dir.is_dir() and capsule.disk_image.exists()

    def cut_short(path: Path, ignore_errors: bool = False) -> None:
        capsule.disk_image.unlink()
        raise Killed

    async def forget(cid: str) -> None:
        pass

    monkeypatch.setattr(runtime.runsc, "forget", forget)
    with monkeypatch.context() as m, pytest.raises(Killed):
        m.setattr(shutil, "rmtree", cut_short)
        await runtime.destroy(capsule)
    with caplog.at_level(logging.WARNING):  # the restart
        assert await runtime.recover() == []
    assert not capsule.dir.exists()
    assert _repairs(caplog) == [(ID, "a capsule directory without a readable record", "removed")]
