"""Pause and resume under load: N capsules at once, each holding memory and with fresh writes
on its disk before every pause, optionally with CPU burners on the host. Prints the pause and
resume RPC times and, from the agent's log, the two slow steps inside a pause: runsc's
checkpoint and the wait for the stopped sandbox to let go of the disk image. The agent's
timeouts for those steps (`checkpoints.CHECKPOINT_TIMEOUT`, WRENN_AGENT_DISK_RELEASE_TIMEOUT_SEC)
are sized from these numbers (docs/performance.md).

    sudo uv run python -m bench.pause_load_bench [--capsules 6] [--cycles 5] [--burners 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import time
from pathlib import Path

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ._common import agent, report

SECRET = "bench-secret"
# Memory each capsule holds (its checkpoint's size) and what it writes before each pause.
HOLD = (
    'python3 -c \'import time; b = bytearray(200 << 20); b[::4096] = b"x" * (200 << 8); '
    "time.sleep(86400)' >/dev/null 2>&1 &"
)
WRITE = "dd if=/dev/urandom of=/root/dirty bs=1M count=100 status=none"

_COMMAND = re.compile(r'"msg": "(\d+\.\d+)s (.*?) -> 0"')
_LET_GO = re.compile(r'"msg": "sb-[0-9a-f-]+: disk let go in (\d+\.\d+)s"')
_HELD = re.compile(r"disk_still_held sandbox=\S+ waited_sec=(\d+\.\d+)")


async def cycle(c: AgentClient, sid: str, cycles: int, out: dict[str, list[float]]) -> None:
    ref = pb.SandboxRef(sandbox_id=sid)
    for _ in range(cycles):
        await c.exec(pb.ExecRequest(sandbox_id=sid, cmd=WRITE, user="root"), timeout=300)
        t = time.perf_counter()
        await c.pause_sandbox(ref, timeout=600)
        out["pause"].append(time.perf_counter() - t)
        t = time.perf_counter()
        await c.resume_sandbox(pb.ResumeSandboxRequest(sandbox_id=sid), timeout=600)
        out["resume"].append(time.perf_counter() - t)


def from_log(log: str) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {"checkpoint": [], "let go": [], "held": []}
    for line in log.splitlines():
        if m := _COMMAND.search(line):
            if "checkpoint" in m.group(2):
                found["checkpoint"].append(float(m.group(1)))
        elif m := _LET_GO.search(line):
            found["let go"].append(float(m.group(1)))
        elif m := _HELD.search(line):
            found["held"].append(float(m.group(1)))
    return found


async def main(capsules: int, cycles: int, burners: int, data_dir: Path) -> None:
    os.environ["WRENN_LOG_LEVEL"] = "DEBUG"
    os.environ["WRENN_AGENT_POOL_SIZE"] = "0"
    burning = [
        await asyncio.create_subprocess_exec("sh", "-c", "while :; do :; done")
        for _ in range(burners)
    ]
    try:
        with agent(data_dir, SECRET, subnet="10.204.0.0/16") as target:
            log_path = data_dir.parent / f"bench-agent-{target.rsplit(':', 1)[1]}.log"
            start = log_path.stat().st_size
            async with AgentClient(target, SECRET) as c:
                made = [
                    (await c.create_sandbox(pb.CreateSandboxRequest(memory_mb=512))).sandbox_id
                    for _ in range(capsules)
                ]
                try:
                    for sid in made:
                        await c.exec(pb.ExecRequest(sandbox_id=sid, cmd=HOLD))
                    out: dict[str, list[float]] = {"pause": [], "resume": []}
                    await asyncio.gather(*(cycle(c, sid, cycles, out) for sid in made))
                finally:
                    for sid in made:
                        await c.destroy_sandbox(pb.SandboxRef(sandbox_id=sid))
            with open(log_path) as f:
                f.seek(start)
                inside = from_log(f.read())
    finally:
        for p in burning:
            p.kill()
            await p.wait()
    print(f"{capsules} capsules x {cycles} cycles, {burners} host CPU burners, 2 cores")
    report("pause RPC", out["pause"], unit="s")
    report("resume RPC", out["resume"], unit="s")
    report("  runsc checkpoint", inside["checkpoint"], unit="s")
    report("  disk let go after the sandbox stopped", inside["let go"], unit="s")
    longest = max(inside["let go"] or [0.0])
    print(
        f"  max checkpoint {max(inside['checkpoint']):.2f} s, max let go {longest:.2f} s, "
        f"waits past the timeout {len(inside['held'])}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--capsules", type=int, default=6)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--burners", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=Path("/var/lib/wrenn-bench"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(args.capsules, args.cycles, args.burners, args.data_dir))
