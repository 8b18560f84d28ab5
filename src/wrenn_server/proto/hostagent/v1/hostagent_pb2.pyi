import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SandboxStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SANDBOX_STATUS_UNSPECIFIED: _ClassVar[SandboxStatus]
    SANDBOX_STATUS_STARTING: _ClassVar[SandboxStatus]
    SANDBOX_STATUS_RUNNING: _ClassVar[SandboxStatus]
    SANDBOX_STATUS_PAUSED: _ClassVar[SandboxStatus]
    SANDBOX_STATUS_DEAD: _ClassVar[SandboxStatus]

class TemplateType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TEMPLATE_TYPE_UNSPECIFIED: _ClassVar[TemplateType]
    TEMPLATE_TYPE_IMAGE: _ClassVar[TemplateType]
    TEMPLATE_TYPE_SNAPSHOT: _ClassVar[TemplateType]
SANDBOX_STATUS_UNSPECIFIED: SandboxStatus
SANDBOX_STATUS_STARTING: SandboxStatus
SANDBOX_STATUS_RUNNING: SandboxStatus
SANDBOX_STATUS_PAUSED: SandboxStatus
SANDBOX_STATUS_DEAD: SandboxStatus
TEMPLATE_TYPE_UNSPECIFIED: TemplateType
TEMPLATE_TYPE_IMAGE: TemplateType
TEMPLATE_TYPE_SNAPSHOT: TemplateType

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SandboxRef(_message.Message):
    __slots__ = ("sandbox_id",)
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    def __init__(self, sandbox_id: _Optional[str] = ...) -> None: ...

