"""A build's uploaded archive (tar, tar.gz or zip): checked once when it arrives, read by COPY.

Only regular files and directories are kept; links and devices are refused, as is any member
whose path would leave the archive (absolute, or `..` after normalizing). So a COPY can only
ever write files the archive holds, at paths under its destination.
"""

from __future__ import annotations

import posixpath
import stat
import tarfile
import zipfile
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import BadRequest
from .recipe import archive_path

MAX_MEMBERS = 100_000


@dataclass(frozen=True)
class Member:
    path: str  # normalized, relative
    is_dir: bool
    size: int
    mode: int  # permission bits


def _tar_members(path: Path) -> list[Member]:
    out = []
    with tarfile.open(path, "r:*") as tar:
        for info in tar:
            if not (info.isfile() or info.isdir()):
                raise BadRequest(f"archive member {info.name!r} is not a file or directory")
            name = archive_path(info.name)
            if name is None:
                raise BadRequest(f"archive member {info.name!r} leaves the archive")
            out.append(Member(name, info.isdir(), info.size, info.mode & 0o777))
    return out


def _zip_members(path: Path) -> list[Member]:
    out = []
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            kind = stat.S_IFMT(info.external_attr >> 16)
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise BadRequest(f"archive member {info.filename!r} is not a file or directory")
            name = archive_path(info.filename.rstrip("/") or ".")
            if name is None:
                raise BadRequest(f"archive member {info.filename!r} leaves the archive")
            mode = (info.external_attr >> 16) & 0o777 or (0o755 if info.is_dir() else 0o644)
            out.append(Member(name, info.is_dir(), info.file_size, mode))
    return out


def members(path: Path) -> list[Member]:
    """Every member, checked; `BadRequest` for an archive that is unreadable or unsafe."""
    try:
        if zipfile.is_zipfile(path):
            found = _zip_members(path)
        else:
            found = _tar_members(path)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise BadRequest(
            f"not a readable tar, tar.gz or zip archive ({type(e).__name__})"
        ) from None
    if len(found) > MAX_MEMBERS:
        raise BadRequest(f"an archive has at most {MAX_MEMBERS} members")
    return found


def select(found: list[Member], src: str, dst: str) -> list[tuple[Member, str]]:
    """The members a `COPY src dst` copies, each with its destination path. A file source goes
    to `dst` itself; a directory source's contents go under `dst`."""
    if src == ".":
        chosen = [(m, posixpath.join(dst, m.path)) for m in found if m.path != "."]
        return chosen
    exact = [m for m in found if m.path == src and not m.is_dir]
    if exact:
        return [(exact[0], dst)]
    prefix = src + "/"
    chosen = [
        (m, posixpath.join(dst, m.path[len(prefix) :])) for m in found if m.path.startswith(prefix)
    ]
    if not chosen and not any(m.path == src for m in found):
        raise BadRequest(f"COPY source {src!r} is not in the archive")
    return chosen


def iter_files(path: Path, wanted: dict[str, str]) -> Generator[tuple[str, int, IO[bytes]]]:
    """(target, mode, reader) of each file member in `wanted` (member path -> target), in
    archive order, reading the archive once. Each reader is valid until the next item."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = archive_path(info.filename.rstrip("/") or ".")
                if info.is_dir() or name not in wanted:
                    continue
                mode = (info.external_attr >> 16) & 0o777 or 0o644
                with zf.open(info) as f:
                    yield wanted[name], mode, f
        return
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            name = archive_path(member.name)
            if not member.isfile() or name not in wanted:
                continue
            extracted = tar.extractfile(member)
            assert extracted is not None
            with extracted:
                yield wanted[name], member.mode & 0o777, extracted
