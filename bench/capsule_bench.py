"""Capsule runtime benchmark: create -> first command (a shape's first, booted; a shape seen before,
restored from its boot snapshot; from a snapshot template), command
round trip, pause, resume and host memory per idle capsule. Prints medians and p95; ratios are
to a baseline measured in the same run (a native `sh -c true` spawned on the host).

    sudo uv run python bench/capsule_bench.py [--iterations N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.hostagent.capsule import capsule_key
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ._common import agent, report, wait_boot_snapshot
from .memory import group_pss_kb

SECRET = "bench-secret"


def native_spawn_baseline(n: int) -> float:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(["sh", "-c", "true"], check=True)
        samples.append(time.perf_counter() - t)
    samples.sort()
    return samples[len(samples) // 2]


async def create_then_exec(c: AgentClient, n: int, gap: float = 0.0, **kw: object) -> list[float]:
    samples = []
    for _ in range(n):
        await asyncio.sleep(gap)
        t = time.perf_counter()
        sb = await c.create_sandbox(pb.CreateSandboxRequest(**kw))
        res = await c.exec(pb.ExecRequest(sandbox_id=sb.sandbox_id, cmd="true"))
        samples.append(time.perf_counter() - t)
        assert res.exit_code == 0
        await c.destroy_sandbox(pb.SandboxRef(sandbox_id=sb.sandbox_id))
    return samples


async def round_trips(c: AgentClient, sandbox_id: str, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        await c.exec(pb.ExecRequest(sandbox_id=sandbox_id, cmd="true"))
        samples.append(time.perf_counter() - t)
    return samples


async def pause_resume(c: AgentClient, sandbox_id: str, n: int) -> tuple[list[float], list[float]]:
    pauses, resumes = [], []
    ref = pb.SandboxRef(sandbox_id=sandbox_id)
    for _ in range(n):
        t = time.perf_counter()
        await c.pause_sandbox(ref)
        pauses.append(time.perf_counter() - t)
        t = time.perf_counter()
        await c.resume_sandbox(pb.ResumeSandboxRequest(sandbox_id=sandbox_id))
        await c.exec(pb.ExecRequest(sandbox_id=sandbox_id, cmd="true"))
        resumes.append(time.perf_counter() - t)
    return pauses, resumes


def handle_of(data_dir: Path, sandbox_id: str) -> str:
    """A capsule handed over by the warm pool keeps the host names it was booted with."""
    for meta_path in (data_dir / "capsules").glob("*/meta.json"):
        meta = json.loads(meta_path.read_text())
        if meta["sandbox_id"] == sandbox_id:
            return str(meta["handle"])
    raise LookupError(sandbox_id)


def capsule_pss_kb(handle: str) -> int:
    netns = f"wrn-{capsule_key(handle)}"
    pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout
    return group_pss_kb([int(pid) for pid in pids.split()])


async def idle_memory(c: AgentClient, n: int, data_dir: Path) -> list[float]:
    sbs = [await c.create_sandbox(pb.CreateSandboxRequest()) for _ in range(n)]
    await asyncio.sleep(3)
    samples = [capsule_pss_kb(handle_of(data_dir, sb.sandbox_id)) / 1024 for sb in sbs]
    for sb in sbs:
        await c.destroy_sandbox(pb.SandboxRef(sandbox_id=sb.sandbox_id))
    return samples


async def main(iterations: int, data_dir: Path) -> None:
    baseline = native_spawn_baseline(50)
    print(f"baseline: native `sh -c true` spawn p50 {baseline * 1000:.2f} ms")
    with agent(data_dir, SECRET) as target:
        async with AgentClient(target, SECRET) as c:
            # The warm pool holds the default shape; another shape is restored from its boot
            # snapshot, made after its first create (which boots).
            cold = {"memory_mb": 256}
            await create_then_exec(c, 2, **cold)  # warm host caches
            wait_boot_snapshot(data_dir, cold["memory_mb"])
            report(
                "create -> first exec (cold: boot snapshot)",
                await create_then_exec(c, iterations, **cold),
            )
            booted = []
            for n in range(iterations):
                memory_mb = cold["memory_mb"] + 8 * (n + 1)  # a shape new to the agent
                booted += await create_then_exec(c, 1, memory_mb=memory_mb)
                wait_boot_snapshot(data_dir, memory_mb)  # made off the clock
            report("create -> first exec (cold: first of its shape, boot)", booted)
            report(
                "create -> first exec (warm pool)",
                await create_then_exec(c, iterations, gap=2.0),
            )
            src = await c.create_sandbox(pb.CreateSandboxRequest())
            await c.exec(pb.ExecRequest(sandbox_id=src.sandbox_id, cmd="echo warm > /root/w"))
            snap = f"bench-snap-{os.getpid()}"
            await c.create_snapshot(pb.CreateSnapshotRequest(sandbox_id=src.sandbox_id, name=snap))
            await c.destroy_sandbox(pb.SandboxRef(sandbox_id=src.sandbox_id))
            try:
                report(
                    "create -> first exec (snapshot template)",
                    await create_then_exec(c, iterations, template=snap),
                )
            finally:
                await c.delete_snapshot(pb.DeleteSnapshotRequest(name=snap))
            sb = await c.create_sandbox(pb.CreateSandboxRequest())
            await round_trips(c, sb.sandbox_id, 5)
            report(
                "exec round trip (`true`)",
                await round_trips(c, sb.sandbox_id, iterations * 5),
                baseline,
            )
            pauses, resumes = await pause_resume(c, sb.sandbox_id, iterations)
            report("pause", pauses)
            report("resume -> first exec", resumes)
            await c.destroy_sandbox(pb.SandboxRef(sandbox_id=sb.sandbox_id))
            mem = await idle_memory(c, 5, data_dir)
            report("host memory per idle capsule (PSS)", mem, unit="MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--data-dir", type=Path, default=Path("/var/lib/wrenn-bench"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    # The pool keeps the default shape only: the cold row's repeated shape is a full boot each
    # time (the pool adapting to it is bench/pool_bench.py's).
    os.environ.setdefault("WRENN_AGENT_POOL_MAX", "0")
    asyncio.run(main(args.iterations, args.data_dir))
