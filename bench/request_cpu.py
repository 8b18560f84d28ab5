"""CPU per control plane request, in-process (no network, no host agent): GET /v1/capsules with
an API key, and with the authentication cache on and off,
alternated in the same process so machine load affects both alike. With --exec, POST
/v1/capsules/{id}/exec (`true`) over the in-process fake host agent (tests/fakeagent), with the
capsule location cache on and off (the agent's own CPU is counted too: it is the same process).

    uv run python -m bench.request_cpu --requests 500 --rounds 4 [--exec] [--profile]

Uses a throwaway SQLite database (or --database-url). --profile prints cProfile's top functions of
one cached run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from tests.fakeagent import FakeAgentServer
from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.db.migrate import migrate
from wrenn_server.controlplane.services.auth_cache import AuthCache
from wrenn_server.controlplane.services.capsule_routes import CapsuleRoutes
from wrenn_server.controlplane.settings import Settings


async def _run(args: argparse.Namespace) -> None:
    if not args.exec:
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
            headers = {"X-API-Key": resp.json()["key"]}
            name, method, path, body = "GET /v1/capsules, auth cache", "GET", "/v1/capsules", None
            if agent is not None:
                resp = await client.post("/v1/capsules", json={}, headers=headers)
                resp.raise_for_status()
                name, method = "POST /v1/capsules/{id}/exec, location cache", "POST"
                path, body = f"/v1/capsules/{resp.json()['id']}/exec", {"cmd": "true"}

            async def burst(n: int) -> float:
                start = time.process_time()
                for _ in range(n):
                    r = await client.request(method, path, json=body, headers=headers)
                    assert r.status_code == 200, r.text
                return (time.process_time() - start) / n * 1000

            def cache(on: bool) -> None:
                if agent is None:
                    app.state.auth_cache = AuthCache(ttl=0.5 if on else 0)
                else:
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
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--exec", action="store_true", help="measure exec, not the list")
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
