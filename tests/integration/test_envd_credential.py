"""envd's credential inside a capsule: no capsule user other than root can learn the token, and no
capsule process (not even one holding the token) can talk to envd or re-key it. Snapshot
templates hold no token; capsules restored from them, or resumed, are re-keyed and work."""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from .conftest import DATA_DIR, AgentProcess, CapsuleFactory
from .conftest import run_as_root as run  # attacks as the capsule's root unless named
from .test_snapshots import delete_template, name
from .traces import capsule_dir

pytestmark = pytest.mark.integration

ENVD_PORT = 49983

# Run as a non-root user inside the capsule: everything it can read where a secret could hide
# (other processes' environment and command line, envd's stdin, the envd mount, the usual
# writable and configuration directories), compressed, for the test to search on the host.
PROBE = r"""
import base64, json, os, sys, zlib
out = {}
def grab(path):
    try:
        with open(path, "rb") as f:
            out[path] = base64.b64encode(f.read(4 << 20)).decode()
    except OSError as e:
        out[path] = "error: %s" % e.strerror
me = str(os.getpid())
for pid in os.listdir("/proc"):
    if pid.isdigit() and pid != me:
        for part in ("environ", "cmdline"):
            grab("/proc/%s/%s" % (pid, part))
grab("/proc/1/fd/0")
grab("/proc/1/mem")
try:
    out["/proc/1/fd"] = " ".join(os.listdir("/proc/1/fd"))
except OSError as e:
    out["/proc/1/fd"] = "error: %s" % e.strerror
for top in ("/opt/wrenn", "/etc", "/tmp", "/var/tmp", "/run", "/dev/shm", "/home", "/var/log",
            "/root", "/usr/local"):
    for path, dirs, files in os.walk(top):
        for f in files:
            p = os.path.join(path, f)
            if os.path.isfile(p) and not os.path.islink(p):
                grab(p)
sys.stdout.write(base64.b64encode(zlib.compress(json.dumps(out).encode())).decode())
"""


