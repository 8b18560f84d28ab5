"""E2B's in-sandbox protocol (envd: process.Process, filesystem.Filesystem, /files, /health,
/envs) served by the control plane for a capsule, driven by the stock `e2b` SDK's own sandbox
object (AsyncSandbox with the capsule's id, its envd access token and `sandbox_url` pointing at
the app behind a real uvicorn: E2B_SANDBOX_URL's routing by E2b-Sandbox-Id / E2b-Sandbox-Port
headers) over the fake agent; plain httpx where the SDK hides the answer (Connect error codes,
refusals, the `49983-{id}.{domain}` host form)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import httpx
import pytest
from e2b import AsyncSandbox, CommandExitException, ConnectionConfig, FileType
from e2b.exceptions import (
    AuthenticationException,
    InvalidArgumentException,
    NotFoundException,
    TimeoutException,
)
from packaging.version import Version

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.security import E2bAccessKind, TokenCodec

from ..controlplane.conftest import TEST_JWT_SECRET
from ..served import served
from .conftest import Stack
from .helpers import Account, make_capsule, new_account

ENVD_PORT = 49983


def envd_token(account: Account, capsule_id: str, kind: E2bAccessKind = "envd") -> str:
    """The token the E2B control API hands out with the sandbox (the same key signs it)."""
    codec = TokenCodec(TEST_JWT_SECRET, dt.timedelta(hours=1))
    return codec.issue_e2b_access(capsule_id, ids.TEAM.parse(account.team_id), kind)


def sandbox(
    url: str, capsule_id: str, token: str | None, http_version: Literal["1.1", "2"] = "2"
) -> AsyncSandbox:
    headers = {"E2b-Sandbox-Id": capsule_id, "E2b-Sandbox-Port": str(ENVD_PORT)}
    if token is not None:
        headers["X-Access-Token"] = token
    config = ConnectionConfig(
        sandbox_url=url,
        api_key="unused",
        extra_sandbox_headers=headers,
        request_timeout=20,
        http_version=http_version,
    )
    return AsyncSandbox(
        sandbox_id=capsule_id,
        sandbox_domain=None,
        envd_version=Version("0.6.4"),
        envd_access_token=token,
        traffic_access_token=None,
        connection_config=config,
    )


@asynccontextmanager
async def e2b_capsule(stack: Stack) -> AsyncIterator[tuple[Account, str, str, AsyncSandbox]]:
    account = await new_account(stack.client)
    cid = str((await make_capsule(stack.client, account))["id"])
    async with served(stack.app) as url:
        yield account, cid, url, sandbox(url, cid, envd_token(account, cid))


@pytest.mark.parametrize("http_version", ["1.1", "2"])
async def test_commands_run_to_their_end(stack: Stack, http_version: Literal["1.1", "2"]) -> None:
    """Whatever E2B_HTTP_VERSION says: the SDK speaks HTTP/1.1 to a plain http:// URL."""
    async with e2b_capsule(stack) as (account, cid, url, _):
        sbx = sandbox(url, cid, envd_token(account, cid), http_version)
        result = await sbx.commands.run("echo hello; echo oops >&2")
        assert (result.exit_code, result.stdout, result.stderr) == (0, "hello\n", "oops\n")
        with pytest.raises(CommandExitException) as failed:
            await sbx.commands.run("exit 3")
        assert failed.value.exit_code == 3


async def test_concurrent_requests_each_reach_their_own_capsule(stack: Stack) -> None:
    """The Connect applications are built once per process and find each request's service
    through a context variable: calls to two capsules at the same time never cross."""
    async with e2b_capsule(stack) as (_, first_id, url, first):
        account = await new_account(stack.client)
        second_id = str((await make_capsule(stack.client, account))["id"])
        second = sandbox(url, second_id, envd_token(account, second_id))
        pairs = [(first, first_id), (second, second_id)]
        for sbx, cid in pairs:
            await sbx.files.write("/tmp/who", cid)
        calls = [sbx.commands.run("cat /tmp/who") for sbx, _ in pairs * 4]
        results = await asyncio.gather(*calls)
        assert [r.stdout for r in results] == [cid for _, cid in pairs * 4]
        listings = await asyncio.gather(*(sbx.files.list("/tmp") for sbx, _ in pairs * 4))
        assert all([e.name for e in entries] == ["who"] for entries in listings)


