"""Background loops of the control plane: each is one idempotent step run every `interval`
seconds; a failing step is logged and the loop goes on. With a `Leadership`, steps run only
while this process holds the lease (another process sharing the database runs them otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

from .leadership import Leadership

log = logging.getLogger(__name__)

Step = Callable[[], Awaitable[object]]


async def run_every(
    name: str, interval: float, step: Step, leadership: Leadership | None = None
) -> None:
    while True:
        try:
            if leadership is None or leadership.held:
                await step()
        except Exception:
            log.exception("%s: iteration failed", name)
        await asyncio.sleep(interval)


async def _keep(leadership: Leadership) -> None:
    while True:
        try:
            await leadership.renew()
        except Exception:
            log.exception("renewing the %s lease failed", leadership.name)
        await asyncio.sleep(leadership.renew_every)


@asynccontextmanager
async def running(
    loops: Mapping[str, tuple[float, Step]], leadership: Leadership | None = None
) -> AsyncIterator[None]:
    """Run the loops whose interval is > 0 for the duration of the block."""
    active = {name: loop for name, loop in loops.items() if loop[0] > 0}
    tasks = []
    if leadership is not None and active:
        with contextlib.suppress(Exception):  # the keeper retries; loops wait for it
            await leadership.renew()
        tasks.append(asyncio.create_task(_keep(leadership), name="leadership"))
    tasks += [
        asyncio.create_task(run_every(name, interval, step, leadership), name=name)
        for name, (interval, step) in active.items()
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if leadership is not None and active:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(leadership.release(), 5)
