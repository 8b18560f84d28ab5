"""Files and directories only their owner may use.

The data dirs hold what other users of the machine must never reach: template trees and capsule
disks (with whatever setuid programs and device nodes capsule code made), memory images of
paused capsules, the database and secrets. Directories are 0700 and files 0600, set when they
are made and tightened again at start for data dirs made by older versions.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Make `path` and leave it 0700, if this process owns it; missing parents are made 0700
    too. A link is followed: an operator may point a data dir elsewhere."""
    missing = []
    parent = path
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=DIR_MODE)
    _tighten(path, DIR_MODE, follow=True)
    return path


def private_file(path: Path) -> None:
    """Make an existing file 0600 (if this process owns it; a link is left alone); a missing
    one is no error."""
    with contextlib.suppress(FileNotFoundError):
        _tighten(path, FILE_MODE, follow=False)


def _tighten(path: Path, mode: int, *, follow: bool) -> None:
    st = os.stat(path, follow_symlinks=follow)
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid():
        return
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


def open_private(path: Path, flags: int) -> int:
    """os.open with O_CREAT, the file 0600 whether it is new or not (if this process owns it)."""
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        st = os.fstat(fd)
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` (0600), replacing it whole."""
    tmp = path.with_name(f".{path.name}.tmp")
    with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_TRUNC), "wb") as f:
        f.write(data)
    tmp.replace(path)
