"""Doze on real gVisor capsules (hostagent/doze.py), with an agent of its own that freezes a
capsule after 2 s of quiet: an idle capsule's cgroup is frozen and uses no CPU; a command, a file
read, a port's tunnel and a port listing each thaw it and are answered; a capsule running a busy
loop or holding an open command stream is never frozen; pause, resume, snapshot and destroy of a
dozing capsule work; an agent killed while capsules doze thaws them when it starts again; nothing
is left behind."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ..ports import free_port
from .conftest import DATA_DIR, SECRET, AgentProcess, run, wait_for
from .leaks import leaks
from .test_tunnel import exchange, get, serve

pytestmark = pytest.mark.integration

QUIET_SEC = 2.0
CGROUPS = Path("/sys/fs/cgroup")


def frozen(sandbox_id: str) -> bool:
    return (
        CGROUPS / "freezer/wrenn" / sandbox_id / "freezer.state"
    ).read_text().strip() != "THAWED"


def cpu_ns(sandbox_id: str) -> int:
    return int((CGROUPS / "cpuacct/wrenn" / sandbox_id / "cpuacct.usage").read_text())


async def dozes(sandbox_id: str, within: float = 20) -> None:
    async def is_frozen() -> bool:
        return frozen(sandbox_id)

    await wait_for(is_frozen, within, what=f"{sandbox_id} dozing")


async def stays_awake(*sandbox_ids: str, sec: float = 4 * QUIET_SEC) -> None:
    """None of the capsules is frozen at any look over `sec` (twice the dozer's quiet period
    and more)."""
    deadline = time.monotonic() + sec
    while time.monotonic() < deadline:
        assert not any(frozen(sid) for sid in sandbox_ids)
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
def doze_data_dir() -> Iterator[Path]:
    """A data dir of its own with the session agent's base template (copied, not built)."""
    data_dir = DATA_DIR.parent / f"{DATA_DIR.name}-doze"
    shutil.rmtree(data_dir, ignore_errors=True)
    (data_dir / "templates").mkdir(parents=True)
    template = DATA_DIR / "templates" / "minimal"
    if not template.is_dir():
        pytest.skip(f"no base template in {DATA_DIR} to copy (run another integration test)")
    subprocess.run(["cp", "-a", str(template), str(data_dir / "templates")], check=True)
    yield data_dir
    with open("/proc/self/mountinfo") as f:
        if str(data_dir) not in f.read():
            shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def doze_process(doze_data_dir: Path, tmp_path: Path) -> Iterator[AgentProcess]:
    proc = AgentProcess(
        doze_data_dir,
        free_port(),
        tmp_path / "doze-agent.log",
        env={
            "WRENN_AGENT_DOZE_AFTER_SEC": str(QUIET_SEC),
            "WRENN_AGENT_POOL_SIZE": "0",  # so a capsule's cgroup is named by its id
            "WRENN_AGENT_CAPSULE_SUBNET": "10.205.0.0/16",
        },
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
    assert leaks(doze_data_dir) == []


@pytest.fixture
async def agent(doze_process: AgentProcess) -> AsyncIterator[AgentClient]:
    async with AgentClient(doze_process.target, SECRET) as client:
        made = len((await client.list_sandboxes(pb.ListSandboxesRequest())).sandboxes)
        assert made == 0
        try:
            yield client
        finally:
            for sb in (await client.list_sandboxes(pb.ListSandboxesRequest())).sandboxes:
                await client.destroy_sandbox(pb.SandboxRef(sandbox_id=sb.sandbox_id))


async def test_an_idle_capsule_dozes_and_every_access_thaws_it(agent: AgentClient) -> None:
    sid = (await agent.create_sandbox(pb.CreateSandboxRequest())).sandbox_id
    await run(agent, sid, "echo kept > /tmp/note.txt")
    await serve(agent, sid, 8123, "127.0.0.1")
    await dozes(sid)

    # Frozen: its sandbox uses no CPU (awake, gVisor's idle floor is ~2.5% of a core).
    before, t0 = cpu_ns(sid), time.monotonic()
    await asyncio.sleep(2)
    used = (cpu_ns(sid) - before) / 1e9 / (time.monotonic() - t0)
    assert used < 0.002, f"{used:.2%} of a core while frozen"

    t0 = time.monotonic()
    res = await run(agent, sid, "cat /tmp/note.txt")
    assert (res.exit_code, res.stdout) == (0, b"kept\n")
    assert time.monotonic() - t0 < 1.0
    assert not frozen(sid)

    await dozes(sid)
    read = await agent.read_file(pb.FileRef(sandbox_id=sid, path="/tmp/note.txt"))
    assert read.data == b"kept\n"

    await dozes(sid)
    answer = await exchange(agent, sid, 8123, get("/index.txt"))
    assert answer.startswith(b"HTTP/1.0 200") and answer.endswith(b"hello-8123\n"), answer

    await dozes(sid)
    ports = await agent.list_ports(pb.SandboxRef(sandbox_id=sid))
    assert 8123 in [p.port for p in ports.ports]

    # Wall clock right at once after a thaw.
    await dozes(sid)
    res = await run(agent, sid, "date +%s.%N")
    assert abs(float(res.stdout) - time.time()) < 1.0


async def test_busy_or_streaming_capsules_never_doze(agent: AgentClient) -> None:
    busy = (await agent.create_sandbox(pb.CreateSandboxRequest())).sandbox_id
    streaming = (await agent.create_sandbox(pb.CreateSandboxRequest())).sandbox_id
    idle = (await agent.create_sandbox(pb.CreateSandboxRequest())).sandbox_id
    await run(agent, busy, "nohup sh -c 'while :; do :; done' >/dev/null 2>&1 &")
    # A command that prints nothing and uses no CPU for a while, its stream open meanwhile.
    call = agent.exec_stream(pb.ExecRequest(sandbox_id=streaming, cmd="sleep 15; echo done"))
    assert (await call.read()).WhichOneof("event") == "start"

    await dozes(idle)
    await stays_awake(busy, streaming)
    events = []
    while (ev := await call.read()) is not grpc.aio.EOF:
        assert isinstance(ev, pb.ProcessEvent)
        events.append(ev)
    assert b"".join(ev.stdout for ev in events if ev.WhichOneof("event") == "stdout") == b"done\n"
    assert events[-1].exit.exit_code == 0

    # Once the loop stops and the stream ended, both doze too.
    await run(agent, busy, "pkill -f 'while :'")
    await dozes(busy)
    await dozes(streaming)


async def test_lifecycle_of_a_dozing_capsule(agent: AgentClient) -> None:
    sid = (await agent.create_sandbox(pb.CreateSandboxRequest())).sandbox_id
    await run(agent, sid, "echo before > /tmp/state.txt")
    await dozes(sid)
    await agent.pause_sandbox(pb.SandboxRef(sandbox_id=sid))
    await agent.resume_sandbox(pb.ResumeSandboxRequest(sandbox_id=sid))
    assert (await run(agent, sid, "cat /tmp/state.txt")).stdout == b"before\n"

    await dozes(sid)
    await agent.create_snapshot(pb.CreateSnapshotRequest(sandbox_id=sid, name="doze-snap"))
    copy = (await agent.create_sandbox(pb.CreateSandboxRequest(template="doze-snap"))).sandbox_id
    assert (await run(agent, copy, "cat /tmp/state.txt")).stdout == b"before\n"
    await agent.destroy_sandbox(pb.SandboxRef(sandbox_id=copy))
    await agent.delete_snapshot(pb.DeleteSnapshotRequest(name="doze-snap"))

    await agent.resume_sandbox(pb.ResumeSandboxRequest(sandbox_id=sid))
    await dozes(sid)
    await agent.destroy_sandbox(pb.SandboxRef(sandbox_id=sid))
    assert not (CGROUPS / "freezer/wrenn" / sid).exists()


async def test_an_agent_killed_while_capsules_doze_thaws_them_on_start(
    agent: AgentClient, doze_process: AgentProcess
) -> None:
    sid = (await agent.create_sandbox(pb.CreateSandboxRequest())).sandbox_id
    await dozes(sid)
    doze_process.kill9()
    assert frozen(sid)
    doze_process.env["WRENN_AGENT_DOZE_AFTER_SEC"] = "0"  # off: it must stay awake now
    doze_process.start()
    assert not frozen(sid)
    assert (await run(agent, sid, "echo back")).stdout == b"back\n"
    await stays_awake(sid)

    # A clean stop thaws what dozes too.
    doze_process.stop()
    doze_process.env["WRENN_AGENT_DOZE_AFTER_SEC"] = str(QUIET_SEC)
    doze_process.start()
    await dozes(sid)
    doze_process.stop()
    assert not frozen(sid)
    doze_process.start()


# -- the warm pool: adapting to demand, its capsules dozing ---------------------------------


@pytest.fixture
def pool_process(doze_data_dir: Path, tmp_path: Path) -> Iterator[AgentProcess]:
    proc = AgentProcess(
        doze_data_dir,
        free_port(),
        tmp_path / "pool-agent.log",
        env={
            "WRENN_AGENT_DOZE_AFTER_SEC": str(QUIET_SEC),
            "WRENN_AGENT_POOL_SIZE": "1",
            "WRENN_AGENT_POOL_MAX": "2",
            "WRENN_AGENT_CAPSULE_SUBNET": "10.205.0.0/16",
        },
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
    assert leaks(doze_data_dir) == []


def pooled_of(data_dir: Path, memory_mb: int) -> list[str]:
    """Handles of the pool's capsules of `memory_mb`."""
    handles = []
    for meta in (data_dir / "capsules").glob("*/meta.json"):
        record = json.loads(meta.read_text())
        if record["status"] == "pooled" and record["memory_mb"] == memory_mb:
            handles.append(record["handle"])
    return handles


async def test_the_pool_adapts_to_a_new_shape_and_its_capsules_doze(
    pool_process: AgentProcess, doze_data_dir: Path
) -> None:
    """A shape not pooled boots the first time; the pool then keeps one like it, handed over
    to the next create of that shape. Idle pooled capsules doze and are thawed at hand-over;
    ListSandboxes says which capsules doze."""
    capsules = doze_data_dir / "capsules"

    async def pooled(memory_mb: int) -> bool:
        return bool(pooled_of(doze_data_dir, memory_mb))

    async with AgentClient(pool_process.target, SECRET) as agent:
        cold = (await agent.create_sandbox(pb.CreateSandboxRequest(memory_mb=256))).sandbox_id
        assert (capsules / cold).is_dir(), "booted: named by its id"
        await wait_for(lambda: pooled(256), 30, what="the new shape pooled")
        handle = pooled_of(doze_data_dir, 256)[0]
        await dozes(handle)
        warm = (await agent.create_sandbox(pb.CreateSandboxRequest(memory_mb=256))).sandbox_id
        assert not (capsules / warm).is_dir(), "handed over: named by its pool handle"
        assert not frozen(handle), "thawed as it was handed over"
        assert (await run(agent, warm, "echo hi")).stdout == b"hi\n"

        await dozes(cold)
        listed = await agent.list_sandboxes(pb.ListSandboxesRequest())
        assert {sb.sandbox_id: sb.dozing for sb in listed.sandboxes}[cold] is True
        assert (await run(agent, cold, "echo up")).stdout == b"up\n"
        listed = await agent.list_sandboxes(pb.ListSandboxesRequest())
        assert {sb.sandbox_id: sb.dozing for sb in listed.sandboxes}[cold] is False
        for sid in (cold, warm):
            await agent.destroy_sandbox(pb.SandboxRef(sandbox_id=sid))
