"""Running host commands (ip, mount, runsc, ...) from asyncio with timeouts and clear errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..private import open_private

log = logging.getLogger(__name__)


def command_lines() -> Iterator[tuple[int, list[bytes]]]:
    """Every process on the host with its argv (as /proc shows it, split on NUL), skipping
    those that exit while being read."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        yield int(entry), argv


class CommandError(Exception):
    """A host command failed. Carries its stderr for the log, never for API callers."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"{' '.join(self.argv)!r} failed ({returncode}): {self.stderr[-2000:]}")


async def run(
    *argv: str,
    timeout: float = 60.0,
    check: bool = True,
    input: bytes | None = None,
    stdout_path: str | None = None,
    env: dict[str, str] | None = None,
    own_group: bool = False,
) -> str:
    """Run a command and return its stdout.

    `stdout_path` sends stdout and stderr to a file instead of pipes: needed for `runsc run/restore
    --detach`, whose sandbox inherits and keeps those descriptors open (a pipe would never see EOF).
    `own_group` runs it in a process group of its own, killed whole on a timeout: for a shell
    around a command, whose child would outlive it.
    """
    started = time.monotonic()
    # Logs of capsules' sandboxes: root's only (0600).
    out_file = (
        os.fdopen(open_private(Path(stdout_path), os.O_WRONLY | os.O_APPEND), "ab")
        if stdout_path
        else None
    )
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=out_file if out_file else asyncio.subprocess.PIPE,
            stderr=out_file if out_file else asyncio.subprocess.PIPE,
            env={**os.environ, **env} if env else None,
            start_new_session=own_group,
        )
    finally:
        if out_file:
            out_file.close()
    try:
        out, err = await asyncio.wait_for(proc.communicate(input), timeout)
    except (TimeoutError, asyncio.CancelledError):
        if proc.returncode is None:
            if own_group:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
            await proc.wait()
        raise
    log.debug("%.3fs %s -> %s", time.monotonic() - started, " ".join(argv)[:160], proc.returncode)
    stdout = (out or b"").decode(errors="replace")
    stderr = (err or b"").decode(errors="replace")
    if stdout_path and proc.returncode != 0:
        stderr = _tail(stdout_path)
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, stderr or stdout)
    return stdout


async def run_quiet(*argv: str, timeout: float = 30.0) -> bool:
    """Run a cleanup command; report failure in the log and as False, never raise."""
    try:
        await run(*argv, timeout=timeout)
        return True
    except CommandError as e:
        log.debug("cleanup command failed: %s", e)
        return False
    except TimeoutError:
        log.warning("cleanup command timed out: %s", " ".join(argv))
        return False


def _tail(path: str, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode(errors="replace")
    except OSError:
        return ""
