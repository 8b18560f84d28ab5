"""Soak bench: N clients for a while doing random create / exec / file write+read / pause /
resume / snapshot / destroy through the REST API, each checking after every step what the
platform promised: a capsule the API says is running answers a command and still has its
counter; a paused one resumes with its files and counter; the API lists exactly the capsules
the client has (none lost, none extra); no 5xx other than the documented 503s (the host is
full or unreachable), which must leave the capsule as it was. At the end every capsule is
destroyed and, with an agent data dir given, the host is checked for leftovers
(tests/integration/leaks.py). Prints operation counts, refusals and violations; exits 1 on
any violation. Local addresses only.

    sudo uv run python -m bench.soak [--clients 6] [--minutes 10] [--seed N]

starts its own host agent (--data-dir, default /var/lib/wrenn-soak; the base template is
built there on first use) and control plane (SQLite in a temporary dir); or drives a running
control plane: --base-url http://127.0.0.1:8080 (open signup) [--agent-data-dir DIR].
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

# The documented 503 codes: the host has no room (its disk, memory, addresses) or cannot be
# reached now. Both promise the capsule is left as it was.
REFUSALS = {"no_hosts_available", "host_unavailable"}
MAX_CAPSULES = 2  # per client
DIR = "/var/tmp/soak"  # world-writable on any template, on the capsule's disk
OPS = {"create": 2, "exec": 5, "files": 4, "pause": 2, "resume": 2, "snapshot": 1, "destroy": 1}


@dataclass
class Capsule:
    cid: str
    status: str = "running"
    counter: int = 0
    files: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Tally:
    ops: collections.Counter[str] = field(default_factory=collections.Counter)
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    violations: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def violation(self, client: int, what: str) -> None:
        line = f"[{time.monotonic() - self.started:7.1f}s] client {client}: {what}"
        self.violations.append(line)
        print(f"VIOLATION {line}", flush=True)


class Refused(Exception):
    """A documented 503: the operation did nothing."""


class Client:
    def __init__(self, n: int, http: httpx.AsyncClient, tally: Tally, rng: random.Random) -> None:
        self.n, self.http, self.tally, self.rng = n, http, tally, rng
        self.capsules: dict[str, Capsule] = {}
        self.steps = 0

    # -- calls ---------------------------------------------------------------------------

    async def call(self, what: str, method: str, url: str, **kw: Any) -> httpx.Response:
        resp = await self.http.request(method, url, **kw)
        if resp.status_code >= 500:
            code = _code(resp)
            if resp.status_code == 503 and code in REFUSALS:
                self.tally.refused[f"{what} {code}"] += 1
                raise Refused(code)
            raise AssertionError(f"{what}: {resp.status_code} {resp.text[:300]}")
        return resp

    async def expect(self, what: str, resp: httpx.Response, status: int) -> httpx.Response:
        if resp.status_code != status:
            raise AssertionError(f"{what}: {resp.status_code} {resp.text[:300]}")
        return resp

    async def exec(self, cid: str, cmd: str) -> str:
        body = {"cmd": cmd, "user": "root", "timeout_sec": 60}
        resp = await self.call("exec", "POST", f"/v1/capsules/{cid}/exec", json=body)
        await self.expect("exec", resp, 200)
        out = resp.json()
        if out["exit_code"] != 0:
            raise AssertionError(f"exec {cmd!r} exited {out['exit_code']}: {out['stderr'][:200]}")
        return str(out["stdout"])

    async def status(self, cid: str) -> str:
        resp = await self.call("get", "GET", f"/v1/capsules/{cid}")
        await self.expect("get", resp, 200)
        return str(resp.json()["status"])

    # -- operations ----------------------------------------------------------------------

    async def step(self) -> None:
        self.steps += 1
        running = [c for c in self.capsules.values() if c.status == "running"]
        paused = [c for c in self.capsules.values() if c.status == "paused"]
        choices = [op for op in OPS if self._possible(op, running, paused)]
        op = self.rng.choices(choices, weights=[OPS[o] for o in choices])[0]
        pick = self.rng.choice
        capsule: Capsule | None = None
        try:
            if op == "create":
                capsule = await self.create()
            elif op in ("exec", "files", "pause"):
                capsule = pick(running)
                await {"exec": self.bump, "files": self.files, "pause": self.pause}[op](capsule)
            elif op == "resume":
                capsule = pick(paused)
                await self.resume(capsule)
            elif op == "snapshot":
                capsule = pick(running + paused)
                await self.snapshot(capsule)
            else:
                capsule = pick(list(self.capsules.values()))
                await self.destroy(capsule)
            self.tally.ops[op] += 1
        except Refused:
            pass
        except (AssertionError, httpx.HTTPError) as e:
            self.tally.violation(self.n, f"{op} {capsule.cid if capsule else ''}: {e!r}"[:600])
        await self.check(capsule)

    def _possible(self, op: str, running: list[Capsule], paused: list[Capsule]) -> bool:
        return {
            "create": len(self.capsules) < MAX_CAPSULES,
            "exec": bool(running),
            "files": bool(running),
            "pause": bool(running),
            "resume": bool(paused),
            "snapshot": bool(running or paused),
            "destroy": bool(self.capsules),
        }[op]

    async def create(self) -> Capsule:
        resp = await self.call("create", "POST", "/v1/capsules", json={"timeout_sec": 0})
        await self.expect("create", resp, 201)
        capsule = Capsule(resp.json()["id"])
        self.capsules[capsule.cid] = capsule
        await self.exec(capsule.cid, f"mkdir -p {DIR} && echo 0 > {DIR}/counter")
        return capsule

    async def bump(self, capsule: Capsule) -> None:
        """The capsule's counter, one up: a command that reads and writes its disk."""
        got = await self.exec(
            capsule.cid, f"c=$(cat {DIR}/counter); echo $((c+1)) | tee {DIR}/counter"
        )
        capsule.counter += 1
        if got.strip() != str(capsule.counter):
            raise AssertionError(f"counter {got.strip()!r}, expected {capsule.counter}")

    async def files(self, capsule: Capsule) -> None:
        path = f"{DIR}/f{self.rng.randrange(4)}"
        data = secrets.token_bytes(self.rng.choice((0, 100, 5000, 300_000)))
        url = f"/v1/capsules/{capsule.cid}/files"
        files = {"file": ("f", data, "application/octet-stream")}
        resp = await self.call("write", "POST", f"{url}/write", data={"path": path}, files=files)
        if resp.status_code not in (200, 204):
            raise AssertionError(f"write: {resp.status_code} {resp.text[:300]}")
        capsule.files[path] = data
        got = await self.call("read", "POST", f"{url}/read", json={"path": path})
        await self.expect("read", got, 200)
        if got.content != data:
            raise AssertionError(f"{path} read back {len(got.content)} bytes, wrote {len(data)}")

    async def pause(self, capsule: Capsule) -> None:
        resp = await self.call("pause", "POST", f"/v1/capsules/{capsule.cid}/pause")
        await self.expect("pause", resp, 200)
        capsule.status = "paused"

    async def resume(self, capsule: Capsule) -> None:
        resp = await self.call("resume", "POST", f"/v1/capsules/{capsule.cid}/resume")
        await self.expect("resume", resp, 200)
        capsule.status = "running"
        await self.verify_contents(capsule)

    async def snapshot(self, capsule: Capsule) -> None:
        name = f"soak-{self.n}-{self.steps}-{secrets.token_hex(3)}"
        body = {"sandbox_id": capsule.cid, "name": name}
        resp = await self.call("snapshot", "POST", "/v1/snapshots", json=body)
        await self.expect("snapshot", resp, 201)
        # A snapshot checkpoints the capsule: it is paused afterwards.
        capsule.status = "paused"
        resp = await self.call("delete snapshot", "DELETE", f"/v1/snapshots/{name}")
        await self.expect("delete snapshot", resp, 204)

    async def destroy(self, capsule: Capsule) -> None:
        resp = await self.call("destroy", "DELETE", f"/v1/capsules/{capsule.cid}")
        await self.expect("destroy", resp, 204)
        del self.capsules[capsule.cid]
        if (status := await self.status(capsule.cid)) != "stopped":
            raise AssertionError(f"destroyed capsule reads {status}")

    # -- invariants ----------------------------------------------------------------------

    async def verify_contents(self, capsule: Capsule) -> None:
        got = await self.exec(capsule.cid, f"cat {DIR}/counter")
        if got.strip() != str(capsule.counter):
            raise AssertionError(
                f"counter {got.strip()!r} after resume, expected {capsule.counter}"
            )
        for path, data in capsule.files.items():
            resp = await self.call("read", "POST", f"/v1/capsules/{capsule.cid}/files/read",
                                   json={"path": path})  # fmt: skip
            await self.expect("read", resp, 200)
            if resp.content != data:
                raise AssertionError(
                    f"{path}: {len(resp.content)} bytes after resume, not {len(data)}"
                )

    async def check(self, touched: Capsule | None) -> None:
        """After every step: the list is the client's capsules in their statuses; the one
        touched answers if running (its counter intact)."""
        try:
            resp = await self.call("list", "GET", "/v1/capsules")
            await self.expect("list", resp, 200)
            listed = {c["id"]: c["status"] for c in resp.json()}
            mine = {c.cid: c.status for c in self.capsules.values()}
            if listed != mine:
                self.tally.violation(self.n, f"the API lists {listed}, the client has {mine}")
                for cid, status in listed.items():  # go on from what the API says
                    if cid in self.capsules and status in ("running", "paused"):
                        self.capsules[cid].status = status
            if touched is not None and touched.cid in self.capsules and touched.status == "running":
                got = await self.exec(touched.cid, f"cat {DIR}/counter")
                if got.strip() != str(touched.counter):
                    raise AssertionError(f"counter {got.strip()!r}, expected {touched.counter}")
        except Refused:
            pass
        except (AssertionError, httpx.HTTPError) as e:
            self.tally.violation(self.n, f"check: {e!r}"[:600])

    async def cleanup(self) -> None:
        for capsule in list(self.capsules.values()):
            try:
                await self.destroy(capsule)
            except (Refused, AssertionError, httpx.HTTPError) as e:
                self.tally.violation(self.n, f"final destroy {capsule.cid}: {e!r}"[:600])


