"""The code interpreter template (`code-interpreter-v1`) on real gVisor capsules: its server on
port 49999, reached through the port proxy with a Wrenn API key, runs code (stdout, stderr, the
result, errors, a matplotlib figure as PNG, env vars) and manages contexts (create, list,
restart, remove); and E2B's code interpreter SDK (`e2b_code_interpreter.Sandbox`), unchanged and
configured only with E2B_API_URL/E2B_SANDBOX_URL/E2B_API_KEY's values, runs code with the
sandbox's envs, draws line, bar and scatter charts (PNG and `result.chart`) and uses contexts
against the same server."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.exc import OperationalError

from wrenn_server import codeinterp
from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.db.session import Database
from wrenn_server.controlplane.services.bootstrap import register_built_templates
from wrenn_server.controlplane.settings import Settings
from wrenn_server.hostagent import code_interpreter_image
from wrenn_server.hostagent.templates import TemplateStore

from ..ports import free_port
from ..served import served
from .conftest import DATA_DIR, SECRET, AgentProcess
from .test_ws import _account

# The first test builds the template when the data dir has none (minutes on a loaded host).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

NAME = code_interpreter_image.NAME
PNG = b"\x89PNG\r\n\x1a\n"
PLOT = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()"


@pytest.fixture(scope="module")
async def template() -> str:
    """Built once per data dir (on the code runner's template, built first if missing)."""
    started = time.monotonic()
    store = TemplateStore(DATA_DIR / "templates")
    built = store.exists(NAME)
    if built and not _server_is_current(store):
        # Built from an older server (the template keeps the copy it was built with): rebuilt,
        # as `wrenn image build code-interpreter --force` would.
        await store.delete_async(NAME)
        built = False
    t = await code_interpreter_image.ensure(store, lambda _f, _s: None)
    if not built:
        print(f"built {NAME} in {time.monotonic() - started:.0f} s")
    assert t.start_cmd and t.healthcheck
    return NAME


def _server_is_current(store: TemplateStore) -> bool:
    installed = store.dir(NAME) / "rootfs" / code_interpreter_image.INSTALL_DIR / "codeinterp"
    sources = sorted(Path(codeinterp.__file__).parent.glob("*.py"))
    return all(
        (installed / f.name).is_file() and (installed / f.name).read_bytes() == f.read_bytes()
        for f in sources
    )


@pytest.fixture(scope="module")
async def server(
    template: str, agent_process: AgentProcess, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, str]]:
    """The control plane over the real agent behind uvicorn (port proxy on `localhost:<port>`,
    as `wrenn up` sets it), the agent's built templates registered; one account's key."""
    port = free_port()
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("ci-controlplane"),
        dev_mode=True,
        agent_address=agent_process.target,
        agent_secret=SecretStr(SECRET),
        reconcile_interval_sec=0,
        proxy_domain=f"localhost:{port}",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        db: Database = app.state.db
        deadline = time.monotonic() + 30
        while True:  # the app's own start-up writes may hold SQLite's lock a moment
            try:
                async with db.sessionmaker() as session, session.begin():
                    await register_built_templates(session, data_dir=DATA_DIR)
                break
            except OperationalError:
                assert time.monotonic() < deadline, "the database stayed locked"
                await asyncio.sleep(0.1)
        async with served(app, port=port):
            url = f"http://localhost:{port}"
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                _token, key = await _account(http, "interpreter")
            yield {"api_url": url, "api_key": key, "sandbox_url": url, "port": str(port)}


def _lines(resp: httpx.Response) -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.text
    lines = [json.loads(line) for line in resp.text.splitlines() if line.strip()]
    assert lines[-1] == {"type": "end_of_execution"}
    return [line for line in lines[:-1] if line["type"] != "keepalive"]


