"""One reader per process that tails the events table and hands each new event to the streams
of its team.

Any control plane process may write an event (it is part of the transaction that made the
change); every process's hub polls the table for ids above the last one it delivered, so an event
reaches every subscriber whichever process wrote it. On PostgreSQL, ids are taken before commit,
so a later id can become visible before an earlier one: the hub stops at a gap in the ids and
waits up to `GAP_GRACE` for it to fill (a rolled-back insert leaves a gap for good).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..db.session import Database, transaction
from . import events

log = logging.getLogger(__name__)

GAP_GRACE = 5.0
QUEUE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    payload: dict[str, Any]


@dataclass(eq=False)
class Subscription:
    team_id: uuid.UUID
    start: int  # the hub's cursor when it subscribed: later events arrive on `queue`
    queue: asyncio.Queue[Message | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    overflowed: bool = False


class EventHub:
    def __init__(self, db: Database, *, poll_interval: float = 0.5) -> None:
        self._db = db
        self._interval = poll_interval
        self._subs: set[Subscription] = set()
        self._cursor = 0
        self._gap_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        async with self._db.sessionmaker() as session, transaction(session):
            self._cursor = await events.latest_id(session)
        self._task = asyncio.create_task(self._run(), name="event-hub")

    def end_streams(self) -> None:
        """End every open stream, and any opened from now on (the server is shutting down:
        it waits for open responses before it stops the application)."""
        self._closed = True
        for sub in self._subs:
            _offer(sub, None)

    async def close(self) -> None:
        """End every open stream, then stop reading."""
        self.end_streams()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.asynccontextmanager
    async def subscribe(self, team_id: uuid.UUID) -> AsyncIterator[Subscription]:
        sub = Subscription(team_id, self._cursor)
        if self._closed:
            _offer(sub, None)
        self._subs.add(sub)
        try:
            yield sub
        finally:
            self._subs.discard(sub)

    async def backlog(self, team_id: uuid.UUID, after_id: int, up_to: int) -> list[Message]:
        """The team's events in (after_id, up_to]: what a resuming stream missed."""
        out: list[Message] = []
        while after_id < up_to:
            async with self._db.sessionmaker() as session, transaction(session):
                rows = await events.after(session, after_id, team_id=team_id, up_to=up_to)
            if not rows:
                break
            out.extend(Message(r.id, r.payload) for r in rows)
            after_id = rows[-1].id
        return out

    async def poll_once(self) -> None:
        async with self._db.sessionmaker() as session, transaction(session):
            rows = await events.after(session, self._cursor)
        self._deliver(rows)

    def _deliver(self, rows: Sequence[Any]) -> None:
        for row in rows:
            if row.id != self._cursor + 1:
                now = time.monotonic()
                if self._gap_since is None:
                    self._gap_since = now
                if now - self._gap_since < GAP_GRACE:
                    return  # an earlier id may still commit
            self._gap_since = None
            self._cursor = row.id
            message = Message(row.id, row.payload)
            for sub in self._subs:
                if sub.team_id == row.team_id:
                    _offer(sub, message)

    async def _run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:
                log.exception("reading new events failed; retrying")
            await asyncio.sleep(self._interval)


def _offer(sub: Subscription, message: Message | None) -> None:
    """A stream that cannot keep up is ended (its client resumes with Last-Event-ID)."""
    if sub.overflowed:
        return
    try:
        sub.queue.put_nowait(message)
    except asyncio.QueueFull:
        sub.overflowed = True
        with contextlib.suppress(asyncio.QueueEmpty):
            sub.queue.get_nowait()
        sub.queue.put_nowait(None)


def _frame(message: Message) -> str:
    data = json.dumps(message.payload, separators=(",", ":"))
    return f"id: {message.id}\nevent: {message.payload['event']}\ndata: {data}\n\n"


async def sse(
    hub: EventHub, team_id: uuid.UUID, last_event_id: int | None, *, heartbeat: float
) -> AsyncIterator[str]:
    """A team's stream as SSE text: a `connected` message, what the client missed after
    `last_event_id`, then new events as they come, with a comment line when idle for
    `heartbeat` seconds. Ends when the hub closes (shutdown) or the client falls too far
    behind."""
    async with hub.subscribe(team_id) as sub:
        connected = {"event": "connected", "timestamp": dt.datetime.now(dt.UTC).isoformat()}
        yield f"event: connected\ndata: {json.dumps(connected)}\n\n"
        if last_event_id is not None:
            for missed in await hub.backlog(team_id, last_event_id, sub.start):
                yield _frame(missed)
        while True:
            try:
                async with asyncio.timeout(heartbeat):
                    message = await sub.queue.get()
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            if message is None:
                return
            yield _frame(message)
