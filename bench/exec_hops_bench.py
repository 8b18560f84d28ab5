"""Where an exec's time goes: each hop of a command (`true`) timed in the same run.

    sudo uv run python -m bench.exec_hops_bench [--iterations N] [--data-dir DIR]

Rows, all p50/p95 from one run (the machine's load is printed with them):
(a) the spawn envd makes, on the host: the same python probe that runs in (b);
(b) the same probe as pid 1 of a bare `runsc run` sandbox (the template's root filesystem, no
    network, no envd) and as a command inside a capsule: envd's own spawn (subprocess.Popen of
    `/bin/sh -c true` on pipes, in a new session, with its cwd and environment) against
    os.posix_spawn and fork+exec, and `sh -c true` against exec of /bin/true (the shell's share);
(e) envd's own code in the capsule, run as root for the capsule's default user: its process
    table's spawn and wait without HTTP (as root, and as the user with the user switched in a
    forked child - envd before - and by a switched thread with vfork - envd now), and a second
    envd server on the capsule's loopback (GET /health, POST /processes both ways);
(c) envd's no-op route (GET /health) from the host, over a plain socket and over the agent's
    client (httpx, kept-alive connection, the same address and token the agent uses);
(d) envd's POST /processes of `true` from the host over that client (envd's whole exec without
    the agent), then the agent's Exec over gRPC end to end, as the default user and as root;
(f) in a bare sandbox and in a capsule: 2,000 getppid() and one `sh -c true`, each right after
    other work and after 1 s of quiet (gVisor's systrap platform spins or sleeps by what it
    measured last: the same system call costs ~0.6 us or ~25 us).
Within each probe and among (c) and (d), rows alternate iteration by iteration so load moves
them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.hostagent.capsule import Capsule
from wrenn_server.hostagent.envd_client import EnvdClient
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ._common import agent, load_note, report, timed_async

SECRET = "bench-secret"
ENVD_PORT = 49983

# Runs with the capsule's python3 (stdlib only); prints {variant: [seconds, ...]}.
PROBE = r"""
import json, os, subprocess, sys, time
n = int(sys.argv[1])
home = os.path.expanduser("~")
cwd = home if os.access(home, os.X_OK) else "/"
env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": cwd,
       "USER": "user", "LOGNAME": "user", "SHELL": "/bin/bash", "LANG": "C.UTF-8"}
SH = ["/bin/sh", "-c", "true"]
TRUE = ["/bin/true"]

def popen(argv):
    # envd's spawn (processes.ProcessTable._start): pipes, /dev/null stdin, new session, cwd, env.
    out_r, out_w = os.pipe(); err_r, err_w = os.pipe()
    null = os.open(os.devnull, os.O_RDONLY)
    p = subprocess.Popen(argv, stdin=null, stdout=out_w, stderr=err_w, cwd=cwd, env=env,
                         start_new_session=True)
    for fd in (null, out_w, err_w):
        os.close(fd)
    while os.read(out_r, 65536): pass
    while os.read(err_r, 65536): pass
    os.close(out_r); os.close(err_r)
    p.wait()

def spawn(argv):
    out_r, out_w = os.pipe(); err_r, err_w = os.pipe()
    null = os.open(os.devnull, os.O_RDONLY)
    acts = [(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, out_w, 1),
            (os.POSIX_SPAWN_DUP2, err_w, 2)]
    pid = os.posix_spawn(argv[0], argv, env, file_actions=acts, setsid=True)
    for fd in (null, out_w, err_w):
        os.close(fd)
    while os.read(out_r, 65536): pass
    while os.read(err_r, 65536): pass
    os.close(out_r); os.close(err_r)
    os.waitpid(pid, 0)

def fork(argv):
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid(); os.chdir(cwd); os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    os.waitpid(pid, 0)

