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
With --create, each request is a create (POST /v1/capsules, default body) and its first command
(POST /v1/capsules/{id}/exec, `true`), as a client starts a capsule; the capsule is destroyed
untimed after it. Prints CPU and wall time per create + exec (median and p95 of all requests), and
the SQL statements, transactions, commits and pool checkouts (on PostgreSQL each checkout is a
pre-ping round trip, each transaction a BEGIN and a COMMIT one) of one create, of one exec, and
in the background meanwhile (the event hub's reads).

    uv run python -m bench.request_cpu --requests 500 --rounds 4 [--exec | --e2b] [--profile]
    uv run python -m bench.request_cpu --capsules 5 [--profile]
    uv run python -m bench.request_cpu --create --requests 200 [--postgres] [--profile]

Uses a throwaway SQLite database, or --database-url, or with --postgres a throwaway PostgreSQL
cluster (as the tests start one: durability off, so commits cost a round trip, not a flush).
--profile prints cProfile's top functions of one cached run.
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
from collections.abc import Callable
from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fakeagent import FakeAgentServer
from wrenn_server.controlplane import ids
from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.db.migrate import migrate
from wrenn_server.controlplane.services.auth_cache import AuthCache
from wrenn_server.controlplane.services.capsule_routes import CapsuleRoutes
from wrenn_server.controlplane.settings import Settings


async def _run(args: argparse.Namespace) -> None:
    if args.postgres:
        return await _on_postgres(args)
    if not (args.exec or args.e2b or args.capsules or args.create):
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
        # Listened to before the lifespan's loops send SQL (a listener added while the engine
        # runs its "begin" listeners would change the list they iterate).
        counter = _SqlCounter(app.state.db.engine) if args.create else None
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
            if counter is not None:
                return await _measure_create(args, app, client, headers, counter)
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


async def _on_postgres(args: argparse.Namespace) -> None:
    """The run against a throwaway PostgreSQL cluster, started as the tests start theirs."""
    from tests.controlplane.pgcluster import find_pg_bin, start_cluster

    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise SystemExit("PostgreSQL binaries not found (install postgresql)")
    cluster = start_cluster(bin_dir)
    try:
        args.database_url, args.postgres = cluster.create_database("bench"), False
        await _run(args)
    finally:
        cluster.stop()


class _SqlCounter:
    """What the engine sends, counted from its events: on the request's path (the bench's own
    task, in which the ASGI transport runs the app) and in the background (the event hub's
    reads, other loops)."""

    NAMES = ("statements", "transactions", "commits", "checkouts")

    def __init__(self, engine: AsyncEngine) -> None:
        self._task = asyncio.current_task()  # the bench's, which runs the requests
        self.counts = self._zero()
        sync = engine.sync_engine

        def bump(name: str) -> Callable[..., None]:
            def listener(*_args: object) -> None:
                where = "request" if asyncio.current_task() is self._task else "background"
                self.counts[(where, name)] += 1

            return listener

        event.listen(sync, "before_cursor_execute", bump("statements"))
        event.listen(sync, "begin", bump("transactions"))
        event.listen(sync, "commit", bump("commits"))
        event.listen(sync.pool, "checkout", bump("checkouts"))

    def _zero(self) -> dict[tuple[str, str], int]:
        return {(w, n): 0 for w in ("request", "background") for n in self.NAMES}

    def take(self) -> dict[tuple[str, str], int]:
        counts, self.counts = self.counts, self._zero()
        return counts


async def _measure_create(
    args: argparse.Namespace,
    app: FastAPI,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    counter: _SqlCounter,
) -> None:
    per_step: dict[str, list[dict[tuple[str, str], int]]] = {"create": [], "exec": []}

    async def create_and_exec() -> tuple[float, float, float]:
        """CPU and wall time (ms) of one create and its first command, and the create's wall."""
        cpu, wall = time.process_time(), time.perf_counter()
        counter.take()
        resp = await client.post("/v1/capsules", json={}, headers=headers)
        assert resp.status_code == 201, resp.text
        created = time.perf_counter()
        per_step["create"].append(counter.take())
        cid = resp.json()["id"]
        resp = await client.post(f"/v1/capsules/{cid}/exec", json={"cmd": "true"}, headers=headers)
        assert resp.status_code == 200 and resp.json()["exit_code"] == 0, resp.text
        per_step["exec"].append(counter.take())
        done = time.perf_counter()
        cpu = time.process_time() - cpu
        resp = await client.delete(f"/v1/capsules/{cid}", headers=headers)  # untimed
        assert resp.status_code == 204, resp.text
        return cpu * 1000, (done - wall) * 1000, (created - wall) * 1000

    async def burst(n: int) -> list[tuple[float, float, float]]:
        return [await create_and_exec() for _ in range(n)]

    await burst(20)
    samples: list[tuple[float, float, float]] = []
    for round_no in range(args.rounds):
        got = await burst(args.requests)
        samples += got
        print(
            f"round {round_no + 1}: {statistics.median(s[0] for s in got):.2f} ms CPU, "
            f"{statistics.median(s[1] for s in got):.2f} ms wall per create + exec (median)"
        )
    labels = ("CPU per create + exec", "wall per create + exec", "wall per create")
    for i, label in enumerate(labels):
        values = [s[i] for s in samples]
        p95 = statistics.quantiles(values, n=20)[-1]
        print(
            f"{app.state.db.dialect}, {label}: {statistics.median(values):.2f} ms median, "
            f"{p95:.2f} ms p95 ({len(values)} requests)"
        )

    def usual(where: str, *steps: str) -> str:
        """The most frequent count over the requests (a key's last-use write, a purge, are
        not the usual request)."""
        totals = [
            tuple(sum(per_step[step][i][(where, n)] for step in steps) for n in _SqlCounter.NAMES)
            for i in range(len(per_step["create"]))
        ]
        mode = statistics.mode(totals)
        return ", ".join(f"{n} {name}" for n, name in zip(mode, _SqlCounter.NAMES, strict=True))

    print(f"request, create: {usual('request', 'create')}")
    print(f"request, exec: {usual('request', 'exec')}")
    # The event hub reads after the create's commit, while the exec runs: both steps summed.
    print(f"background, create + exec: {usual('background', 'create', 'exec')}")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        await burst(args.requests)
        profiler.disable()
        pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.profile_filter, 40)


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
    parser.add_argument(
        "--profile-filter", default="", help="only the functions whose path matches (--create)"
    )
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
    parser.add_argument(
        "--create", action="store_true", help="measure a create and its first command"
    )
    parser.add_argument("--postgres", action="store_true", help="on a throwaway PostgreSQL cluster")
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
