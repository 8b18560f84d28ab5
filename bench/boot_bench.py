"""Where a cold capsule's boot goes: a ladder of `runsc run` configurations from a bare sandbox
to a capsule's own, each starting CPython on envd's imports (as a capsule starts envd), with
the step each rung adds. Beside them, in the same run, the host agent's cold
create (a shape its pool does not hold, no command), so what is left is the agent's own work.

  sudo uv run python -m bench.boot_bench --iterations 15

Each rung is timed until CPython has done the imports, not to its exit: a sandbox's teardown
(removing its cgroups waits for the kernel) is not part of a create. The cgroup and network
rungs' steps depend on what ran just before: runsc's moves into a cgroup wait for an RCU grace
period unless another move happened moments earlier, so the rungs run in a new order each
iteration; read the capsule's own rung against the bare one, and the agent's create against it.

Rungs (each adds one thing to the one before):
  bare          the template's root filesystem read-only, no network, cgroups ignored
  capsule disk  the capsule's writable root: an overlay of the template over an ext4 image
  capsule spec  the capsule's OCI spec (mounts, namespaces, capabilities, limits) - not its
                cgroup, not its network
  cgroup        its cgroup with the capsule's memory, CPU and pids limits
  network       `--network=sandbox` in a network namespace with the capsule's veth, started
                through the private mount namespace the agent uses (runsc.py)
  envd          the capsule's own start command: envd's main() after its imports, timed
                until it answers GET /health over the veth (polled every millisecond)

Needs root and runsc, and the base template the agent builds (`--data-dir`, default the
benches' own). Leaves nothing behind: its mounts, namespaces and cgroups go at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.hostagent import storage
from wrenn_server.hostagent.gvisor import install_envd
from wrenn_server.hostagent.runsc import _UNSHARE_SCRIPT, oci_config
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ._common import agent, bare_oci_config, load_note, p50, report

SECRET = "boot-bench-secret"
Run = Callable[[list[str], dict[str, Any], Path, Path], float]
IMPORTS = (
    "import sys; sys.path.insert(0, '/opt/wrenn'); import envd.__main__; "
    "from envd import peers, processes, server, sudo; print('ready', flush=True)"
)
NETNS = "wrenn-boot-bench"
CAPSULE_IP = "10.255.250.2"
ENVD_PORT = 49983
VETH = "wvbootbench"


def _run(argv: list[str], config: dict[str, Any], bundle: Path, root: Path) -> float:
    """Seconds until the sandbox's CPython has done envd's imports (it says so on stdout); its
    exit and the sandbox's teardown (cgroup removal waits for the kernel) are not counted: a
    capsule keeps running there."""
    (bundle / "config.json").write_text(json.dumps(config))
    name = f"boot-{uuid.uuid4().hex[:8]}"
    run = [*argv, "run", f"--bundle={bundle}", name]
    t = time.perf_counter()
    with subprocess.Popen(run, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        elapsed = time.perf_counter() - t
        proc.stdout.read()
    if line != b"ready\n" or proc.returncode:
        raise SystemExit(f"{name}: {line!r}, exit status {proc.returncode}")
    subprocess.run(["runsc", f"--root={root}", "delete", "--force", name], capture_output=True)
    return elapsed


def _run_envd(argv: list[str], config: dict[str, Any], bundle: Path, root: Path) -> float:
    """Seconds until envd itself (the capsule's real start command, its token on stdin) answers
    GET /health from the host over the veth, polled every millisecond."""
    (bundle / "config.json").write_text(json.dumps(config))
    name = f"boot-{uuid.uuid4().hex[:8]}"
    in_netns = ["nsenter", f"--net=/var/run/netns/{NETNS}", "runsc", f"--root={root}"]
    t = time.perf_counter()
    with subprocess.Popen(
        [*argv, "run", f"--bundle={bundle}", name],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as proc:
        assert proc.stdin is not None
        token = secrets.token_hex(16)
        proc.stdin.write(token.encode())
        proc.stdin.close()
        deadline = t + 30
        while not _healthy(token):
            if time.perf_counter() > deadline or proc.poll() is not None:
                raise SystemExit(f"{name}: envd did not answer (exit status {proc.poll()})")
            time.sleep(0.001)
        elapsed = time.perf_counter() - t
        subprocess.run([*in_netns, "kill", name, "KILL"], capture_output=True)
        proc.wait(30)
    subprocess.run([*in_netns, "delete", "--force", name], capture_output=True)
    return elapsed


def _healthy(token: str) -> bool:
    request = (
        f"GET /health HTTP/1.1\r\nHost: envd\r\nAuthorization: Bearer {token}\r\n"
        "Connection: close\r\n\r\n"
    )
    try:
        # A short connect timeout: a SYN sent before the sandbox's network stack owns the veth
        # is lost, and the kernel would resend it only after a second.
        with socket.create_connection((CAPSULE_IP, ENVD_PORT), timeout=0.05) as conn:
            conn.settimeout(5)
            conn.sendall(request.encode())
            return conn.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _network_up() -> None:
    """The capsule's network: a namespace holding one end of a veth, addressed as the agent
    addresses it (runsc takes the addresses over, so they are set again before each run)."""
    cmds = (
        f"addr replace {CAPSULE_IP}/30 dev eth0\nlink set lo up\nlink set eth0 up\n"
        "route replace default via 10.255.250.1\n"
    )
    subprocess.run(["ip", "-n", NETNS, "-batch", "-"], input=cmds.encode(), check=True)


def ladder(template_rootfs: Path, n: int, work: Path) -> dict[str, list[float]]:
    root, bundle = work / "runsc", work / "bundle"
    root.mkdir()
    bundle.mkdir()
    envd = work / "envd"
    install_envd(envd)
    disk_dir, rootfs, image = work / "disk", work / "rootfs", work / "disk.img"
    disk_dir.mkdir()
    rootfs.mkdir()
    asyncio.run(storage.create_image(image, 1024))
    asyncio.run(storage.mount(image, disk_dir, [template_rootfs], rootfs))
    cgroup = f"/wrenn-boot-bench/{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run(["ip", "netns", "add", NETNS], check=True)
        subprocess.run(
            ["ip", "link", "add", VETH, "type", "veth", "peer", "name", "eth0", "netns", NETNS],
            check=True,
        )
        subprocess.run(["ip", "addr", "add", "10.255.250.1/30", "dev", VETH], check=True)
        subprocess.run(["ip", "link", "set", VETH, "up"], check=True)
        spec = oci_config(
            rootfs=rootfs,
            netns_path=f"/var/run/netns/{NETNS}",
            envd_dir=envd / "envd",
            envd_env={"WRENN_ENVD_PORT": str(ENVD_PORT)},
            hostname="boot-bench",
            vcpus=2,
            memory_mb=512,
            pids_limit=4096,
            cgroup=cgroup,
        )
        envd_spec = json.loads(json.dumps(spec))  # the capsule's own start command
        spec["process"]["args"] = ["python3", "-I", "-S", "-c", IMPORTS]
        linux = spec["linux"]
        no_net = [ns for ns in linux["namespaces"] if ns["type"] != "network"]
        bare = bare_oci_config(template_rootfs, spec["process"]["args"], envd)
        disk = {**bare, "root": {"path": str(rootfs), "readonly": False}}
        no_cgroup = {k: v for k, v in linux.items() if k not in ("resources", "cgroupsPath")}
        own_netns = [*no_net, {"type": "network"}]  # a new one: runsc's, not the veth's
        capsule_spec = {**spec, "linux": {**no_cgroup, "namespaces": own_netns}}
        with_cgroup = {**spec, "linux": {**linux, "namespaces": own_netns}}
        runsc = ["runsc", f"--root={root}", "--overlay2=none"]
        offline = [*runsc, "--network=none"]
        online = ["unshare", "-m", "sh", "-c", _UNSHARE_SCRIPT, f"/var/run/netns/{NETNS}",
                  *runsc, "--network=sandbox", "--net-disconnect-ok"]  # fmt: skip
        offline_ = [*offline, "--ignore-cgroups"]
        rungs: list[tuple[str, list[str], dict[str, Any], Run]] = [
            ("bare", offline_, bare, _run),
            ("+ capsule disk", offline_, disk, _run),
            ("+ capsule spec", offline_, capsule_spec, _run),
            ("+ cgroup", offline, with_cgroup, _run),
            ("+ network (the capsule's runsc run)", online, spec, _run),
            ("+ envd's main(), /health answered", online, envd_spec, _run_envd),
        ]
        samples: dict[str, list[float]] = {name: [] for name, *_ in rungs}
        # Interleaved, so that a change in the machine's load touches every rung alike, and in
        # a new order each time: a rung's cost can depend on the one before it (see above).
        shuffled = random.Random(0)
        for _ in range(n):
            for name, argv, config, run in shuffled.sample(rungs, len(rungs)):
                if argv is online:
                    _network_up()
                samples[name].append(run(argv, config, bundle, root))
        return samples
    finally:
        subprocess.run(["ip", "link", "del", VETH], capture_output=True)
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)
        asyncio.run(storage.unmount(disk_dir, rootfs))
        for path in sorted(Path("/sys/fs/cgroup").glob("**/wrenn-boot-bench"), reverse=True):
            subprocess.run(["find", str(path), "-depth", "-type", "d", "-delete"],
                           capture_output=True)  # fmt: skip


async def agent_cold_creates(target: str, n: int) -> tuple[list[float], list[float]]:
    """The agent's create of a shape its pool does not hold (a new memory size each time), to
    envd answering, and the first command after it; each capsule destroyed before the next."""
    creates, execs = [], []
    async with AgentClient(target, SECRET) as c:
        for i in range(n):
            await asyncio.sleep(0.5)  # apart, as creates come
            t = time.perf_counter()
            sb = await c.create_sandbox(pb.CreateSandboxRequest(memory_mb=300 + i, vcpus=1))
            creates.append(time.perf_counter() - t)
            t = time.perf_counter()
            await c.exec(pb.ExecRequest(sandbox_id=sb.sandbox_id, cmd="true"))
            execs.append(time.perf_counter() - t)
            await c.destroy_sandbox(pb.SandboxRef(sandbox_id=sb.sandbox_id))
    return creates, execs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--data-dir", type=Path, default=Path("/var/lib/wrenn-bench"))
    args = parser.parse_args()
    print(load_note())
    # Nothing boots beside the creates measured, and each of them boots.
    os.environ["WRENN_AGENT_POOL_SIZE"] = "0"
    os.environ["WRENN_AGENT_BOOT_SNAPSHOTS"] = "0"
    with agent(args.data_dir, SECRET) as target:
        cold, first_exec = asyncio.run(agent_cold_creates(target, args.iterations))
    template_rootfs = args.data_dir / "templates" / "minimal" / "rootfs"
    with tempfile.TemporaryDirectory(prefix="wrenn-boot-bench-") as tmp:
        samples = ladder(template_rootfs, args.iterations, Path(tmp))
    before = None
    for name, values in samples.items():
        report(name, values, p50(samples["bare"]))
        if before is not None:
            print(f"{'':<44} step {(p50(values) - before) * 1000:+7.1f} ms")
        before = p50(values)
    report("agent's cold create (to envd answering)", cold, p50(samples["bare"]))
    beyond = (p50(cold) - p50(samples[name])) * 1000
    print(f"{'':<44} beyond envd answering in the ladder {beyond:+7.1f} ms")
    report("its first command (`true`)", first_exec)


if __name__ == "__main__":
    main()
