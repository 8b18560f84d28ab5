"""What one request may make the platform hold, with real capsules: a command printing 100 MB
through the REST exec comes back cut to the documented limit (and says so) while neither the
control plane nor the host agent holds the rest; a directory of 200,000 entries is listed a
bounded page at a time."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from .conftest import AgentProcess
from .rest_fixtures import Account, StartApp, make_capsule, new_account, sh
from .test_rest_files import peak_memory_growth

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
HUNDRED_MB = 100 * MiB


def _agent_peak_reset(agent: AgentProcess) -> int:
    """Reset the agent process's peak RSS; its RSS now, bytes."""
    assert agent.proc is not None
    Path(f"/proc/{agent.proc.pid}/clear_refs").write_text("5")
    return _agent_status(agent, "VmRSS")


def _agent_status(agent: AgentProcess, field: str) -> int:
    assert agent.proc is not None
    text = Path(f"/proc/{agent.proc.pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    assert match, field
    return int(match.group(1)) * 1024


async def _exec(client: httpx.AsyncClient, account: Account, cid: str, script: str) -> Any:
    resp = await client.post(
        f"/v1/capsules/{cid}/exec",
        json={"cmd": "sh", "args": ["-c", script], "timeout_sec": 300},
        headers=account.h,
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_exec_of_100_mb_is_cut_to_the_limit_and_held_nowhere(
    start_app: StartApp, agent_process: AgentProcess
) -> None:
    async with start_app() as rest:
        user = await new_account(rest.client)
        cid = (await make_capsule(rest.client, user))["id"]
        script = (
            f"head -c {HUNDRED_MB} /dev/zero | tr '\\0' a; "
            f"head -c {3 * MiB} /dev/zero | tr '\\0' b >&2"
        )
        agent_before = _agent_peak_reset(agent_process)
        with peak_memory_growth() as control_plane:
            result = await _exec(rest.client, user, cid, script)
        agent_growth = _agent_status(agent_process, "VmHWM") - agent_before
        assert result["exit_code"] == 0
        assert result["truncated"] is True
        assert result["encoding"] == "utf-8"
        assert result["stdout"] == "a" * MiB and result["stderr"] == "b" * MiB
        # The control plane and the agent each held about the limit, not 100 MB: before, the
        # control plane rose by 1.5 GB.
        assert control_plane["growth"] < 48 * MiB, control_plane
        assert agent_growth < 48 * MiB, agent_growth

        # Within the limit nothing changes, and the flag says so.
        small = await _exec(rest.client, user, cid, "echo hello; echo oops >&2")
        assert (small["stdout"], small["stderr"], small["truncated"]) == (
            "hello\n",
            "oops\n",
            False,
        )


async def test_a_cut_inside_a_character_keeps_the_output_text(
    api: httpx.AsyncClient,
) -> None:
    """'é' is two bytes: the 1 MiB cut falls inside one, which is dropped rather than turning
    the answer into base64."""
    user = await new_account(api)
    cid = (await make_capsule(api, user))["id"]
    result = await _exec(api, user, cid, "printf abc; yes é | head -c 3000000")
    assert result["encoding"] == "utf-8" and result["truncated"] is True
    out = result["stdout"]
    assert out.startswith("abcé\né\n") and out.endswith("é\n")
    assert len(out.encode()) == MiB - 1  # the last, split character's first byte is left off


async def test_the_limit_is_a_setting(start_app: StartApp) -> None:
    async with start_app(exec_max_output_bytes=4096) as rest:
        user = await new_account(rest.client)
        cid = (await make_capsule(rest.client, user))["id"]
        result = await _exec(rest.client, user, cid, "seq 1 100000")
        assert len(result["stdout"]) == 4096 and result["truncated"] is True
        assert result["stdout"].startswith("1\n2\n3\n")


async def test_agent_exec_keeps_the_head_or_the_tail(agent: AgentClient, capsule: Any) -> None:
    sid = capsule.sandbox_id
    head = await agent.exec(
        pb.ExecRequest(sandbox_id=sid, cmd="seq 1 300000", max_output_bytes=100)
    )
    assert head.stdout.startswith(b"1\n2\n3\n") and len(head.stdout) == 100
    assert head.stdout_truncated and not head.stderr_truncated and head.exit_code == 0
    tail = await agent.exec(
        pb.ExecRequest(sandbox_id=sid, cmd="seq 1 300000 >&2", max_output_bytes=100, keep_tail=True)
    )
    assert tail.stderr.endswith(b"299999\n300000\n") and len(tail.stderr) == 100
    assert tail.stderr_truncated and not tail.stdout_truncated
    default = await agent.exec(pb.ExecRequest(sandbox_id=sid, cmd="head -c 3000000 /dev/zero"))
    assert len(default.stdout) == MiB and default.stdout_truncated  # 0 = the 1 MiB default
    whole = await agent.exec(
        pb.ExecRequest(sandbox_id=sid, cmd="seq 1 1000", max_output_bytes=3893)
    )  # exactly its size
    assert len(whole.stdout) == 3893 and not whole.stdout_truncated


async def test_a_directory_of_200k_entries_is_listed_a_bounded_page_at_a_time(
    start_app: StartApp, agent_process: AgentProcess
) -> None:
    async with start_app() as rest:
        user = await new_account(rest.client)
        cid = (await make_capsule(rest.client, user))["id"]
        await sh(
            rest.client,
            user,
            cid,
            "mkdir /home/wrenn-user/big && cd /home/wrenn-user/big && "
            "python3 -c \"import os; [os.symlink('x', 'entry-%06d' % i) for i in range(200000)]\"",
        )

        async def page(**body: Any) -> Any:
            resp = await rest.client.post(
                f"/v1/capsules/{cid}/files/list",
                json={"path": "/home/wrenn-user/big", **body},
                headers=user.h,
            )
            assert resp.status_code == 200, resp.text
            return resp.json()

        agent_before = _agent_peak_reset(agent_process)
        with peak_memory_growth() as control_plane:
            first = await page()
        agent_growth = _agent_status(agent_process, "VmHWM") - agent_before
        assert len(first["entries"]) == 10000 and first["truncated"] is True
        names = [e["name"] for e in first["entries"]]
        assert names == [f"entry-{i:06d}" for i in range(10000)]
        assert first["next_cursor"] == "/home/wrenn-user/big/entry-009999"
        assert control_plane["growth"] < 64 * MiB, control_plane
        assert agent_growth < 64 * MiB, agent_growth

        second = await page(cursor=first["next_cursor"], limit=5)
        assert [e["name"] for e in second["entries"]] == [
            f"entry-{i:06d}" for i in range(10000, 10005)
        ]
        last = await page(cursor="/home/wrenn-user/big/entry-199997")
        assert [e["name"] for e in last["entries"]] == ["entry-199998", "entry-199999"]
        assert last["truncated"] is False and last["next_cursor"] is None

        too_many = await rest.client.post(
            f"/v1/capsules/{cid}/files/list",
            json={"path": "/home/wrenn-user/big", "limit": 10001},
            headers=user.h,
        )
        assert too_many.status_code == 400


async def test_agent_listing_pages(agent: AgentClient, capsule: Any) -> None:
    sid = capsule.sandbox_id
    await agent.exec(
        pb.ExecRequest(
            sandbox_id=sid,
            cmd="mkdir -p p/a p/b && touch p/a/1 p/a/2 p/b/3",  # in the home
        )
    )
    seen: list[str] = []
    after = ""
    while True:
        res = await agent.list_dir(
            pb.ListDirRequest(
                sandbox_id=sid, path="/home/wrenn-user/p", depth=2, limit=2, after=after
            ),
        )
        assert len(res.entries) <= 2
        seen += [e.path for e in res.entries]
        if not res.truncated:
            break
        after = res.next_cursor
    assert seen == [
        "/home/wrenn-user/p/a",
        "/home/wrenn-user/p/a/1",
        "/home/wrenn-user/p/a/2",
        "/home/wrenn-user/p/b",
        "/home/wrenn-user/p/b/3",
    ]
