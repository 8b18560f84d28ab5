"""A capsule's filesystem, in memory: directories and regular files with the envd semantics the
agent passes on (`mkdir -p`, parents made on write and move, recursive remove, listings in path
order past a cursor) and its errors (missing: NOT_FOUND, a directory where a file is meant:
INVALID_ARGUMENT, a file where a directory is meant: ALREADY_EXISTS)."""

from __future__ import annotations

import copy
import posixpath
import stat
import time
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp

from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from .errors import denied, exists, invalid, not_found
from .watches import Watches

FILE = "file"
DIR = "dir"
DEFAULT_FILE_MODE = 0o644
DIR_MODE = 0o755
# The base template's default user (its home is in the skeleton, its own).
DEFAULT_USER = "wrenn-user"
# The directories every capsule of the base template starts with.
SKELETON = ("/", "/etc", "/home", "/home/user", f"/home/{DEFAULT_USER}", "/root", "/tmp", "/usr",
            "/usr/bin", "/var")  # fmt: skip


@dataclass
class Node:
    kind: str
    mode: int
    owner: str
    data: bytes = b""
    modified_at: float = field(default_factory=time.time)


def home_of(user: str) -> str:
    return "/root" if user in ("", "root") else f"/home/{user}"


def timestamp(epoch: float) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(int(epoch * 1e9))
    return t


class FileTree:
    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {path: Node(DIR, DIR_MODE, "root") for path in SKELETON}
        self.nodes[f"/home/{DEFAULT_USER}"].owner = DEFAULT_USER
        self.nodes["/etc/hostname"] = Node(FILE, DEFAULT_FILE_MODE, "root", b"capsule\n")
        self.watches = Watches()

    def copy(self) -> FileTree:
        """An independent copy (a snapshot's or an image's files)."""
        tree = FileTree()
        tree.nodes = copy.deepcopy(self.nodes)
        return tree

    # -- lookup ------------------------------------------------------------------------------

    @staticmethod
    def resolve(path: str, user: str = "") -> str:
        """Absolute and normalised; a relative path starts at the user's home (as in envd)."""
        if not path:
            raise invalid("path is required")
        if "\x00" in path:
            raise invalid("path contains a NUL byte")
        if not path.startswith("/"):
            path = posixpath.join(home_of(user), path)
        return "/" + posixpath.normpath(path).lstrip("/")

    def node(self, path: str) -> Node:
        try:
            return self.nodes[path]
        except KeyError:
            raise not_found(f"no such file or directory: {path}") from None

    def is_dir(self, path: str) -> bool:
        node = self.nodes.get(path)
        return node is not None and node.kind == DIR

    def entry(self, path: str) -> pb.FileEntry:
        node = self.node(path)
        kind = stat.S_IFDIR if node.kind == DIR else stat.S_IFREG
        return pb.FileEntry(
            name=posixpath.basename(path) or "/",
            path=path,
            type=node.kind,
            size=len(node.data) if node.kind == FILE else 4096,
            mode=node.mode,
            permissions=stat.filemode(kind | node.mode),
            owner=node.owner,
            group=node.owner,
            modified_at=timestamp(node.modified_at),
        )

    def check_listable(self, path: str, user: str) -> None:
        """A directory `user` may list (as envd checks before a watch): root may list any; others
        by the owner's or the others' read and search bits (the fake has no groups)."""
        node = self.node(path)
        if node.kind != DIR:
            raise invalid(f"not a directory: {path}")
        bits = node.mode >> 6 if node.owner == user else node.mode
        if user != "root" and bits & 0o5 != 0o5:
            raise denied(f"permission denied: {path}")

    # -- operations --------------------------------------------------------------------------

    def read(self, path: str) -> bytes:
        node = self.node(path)
        if node.kind == DIR:
            raise invalid(f"is a directory: {path}")
        return node.data

    def write(self, path: str, data: bytes, user: str = "root", mode: int = 0) -> pb.FileEntry:
        if self.is_dir(path):
            raise invalid(f"is a directory: {path}")
        self.make_dirs(posixpath.dirname(path), user)
        old = self.nodes.get(path)
        self.nodes[path] = Node(FILE, mode or (old.mode if old else DEFAULT_FILE_MODE), user, data)
        self.watches.notify("write" if old else "create", path)
        return self.entry(path)

    def append(self, path: str, data: bytes, user: str = "root") -> None:
        old = self.nodes.get(path)
        self.write(path, (old.data if old and old.kind == FILE else b"") + data, user)

    def make_dirs(self, path: str, user: str = "root") -> pb.FileEntry:
        missing: list[str] = []
        current = path
        while not self.is_dir(current):
            if current in self.nodes:
                raise exists(f"exists and is not a directory: {current}")
            missing.append(current)
            current = posixpath.dirname(current)
        for directory in reversed(missing):
            self.nodes[directory] = Node(DIR, DIR_MODE, user)
            self.watches.notify("create", directory)
        return self.entry(path)

    def children(self, path: str, depth: int) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return sorted(
            p
            for p in self.nodes
            if p != path and p.startswith(prefix) and p[len(prefix) :].count("/") < depth
        )

    def list(self, path: str, depth: int, limit: int, after: str) -> pb.ListDirResponse:
        if not self.is_dir(path):
            self.node(path)  # missing: NOT_FOUND
            raise invalid(f"not a directory: {path}")
        found = [p for p in self.children(path, depth) if p > after]
        truncated = len(found) > limit
        del found[limit:]
        return pb.ListDirResponse(
            entries=[self.entry(p) for p in found],
            truncated=truncated,
            next_cursor=found[-1] if truncated else "",
        )

    def move(self, source: str, destination: str, user: str = "root") -> pb.FileEntry:
        self.node(source)
        self.make_dirs(posixpath.dirname(destination), user)
        moved = [source, *self.children(source, depth=1 << 30)]
        for old in moved:
            self.nodes[destination + old[len(source) :]] = self.nodes.pop(old)
        self.watches.notify("rename", source)
        self.watches.notify("create", destination)
        return self.entry(destination)

    def remove(self, path: str) -> None:
        if path == "/":
            raise invalid("refusing to remove /")
        self.node(path)
        for gone in reversed([path, *self.children(path, depth=1 << 30)]):
            del self.nodes[gone]
            self.watches.notify("remove", gone)
