"""Processes in a running capsule: commands run to completion or started in the background,
listed and signalled. Callers pass the agent client of a capsule `capsules.running_client`
found running, so an agent NOT_FOUND while starting a process is about the program, not the
capsule: it is the caller's mistake (400), not a missing capsule (404)."""

from __future__ import annotations

import signal
import time

from ...agentproto.client import AgentClient
from ...proto.hostagent.v1 import hostagent_pb2 as pb
from ..agents.rpc import agent_errors
from ..errors import BadRequest, HostAgentError, NotFound

# How much longer than the command's own timeout the agent call may take.
EXEC_RPC_MARGIN_SEC = 30


async def run(
    client: AgentClient, request: pb.ExecRequest, timeout_sec: int, max_output_bytes: int
) -> tuple[pb.ExecResponse, int]:
    """Run a command to completion; returns its result and how long it took in ms. The agent
    keeps at most `max_output_bytes` of each stream (and says when it cut one). A command still
    running at `timeout_sec` has its process tree killed by the agent and fails the call, as in
    the Go system (502 agent_error), rather than answering with the killed command's result."""
    request.max_output_bytes = max_output_bytes
    started = time.monotonic()
    with agent_errors(not_found=BadRequest):
        res = await client.exec(request, timeout=timeout_sec + EXEC_RPC_MARGIN_SEC)
    if res.timed_out:
        raise HostAgentError(f"the command timed out after {timeout_sec} s and was killed")
    # An agent that ignores the limit (an older one, or a host that is not ours to trust) does
    # not get more through.
    if len(res.stdout) > max_output_bytes:
        res.stdout, res.stdout_truncated = res.stdout[:max_output_bytes], True
    if len(res.stderr) > max_output_bytes:
        res.stderr, res.stderr_truncated = res.stderr[:max_output_bytes], True
    return res, int((time.monotonic() - started) * 1000)


async def start(client: AgentClient, request: pb.ExecRequest) -> int:
    """Start a background process and return its pid. The stream is dropped after the start
    event: the process runs on, and its output stays reattachable by pid or tag."""
    call = client.exec_stream(request)
    try:
        with agent_errors(not_found=BadRequest):
            first = await call.read()
    finally:
        call.cancel()
    if not isinstance(first, pb.ProcessEvent) or first.WhichOneof("event") != "start":
        raise HostAgentError("the process did not start")
    return int(first.start.pid)


async def list_running(client: AgentClient, wire_id: str) -> list[pb.ProcessInfo]:
    with agent_errors():
        res = await client.list_processes(pb.SandboxRef(sandbox_id=wire_id))
    return [p for p in res.processes if p.running]


async def kill(client: AgentClient, wire_id: str, selector: str, sig: signal.Signals) -> None:
    """Signal the running process whose pid or tag is `selector`."""
    pid = next(
        (p.pid for p in await list_running(client, wire_id) if selector in (str(p.pid), p.tag)),
        None,
    )
    if pid is None:
        raise NotFound("process not found")
    with agent_errors():
        await client.signal_process(
            pb.SignalProcessRequest(sandbox_id=wire_id, pid=pid, signal=sig)
        )
