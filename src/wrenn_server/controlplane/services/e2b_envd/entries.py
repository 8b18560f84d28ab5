"""The agent's file entries as E2B's `EntryInfo`."""

from __future__ import annotations

from ....proto.e2b.filesystem import filesystem_pb2 as e2b
from ....proto.hostagent.v1 import hostagent_pb2 as pb

_TYPES = {
    "file": e2b.FILE_TYPE_FILE,
    "dir": e2b.FILE_TYPE_DIRECTORY,
    "symlink": e2b.FILE_TYPE_SYMLINK,
}


def entry_info(entry: pb.FileEntry) -> e2b.EntryInfo:
    info = e2b.EntryInfo(
        name=entry.name,
        type=_TYPES.get(entry.type, e2b.FILE_TYPE_UNSPECIFIED),
        path=entry.path,
        size=entry.size,
        mode=entry.mode,
        permissions=entry.permissions,
        owner=entry.owner,
        group=entry.group,
        is_symlink=entry.type == "symlink",
    )
    info.modified_time.CopyFrom(entry.modified_at)
    if entry.type == "symlink":
        info.symlink_target = entry.symlink_target
    return info
