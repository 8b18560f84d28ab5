"""envd's access token: read once from standard input at start, never from the environment.

The host agent writes the token into a pipe, closes its end and gives the read end to the sandbox
as pid 1's stdin. The environment and command line of pid 1 are readable by every user of a
capsule (/proc/1/environ under gVisor, /proc/1/cmdline everywhere), its descriptors are not, and
once envd has read the pipe to EOF and put /dev/null in its place nothing of the token is left
outside envd's memory.
"""

from __future__ import annotations

import os

MIN_LENGTH = 16
MAX_LENGTH = 512


def valid(token: bytes) -> bool:
    """Long enough to be a secret, and only visible ASCII (it travels in an HTTP header)."""
    return MIN_LENGTH <= len(token) <= MAX_LENGTH and all(0x21 <= b <= 0x7E for b in token)


def read_stdin(fd: int = 0) -> bytes:
    """The token written to `fd` (to EOF); `fd` is /dev/null afterwards. Raises ValueError."""
    data = b""
    try:
        while len(data) <= MAX_LENGTH + 1:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise ValueError("cannot read the access token from stdin: %s" % exc.strerror) from None
    finally:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, fd)
        os.close(null)
    token = data.strip()
    if not token:
        raise ValueError("the access token must be written to stdin")
    if not valid(token):
        raise ValueError(
            "the access token must be %d to %d visible ASCII characters" % (MIN_LENGTH, MAX_LENGTH)
        )
    return token
