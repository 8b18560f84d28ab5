"""Density: how many idle capsules one host holds, each still answering a command within 1 s.

Starts its own host agent (no control plane, so no team quotas; the agent's own memory and disk
checks stay on: they are the host refusing), creates capsules of the smallest shape (1 vCPU,
64 MiB, 64 MiB disk; --memory-mb for more memory) one after another until the agent refuses or
--max is reached, lets them idle (doze on unless --doze-after 0), then measures every capsule's
CPU (per-process utime + stime of its sandbox over a window, as idle_bench.py) and host memory
(PSS), the host's MemAvailable drop per capsule, and times one command (`true`) to each capsule
in turn: p50/p95 of those answers and how many took longer than 1 s or failed.

    sudo uv run python -m bench.density_bench --max 150 [--doze-after 10] [--window 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

import grpc

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.hostagent.capacity import available_memory_mb
from wrenn_server.hostagent.capsule import capsule_key
from wrenn_server.hostagent.doze import CgroupFreezer
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ._common import agent, report, stats
from .capsule_bench import handle_of
from .idle_bench import agent_pid, cpu_seconds, line, measure, netns_pids

SECRET = "bench-secret"
SMALLEST_MB = 64  # the smallest memory and disk the agent takes
ANSWER_WITHIN = 1.0


async def fill(c: AgentClient, most: int, memory_mb: int) -> tuple[list[str], str]:
    """Create capsules until the agent refuses or `most` exist; the ids and why it stopped."""
    shape = pb.CreateSandboxRequest(vcpus=1, memory_mb=memory_mb, disk_size_mb=SMALLEST_MB)
    made: list[str] = []
    t0 = time.monotonic()
    while len(made) < most:
        try:
            sb = await c.create_sandbox(shape, timeout=120)
        except grpc.aio.AioRpcError as e:
            return made, f"refused after {len(made)}: {e.code().name} {e.details()}"
        made.append(sb.sandbox_id)
        if len(made) % 25 == 0:
            elapsed, avail = time.monotonic() - t0, available_memory_mb()
            load = os.getloadavg()[0]
            print(
                f"  {len(made)} capsules ({elapsed:.0f} s, MemAvailable {avail} MiB, "
                f"load {load:.1f})"
            )
    return made, f"stopped at --max {most}"


async def answers(c: AgentClient, ids: list[str]) -> tuple[list[float], list[float], list[str]]:
    """One `true` to each capsule in turn, then a second one (the capsule awake by then, the
    baseline): both answer times, and what did not answer in time."""
    first, again, late = [], [], []
    for sid in ids:
        for into in (first, again):
            t = time.perf_counter()
            try:
                res = await c.exec(pb.ExecRequest(sandbox_id=sid, cmd="true"), timeout=10)
                took = time.perf_counter() - t
                into.append(took)
                if res.exit_code != 0 or took > ANSWER_WITHIN:
                    late.append(f"{sid}: exit {res.exit_code} in {took * 1000:.0f} ms")
            except grpc.aio.AioRpcError as e:
                late.append(f"{sid}: {e.code().name} {e.details()}")
    return first, again, late


async def destroy_all(c: AgentClient, ids: list[str]) -> None:
    gate = asyncio.Semaphore(4)

    async def one(sid: str) -> None:
        async with gate:
            await c.destroy_sandbox(pb.SandboxRef(sandbox_id=sid), timeout=120)

    await asyncio.gather(*(one(sid) for sid in ids))


async def main(most: int, window: float, doze_after: float, data_dir: Path, memory_mb: int) -> None:
    print(f"load average at start: {os.getloadavg()}", flush=True)
    os.environ["WRENN_AGENT_DOZE_AFTER_SEC"] = str(doze_after)
    os.environ["WRENN_AGENT_POOL_SIZE"] = "0"  # only the capsules measured
    freezer = CgroupFreezer()
    with agent(data_dir, SECRET, subnet="10.206.0.0/16") as target:
        async with AgentClient(target, SECRET) as c:
            avail_before = available_memory_mb() or 0
            ids: list[str] = []
            try:
                t0 = time.monotonic()
                ids, why = await fill(c, most, memory_mb)
                took = time.monotonic() - t0
                print(f"{len(ids)} capsules in {took:.0f} s ({why})", flush=True)
                # Every capsule idle past the doze period (the dozer looks each quarter of it).
                await asyncio.sleep(10 + doze_after * 1.5)
                handles = {sid: handle_of(data_dir, sid) for sid in ids}
                groups = {sid: netns_pids(f"wrn-{capsule_key(h)}") for sid, h in handles.items()}
                pid = agent_pid(target.rsplit(":", 1)[1])
                agent_before, t1 = (cpu_seconds(pid) if pid else 0.0), time.monotonic()
                cpu, mem, summed = await asyncio.to_thread(measure, groups, window)
                agent_cpu = (cpu_seconds(pid) - agent_before if pid else 0.0) / (
                    time.monotonic() - t1
                )
                avail_after = available_memory_mb() or 0
                dozing = sum(freezer.frozen(f"/wrenn/{h}") for h in handles.values())
                times, awake, late = await answers(c, ids)
            finally:
                await destroy_all(c, ids)
    n = len(ids)
    print(f"\ncapsules: {n} ({why}); dozing before the commands: {dozing}/{n}")
    line("CPU per capsule (sandbox processes)", cpu, "%")
    print(f"CPU of all capsules: {sum(cpu) / 100:.2f} cores; host agent: {agent_cpu * 100:.2f}%")
    line("PSS per capsule", mem, "MB")
    line("PSS per capsule, summed per process (earlier method)", summed, "MB")
    print(f"PSS of all capsules: {sum(mem) / 1024:.2f} GB; host MemAvailable dropped "
          f"{(avail_before - avail_after) / max(n, 1):.1f} MiB per capsule")  # fmt: skip
    report("answer to `true`, awake (second command)", awake)
    report("answer to `true`, each capsule in turn", times, stats(awake)["p50"])
    print(f"slowest answer: {max(times) * 1000:.0f} ms; over {ANSWER_WITHIN:g} s or failed: "
          f"{len(late)}")  # fmt: skip
    for what in late[:20]:
        print(f"  {what}")
    s = stats(times)
    print(f"(p50 {s['p50'] * 1000:.1f} ms, p95 {s['p95'] * 1000:.1f} ms)")
    print(f"load average at end: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max", type=int, default=150, help="most capsules to start")
    parser.add_argument("--window", type=float, default=30.0, help="seconds of CPU measured")
    parser.add_argument("--doze-after", type=float, default=10.0, help="0: doze off")
    parser.add_argument("--data-dir", type=Path, default=Path("/var/lib/wrenn-bench"))
    parser.add_argument("--memory-mb", type=int, default=SMALLEST_MB, help="each capsule's memory")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(args.max, args.window, args.doze_after, args.data_dir, args.memory_mb))