def meta(sandbox_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((capsule_dir(sandbox_id) / "meta.json").read_text())
    return data


def token_of(sandbox_id: str) -> str:
    token = meta(sandbox_id)["token"]
    assert isinstance(token, str) and len(token) >= 32
    return token


async def probe_as(agent: AgentClient, sandbox_id: str, user: str) -> dict[str, bytes | str]:
    """What `user` can read in the capsule: path -> content, or "error: ..." if refused."""
    res = await run(agent, sandbox_id, "", argv=["python3", "-c", PROBE], user=user)
    assert res.exit_code == 0, res.stderr
    raw: dict[str, str] = json.loads(zlib.decompress(base64.b64decode(res.stdout)))
    return {k: v if v.startswith("error: ") or k == "/proc/1/fd" else base64.b64decode(v)
            for k, v in raw.items()}  # fmt: skip


def assert_nowhere(found: dict[str, bytes | str], *secrets: str) -> None:
    for path, content in found.items():
        for secret in secrets:
            data = content.encode() if isinstance(content, str) else content
            assert secret.encode() not in data, f"the token is readable at {path}"


async def test_no_capsule_user_can_read_the_token(
    agent: AgentClient, new_capsule: CapsuleFactory
) -> None:
    sid = (await new_capsule()).sandbox_id
    token = token_of(sid)
    await run(agent, sid, "useradd -m dev")
    for user in ("nobody", "dev", "wrenn-user"):
        found = await probe_as(agent, sid, user)
        # The probe did read pid 1's environment (gVisor lets any user read it): there is no
        # token in it, nor in any other place the user can read.
        assert b"WRENN_ENVD_PORT=" in found["/proc/1/environ"]
        assert b"envd.__main__" in found["/proc/1/cmdline"]
        assert_nowhere(found, token)
        # envd's memory and descriptors are not the user's to read.
        assert found["/proc/1/mem"] == "error: Permission denied"
        # The pipe the token came on is gone: stdin is /dev/null (and pipes envd holds are
        # not for other users to open through /proc).
        assert found["/proc/1/fd/0"] == b""
    # Not even root finds it outside envd's memory.
    assert_nowhere(await probe_as(agent, sid, "root"), token)
    # The agent's own record has it, readable by root only.
    record = capsule_dir(sid) / "meta.json"
    assert record.stat().st_mode & 0o077 == 0


# Run inside the capsule: every way to reach envd's port, with and without the token.
KNOCK = r"""
import json, os, socket, sys, urllib.error, urllib.request
port = int(sys.argv[2])
results = {}
for host in ("127.0.0.1", sys.argv[1]):
    conn = socket.create_connection((host, port), timeout=10)
    reply = b""
    try:
        while True:
            chunk = conn.recv(4096)
            if not chunk:
                break
            reply += chunk
    except OSError as e:
        reply += ("[%s]" % e).encode()
    conn.close()
    results["%s raw" % host] = reply.decode(errors="replace")
    for token in [""] + [os.environ[k] for k in ("ENVD_TOKEN",) if k in os.environ]:
        for path, body in (("/init", {"token": "x" * 40}),
                           ("/processes", {"cmd": "touch /tmp/pwned"})):
            req = urllib.request.Request(
                "http://%s:%d%s" % (host, port, path), data=json.dumps(body).encode(),
                headers={"Authorization": "Bearer " + token} if token else {})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    outcome = "status %d" % r.status
            except urllib.error.HTTPError as e:
                outcome = "status %d" % e.code
            except (OSError, urllib.error.URLError) as e:
                outcome = "closed"
            results["%s %s %s" % (host, path, "token" if token else "no token")] = outcome
print(json.dumps(results))
"""


async def test_capsule_processes_cannot_use_envd(
    agent: AgentClient, new_capsule: CapsuleFactory
) -> None:
    sid = (await new_capsule()).sandbox_id
    token, capsule_ip = token_of(sid), meta(sid)["net"]["capsule_ip"]
    # A non-root user without the token, and root even with it (root can read envd's memory):
    # envd answers the host agent only. Refused connections get a 403 if they are still open
    # to read it, or are closed.
    for user, env in (("nobody", {}), ("root", {"ENVD_TOKEN": token})):
        argv = ["python3", "-c", KNOCK, capsule_ip, str(ENVD_PORT)]
        res = await run(agent, sid, "", argv=argv, user=user, env=env)
        assert res.exit_code == 0, res.stderr
        results = json.loads(res.stdout)
        assert len(results) == (10 if env else 6)
        for what, outcome in results.items():
            if what.endswith(" raw"):
                assert outcome.startswith("HTTP/1.1 403 Forbidden\r\n"), (what, outcome)
                assert '"code":"permission_denied"' in outcome
            else:
                assert outcome in ("status 403", "closed"), (user, what, outcome)
    assert (await run(agent, sid, "test -e /tmp/pwned")).exit_code == 1
    # The host agent still holds the only working token: nothing was re-keyed.
    assert (await run(agent, sid, "echo still mine")).stdout == b"still mine\n"
    assert token_of(sid) == token


async def test_a_non_root_user_cannot_stop_or_trace_envd(
    agent: AgentClient, new_capsule: CapsuleFactory
) -> None:
    sid = (await new_capsule()).sandbox_id
    script = (
        "import ctypes, os, signal\n"
        "for sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGTERM):\n"
        "    try:\n"
        "        os.kill(1, sig); print('sent', sig)\n"
        "    except PermissionError:\n"
        "        print('refused')\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print('ptrace', libc.ptrace(16, 1, 0, 0), ctypes.get_errno())\n"  # PTRACE_ATTACH
        # Reading envd's memory directly (its heap holds the token).
        "class Iov(ctypes.Structure):\n"
        "    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]\n"
        "buf = ctypes.create_string_buffer(64)\n"
        "start = int(open('/proc/1/maps').readline().split('-')[0], 16)\n"
        "mine, theirs = Iov(ctypes.addressof(buf), 64), Iov(start, 64)\n"
        "n = libc.process_vm_readv(1, ctypes.byref(mine), 1, ctypes.byref(theirs), 1, 0)\n"
        "print('vm_readv', n, ctypes.get_errno())\n"
    )
    res = await run(agent, sid, "", argv=["python3", "-c", script], user="nobody")
    assert res.stdout.decode().split("\n")[:3] == ["refused"] * 3, res.stdout
    lines = res.stdout.decode().split("\n")
    assert lines[3:5] == ["ptrace -1 1", "vm_readv -1 1"], res.stdout  # EPERM
    health = await run(agent, sid, "echo alive")
    assert health.stdout == b"alive\n"


async def test_snapshot_templates_hold_no_token_and_restored_capsules_are_rekeyed(
    agent: AgentClient, new_capsule: CapsuleFactory
) -> None:
    src = (await new_capsule()).sandbox_id
    src_token = token_of(src)
    await run(agent, src, "echo snap > /home/wrenn-user/marker")
    tname = name()
    await agent.create_snapshot(pb.CreateSnapshotRequest(sandbox_id=src, name=tname))
    try:
        stored = (DATA_DIR / "templates" / tname / "template.json").read_text()
        assert "envd_token" not in stored and src_token not in stored
        assert json.loads(stored)["source_capsule"] == meta(src)["handle"]
        for _ in range(2):
            sid = (await new_capsule(template=tname)).sandbox_id
            token = token_of(sid)
            assert token != src_token
            assert (await run(agent, sid, "cat /home/wrenn-user/marker")).stdout == b"snap\n"
            # The restored envd was re-keyed: nobody there can find either token, and the
            # source's token no longer opens it.
            assert_nowhere(await probe_as(agent, sid, "nobody"), token, src_token)
            assert await envd_status(sid, src_token) == 401
            assert await envd_status(sid, token) == 200
        # The source capsule resumes and works with its own token.
        await agent.resume_sandbox(pb.ResumeSandboxRequest(sandbox_id=src))
        assert (await run(agent, src, "cat /home/wrenn-user/marker")).stdout == b"snap\n"
        assert token_of(src) == src_token
    finally:
        await delete_template(agent, tname)


async def test_resumed_capsule_works_and_hides_its_token(
    agent: AgentClient, new_capsule: CapsuleFactory
) -> None:
    sid = (await new_capsule()).sandbox_id
    token = token_of(sid)
    await agent.pause_sandbox(pb.SandboxRef(sandbox_id=sid))
    await agent.resume_sandbox(pb.ResumeSandboxRequest(sandbox_id=sid))
    assert (await run(agent, sid, "echo back", user="nobody")).stdout == b"back\n"
    assert token_of(sid) == token
    assert_nowhere(await probe_as(agent, sid, "nobody"), token)


async def envd_status(sandbox_id: str, token: str) -> int:
    """GET /health on a capsule's envd from the host (its gateway), as the agent does."""
    ip = meta(sandbox_id)["net"]["capsule_ip"]
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(
            f"http://{ip}:{ENVD_PORT}/health", headers={"Authorization": f"Bearer {token}"}
        )
    return response.status_code


async def set_envd_token(sandbox_id: str, old: str, new: str) -> None:
    ip = meta(sandbox_id)["net"]["capsule_ip"]
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.post(
            f"http://{ip}:{ENVD_PORT}/init",
            json={"token": new},
            headers={"Authorization": f"Bearer {old}"},
        )
    assert response.status_code == 204, response.text


def rewrite_record(sandbox_id: str, **changes: Any) -> None:
    path = capsule_dir(sandbox_id) / "meta.json"
    path.write_text(json.dumps({**meta(sandbox_id), **changes}))


LEGACY = "legacy-token-" + "L" * 30


async def test_capsules_and_templates_from_before_derived_tokens_keep_working(
    agent: AgentClient, agent_process: AgentProcess, new_capsule: CapsuleFactory
) -> None:
    """A capsule started by an older agent has a random token (which was in its envd's
    environment), and an older snapshot template holds its token in template.json. The agent
    re-keys such capsules (when found running, or on resume) and still starts such templates."""
    running, paused = (await new_capsule()).sandbox_id, (await new_capsule()).sandbox_id
    derived = {sid: token_of(sid) for sid in (running, paused)}
    await run(agent, paused, "echo old > /home/wrenn-user/marker")
    # Make both look like an older agent's: envd and the record agree on a random token. The
    # paused one is checkpointed holding it.
    await set_envd_token(paused, derived[paused], LEGACY)
    await agent.pause_sandbox(pb.SandboxRef(sandbox_id=paused))
    agent_process.stop()
    await set_envd_token(running, derived[running], LEGACY)
    for sid in (running, paused):
        rewrite_record(sid, token=LEGACY)
    agent_process.start()
    # Found running: re-keyed at start.
    assert (await run(agent, running, "echo adopted")).stdout == b"adopted\n"
    assert token_of(running) == derived[running]
    assert await envd_status(running, LEGACY) == 401
    # Found paused, then snapshotted: its checkpointed envd must answer to a derived token
    # before a template names it, so it is resumed, re-keyed and paused again.
    assert token_of(paused) == LEGACY
    tname = name()
    await agent.create_snapshot(pb.CreateSnapshotRequest(sandbox_id=paused, name=tname))
    try:
        assert token_of(paused) == derived[paused]
        assert LEGACY not in (DATA_DIR / "templates" / tname / "template.json").read_text()
        sid = (await new_capsule(template=tname)).sandbox_id
        assert (await run(agent, sid, "cat /home/wrenn-user/marker")).stdout == b"old\n"
    finally:
        await delete_template(agent, tname)


async def test_an_older_snapshot_template_with_its_token_still_starts(
    agent: AgentClient, new_capsule: CapsuleFactory
) -> None:
    src = (await new_capsule()).sandbox_id
    await run(agent, src, "echo older > /home/wrenn-user/marker")
    tname = name()
    await agent.create_snapshot(pb.CreateSnapshotRequest(sandbox_id=src, name=tname))
    try:
        # What an older agent wrote: the token itself, no source capsule.
        path: Path = DATA_DIR / "templates" / tname / "template.json"
        stored = json.loads(path.read_text())
        del stored["source_capsule"]
        path.write_text(json.dumps({**stored, "envd_token": token_of(src)}))
        listed = await agent.list_templates(pb.Empty())
        assert tname in [t.name for t in listed.templates]
        sid = (await new_capsule(template=tname)).sandbox_id
        assert (await run(agent, sid, "cat /home/wrenn-user/marker")).stdout == b"older\n"
        assert await envd_status(sid, token_of(src)) == 401
    finally:
        await delete_template(agent, tname)
