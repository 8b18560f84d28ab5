"""E2B compatibility end to end: the stock `e2b` SDK (from the package index, unchanged) against
our server on real gVisor capsules, configured only as a user would (E2B_API_URL,
E2B_API_KEY, E2B_SANDBOX_URL), sync (`Sandbox`, in a thread, as a user's script) and async
(`AsyncSandbox`): every public method of a sandbox a user reaches for, with its error paths.

Each step is named in `steps`, so a failure says which part of the scenario broke (the control
API: create, list, timeout, pause/connect, metrics, snapshots, kill; or the in-sandbox
protocol: commands, files, watch, PTY, get_host)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from e2b import (
    AsyncSandbox,
    CommandExitException,
    FileType,
    NotFoundException,
    PtySize,
    Sandbox,
    SandboxQuery,
    SandboxState,
    TimeoutException,
)
from pydantic import SecretStr

from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.settings import Settings

from ..ports import free_port
from ..served import served
from .conftest import SECRET, AgentProcess
from .test_ws import _account

pytestmark = pytest.mark.integration

HOME = "/home/wrenn-user"


@pytest.fixture(scope="module")
async def server(
    agent_process: AgentProcess, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, str]]:
    """The control plane over a real agent behind uvicorn, its port proxy on
    `localhost:<port>` as `wrenn up` sets it; the E2B SDK's options for one account."""
    port = free_port()
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("e2b-controlplane"),
        dev_mode=True,
        agent_address=agent_process.target,
        agent_secret=SecretStr(SECRET),
        reconcile_interval_sec=0,
        proxy_domain=f"localhost:{port}",
        e2b_lifecycle_interval_sec=0.5,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with served(app, port=port):
            url = f"http://localhost:{port}"
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                _token, key = await _account(http, "e2b")
            yield {"api_url": url, "api_key": key, "sandbox_url": url}


@contextlib.contextmanager
def step(steps: list[str], name: str) -> Iterator[None]:
    """Marks where the scenario is: an assertion or error names the step it happened in."""
    steps.append(name)
    try:
        yield
    except BaseException as e:
        e.add_note(f"in step {name!r} of the E2B scenario")
        raise


def sync_scenario(opts: dict[str, Any], steps: list[str]) -> None:
    """What a user's script does with the synchronous SDK."""
    with step(steps, "control: create"):
        sbx = Sandbox.create(
            "base", timeout=300, metadata={"suite": "e2b"}, envs={"FROM_CREATE": "yes"}, **opts
        )
        assert sbx.is_running()
    try:
        _sync_in_sandbox(sbx, steps)
        _sync_control(sbx, opts, steps)
    finally:
        with contextlib.suppress(Exception):
            sbx.kill()
    with step(steps, "control: kill"):
        assert Sandbox.kill(sbx.sandbox_id, **opts) is False  # already gone
        with pytest.raises(NotFoundException):
            Sandbox.connect(sbx.sandbox_id, **opts)
        with pytest.raises(NotFoundException):
            Sandbox.get_info(sbx.sandbox_id, **opts)