variants = {
    "subprocess.Popen sh -c true (envd's spawn)": lambda: popen(SH),
    "subprocess.Popen /bin/true (no shell)": lambda: popen(TRUE),
    "os.posix_spawn sh -c true": lambda: spawn(SH),
    "os.posix_spawn /bin/true": lambda: spawn(TRUE),
    "os.fork + execve sh -c true": lambda: fork(SH),
    "subprocess.Popen bash -c true (bash, not dash)": lambda: popen(["/bin/bash", "-c", "true"]),
}
out = {}
for _ in range(2):  # warm up: page cache, the sentry's caches
    for fn in variants.values(): fn()
for name in variants:
    out[name] = []
for _ in range(n):  # interleaved, so a burst of load hits every variant alike
    for name, fn in variants.items():
        t = time.perf_counter(); fn(); out[name].append(round(time.perf_counter() - t, 7))
print(json.dumps(out))
"""


# Runs with the capsule's python3: the same work right after other work and after a quiet
# second. gVisor's systrap platform switches its fast paths (the sentry and stub threads
# spinning instead of sleeping on a futex) on and off by the latencies it measures, so a system
# call's cost in one sandbox is not one number; this shows what quiet does to it.
QUIET_PROBE = r"""
import json, os, subprocess, sys, time
n = int(sys.argv[1])
def syscalls():
    for _ in range(2000): os.getppid()
def spawn():
    subprocess.run(["/bin/sh", "-c", "true"])
out = {}
for fn in (syscalls, spawn): fn()
for _ in range(n):
    for kind, fn in (("2000 getppid", syscalls), ("spawn sh -c true", spawn)):
        for quiet in (0.0, 1.0):
            time.sleep(quiet)
            t = time.perf_counter(); fn()
            out.setdefault("%s after %.0f s quiet" % (kind, quiet), []).append(
                round(time.perf_counter() - t, 7))
print(json.dumps(out))
"""


# Runs in the capsule with envd's own code (mounted at /opt/wrenn): envd's process handling
# without HTTP (ProcessTable.spawn + the stream's wait loop), and a second envd server on the
# capsule's loopback driven by http.client over one kept-alive connection (envd's HTTP handling
# without the host -> capsule network hop).
ENVD_PROBE = r"""
import http.client, json, os, sys, threading, time
sys.path.insert(0, "/opt/wrenn")
sys.modules["ssl"] = None
from envd import thread_creds, users
from envd.peers import AnyPeer
from envd.processes import ProcessTable, Spec
from envd.server import EnvdServer, State
n, name = int(sys.argv[1]), sys.argv[2]  # runs as root; commands run as the capsule's user
table = ProcessTable(); table.start()
root, user = users.lookup("root"), users.lookup(name)
fast_path = thread_creds.available

def forked_switch():  # envd before: subprocess switches user in a full fork
    thread_creds.available = lambda: False

def thread_switch():  # envd now: a thread switched to the user spawns with vfork
    thread_creds.available = fast_path

def table_exec(who):
    home = who.home if os.path.isdir(who.home) else "/"
    proc = table.spawn(Spec("true", None, users.environment(who), home, who, False, None, None))
    cursor = [0, 0]
    while not proc.wait_events(cursor, 2.0)[1]:
        pass

state = State(b"probe-token-0123456789abcdef")
state.default_user = user.name
server = EnvdServer(("127.0.0.1", 0), state, table, AnyPeer())
threading.Thread(target=server.serve_forever, daemon=True).start()
conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1])
auth = {"Authorization": "Bearer probe-token-0123456789abcdef"}

def get_health():
    conn.request("GET", "/health", headers=auth); r = conn.getresponse(); body = r.read()
    assert r.status == 200, (r.status, body)

def post_true():
    conn.request("POST", "/processes", body=b'{"cmd":"true"}',
                 headers={**auth, "Content-Type": "application/json"})
    r = conn.getresponse(); body = r.read()
    assert r.status == 200, (r.status, body)

def with_switch(setup, fn):
    def run():
        setup()
        fn()
    return run

