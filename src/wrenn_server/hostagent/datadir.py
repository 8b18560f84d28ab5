"""The agent's directories are root's alone.

Template trees and capsule disks hold whatever capsule code made, setuid-root programs
included; paused capsules' memory images and capsule records hold secrets. Other users of the
host must not reach any of it: the data dir, its templates and capsules, every template's and
capsule's own directory, and the run dir are 0700, the agent's files in them 0600. New ones are
made that way; `secure` also tightens what an older version left (0755 directories, 0644 files).
Nothing inside a root filesystem is changed: its modes are the capsule's business.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..private import private_dir, private_file
from .config import AgentSettings

# The agent's own files in a template's or a capsule's directory.
_FILES = (
    "template.json",
    "disk.img",
    "meta.json",
    "meta.json.tmp",
    "config.json",
    "runsc.log",
)
_MEMORY_IMAGES = ("checkpoint", "checkpoint.new")


def secure(settings: AgentSettings) -> None:
    for d in (
        settings.data_dir,
        settings.templates_dir,
        settings.capsules_dir,
        settings.run_dir.parent,
        settings.run_dir,
    ):
        private_dir(d)
    # Secrets, the database and its WAL, the agent's socket, logs (`wrenn up` keeps the control
    # plane's files here too).
    for name in os.listdir(settings.data_dir):
        path = settings.data_dir / name
        if path.is_symlink():
            continue
        if path.is_dir():
            private_dir(path)
        else:
            private_file(path)
    for parent in (settings.templates_dir, settings.capsules_dir):
        for name in os.listdir(parent):
            _secure_entry(parent / name)


def _secure_entry(d: Path) -> None:
    """One template's or capsule's directory (made by the agent, like everything directly in
    it; only its rootfs is capsule content)."""
    if not stat.S_ISDIR(os.lstat(d).st_mode):
        return
    private_dir(d)
    for name in _FILES:
        private_file(d / name)
    for name in _MEMORY_IMAGES:
        image = d / name
        if image.is_dir() and not image.is_symlink():
            private_dir(image)
            for f in image.iterdir():
                private_file(f)
