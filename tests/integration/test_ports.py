"""ListPorts on real capsules: a service listening on :: (IPv6 and IPv4 alike) is one port with
its process, envd's own port is never listed, asking does not count as activity for the idle
timer, and a paused capsule is refused."""

from __future__ import annotations

import grpc
import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ..waiting import wait_for
from .conftest import CapsuleFactory, run

pytestmark = pytest.mark.integration

# A listener on :: and one on 0.0.0.0 of the same port (IPV6_V6ONLY), held by one process.
BOTH = (
    b"import socket, time\n"
    b"s6 = socket.socket(socket.AF_INET6)\n"
    b"s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)\n"
    b"s6.bind(('::', 8300)); s6.listen()\n"
    b"s4 = socket.socket(); s4.bind(('0.0.0.0', 8300)); s4.listen()\n"
    b"time.sleep(600)\n"
)


async def test_listening_ports_of_a_real_capsule(
    agent: AgentClient, new_capsule: CapsuleFactory
) -> None:
    sid = (await new_capsule(timeout_sec=600)).sandbox_id
    ref = pb.SandboxRef(sandbox_id=sid)
    await agent.write_file(pb.WriteFileRequest(sandbox_id=sid, path="/tmp/both.py", data=BOTH))
    await run(agent, sid, "nohup python3 /tmp/both.py >/dev/null 2>&1 &")

    async def listed() -> pb.ListeningPort | None:
        ports = (await agent.list_ports(ref)).ports
        return next((p for p in ports if p.port == 8300 and p.HasField("pid")), None)

    entry = await wait_for(listed, 30, interval=0.1, what="port 8300 listed with its process")
    assert entry.address in ("::", "0.0.0.0")
    assert entry.command == "python3 /tmp/both.py"
    ps = await run(agent, sid, "pgrep -f both.py")
    assert entry.pid == int(ps.stdout.split()[0])
    ports = [p.port for p in (await agent.list_ports(ref)).ports]
    assert ports.count(8300) == 1 and 49983 not in ports

    before = (await agent.get_sandbox(ref)).last_active_at.ToDatetime()
    for _ in range(3):
        await agent.list_ports(ref)
    assert (await agent.get_sandbox(ref)).last_active_at.ToDatetime() == before

    await agent.pause_sandbox(ref)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await agent.list_ports(ref)
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