variants = {
    "envd users.lookup (passwd, groups)": lambda: users.lookup(name),
    "envd spawn + wait, no HTTP, as root (no switch)": lambda: table_exec(root),
    "envd spawn + wait, no HTTP, as %s, forked switch (before)" % name:
        with_switch(forked_switch, lambda: table_exec(user)),
    "envd spawn + wait, no HTTP, as %s, thread switch (after)" % name:
        with_switch(thread_switch, lambda: table_exec(user)),
    "envd GET /health over loopback": get_health,
    "envd POST /processes `true` over loopback, forked switch (before)":
        with_switch(forked_switch, post_true),
    "envd POST /processes `true` over loopback, thread switch (after)":
        with_switch(thread_switch, post_true),
}
out = {key: [] for key in variants}
for _ in range(2):
    for fn in variants.values(): fn()
for _ in range(n):
    for key, fn in variants.items():
        t = time.perf_counter(); fn(); out[key].append(round(time.perf_counter() - t, 7))
print(json.dumps(out))
"""


def report_probe(where: str, result: dict[str, list[float]]) -> None:
    for name, samples in result.items():
        report(f"{where}: {name}", samples)


def host_probe(n: int) -> dict[str, list[float]]:
    done = subprocess.run(
        ["python3", "-c", PROBE, str(n)], capture_output=True, check=True, text=True
    )
    result: dict[str, list[float]] = json.loads(done.stdout)
    return result


def bare_runsc_probe(rootfs: Path, n: int, probe: str = PROBE) -> dict[str, list[float]]:
    """The probe as pid 1 of a bare gVisor sandbox: gVisor's own process creation, nothing of
    the platform (no envd, no network, no disk overlay)."""
    work = Path(tempfile.mkdtemp(prefix="wrenn-exechops-"))
    root, bundle = work / "runsc", work / "bundle"
    root.mkdir()
    bundle.mkdir()
    config = {
        "ociVersion": "1.0.0",
        "process": {"args": ["python3", "-c", probe, str(n)], "cwd": "/",
                    "user": {"uid": 0, "gid": 0}, "env": ["PATH=/usr/bin:/bin"]},
        "root": {"path": str(rootfs), "readonly": True},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "network"}]},
    }  # fmt: skip
    (bundle / "config.json").write_text(json.dumps(config))
    name = f"exechops-{uuid.uuid4().hex[:8]}"
    argv = ["runsc", f"--root={root}", "--network=none", "--overlay2=none", "--ignore-cgroups",
            "run", f"--bundle={bundle}", name]  # fmt: skip
    try:
        done = subprocess.run(argv, capture_output=True, check=True, text=True, timeout=600)
    finally:
        subprocess.run(["runsc", f"--root={root}", "delete", "--force", name], capture_output=True)
        subprocess.run(["rm", "-rf", str(work)], check=False)
    result: dict[str, list[float]] = json.loads(done.stdout)
    return result


def envd_client_of(data_dir: Path, sandbox_id: str) -> EnvdClient:
    """A client like the agent's own for the capsule's envd (address and token from its
    record), so the host -> envd hop is measured without the agent's gRPC."""
    for meta in (data_dir / "capsules").glob("*/meta.json"):
        capsule = Capsule.load(meta.parent)
        if capsule.sandbox_id == sandbox_id:
            assert capsule.net is not None
            return EnvdClient(str(capsule.net.capsule_ip), ENVD_PORT, capsule.token)
    raise LookupError(sandbox_id)


def raw_health(data_dir: Path, sandbox_id: str) -> Callable[[], None]:
    """GET /health on one kept-alive plain socket: the network hop into the sandbox without
    any client library."""
    client = envd_client_of(data_dir, sandbox_id)
    host, port = client.base_url.removeprefix("http://").rsplit(":", 1)
    token = client._http.headers["Authorization"]
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = f"GET /health HTTP/1.1\r\nHost: envd\r\nAuthorization: {token}\r\n\r\n".encode()

    def round_trip() -> None:
        sock.sendall(request)
        answer = sock.recv(65536)
        while answer.startswith(b"HTTP/1.1 200") and not answer.endswith(b"}"):
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200"), answer

    return round_trip


