"""CPU per control plane request, in-process (no network, no host agent): GET /v1/capsules with
an API key, and with the authentication cache on and off,
alternated in the same process so machine load affects both alike. With --exec, POST
/v1/capsules/{id}/exec (`true`) over the in-process fake host agent (tests/fakeagent), with the
capsule location cache on and off (the agent's own CPU is counted too: it is the same process).
With --e2b, the same command (`/bin/bash -l -c true`, as the `e2b` SDK's `commands.run` sends it)
through E2B's envd protocol: one Connect server stream `process.Process/Start` in JSON with the
capsule's envd access token, the capsule location and authentication caches on and off.
With --capsules N, the listed team has N capsules (made over the fake host agent), so the list
carries rows as it does in production.

    uv run python -m bench.request_cpu --requests 500 --rounds 4 [--exec | --e2b] [--profile]
    uv run python -m bench.request_cpu --capsules 5 [--profile]

Uses a throwaway SQLite database (or --database-url). --profile prints cProfile's top functions of
one cached run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import statistics
import struct
import tempfile
import time
from pathlib import Path

import httpx

from tests.fakeagent import FakeAgentServer
from wrenn_server.controlplane import ids
from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.db.migrate import migrate
from wrenn_server.controlplane.services.auth_cache import AuthCache
from wrenn_server.controlplane.services.capsule_routes import CapsuleRoutes
from wrenn_server.controlplane.settings import Settings


async def _run(args: argparse.Namespace) -> None:
    if not (args.exec or args.e2b or args.capsules):
        return await _measure(args, None)
    async with FakeAgentServer() as agent:
        await _measure(args, agent)


async def _measure(args: argparse.Namespace, agent: FakeAgentServer | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        await migrate(url)
        settings = Settings(
            data_dir=Path(tmp),
            database_url=url,
            jwt_secret="bench-secret-" + "x" * 40,  # type: ignore[arg-type]
            migrate_on_start=False,
            signup="open",
            reconcile_interval_sec=0,
            stats_sample_interval_sec=0,
            **(
                {"agent_address": agent.target, "agent_secret": agent.secret}
                if agent is not None
                else {}
            ),
        )
        app = create_app(settings)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://wrenn.bench") as client,
        ):
            resp = await client.post(
                "/v1/auth/signup",
                json={
                    "email": "bench@example.com",
                    "password": "correct horse battery",
                    "name": "B",
                },
            )
            resp.raise_for_status()
            token = resp.json()["token"]
            resp = await client.post(
                "/v1/api-keys", json={"name": "bench"}, headers={"Authorization": f"Bearer {token}"}
            )
            resp.raise_for_status()
            team_id = ids.TEAM.parse(resp.json()["team_id"])
            headers = {"X-API-Key": resp.json()["key"]}
            name, method, path = "GET /v1/capsules, auth cache", "GET", "/v1/capsules"
            body: dict[str, object] | None = None
            content: bytes | None = None
            for _ in range(args.capsules):  # rows for the list to carry
                (await client.post("/v1/capsules", json={}, headers=headers)).raise_for_status()
            if args.exec or args.e2b:
                resp = await client.post("/v1/capsules", json={}, headers=headers)
                resp.raise_for_status()
                cid = resp.json()["id"]
                name, method = "POST /v1/capsules/{id}/exec, location cache", "POST"
                path, body = f"/v1/capsules/{cid}/exec", {"cmd": "true"}
            if args.e2b:
                name, path, body = (
                    "E2B process.Process/Start, caches",
                    "/process.Process/Start",
                    None,
                )
                start = {"process": {"cmd": "/bin/bash", "args": ["-l", "-c", "true"]}}
                content = _envelope(start)
                token = app.state.codec.issue_e2b_access(cid, team_id, "envd")
                headers = {
                    "Content-Type": "application/connect+json",
                    "Connect-Protocol-Version": "1",
                    "Connect-Timeout-Ms": "60000",
                    "Keepalive-Ping-Interval": "50",
                    "E2b-Sandbox-Id": cid,
                    "E2b-Sandbox-Port": "49983",
                    "X-Access-Token": token,
                }

            async def burst(n: int) -> float:
                start = time.process_time()
                for _ in range(n):
                    r = await client.request(
                        method, path, json=body, content=content, headers=headers
                    )
                    assert r.status_code == 200, r.text
                    if args.e2b:
                        _check_stream(r.content)
                return (time.process_time() - start) / n * 1000

            if args.pre_ping:
                name = "GET /v1/capsules, PostgreSQL pool pre-ping (auth cache on)"

            def cache(on: bool) -> None:
                if args.pre_ping:  # the cache stays on; the pool pings each checkout or not
                    app.state.db.engine.sync_engine.pool._pre_ping = on
                    return
                if not args.exec:
                    app.state.auth_cache = AuthCache(ttl=0.5 if on else 0)
                if args.exec or args.e2b:
                    app.state.hosts.routes = CapsuleRoutes(ttl=0.5 if on else 0)

            await burst(50)
            results: dict[str, list[float]] = {"off": [], "on": []}
            for _ in range(args.rounds):
                for mode in ("off", "on"):
                    cache(mode == "on")
                    results[mode].append(await burst(args.requests))
            for mode, values in results.items():
                print(
                    f"{name} {mode}: "
                    f"{statistics.median(values):.2f} ms CPU/request "
                    f"(rounds: {', '.join(f'{v:.2f}' for v in values)})"
                )
            if args.profile:
                cache(True)
                profiler = cProfile.Profile()
                profiler.enable()
                await burst(args.requests)
                profiler.disable()
                pstats.Stats(profiler).sort_stats(args.sort).print_stats(40)


def _envelope(message: dict[str, object]) -> bytes:
    """One Connect stream message: flags, big-endian length, the JSON."""
    data = json.dumps(message).encode()
    return struct.pack(">BI", 0, len(data)) + data


def _check_stream(raw: bytes) -> None:
    """A Start stream's answer: its events end with the process's end and a clean end-stream."""
    kinds: list[str] = []
    while raw:
        flags, size = struct.unpack(">BI", raw[:5])
        message, raw = json.loads(raw[5 : 5 + size]), raw[5 + size :]
        if flags & 2:
            assert "error" not in message, message
        else:
            kinds.extend(message["event"])
    assert kinds[0] == "start" and kinds[-1] == "end", kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sort", default="cumulative", help="cProfile's order (e.g. tottime)")
    parser.add_argument("--exec", action="store_true", help="measure exec, not the list")
    parser.add_argument(
        "--capsules", type=int, default=0, help="capsules in the listed team (fake host agent)"
    )
    parser.add_argument(
        "--pre-ping",
        action="store_true",
        help="alternate the pool's pre-ping off and on instead (needs a PostgreSQL --database-url)",
    )
    parser.add_argument("--e2b", action="store_true", help="measure E2B's Start, not the list")
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
