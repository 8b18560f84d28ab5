"""A stamp that control plane processes on one machine share through a memory-mapped file, so that
a cache in one process can tell at the cost of a memory read that another process committed a
write since the cache's entry was read.

A writer stores a fresh random value after each commit, never a counter: two processes bumping
a counter at once could both store the same value and hide the second write from a reader that
saw the first. A reader notes the stamp before it reads the database and keeps its entry only
while the stamp is unchanged. Processes on other machines cannot see the file; what they write
goes unseen until the cache's entries expire.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

_STAMP = struct.Struct("=Q")


class WriteStamp:
    def __init__(self, path: Path) -> None:
        # O_NOFOLLOW and 0600: the file lives in the control plane's private data directory; a
        # link planted there must not make this process map (and write) another file.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size < _STAMP.size:
                os.ftruncate(fd, _STAMP.size)
            self._map = mmap.mmap(fd, _STAMP.size)
        finally:
            os.close(fd)

    def read(self) -> int:
        value: int = _STAMP.unpack_from(self._map)[0]
        return value

    def bump(self) -> None:
        _STAMP.pack_into(self._map, 0, int.from_bytes(os.urandom(_STAMP.size), "little"))

    def close(self) -> None:
        self._map.close()
