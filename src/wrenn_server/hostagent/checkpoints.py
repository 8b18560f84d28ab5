"""A checkpoint being written, as an agent restarted in the middle of a pause finds it.

`runsc checkpoint` is a process of its own: an agent killed during it leaves it running, and
nobody learns whether it succeeded. So the command that runs it (runsc.py) marks the image
complete only once runsc has exited with success, and a restarted agent waits for whatever
still writes the image before reading the mark (GVisorRuntime.recover)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from .proc import command_lines

log = logging.getLogger(__name__)

# Written into the image directory after runsc checkpoint succeeded; runsc restore ignores it.
COMPLETE = "wrenn-complete"
# How long one `runsc checkpoint` may take (the memory image of the largest capsule, on a
# slow disk); also how long a restarted agent waits for one it left behind.
CHECKPOINT_TIMEOUT = 300.0
_POLL = 0.1
_KILL_WAIT = 10.0


def is_complete(image: Path) -> bool:
    return (image / COMPLETE).is_file()


def image_arg(image: Path) -> str:
    """The argument that names the image on the checkpoint's command line (and finds it)."""
    return f"--image-path={image}"


def writers(image: Path) -> list[int]:
    """Processes whose command line names the image: the runsc checkpoint writing it and the
    command around it that marks it complete."""
    needle = image_arg(image).encode()
    return [pid for pid, argv in command_lines() if needle in argv]


async def wait_for_writers(image: Path, timeout: float | None = None) -> bool:
    """Wait until nothing writes the image any more. Writers still there after `timeout`
    (CHECKPOINT_TIMEOUT) are killed: their image is then not complete. True if they ended by
    themselves."""
    bound = CHECKPOINT_TIMEOUT if timeout is None else timeout
    left = await _until_gone(image, time.monotonic() + bound)
    if not left:
        return True
    log.warning("killing checkpoint writers of %s still running: %s", image, left)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # A killed process leaves /proc once the kernel has torn it down.
    await _until_gone(image, time.monotonic() + _KILL_WAIT)
    return False


async def _until_gone(image: Path, deadline: float) -> list[int]:
    """The image's writers left at `deadline` (none once they are gone)."""
    while True:
        pids = await asyncio.to_thread(writers, image)
        if not pids or time.monotonic() >= deadline:
            return pids
        await asyncio.sleep(_POLL)
