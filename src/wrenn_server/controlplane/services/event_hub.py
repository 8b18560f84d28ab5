"""One reader per process that tails the events table and hands each new event to the streams
of its team.

Any control plane process may write an event (it is part of the transaction that made the
change); every process's hub reads the table for ids above the last one it delivered, so an event
reaches every subscriber whichever process wrote it. The hub reads when woken (this process
committed events, or another one did: `event_wakeups`, PostgreSQL LISTEN/NOTIFY or Redis
pub/sub) and otherwise every `poll_interval`, so a lost wake-up only delays an event. On
PostgreSQL, ids are taken before commit, so a later id can become visible before an earlier one:
the hub stops at a gap in the ids and waits up to `GAP_GRACE` for it to fill (a rolled-back
insert leaves a gap for good), reading every `GAP_RETRY` meanwhile.

A wake-up is read at once only while a stream of this process is open: with none, there is
nobody to deliver to, and the read (a transaction on the request path's event loop, after
every create's commit) waits for the poll interval; a stream opening catches up first, so it
starts where it would have had every wake-up been read.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..db.session import Database, transaction
from ..errors import BadRequest
from . import events
from .event_wakeups import LocalWakeups, Wakeups

log = logging.getLogger(__name__)

GAP_GRACE = 5.0
GAP_RETRY = 0.25
QUEUE_SIZE = 1000
PAGE = 500


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    payload: dict[str, Any]


def kinds_filter(asked: Sequence[str] | None) -> frozenset[str]:
    """The kinds a stream carries: those of the published contract, or those asked for, each
    an exact kind or a prefix of whole words (`capsule`, `template.build`, `host`)."""
    if not asked:
        return events.CONTRACT_KINDS
    chosen: set[str] = set()
    for item in asked:
        matched = {k for k in events.KINDS if k == item or k.startswith(item + ".")}
        if not matched:
            known = ", ".join(sorted(events.KINDS))
            raise BadRequest(f"unknown event kind {item[:64]!r}; known kinds: {known}")
        chosen |= matched
    return frozenset(chosen)


@dataclass(eq=False)
class Subscription:
    team_id: uuid.UUID
    start: int  # the hub's cursor when it subscribed: later events arrive on `queue`
    kinds: frozenset[str] = events.CONTRACT_KINDS
    queue: asyncio.Queue[Message | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    overflowed: bool = False

    def wants(self, team_id: uuid.UUID, payload: dict[str, Any]) -> bool:
        return team_id == self.team_id and payload.get("event") in self.kinds


class EventHub:
    def __init__(
        self, db: Database, *, poll_interval: float = 0.5, wakeups: Wakeups | None = None
    ) -> None:
        self._db = db
        self._interval = poll_interval
        self._wakeups = wakeups or LocalWakeups()
        self._subs: set[Subscription] = set()
        self._cursor = 0
        self._gap_since: float | None = None
        self._counting = True  # ids count up from the cursor (see `start`)
        self._woken = asyncio.Event()
        # One read at a time (the loop's, a stream's catch-up): each reads from the cursor the
        # other left.
        self._reading = asyncio.Lock()
        self._skipped = False  # wake-ups were left for the poll interval (no stream open)
        self._tasks: list[asyncio.Task[None]] = []
        self._unhook: Callable[[], None] | None = None
        self._closed = False

    async def start(self) -> None:
        async with self._db.sessionmaker() as session, transaction(session):
            self._cursor = await events.latest_id(session)
        # No event to count from (a new or purged table, whose ids need not start at 1): the
        # first one read is where the stream starts, as an event committed before the start
        # would have been.
        self._counting = self._cursor > 0
        loop = asyncio.get_running_loop()

        def committed() -> None:  # after a commit of this process that wrote events
            loop.call_soon_threadsafe(self._after_own_commit)

        self._unhook = events.on_commit(self._db.engine, committed)
        self._tasks = [
            asyncio.create_task(self._run(), name="event-hub"),
            asyncio.create_task(self._wakeups.listen(self.wake), name="event-hub-wakeups"),
        ]

    def wake(self) -> None:
        """Read the table now (events were written)."""
        self._woken.set()

    def _after_own_commit(self) -> None:
        self.wake()
        self._wakeups.committed()

    def end_streams(self) -> None:
        """End every open stream, and any opened from now on (the server is shutting down:
        it waits for open responses before it stops the application)."""
        self._closed = True
        for sub in self._subs:
            _offer(sub, None)

    async def close(self) -> None:
        """End every open stream, then stop reading and listening (closing the listener's
        connection)."""
        self.end_streams()
        if self._unhook is not None:
            self._unhook()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._wakeups.close()

    @contextlib.asynccontextmanager
    async def subscribe(
        self, team_id: uuid.UUID, kinds: frozenset[str] = events.CONTRACT_KINDS
    ) -> AsyncIterator[Subscription]:
        if self._skipped and not self._closed:
            await self._catch_up()
        # No await from here until the stream is in `_subs`: it starts at the cursor.
        sub = Subscription(team_id, self._cursor, kinds)
        if self._closed:
            _offer(sub, None)
        self._subs.add(sub)
        self.wake()  # what committed during the catch-up, read now that a stream wants it
        try:
            yield sub
        finally:
            self._subs.discard(sub)

    async def backlog(self, sub: Subscription, after_id: int) -> list[Message]:
        """The subscription's events in (after_id, its start]: what a resuming stream missed."""
        out: list[Message] = []
        while after_id < sub.start:
            async with self._db.sessionmaker() as session, transaction(session):
                rows = await events.after(session, after_id, team_id=sub.team_id, up_to=sub.start)
            if not rows:
                break
            out.extend(Message(r.id, r.payload) for r in rows if sub.wants(r.team_id, r.payload))
            after_id = rows[-1].id
        return out

    async def _catch_up(self) -> None:
        """Read what the skipped wake-ups announced, before a stream takes the cursor as its
        start. A failure leaves the cursor behind: the stream then also gets those events."""
        try:
            while await self.poll_once():
                pass
        except Exception:
            log.exception("reading new events before a stream opens failed")

    async def poll_once(self) -> bool:
        """Deliver what is new; True if there may be more to read at once (a full page)."""
        async with self._reading:
            skipped, self._skipped = self._skipped, False  # a wake-up left from now on is later
            try:
                async with self._db.sessionmaker() as session, transaction(session):
                    rows = await events.after(session, self._cursor, limit=PAGE)
            except BaseException:
                self._skipped = self._skipped or skipped
                raise
            return self._deliver(rows) and len(rows) == PAGE

    def _deliver(self, rows: Sequence[Any]) -> bool:
        """Hand the rows on in id order; False if stopped at a gap."""
        for row in rows:
            if row.id != self._cursor + 1 and self._counting:
                now = time.monotonic()
                if self._gap_since is None:
                    self._gap_since = now
                if now - self._gap_since < GAP_GRACE:
                    return False  # an earlier id may still commit
            self._gap_since = None
            self._counting = True
            self._cursor = row.id
            message = Message(row.id, row.payload)
            for sub in self._subs:
                if sub.wants(row.team_id, row.payload):
                    _offer(sub, message)
        return True

    async def _run(self) -> None:
        while True:
            self._woken.clear()  # a wake-up from now on means another read
            more = False
            try:
                more = await self.poll_once()
            except Exception:
                log.exception("reading new events failed; retrying")
            if more:
                continue
            await self._wait(self._interval if self._gap_since is None else GAP_RETRY)

    async def _wait(self, seconds: float) -> None:
        """Until a wake-up that has a stream to deliver to (or an id gap to wait out), or
        `seconds` from now."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    await self._woken.wait()
                    if self._subs or self._gap_since is not None:
                        return
                    self._woken.clear()
                    self._skipped = True


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
    hub: EventHub,
    team_id: uuid.UUID,
    last_event_id: int | None,
    *,
    heartbeat: float,
    kinds: frozenset[str] = events.CONTRACT_KINDS,
) -> AsyncIterator[str]:
    """A team's stream as SSE text: a `connected` message, what the client missed after
    `last_event_id`, then new events of `kinds` as they come, with a comment line when idle for
    `heartbeat` seconds. Ends when the hub closes (shutdown) or the client falls too far
    behind."""
    async with hub.subscribe(team_id, kinds) as sub:
        connected = {"event": "connected", "timestamp": dt.datetime.now(dt.UTC).isoformat()}
        yield f"event: connected\ndata: {json.dumps(connected)}\n\n"
        if last_event_id is not None:
            for missed in await hub.backlog(sub, last_event_id):
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