async def test_the_server_through_the_port_proxy(server: dict[str, str]) -> None:
    key = {"X-API-Key": server["api_key"]}
    async with httpx.AsyncClient(base_url=server["api_url"], timeout=180) as http:
        resp = await http.post("/v1/capsules", json={"template": NAME}, headers=key)
        assert resp.status_code == 201, resp.text
        capsule_id = resp.json()["id"]
        try:
            host = {"Host": f"49999-{capsule_id}.localhost:{server['port']}"}
            h = {**key, **host}

            async def execute(body: dict[str, Any]) -> list[dict[str, Any]]:
                return _lines(await http.post("/execute", json=body, headers=h))

            # Healthy before create returned: the default context runs code at once.
            first = await execute(
                {"code": "import sys\nprint('out')\nprint('err', file=sys.stderr)\nx = 20\nx * 2"}
            )
            kinds = [line["type"] for line in first]
            assert kinds == ["number_of_executions", "stdout", "stderr", "result"], first
            assert first[1]["text"] == "out\n" and first[2]["text"] == "err\n"
            assert first[3]["text"] == "40" and first[3]["is_main_result"] is True
            # State is kept; a string result loses its repr quotes; env vars last one run.
            kept = await execute({"code": "import os\nos.environ.get('K', '-') + str(x)",
                                  "env_vars": {"K": "v"}})  # fmt: skip
            assert kept[-1]["text"] == "v20"
            assert (await execute({"code": "os.environ.get('K', '-')"}))[-1]["text"] == "-"
            failed = await execute({"code": "1 / 0"})
            error = next(line for line in failed if line["type"] == "error")
            assert (error["name"], error["value"]) == ("ZeroDivisionError", "division by zero")
            assert "ZeroDivisionError" in error["traceback"]
            drawn = await execute({"code": PLOT})
            png = [line["png"] for line in drawn if line.get("png")]
            assert len(png) == 1 and base64.b64decode(png[0]).startswith(PNG)
            html = await execute({"code": "import pandas as pd\npd.DataFrame({'a': [1, 2]})"})
            assert "<table" in html[-1]["html"] and html[-1]["text"]

            # Contexts: their own state and directory; restart forgets; remove is gone.
            made = await http.post("/contexts", json={"cwd": "/tmp"}, headers=h)
            assert made.status_code == 200, made.text
            ctx = made.json()
            assert (ctx["language"], ctx["cwd"]) == ("python", "/tmp")
            listed = (await http.get("/contexts", headers=h)).json()
            assert ctx in listed and len(listed) == 2
            mine = await execute({"code": "import os\ny = 1\nos.getcwd()", "context_id": ctx["id"]})
            assert mine[-1]["text"] == "/tmp"
            other = await execute({"code": "'y' in dir()"})  # the default context
            assert other[-1]["text"] == "False"
            restarted = await http.post(f"/contexts/{ctx['id']}/restart", headers=h)
            assert restarted.status_code == 200, restarted.text
            again = await execute(
                {"code": "'y' in dir(), __import__('os').getcwd()", "context_id": ctx["id"]}
            )
            assert again[-1]["text"] == "(False, '/tmp')"  # a fresh kernel, same directory
            # A kernel that dies is reported and replaced.
            died = await execute({"code": "import os\nos._exit(1)", "context_id": ctx["id"]})
            assert [line.get("name") for line in died][-1:] == ["KernelDied"], died
            assert (await execute({"code": "7", "context_id": ctx["id"]}))[-1]["text"] == "7"
            assert (await http.delete(f"/contexts/{ctx['id']}", headers=h)).status_code == 200
            gone = await http.post(
                "/execute", json={"code": "1", "context_id": ctx["id"]}, headers=h
            )
            assert gone.status_code == 404
            assert (
                await http.post("/contexts", json={"language": "cobol"}, headers=h)
            ).status_code == 400

            # Without credentials the proxy answers, not the server.
            assert (
                await http.post("/execute", json={"code": "1"}, headers=host)
            ).status_code == 401
        finally:
            await http.delete(f"/v1/capsules/{capsule_id}", headers=key)


BARS = (
    "import matplotlib.pyplot as plt\nplt.bar(['a', 'b'], [3, 5], label='sales')\n"
    "plt.title('Bars')\nplt.show()"
)
SCATTER = (
    "import matplotlib.pyplot as plt\nplt.scatter([1, 2], [3, 4], label='dots')\n"
    "plt.xlabel('x')\nplt.show()"
)


