"""A per-process cache of a team's capsule listing (GET /v1/capsules) as its encoded response:
what dashboards and agent frameworks poll, and where reading and encoding the rows cost more than
the rest of the request.

An entry is served while nothing that could change it committed since it was read: no write to a
capsule row (or a host's routing, which moves capsules) by this process, nor by another control
plane process on this machine (`capsule_routes.written()`, which reads the stamp they share) - so
a listing answered after a create, pause or destroy answered by any process of the machine shows
it. Processes on other machines sharing the database are not seen: for them an entry lives at
most `ttl` seconds, the same bound as the other caches'.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping

from . import capsule_routes

TTL_SEC = 0.5
MAX_ENTRIES = 1_000
# Large listings are rare and cheap to miss relative to their size: not kept.
MAX_BODY_BYTES = 1 << 20

Key = tuple[uuid.UUID, frozenset[str] | None, tuple[tuple[str, str], ...]]


def key_of(
    team_id: uuid.UUID, statuses: Collection[str] | None, metadata: Mapping[str, str]
) -> Key:
    return (
        team_id,
        frozenset(statuses) if statuses is not None else None,
        tuple(sorted(metadata.items())),
    )


class CapsuleListings:
    """(team, filter) -> encoded listing, for at most `ttl` seconds."""

    def __init__(self, *, ttl: float = TTL_SEC, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[Key, tuple[float, tuple[int, int], bytes]] = {}

    async def get_or_read(self, key: Key, read: Callable[[], Awaitable[bytes]]) -> bytes:
        """The listing under `key`: kept, or `read()` (and kept if nothing was written while it
        was being read)."""
        written = capsule_routes.written()  # before the rows are read
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None:
            expires, read_at, body = entry
            if read_at == written and now < expires:
                return body
            del self._entries[key]
        body = await read()
        if self.ttl > 0 and len(body) <= MAX_BODY_BYTES:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = (now + self.ttl, written, body)
        return body

    def __len__(self) -> int:
        return len(self._entries)
