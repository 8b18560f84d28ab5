"""The gVisor side: OCI bundles and the runsc commands that run, checkpoint and restore them.

Two quirks of runsc (2024-07) shape this module, both measured on our hosts:
- A sandbox's control socket is an abstract unix socket, which lives in a network namespace, so
  every command for a sandbox runs inside the capsule's netns (`nsenter --net=...`).
- `--network=sandbox` refuses to start when /proc/sys/net/core/rmem_default exists, which newer
  kernels show in every netns; `run`/`restore` therefore start in a private mount namespace with an
  empty tmpfs over /proc/sys/net.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from . import checkpoints
from .proc import CommandError, run, run_quiet

log = logging.getLogger(__name__)

ENVD_MOUNT = "/opt/wrenn/envd"

# Capabilities inside the sandbox (enforced by gVisor's kernel, not the host's): what a root user
# of a Docker container has, so envd can switch users and chown, and sudo works.
CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
    "CAP_KILL", "CAP_AUDIT_WRITE",
]  # fmt: skip

_UNSHARE_SCRIPT = (
    'mount --make-rprivate / && mount -t tmpfs none /proc/sys/net && exec nsenter --net="$0" "$@"'
)


def oci_config(
    *,
    rootfs: Path,
    netns_path: str,
    envd_dir: Path,
    envd_env: dict[str, str],
    hostname: str,
    vcpus: int,
    memory_mb: int,
    pids_limit: int,
    cgroup: str,
) -> dict[str, Any]:
    boot = "import sys; sys.path.insert(0, '/opt/wrenn'); from envd.__main__ import main; main()"
    return {
        "ociVersion": "1.0.0",
        "process": {
            # additionalGids matches root's group list, so envd's children need no identity switch
            # (which would cost subprocess its vfork fast path).
            "user": {"uid": 0, "gid": 0, "additionalGids": [0]},
            "args": ["python3", "-I", "-S", "-c", boot],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                *(f"{k}={v}" for k, v in envd_env.items()),
            ],
            "cwd": "/",
            "terminal": False,
            "capabilities": {k: CAPS for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 65536, "soft": 65536}],
        },
        "root": {"path": str(rootfs), "readonly": False},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
            },
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm"},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["ro"]},
            {
                "destination": ENVD_MOUNT,
                "type": "bind",
                "source": str(envd_dir),
                "options": ["rbind", "ro"],
            },
        ],
        "linux": {
            "namespaces": [
                {"type": "pid"},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"},
                {"type": "network", "path": netns_path},
            ],
            "resources": {
                "memory": {"limit": memory_mb * 1024 * 1024},
                "cpu": {"quota": vcpus * 100_000, "period": 100_000},
                "pids": {"limit": pids_limit},
            },
            "cgroupsPath": cgroup,
        },
    }


class Runsc:
    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.root = root

    def _base(self) -> list[str]:
        # Flags must be identical for run and restore ("inconsistent private memory files").
        return [
            self.binary,
            f"--root={self.root}",
            "--network=sandbox",
            "--net-disconnect-ok",
            "--overlay2=none",
        ]

    def _in_netns(self, netns_path: str, *args: str) -> list[str]:
        return ["nsenter", f"--net={netns_path}", *self._base(), *args]

    def _fresh_mountns(self, netns_path: str, *args: str) -> list[str]:
        return ["unshare", "-m", "sh", "-c", _UNSHARE_SCRIPT, netns_path, *self._base(), *args]

    async def run(
        self, cid: str, bundle: Path, netns_path: str, log_path: Path, envd_token: str
    ) -> None:
        """Start the sandbox; `envd_token` reaches envd as its stdin, a pipe that holds the
        token and is closed (runsc --detach gives its stdio to the sandbox's init)."""
        argv = self._fresh_mountns(netns_path, "run", "--detach", f"--bundle={bundle}", cid)
        await run(*argv, timeout=60, stdout_path=str(log_path), input=envd_token.encode())

    async def restore(
        self, cid: str, bundle: Path, image: Path, netns_path: str, log_path: Path
    ) -> None:
        argv = self._fresh_mountns(
            netns_path, "restore", "--detach", f"--image-path={image}", f"--bundle={bundle}", cid
        )
        await run(*argv, timeout=120, stdout_path=str(log_path))

    async def checkpoint(self, cid: str, image: Path, netns_path: str) -> None:
        """Save memory and state to `image`; the sandbox stops. The image is marked complete
        (checkpoints.py) by a shell around runsc once runsc succeeded, so the mark is made
        even if the agent is gone by then."""
        argv = self._in_netns(
            netns_path,
            "checkpoint",
            # Uncompressed: restore speed matters more than image size.
            "--compression=none",
            "--exclude-committed-zero-pages",
            checkpoints.image_arg(image),
            cid,
        )
        mark = str(image / checkpoints.COMPLETE)
        # runsc makes the memory image 0644: under umask 077 it is never readable by others,
        # not even while it is written.
        await run(
            "sh", "-c", 'umask 077 && "$@" && : > "$0"', mark, *argv,
            timeout=checkpoints.CHECKPOINT_TIMEOUT,
            own_group=True,
        )  # fmt: skip

    async def freeze(self, cid: str, netns_path: str) -> None:
        await run(*self._in_netns(netns_path, "pause", cid), timeout=60)

    async def thaw(self, cid: str, netns_path: str) -> None:
        await run(*self._in_netns(netns_path, "resume", cid), timeout=60)

    async def state(self, cid: str, netns_path: str) -> dict[str, Any] | None:
        """runsc's view of the sandbox, or None if it does not know it."""
        try:
            out = await run(*self._in_netns(netns_path, "state", cid), timeout=15)
        except CommandError:
            return None
        try:
            state: dict[str, Any] = json.loads(out)
        except ValueError:
            return None
        return state

    async def destroy(self, cid: str, netns_path: str) -> None:
        """Kill and forget the sandbox. Idempotent; never raises."""
        await run_quiet(*self._in_netns(netns_path, "kill", "--all", cid, "KILL"), timeout=15)
        if not await run_quiet(*self._in_netns(netns_path, "delete", "--force", cid), timeout=30):
            await self.forget(cid)

    async def forget(self, cid: str) -> None:
        """Drop runsc's state for a sandbox whose netns is gone (a crash half-way)."""
        await run_quiet(*self._base(), "delete", "--force", cid, timeout=30)

    async def list_ids(self) -> list[str]:
        """Ids runsc has state for (their status needs the netns, see `state`)."""
        try:
            out = await run(*self._base(), "list", "--quiet", timeout=15)
        except CommandError:
            return []
        return [line.strip() for line in out.splitlines() if line.strip()]
