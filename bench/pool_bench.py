"""Warm pool adapting to demand: create -> first exec on the agent for a shape the pool did not
hold, the first time (a full boot) and once the pool has adapted to it (a hand-over), with the
pooled capsule awake and dozing. Each iteration uses a shape never asked for before, so the
three rows are measured side by side in the same run; ratios are to the cold boot.

    sudo uv run python -m bench.pool_bench [--iterations N] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.hostagent.capsule import Capsule
from wrenn_server.hostagent.doze import CgroupFreezer
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ._common import agent, load_note, p50, report

SECRET = "bench-secret"
DOZE_AFTER_SEC = 2.0


def pooled(data_dir: Path, memory_mb: int) -> Capsule | None:
    """A ready pooled capsule of `memory_mb` (the bench's shapes differ only in memory)."""
    for meta in (data_dir / "capsules").glob("*/meta.json"):
        try:
            record = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue  # being written or removed
        if record.get("status") == "pooled" and record.get("memory_mb") == memory_mb:
            return Capsule.load(meta.parent)
    return None


async def until(what: str, cond: object, timeout: float = 120.0) -> None:
    assert callable(cond)
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def create_exec(c: AgentClient, memory_mb: int) -> float:
    t = time.perf_counter()
    sb = await c.create_sandbox(pb.CreateSandboxRequest(memory_mb=memory_mb))
    res = await c.exec(pb.ExecRequest(sandbox_id=sb.sandbox_id, cmd="true"))
    took = time.perf_counter() - t
    assert res.exit_code == 0
    await c.destroy_sandbox(pb.SandboxRef(sandbox_id=sb.sandbox_id))
    return took


async def main(iterations: int, data_dir: Path) -> None:
    print(load_note(), flush=True)
    freezer = CgroupFreezer()
    cold, awake, dozing = [], [], []
    with agent(data_dir, SECRET) as target:
        async with AgentClient(target, SECRET) as c:
            await create_exec(c, 200)  # warm host caches
            for i in range(iterations):
                memory_mb = 208 + 8 * i  # never asked for before
                cold.append(await create_exec(c, memory_mb))
                await until("the pool to adapt", lambda m=memory_mb: pooled(data_dir, m))
                await asyncio.sleep(0.5)  # its warm-up command has settled
                awake.append(await create_exec(c, memory_mb))
                await until("the pool to refill", lambda m=memory_mb: pooled(data_dir, m))
                ready = pooled(data_dir, memory_mb)
                assert ready is not None
                cgroup = ready.cgroup
                await until("the pooled capsule to doze", lambda g=cgroup: freezer.frozen(g))
                dozing.append(await create_exec(c, memory_mb))
    report("create -> first exec, new shape (cold boot)", cold)
    report("create -> first exec, adapted pool (awake)", awake)
    report("create -> first exec, adapted pool (dozing)", dozing)
    for name, rows in (("awake", awake), ("dozing", dozing)):
        print(f"{'':<44} adapted ({name}) / cold {p50(rows) / p50(cold):6.3f}x", flush=True)
    print(f"{'':<44} dozing / awake hand-over {p50(dozing) / p50(awake):6.2f}x", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--data-dir", type=Path, default=Path("/var/lib/wrenn-bench"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    # Room for every shape of the run (older ones drain after a short quiet period), and a
    # short doze so the dozing hand-over is measured without a long wait.
    os.environ.update(
        {
            "WRENN_AGENT_POOL_SIZE": "1",
            "WRENN_AGENT_POOL_MAX": "4",
            "WRENN_AGENT_POOL_DEMAND_WINDOW_SEC": "10",
            "WRENN_AGENT_POOL_IDLE_SEC": "10",
            "WRENN_AGENT_DOZE_AFTER_SEC": str(DOZE_AFTER_SEC),
        }
    )
    asyncio.run(main(args.iterations, args.data_dir))
