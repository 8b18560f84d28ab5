"""Building the base template: a Debian bookworm minbase root filesystem made with debootstrap from
the mirror this machine's apt is configured with, the tools agents reach for installed with apt
from the same mirror, and the default user `wrenn-user` (home, passwordless sudo)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import rootfs_io
from .proc import CommandError

SUITE = "bookworm"
PACKAGES = ("python3", "sudo", "curl", "ca-certificates", "procps", "iproute2")
# Installed with apt after debootstrap (its own resolver is too simple for these);
# build-essential costs ~5 MB over the compilers it needs (docs/performance.md has the sizes).
TOOLS = ("git", "less", "python3-pip", "python3-venv", "build-essential")
# The user commands, files and terminals of a capsule act as unless the caller names another.
DEFAULT_USER = "wrenn-user"
DEFAULT_UID = 1000
LOCALE = "C.UTF-8"  # built into Debian's libc: no locales package needed

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
    for junk in ("var/cache/apt/archives", "var/cache/apt", "var/lib/apt/lists"):
        with contextlib.suppress(FileNotFoundError):
            rootfs_io.remove_files_in(rootfs, junk)
    rootfs_io.make_dirs(rootfs, "opt/wrenn/envd")


def add_default_user(rootfs: Path, name: str = DEFAULT_USER) -> None:
    """The base template's default user: a home from /etc/skel, bash, and passwordless sudo
    (envd's sudo honours the same rule file, see envd/sudo.py). The system's UTF-8 locale too,
    for login shells that read /etc/default/locale."""
    # The home is the owner's: other users of the capsule (nobody, a service's) cannot read it.
    argv = ["chroot", str(rootfs), "useradd", "--create-home", "--shell", "/bin/bash",
            "--uid", str(DEFAULT_UID), "--user-group", "--key", "HOME_MODE=0750", name]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise CommandError(argv, done.returncode, done.stderr[-2000:])
    rootfs_io.make_dirs(rootfs, "etc/sudoers.d")
    rule = f"{name} ALL=(ALL) NOPASSWD:ALL\n".encode()
    rootfs_io.write_file(rootfs, f"etc/sudoers.d/{name}", rule, mode=0o440)
    rootfs_io.write_file(rootfs, "etc/default/locale", f"LANG={LOCALE}\n".encode())


# Translations, manuals and documentation (but each package's copyright notice) are left out
# of the base template, as Debian's container images do: nobody reads them in a capsule and they
# are a sixth of it. dpkg keeps leaving them out of what is installed later.
DPKG_EXCLUDES = b"""path-exclude=/usr/share/locale/*
path-exclude=/usr/share/man/*
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
"""


def slim(rootfs: Path) -> None:
    """Drop what DPKG_EXCLUDES leaves out from a freshly built tree (nothing in it is a
    capsule's yet), and tell dpkg to leave it out from now on."""
    for rel in ("usr/share/locale", "usr/share/man"):
        for child in (rootfs / rel).iterdir() if (rootfs / rel).is_dir() else ():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    doc = rootfs / "usr/share/doc"
    for dirpath, _dirs, files in os.walk(doc, topdown=False):
        for name in files:
            if name != "copyright":
                os.unlink(os.path.join(dirpath, name))
        if dirpath != str(doc) and not os.listdir(dirpath):
            os.rmdir(dirpath)
    rootfs_io.make_dirs(rootfs, "etc/dpkg/dpkg.cfg.d")
    rootfs_io.write_file(rootfs, "etc/dpkg/dpkg.cfg.d/excludes", DPKG_EXCLUDES)


# Debian's /etc/profile runs `id -u` to choose PATH: for a login shell (`bash -l -c`, how E2B's
# SDKs run every command) that is a second process creation, which inside gVisor costs as much as
# the command itself (~30 ms). bash knows its effective uid already ($EUID); other shells still
# ask `id`. Capsules cannot tell the difference: the same PATH either way.
_PROFILE_UID = b'"$(id -u)"'
_PROFILE_UID_QUICK = b'"${EUID:-$(id -u)}"'


def quick_login_profile(rootfs: Path) -> None:
    """Let bash's login start-up skip /etc/profile's `id -u` (a tree without it is left alone)."""
    with rootfs_io.open_dir(rootfs, "etc") as etc:
        try:
            fd = os.open("profile", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=etc)
        except FileNotFoundError:
            return
        with os.fdopen(fd, "rb") as f:
            profile = f.read()
    if _PROFILE_UID in profile:
        rootfs_io.write_file(
            rootfs, "etc/profile", profile.replace(_PROFILE_UID, _PROFILE_UID_QUICK)
        )


def finish_minimal(rootfs: Path) -> None:
    finish_rootfs(rootfs)
    slim(rootfs)
    add_default_user(rootfs)
    quick_login_profile(rootfs)


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
    # Installed with apt over debootstrap's tree (recipes without a base only).
    extra_packages: tuple[str, ...] = ()
    # The user a capsule of it runs things as when the caller names none ("": envd's, root).
    default_user: str = ""
    start_cmd: str | None = None
    healthcheck: str | None = None
    start_timeout_sec: float = 0.0
    # Raised whenever what the recipe builds changes in a way capsules can tell; a template built
    # by a lower version is stale (base_upgrade.py replaces it once nothing uses it).
    version: int = 1


MINIMAL = ImageRecipe(
    packages=PACKAGES,
    extra_packages=TOOLS,
    finish=finish_minimal,
    default_user=DEFAULT_USER,
    # 2: the default user wrenn-user (home, sudo), the slimmed tree, the tools. (The quicker
    # login profile changes nothing a capsule can tell: templates built before keep theirs.)
    version=2,
)
