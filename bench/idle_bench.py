"""Idle capsule cost: CPU (% of one core) and host memory (PSS) per idle capsule, with a bare
`runsc run` of `sleep` in the same run as the baseline (gVisor's own floor).

Starts its own host agent, creates N capsules that then do nothing, lets them settle, and reads
the CPU time (utime + stime from /proc/<pid>/stat) every process of each sandbox (sentry, gofer,
systrap stubs) uses over a window - per process, not wall time, so other work on the machine
does not count. The agent's own CPU over the window is given per capsule too.

Twice in the same run: with doze off, then with doze on (the agent freezes a capsule idle for
--doze-after seconds, hostagent/doze.py), where it also times the first command to a dozing
capsule (thaw included) against the next one (awake).

    sudo uv run python -m bench.idle_bench [--capsules 20] [--window 60] [--doze-after 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.hostagent.capsule import capsule_key
from wrenn_server.hostagent.doze import CgroupFreezer
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ._common import agent, report, stats
from .capsule_bench import handle_of
from .memory import group_pss_kb, summed_pss_kb

SECRET = "bench-secret"
TICK = os.sysconf("SC_CLK_TCK")
FREEZER = Path("/sys/fs/cgroup/freezer")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (all its threads), or 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def netns_pids(netns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def bundle_pids(bundle: Path) -> list[int]:
    """A bare sandbox's processes: those started with its bundle (sentry, gofer) and their
    descendants (the systrap stubs)."""
    parent: dict[int, int] = {}
    roots = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if f"--bundle={bundle}".encode() in (entry / "cmdline").read_bytes().split(b"\0"):
                roots.append(int(entry.name))
    found = set(roots)
    grew = True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in found} - found
        found |= more
        grew = bool(more)
    return sorted(found)


def measure(
    groups: dict[str, list[int]], window: float
) -> tuple[list[float], list[float], list[float]]:
    """Per group: CPU over `window` in % of one core, and PSS in MB at the end: each address
    space once (bench/memory.py), and summed per process as measured before."""
    before = {name: sum(cpu_seconds(p) for p in pids) for name, pids in groups.items()}
    t0 = time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - t0
    cpu = [
        (sum(cpu_seconds(p) for p in pids) - before[name]) / elapsed * 100
        for name, pids in groups.items()
    ]
    mem = [group_pss_kb(pids) / 1024 for pids in groups.values()]
    summed = [summed_pss_kb(pids) / 1024 for pids in groups.values()]
    return cpu, mem, summed


def line(name: str, samples: list[float], unit: str, baseline: float | None = None) -> None:
    s = stats(samples)
    text = f"{name:<52} p50 {s['p50']:7.2f} {unit}   p95 {s['p95']:7.2f} {unit}"
    if baseline:
        text += f"   p50/baseline {s['p50'] / baseline:5.2f}x"
    print(f"{text}   (n={int(s['n'])})", flush=True)


@contextlib.contextmanager
def bare_sandboxes(runsc: str, rootfs: Path, n: int) -> Iterator[list[list[int]]]:
    """`n` bare sandboxes running `sleep infinity` on the template's root filesystem, each in a
    no network stack: gVisor's idle floor."""
    work = Path(tempfile.mkdtemp(prefix="wrenn-idlebase-"))
    root = work / "runsc"
    root.mkdir()
    groups = []
    try:
        for i in range(n):
            bundle = work / f"b{i}"
            bundle.mkdir()
            config = {
                "ociVersion": "1.0.0",
                "process": {"args": ["sleep", "infinity"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                            "env": ["PATH=/usr/bin:/bin"]},
                "root": {"path": str(rootfs), "readonly": True},
                "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
                "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "network"}]},
            }  # fmt: skip
            (bundle / "config.json").write_text(json.dumps(config))
            subprocess.run(
                [runsc, f"--root={root}", "--network=none", "--overlay2=none", "--ignore-cgroups",
                 "run", "--detach", f"--bundle={bundle}", f"base{i}"],
                check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            groups.append(bundle_pids(bundle))
        yield groups
    finally:
        for i in range(len(groups) + 1):
            subprocess.run(
                [runsc, f"--root={root}", "delete", "--force", f"base{i}"], capture_output=True
            )
            # `delete --force` has been seen to leave a sandbox running: none may outlive us.
            for pid in bundle_pids(work / f"b{i}"):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        subprocess.run(["rm", "-rf", str(work)], check=False)


def frozen(groups: list[list[int]], window: float) -> list[float] | None:
    """CPU of the same sandboxes with every process frozen by the host's cgroup v1 freezer (the
    floor a dozing capsule would reach); None where there is no v1 freezer."""
    root = FREEZER / f"wrenn-idle-bench-{os.getpid()}"
    if not FREEZER.is_dir():
        return None
    root.mkdir()
    try:
        for pids in groups:
            for pid in pids:
                with contextlib.suppress(OSError):
                    (root / "cgroup.procs").write_text(str(pid))
        (root / "freezer.state").write_text("FROZEN")
        cpu, _, _ = measure({str(i): pids for i, pids in enumerate(groups)}, window)
        (root / "freezer.state").write_text("THAWED")
        return cpu
    finally:
        with contextlib.suppress(OSError):
            (root / "freezer.state").write_text("THAWED")
        parent = FREEZER / "cgroup.procs"
        for pid in (root / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                parent.write_text(pid)
        root.rmdir()


def agent_pid(port: str) -> int | None:
    out = subprocess.run(["ss", "-Htlnp", f"sport = :{port}"], capture_output=True, text=True)
    for part in out.stdout.split("pid=")[1:]:
        return int(part.split(",")[0])
    return None


@dataclass
class IdleRun:
    cpu: list[float]  # % of one core per capsule
    mem: list[float]  # MB PSS per capsule
    summed: list[float]  # the same, summed per process (the earlier method)
    agent_cpu: float  # cores
    dozing: int = 0
    thawed: list[float] = field(default_factory=list)  # s, first exec to a dozing capsule
    awake: list[float] = field(default_factory=list)  # s, the exec right after it


async def idle_capsules(
    data_dir: Path, n: int, window: float, settle: float, doze_after: float
) -> IdleRun:
    """N capsules on an agent of their own, idle; measured over `window` after `settle` (and
    the doze period) of quiet."""
    os.environ["WRENN_AGENT_DOZE_AFTER_SEC"] = str(doze_after)
    freezer = CgroupFreezer()
    with agent(data_dir, SECRET) as target:
        async with AgentClient(target, SECRET) as c:
            sbs = [await c.create_sandbox(pb.CreateSandboxRequest()) for _ in range(n)]
            try:
                for sb in sbs:  # every capsule has answered once, then nothing more
                    await c.exec(pb.ExecRequest(sandbox_id=sb.sandbox_id, cmd="true"))
                handles = {sb.sandbox_id: handle_of(data_dir, sb.sandbox_id) for sb in sbs}
                groups = {
                    sid: netns_pids(f"wrn-{capsule_key(handle)}") for sid, handle in handles.items()
                }
                # A dozer looks every quarter of its period: two more of those and all doze.
                await asyncio.sleep(settle + doze_after * 1.5)
                pid = agent_pid(target.rsplit(":", 1)[1])
                agent_before = cpu_seconds(pid) if pid else 0.0
                t0 = time.monotonic()
                cpu, mem, summed = await asyncio.to_thread(measure, groups, window)
                agent_cpu = (cpu_seconds(pid) - agent_before if pid else 0.0) / (
                    time.monotonic() - t0
                )
                result = IdleRun(cpu, mem, summed, agent_cpu)
                for sid, handle in handles.items():
                    if not freezer.frozen(f"/wrenn/{handle}"):
                        continue
                    result.dozing += 1
                    for into in (result.thawed, result.awake):
                        t = time.perf_counter()
                        await c.exec(pb.ExecRequest(sandbox_id=sid, cmd="true"))
                        into.append(time.perf_counter() - t)
            finally:
                for sb in sbs:
                    await c.destroy_sandbox(pb.SandboxRef(sandbox_id=sb.sandbox_id))
    return result


async def main(
    n: int, window: float, settle: float, data_dir: Path, runsc: str, doze_after: float
) -> None:
    print(f"load average at start: {os.getloadavg()}", flush=True)
    rootfs = data_dir / "templates" / "minimal" / "rootfs"
    with bare_sandboxes(runsc, rootfs, n) as bare:
        await asyncio.sleep(settle)
        base_cpu, base_mem, base_summed = await asyncio.to_thread(
            measure, {str(i): pids for i, pids in enumerate(bare)}, window
        )
        frozen_cpu = await asyncio.to_thread(frozen, bare, window)
    line("bare runsc `sleep`: CPU per sandbox", base_cpu, "%")
    line("bare runsc `sleep`: PSS per sandbox", base_mem, "MB")
    line("bare runsc `sleep`: PSS summed per process", base_summed, "MB")
    if frozen_cpu is not None:
        line("bare runsc `sleep`, cgroup-frozen: CPU per sandbox", frozen_cpu, "%")
    off = await idle_capsules(data_dir, n, window, settle, doze_after=0)
    on = await idle_capsules(data_dir, n, window, settle, doze_after=doze_after)
    for name, run in (("doze off", off), (f"doze on, after {doze_after:g} s", on)):
        line(f"idle capsule, {name}: CPU per sandbox", run.cpu, "%", stats(base_cpu)["p50"])
        line(f"idle capsule, {name}: PSS per sandbox", run.mem, "MB", stats(base_mem)["p50"])
        line(f"idle capsule, {name}: PSS summed per process", run.summed, "MB",
             stats(base_summed)["p50"])  # fmt: skip
        print(f"host agent CPU per capsule, {name}: {run.agent_cpu * 100 / n:.3f} % (agent "
              f"total {run.agent_cpu * 100:.2f} % for {n} capsules and the warm pool)")  # fmt: skip
    print(f"capsules dozing at the end of the window: {on.dozing}/{n}")
    if on.thawed:
        report("exec `true`, awake (after the first)", on.awake)
        report("exec `true` to a dozing capsule (thaw + exec)", on.thawed, stats(on.awake)["p50"])
    print(f"load average at end: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--capsules", type=int, default=20)
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds idle before")
    parser.add_argument("--data-dir", type=Path, default=Path("/var/lib/wrenn-bench"))
    parser.add_argument("--runsc", default="runsc")
    parser.add_argument(
        "--doze-after", type=float, default=5.0, help="the doze-on run's quiet period, seconds"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(
        main(args.capsules, args.window, args.settle, args.data_dir, args.runsc, args.doze_after)
    )