async def wait_until(predicate: Any, what: str, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_background_commands_take_stdin_and_are_listed_connected_and_killed(
    stack: Stack,
) -> None:
    async with e2b_capsule(stack) as (_, _, _, sbx):
        handle = await sbx.commands.run("cat", background=True, stdin=True)
        await sbx.commands.send_stdin(handle.pid, "one\n")
        listed = await sbx.commands.list()
        assert [(p.pid, p.cmd, p.args) for p in listed] == [
            (handle.pid, "/bin/bash", ["-l", "-c", "cat"])
        ]
        seen: list[str] = []
        again = await sbx.commands.connect(handle.pid)
        await sbx.commands.close_stdin(handle.pid)
        result = await again.wait()
        seen.append(result.stdout)
        assert result.exit_code == 0 and "one\n" in seen[0]

        tagged = await sbx.commands.run("sleep 100", background=True)
        assert await sbx.commands.kill(tagged.pid) is True
        with pytest.raises(CommandExitException) as killed:
            await tagged.wait()
        assert killed.value.exit_code == -1
        assert await sbx.commands.kill(tagged.pid) is False  # gone: NOT_FOUND
        with pytest.raises(NotFoundException):
            await sbx.commands.connect(tagged.pid)


async def test_a_commands_timeout_kills_it(stack: Stack) -> None:
    async with e2b_capsule(stack) as (_, cid, _, sbx):
        with pytest.raises(TimeoutException):
            await sbx.commands.run("sleep 100", timeout=0.5)
        sandbox = stack.agent.sandboxes[cid]
        await wait_until(lambda: not any(p.running for p in sandbox.processes.values()), "the kill")


async def test_commands_get_their_user_environment_and_directory(stack: Stack) -> None:
    async with e2b_capsule(stack) as (_, cid, _, sbx):
        result = await sbx.commands.run(
            "echo $GREETING; pwd", envs={"GREETING": "hi"}, cwd="/tmp", user="root"
        )
        assert result.stdout == "hi\n/tmp\n"
        (spec,) = [p.spec for p in stack.agent.sandboxes[cid].processes.values()]
        assert (spec.user, spec.cwd, spec.env["GREETING"]) == ("root", "/tmp", "hi")


async def test_files_are_written_read_listed_and_moved(stack: Stack) -> None:
    async with e2b_capsule(stack) as (_, _, _, sbx):
        info = await sbx.files.write("/data/a.txt", "hello")
        assert (info.name, info.path) == ("a.txt", "/data/a.txt")
        assert await sbx.files.read("/data/a.txt") == "hello"
        big = bytes(range(256)) * 8192  # 2 MiB, streamed both ways
        await sbx.files.write("/data/big.bin", big)
        assert await sbx.files.read("/data/big.bin", format="bytes") == big
        many = await sbx.files.write_files(
            [{"path": "/data/x", "data": "1"}, {"path": "/data/y", "data": b"2"}]
        )
        assert [w.path for w in many] == ["/data/x", "/data/y"]
        assert await sbx.files.read("/data/y") == "2"
        await sbx.files.write("/data/gz", b"zipped" * 1000, gzip=True)
        assert await sbx.files.read("/data/gz", format="bytes") == b"zipped" * 1000

        assert await sbx.files.make_dir("/data/sub") is True
        assert await sbx.files.make_dir("/data/sub") is False  # ALREADY_EXISTS
        await sbx.files.write("/data/sub/deep.txt", "d")
        names = sorted(e.name for e in await sbx.files.list("/data"))
        assert names == ["a.txt", "big.bin", "gz", "sub", "x", "y"]
        deep = sorted(e.path for e in await sbx.files.list("/data", depth=2))
        assert "/data/sub/deep.txt" in deep
        stat = await sbx.files.get_info("/data/a.txt")
        assert (stat.name, stat.size, stat.type) == ("a.txt", 5, FileType.FILE)

        moved = await sbx.files.rename("/data/a.txt", "/data/b.txt")
        assert moved.path == "/data/b.txt"
        assert await sbx.files.exists("/data/a.txt") is False
        assert await sbx.files.exists("/data/b.txt") is True
        await sbx.files.remove("/data/b.txt")
        assert await sbx.files.exists("/data/b.txt") is False
        with pytest.raises(NotFoundException):
            await sbx.files.read("/data/nothing")
        with pytest.raises(NotFoundException):
            await sbx.files.list("/nowhere")


async def test_a_directory_is_watched(stack: Stack) -> None:
    async with e2b_capsule(stack) as (_, _, _, sbx):
        await sbx.files.make_dir("/w")
        events: list[Any] = []
        handle = await sbx.files.watch_dir("/w", on_event=events.append, recursive=True)
        await sbx.files.write("/w/new.txt", "x")
        await wait_until(lambda: any(e.name == "new.txt" for e in events), "the create event")
        assert events[0].type.value == "create"
        await handle.stop()


async def test_a_terminal_runs_a_shell(stack: Stack) -> None:
    from e2b import PtySize

    async with e2b_capsule(stack) as (_, cid, _, sbx):
        output = bytearray()
        terminal = await sbx.pty.create(PtySize(rows=24, cols=80), on_data=output.extend)
        await sbx.pty.send_stdin(terminal.pid, b"echo from-the-pty\n")
        await wait_until(lambda: b"from-the-pty" in output, "the terminal's output")
        await sbx.pty.resize(terminal.pid, PtySize(rows=40, cols=120))
        proc = stack.agent.sandboxes[cid].processes[terminal.pid]
        assert proc.size == (120, 40)
        assert await sbx.pty.kill(terminal.pid) is True
        with pytest.raises(CommandExitException):
            await terminal.wait()


def connect_post(url: str, method: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    return httpx.post(
        f"{url}/{method}",
        content=json.dumps(body),
        headers={"Content-Type": "application/json", **headers},
        timeout=20,
    )


async def test_refusals_are_connect_errors(stack: Stack) -> None:
    async with e2b_capsule(stack) as (owner, cid, url, _):
        route = {"E2b-Sandbox-Id": cid, "E2b-Sandbox-Port": str(ENVD_PORT)}
        stat = "filesystem.Filesystem/Stat"
        cases: list[tuple[dict[str, str], int, str]] = [
            ({}, 401, "unauthenticated"),
            ({"X-Access-Token": "nonsense"}, 401, "unauthenticated"),
            # The traffic kind opens ports, never envd; another capsule's token opens nothing.
            ({"X-Access-Token": envd_token(owner, cid, "traffic")}, 401, "unauthenticated"),
        ]
        other = await new_account(stack.client)
        other_cid = str((await make_capsule(stack.client, other))["id"])
        cases.append(({"X-Access-Token": envd_token(other, other_cid)}, 401, "unauthenticated"))
        cases.append(({"X-API-Key": other.key}, 404, "not_found"))  # another team's capsule
        for headers, status, code in cases:
            resp = await asyncio.to_thread(
                connect_post, url, stat, {"path": "/"}, {**route, **headers}
            )
            assert (resp.status_code, resp.json()["code"]) == (status, code), headers
        # The team's API key works as well as the capsule's token.
        resp = await asyncio.to_thread(
            connect_post, url, stat, {"path": "/"}, {**route, "X-API-Key": owner.key}
        )
        assert resp.status_code == 200 and resp.json()["entry"]["type"] == "FILE_TYPE_DIRECTORY"
        token = {**route, "X-Access-Token": envd_token(owner, cid)}
        resp = await asyncio.to_thread(connect_post, url, stat, {"path": ""}, token)
        assert (resp.status_code, resp.json()["code"]) == (400, "invalid_argument")
        resp = await asyncio.to_thread(
            connect_post, url, "process.Process/SendSignal", {"process": {"pid": 999}}, token
        )
        assert (resp.status_code, resp.json()["code"]) == (400, "invalid_argument")  # no signal
        resp = await asyncio.to_thread(
            connect_post,
            url,
            "process.Process/SendSignal",
            {"process": {"pid": 999}, "signal": "SIGNAL_SIGKILL"},
            token,
        )
        assert (resp.status_code, resp.json()["code"]) == (404, "not_found")
        async with httpx.AsyncClient(base_url=url, timeout=20) as http:
            assert (await http.get("/health", headers=token)).status_code == 204
            refused = await http.get("/files", params={"path": "/etc/hostname"}, headers=route)
            assert refused.status_code == 401 and refused.json()["code"] == 401
            signed = await http.get(
                "/files", params={"path": "/a", "signature": "v1_x"}, headers=route
            )
            assert (signed.status_code, signed.json()["message"]) == (401, "invalid signature")
            bad_port = {**route, "E2b-Sandbox-Port": "nope"}
            assert (await http.get("/health", headers=bad_port)).status_code == 400


async def test_the_sdk_maps_refusals_to_its_exceptions(stack: Stack) -> None:
    async with e2b_capsule(stack) as (owner, cid, url, _):
        no_token = sandbox(url, cid, None)
        with pytest.raises(AuthenticationException):
            await no_token.commands.run("echo hi")
        with pytest.raises(AuthenticationException):
            await no_token.files.read("/etc/hostname")
        wrong = sandbox(url, cid, envd_token(owner, cid, "traffic"))
        with pytest.raises(AuthenticationException):
            await wrong.files.list("/")
        good = sandbox(url, cid, envd_token(owner, cid))
        with pytest.raises(InvalidArgumentException):
            await good.files.list("/", depth=100)
        with pytest.raises(InvalidArgumentException):  # not kept: refused, never dropped
            await good.files.write("/m.txt", "x", metadata={"owner": "me"})
        assert await good.files.exists("/m.txt") is False


async def test_the_host_form_and_other_ports(stack: Stack) -> None:
    """`49983-{id}.{domain}` is envd too; any other port in the header form goes to the
    capsule's port through the proxy, with E2B's access tokens (either kind) as credentials,
    which never reach the capsule."""
    account = await new_account(stack.client)
    cid = str((await make_capsule(stack.client, account))["id"])
    token = envd_token(account, cid)
    resp = await stack.client.get(
        "/health", headers={"Host": f"{ENVD_PORT}-{cid}.wrenn.test", "X-Access-Token": token}
    )
    assert resp.status_code == 204
    received: list[bytes] = []

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(app, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    stack.agent.sandboxes[cid].ports[49999] = ("127.0.0.1", port)
    try:
        route = {"E2b-Sandbox-Id": cid, "E2b-Sandbox-Port": "49999"}
        for credential in (
            {"X-Access-Token": token},
            {"E2B-Traffic-Access-Token": envd_token(account, cid, "traffic")},
        ):
            resp = await stack.client.get("/execute", headers={**route, **credential})
            assert (resp.status_code, resp.text) == (200, "ok")
        head = b"\n".join(received).lower()
        assert b"x-access-token" not in head and b"e2b-traffic-access-token" not in head
        assert b"e2b-sandbox-id" not in head
        resp = await stack.client.get("/execute", headers=route)
        assert resp.status_code == 401
    finally:
        server.close()


async def test_a_paused_capsule_follows_the_proxys_rules(stack: Stack) -> None:
    """Paused: refused (failed_precondition) unless the capsule resumes on its own."""
    account = await new_account(stack.client)
    plain = str((await make_capsule(stack.client, account))["id"])
    resuming = str((await make_capsule(stack.client, account, auto_resume=True))["id"])
    for cid in (plain, resuming):
        resp = await stack.client.post(f"/v1/capsules/{cid}/pause", headers=account.h)
        assert resp.status_code == 200, resp.text
    async with served(stack.app) as url:
        for cid, status, code in ((plain, 400, "failed_precondition"), (resuming, 200, None)):
            headers = {
                "E2b-Sandbox-Id": cid,
                "E2b-Sandbox-Port": str(ENVD_PORT),
                "X-Access-Token": envd_token(account, cid),
            }
            resp = await asyncio.to_thread(
                connect_post, url, "filesystem.Filesystem/Stat", {"path": "/"}, headers
            )
            assert resp.status_code == status, resp.text
            if code is not None:
                assert resp.json()["code"] == code
        resp = await stack.client.get(f"/v1/capsules/{resuming}", headers=account.h)
        assert resp.json()["status"] == "running"


async def test_ordered_input_streams_to_stdin(stack: Stack) -> None:
    async with e2b_capsule(stack) as (_, _, _, sbx):
        handle = await sbx.commands.run("cat", background=True, stdin=True)
        stream = sbx.commands.stream_input(handle.pid)
        for line in ("a\n", "b\n", "c\n"):
            await stream.send(line)
        await stream.close()
        await sbx.commands.close_stdin(handle.pid)
        assert (await handle.wait()).stdout == "a\nb\nc\n"


def _frames(data: bytes) -> list[tuple[int, dict[str, Any]]]:
    """Connect's streaming envelopes: flags, then a JSON message."""
    out = []
    while data:
        flags, size = data[0], int.from_bytes(data[1:5], "big")
        out.append((flags, json.loads(data[5 : 5 + size])))
        data = data[5 + size :]
    return out


async def test_a_quiet_stream_carries_keepalives(stack: Stack) -> None:
    """Plain Connect streaming over HTTP/1.1 (envelopes, the end message): a command silent for
    longer than the asked interval gets keepalive events in between."""
    async with e2b_capsule(stack) as (account, cid, url, _):
        start = {"process": {"cmd": "/bin/bash", "args": ["-l", "-c", "sleep 2.5; echo done"]}}
        body = json.dumps(start).encode()
        headers = {
            "Content-Type": "application/connect+json",
            "Keepalive-Ping-Interval": "1",
            "E2b-Sandbox-Id": cid,
            "E2b-Sandbox-Port": str(ENVD_PORT),
            "X-Access-Token": envd_token(account, cid),
        }
        async with httpx.AsyncClient(base_url=url, timeout=20) as http:
            resp = await http.post(
                "/process.Process/Start",
                content=b"\0" + len(body).to_bytes(4, "big") + body,
                headers=headers,
            )
        assert resp.status_code == 200, resp.text
        frames = _frames(resp.content)
        events = [next(iter(m["event"])) for flags, m in frames if flags == 0]
        assert events[0] == "start" and events[-1] == "end"
        assert events.count("keepalive") >= 1
        assert frames[-1][0] == 2  # the end-of-stream message, without an error
        assert "error" not in frames[-1][1]


async def test_the_sync_sdk_polls_its_watcher(stack: Stack) -> None:
    """The synchronous SDK's watch is CreateWatcher / GetWatcherEvents / RemoveWatcher: the
    events wait in the control plane between polls; a removed watcher is not found."""
    from e2b import Sandbox

    async with e2b_capsule(stack) as (account, cid, url, asbx):
        await asbx.files.make_dir("/polled")
        headers = {
            "E2b-Sandbox-Id": cid,
            "E2b-Sandbox-Port": str(ENVD_PORT),
            "X-Access-Token": envd_token(account, cid),
        }
        config = ConnectionConfig(sandbox_url=url, api_key="unused", extra_sandbox_headers=headers)

        def scenario() -> list[str]:
            sbx = Sandbox(
                sandbox_id=cid,
                sandbox_domain=None,
                envd_version=Version("0.6.4"),
                envd_access_token=headers["X-Access-Token"],
                traffic_access_token=None,
                connection_config=config,
            )
            handle = sbx.files.watch_dir("/polled")
            sbx.files.write("/polled/one", "1")
            names: list[str] = []
            deadline = time.monotonic() + 10
            while "one" not in names and time.monotonic() < deadline:
                names += [e.name for e in handle.get_new_events()]
            watcher_id: str = handle._watcher_id  # what the SDK polls with
            handle.stop()
            return [*names, watcher_id]

        *names, watcher_id = await asyncio.to_thread(scenario)
        assert "one" in names
        for gone in (watcher_id, "never-made"):
            resp = await asyncio.to_thread(
                connect_post,
                url,
                "filesystem.Filesystem/GetWatcherEvents",
                {"watcherId": gone},
                headers,
            )
            assert (resp.status_code, resp.json()["code"]) == (404, "not_found")


async def test_a_public_envd_port_opens_nothing(stack: Stack) -> None:
    """Listing 49983 in a capsule's public ports does not make its command runner public."""
    account = await new_account(stack.client)
    cid = str((await make_capsule(stack.client, account, public_ports=[ENVD_PORT]))["id"])
    for headers in (
        {"E2b-Sandbox-Id": cid, "E2b-Sandbox-Port": str(ENVD_PORT)},
        {"Host": f"{ENVD_PORT}-{cid}.wrenn.test"},
    ):
        resp = await stack.client.post(
            "/process.Process/List",
            content=b"{}",
            headers={**headers, "Content-Type": "application/json"},
        )
        assert (resp.status_code, resp.json()["code"]) == (401, "unauthenticated")


async def test_a_background_commands_timeout_kills_it_after_its_client_left(stack: Stack) -> None:
    async with e2b_capsule(stack) as (_, cid, _, sbx):
        handle = await sbx.commands.run("sleep 100", background=True, timeout=1)
        keeper = await sbx.commands.run("sleep 100", background=True, timeout=0)
        await handle.disconnect()
        await keeper.disconnect()
        processes = stack.agent.sandboxes[cid].processes
        await wait_until(lambda: not processes[handle.pid].running, "the kill at the timeout")
        assert processes[keeper.pid].running  # no timeout: it runs on


def host_form(sbx: AsyncSandbox) -> AsyncSandbox:
    """The same sandbox addressed as `49983-{id}.wrenn.test`, as an SDK without
    E2B_SANDBOX_URL makes its file URLs."""
    return AsyncSandbox(
        sandbox_id=sbx.sandbox_id,
        sandbox_domain="wrenn.test",
        envd_version=Version("0.6.4"),
        envd_access_token=sbx._envd_access_token,
        traffic_access_token=None,
        connection_config=ConnectionConfig(api_key="unused", request_timeout=20),
    )


async def by_url(stack: Stack, method: str, url: str, files: Any = None) -> httpx.Response:
    """The URL as a browser or curl would use it: no credentials, its host naming the sandbox."""
    parts = httpx.URL(url)
    target = parts.raw_path.decode()
    return await stack.client.request(method, target, headers={"Host": parts.host}, files=files)


async def test_signed_file_urls_open_their_one_file_for_their_one_use(stack: Stack) -> None:
    """`upload_url` / `download_url` of a secure sandbox: signed with its envd token, which the
    server recomputes; the path, operation, user and expiry they were signed for, nothing
    else, and never another capsule's."""
    async with e2b_capsule(stack) as (account, cid, _, direct):
        sbx = host_form(direct)
        up = sbx.upload_url("/tmp/up.txt", user="root", use_signature_expiration=60)
        assert f"49983-{cid}.wrenn.test" in up and "signature=v1_" in up
        resp = await by_url(stack, "POST", up, {"file": ("x.txt", b"signed bytes")})
        assert resp.status_code == 200 and resp.json()[0]["path"] == "/tmp/up.txt", resp.text
        down = sbx.download_url("/tmp/up.txt", user="root")
        exp = sbx.download_url("/tmp/up.txt", user="root", use_signature_expiration=60)
        assert (await by_url(stack, "GET", exp)).status_code == 200
        resp = await by_url(stack, "GET", down)
        assert (resp.status_code, resp.content) == (200, b"signed bytes")
        # The default user's URL (no username) reads as the capsule's default user.
        resp = await by_url(stack, "GET", sbx.download_url("/tmp/up.txt"))
        assert (resp.status_code, resp.content) == (200, b"signed bytes")

        other = await new_account(stack.client)
        other_cid = str((await make_capsule(stack.client, other))["id"])
        tampered = [
            down.replace("up.txt", "etc.txt"),  # another path
            down.replace("username=root", "username=wrenn-user"),  # another user
            down.replace(cid, other_cid),  # another capsule, with this one's signature
            sbx.download_url("/tmp/up.txt", user="root", use_signature_expiration=-5),  # expired
            exp.replace("signature_expiration=", "signature_expiration=1"),  # expiry moved
            host_form(
                sandbox("http://unused", cid, envd_token(account, cid, "traffic"))
            ).download_url("/tmp/up.txt", user="root"),  # signed with the traffic token
            host_form(sandbox("http://unused", other_cid, envd_token(other, other_cid)))
            .download_url("/tmp/up.txt", user="root")
            .replace(other_cid, cid),  # another capsule's own URL, pointed at this one
        ]
        for url in tampered:
            resp = await by_url(stack, "GET", url)
            assert (resp.status_code, resp.json()["code"]) == (401, 401), url
        # A read URL does not write, and a write URL does not read.
        resp = await by_url(stack, "POST", down, {"file": ("x.txt", b"overwritten")})
        assert resp.status_code == 401
        assert (await by_url(stack, "GET", up)).status_code == 401
        # A signed upload writes its one path: a second part is refused, its file not written.
        files = [("file", ("first.txt", b"1")), ("file", ("/tmp/second.txt", b"2"))]
        resp = await by_url(stack, "POST", up, files)
        assert resp.status_code == 400 and "one file" in resp.json()["message"]
        assert await direct.files.read("/tmp/up.txt", user="root") == "1"
        assert await direct.files.exists("/tmp/second.txt") is False