def _code(resp: httpx.Response) -> str:
    try:
        return str(resp.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


async def _account(http: httpx.AsyncClient, n: int) -> str:
    body = {"email": f"soak-{n}-{secrets.token_hex(4)}@example.com", "password": "soak-" * 3,
            "name": f"Soak {n}"}  # fmt: skip
    resp = await http.post("/v1/auth/signup", json=body)
    assert resp.status_code == 201, f"signup: {resp.status_code} {resp.text[:300]} (open signup?)"
    token = resp.json()["token"]
    made = await http.post(
        "/v1/api-keys", json={"name": "soak"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert made.status_code == 201, made.text
    return str(made.json()["key"])


async def soak(
    base_url: str,
    *,
    clients: int = 6,
    seconds: float = 600,
    seed: int | None = None,
    agent_data_dir: Path | None = None,
) -> Tally:
    """Run the soak; the returned tally holds counts and violations."""
    seed = seed if seed is not None else random.randrange(1 << 30)
    print(
        f"soak: {clients} clients for {seconds:.0f} s against {base_url} (seed {seed})", flush=True
    )
    tally = Tally()
    deadline = time.monotonic() + seconds
    timeout = httpx.Timeout(300, connect=30)

    async def one(n: int) -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=timeout, trust_env=False) as anon:
            key = await _account(anon, n)
        async with httpx.AsyncClient(
            base_url=base_url, headers={"X-API-Key": key}, timeout=timeout, trust_env=False
        ) as http:
            client = Client(n, http, tally, random.Random(seed + n))
            while time.monotonic() < deadline:
                await client.step()
            await client.cleanup()

    await asyncio.gather(*(one(n) for n in range(clients)))
    if agent_data_dir is not None:
        await _check_leaks(agent_data_dir, tally)
    _print(tally)
    return tally


async def _check_leaks(data_dir: Path, tally: Tally) -> None:
    from tests.integration.leaks import leaks

    # Cleanups the agent finishes in the background (a lazy unmount) get a minute.
    for _ in range(120):
        if not (found := leaks(data_dir)):
            break
        await asyncio.sleep(0.5)
    for leak in found:
        tally.violation(-1, f"leaked after the final destroys: {leak}")


def _print(tally: Tally) -> None:
    took = time.monotonic() - tally.started
    total = sum(tally.ops.values())
    print(f"\nsoak finished after {took:.0f} s: {total} operations", flush=True)
    for op in OPS:
        print(f"  {op:<10} {tally.ops[op]:6d}")
    refused = sum(tally.refused.values())
    print(f"  refused (documented 503s) {refused}: {dict(tally.refused) or '-'}")
    print(f"violations: {len(tally.violations)}")
    for line in tally.violations:
        print(f"  {line}")


# -- a platform of its own ------------------------------------------------------------------


@contextlib.contextmanager
def _platform(data_dir: Path) -> Iterator[str]:
    from tests.server_process import start_server

    from ._common import agent

    secret = secrets.token_urlsafe(24)
    with (
        agent(data_dir, secret, subnet="10.203.0.0/16") as target,
        tempfile.TemporaryDirectory(prefix="wrenn-soak-cp-") as cp_dir,
    ):
        env = {
            **os.environ,
            "WRENN_AGENT_ADDRESS": target,
            "WRENN_AGENT_SECRET": secret,
            "WRENN_JWT_SECRET": secrets.token_urlsafe(32),
            "WRENN_SIGNUP": "open",
            "WRENN_LOG_LEVEL": "WARNING",
        }
        proc, url, log = start_server(Path(cp_dir), env)
        try:
            yield url
        finally:
            proc.terminate()
            proc.wait(30)
            shutil.copy(log, data_dir.parent / "soak-controlplane.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--base-url", help="a running control plane (else one is started)")
    parser.add_argument("--agent-data-dir", type=Path, help="with --base-url: leak checks")
    parser.add_argument("--data-dir", type=Path, default=Path("/var/lib/wrenn-soak"))
    args = parser.parse_args()
    seconds = args.minutes * 60

    if args.base_url:
        tally = asyncio.run(soak(args.base_url, clients=args.clients, seconds=seconds,
                                 seed=args.seed, agent_data_dir=args.agent_data_dir))  # fmt: skip
    else:
        if os.geteuid() != 0:
            raise SystemExit("starting a host agent needs root")
        args.data_dir.mkdir(parents=True, exist_ok=True)
        with _platform(args.data_dir) as url:
            tally = asyncio.run(soak(url, clients=args.clients, seconds=seconds, seed=args.seed,
                                     agent_data_dir=args.data_dir))  # fmt: skip
    sys.exit(1 if tally.violations else 0)


if __name__ == "__main__":
    main()
