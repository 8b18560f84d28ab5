"""The code runner template (`wrenn image build code-runner`): built on the host from Debian's
packages (kept in the data dir, so only the first run downloads them), its capsules start with
Jupyter Server answering on port 8888, the `wrenn` kernelspec, and a kernel that runs code and
draws with matplotlib, spoken to the way the published SDK speaks to it (REST, then the kernel's
WebSocket channels, no token)."""

from __future__ import annotations

import base64
import json
import time

import pytest

from wrenn_server.agentproto.client import AgentClient
from wrenn_server.hostagent import code_runner_image
from wrenn_server.hostagent.templates import TemplateStore

from .conftest import DATA_DIR, CapsuleFactory, run

pytestmark = pytest.mark.integration

NAME = code_runner_image.NAME

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
    print(json.dumps({"default": specs["default"], "specs": sorted(specs["kernelspecs"]),
                      "kernel": kernel["name"], "first": first, "second": second}))

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
    status = await run(
        agent,
        sb.sandbox_id,
        "python3 -c 'import urllib.request as u; "
        'print(u.urlopen("http://127.0.0.1:8888/api/status").status)\'',
        timeout_sec=10,
    )
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
    print(f"code runner capsule created in {created_in:.1f} s")
