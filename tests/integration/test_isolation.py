"""Capsules are hostile: each attempt to escape or starve the host must fail or be contained,
while the host and a neighbouring capsule stay healthy."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from wrenn_server.hostagent.client import AgentClient
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from .conftest import DATA_DIR, AgentProcess, CapsuleFactory, run
from .netfixtures import (
    connect_script,
    fake_metadata_server,
    host_ipv4_addresses,
    host_listener,
    internet_host,
)
from .traces import capsule_dir

pytestmark = pytest.mark.integration


def _meta(sandbox_id: str) -> dict[str, Any]:
    """The capsule's record (in its handle's directory: not its id's when the pool booted it)."""
    meta: dict[str, Any] = json.loads((capsule_dir(sandbox_id) / "meta.json").read_text())
    return meta


def capsule_ip(sandbox_id: str) -> str:
    return str(_meta(sandbox_id)["net"]["capsule_ip"])


def gateway_ip(sandbox_id: str) -> str:
    return str(_meta(sandbox_id)["net"]["host_ip"])


async def assert_healthy(agent: AgentClient, sandbox_id: str) -> None:
    res = await run(agent, sandbox_id, "echo alive", timeout_sec=30)
    assert res.stdout == b"alive\n"


async def test_cannot_read_host_files(agent: AgentClient, capsule: pb.Sandbox) -> None:
    marker = f"wrenn-escape-{uuid.uuid4().hex}"
    host_file = Path("/tmp") / marker
    host_file.write_text("host secret")
    try:
        sid = capsule.sandbox_id
        for path in (f"/tmp/{marker}", f"/proc/1/root/tmp/{marker}", f"/../../tmp/{marker}"):
            res = await run(agent, sid, f"cat {path}")
            assert res.exit_code != 0 and b"host secret" not in res.stdout
        res = await run(agent, sid, f"find / -xdev -name '{marker}' 2>/dev/null | head -1")
        assert res.stdout == b""
        # The agent's data (other capsules' tokens, templates) is not visible either.
        res = await run(agent, sid, f"ls {DATA_DIR} 2>&1; ls /run/wrenn 2>&1")
        assert b"capsules" not in res.stdout and b"templates" not in res.stdout
    finally:
        host_file.unlink()


async def test_writes_do_not_reach_the_template(agent: AgentClient, capsule: pb.Sandbox) -> None:
    template_passwd = DATA_DIR / "templates/minimal/rootfs/etc/passwd"
    before = template_passwd.read_bytes()
    res = await run(agent, capsule.sandbox_id, "echo 'evil:x:0:0::/:/bin/sh' >> /etc/passwd")
    assert res.exit_code == 0
    assert template_passwd.read_bytes() == before


async def test_cannot_reach_host_agent_or_host_ports(
    agent: AgentClient, agent_process: AgentProcess, capsule: pb.Sandbox
) -> None:
    sid = capsule.sandbox_id
    targets = [*host_ipv4_addresses(), gateway_ip(sid)]
    with host_listener("0.0.0.0", 18777, "host-service") as listener:
        for addr in targets:
            for port in (agent_process.port, listener.port, 22):
                res = await run(agent, sid, connect_script(addr, port, timeout=1.0))
                assert res.stdout.startswith(b"FAIL"), (addr, port, res.stdout)
        # The same listener is reachable from the host itself: the block is the capsule's.
        assert listener.banner == "host-service"


async def test_cannot_reach_other_capsules(agent: AgentClient, new_capsule: CapsuleFactory) -> None:
    a, b = await new_capsule(), await new_capsule()
    res = await run(agent, a.sandbox_id, connect_script(capsule_ip(b.sandbox_id), 49983))
    assert res.stdout.startswith(b"FAIL"), res.stdout


async def test_cannot_reach_metadata_address(agent: AgentClient, capsule: pb.Sandbox) -> None:
    with fake_metadata_server() as meta:
        res = await run(agent, capsule.sandbox_id, connect_script(meta.addr, meta.port))
        assert res.stdout.startswith(b"FAIL"), res.stdout


async def test_egress_to_the_internet_works(agent: AgentClient, capsule: pb.Sandbox) -> None:
    with internet_host() as inet:
        res = await run(agent, capsule.sandbox_id, connect_script(inet.addr, inet.port))
        assert res.stdout.startswith(b"OK") and b"hello" in res.stdout, res.stdout


async def test_fork_bomb_is_contained(agent: AgentClient, new_capsule: CapsuleFactory) -> None:
    neighbour = await new_capsule()
    bomb = await new_capsule(memory_mb=256)
    host_tasks_before = len(os.listdir("/proc"))
    await run(
        agent,
        bomb.sandbox_id,
        "bomb() { bomb | bomb & }; bomb; sleep 8",
        timeout_sec=15,
    )
    # The host did not fill up with processes: gVisor tasks are not host tasks.
    assert len(os.listdir("/proc")) < host_tasks_before + 200
    await assert_healthy(agent, neighbour.sandbox_id)
    t0 = time.monotonic()
    await agent.destroy(bomb.sandbox_id)
    assert time.monotonic() - t0 < 30


async def test_memory_hog_is_capped(agent: AgentClient, new_capsule: CapsuleFactory) -> None:
    neighbour = await new_capsule()
    hog = await new_capsule(memory_mb=256)
    cgroup = Path(f"/sys/fs/cgroup/memory/wrenn/{hog.sandbox_id}")
    assert int((cgroup / "memory.limit_in_bytes").read_text()) == 256 * 1024 * 1024
    script = (
        "python3 -c 'a=[]\nwhile True: a.append(bytearray(32*1024*1024)); "
        'a[-1][::4096]=b"x"*(len(a[-1])//4096)\''
    )
    res = await run(agent, hog.sandbox_id, script, timeout_sec=60)
    assert res.exit_code != 0 or res.timed_out
    if cgroup.exists():
        peak = int((cgroup / "memory.max_usage_in_bytes").read_text())
        # The kernel may overshoot by a few pages while it reclaims.
        assert peak <= 257 * 1024 * 1024
    await assert_healthy(agent, neighbour.sandbox_id)


async def test_disk_is_capped(agent: AgentClient, new_capsule: CapsuleFactory) -> None:
    sb = await new_capsule(disk_size_mb=256)
    res = await run(
        agent, sb.sandbox_id, "dd if=/dev/zero of=/fill bs=1M count=400 2>&1; sync", timeout_sec=60
    )
    assert b"No space left on device" in res.stdout, res.stdout
    image = capsule_dir(sb.sandbox_id) / "disk.img"
    assert image.stat().st_blocks * 512 <= 260 * 1024 * 1024
    res = await run(agent, sb.sandbox_id, "rm /fill && echo freed")
    assert res.stdout == b"freed\n"

    async def too_much() -> AsyncIterator[bytes]:
        block = os.urandom(1024 * 1024)
        for _ in range(300):
            yield block

    # An upload past the limit is refused as such, and leaves no partial file behind.
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await agent.write_stream(sb.sandbox_id, "/root/huge", too_much())
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    res = await run(agent, sb.sandbox_id, "ls -A /root | grep -c huge")
    assert res.stdout == b"0\n"
