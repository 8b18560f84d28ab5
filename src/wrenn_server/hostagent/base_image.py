"""Building the base template: a Debian bookworm minbase root filesystem made with debootstrap from
the mirror this machine's apt is configured with."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import rootfs_io
from .proc import CommandError

SUITE = "bookworm"
PACKAGES = ("python3", "sudo", "curl", "ca-certificates", "procps", "iproute2")

Progress = Callable[[float, str], None]


def debian_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The URI apt uses for the bookworm suite (deb822 .sources files or one-line .list files)."""
    candidates = sorted(sources_dir.glob("sources.list.d/*.sources"))
    for path in candidates:
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                (k.strip(), v.strip())
                for k, _, v in (line.partition(":") for line in stanza.splitlines())
                if not k.startswith("#")
            )
            if SUITE in fields.get("Suites", "").split() and fields.get("URIs"):
                return fields["URIs"].split()[0]
    lists = [sources_dir / "sources.list", *sorted(sources_dir.glob("sources.list.d/*.list"))]
    for path in lists:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            m = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m and m.group(2) == SUITE:
                return m.group(1)
    raise RuntimeError("no Debian bookworm source found in apt's configuration")


async def debootstrap(
    target: Path, progress: Progress, packages: tuple[str, ...] = PACKAGES
) -> None:
    """Run debootstrap into target, reporting progress from its log lines."""
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed (run scripts/install-deps.sh)")
    argv = [
        "debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
        SUITE, str(target), debian_mirror(),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert proc.stdout is not None
    tracker = _ProgressTracker(progress)
    tail: list[str] = []
    async for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip()
        tail = [*tail[-40:], line]
        tracker.feed(line)
    if await proc.wait() != 0:
        raise CommandError(argv, proc.returncode, "\n".join(tail))
    progress(1.0, "done")


class _ProgressTracker:
    """Turns debootstrap's `I: Retrieving/Unpacking/Configuring <pkg>` lines into a fraction."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.retrieved = 0
        self.steps = 0

    def feed(self, line: str) -> None:
        m = re.match(r"I: (Retrieving|Validating|Extracting|Unpacking|Configuring) (\S+)", line)
        if not m:
            if line.startswith("I: "):
                self.progress(self._fraction(), line[3:])
            return
        verb, pkg = m.groups()
        if verb == "Retrieving":
            self.retrieved += 1
        elif verb in ("Unpacking", "Configuring", "Extracting"):
            self.steps += 1
        self.progress(self._fraction(), f"{verb.lower()} {pkg}")

    def _fraction(self) -> float:
        # Downloads take ~30% of the time; unpacking and configuring (~3 steps a package) the rest.
        total = max(self.retrieved, 1)
        return min(0.99, 0.3 * min(1.0, self.retrieved / 130) + 0.7 * self.steps / (3 * total))


def finish_rootfs(rootfs: Path) -> None:
    """Make a fresh debootstrap tree fit to be a capsule's lower layer."""
    # Through rootfs_io like every write into a root filesystem: no link in the tree is followed.
    rootfs_io.write_file(rootfs, "etc/hosts", b"127.0.0.1\tlocalhost\n::1\tlocalhost\n")
    # Per-capsule resolv.conf is written into each capsule's own layer.
    rootfs_io.write_file(rootfs, "etc/resolv.conf", b"")
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        with contextlib.suppress(FileNotFoundError):
            rootfs_io.remove_files_in(rootfs, junk)
    rootfs_io.make_dirs(rootfs, "opt/wrenn/envd")


async def apt_install(rootfs: Path, packages: tuple[str, ...], progress: Progress) -> None:
    """Install Debian packages (and what they depend on) into a finished tree with apt-get run
    in a chroot, from the mirror debootstrap uses; apt's lists and downloads are dropped after.
    debootstrap's own dependency resolution is too simple for large sets (alternatives)."""
    if shutil.which("chroot") is None:
        raise RuntimeError("chroot is not installed")
    mirror = debian_mirror()
    rootfs_io.write_file(rootfs, "etc/apt/sources.list", f"deb {mirror} {SUITE} main\n".encode())
    rootfs_io.write_file(rootfs, "etc/resolv.conf", Path("/etc/resolv.conf").read_bytes())
    proc_dir = rootfs / "proc"
    await _checked(["mount", "-t", "proc", "proc", str(proc_dir)], progress)
    try:
        apt = ["chroot", str(rootfs), "/usr/bin/env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
        progress(0.05, "apt-get update")
        await _checked([*apt, "-q", "update"], progress)
        progress(0.1, f"installing {len(packages)} packages")
        install = [*apt, "-q", "-y", "--no-install-recommends", "install", *packages]
        await _checked(install, progress)
    finally:
        await _checked(["umount", "--lazy", str(proc_dir)], progress)


async def _checked(argv: list[str], progress: Progress) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert proc.stdout is not None
    tail: list[str] = []
    async for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip()
        tail = [*tail[-40:], line]
        if line.startswith(("Unpacking ", "Setting up ")):
            progress(0.5, line)
    if await proc.wait() != 0:
        raise CommandError(argv, proc.returncode, "\n".join(tail))


@dataclass(frozen=True)
class ImageRecipe:
    """What a template built on the host holds: debootstrap's packages (or, with `base`, that
    template's tree plus packages apt installs), the finishing of the tree, and what every
    capsule of it starts (a command, and one that passes once it is up)."""

    packages: tuple[str, ...]
    finish: Callable[[Path], None]
    base: str | None = None
    start_cmd: str | None = None
    healthcheck: str | None = None
    start_timeout_sec: float = 0.0


MINIMAL = ImageRecipe(packages=PACKAGES, finish=finish_rootfs)
