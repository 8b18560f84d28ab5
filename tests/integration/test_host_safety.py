"""What capsule code builds must never act on the host: links it plants in a root filesystem are
never followed by the root agent, setuid programs and device nodes it makes are unusable by the
host's other users, and nothing in the data dir is theirs to read. Every test performs the attack
through the agent's RPCs against real capsules and checks real host files, as root and as an
unprivileged host user."""

from __future__ import annotations

import os
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.hostagent.config import AgentSettings
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from .conftest import DATA_DIR, AgentProcess, CapsuleFactory
from .conftest import run_as_root as run  # attacks as the capsule's root

pytestmark = pytest.mark.integration

# Another user of the host: nobody, without root's groups; and once more in root's group (a
# 0750 directory would let that one in). The command is started by a shell running as that user:
# setpriv itself still holds root's capabilities when it calls execve, and would reach the path.
_EXEC = ["/bin/sh", "-c", 'exec "$@"', "sh"]
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *_EXEC]
AS_NOBODY_IN_ROOT_GROUP = ["setpriv", "--reuid=65534", "--regid=0", "--clear-groups", *_EXEC]
# The system's interpreter: the test's own may live where nobody may not go.
HOST_PYTHON = "/usr/bin/python3"
PRINT_REACHABLE = """
import os, sys
for path in sys.argv[1:]:
    try:
        os.stat(path)
        print(path)
    except PermissionError:
        pass
"""


def name() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A directory of the host's own files, outside every data dir."""
    d = Path("/var/tmp") / f"wrenn-host-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=True)


async def ok(agent: AgentClient, sandbox_id: str, cmd: str) -> bytes:
    res = await run(agent, sandbox_id, cmd)
    assert res.exit_code == 0, res.stderr
    return bytes(res.stdout)


async def drop_template(agent: AgentClient, template: str) -> None:
    await agent.delete_snapshot(pb.DeleteSnapshotRequest(name=template))