def _sync_in_sandbox(sbx: Sandbox, steps: list[str]) -> None:
    with step(steps, "commands: run, envVars, exit code, timeout"):
        result = sbx.commands.run("echo hello; echo oops >&2; echo $FROM_CREATE")
        assert (result.stdout, result.stderr, result.exit_code) == ("hello\nyes\n", "oops\n", 0)
        assert sbx.commands.run("whoami", user="root").stdout == "root\n"
        with pytest.raises(CommandExitException) as failed:
            sbx.commands.run("exit 7")
        assert failed.value.exit_code == 7
        with pytest.raises(TimeoutException):
            sbx.commands.run("sleep 30", timeout=1)
    with step(steps, "commands: background, stdin, list, connect, kill"):
        handle = sbx.commands.run("cat", background=True, stdin=True)
        sbx.commands.send_stdin(handle.pid, "piped\n")
        assert handle.pid in [p.pid for p in sbx.commands.list()]
        again = sbx.commands.connect(handle.pid)
        sbx.commands.close_stdin(handle.pid)
        finished = again.wait()
        assert "piped" in finished.stdout
        sleeper = sbx.commands.run("sleep 300", background=True)
        assert sbx.commands.kill(sleeper.pid) is True
        assert sbx.commands.kill(sleeper.pid) is False
    with step(steps, "files: write, read, list, stat, rename, remove, make_dir, exists"):
        info = sbx.files.write(f"{HOME}/notes.txt", "kept across pause")
        assert info.path == f"{HOME}/notes.txt"
        assert sbx.files.read(f"{HOME}/notes.txt") == "kept across pause"
        payload = bytes(range(256)) * 4096  # 1 MiB, every byte value
        sbx.files.write(f"{HOME}/blob.bin", payload)
        assert sbx.files.read(f"{HOME}/blob.bin", format="bytes") == payload
        assert sbx.files.make_dir(f"{HOME}/dir") is True
        assert sbx.files.make_dir(f"{HOME}/dir") is False
        sbx.files.write(f"{HOME}/dir/inner.txt", "x")
        names = {e.name for e in sbx.files.list(HOME)}
        assert {"notes.txt", "blob.bin", "dir"} <= names
        deep = {e.path for e in sbx.files.list(HOME, depth=2)}
        assert f"{HOME}/dir/inner.txt" in deep
        stat = sbx.files.get_info(f"{HOME}/blob.bin")
        assert stat.type == FileType.FILE and stat.size == len(payload)
        sbx.files.rename(f"{HOME}/dir/inner.txt", f"{HOME}/dir/moved.txt")
        assert sbx.files.exists(f"{HOME}/dir/moved.txt") is True
        assert sbx.files.exists(f"{HOME}/dir/inner.txt") is False
        sbx.files.remove(f"{HOME}/dir/moved.txt")
        assert sbx.files.exists(f"{HOME}/dir/moved.txt") is False
        with pytest.raises(NotFoundException):
            sbx.files.read(f"{HOME}/missing.txt")
    with step(steps, "files: watch (polled watcher)"):
        watcher = sbx.files.watch_dir(f"{HOME}/dir")
        sbx.files.write(f"{HOME}/dir/seen.txt", "y")
        deadline = time.monotonic() + 15
        seen: list[Any] = []
        while not any(e.name == "seen.txt" for e in seen):
            assert time.monotonic() < deadline, f"no watch event: {seen}"
            seen += watcher.get_new_events()
            time.sleep(0.2)
        watcher.stop()
    with step(steps, "pty: create, send_stdin, resize, output, exit"):
        terminal = sbx.pty.create(PtySize(rows=24, cols=80))
        sbx.pty.resize(terminal.pid, PtySize(rows=40, cols=100))
        sbx.pty.send_stdin(terminal.pid, b"stty size; echo from-pty; exit\n")
        output = bytearray()
        terminal.wait(on_pty=output.extend)
        assert b"40 100" in output and b"from-pty" in output
        other = sbx.pty.create(PtySize(rows=24, cols=80))
        assert sbx.pty.kill(other.pid) is True
    with step(steps, "get_host: a server in the sandbox through the port proxy"):
        sbx.commands.run(f"cd {HOME} && python3 -m http.server 8000", background=True)
        host = sbx.get_host(8000)
        assert host == f"8000-{sbx.sandbox_id}.{sbx.sandbox_domain}"
        headers = {"e2b-traffic-access-token": sbx.traffic_access_token or ""}
        deadline = time.monotonic() + 20
        while True:
            resp = httpx.get(f"http://{host}/notes.txt", headers=headers, timeout=10)
            if resp.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert resp.text == "kept across pause", resp.text
        assert httpx.get(f"http://{host}/notes.txt", timeout=10).status_code == 401


