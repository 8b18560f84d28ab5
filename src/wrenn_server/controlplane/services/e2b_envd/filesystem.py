"""`filesystem.Filesystem` (E2B's envd filesystem service) over the host agent's file RPCs:
Stat, MakeDir (ALREADY_EXISTS for a directory that is there, as envd answers), Move, ListDir
(every page, to the depth asked), Remove, and watching a directory (watching.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext

from ....proto.e2b.filesystem import filesystem_pb2 as e2b
from ....proto.hostagent.v1 import hostagent_pb2 as pb
from ...errors import BadRequest
from . import watching
from .entries import entry_info
from .errors import as_connect
from .pacing import KEEPALIVE, DeadlinePassed, keepalive_interval, messages, paced
from .target import Envd, Opener, basic_user

# A listing this long is refused rather than held in memory (envd has no limit; a directory
# tree of a million entries would be one message).
MAX_LIST_ENTRIES = 100_000
MAX_DEPTH = 64


class FilesystemService:
    """One request's service: the capsule is found (and the caller checked) on first use."""

    def __init__(self, open_envd: Opener, watchers: watching.Watchers, gone: asyncio.Event) -> None:
        self._open = open_envd
        self._watchers = watchers
        self._gone = gone  # set when the client leaves

    async def _ref(self, path: str, ctx: RequestContext[Any, Any]) -> tuple[Envd, pb.FileRef]:
        if not path:
            raise BadRequest("path is required")
        envd = await self._open()
        user = basic_user(ctx.request_headers.get("authorization"))
        return envd, pb.FileRef(sandbox_id=envd.capsule_id, path=path, user=user)

    async def stat(
        self, request: e2b.StatRequest, ctx: RequestContext[e2b.StatRequest, e2b.StatResponse]
    ) -> e2b.StatResponse:
        with as_connect():
            envd, ref = await self._ref(request.path, ctx)
            entry = await envd.client.stat(ref)
        return e2b.StatResponse(entry=entry_info(entry))

    async def make_dir(
        self,
        request: e2b.MakeDirRequest,
        ctx: RequestContext[e2b.MakeDirRequest, e2b.MakeDirResponse],
    ) -> e2b.MakeDirResponse:
        with as_connect():
            envd, ref = await self._ref(request.path, ctx)
            try:
                existing: pb.FileEntry | None = await envd.client.stat(ref)
            except grpc.aio.AioRpcError:  # not there (or unreadable: MakeDir says what is wrong)
                existing = None
            if existing is not None:
                if existing.type == "dir":
                    raise ConnectError(
                        Code.ALREADY_EXISTS, f"directory '{request.path}' already exists"
                    )
                raise ConnectError(
                    Code.INVALID_ARGUMENT, f"path '{request.path}' exists and is not a directory"
                )
            entry = await envd.client.make_dir(ref)
        return e2b.MakeDirResponse(entry=entry_info(entry))

    async def move(
        self, request: e2b.MoveRequest, ctx: RequestContext[e2b.MoveRequest, e2b.MoveResponse]
    ) -> e2b.MoveResponse:
        with as_connect():
            if not request.source or not request.destination:
                raise BadRequest("source and destination are required")
            envd = await self._open()
            move = pb.MoveRequest(
                sandbox_id=envd.capsule_id,
                source=request.source,
                destination=request.destination,
                user=basic_user(ctx.request_headers.get("authorization")),
            )
            entry = await envd.client.move(move)
        return e2b.MoveResponse(entry=entry_info(entry))

    async def list_dir(
        self,
        request: e2b.ListDirRequest,
        ctx: RequestContext[e2b.ListDirRequest, e2b.ListDirResponse],
    ) -> e2b.ListDirResponse:
        depth = request.depth or 1
        if depth > MAX_DEPTH:
            raise ConnectError(Code.INVALID_ARGUMENT, f"depth must be at most {MAX_DEPTH}")
        entries: list[e2b.EntryInfo] = []
        with as_connect():
            envd, ref = await self._ref(request.path, ctx)
            after = ""
            while True:
                page = await envd.client.list_dir(
                    pb.ListDirRequest(
                        sandbox_id=envd.capsule_id,
                        path=ref.path,
                        user=ref.user,
                        depth=depth,
                        after=after,
                    )
                )
                entries.extend(entry_info(e) for e in page.entries)
                if len(entries) > MAX_LIST_ENTRIES:
                    raise ConnectError(
                        Code.RESOURCE_EXHAUSTED,
                        f"more than {MAX_LIST_ENTRIES} entries: list a smaller depth or directory",
                    )
                if not page.truncated:
                    break
                after = page.next_cursor
        return e2b.ListDirResponse(entries=entries)

    async def remove(
        self, request: e2b.RemoveRequest, ctx: RequestContext[e2b.RemoveRequest, e2b.RemoveResponse]
    ) -> e2b.RemoveResponse:
        with as_connect():
            envd, ref = await self._ref(request.path, ctx)
            await envd.client.remove(ref)
        return e2b.RemoveResponse()

    def watch_dir(
        self,
        request: e2b.WatchDirRequest,
        ctx: RequestContext[e2b.WatchDirRequest, e2b.WatchDirResponse],
    ) -> AsyncIterator[e2b.WatchDirResponse]:
        return self._watch_dir(request, ctx)

    async def _watch_dir(
        self,
        request: e2b.WatchDirRequest,
        ctx: RequestContext[e2b.WatchDirRequest, e2b.WatchDirResponse],
    ) -> AsyncIterator[e2b.WatchDirResponse]:
        with as_connect():
            envd, ref = await self._ref(request.path, ctx)
            call = await watching.open_watch(envd, ref.path, request.recursive, ref.user)
            try:
                yield e2b.WatchDirResponse(start=e2b.WatchDirResponse.StartEvent())
                events = messages(call, pb.FsEvent)
                async for event in paced(
                    events, keepalive_interval(ctx.request_headers), ctx.timeout_ms, self._gone
                ):
                    if event is KEEPALIVE:
                        yield e2b.WatchDirResponse(keepalive=e2b.WatchDirResponse.KeepAlive())
                        continue
                    assert isinstance(event, pb.FsEvent)
                    converted = await watching.filesystem_event(
                        envd, ref.path, event, request.include_entry, ref.user
                    )
                    yield e2b.WatchDirResponse(filesystem=converted)
            except DeadlinePassed:
                raise ConnectError(Code.DEADLINE_EXCEEDED, "the watch's timeout passed") from None
            finally:
                call.cancel()

    async def create_watcher(
        self,
        request: e2b.CreateWatcherRequest,
        ctx: RequestContext[e2b.CreateWatcherRequest, e2b.CreateWatcherResponse],
    ) -> e2b.CreateWatcherResponse:
        with as_connect():
            envd, ref = await self._ref(request.path, ctx)
            watcher_id = await self._watchers.create(
                envd, ref.path, request.recursive, request.include_entry, ref.user
            )
        return e2b.CreateWatcherResponse(watcher_id=watcher_id)

    async def get_watcher_events(
        self,
        request: e2b.GetWatcherEventsRequest,
        ctx: RequestContext[e2b.GetWatcherEventsRequest, e2b.GetWatcherEventsResponse],
    ) -> e2b.GetWatcherEventsResponse:
        with as_connect():
            envd = await self._open()
        return e2b.GetWatcherEventsResponse(events=self._watchers.fetch(envd, request.watcher_id))

    async def remove_watcher(
        self,
        request: e2b.RemoveWatcherRequest,
        ctx: RequestContext[e2b.RemoveWatcherRequest, e2b.RemoveWatcherResponse],
    ) -> e2b.RemoveWatcherResponse:
        with as_connect():
            envd = await self._open()
        self._watchers.remove(envd, request.watcher_id)
        return e2b.RemoveWatcherResponse()
