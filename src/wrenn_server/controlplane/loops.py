"""Background loops of the control plane: each is one idempotent step run every `interval`
seconds; a failing step is logged and the loop goes on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

log = logging.getLogger(__name__)

Step = Callable[[], Awaitable[object]]


async def run_every(name: str, interval: float, step: Step) -> None:
    while True:
        try:
            await step()
        except Exception:
            log.exception("%s: iteration failed", name)
        await asyncio.sleep(interval)


@asynccontextmanager
async def running(loops: Mapping[str, tuple[float, Step]]) -> AsyncIterator[None]:
    """Run the loops whose interval is > 0 for the duration of the block."""
    tasks = [
        asyncio.create_task(run_every(name, interval, step), name=name)
        for name, (interval, step) in loops.items()
        if interval > 0
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
