"""Our copy of E2B's envd protocol (proto/e2b) is the one the stock `e2b` SDK speaks: every
message, field (name, number, type, label, oneof), enum value and method (streaming included)
of the SDK's own descriptors, compared with ours, both ways."""

from __future__ import annotations

from typing import Any

import pytest
from e2b.envd.filesystem import filesystem_pb as sdk_filesystem
from e2b.envd.process import process_pb as sdk_process
from google.protobuf import descriptor_pb2

from wrenn_server.proto.e2b.filesystem import filesystem_pb2
from wrenn_server.proto.e2b.process import process_pb2


def _shape(fd: descriptor_pb2.FileDescriptorProto) -> dict[str, Any]:
    def messages(items: Any, prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for m in items:
            name = f"{prefix}.{m.name}"
            oneofs = [o.name for o in m.oneof_decl]
            out[name] = sorted(
                (
                    f.number,
                    f.name,
                    f.type,
                    f.type_name,
                    f.label,
                    oneofs[f.oneof_index] if f.HasField("oneof_index") else None,
                    f.proto3_optional,
                )
                for f in m.field
            )
            out.update(messages(m.nested_type, name))
        return out

    return {
        "package": fd.package,
        "dependencies": list(fd.dependency),
        "messages": messages(fd.message_type, fd.package),
        "enums": {e.name: sorted((v.number, v.name) for v in e.value) for e in fd.enum_type},
        "services": {
            s.name: sorted(
                (m.name, m.input_type, m.output_type, m.client_streaming, m.server_streaming)
                for m in s.method
            )
            for s in fd.service
        },
    }


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(process_pb2, sdk_process), (filesystem_pb2, sdk_filesystem)],
    ids=["process", "filesystem"],
)
def test_our_protocol_is_the_sdks(ours: Any, theirs: Any) -> None:
    mine = descriptor_pb2.FileDescriptorProto()
    ours.DESCRIPTOR.CopyToProto(mine)
    sdk = descriptor_pb2.FileDescriptorProto.FromString(theirs.desc().proto.to_binary())
    assert _shape(mine) == _shape(sdk)
