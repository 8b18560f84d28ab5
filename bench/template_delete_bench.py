"""The RPC latency of a concurrent `exec` while a large template is deleted: the agent serves
every RPC, the TTL reaper, heartbeats and the metrics sampler on one event loop, so a delete
done on it would stall them all for as long as the removal takes. Prints the exec round trip
(p50, p95, max) with no delete and during each delete of an image template of `--files` files
holding `--mb` MB in all, and their ratio.

    sudo uv run python -m bench.template_delete_bench [--files 20000] [--mb 500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ._common import agent, report, stats

SECRET = "bench-secret"
PER_DIR = 200


def make_template(root: Path, name: str, files: int, megabytes: int) -> None:
    """An image template whose rootfs holds `files` files of equal size, 200 to a directory,
    written to disk (fsynced) so the delete frees real blocks."""
    d = root / name
    (d / "rootfs").mkdir(parents=True)
    size = megabytes * 1024 * 1024 // files
    block = os.urandom(size)
    for i in range(0, files, PER_DIR):
        sub = d / "rootfs" / str(i)
        sub.mkdir()
        for j in range(min(PER_DIR, files - i)):
            (sub / str(j)).write_bytes(block)
    (d / "template.json").write_text(json.dumps({"name": name, "type": "image", "created_at": 0}))
    os.sync()


async def execs(c: AgentClient, sid: str, until: asyncio.Event | None, n: int = 0) -> list[float]:
    """Exec round trips, back to back: `n` of them, or until `until` is set."""
    samples: list[float] = []
    request = pb.ExecRequest(sandbox_id=sid, cmd="true")
    while (until is not None and not until.is_set()) or len(samples) < n:
        t = time.perf_counter()
        await c.exec(request)
        samples.append(time.perf_counter() - t)
    return samples


async def main(files: int, megabytes: int, rounds: int, data_dir: Path) -> None:
    os.environ["WRENN_AGENT_POOL_SIZE"] = "0"
    with agent(data_dir, SECRET, subnet="10.205.0.0/16") as target:
        async with AgentClient(target, SECRET) as c:
            sid = (await c.create_sandbox(pb.CreateSandboxRequest())).sandbox_id
            try:
                await execs(c, sid, None, 20)  # warm
                idle = await execs(c, sid, None, 300)
                during: list[float] = []
                deletes: list[float] = []
                for r in range(rounds):
                    name = f"bench-delete-{os.getpid()}-{r}"
                    await asyncio.to_thread(
                        make_template, data_dir / "templates", name, files, megabytes
                    )
                    await execs(c, sid, None, 20)  # settle after the writing
                    done = asyncio.Event()
                    sampler = asyncio.create_task(execs(c, sid, done))
                    t = time.perf_counter()
                    await c.delete_snapshot(pb.DeleteSnapshotRequest(name=name), timeout=600)
                    deletes.append(time.perf_counter() - t)
                    done.set()
                    during += await sampler
            finally:
                await c.destroy_sandbox(pb.SandboxRef(sandbox_id=sid))
    print(f"template of {files} files, {megabytes} MB; {rounds} deletes; 2 cores")
    report("delete RPC", deletes, unit="s")
    report("exec round trip, no delete", idle)
    base = stats(idle)["p50"]
    report("exec round trip, during a delete", during, base)
    ratio95 = stats(during)["p95"] / stats(idle)["p95"]
    print(
        f"p95 during/no delete {ratio95:.2f}x; max during a delete {max(during) * 1000:.1f} ms, "
        f"with none {max(idle) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--mb", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=Path("/var/lib/wrenn-bench"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(args.files, args.mb, args.rounds, args.data_dir))