def _chart(chart: Any) -> tuple[Any, ...]:
    """What the SDK's chart models hold, as plain values."""
    if chart.type.value == "bar":
        return ("bar", chart.title, [(e.label, e.group, e.value) for e in chart.elements])
    points = [(e.label, [tuple(p) for p in e.points]) for e in chart.elements]
    return (chart.type.value, chart.title, chart.x_label, points)


def sdk_session(opts: dict[str, str]) -> dict[str, Any]:
    """What a user of E2B's code interpreter writes."""
    from e2b_code_interpreter import Sandbox

    seen: dict[str, Any] = {}
    sbx = Sandbox.create(NAME, envs={"GREETING": "from-create"}, **opts)
    try:
        seen["template"] = sbx.get_info().template_id
        # The sandbox's envs reach the kernel started before them; a call's own win for it.
        env = "import os\nos.environ.get('GREETING')"
        seen["envs"] = [
            sbx.run_code(env).text,
            sbx.run_code(env, envs={"GREETING": "per-call"}).text,
            sbx.run_code(env).text,
        ]
        out: list[str] = []
        execution = sbx.run_code("print('hello')\n6 * 7", on_stdout=lambda m: out.append(m.line))
        seen["stdout"], seen["text"] = execution.logs.stdout, execution.text
        seen["streamed"] = out
        seen["count"] = execution.execution_count
        chart = sbx.run_code(PLOT)
        seen["png"] = [r.png for r in chart.results if r.png]
        seen["charts"] = [_chart(r.chart) for r in chart.results if r.chart]
        for code in (BARS, SCATTER):
            seen["charts"] += [_chart(r.chart) for r in sbx.run_code(code).results if r.chart]
        failed = sbx.run_code("raise ValueError('nope')")
        assert failed.error is not None
        seen["error"] = (
            failed.error.name,
            failed.error.value,
            "ValueError" in failed.error.traceback,
        )
        context = sbx.create_code_context(cwd="/tmp")
        seen["context"] = (context.language, context.cwd)
        seen["envs"].append(sbx.run_code(env, context=context).text)
        sbx.run_code("z = 5", context=context)
        seen["in_context"] = sbx.run_code("z", context=context).text
        seen["listed"] = context.id in [c.id for c in sbx.list_code_contexts()]
        sbx.restart_code_context(context)
        seen["after_restart"] = sbx.run_code("'z' in dir()", context=context).text
        sbx.remove_code_context(context)
        seen["removed"] = context.id not in [c.id for c in sbx.list_code_contexts()]
        seen["language"] = sbx.run_code("1 + 1", language="python").text
    finally:
        sbx.kill()
    return seen


async def test_the_e2b_code_interpreter_sdk(server: dict[str, str]) -> None:
    opts = {k: server[k] for k in ("api_url", "api_key", "sandbox_url")}
    seen = await asyncio.to_thread(sdk_session, opts)
    assert seen["template"] == NAME
    assert seen["charts"] == [
        ("line", "", None, [("", [(1.0, 1.0), (2.0, 4.0), (3.0, 9.0)])]),
        ("bar", "Bars", [("a", "sales", 3.0), ("b", "sales", 5.0)]),
        ("scatter", "", "x", [("dots", [(1.0, 3.0), (2.0, 4.0)])]),
    ]
    assert seen["envs"] == ["from-create", "per-call", "from-create", "from-create"]
    assert (seen["stdout"], seen["text"], seen["streamed"]) == (["hello\n"], "42", ["hello\n"])
    assert seen["count"] and seen["count"] >= 1
    assert len(seen["png"]) == 1 and base64.b64decode(seen["png"][0]).startswith(PNG)
    assert seen["error"] == ("ValueError", "nope", True)
    assert seen["context"] == ("python", "/tmp")
    assert (seen["in_context"], seen["listed"]) == ("5", True)
    assert (seen["after_restart"], seen["removed"], seen["language"]) == ("False", True, "2")