def contents(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


# -- links planted in a root filesystem ------------------------------------------------------


@pytest.mark.parametrize("target", ["existing", "missing"])
async def test_a_resolv_conf_link_never_writes_the_host(
    agent: AgentClient, new_capsule: CapsuleFactory, host_dir: Path, target: str
) -> None:
    victim = host_dir / "file"
    if target == "existing":
        victim.write_text("precious\n")
    before = contents(host_dir)
    src = await new_capsule()
    await ok(agent, src.sandbox_id, f"ln -sf {victim} /etc/resolv.conf")
    flat, snap = name(), name()
    # The image template: the agent blanks resolv.conf in its copy of the tree.
    await agent.flatten_rootfs(pb.FlattenRootfsRequest(sandbox_id=src.sandbox_id, name=flat))
    try:
        assert contents(host_dir) == before
        copied = DATA_DIR / "templates" / flat / "rootfs/etc/resolv.conf"
        assert not copied.is_symlink() and copied.read_bytes() == b""
        # A capsule of it: the agent writes that capsule's resolv.conf before it boots.
        child = await new_capsule(template=flat)
        assert contents(host_dir) == before
        out = await ok(agent, child.sandbox_id, "test -L /etc/resolv.conf || echo plain")
        assert out == b"plain\n"
        # The snapshot template, a capsule of it, and the source resumed.
        req = pb.CreateSnapshotRequest(sandbox_id=src.sandbox_id, name=snap)
        await agent.create_snapshot(req)
        restored = await new_capsule(template=snap)
        await ok(agent, restored.sandbox_id, "true")
        await agent.resume_sandbox(pb.ResumeSandboxRequest(sandbox_id=src.sandbox_id))
        await ok(agent, src.sandbox_id, "true")
        assert contents(host_dir) == before
        for sb in (child, restored):
            await agent.destroy_sandbox(pb.SandboxRef(sandbox_id=sb.sandbox_id))
    finally:
        for t in (flat, snap):
            if (DATA_DIR / "templates" / t).exists():
                await drop_template(agent, t)
    assert contents(host_dir) == before


async def test_an_etc_that_is_a_link_never_redirects_agent_writes(
    agent: AgentClient, new_capsule: CapsuleFactory, host_dir: Path
) -> None:
    etc = host_dir / "etc"
    etc.mkdir()
    (etc / "resolv.conf").write_text("precious\n")
    before = contents(etc)
    src = await new_capsule()
    # /etc becomes a link to a path that, on the host, is the host's directory (inside the
    # capsule it holds a copy of /etc, so the capsule keeps working).
    move = f"mkdir -p {etc} && cp -a /etc/. {etc}/ && rm -rf /etc && ln -s {etc} /etc"
    await ok(agent, src.sandbox_id, move)
    await ok(agent, src.sandbox_id, "test -f /etc/passwd")
    flat = name()
    await agent.flatten_rootfs(pb.FlattenRootfsRequest(sandbox_id=src.sandbox_id, name=flat))
    try:
        assert contents(etc) == before
        assert (DATA_DIR / "templates" / flat / "rootfs/etc").is_symlink()
        child = await new_capsule(template=flat)
        assert contents(etc) == before
        assert await ok(agent, child.sandbox_id, "echo alive") == b"alive\n"
        await agent.destroy_sandbox(pb.SandboxRef(sandbox_id=child.sandbox_id))
    finally:
        await drop_template(agent, flat)
    assert contents(etc) == before


# -- setuid programs and devices from capsules -----------------------------------------------


def as_user(prefix: list[str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=120)


def find(*args: str) -> list[str]:
    """find(1) as root."""
    return subprocess.run(
        ["find", *args], capture_output=True, text=True, check=True
    ).stdout.split()


def mounts_under(root: Path) -> dict[str, set[str]]:
    """Mount point -> its per-mount options, for mounts below root (/proc/self/mountinfo)."""
    out = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4].startswith(f"{root}/"):
                out[fields[4]] = set(fields[5].split(","))
    return out


async def test_setuid_programs_from_capsules_are_unusable_on_the_host(
    agent: AgentClient, new_capsule: CapsuleFactory
) -> None:
    src = await new_capsule()
    await ok(agent, src.sandbox_id, "cp /bin/bash /x && chmod 4755 /x && cp /x /root/y")
    # Device nodes, if the sandbox lets capsule code make them at all, must be inert too.
    await run(agent, src.sandbox_id, "mknod /mem c 1 1; mknod /sda b 8 0; chmod 666 /mem /sda")
    flat, snap = name(), name()
    await agent.flatten_rootfs(pb.FlattenRootfsRequest(sandbox_id=src.sandbox_id, name=flat))
    try:
        child = await new_capsule(template=flat)  # a live overlay over the template's tree
        req = pb.CreateSnapshotRequest(sandbox_id=src.sandbox_id, name=snap)
        await agent.create_snapshot(req)

        found = find(str(DATA_DIR), "-perm", "-4000", "-type", "f")
        planted = [p for p in found if p.endswith(("/x", "/root/y"))]
        assert f"{DATA_DIR}/templates/{flat}/rootfs/x" in planted, found
        assert any(p.startswith(f"{DATA_DIR}/capsules/") for p in planted), found

        for user in (AS_NOBODY, AS_NOBODY_IN_ROOT_GROUP):
            # Not even listed...
            listed = as_user(user, "find", str(DATA_DIR), "-perm", "-4000")
            assert listed.stdout == "", listed.stdout
            assert "Permission denied" in listed.stderr
            # ...nor reachable by its path, nor run.
            for path in planted:
                res = as_user(user, path, "-p", "-c", "id -u")
                assert res.returncode != 0 and res.stdout == "", (path, res)
            reachable = as_user(user, HOST_PYTHON, "-I", "-c", PRINT_REACHABLE, *found)
            assert reachable.returncode == 0 and reachable.stdout == "", reachable
        devices = find(str(DATA_DIR), "(", "-type", "c", "-o", "-type", "b", ")")
        for user in (AS_NOBODY, AS_NOBODY_IN_ROOT_GROUP):
            for path in devices:
                res = as_user(user, "head", "-c", "1", path)
                assert res.returncode != 0, (path, res)

        # Where the host mounts capsule disks, setuid bits and device nodes mean nothing.
        mounts = mounts_under(DATA_DIR / "capsules")
        assert len(mounts) >= 2, mounts
        for point, options in mounts.items():
            assert {"nosuid", "nodev"} <= options, (point, options)
        await agent.destroy_sandbox(pb.SandboxRef(sandbox_id=child.sandbox_id))
    finally:
        for t in (flat, snap):
            if (DATA_DIR / "templates" / t).exists():
                await drop_template(agent, t)


# -- the data dir is root's alone ------------------------------------------------------------


def agent_files(data_dir: Path) -> list[Path]:
    """Everything the agent keeps in its data dir, but not inside root filesystems and capsule
    disks (their modes are the capsule's business; the 0700 directories above shut them away)."""
    out = [data_dir]
    for dirpath, dirnames, filenames in os.walk(data_dir):
        dirnames[:] = [d for d in dirnames if d not in ("rootfs", "disk")]
        out += [Path(dirpath, n) for n in dirnames + filenames]
    return out


def assert_root_only(paths: list[Path]) -> None:
    loose = {}
    for p in paths:
        try:
            st = p.lstat()
        except FileNotFoundError:
            continue  # replaced or removed since it was listed (a record saved meanwhile)
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
            loose[str(p)] = oct(stat.S_IMODE(st.st_mode))
    assert loose == {}


async def test_everything_in_the_data_dir_is_root_only(
    agent: AgentClient, new_capsule: CapsuleFactory
) -> None:
    running, paused = await new_capsule(), await new_capsule(memory_mb=256)
    await ok(agent, running.sandbox_id, "echo secret > /root/s")
    await agent.pause_sandbox(pb.SandboxRef(sandbox_id=paused.sandbox_id))
    snap = name()
    req = pb.CreateSnapshotRequest(sandbox_id=running.sandbox_id, name=snap)
    await agent.create_snapshot(req)
    try:
        checkpoint = DATA_DIR / "capsules" / paused.sandbox_id / "checkpoint"
        assert checkpoint.is_dir() and any(checkpoint.iterdir())
        paths = agent_files(DATA_DIR)
        names = {p.name for p in paths}
        assert {"template.json", "disk.img", "checkpoint", "meta.json", "runsc.log"} <= names
        assert_root_only(paths)
        run_dir = AgentSettings(data_dir=DATA_DIR).run_dir
        assert_root_only([run_dir.parent, run_dir])
        for user in (AS_NOBODY, AS_NOBODY_IN_ROOT_GROUP):
            denied = as_user(user, "ls", str(DATA_DIR), str(run_dir))
            assert denied.returncode != 0 and denied.stdout == "", denied
            res = as_user(user, "cat", str(DATA_DIR / "templates" / snap / "template.json"))
            assert res.returncode != 0 and "Permission denied" in res.stderr
    finally:
        await drop_template(agent, snap)


async def test_an_old_data_dir_is_made_private_on_start(
    agent: AgentClient, agent_process: AgentProcess, new_capsule: CapsuleFactory
) -> None:
    """As an older version left it: 0755 directories and 0644 files."""
    capsule = await new_capsule(memory_mb=256)
    cdir = DATA_DIR / "capsules" / capsule.sandbox_id
    template = DATA_DIR / "templates" / "minimal"
    for d in (DATA_DIR, DATA_DIR / "templates", DATA_DIR / "capsules", template, cdir):
        d.chmod(0o755)
    for f in (template / "template.json", cdir / "meta.json", cdir / "disk.img"):
        f.chmod(0o644)
    agent_process.stop()
    agent_process.start()
    assert_root_only(agent_files(DATA_DIR))
    assert await ok(agent, capsule.sandbox_id, "echo adopted") == b"adopted\n"


# -- ids and names that would leave their directories ----------------------------------------


async def test_ids_and_names_that_leave_their_directory_are_refused(
    agent: AgentClient, host_dir: Path
) -> None:
    (host_dir / "keep").write_text("precious\n")
    victim = os.path.relpath(host_dir, DATA_DIR / "capsules" / "sb-")
    calls = [
        (agent.create_sandbox, pb.CreateSandboxRequest(sandbox_id="sb-", memory_mb=256)),
        (agent.create_sandbox, pb.CreateSandboxRequest(sandbox_id=f"sb-/{victim}", memory_mb=256)),
        (agent.create_sandbox, pb.CreateSandboxRequest(sandbox_id=f"sb-{uuid.uuid4()}\n")),
        (agent.create_sandbox, pb.CreateSandboxRequest(template="minimal\n", memory_mb=256)),
        (agent.get_sandbox, pb.SandboxRef(sandbox_id="sb-/../..")),
        (agent.destroy_sandbox, pb.SandboxRef(sandbox_id=f"sb-/{victim}")),
        (agent.create_snapshot, pb.CreateSnapshotRequest(sandbox_id="sb-/../..", name="x")),
        (agent.delete_snapshot, pb.DeleteSnapshotRequest(name="minimal\n")),
        (agent.delete_snapshot, pb.DeleteSnapshotRequest(name="../capsules")),
    ]
    for method, request in calls:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await method(request)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, request)
    assert contents(host_dir) == {"keep": b"precious\n"}
    assert (DATA_DIR / "templates/minimal/template.json").is_file()