def _sync_control(sbx: Sandbox, opts: dict[str, Any], steps: list[str]) -> None:
    with step(steps, "control: get_info, list with filters"):
        info = sbx.get_info()
        assert info.state == SandboxState.RUNNING and info.metadata["suite"] == "e2b"
        found = Sandbox.list(query=SandboxQuery(metadata={"suite": "e2b"}), **opts).next_items()
        assert sbx.sandbox_id in [s.sandbox_id for s in found]
        paused = Sandbox.list(query=SandboxQuery(state=[SandboxState.PAUSED]), **opts)
        assert sbx.sandbox_id not in [s.sandbox_id for s in paused.next_items()]
    with step(steps, "control: set_timeout"):
        sbx.set_timeout(1800)
        end = sbx.get_info().end_at
        assert dt.timedelta(minutes=29) < end - dt.datetime.now(dt.UTC) <= dt.timedelta(minutes=30)
    with step(steps, "control: metrics"):
        deadline = time.monotonic() + 15
        while not (samples := sbx.get_metrics()):
            assert time.monotonic() < deadline, "no metrics"
            time.sleep(0.5)
        assert samples[-1].cpu_count >= 1 and samples[-1].mem_total > 0
    with step(steps, "control: pause, connect (resumes, memory and files kept)"):
        keeper = sbx.commands.run("sleep 600", background=True)
        assert sbx.pause() is True
        assert sbx.get_info().state == SandboxState.PAUSED
        resumed = Sandbox.connect(sbx.sandbox_id, **opts)
        assert resumed.get_info().state == SandboxState.RUNNING
        assert resumed.files.read(f"{HOME}/notes.txt") == "kept across pause"
        assert keeper.pid in [p.pid for p in resumed.commands.list()]
        assert resumed.commands.run("echo $FROM_CREATE").stdout == "yes\n"
    with step(steps, "control: snapshots (create, list, create from, delete)"):
        snap = sbx.create_snapshot()
        assert sbx.get_info().state == SandboxState.RUNNING
        listed = sbx.list_snapshots().next_items()
        assert snap.snapshot_id in [s.snapshot_id for s in listed]
        child = Sandbox.create(snap.snapshot_id, **opts)
        try:
            assert child.files.read(f"{HOME}/notes.txt") == "kept across pause"
        finally:
            child.kill()
        assert Sandbox.delete_snapshot(snap.snapshot_id, **opts) is True
        assert Sandbox.delete_snapshot(snap.snapshot_id, **opts) is False


async def test_the_sync_sdk_scenario(server: dict[str, str]) -> None:
    steps: list[str] = []
    await asyncio.to_thread(sync_scenario, server, steps)
    assert steps[-1] == "control: kill"


async def test_the_async_sdk_scenario(server: dict[str, str]) -> None:
    steps: list[str] = []
    with step(steps, "control: create"):
        sbx = await AsyncSandbox.create("base", timeout=300, envs={"MODE": "async"}, **server)
    try:
        with step(steps, "commands: run, timeout, background with callbacks"):
            assert (await sbx.commands.run("echo $MODE")).stdout == "async\n"
            with pytest.raises(CommandExitException):
                await sbx.commands.run("false")
            with pytest.raises(TimeoutException):
                await sbx.commands.run("sleep 30", timeout=1)
            lines: list[str] = []
            handle = await sbx.commands.run(
                "for i in 1 2 3; do echo line$i; done", background=True, on_stdout=lines.append
            )
            assert (await handle.wait()).exit_code == 0
            assert "".join(lines).split() == ["line1", "line2", "line3"]
        with step(steps, "files and watch (streamed)"):
            await sbx.files.make_dir(f"{HOME}/w")
            events: list[Any] = []
            watch = await sbx.files.watch_dir(f"{HOME}/w", on_event=events.append)
            await sbx.files.write(f"{HOME}/w/a.txt", "a")
            deadline = time.monotonic() + 15
            while not any(e.name == "a.txt" for e in events):
                assert time.monotonic() < deadline, "no watch event"
                await asyncio.sleep(0.1)
            await watch.stop()
            assert await sbx.files.read(f"{HOME}/w/a.txt") == "a"
        with step(steps, "control: pause and connect"):
            assert await sbx.pause() is True
            back = await AsyncSandbox.connect(sbx.sandbox_id, **server)
            assert await back.files.read(f"{HOME}/w/a.txt") == "a"
        with step(steps, "control: list and metrics"):
            found = await AsyncSandbox.list(
                query=SandboxQuery(state=[SandboxState.RUNNING]), **server
            ).next_items()
            assert sbx.sandbox_id in [s.sandbox_id for s in found]
            assert isinstance(await sbx.get_metrics(), list)
        with step(steps, "control: timeout ends it"):
            await sbx.set_timeout(1)
            deadline = time.monotonic() + 30
            with pytest.raises(NotFoundException):  # killed at its end: E2B's 404 from then on
                while True:
                    await AsyncSandbox.get_info(sbx.sandbox_id, **server)
                    assert time.monotonic() < deadline, "still there after its timeout"
                    await asyncio.sleep(0.5)
    finally:
        with contextlib.suppress(Exception):
            await sbx.kill()
