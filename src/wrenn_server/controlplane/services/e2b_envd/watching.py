"""Watching a directory for E2B's SDKs, over the agent's WatchDir stream: `WatchDir` streams
the events; the polled form (`CreateWatcher`, `GetWatcherEvents`, `RemoveWatcher`, which the
synchronous SDK uses) keeps each watch's events in this process until they are fetched.

A polled watch lives in the process that created it (a control plane behind a load balancer
needs the sandbox's calls kept on one process, as for any poll), holds at most
`MAX_PENDING_EVENTS` unfetched events (more ends it with an error on the next fetch), and is
dropped when nobody fetched for `IDLE_SEC`."""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import secrets
import time
from dataclasses import dataclass, field

import grpc
from connectrpc.code import Code
from connectrpc.errors import ConnectError

from ....agentproto.client import WatchCall
from ....proto.e2b.filesystem import filesystem_pb2 as e2b
from ....proto.hostagent.v1 import hostagent_pb2 as pb
from ...agents.rpc import translate
from ...errors import NotFound
from .entries import entry_info
from .errors import connect_error
from .pacing import messages
from .target import Envd

MAX_PENDING_EVENTS = 10_000
MAX_WATCHERS = 4096
IDLE_SEC = 300.0
_KEEP_ENTRY = (pb.FS_EVENT_TYPE_CREATE, pb.FS_EVENT_TYPE_WRITE, pb.FS_EVENT_TYPE_CHMOD)
OVERFLOW = "the capsule's event queue overflowed: events were lost"


async def open_watch(envd: Envd, path: str, recursive: bool, user: str) -> WatchCall:
    """The agent's watch, once it is in place (its STARTED event read)."""
    call = envd.client.watch_dir(
        pb.WatchDirRequest(sandbox_id=envd.capsule_id, path=path, recursive=recursive, user=user)
    )
    try:
        first = await call.read()
    except BaseException:
        call.cancel()
        raise
    if not isinstance(first, pb.FsEvent) or first.type != pb.FS_EVENT_TYPE_STARTED:
        call.cancel()
        raise ConnectError(Code.UNAVAILABLE, "the watch ended before it started")
    return call


async def filesystem_event(
    envd: Envd, root: str, event: pb.FsEvent, include_entry: bool, user: str
) -> e2b.FilesystemEvent:
    """E2B's event for one of the agent's (the types share their values); with `include_entry`,
    the entry of a created, written or changed path when it can still be read."""
    if event.type == pb.FS_EVENT_TYPE_OVERFLOW:
        raise ConnectError(Code.DATA_LOSS, OVERFLOW)
    converted = e2b.FilesystemEvent(name=event.name, type=e2b.EventType.ValueType(event.type))
    if include_entry and event.type in _KEEP_ENTRY:
        ref = pb.FileRef(
            sandbox_id=envd.capsule_id, path=posixpath.join(root, event.name), user=user
        )
        with contextlib.suppress(grpc.aio.AioRpcError):
            converted.entry.CopyFrom(entry_info(await envd.client.stat(ref)))
    return converted


@dataclass
class _Watch:
    capsule_id: str
    call: WatchCall
    events: list[e2b.FilesystemEvent] = field(default_factory=list)
    error: ConnectError | None = None
    fetched: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None


class Watchers:
    """The polled watches of this process, by id."""

    def __init__(self) -> None:
        self._watches: dict[str, _Watch] = {}

    async def create(
        self, envd: Envd, path: str, recursive: bool, include_entry: bool, user: str
    ) -> str:
        self._drop_idle()
        if len(self._watches) >= MAX_WATCHERS:
            raise ConnectError(Code.RESOURCE_EXHAUSTED, "too many directory watchers: try later")
        call = await open_watch(envd, path, recursive, user)
        watch_id = secrets.token_hex(16)
        watch = _Watch(envd.capsule_id, call)
        watch.task = asyncio.create_task(self._collect(watch, envd, path, include_entry, user))
        self._watches[watch_id] = watch
        return watch_id

    def fetch(self, envd: Envd, watch_id: str) -> list[e2b.FilesystemEvent]:
        """The events since the last fetch; the error that ended the watch once they are all
        fetched."""
        watch = self._get(envd, watch_id)
        watch.fetched = time.monotonic()
        events, watch.events = watch.events, []
        if not events and watch.error is not None:
            self._close(watch_id)
            raise watch.error
        return events

    def remove(self, envd: Envd, watch_id: str) -> None:
        self._get(envd, watch_id)
        self._close(watch_id)

    def close(self) -> None:
        for watch_id in list(self._watches):
            self._close(watch_id)

    def _get(self, envd: Envd, watch_id: str) -> _Watch:
        self._drop_idle()
        watch = self._watches.get(watch_id)
        # Another capsule's watcher is as unknown as one that never was.
        if watch is None or watch.capsule_id != envd.capsule_id:
            raise connect_error(NotFound(f"watcher '{watch_id}' not found"))
        return watch

    def _close(self, watch_id: str) -> None:
        watch = self._watches.pop(watch_id, None)
        if watch is not None:
            watch.call.cancel()
            if watch.task is not None:
                watch.task.cancel()

    def _drop_idle(self) -> None:
        now = time.monotonic()
        for watch_id, watch in list(self._watches.items()):
            if now - watch.fetched > IDLE_SEC:
                self._close(watch_id)

    async def _collect(
        self, watch: _Watch, envd: Envd, root: str, include_entry: bool, user: str
    ) -> None:
        try:
            async for event in messages(watch.call, pb.FsEvent):
                if len(watch.events) >= MAX_PENDING_EVENTS:
                    raise ConnectError(Code.RESOURCE_EXHAUSTED, "too many unfetched events")
                watch.events.append(await filesystem_event(envd, root, event, include_entry, user))
            watch.error = ConnectError(Code.NOT_FOUND, "the watched directory is gone")
        except ConnectError as e:
            watch.error = e
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                watch.error = connect_error(translate(e))
