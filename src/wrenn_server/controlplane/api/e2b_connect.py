"""The Connect applications of E2B's envd services (`/process.Process/*`,
`/filesystem.Filesystem/*`): connectrpc's ASGI server over the generated protobuf messages with
its google.protobuf codecs (JSON, which E2B's SDKs send, and binary), one per request around
that request's service (services/e2b_envd). Written out here as connectrpc's code generator
would: it generates for another protobuf runtime."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectrpc.compat import google_protobuf_codecs
from connectrpc.method import IdempotencyLevel, MethodInfo
from connectrpc.server import ConnectASGIApplication, Endpoint

from ...proto.e2b.filesystem import filesystem_pb2 as fs
from ...proto.e2b.process import process_pb2 as proc
from ..services.e2b_envd.filesystem import FilesystemService
from ..services.e2b_envd.process import ProcessService

# A request message's limit (a SendInput's data; files go over /files, not Connect).
READ_MAX_BYTES = 8 * 1024 * 1024
PROCESS_PREFIX = "/process.Process/"
FILESYSTEM_PREFIX = "/filesystem.Filesystem/"


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


def _process_endpoints(svc: ProcessService) -> Mapping[str, Any]:
    def m(name: str, request: type[Any], response: type[Any]) -> MethodInfo[Any, Any]:
        return _method("process.Process", name, request, response)

    p = PROCESS_PREFIX
    return {
        p + "List": Endpoint.unary(m("List", proc.ListRequest, proc.ListResponse), svc.list),
        p + "Connect": Endpoint.server_stream(
            m("Connect", proc.ConnectRequest, proc.ConnectResponse), svc.connect
        ),
        p + "Start": Endpoint.server_stream(
            m("Start", proc.StartRequest, proc.StartResponse), svc.start
        ),
        p + "Update": Endpoint.unary(
            m("Update", proc.UpdateRequest, proc.UpdateResponse), svc.update
        ),
        p + "StreamInput": Endpoint.client_stream(
            m("StreamInput", proc.StreamInputRequest, proc.StreamInputResponse), svc.stream_input
        ),
        p + "SendInput": Endpoint.unary(
            m("SendInput", proc.SendInputRequest, proc.SendInputResponse), svc.send_input
        ),
        p + "SendSignal": Endpoint.unary(
            m("SendSignal", proc.SendSignalRequest, proc.SendSignalResponse), svc.send_signal
        ),
        p + "CloseStdin": Endpoint.unary(
            m("CloseStdin", proc.CloseStdinRequest, proc.CloseStdinResponse), svc.close_stdin
        ),
    }


def _filesystem_endpoints(svc: FilesystemService) -> Mapping[str, Any]:
    def m(name: str, request: type[Any], response: type[Any]) -> MethodInfo[Any, Any]:
        return _method("filesystem.Filesystem", name, request, response)

    p = FILESYSTEM_PREFIX
    return {
        p + "Stat": Endpoint.unary(m("Stat", fs.StatRequest, fs.StatResponse), svc.stat),
        p + "MakeDir": Endpoint.unary(
            m("MakeDir", fs.MakeDirRequest, fs.MakeDirResponse), svc.make_dir
        ),
        p + "Move": Endpoint.unary(m("Move", fs.MoveRequest, fs.MoveResponse), svc.move),
        p + "ListDir": Endpoint.unary(
            m("ListDir", fs.ListDirRequest, fs.ListDirResponse), svc.list_dir
        ),
        p + "Remove": Endpoint.unary(m("Remove", fs.RemoveRequest, fs.RemoveResponse), svc.remove),
        p + "WatchDir": Endpoint.server_stream(
            m("WatchDir", fs.WatchDirRequest, fs.WatchDirResponse), svc.watch_dir
        ),
        p + "CreateWatcher": Endpoint.unary(
            m("CreateWatcher", fs.CreateWatcherRequest, fs.CreateWatcherResponse),
            svc.create_watcher,
        ),
        p + "GetWatcherEvents": Endpoint.unary(
            m("GetWatcherEvents", fs.GetWatcherEventsRequest, fs.GetWatcherEventsResponse),
            svc.get_watcher_events,
        ),
        p + "RemoveWatcher": Endpoint.unary(
            m("RemoveWatcher", fs.RemoveWatcherRequest, fs.RemoveWatcherResponse),
            svc.remove_watcher,
        ),
    }


class ProcessApp(ConnectASGIApplication[ProcessService]):
    def __init__(self, service: ProcessService) -> None:
        super().__init__(
            service=service,
            endpoints=_process_endpoints,
            codecs=google_protobuf_codecs(),
            read_max_bytes=READ_MAX_BYTES,
        )

    @property
    def path(self) -> str:
        return "/process.Process"


class FilesystemApp(ConnectASGIApplication[FilesystemService]):
    def __init__(self, service: FilesystemService) -> None:
        super().__init__(
            service=service,
            endpoints=_filesystem_endpoints,
            codecs=google_protobuf_codecs(),
            read_max_bytes=READ_MAX_BYTES,
        )

    @property
    def path(self) -> str:
        return "/filesystem.Filesystem"
