"""The code runner template (`wrenn image build code-runner`): built on the host from Debian's
packages (kept in the data dir, so only the first run downloads them), its capsules start with
Jupyter Server answering on port 8888, the `wrenn` kernelspec, and a kernel that runs code,
draws with matplotlib and restarts, spoken to the way the published SDK speaks to it (REST,
then the kernel's WebSocket channels, no token); and the published SDK's
`wrenn.code_runner.Capsule` itself, unchanged, through the control plane's port proxy."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.controlplane import ids
from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.db.models.capsules import Template
from wrenn_server.controlplane.db.session import Database
from wrenn_server.controlplane.settings import Settings
from wrenn_server.hostagent import code_runner_image
from wrenn_server.hostagent.templates import TemplateStore
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

from ..served import served
from .conftest import DATA_DIR, SECRET, AgentProcess, CapsuleFactory, run
from .test_sdk import sdk  # noqa: F401
from .test_ws import _account

pytestmark = pytest.mark.integration

NAME = code_runner_image.NAME

JUPYTER_STATUS = (
    "python3 -c 'import urllib.request as u; "
    'print(u.urlopen("http://127.0.0.1:8888/api/status").status)\''
)


# Run in the capsule: the SDK's requests (GET/POST /api/kernels, the channels WebSocket with an
# execute_request) with the stdlib and the tornado Jupyter itself depends on.
KERNEL_CLIENT = r"""
import json, sys, urllib.request, uuid
from tornado import ioloop, websocket

BASE = "127.0.0.1:8888"
specs = json.load(urllib.request.urlopen(f"http://{BASE}/api/kernelspecs"))
req = urllib.request.Request(
    f"http://{BASE}/api/kernels", data=json.dumps({"name": "wrenn"}).encode(),
    headers={"Content-Type": "application/json"}, method="POST")
kernel = json.load(urllib.request.urlopen(req))

async def execute(code):
    ws = await websocket.websocket_connect(f"ws://{BASE}/api/kernels/{kernel['id']}/channels")
    msg_id = uuid.uuid4().hex
    ws.write_message(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "t",
                   "session": uuid.uuid4().hex, "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": True,
                    "user_expressions": {}, "allow_stdin": False},
    }))
    out = {"stdout": "", "mime": [], "error": None}
    while True:
        m = json.loads(await ws.read_message())
        if m.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        t, c = m["msg_type"], m["content"]
        if t == "stream":
            out["stdout"] += c["text"]
        elif t in ("display_data", "execute_result"):
            out["mime"].append(c["data"])
        elif t == "error":
            out["error"] = c["ename"]
        elif t == "status" and c["execution_state"] == "idle":
            ws.close()
            return out

async def main():
    first = await execute(
        "import numpy, pandas\nimport matplotlib.pyplot as plt\n"
        "x = int(numpy.arange(4).sum()); print(x, pandas.__name__)\n"
        "plt.plot([1, 2, 3]); plt.show()")
    second = await execute("print(x * 2); 1 / 0")
    restart = urllib.request.Request(
        f"http://{BASE}/api/kernels/{kernel['id']}/restart", data=b"", method="POST")
    urllib.request.urlopen(restart)
    third = await execute("print('x' in dir())")
    print(json.dumps({"default": specs["default"], "specs": sorted(specs["kernelspecs"]),
                      "kernel": kernel["name"], "first": first, "second": second,
                      "after_restart": third}))

