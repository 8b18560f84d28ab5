"""The published SDK's error paths against real capsules, as the Go system answers them: a command
past its timeout fails with the SDK's `WrennError` (502 `agent_error`) and its whole process tree
is gone; a background command outlives any request timeout; streams that cannot start (a stopped
or paused capsule, no such process, no such PTY) open and end with an error event the SDK reads.
"""

from __future__ import annotations

import asyncio
import time
from types import ModuleType
from typing import Any

import httpx
import pytest

from .test_sdk import sdk, server  # noqa: F401 - the fixtures

pytestmark = pytest.mark.integration

# A parent that starts a child and a grandchild that left the session (setsid), both meant to
# outlive it, writes their pids down and waits far past the timeout.
SPAWNER = (
    "sleep 300 & echo $! > /tmp/tree.pids; "
    "setsid sh -c 'echo $$ >> /tmp/tree.pids; exec sleep 300' & "
    "echo $$ >> /tmp/tree.pids; sleep 300"
)
# The pids of /tmp/tree.pids that are still alive (a zombie is not), one per line.
ALIVE = (
    "for p in $(cat /tmp/tree.pids); do "
    "[ -r /proc/$p/stat ] && [ \"$(cut -d' ' -f3 /proc/$p/stat)\" != Z ] && echo $p; "
    "done; true"
)


def _wait(check: Any, what: str, deadline_s: float = 30) -> Any:
    deadline = time.monotonic() + deadline_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def timeouts(wrenn: Any, base_url: str, key: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    with wrenn.Capsule(api_key=key, base_url=base_url) as capsule:
        started = time.monotonic()
        try:
            capsule.commands.run(SPAWNER, timeout=2)
        except wrenn.WrennError as e:
            seen["error"] = (type(e).__name__, e.code, e.status_code, e.message)
        seen["took"] = time.monotonic() - started
        pids = _wait(lambda: capsule.commands.run("cat /tmp/tree.pids").stdout.split(), "pids")
        seen["pids"] = pids
        seen["alive"] = _wait(
            lambda: capsule.commands.run(ALIVE).stdout.split() == [], "the tree to be gone"
        )
        # The capsule goes on working after the kill.
        seen["after"] = capsule.commands.run("echo still here", timeout=5).stdout
        # A background command is not held to any request timeout.
        handle = capsule.commands.run(
            "sleep 4; echo done > /tmp/bg.out", background=True, timeout=1
        )
        seen["background_pid"] = handle.pid
        seen["background"] = _wait(
            lambda: capsule.commands.run("cat /tmp/bg.out 2>/dev/null").stdout, "the background"
        )
    return seen


async def test_a_command_past_its_timeout_fails_and_its_tree_is_killed(
    sdk: ModuleType,  # noqa: F811
    server: tuple[str, str],  # noqa: F811
) -> None:
    base_url, key = server
    seen = await asyncio.to_thread(timeouts, sdk, base_url, key)
    name, code, status, message = seen["error"]
    assert (name, code, status) == ("WrennAgentError", "agent_error", 502)
    assert "timed out after 2 s" in message
    assert 2 <= seen["took"] < 15
    assert len(seen["pids"]) == 3 and seen["alive"] is True
    assert seen["after"] == "still here\n"
    assert seen["background_pid"] > 0 and seen["background"] == "done\n"


def stream_errors(wrenn: Any, base_url: str, key: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    with wrenn.Capsule(api_key=key, base_url=base_url) as capsule:
        seen["no_process"] = [(e.type, e.data) for e in capsule.commands.connect(999999)]
        with capsule.pty_connect("pty-nosuch") as term:
            seen["no_pty"] = [(e.type, e.data, e.fatal) for e in term]
        capsule.pause()
        seen["paused_stream"] = [(e.type, e.data) for e in capsule.commands.stream("echo hi")]
        with capsule.pty() as term:
            seen["paused_pty"] = [(e.type, e.data, e.fatal) for e in term]
        capsule.resume()
        seen["resumed"] = [e.type for e in capsule.commands.stream("echo hi")]
        capsule_id = capsule.capsule_id
    # Destroyed on leaving the block: a stream of the stopped capsule, as the SDK opens one.
    with httpx.Client(base_url=base_url, headers={"X-API-Key": key}) as http:
        stopped = wrenn.commands.Commands(capsule_id, http).stream("echo hi")
        seen["stopped_stream"] = [(e.type, e.data) for e in stopped]
    return seen


async def test_streams_that_cannot_start_end_with_an_error_event(
    sdk: ModuleType,  # noqa: F811
    server: tuple[str, str],  # noqa: F811
) -> None:
    base_url, key = server
    seen = await asyncio.to_thread(stream_errors, sdk, base_url, key)
    assert seen["no_process"] == [("error", "process not found")]
    assert seen["no_pty"] == [("error", "PTY session not found", True)]
    ((kind, data),) = seen["paused_stream"]
    assert kind == "error" and "paused" in data
    ((kind, data, fatal),) = seen["paused_pty"]
    assert kind == "error" and "paused" in data and fatal is True
    assert seen["resumed"][0] == "start" and seen["resumed"][-1] == "exit"
    ((kind, data),) = seen["stopped_stream"]
    assert kind == "error" and "stopped" in data
