"""What making an envd client costs the host agent: one is made for every cold create and
resume, on the event loop every capsule shares. envd speaks plain HTTP, so the client loads no
CA bundle (~13 ms each when it did), and it still reaches envd."""

from __future__ import annotations

import ssl

import pytest

from tests.unit.hostagent.fake_envd import Answer, FakeEnvd
from wrenn_server.hostagent.envd_client import EnvdClient


async def test_an_envd_client_loads_no_ca_bundle_and_answers(
    envd: FakeEnvd, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[object] = []
    real = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *args: object, **kwargs: object) -> None:
        loaded.append(args or kwargs)
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    envd.answers["/health"] = Answer(body=b'{"status": "ok", "version": "1.2.3"}')
    client = EnvdClient("127.0.0.1", envd.port, "t0ken")
    try:
        assert loaded == []
        assert await client.wait_ready(timeout=5) == "1.2.3"
    finally:
        await client.aclose()