ioloop.IOLoop.current().run_sync(main, timeout=120)
"""


@pytest.fixture(scope="module")
async def code_runner() -> str:
    """The template, built once per data dir (the build is timed in the test log)."""
    store = TemplateStore(DATA_DIR / "templates")
    started = time.monotonic()
    built = store.exists(NAME)
    await store.ensure_base(NAME, lambda _f, _s: None, code_runner_image.RECIPE)
    if not built:
        print(f"built {NAME} in {time.monotonic() - started:.0f} s")
    template = store.get(NAME)
    assert template.start_cmd and template.healthcheck
    return NAME


async def test_jupyter_answers_and_a_kernel_runs_code(
    code_runner: str, agent: AgentClient, new_capsule: CapsuleFactory
) -> None:
    started = time.monotonic()
    sb = await new_capsule(template=code_runner)
    created_in = time.monotonic() - started
    # Healthy before create returned: Jupyter answers at once, no waiting here.
    status = await run(agent, sb.sandbox_id, JUPYTER_STATUS, timeout_sec=10)
    assert (status.exit_code, status.stdout.strip()) == (0, b"200"), status.stderr

    res = await run(
        agent, sb.sandbox_id, "", argv=["python3", "-c", KERNEL_CLIENT], timeout_sec=150
    )
    assert res.exit_code == 0, res.stderr.decode()[-3000:]
    out = json.loads(res.stdout.decode().strip().splitlines()[-1])
    assert out["default"] == "wrenn" and "wrenn" in out["specs"]
    assert out["kernel"] == "wrenn"
    first, second = out["first"], out["second"]
    assert first["error"] is None and first["stdout"] == "6 pandas\n"
    png = next(base64.b64decode(m["image/png"]) for m in first["mime"] if "image/png" in m)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    # State is kept between executions; errors come back as errors.
    assert second["stdout"] == "12\n" and second["error"] == "ZeroDivisionError"
    # A restarted kernel starts afresh.
    assert out["after_restart"] == {"stdout": "False\n", "mime": [], "error": None}
    print(f"code runner capsule created in {created_in:.1f} s")


async def test_a_flattened_capsule_keeps_the_start_command(
    code_runner: str, agent: AgentClient, new_capsule: CapsuleFactory
) -> None:
    src = await new_capsule(template=code_runner)
    flat = f"flat-runner-{uuid.uuid4().hex[:8]}"
    await agent.flatten_rootfs(pb.FlattenRootfsRequest(sandbox_id=src.sandbox_id, name=flat))
    try:
        assert TemplateStore(DATA_DIR / "templates").get(flat).start_cmd
        sb = await new_capsule(template=flat)
        # Jupyter was started and healthy before create returned, as in the template's own.
        status = await run(agent, sb.sandbox_id, JUPYTER_STATUS, timeout_sec=10)
        assert (status.exit_code, status.stdout.strip()) == (0, b"200"), status.stderr
        await agent.destroy_sandbox(pb.SandboxRef(sandbox_id=sb.sandbox_id))
    finally:
        await agent.delete_snapshot(pb.DeleteSnapshotRequest(name=flat))


@pytest.fixture
async def proxied_server(
    code_runner: str, agent_process: AgentProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, str]]:
    """A control plane (uvicorn) with the template registered; the SDK's proxy host names
    (`8888-<id>.127.0.0.1:<port>`) resolve to loopback, as `*.localhost` names do under
    nss-myhostname."""
    real = socket.getaddrinfo

    def loopback_names(host: Any, *args: Any, **kw: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host  # anyio passes IDNA bytes
        if isinstance(name, str) and name.endswith(".127.0.0.1"):
            host = "127.0.0.1"
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_names)
    settings = Settings(
        data_dir=tmp_path,
        dev_mode=True,
        agent_address=agent_process.target,
        agent_secret=SecretStr(SECRET),
        reconcile_interval_sec=0,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app), contextlib.AsyncExitStack() as stack:
        db: Database = app.state.db
        async with db.sessionmaker() as session, session.begin():
            session.add(Template(name=code_runner, team_id=ids.PLATFORM_TEAM_ID, type="base"))
        base_url = await stack.enter_async_context(served(app, ws="wsproto"))
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
            _token, key = await _account(http, "coderunner")
        yield base_url, key


def notebook_session(wrenn: Any, base_url: str, key: str) -> dict[str, Any]:
    """What a user of the SDK's code runner writes."""
    from wrenn.code_runner import Capsule

    seen: dict[str, Any] = {}
    with Capsule(api_key=key, base_url=base_url) as runner:
        plot = runner.run_code(
            "import matplotlib.pyplot as plt\nimport pandas as pd\n"
            "df = pd.DataFrame({'x': [1, 2, 3]})\nprint('rows', len(df))\n"
            "plt.plot(df['x']); plt.show()"
        )
        seen["stdout"] = "".join(plot.logs.stdout)
        seen["png"] = [r.png for r in plot.results if r.png]
        seen["html"] = runner.run_code("df").results[0].html
        seen["kept"] = runner.run_code("len(df) * 2").text
        failed = runner.run_code("1 / 0")
        assert failed.error is not None
        seen["error"] = (failed.error.name, failed.error.value, bool(failed.error.traceback))
    return seen


async def async_notebook_session(base_url: str, key: str) -> dict[str, Any]:
    """The async twin, and a cell cut off by its timeout (the sync one's timeout path raises
    queue.Empty with httpx-ws 0.9: the SDK's, not the server's)."""
    from wrenn.code_runner import AsyncCapsule

    seen: dict[str, Any] = {}
    async with await AsyncCapsule.create(api_key=key, base_url=base_url) as runner:
        await runner.run_code("state = 41")
        seen["kept"] = (await runner.run_code("state + 1")).text
        slow = await runner.run_code("import time; time.sleep(30)", timeout=2)
        seen["timed_out"] = slow.timed_out
    return seen


async def test_the_published_sdk_code_runner(
    sdk: ModuleType,  # noqa: F811
    proxied_server: tuple[str, str],
) -> None:
    base_url, key = proxied_server
    seen = await asyncio.to_thread(notebook_session, sdk, base_url, key)
    assert seen["stdout"] == "rows 3\n"
    assert len(seen["png"]) == 1
    assert base64.b64decode(seen["png"][0]).startswith(b"\x89PNG\r\n\x1a\n")
    assert "<table" in seen["html"]
    assert seen["kept"] == "6"
    assert seen["error"] == ("ZeroDivisionError", "division by zero", True)
    later = await async_notebook_session(base_url, key)
    assert later == {"kept": "42", "timed_out": True}