class CreateSandboxRequest(_message.Message):
    __slots__ = ("sandbox_id", "template", "vcpus", "memory_mb", "disk_size_mb", "timeout_sec", "default_user", "default_env")
    class DefaultEnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    VCPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    DISK_SIZE_MB_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SEC_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_USER_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_ENV_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    template: str
    vcpus: int
    memory_mb: int
    disk_size_mb: int
    timeout_sec: int
    default_user: str
    default_env: _containers.ScalarMap[str, str]
    def __init__(self, sandbox_id: _Optional[str] = ..., template: _Optional[str] = ..., vcpus: _Optional[int] = ..., memory_mb: _Optional[int] = ..., disk_size_mb: _Optional[int] = ..., timeout_sec: _Optional[int] = ..., default_user: _Optional[str] = ..., default_env: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ResumeSandboxRequest(_message.Message):
    __slots__ = ("sandbox_id", "timeout_sec", "default_user", "default_env")
    class DefaultEnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SEC_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_USER_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_ENV_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    timeout_sec: int
    default_user: str
    default_env: _containers.ScalarMap[str, str]
    def __init__(self, sandbox_id: _Optional[str] = ..., timeout_sec: _Optional[int] = ..., default_user: _Optional[str] = ..., default_env: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Sandbox(_message.Message):
    __slots__ = ("sandbox_id", "status", "template", "vcpus", "memory_mb", "disk_size_mb", "timeout_sec", "created_at", "last_active_at", "auto_paused", "exit_reason")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    VCPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    DISK_SIZE_MB_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SEC_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVE_AT_FIELD_NUMBER: _ClassVar[int]
    AUTO_PAUSED_FIELD_NUMBER: _ClassVar[int]
    EXIT_REASON_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    status: SandboxStatus
    template: str
    vcpus: int
    memory_mb: int
    disk_size_mb: int
    timeout_sec: int
    created_at: _timestamp_pb2.Timestamp
    last_active_at: _timestamp_pb2.Timestamp
    auto_paused: bool
    exit_reason: str
    def __init__(self, sandbox_id: _Optional[str] = ..., status: _Optional[_Union[SandboxStatus, str]] = ..., template: _Optional[str] = ..., vcpus: _Optional[int] = ..., memory_mb: _Optional[int] = ..., disk_size_mb: _Optional[int] = ..., timeout_sec: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_active_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., auto_paused: _Optional[bool] = ..., exit_reason: _Optional[str] = ...) -> None: ...

class ListSandboxesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSandboxesResponse(_message.Message):
    __slots__ = ("sandboxes", "auto_paused_sandbox_ids", "resources")
    SANDBOXES_FIELD_NUMBER: _ClassVar[int]
    AUTO_PAUSED_SANDBOX_IDS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    sandboxes: _containers.RepeatedCompositeFieldContainer[Sandbox]
    auto_paused_sandbox_ids: _containers.RepeatedScalarFieldContainer[str]
    resources: HostResources
    def __init__(self, sandboxes: _Optional[_Iterable[_Union[Sandbox, _Mapping]]] = ..., auto_paused_sandbox_ids: _Optional[_Iterable[str]] = ..., resources: _Optional[_Union[HostResources, _Mapping]] = ...) -> None: ...

class HostResources(_message.Message):
    __slots__ = ("cpu_count", "memory_mb", "disk_free_mb")
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    DISK_FREE_MB_FIELD_NUMBER: _ClassVar[int]
    cpu_count: int
    memory_mb: int
    disk_free_mb: int
    def __init__(self, cpu_count: _Optional[int] = ..., memory_mb: _Optional[int] = ..., disk_free_mb: _Optional[int] = ...) -> None: ...

class PauseAllResponse(_message.Message):
    __slots__ = ("paused_sandbox_ids", "failed_sandbox_ids")
    PAUSED_SANDBOX_IDS_FIELD_NUMBER: _ClassVar[int]
    FAILED_SANDBOX_IDS_FIELD_NUMBER: _ClassVar[int]
    paused_sandbox_ids: _containers.RepeatedScalarFieldContainer[str]
    failed_sandbox_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, paused_sandbox_ids: _Optional[_Iterable[str]] = ..., failed_sandbox_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class MetricPoint(_message.Message):
    __slots__ = ("timestamp_ms", "cpu_pct", "mem_bytes", "disk_bytes")
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    CPU_PCT_FIELD_NUMBER: _ClassVar[int]
    MEM_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    timestamp_ms: int
    cpu_pct: float
    mem_bytes: int
    disk_bytes: int
    def __init__(self, timestamp_ms: _Optional[int] = ..., cpu_pct: _Optional[float] = ..., mem_bytes: _Optional[int] = ..., disk_bytes: _Optional[int] = ...) -> None: ...

class MetricTier(_message.Message):
    __slots__ = ("name", "points")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    points: _containers.RepeatedCompositeFieldContainer[MetricPoint]
    def __init__(self, name: _Optional[str] = ..., points: _Optional[_Iterable[_Union[MetricPoint, _Mapping]]] = ...) -> None: ...

class SandboxMetrics(_message.Message):
    __slots__ = ("tiers",)
    TIERS_FIELD_NUMBER: _ClassVar[int]
    tiers: _containers.RepeatedCompositeFieldContainer[MetricTier]
    def __init__(self, tiers: _Optional[_Iterable[_Union[MetricTier, _Mapping]]] = ...) -> None: ...

class PtySize(_message.Message):
    __slots__ = ("cols", "rows")
    COLS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    cols: int
    rows: int
    def __init__(self, cols: _Optional[int] = ..., rows: _Optional[int] = ...) -> None: ...

class ExecRequest(_message.Message):
    __slots__ = ("sandbox_id", "cmd", "argv", "env", "cwd", "user", "timeout_sec", "stdin", "pty", "tag", "max_output_bytes", "keep_tail")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    CMD_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SEC_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    PTY_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    KEEP_TAIL_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    cmd: str
    argv: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    cwd: str
    user: str
    timeout_sec: float
    stdin: bool
    pty: PtySize
    tag: str
    max_output_bytes: int
    keep_tail: bool
    def __init__(self, sandbox_id: _Optional[str] = ..., cmd: _Optional[str] = ..., argv: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., cwd: _Optional[str] = ..., user: _Optional[str] = ..., timeout_sec: _Optional[float] = ..., stdin: _Optional[bool] = ..., pty: _Optional[_Union[PtySize, _Mapping]] = ..., tag: _Optional[str] = ..., max_output_bytes: _Optional[int] = ..., keep_tail: _Optional[bool] = ...) -> None: ...

class ExecResponse(_message.Message):
    __slots__ = ("pid", "exit_code", "stdout", "stderr", "signal", "timed_out", "stdout_truncated", "stderr_truncated")
    PID_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    STDOUT_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    STDERR_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    pid: int
    exit_code: int
    stdout: bytes
    stderr: bytes
    signal: int
    timed_out: bool
    stdout_truncated: bool
    stderr_truncated: bool
    def __init__(self, pid: _Optional[int] = ..., exit_code: _Optional[int] = ..., stdout: _Optional[bytes] = ..., stderr: _Optional[bytes] = ..., signal: _Optional[int] = ..., timed_out: _Optional[bool] = ..., stdout_truncated: _Optional[bool] = ..., stderr_truncated: _Optional[bool] = ...) -> None: ...

class ProcessEvent(_message.Message):
    __slots__ = ("start", "stdout", "stderr", "exit")
    class Start(_message.Message):
        __slots__ = ("pid",)
        PID_FIELD_NUMBER: _ClassVar[int]
        pid: int
        def __init__(self, pid: _Optional[int] = ...) -> None: ...
    class Exit(_message.Message):
        __slots__ = ("exit_code", "signal")
        EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
        SIGNAL_FIELD_NUMBER: _ClassVar[int]
        exit_code: int
        signal: int
        def __init__(self, exit_code: _Optional[int] = ..., signal: _Optional[int] = ...) -> None: ...
    START_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    EXIT_FIELD_NUMBER: _ClassVar[int]
    start: ProcessEvent.Start
    stdout: bytes
    stderr: bytes
    exit: ProcessEvent.Exit
    def __init__(self, start: _Optional[_Union[ProcessEvent.Start, _Mapping]] = ..., stdout: _Optional[bytes] = ..., stderr: _Optional[bytes] = ..., exit: _Optional[_Union[ProcessEvent.Exit, _Mapping]] = ...) -> None: ...

class ProcessRef(_message.Message):
    __slots__ = ("sandbox_id", "pid")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    pid: int
    def __init__(self, sandbox_id: _Optional[str] = ..., pid: _Optional[int] = ...) -> None: ...

class ProcessInfo(_message.Message):
    __slots__ = ("pid", "cmd", "args", "cwd", "user", "tag", "pty", "running", "exit_code", "started_at")
    PID_FIELD_NUMBER: _ClassVar[int]
    CMD_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    PTY_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    pid: int
    cmd: str
    args: _containers.RepeatedScalarFieldContainer[str]
    cwd: str
    user: str
    tag: str
    pty: bool
    running: bool
    exit_code: int
    started_at: _timestamp_pb2.Timestamp
    def __init__(self, pid: _Optional[int] = ..., cmd: _Optional[str] = ..., args: _Optional[_Iterable[str]] = ..., cwd: _Optional[str] = ..., user: _Optional[str] = ..., tag: _Optional[str] = ..., pty: _Optional[bool] = ..., running: _Optional[bool] = ..., exit_code: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListProcessesResponse(_message.Message):
    __slots__ = ("processes",)
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    processes: _containers.RepeatedCompositeFieldContainer[ProcessInfo]
    def __init__(self, processes: _Optional[_Iterable[_Union[ProcessInfo, _Mapping]]] = ...) -> None: ...

class SendStdinRequest(_message.Message):
    __slots__ = ("sandbox_id", "pid", "data")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    pid: int
    data: bytes
    def __init__(self, sandbox_id: _Optional[str] = ..., pid: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class SignalProcessRequest(_message.Message):
    __slots__ = ("sandbox_id", "pid", "signal")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    pid: int
    signal: int
    def __init__(self, sandbox_id: _Optional[str] = ..., pid: _Optional[int] = ..., signal: _Optional[int] = ...) -> None: ...

class ResizePtyRequest(_message.Message):
    __slots__ = ("sandbox_id", "pid", "size")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    pid: int
    size: PtySize
    def __init__(self, sandbox_id: _Optional[str] = ..., pid: _Optional[int] = ..., size: _Optional[_Union[PtySize, _Mapping]] = ...) -> None: ...

class FileRef(_message.Message):
    __slots__ = ("sandbox_id", "path", "user")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    path: str
    user: str
    def __init__(self, sandbox_id: _Optional[str] = ..., path: _Optional[str] = ..., user: _Optional[str] = ...) -> None: ...

class FileEntry(_message.Message):
    __slots__ = ("name", "path", "type", "size", "mode", "permissions", "owner", "group", "modified_at", "symlink_target")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    MODIFIED_AT_FIELD_NUMBER: _ClassVar[int]
    SYMLINK_TARGET_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    type: str
    size: int
    mode: int
    permissions: str
    owner: str
    group: str
    modified_at: _timestamp_pb2.Timestamp
    symlink_target: str
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., type: _Optional[str] = ..., size: _Optional[int] = ..., mode: _Optional[int] = ..., permissions: _Optional[str] = ..., owner: _Optional[str] = ..., group: _Optional[str] = ..., modified_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., symlink_target: _Optional[str] = ...) -> None: ...

class ReadFileResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class WriteFileRequest(_message.Message):
    __slots__ = ("sandbox_id", "path", "user", "mode", "data")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    path: str
    user: str
    mode: int
    data: bytes
    def __init__(self, sandbox_id: _Optional[str] = ..., path: _Optional[str] = ..., user: _Optional[str] = ..., mode: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class WriteFileStreamRequest(_message.Message):
    __slots__ = ("header", "chunk", "end")
    class Header(_message.Message):
        __slots__ = ("sandbox_id", "path", "user", "mode")
        SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
        PATH_FIELD_NUMBER: _ClassVar[int]
        USER_FIELD_NUMBER: _ClassVar[int]
        MODE_FIELD_NUMBER: _ClassVar[int]
        sandbox_id: str
        path: str
        user: str
        mode: int
        def __init__(self, sandbox_id: _Optional[str] = ..., path: _Optional[str] = ..., user: _Optional[str] = ..., mode: _Optional[int] = ...) -> None: ...
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    header: WriteFileStreamRequest.Header
    chunk: bytes
    end: bool
    def __init__(self, header: _Optional[_Union[WriteFileStreamRequest.Header, _Mapping]] = ..., chunk: _Optional[bytes] = ..., end: _Optional[bool] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ListDirRequest(_message.Message):
    __slots__ = ("sandbox_id", "path", "user", "depth", "limit", "after")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    path: str
    user: str
    depth: int
    limit: int
    after: str
    def __init__(self, sandbox_id: _Optional[str] = ..., path: _Optional[str] = ..., user: _Optional[str] = ..., depth: _Optional[int] = ..., limit: _Optional[int] = ..., after: _Optional[str] = ...) -> None: ...

class ListDirResponse(_message.Message):
    __slots__ = ("entries", "truncated", "next_cursor")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[FileEntry]
    truncated: bool
    next_cursor: str
    def __init__(self, entries: _Optional[_Iterable[_Union[FileEntry, _Mapping]]] = ..., truncated: _Optional[bool] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class MoveRequest(_message.Message):
    __slots__ = ("sandbox_id", "source", "destination", "user")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    source: str
    destination: str
    user: str
    def __init__(self, sandbox_id: _Optional[str] = ..., source: _Optional[str] = ..., destination: _Optional[str] = ..., user: _Optional[str] = ...) -> None: ...

class Template(_message.Message):
    __slots__ = ("name", "type", "size_bytes", "created_at", "base")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: TemplateType
    size_bytes: int
    created_at: _timestamp_pb2.Timestamp
    base: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[TemplateType, str]] = ..., size_bytes: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., base: _Optional[str] = ...) -> None: ...

class CreateSnapshotRequest(_message.Message):
    __slots__ = ("sandbox_id", "name", "overwrite")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    name: str
    overwrite: bool
    def __init__(self, sandbox_id: _Optional[str] = ..., name: _Optional[str] = ..., overwrite: _Optional[bool] = ...) -> None: ...

class FlattenRootfsRequest(_message.Message):
    __slots__ = ("sandbox_id", "name", "overwrite")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    name: str
    overwrite: bool
    def __init__(self, sandbox_id: _Optional[str] = ..., name: _Optional[str] = ..., overwrite: _Optional[bool] = ...) -> None: ...

class DeleteSnapshotRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListTemplatesResponse(_message.Message):
    __slots__ = ("templates",)
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    templates: _containers.RepeatedCompositeFieldContainer[Template]
    def __init__(self, templates: _Optional[_Iterable[_Union[Template, _Mapping]]] = ...) -> None: ...
