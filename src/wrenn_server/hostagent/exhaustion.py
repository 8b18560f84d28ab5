"""Host resources running out (the data dir's disk full, the agent out of file descriptors) as
the caller's RESOURCE_EXHAUSTED with a message saying which, instead of an INTERNAL error: the
caller may retry later or elsewhere, and the operator learns what to free."""

from __future__ import annotations

import errno

from . import errors
from .proc import CommandError

DISK_FULL = "the host's disk is full: try again later"
NO_FILES = "the host has too many open files: try again later"

_BY_ERRNO = {
    errno.ENOSPC: DISK_FULL,
    errno.EDQUOT: DISK_FULL,
    errno.EMFILE: NO_FILES,
    errno.ENFILE: NO_FILES,
}
# What host commands (cp, mkfs, runsc) print for the same errnos.
_BY_STDERR = {"no space left on device": DISK_FULL, "disk quota exceeded": DISK_FULL}
_BY_STDERR.update({"too many open files": NO_FILES})


def host_exhausted(exc: BaseException) -> errors.ResourceExhausted | None:
    """The ResourceExhausted an error (or one it was raised from) stands for, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        message = _message(current)
        if message is not None:
            return errors.ResourceExhausted(message)
        current = current.__cause__ or current.__context__
    return None


def _message(exc: BaseException) -> str | None:
    if isinstance(exc, OSError) and exc.errno in _BY_ERRNO:
        return _BY_ERRNO[exc.errno]
    if isinstance(exc, CommandError):
        stderr = exc.stderr.lower()
        for text, message in _BY_STDERR.items():
            if text in stderr:
                return message
    return None
