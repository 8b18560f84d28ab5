"""A real capsule's listening ports over REST: web servers started in it (on loopback only and
on every address) appear in GET /v1/capsules/{id}/ports with their process, each URL reaches
its server through the port proxy, envd's own port is never listed, and a server that stops
leaves the list."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from ..waiting import wait_for
from .rest_fixtures import Account, make_capsule, new_account

pytestmark = pytest.mark.integration

SERVERS = {
    8123: ["-m", "http.server", "8123", "--bind", "127.0.0.1"],
    8124: ["-m", "http.server", "8124", "--bind", "0.0.0.0"],
}
Ports = dict[int, dict[str, Any]]


async def start(api: httpx.AsyncClient, user: Account, cid: str, args: list[str]) -> int:
    resp = await api.post(
        f"/v1/capsules/{cid}/exec",
        json={"cmd": "python3", "args": args, "background": True, "cwd": "/tmp"},
        headers=user.h,
    )
    assert resp.status_code == 202, resp.text
    return int(resp.json()["pid"])


async def ports_until(
    api: httpx.AsyncClient, user: Account, cid: str, done: Callable[[Ports], bool], what: str
) -> Ports:
    """GET the ports until `done(ports by number)` holds (30 s at most)."""

    async def check() -> Ports | None:
        resp = await api.get(f"/v1/capsules/{cid}/ports", headers=user.h)
        assert resp.status_code == 200, resp.text
        listed = [p["port"] for p in resp.json()["ports"]]
        assert listed == sorted(set(listed)), listed  # one entry per port, in order
        ports = {p["port"]: p for p in resp.json()["ports"]}
        return ports if done(ports) else None

    ports: Ports = await wait_for(check, 30, interval=0.1, what=what)
    return ports


async def test_listening_ports_of_a_real_capsule(api: httpx.AsyncClient) -> None:
    user = await new_account(api)
    cid = (await make_capsule(api, user))["id"]
    pids = {port: await start(api, user, cid, args) for port, args in SERVERS.items()}

    ports = await ports_until(
        api,
        user,
        cid,
        lambda ports: all(p in ports and ports[p]["pid"] is not None for p in SERVERS),
        "both servers listed with their process",
    )
    for port, args in SERVERS.items():
        assert ports[port] == {
            "port": port,
            "address": args[-1],
            "pid": pids[port],
            "command": " ".join(["python3", *args]),
            "url": f"http://{port}-{cid}.wrenn.test",
        }
    assert 49983 not in ports  # envd's own

    # Each URL reaches its server through the port proxy (loopback-only included).
    for port in SERVERS:
        url = httpx.URL(ports[port]["url"])
        resp = await api.get("/", headers={"Host": url.netloc.decode(), **user.h})
        assert resp.status_code == 200 and "Directory listing" in resp.text, resp.text

    resp = await api.delete(f"/v1/capsules/{cid}/processes/{pids[8123]}", headers=user.h)
    assert resp.status_code == 204, resp.text
    ports = await ports_until(
        api, user, cid, lambda ports: 8123 not in ports, "the stopped server gone"
    )
    assert 8124 in ports
