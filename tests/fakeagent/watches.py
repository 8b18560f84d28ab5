"""Directory watches of a fake capsule's files: each change the file tree makes is offered to the
watches that cover it, as the FsEvent the real agent sends (names relative to the watched
directory; the directory's own removal ends the watch). A watch holds at most MAX_QUEUED events:
beyond that they are dropped and FS_EVENT_TYPE_OVERFLOW is sent once, as envd reports a kernel
queue overflow."""

from __future__ import annotations

import asyncio
import posixpath

from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

MAX_QUEUED = 1024

OPS = {
    "create": pb.FS_EVENT_TYPE_CREATE,
    "write": pb.FS_EVENT_TYPE_WRITE,
    "remove": pb.FS_EVENT_TYPE_REMOVE,
    "rename": pb.FS_EVENT_TYPE_RENAME,
    "chmod": pb.FS_EVENT_TYPE_CHMOD,
}


class Watch:
    def __init__(self, root: str, recursive: bool) -> None:
        self.root = root
        self.recursive = recursive
        self.queue: asyncio.Queue[pb.FsEvent | None] = asyncio.Queue()
        self.overflowed = False

    def offer(self, op: str, path: str) -> None:
        if path == self.root:
            if op in ("remove", "rename"):
                self._put(pb.FsEvent(type=OPS[op]))
                self.queue.put_nowait(None)  # the watched directory is gone: the stream ends
            return
        prefix = self.root.rstrip("/") + "/"
        if not path.startswith(prefix):
            return
        name = path[len(prefix) :]
        if "/" in name and not self.recursive:
            return
        self._put(pb.FsEvent(type=OPS[op], name=name))

    def _put(self, event: pb.FsEvent) -> None:
        if self.queue.qsize() >= MAX_QUEUED:
            if not self.overflowed:
                self.overflowed = True
                self.queue.put_nowait(pb.FsEvent(type=pb.FS_EVENT_TYPE_OVERFLOW))
            return
        self.overflowed = False
        self.queue.put_nowait(event)


class Watches:
    def __init__(self) -> None:
        self.active: list[Watch] = []

    def notify(self, op: str, path: str) -> None:
        for watch in self.active:
            watch.offer(op, posixpath.normpath(path))

    def add(self, root: str, recursive: bool) -> Watch:
        watch = Watch(root, recursive)
        self.active.append(watch)
        return watch

    def remove(self, watch: Watch) -> None:
        if watch in self.active:
            self.active.remove(watch)
