"""An image template's start command and healthcheck (template_start.py) against a real envd
running as a local process: create returns only once the service is healthy, the service
outlives the request that started it, and one that never comes up fails with its output."""

from __future__ import annotations

import shlex
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.unit.envd.conftest import Envd
from tests.waiting import wait_for
from wrenn_server.hostagent import errors, template_start
from wrenn_server.hostagent.envd_client import EnvdClient
from wrenn_server.hostagent.templates import IMAGE, Template


@pytest.fixture
def envd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Envd]:
    # The start log goes to the capsule's /var/log; here, to the test's directory.
    monkeypatch.setattr(template_start, "LOG", str(tmp_path / "start.log"))
    server = Envd(stderr_path=tmp_path / "envd.stderr")
    yield server
    server.stop()


@pytest.fixture
async def client(envd: Envd) -> AsyncIterator[EnvdClient]:
    c = EnvdClient("127.0.0.1", envd.port, envd.token)
    yield c
    await c.aclose()


def _template(start: str | None, health: str | None, timeout: float = 20) -> Template:
    return Template(
        name="svc", type=IMAGE, created_at=0, start_cmd=start, healthcheck=health,
        start_timeout_sec=timeout,
    )  # fmt: skip


async def test_create_waits_until_the_service_is_healthy(
    client: EnvdClient, tmp_path: Path
) -> None:
    ready, alive = tmp_path / "ready", tmp_path / "alive"
    # Becomes healthy after a while, then keeps running long after the request that started it.
    start = f"sleep 0.5; touch {ready}; for i in $(seq 100); do touch {alive}; sleep 0.1; done"
    started = time.monotonic()
    await template_start.start_services(
        client, _template(start, f"test -f {shlex.quote(str(ready))}")
    )
    assert ready.exists() and time.monotonic() - started >= 0.5
    alive.unlink(missing_ok=True)

    await wait_for(alive.exists, 10, what="the service still running")


async def test_a_service_that_never_comes_up_fails_with_its_output(client: EnvdClient) -> None:
    start = "echo starting on 8888; echo 'ImportError: no module named jupyter_server' >&2"
    with pytest.raises(errors.Unavailable) as err:
        await template_start.start_services(client, _template(start, "false", timeout=1.5))
    assert "did not become healthy in 2 s" in err.value.args[0]
    assert "ImportError: no module named jupyter_server" in err.value.args[0]


async def test_a_hung_healthcheck_is_cut_off_by_the_deadline(
    client: EnvdClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(template_start, "CHECK_TIMEOUT_SEC", 30.0)
    started = time.monotonic()
    with pytest.raises(errors.Unavailable):
        await template_start.start_services(client, _template("true", "sleep 60", timeout=1))
    assert time.monotonic() - started < 10


async def test_without_a_healthcheck_or_a_command(client: EnvdClient, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    await template_start.start_services(client, _template(f"touch {marker}", None))

    await wait_for(marker.exists, 10, what="the command started")
    # A template without a start command starts nothing (and asks envd nothing).
    await template_start.start_services(
        EnvdClient("127.0.0.1", 9, "unused"), _template(None, "false")
    )
