"""Which control plane process runs the background loops that must run once (the reconciler, the
stats sampler), when several processes share one database: the holder of a lease row, renewed
every `ttl / 3` seconds and taken over by another process once it lapses (its holder died or
lost the database). Build workers need none: they claim builds one by one.

Expiry times come from each process's clock; clocks a few seconds apart only shift a takeover.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
import uuid

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db.models.leases import Lease
from ..db.session import transaction
from ..db.types import utcnow

log = logging.getLogger(__name__)

NAME = "background"
TTL_SEC = 15.0
_LAPSED = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class Leadership:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        name: str = NAME,
        ttl: float = TTL_SEC,
    ) -> None:
        self.sessions = sessions
        self.name = name
        self.ttl = ttl
        self.holder = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._held_until = 0.0  # monotonic

    @property
    def held(self) -> bool:
        return time.monotonic() < self._held_until

    @property
    def renew_every(self) -> float:
        return self.ttl / 3

    async def renew(self) -> bool:
        """Take or keep the lease; whether this process holds it now."""
        started = time.monotonic()
        now = utcnow()
        until = now + dt.timedelta(seconds=self.ttl)
        async with self.sessions() as session, transaction(session, write=True):
            result = await session.execute(
                update(Lease)
                .where(
                    Lease.name == self.name,
                    or_(Lease.holder == self.holder, Lease.expires_at < now),
                )
                .values(holder=self.holder, expires_at=until)
            )
            won = bool(getattr(result, "rowcount", 0))
            if not won and await session.get(Lease, self.name) is None:
                won = await self._create(session, until)
        was_held = self.held
        # Counted from before the write, and short of the stored expiry: this process stops
        # believing it leads before any other may start.
        self._held_until = started + self.ttl * 0.8 if won else 0.0
        if won != was_held:
            log.info("%s the %s lease", "took" if won else "lost", self.name)
        return won

    async def _create(self, session: AsyncSession, until: dt.datetime) -> bool:
        try:
            async with session.begin_nested():
                session.add(Lease(name=self.name, holder=self.holder, expires_at=until))
        except IntegrityError:
            return False  # another process created it first
        return True

    async def release(self) -> None:
        """Let another process take over at once (a clean shutdown)."""
        self._held_until = 0.0
        async with self.sessions() as session, transaction(session, write=True):
            await session.execute(
                update(Lease)
                .where(Lease.name == self.name, Lease.holder == self.holder)
                .values(holder=None, expires_at=_LAPSED)
            )
