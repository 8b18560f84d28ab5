"""Commands in capsules: sync exec, streams, stdin, signals, reattach and PTY."""

from __future__ import annotations

import asyncio
import signal

import grpc
import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from .conftest import run, wait_for

pytestmark = pytest.mark.integration


async def collect(call: grpc.aio.UnaryStreamCall) -> tuple[int, bytes, bytes, pb.ProcessEvent.Exit]:
    pid, out, err, exit_ = 0, b"", b"", None
    while (ev := await call.read()) != grpc.aio.EOF:
        kind = ev.WhichOneof("event")
        if kind == "start":
            pid = ev.start.pid
        elif kind == "stdout":
            out += ev.stdout
        elif kind == "stderr":
            err += ev.stderr
        elif kind == "exit":
            exit_ = ev.exit
    assert exit_ is not None
    return pid, out, err, exit_


async def no_sleep_left(agent: AgentClient, sandbox_id: str) -> bool:
    return (await run(agent, sandbox_id, "pgrep -x sleep")).exit_code == 1


async def test_exec_argv_env_cwd_user(agent: AgentClient, capsule: pb.Sandbox) -> None:
    sid = capsule.sandbox_id
    res = await agent.exec(
        pb.ExecRequest(sandbox_id=sid, cmd="", argv=["printf", "%s|", "a b", "$HOME"])
    )
    assert res.stdout == b"a b|$HOME|"
    res = await run(
        agent, sid, "echo $FOO; pwd; id -un", env={"FOO": "bar"}, cwd="/tmp", user="nobody"
    )
    assert res.stdout == b"bar\n/tmp\nnobody\n"


async def test_exec_bad_input(agent: AgentClient, capsule: pb.Sandbox) -> None:
    sid = capsule.sandbox_id
    cases = [
        (pb.ExecRequest(sandbox_id=sid), grpc.StatusCode.INVALID_ARGUMENT),
        (
            pb.ExecRequest(sandbox_id=sid, cmd="true", user="ghost"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (pb.ExecRequest(sandbox_id=sid, cmd="true", cwd="/nope"), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.ExecRequest(sandbox_id=sid, argv=["no-such-binary"]), grpc.StatusCode.NOT_FOUND),
    ]
    for req, code in cases:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await agent.exec(req)
        assert e.value.code() == code, req


async def test_exec_timeout_kills_the_tree(agent: AgentClient, capsule: pb.Sandbox) -> None:
    sid = capsule.sandbox_id
    res = await run(agent, sid, "sleep 300 & sleep 301; echo never", timeout_sec=0.5)
    assert res.timed_out and res.stdout == b""
    await wait_for(lambda: no_sleep_left(agent, sid), 10, what="the whole tree killed")


async def test_stream_stdin_and_signal(agent: AgentClient, capsule: pb.Sandbox) -> None:
    sid = capsule.sandbox_id
    call = agent.exec_stream(pb.ExecRequest(sandbox_id=sid, cmd="cat; echo done >&2", stdin=True))
    first = await call.read()
    pid = first.start.pid
    await agent.send_stdin(pb.SendStdinRequest(sandbox_id=sid, pid=pid, data=b"ping\n"))
    await agent.close_stdin(pb.ProcessRef(sandbox_id=sid, pid=pid))
    _, out, err, exit_ = await collect(call)
    assert (out, err, exit_.exit_code) == (b"ping\n", b"done\n", 0)

    call = agent.exec_stream(pb.ExecRequest(sandbox_id=sid, cmd="sleep 100 & sleep 100"))
    pid = (await call.read()).start.pid
    procs = await agent.list_processes(pb.SandboxRef(sandbox_id=sid))
    assert pid in [p.pid for p in procs.processes if p.running]
    await agent.signal_process(
        pb.SignalProcessRequest(sandbox_id=sid, pid=pid, signal=signal.SIGKILL)
    )
    _, _, _, exit_ = await collect(call)
    assert exit_.signal == signal.SIGKILL
    await wait_for(lambda: no_sleep_left(agent, sid), 10, what="the whole tree killed")


async def test_reattach_by_pid(agent: AgentClient, capsule: pb.Sandbox) -> None:
    sid = capsule.sandbox_id
    call = agent.exec_stream(
        pb.ExecRequest(sandbox_id=sid, cmd="echo first; sleep 1; echo second", tag="job"),
    )
    pid = (await call.read()).start.pid
    call.cancel()  # the caller goes away; the process keeps running
    again = agent.connect_process(pb.ProcessRef(sandbox_id=sid, pid=pid))
    got_pid, out, _, exit_ = await collect(again)
    assert got_pid == pid and out == b"first\nsecond\n" and exit_.exit_code == 0
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await collect(agent.connect_process(pb.ProcessRef(sandbox_id=sid, pid=999999)))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def read_until(call: grpc.aio.UnaryStreamCall, needle: bytes) -> bytes:
    out = b""
    while needle not in out:
        ev = await asyncio.wait_for(call.read(), 10)
        assert ev != grpc.aio.EOF, out
        out += ev.stdout
    return out


async def test_pty(agent: AgentClient, capsule: pb.Sandbox) -> None:
    sid = capsule.sandbox_id
    req = pb.ExecRequest(
        sandbox_id=sid, cmd="/bin/sh", pty=pb.PtySize(cols=100, rows=30), stdin=True
    )
    call = agent.exec_stream(req)
    pid = (await call.read()).start.pid
    send = pb.SendStdinRequest
    await agent.send_stdin(send(sandbox_id=sid, pid=pid, data=b"tty; stty size\n"))
    assert b"/dev/pts/" in await read_until(call, b"30 100")
    size = pb.PtySize(cols=120, rows=40)
    await agent.resize_pty(pb.ResizePtyRequest(sandbox_id=sid, pid=pid, size=size))
    await agent.send_stdin(send(sandbox_id=sid, pid=pid, data=b"stty size; exit 7\n"))
    await read_until(call, b"40 120")
    _, _, _, exit_ = await collect(call)
    assert exit_.exit_code == 7


async def test_a_command_as_another_user_holds_that_users_ids_only(
    agent: AgentClient, capsule: pb.Sandbox
) -> None:
    """envd spawns another user's command from a thread switched to that user (thread_creds.py):
    under gVisor the command gets the user's real, effective and saved ids, its groups and no
    capabilities, cannot signal envd once spawned, and envd's next root command is root."""
    sid = capsule.sandbox_id
    status = "grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapAmb):' /proc/self/status"
    res = await run(agent, sid, f"{status}; id -G; kill -0 1; echo kill=$?", user="nobody")
    lines = dict(line.split(":", 1) for line in res.stdout.decode().splitlines() if ":" in line)
    fields = {k: v.split() for k, v in lines.items()}
    assert fields["Uid"] == ["65534"] * 4, res.stdout
    assert fields["Gid"] == ["65534"] * 4, res.stdout
    assert sorted(fields["Groups"]) == sorted(res.stdout.decode().splitlines()[-2].split())
    for cap in ("CapInh", "CapPrm", "CapEff"):  # gVisor has no CapAmb line
        assert int(fields[cap][0], 16) == 0, (cap, res.stdout)
    assert res.stdout.endswith(b"kill=1\n"), res.stdout
    res = await run(agent, sid, f"{status}; id -u", user="root")
    assert res.stdout.endswith(b"\n0\n"), res.stdout
    root = {
        k: v.split()
        for k, v in (line.split(":", 1) for line in res.stdout.decode().splitlines()[:-1])
    }
    assert root["Uid"] == ["0"] * 4 and int(root["CapEff"][0], 16) != 0, res.stdout
