"""`wrenn up`'s shutdown pause: each capsule the agent could not pause is reported with why,
the others stay paused; a pause that timed out or could not reach the agent names the capsules
still running (listed afterwards), and when even that fails says so, never raising."""

from __future__ import annotations

from pathlib import Path

import grpc
from rich.console import Console

from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb
from wrenn_server.up import PauseReport, _pause_all, pause_for_shutdown, tell_pauses

RUNNING = pb.SandboxStatus.SANDBOX_STATUS_RUNNING
PAUSED = pb.SandboxStatus.SANDBOX_STATUS_PAUSED


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class StandInAgent:
    """Answers PauseAll and ListSandboxes as told; records the timeouts it was given."""

    def __init__(
        self,
        *,
        paused: list[str] | None = None,
        failed: list[str] | None = None,
        pause_error: Exception | None = None,
        sandboxes: dict[str, pb.SandboxStatus.ValueType] | None = None,
        list_error: Exception | None = None,
    ) -> None:
        self.paused, self.failed = paused or [], failed or []
        self.pause_error, self.list_error = pause_error, list_error
        self.sandboxes = sandboxes or {}
        self.timeouts: list[float | None] = []

    async def pause_all(
        self, request: pb.Empty, *, timeout: float | None = None
    ) -> pb.PauseAllResponse:
        self.timeouts.append(timeout)
        if self.pause_error is not None:
            raise self.pause_error
        return pb.PauseAllResponse(paused_sandbox_ids=self.paused, failed_sandbox_ids=self.failed)

    async def list_sandboxes(
        self, request: pb.ListSandboxesRequest, *, timeout: float | None = None
    ) -> pb.ListSandboxesResponse:
        self.timeouts.append(timeout)
        if self.list_error is not None:
            raise self.list_error
        return pb.ListSandboxesResponse(
            sandboxes=[pb.Sandbox(sandbox_id=i, status=s) for i, s in self.sandboxes.items()]
        )


async def test_each_capsule_not_paused_is_reported_and_the_others_are_paused() -> None:
    agent = StandInAgent(paused=["sb-a", "sb-c"], failed=["sb-b"])
    report = await pause_for_shutdown(agent, timeout=42)
    assert report.paused == ["sb-a", "sb-c"]
    assert list(report.failed) == ["sb-b"] and "agent log" in report.failed["sb-b"]
    assert report.unknown is None
    assert agent.timeouts == [42]  # bounded


async def test_a_pause_that_timed_out_names_the_capsules_still_running() -> None:
    agent = StandInAgent(
        pause_error=_rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"),
        sandboxes={"sb-a": PAUSED, "sb-b": RUNNING, "sb-c": RUNNING},
    )
    report = await pause_for_shutdown(agent, timeout=5)
    assert report.paused == []
    assert list(report.failed) == ["sb-b", "sb-c"]
    assert report.failed["sb-b"] == "the agent answered DEADLINE_EXCEEDED: Deadline Exceeded"
    assert all(t is not None for t in agent.timeouts)


async def test_an_agent_that_cannot_be_reached_is_reported_not_raised() -> None:
    gone = _rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused")
    report = await pause_for_shutdown(StandInAgent(pause_error=gone, list_error=gone))
    assert report == PauseReport(
        unknown="the agent answered UNAVAILABLE: connection refused; the capsules could not "
        "be listed: the agent answered UNAVAILABLE: connection refused"
    )


def test_shutdown_names_each_capsule_not_paused_and_how_many(tmp_path: Path) -> None:
    console = Console(record=True, width=400)
    report = PauseReport(paused=["sb-a"], failed={"sb-b": "why b", "sb-c": "why c"})
    assert tell_pauses(report, console, tmp_path) == 1
    text = console.export_text()
    assert "capsule sb-b was not paused: why b" in text
    assert "capsule sb-c was not paused: why c" in text
    assert "2 capsule(s) not paused" in text


async def test_an_absent_agent_socket_is_told_not_raised(tmp_path: Path) -> None:
    """Through the real client, against an agent socket that is not there."""
    console = Console(record=True, width=400)
    assert await _pause_all(f"unix:{tmp_path / 'agent.sock'}", "secret", console, tmp_path) == 0
    assert "capsules may not have been paused" in console.export_text()