async def envd_exec(client: EnvdClient) -> None:
    events = [ev async for ev in client.start_process({"cmd": "true"})]  # type: ignore[typeddict-item]
    assert events[-1]["type"] == "exit"


async def main(iterations: int, data_dir: Path) -> None:
    print(load_note())
    report_probe("(a) host", host_probe(iterations))
    rootfs = data_dir / "templates" / "minimal" / "rootfs"
    report_probe("(b) bare runsc", bare_runsc_probe(rootfs, iterations))
    quiet_n = max(5, iterations // 10)
    report_probe("(f) bare runsc", bare_runsc_probe(rootfs, quiet_n, QUIET_PROBE))
    with agent(data_dir, SECRET, subnet="10.208.0.0/16") as target:
        async with AgentClient(target, SECRET) as c:
            sb = await c.create_sandbox(pb.CreateSandboxRequest())
            try:
                probe = pb.ExecRequest(
                    sandbox_id=sb.sandbox_id,
                    argv=["python3", "-c", PROBE, str(iterations)],
                    max_output_bytes=4 << 20,
                )
                res = await c.exec(probe)
                assert res.exit_code == 0, res.stderr
                report_probe("(b) capsule", json.loads(res.stdout))
                probe.argv[:] = ["python3", "-c", QUIET_PROBE, str(quiet_n)]
                res = await c.exec(probe)
                assert res.exit_code == 0, res.stderr
                report_probe("(f) capsule", json.loads(res.stdout))
                who = await c.exec(pb.ExecRequest(sandbox_id=sb.sandbox_id, cmd="id -un"))
                name = who.stdout.decode().strip()
                probe.argv[:] = ["python3", "-c", ENVD_PROBE, str(iterations), name]
                probe.user = "root"
                res = await c.exec(probe)
                assert res.exit_code == 0, res.stderr
                report_probe("(e) capsule", json.loads(res.stdout))

                envd = envd_client_of(data_dir, sb.sandbox_id)
                raw = raw_health(data_dir, sb.sandbox_id)
                as_default = pb.ExecRequest(sandbox_id=sb.sandbox_id, cmd="true")
                as_root = pb.ExecRequest(sandbox_id=sb.sandbox_id, cmd="true", user="root")

                async def raw_round_trip() -> None:
                    raw()

                rows = {
                    "(c) envd GET /health from the host, raw socket": raw_round_trip,
                    "(c) envd GET /health from the host, httpx (the agent's client)": envd.health,
                    f"(d) envd POST /processes `true` from the host, as {name}": (
                        lambda: envd_exec(envd)
                    ),
                    f"(d) agent Exec `true` over gRPC, as {name} (the default)": (
                        lambda: c.exec(as_default)
                    ),
                    "(d) agent Exec `true` over gRPC, as root (no user switch)": (
                        lambda: c.exec(as_root)
                    ),
                }
                samples: dict[str, list[float]] = {row: [] for row in rows}
                for fn in rows.values():
                    await timed_async(fn, 5)  # warm: connections made, caches filled
                for _ in range(iterations):  # interleaved: load moves every row alike
                    for row, fn in rows.items():
                        samples[row] += await timed_async(fn, 1)
                await envd.aclose()
                for row, values in samples.items():
                    report(row, values)
            finally:
                await c.destroy_sandbox(pb.SandboxRef(sandbox_id=sb.sandbox_id))
    print(load_note())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--data-dir", type=Path, default=Path("/var/lib/wrenn-bench-exec"))
    args = parser.parse_args()
    os.environ.setdefault("WRENN_AGENT_DOZE_AFTER_SEC", "0")  # never frozen under the bench
    asyncio.run(main(args.iterations, args.data_dir))
