"""The Connect applications of E2B's envd services (`/process.Process/*`,
`/filesystem.Filesystem/*`): connectrpc's ASGI server over the generated protobuf messages with
its google.protobuf codecs (JSON, which E2B's SDKs send, and binary), each built once per
process and calling the service of the request it serves (services/e2b_envd; building one per
request cost a quarter of a millisecond of CPU per command). Written out here as connectrpc's
code generator would: it generates for another protobuf runtime."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, TypeVar

from connectrpc.compat import google_protobuf_codecs
from connectrpc.method import IdempotencyLevel, MethodInfo
from connectrpc.server import ConnectASGIApplication, Endpoint
from starlette.types import Receive, Scope, Send

from ...proto.e2b.filesystem import filesystem_pb2 as fs
from ...proto.e2b.process import process_pb2 as proc
from ..services.e2b_envd.filesystem import FilesystemService
from ..services.e2b_envd.process import ProcessService

# A request message's limit (a SendInput's data; files go over /files, not Connect).
READ_MAX_BYTES = 8 * 1024 * 1024
PROCESS_PREFIX = "/process.Process/"
FILESYSTEM_PREFIX = "/filesystem.Filesystem/"

S = TypeVar("S")
# The service of the request being served (set by `serve_process` / `serve_filesystem` in the
# request's own task, so concurrent requests never see each other's).
_PROCESS: ContextVar[ProcessService] = ContextVar("e2b_process_service")
_FILESYSTEM: ContextVar[FilesystemService] = ContextVar("e2b_filesystem_service")


def _current(service: ContextVar[S], name: str) -> Callable[[Any, Any], Any]:
    """An endpoint's function: the method `name` of the request's service."""

    def call(request: Any, ctx: Any) -> Any:
        return getattr(service.get(), name)(request, ctx)

    return call


def _method(
    service: str, name: str, request: type[Any], response: type[Any]
) -> MethodInfo[Any, Any]:
    return MethodInfo(
        name=name,
        service_name=service,
        input=request,
        output=response,
        idempotency_level=IdempotencyLevel.UNKNOWN,
    )


def _process_endpoints(_: object) -> Mapping[str, Any]:
    def f(name: str) -> Callable[[Any, Any], Any]:
        return _current(_PROCESS, name)

    def m(name: str, request: type[Any], response: type[Any]) -> MethodInfo[Any, Any]:
        return _method("process.Process", name, request, response)

    p = PROCESS_PREFIX
    return {
        p + "List": Endpoint.unary(m("List", proc.ListRequest, proc.ListResponse), f("list")),
        p + "Connect": Endpoint.server_stream(
            m("Connect", proc.ConnectRequest, proc.ConnectResponse), f("connect")
        ),
        p + "Start": Endpoint.server_stream(
            m("Start", proc.StartRequest, proc.StartResponse), f("start")
        ),
        p + "Update": Endpoint.unary(
            m("Update", proc.UpdateRequest, proc.UpdateResponse), f("update")
        ),
        p + "StreamInput": Endpoint.client_stream(
            m("StreamInput", proc.StreamInputRequest, proc.StreamInputResponse), f("stream_input")
        ),
        p + "SendInput": Endpoint.unary(
            m("SendInput", proc.SendInputRequest, proc.SendInputResponse), f("send_input")
        ),
        p + "SendSignal": Endpoint.unary(
            m("SendSignal", proc.SendSignalRequest, proc.SendSignalResponse), f("send_signal")
        ),
        p + "CloseStdin": Endpoint.unary(
            m("CloseStdin", proc.CloseStdinRequest, proc.CloseStdinResponse), f("close_stdin")
        ),
    }


def _filesystem_endpoints(_: object) -> Mapping[str, Any]:
    def f(name: str) -> Callable[[Any, Any], Any]:
        return _current(_FILESYSTEM, name)

    def m(name: str, request: type[Any], response: type[Any]) -> MethodInfo[Any, Any]:
        return _method("filesystem.Filesystem", name, request, response)

    p = FILESYSTEM_PREFIX
    return {
        p + "Stat": Endpoint.unary(m("Stat", fs.StatRequest, fs.StatResponse), f("stat")),
        p + "MakeDir": Endpoint.unary(
            m("MakeDir", fs.MakeDirRequest, fs.MakeDirResponse), f("make_dir")
        ),
        p + "Move": Endpoint.unary(m("Move", fs.MoveRequest, fs.MoveResponse), f("move")),
        p + "ListDir": Endpoint.unary(
            m("ListDir", fs.ListDirRequest, fs.ListDirResponse), f("list_dir")
        ),
        p + "Remove": Endpoint.unary(m("Remove", fs.RemoveRequest, fs.RemoveResponse), f("remove")),
        p + "WatchDir": Endpoint.server_stream(
            m("WatchDir", fs.WatchDirRequest, fs.WatchDirResponse), f("watch_dir")
        ),
        p + "CreateWatcher": Endpoint.unary(
            m("CreateWatcher", fs.CreateWatcherRequest, fs.CreateWatcherResponse),
            f("create_watcher"),
        ),
        p + "GetWatcherEvents": Endpoint.unary(
            m("GetWatcherEvents", fs.GetWatcherEventsRequest, fs.GetWatcherEventsResponse),
            f("get_watcher_events"),
        ),
        p + "RemoveWatcher": Endpoint.unary(
            m("RemoveWatcher", fs.RemoveWatcherRequest, fs.RemoveWatcherResponse),
            f("remove_watcher"),
        ),
    }


class ProcessApp(ConnectASGIApplication[object]):
    def __init__(self) -> None:
        super().__init__(
            service=object(),
            endpoints=_process_endpoints,
            codecs=google_protobuf_codecs(),
            read_max_bytes=READ_MAX_BYTES,
        )

    @property
    def path(self) -> str:
        return "/process.Process"


class FilesystemApp(ConnectASGIApplication[object]):
    def __init__(self) -> None:
        super().__init__(
            service=object(),
            endpoints=_filesystem_endpoints,
            codecs=google_protobuf_codecs(),
            read_max_bytes=READ_MAX_BYTES,
        )

    @property
    def path(self) -> str:
        return "/filesystem.Filesystem"


_PROCESS_APP = ProcessApp()
_FILESYSTEM_APP = FilesystemApp()


async def serve_process(
    service: ProcessService, scope: Scope, receive: Receive, send: Send
) -> None:
    token = _PROCESS.set(service)
    try:
        await _PROCESS_APP(scope, receive, send)
    finally:
        _PROCESS.reset(token)


async def serve_filesystem(
    service: FilesystemService, scope: Scope, receive: Receive, send: Send
) -> None:
    token = _FILESYSTEM.set(service)
    try:
        await _FILESYSTEM_APP(scope, receive, send)
    finally:
        _FILESYSTEM.reset(token)
