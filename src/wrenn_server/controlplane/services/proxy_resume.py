"""A paused capsule with `auto_resume`, resumed for a request that reaches into it: through the
port proxy, the E2B envd protocol (proxy.running_agent) or the REST calls into a capsule (exec,
files, processes, ports, streams: capsules.running_client).

Requests arriving together share one resume in this process; across processes the resume
itself is the lock (it moves the row from paused to starting in one write transaction, so a
second one is refused) and the others wait for the row to say running. A request waits a
bounded time; the resume goes on without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from ..db.session import Database, transaction
from ..errors import InvalidState, ServiceUnavailable
from . import (
    audit,
    capsules,  # capsules imports this module too: attributes are used at call time
)

# How long a request waits for the capsule to run again.
RESUME_WAIT_SEC = 120.0
_POLL_SEC = 0.25

_resuming: dict[tuple[int, str], asyncio.Task[None]] = {}


async def resumed(
    db: Database,
    hosts: capsules.Hosts,
    team_id: uuid.UUID,
    capsule_id: str,
    actor: audit.Actor,
) -> None:
    """Once this returns the capsule of `team_id` was running (resumed here, as `actor`, or by
    another caller)."""
    key = (id(db), capsule_id)
    task = _resuming.get(key)
    if task is None:
        task = asyncio.create_task(_resume(db, hosts, team_id, capsule_id, actor))
        _resuming[key] = task
        task.add_done_callback(lambda done: _forget(key, done))
    try:
        await asyncio.wait_for(asyncio.shield(task), RESUME_WAIT_SEC)
    except TimeoutError:
        raise ServiceUnavailable(
            f"capsule {capsule_id} is still resuming: try again in a moment"
        ) from None


def _forget(key: tuple[int, str], task: asyncio.Task[None]) -> None:
    if _resuming.get(key) is task:
        del _resuming[key]
    if not task.cancelled():
        task.exception()  # retrieved: a failure every waiter gave up on is not logged as lost


async def _resume(
    db: Database, hosts: capsules.Hosts, team_id: uuid.UUID, capsule_id: str, actor: audit.Actor
) -> None:
    with contextlib.suppress(InvalidState):  # not paused any more: someone else resumes it
        await capsules.resume_capsule(db, hosts, team_id, capsule_id, actor=actor)
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RESUME_WAIT_SEC
    while True:
        async with db.sessionmaker() as session, transaction(session):
            sandbox = await capsules.get_capsule(session, team_id, capsule_id)
            status = sandbox.status
        if status == "running":
            return
        if status != "starting" or loop.time() > deadline:
            raise InvalidState(f"capsule {capsule_id} is {status}, not running")
        await asyncio.sleep(_POLL_SEC)
