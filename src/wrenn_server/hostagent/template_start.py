"""What an image template starts with every capsule made from it: its start command, detached from
envd's request (it outlives it, its output in a log file in the capsule), then its healthcheck
run until it passes or the template's start timeout is spent. A capsule whose service never
comes up fails to create (the caller discards it), with the command's last output in the error."""

from __future__ import annotations

import asyncio
import shlex

from . import errors
from .envd_client import EnvdClient
from .envd_types import ProcessSpec
from .exec_output import ExecOutput, ExecResult, run_to_end
from .templates import Template

LOG = "/var/log/wrenn-start.log"
DEFAULT_TIMEOUT_SEC = 60.0
# Each healthcheck run is cut off after this long (a hung check must not use the whole budget).
CHECK_TIMEOUT_SEC = 10.0
CHECK_INTERVAL_SEC = 0.25
_OUTPUT_LIMIT = 4096


def detached(command: str) -> str:
    """A shell line that starts `command` in its own session and returns at once."""
    return f"nohup setsid sh -c {shlex.quote(command)} >{LOG} 2>&1 </dev/null &"


async def start_services(client: EnvdClient, template: Template) -> None:
    """Start the template's command and wait for its healthcheck (no-op without a command)."""
    if not template.start_cmd:
        return
    loop = asyncio.get_running_loop()
    budget = template.start_timeout_sec or DEFAULT_TIMEOUT_SEC
    deadline = loop.time() + budget
    started = await _sh(client, detached(template.start_cmd), CHECK_TIMEOUT_SEC)
    if started.exit_code != 0:
        raise errors.Unavailable(
            f"template {template.name!r}: its start command could not be started"
        )
    if not template.healthcheck:
        return
    while True:
        remaining = deadline - loop.time()
        check = await _sh(client, template.healthcheck, min(CHECK_TIMEOUT_SEC, max(remaining, 1)))
        if check.exit_code == 0 and not check.timed_out:
            return
        if loop.time() >= deadline:
            tail = await _sh(client, f"tail -c 1500 {LOG}", CHECK_TIMEOUT_SEC)
            raise errors.Unavailable(
                f"template {template.name!r}: its service did not become healthy in "
                f"{budget:.0f} s; its output ends with: "
                f"{tail.stdout.decode(errors='replace').strip()[-1500:]}"
            )
        await asyncio.sleep(CHECK_INTERVAL_SEC)


async def _sh(client: EnvdClient, line: str, timeout: float) -> ExecResult:
    # envd's own user (root in a capsule): this runs before any default user is set.
    spec: ProcessSpec = {"cmd": "/bin/sh", "args": ["-c", line]}
    return await run_to_end(client, spec, timeout, ExecOutput(_OUTPUT_LIMIT))
