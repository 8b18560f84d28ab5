"""Templates on disk, under <data dir>/templates/<name>/.

- image template: `rootfs/` (a plain directory tree) + `template.json`. Capsules use the directory
  as their read-only overlay lower layer, so any number of capsules share one copy.
- snapshot template: `checkpoint/` (runsc memory image) + `disk.img` (the capsule's sparse upper
  layer) + `template.json` naming the image template underneath. Capsules start by restoring it.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..private import private_dir, write_private
from . import base_image, errors
from .storage import disk_usage

# Matched whole (fullmatch): `$` would let a trailing newline through.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
IMAGE = "image"
SNAPSHOT = "snapshot"
# template.json of snapshot templates made before envd tokens were derived held the token.
LEGACY_TOKEN = "envd_token"


@dataclass
class Template:
    name: str
    type: str
    created_at: float
    size_bytes: int = 0
    base: str | None = None
    # Snapshot templates only: what the checkpointed sandbox was started with. The capsule
    # (handle) it was taken from names the token its envd answers to (envd_keys.py); the
    # token itself is never written here.
    source_capsule: str | None = None
    vcpus: int = 0
    memory_mb: int = 0
    disk_size_mb: int = 0
    # Image templates built with a start command: every capsule made from it runs the command
    # and waits (at most start_timeout_sec) for the healthcheck to pass before create returns.
    start_cmd: str | None = None
    healthcheck: str | None = None
    start_timeout_sec: float = 0.0
    # Image templates: the user a capsule runs things as when neither the caller nor the control
    # plane names one ("": envd's own, root). The base template's is wrenn-user.
    default_user: str = ""
    # Image templates built on the host: the version of the recipe that built them
    # (base_image.ImageRecipe.version). template.json from before the field: see `get`.
    recipe_version: int = 1


def validate_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise errors.InvalidArgument(
            "template name must be 1-128 characters of letters, digits, '.', '_' or '-'"
        )
    return name


class TemplateStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._build_lock = asyncio.Lock()

    def dir(self, name: str) -> Path:
        return self.root / validate_name(name)

    def get(self, name: str) -> Template:
        data = self._metadata(name)
        data.pop(LEGACY_TOKEN, None)
        if "recipe_version" not in data:
            # Written before recipes had versions: the base template got its default user in
            # version 2, so one naming a default user is at least that.
            data["recipe_version"] = 2 if data.get("default_user") else 1
        return Template(**data)

    def _metadata(self, name: str) -> dict[str, Any]:
        path = self.dir(name) / "template.json"
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            raise errors.NotFound(f"template {name!r} not found") from None
        return data

    def start_settings(self, name: str) -> dict[str, Any]:
        """An image template's start command, healthcheck, start timeout and default user,
        which a template flattened from one of its capsules keeps (nothing when the template is
        gone)."""
        try:
            t = self.get(name)
        except errors.NotFound:
            return {}
        return {
            "start_cmd": t.start_cmd,
            "healthcheck": t.healthcheck,
            "start_timeout_sec": t.start_timeout_sec,
            "default_user": t.default_user,
        }

    def legacy_envd_token(self, name: str) -> str | None:
        """The envd token a snapshot template made before tokens were derived stored in its
        template.json (the only way to reach its checkpointed envd)."""
        token = self._metadata(name).get(LEGACY_TOKEN)
        return token if isinstance(token, str) and token else None

    def stale(self, name: str, recipe: base_image.ImageRecipe) -> bool:
        """Whether the image template was built by an older version of the recipe."""
        return self.exists(name) and self.get(name).recipe_version < recipe.version

    def exists(self, name: str) -> bool:
        return (self.dir(name) / "template.json").is_file()

    def all(self) -> list[Template]:
        if not self.root.is_dir():
            return []
        out = []
        for d in sorted(self.root.iterdir()):
            if NAME_RE.fullmatch(d.name) and (d / "template.json").is_file():
                out.append(self.get(d.name))
        return out

    def rootfs(self, name: str) -> Path:
        """The lower layer a capsule of this template mounts."""
        t = self.get(name)
        return self.dir(t.base if t.type == SNAPSHOT and t.base else name) / "rootfs"

    def staging(self, name: str) -> Path:
        """A fresh directory to build a template in; `commit` moves it into place."""
        private_dir(self.root)
        path = self.root / f".staging-{validate_name(name)}-{uuid.uuid4().hex[:8]}"
        path.mkdir(mode=0o700)
        return path

    def commit(self, staging: Path, template: Template, overwrite: bool) -> Template:
        trash = self._swap_in(staging, template, overwrite)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        return template

    async def commit_async(self, staging: Path, template: Template, overwrite: bool) -> Template:
        """`commit` for async callers: the renames at once (nobody sees the template half
        there), the replaced tree removed in a thread, so the event loop keeps serving."""
        trash = self._swap_in(staging, template, overwrite)
        if trash is not None:
            await asyncio.to_thread(shutil.rmtree, trash, ignore_errors=True)
        return template

    def _swap_in(self, staging: Path, template: Template, overwrite: bool) -> Path | None:
        """Move the staged template into place; the replaced one, if any, to a trash path."""
        write_private(staging / "template.json", json.dumps(asdict(template)).encode())
        target = self.dir(template.name)
        trash = None
        if target.exists():
            if not overwrite:
                raise errors.AlreadyExists(f"template {template.name!r} already exists")
            trash = self._trash(template.name)
            target.rename(trash)
        staging.rename(target)
        return trash

    def delete(self, name: str) -> None:
        shutil.rmtree(self.discard(name))

    async def delete_async(self, name: str) -> None:
        """`delete` for async callers: a template's tree can be gigabytes in many files, so
        it is removed in a thread; the rename before it makes it gone at once."""
        await asyncio.to_thread(shutil.rmtree, self.discard(name))

    def discard(self, name: str) -> Path:
        """Take the template out of the store (a rename); its tree, to remove, is returned.
        A crash before the removal leaves a trash directory `sweep` removes."""
        target = self.dir(name)
        if not target.exists():
            raise errors.NotFound(f"template {name!r} not found")
        trash = self._trash(name)
        target.rename(trash)
        return trash

    def _trash(self, name: str) -> Path:
        return self.root / f".trash-{name}-{uuid.uuid4().hex[:8]}"

    def dependents(self, name: str) -> list[str]:
        """Snapshot templates whose lower layer is this image template."""
        return [t.name for t in self.all() if t.type == SNAPSHOT and t.base == name]

    def sweep(self) -> None:
        """Drop half-built and half-deleted templates left by a crash."""
        if self.root.is_dir():
            for d in self.root.iterdir():
                if d.name.startswith((".staging-", ".trash-")):
                    shutil.rmtree(d, ignore_errors=True)

    async def ensure_base(
        self,
        name: str,
        progress: Callable[[float, str], None],
        recipe: base_image.ImageRecipe = base_image.MINIMAL,
        replace_stale: bool = False,
    ) -> Template:
        """Build an image template on the host unless it exists (or, with replace_stale, unless
        it exists and is not stale: a stale one is then replaced by a fresh build, swapped in
        at once). Safe to call concurrently."""
        if recipe.base is not None and not self.exists(recipe.base):
            await self.ensure_base(recipe.base, progress)
        async with self._build_lock:
            if self.exists(name) and not (replace_stale and self.stale(name, recipe)):
                return self.get(name)
            staging = self.staging(name)
            try:
                rootfs = staging / "rootfs"
                if recipe.base is None:
                    first, rest = _phases(progress, 0.6 if recipe.extra_packages else 1.0)
                    await base_image.debootstrap(rootfs, first, recipe.packages)
                    if recipe.extra_packages:
                        await base_image.apt_install(rootfs, recipe.extra_packages, rest)
                else:
                    await _copy_tree(self.dir(recipe.base) / "rootfs", rootfs)
                    await base_image.apt_install(rootfs, recipe.packages, progress)
                # Walks and removals over a whole rootfs: in threads, not the event loop.
                await asyncio.to_thread(recipe.finish, rootfs)
                t = Template(
                    name=name,
                    type=IMAGE,
                    created_at=time.time(),
                    size_bytes=await asyncio.to_thread(disk_usage, rootfs),
                    start_cmd=recipe.start_cmd,
                    healthcheck=recipe.healthcheck,
                    start_timeout_sec=recipe.start_timeout_sec,
                    default_user=recipe.default_user,
                    recipe_version=recipe.version,
                )
                return await self.commit_async(staging, t, overwrite=replace_stale)
            except BaseException:
                await asyncio.to_thread(shutil.rmtree, staging, ignore_errors=True)
                raise


def _phases(
    progress: Callable[[float, str], None], split: float
) -> tuple[Callable[[float, str], None], Callable[[float, str], None]]:
    """One progress bar over two steps: the first fills [0, split], the second the rest."""

    def first(fraction: float, step: str) -> None:
        progress(fraction * split, step)

    def rest(fraction: float, step: str) -> None:
        progress(split + fraction * (1.0 - split), step)

    return first, rest


async def _copy_tree(src: Path, dst: Path) -> None:
    """cp -a (owners, modes, links, device nodes kept), reflinked where the filesystem can."""
    argv = ["cp", "-a", "--reflink=auto", str(src), str(dst)]
    proc = await asyncio.create_subprocess_exec(*argv, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise errors.Internal(f"copying the base template failed: {err.decode()[-500:]}")
