"""Soak bench: N clients for a while doing random create / exec / file write+read / pause /
resume / snapshot / destroy through the REST API, each checking after every step what the
platform promised: a capsule the API says is running answers a command and still has its
counter; a paused one resumes with its files and counter; the API lists exactly the capsules
the client has (none lost, none extra); no 5xx other than the documented 503s (the host is
full or unreachable), which must leave the capsule as it was. At the end every capsule is
destroyed and, with an agent data dir given, the host is checked for leftovers
(tests/integration/leaks.py). Prints operation counts, refusals and violations; exits 1 on
any violation. Local addresses only.

With --chaos a fault injector (bench/chaos.py) kills -9 at random times the host agent, the
control plane or one capsule's sandbox processes, and restarts what it killed. An operation a
fault interrupted may end either way (a pause may leave the capsule paused or running), but never
in a lie: once the platform has settled, each client audits its capsules - every one the API
lists as running answers with the counter and files of its confirmed writes (an interrupted
write: the old or the new contents), every paused one resumes with them, stopped and error ones
carry a reason, none is lost, a capsule whose sandbox was killed is not listed running, and the
API agrees with the agent.

    sudo uv run python -m bench.soak [--clients 6] [--minutes 10] [--seed N]
        [--chaos [--fault-interval 30]]

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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .chaos import (
    MAX_INTERVAL_SEC,
    MIN_INTERVAL_SEC,
    SETTLE_SEC,
    AgentProcess,
    Chaos,
    Fault,
    ServerProcess,
    agent_view,
)

# The documented 503 codes: the host has no room (its disk, memory, addresses) or cannot be
# reached now. Both promise the capsule is left as it was.
REFUSALS = {"no_hosts_available", "host_unavailable"}
MAX_CAPSULES = 2  # per client
DIR = "/var/tmp/soak"  # world-writable on any template, on the capsule's disk
OPS = {"create": 2, "exec": 5, "files": 4, "pause": 2, "resume": 2, "snapshot": 1, "destroy": 1}
# Statuses a capsule passes through on its way to a settled one.
TRANSIENT = {"pending", "starting", "missing"}
ENDED = {"stopped", "error"}
EVERY_STATUS = "pending,starting,running,paused,hibernated,stopped,missing,error"


@dataclass
class Capsule:
    cid: str
    status: str = "running"
    counter: int | None = 0  # None: never confirmed (a create cut short)
    files: dict[str, bytes] = field(default_factory=dict)
    # What a fault may have cut short on it: the operation (its status may be either
    # outcome), a counter bump and a file write that may or may not have happened.
    unsure: str = ""
    bumped: int | None = None
    writing: tuple[str, bytes] | None = None


@dataclass
class Tally:
    ops: collections.Counter[str] = field(default_factory=collections.Counter)
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    # (operation, outcome): ok, refused (a documented 503), interrupted (by a fault), violation
    outcomes: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    # What the audits found after faults: capsules ended (error/stopped with a reason),
    # interrupted operations resolved either way.
    settled: collections.Counter[str] = field(default_factory=collections.Counter)
    chaos: Chaos | None = None
    violations: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def violation(self, client: int, what: str) -> None:
        line = f"[{time.monotonic() - self.started:7.1f}s] client {client}: {what}"
        self.violations.append(line)
        print(f"VIOLATION {line}", flush=True)


class Refused(Exception):
    """A documented 503: the operation did nothing."""


class Lie(AssertionError):
    """The platform confirmed something that is not so (wrong contents after a 200): a
    violation whatever faults struck."""


class Client:
    def __init__(self, n: int, http: httpx.AsyncClient, tally: Tally, rng: random.Random) -> None:
        self.n, self.http, self.tally, self.rng = n, http, tally, rng
        self.capsules: dict[str, Capsule] = {}
        self.steps = 0
        self.chaos = tally.chaos
        # Under chaos: a create whose answer never came (a capsule may exist), snapshots
        # whose deletion a fault cut short, capsules seen ended (kept out of later audits).
        self.creating = False
        self.snapshots: set[str] = set()
        self.ended: set[str] = set()

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
        chaos = self.chaos
        if chaos is None:
            await self._step(0)
            return
        while not chaos.gate.is_set():  # a fault is being recovered from and audited
            await chaos.gate.wait()
        epoch = chaos.epoch
        chaos.in_flight[self.n] = f"client {self.n}: starting a step"
        try:
            await self._step(epoch)
        finally:
            del chaos.in_flight[self.n]

    def _disturbed(self, epoch: int) -> bool:
        return self.chaos is not None and self.chaos.disturbed(epoch)

    async def _step(self, epoch: int) -> None:
        self.steps += 1
        running = [c for c in self.capsules.values() if c.status == "running"]
        paused = [c for c in self.capsules.values() if c.status == "paused"]
        choices = [op for op in OPS if self._possible(op, running, paused)]
        op = self.rng.choices(choices, weights=[OPS[o] for o in choices])[0]
        capsule: Capsule | None = None
        if op in ("exec", "files", "pause"):
            capsule = self.rng.choice(running)
        elif op == "resume":
            capsule = self.rng.choice(paused)
        elif op == "snapshot":
            capsule = self.rng.choice(running + paused)
        elif op == "destroy":
            capsule = self.rng.choice(list(self.capsules.values()))
        where = f"{op} {capsule.cid}" if capsule else op
        if self.chaos is not None:
            self.chaos.in_flight[self.n] = where
        outcome = "ok"
        try:
            if capsule is None:
                capsule = await self.create()
            else:
                await {"exec": self.bump, "files": self.files, "pause": self.pause,
                       "resume": self.resume, "snapshot": self.snapshot,
                       "destroy": self.destroy}[op](capsule)  # fmt: skip
            self.tally.ops[op] += 1
        except Refused:
            # Under a fault, the host may have gone away mid-call: either outcome.
            outcome = "interrupted" if self._disturbed(epoch) else "refused"
        except Lie as e:
            outcome = "violation"
            self.tally.violation(self.n, f"{where}: {e!r}"[:600])
        except (AssertionError, httpx.HTTPError) as e:
            outcome = "interrupted" if self._disturbed(epoch) else "violation"
            if outcome == "violation":
                self.tally.violation(self.n, f"{where}: {e!r}"[:600])
        self.tally.outcomes[op, outcome] += 1
        if outcome == "refused":  # a documented 503 did nothing
            self.creating = False
            if capsule is not None:
                capsule.unsure, capsule.bumped, capsule.writing = "", None, None
        if not self._disturbed(epoch):  # else the audit after the fault checks it
            await self.check(capsule, epoch)

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
        self.creating = True  # until the answer comes: a capsule may exist
        resp = await self.call("create", "POST", "/v1/capsules", json={"timeout_sec": 0})
        await self.expect("create", resp, 201)
        capsule = Capsule(resp.json()["id"], counter=None)
        self.capsules[capsule.cid] = capsule
        self.creating = False
        await self.init_counter(capsule)
        return capsule

    async def init_counter(self, capsule: Capsule) -> None:
        await self.exec(capsule.cid, f"mkdir -p {DIR} && echo 0 > {DIR}/counter")
        capsule.counter = 0

    async def bump(self, capsule: Capsule) -> None:
        """The capsule's counter, one up: a command that reads and writes its disk."""
        assert capsule.counter is not None  # running ones are audited after a fault
        capsule.bumped = capsule.counter + 1
        got = await self.exec(
            capsule.cid, f"c=$(cat {DIR}/counter); echo $((c+1)) | tee {DIR}/counter"
        )
        capsule.counter, capsule.bumped = capsule.counter + 1, None
        if got.strip() != str(capsule.counter):
            raise Lie(f"counter {got.strip()!r}, expected {capsule.counter}")

    async def files(self, capsule: Capsule) -> None:
        path = f"{DIR}/f{self.rng.randrange(4)}"
        data = secrets.token_bytes(self.rng.choice((0, 100, 5000, 300_000)))
        url = f"/v1/capsules/{capsule.cid}/files"
        files = {"file": ("f", data, "application/octet-stream")}
        capsule.writing = (path, data)
        resp = await self.call("write", "POST", f"{url}/write", data={"path": path}, files=files)
        if resp.status_code not in (200, 204):
            raise AssertionError(f"write: {resp.status_code} {resp.text[:300]}")
        capsule.files[path], capsule.writing = data, None
        got = await self.call("read", "POST", f"{url}/read", json={"path": path})
        await self.expect("read", got, 200)
        if got.content != data:
            raise Lie(f"{path} read back {len(got.content)} bytes, wrote {len(data)}")

    async def pause(self, capsule: Capsule) -> None:
        capsule.unsure = "pause"
        resp = await self.call("pause", "POST", f"/v1/capsules/{capsule.cid}/pause")
        await self.expect("pause", resp, 200)
        capsule.status, capsule.unsure = "paused", ""

    async def resume(self, capsule: Capsule) -> None:
        capsule.unsure = "resume"
        resp = await self.call("resume", "POST", f"/v1/capsules/{capsule.cid}/resume")
        await self.expect("resume", resp, 200)
        capsule.status, capsule.unsure = "running", ""
        await self.verify_contents(capsule)

    async def snapshot(self, capsule: Capsule) -> None:
        name = f"soak-{self.n}-{self.steps}-{secrets.token_hex(3)}"
        body = {"sandbox_id": capsule.cid, "name": name}
        capsule.unsure = "snapshot"
        self.snapshots.add(name)  # until deleted: a fault may leave it made
        resp = await self.call("snapshot", "POST", "/v1/snapshots", json=body)
        await self.expect("snapshot", resp, 201)
        # A snapshot checkpoints the capsule: it is paused afterwards.
        capsule.status, capsule.unsure = "paused", ""
        resp = await self.call("delete snapshot", "DELETE", f"/v1/snapshots/{name}")
        await self.expect("delete snapshot", resp, 204)
        self.snapshots.discard(name)

    async def destroy(self, capsule: Capsule) -> None:
        capsule.unsure = "destroy"
        resp = await self.call("destroy", "DELETE", f"/v1/capsules/{capsule.cid}")
        await self.expect("destroy", resp, 204)
        del self.capsules[capsule.cid]
        self.ended.add(capsule.cid)
        if (status := await self.status(capsule.cid)) != "stopped":
            raise Lie(f"destroyed capsule reads {status}")

    # -- invariants ----------------------------------------------------------------------

    async def verify_contents(self, capsule: Capsule) -> None:
        """The counter and files of the capsule's confirmed writes (where a fault cut a write
        short: the old or the new contents, which it then keeps as the truth)."""
        if capsule.counter is None:  # its create was cut short before the counter was set
            await self.init_counter(capsule)
        else:
            got = (await self.exec(capsule.cid, f"cat {DIR}/counter")).strip()
            counts = {str(capsule.counter)} | ({str(capsule.bumped)} if capsule.bumped else set())
            if got not in counts:
                raise Lie(f"counter {got!r}, expected {' or '.join(sorted(counts))}")
            capsule.counter, capsule.bumped = int(got), None
        writing = capsule.writing
        for path in sorted({*capsule.files, *([writing[0]] if writing else [])}):
            old = capsule.files.get(path)
            may = [
                d
                for d in (old, writing[1] if writing and writing[0] == path else None)
                if d is not None
            ]
            resp = await self.call("read", "POST", f"/v1/capsules/{capsule.cid}/files/read",
                                   json={"path": path})  # fmt: skip
            if resp.status_code == 404 and old is None:  # an interrupted first write
                continue
            await self.expect("read", resp, 200)
            if resp.content not in may:
                raise Lie(
                    f"{path}: {len(resp.content)} bytes, expected "
                    + " or ".join(f"{len(d)} bytes written" for d in may)
                )
            capsule.files[path] = resp.content
        capsule.writing = None

    async def check(self, touched: Capsule | None, epoch: int = 0) -> None:
        """After every step: the list is the client's capsules in their statuses; the one
        touched answers if running (its counter intact). What a fault striking meanwhile
        changed is left to the audit after it."""
        try:
            resp = await self.call("list", "GET", "/v1/capsules")
            await self.expect("list", resp, 200)
            listed = {c["id"]: c["status"] for c in resp.json()}
            mine = {c.cid: c.status for c in self.capsules.values()}
            if listed != mine and not self._disturbed(epoch):
                self.tally.violation(self.n, f"the API lists {listed}, the client has {mine}")
                for cid, status in listed.items():  # go on from what the API says
                    if cid in self.capsules and status in ("running", "paused"):
                        self.capsules[cid].status = status
            if touched is not None and touched.cid in self.capsules and touched.status == "running":
                got = await self.exec(touched.cid, f"cat {DIR}/counter")
                if got.strip() != str(touched.counter):
                    raise Lie(f"counter {got.strip()!r}, expected {touched.counter}")
        except Refused:
            pass
        except Lie as e:
            self.tally.violation(self.n, f"check: {e!r}"[:600])
        except (AssertionError, httpx.HTTPError) as e:
            if not self._disturbed(epoch):
                self.tally.violation(self.n, f"check: {e!r}"[:600])

    # -- after a fault -------------------------------------------------------------------

    async def audit(self, chaos: Chaos, fault: Fault) -> None:
        """Once the platform has settled after `fault` (no operation in flight): every
        capsule is what the API says - none lost, running ones answer with their counter and
        files, paused ones resume with them, ended ones carry a reason, a killed sandbox's
        capsule is not running - and the API has none the client did not make."""
        listed = await self._settled_list(chaos, fault)
        if listed is None:
            return
        for cid, capsule in list(self.capsules.items()):
            await self._audit_one(capsule, listed.get(cid), chaos, fault)
        for cid, (status, reason) in sorted(listed.items()):
            if cid in self.capsules or cid in self.ended:
                continue
            self.ended.add(cid)
            if not self.creating:
                self.tally.violation(self.n, f"the API lists {cid} ({status}), never made")
            elif status in ENDED:  # the interrupted create failed
                if not reason:
                    self.tally.violation(
                        self.n, f"{cid}: an interrupted create ended {status} with no reason"
                    )
                self.tally.settled[f"create cut short: {status}"] += 1
            else:  # the interrupted create made it
                self.ended.discard(cid)
                capsule = Capsule(cid, status=status, counter=None, unsure="create")
                self.capsules[cid] = capsule
                await self._audit_one(capsule, (status, reason), chaos, fault)
        self.creating = False
        for name in sorted(self.snapshots):
            with contextlib.suppress(httpx.HTTPError):
                resp = await self.http.delete(f"/v1/snapshots/{name}")
                if resp.status_code in (204, 404):
                    self.snapshots.discard(name)

    async def _listing(self) -> dict[str, tuple[str, str | None]]:
        resp = await self.call("list", "GET", "/v1/capsules", params={"status": EVERY_STATUS})
        await self.expect("list", resp, 200)
        return {c["id"]: (c["status"], c.get("status_reason")) for c in resp.json()}

    async def _settled_list(
        self, chaos: Chaos, fault: Fault
    ) -> dict[str, tuple[str, str | None]] | None:
        """The API's list of every capsule of the client once none is on its way somewhere
        and no capsule whose sandbox was killed is listed running."""
        deadline = time.monotonic() + SETTLE_SEC
        listed: dict[str, tuple[str, str | None]] | None = None
        last = ""
        while time.monotonic() < deadline:
            try:
                listed = await self._listing()
            except (Refused, AssertionError, httpx.HTTPError) as e:
                last = repr(e)
            else:
                unsettled = {
                    cid: status
                    for cid, (status, _) in listed.items()
                    if status in TRANSIENT or (cid in chaos.victims and status == "running")
                }
                if not unsettled:
                    return listed
                last = f"still {unsettled}"
            await asyncio.sleep(0.5)
        self.tally.violation(
            self.n, f"not settled {SETTLE_SEC:.0f} s after the {fault.kind} fault: {last}"[:600]
        )
        return listed

    async def _audit_one(
        self,
        capsule: Capsule,
        seen: tuple[str, str | None] | None,
        chaos: Chaos,
        fault: Fault,
    ) -> None:
        cid, was = capsule.cid, capsule.unsure or "no operation"
        victim = chaos.victims.get(cid)
        why = f"{was} cut short" if capsule.unsure else "untouched"
        if victim is not None:
            why += ", its sandbox killed"
        deadline = time.monotonic() + SETTLE_SEC
        while True:
            status, reason = seen or (None, None)
            if status is None:
                if capsule.unsure != "destroy":
                    self.tally.violation(self.n, f"{cid} ({why}) is gone from the API: lost")
                self._drop(capsule, why, "gone")
                return
            if status in ENDED:
                if status == "stopped" and capsule.unsure == "destroy":
                    self._drop(capsule, why, "destroyed")
                    return
                if not reason:
                    self.tally.violation(
                        self.n, f"{cid} ({why}) ended {status} with no status_reason "
                        f"after the {fault.kind} fault at {fault.at:.1f}s",
                    )  # fmt: skip
                self._drop(capsule, why, f"{status}: {reason}")
                return
            if victim is not None and status == "running":
                self.tally.violation(
                    self.n, f"{cid}: its sandbox was killed ({victim}), still listed running"
                )
                await self._discard(capsule)
                return
            try:
                if status == "paused":
                    capsule.status = "paused"
                    resp = await self.call("resume", "POST", f"/v1/capsules/{cid}/resume")
                    await self.expect("resume", resp, 200)
                await self.verify_contents(capsule)
                self.tally.settled[f"{why}: {status}, contents intact"] += 1
                capsule.status, capsule.unsure = "running", ""
                return
            except Lie as e:
                self.tally.violation(self.n, f"{cid} ({why}, listed {status}): {e!r}"[:600])
                await self._discard(capsule)
                return
            except (Refused, AssertionError, httpx.HTTPError) as e:
                if time.monotonic() > deadline:
                    does = "does not resume" if status == "paused" else "does not answer"
                    self.tally.violation(
                        self.n, f"{cid} ({why}) listed {status} but {does}: {e!r}"[:600]
                    )
                    await self._discard(capsule)
                    return
            await asyncio.sleep(1)
            with contextlib.suppress(Refused, AssertionError, httpx.HTTPError):
                seen = (await self._listing()).get(cid)

    def _drop(self, capsule: Capsule, why: str, how: str) -> None:
        self.tally.settled[f"{why}: {how}"] += 1
        self.capsules.pop(capsule.cid, None)
        self.ended.add(capsule.cid)

    async def _discard(self, capsule: Capsule) -> None:
        """A capsule found lying leaves the run (destroyed, so nothing of it leaks)."""
        self.capsules.pop(capsule.cid, None)
        self.ended.add(capsule.cid)
        with contextlib.suppress(httpx.HTTPError):
            await self.http.delete(f"/v1/capsules/{capsule.cid}")

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
    chaos: Chaos | None = None,
) -> Tally:
    """Run the soak; the returned tally holds counts and violations. With `chaos`, its
    faults strike while the clients work."""
    seed = seed if seed is not None else random.randrange(1 << 30)
    faults = f", a fault every ~{chaos.interval:g} s" if chaos else ""
    print(
        f"soak: {clients} clients for {seconds:.0f} s against {base_url} (seed {seed}{faults})",
        flush=True,
    )
    tally = Tally(chaos=chaos)
    timeout = httpx.Timeout(300, connect=30)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, trust_env=False) as anon:
        keys = [await _account(anon, n) for n in range(clients)]
    https = [
        httpx.AsyncClient(
            base_url=base_url, headers={"X-API-Key": key}, timeout=timeout, trust_env=False
        )
        for key in keys
    ]
    team = [Client(n, http, tally, random.Random(seed + n)) for n, http in enumerate(https)]
    deadline = time.monotonic() + seconds
    if chaos is not None:
        chaos.started = tally.started = time.monotonic()

    async def one(client: Client) -> None:
        # The time the platform spent recovering and being audited after faults is not
        # counted: the clients work for `seconds`.
        while time.monotonic() < deadline + (chaos.held if chaos else 0):
            await client.step()
        await client.cleanup()

    async def audit(fault: Fault) -> None:
        assert chaos is not None
        if fault.hung:
            tally.violation(
                -1, f"still in flight minutes after the {fault.kind} fault: {fault.hung}"
            )
        await asyncio.gather(*(client.audit(chaos, fault) for client in team))
        await _agreement(team, chaos, fault, tally)
        chaos.victims.clear()

    try:
        work = [one(client) for client in team]
        if chaos is not None:
            work.append(chaos.run(deadline, audit))
        await asyncio.gather(*work)
    finally:
        for http in https:
            await http.aclose()
    if agent_data_dir is not None:
        await _check_leaks(agent_data_dir, tally)
    _print(tally)
    return tally


async def _agreement(team: Sequence[Client], chaos: Chaos, fault: Fault, tally: Tally) -> None:
    """The API's running and paused capsules are exactly the agent's, in the same status."""
    if chaos.agent_view is None:
        return
    deadline = time.monotonic() + SETTLE_SEC
    last = ""
    while True:
        try:
            api: dict[str, str] = {}
            for client in team:
                listed = await client._listing()
                api.update({c: s for c, (s, _) in listed.items() if s in ("running", "paused")})
            held = await chaos.agent_view()
        except Exception as e:  # the API or the agent not answering yet: polled again
            last = repr(e)
        else:
            if api == held:
                return
            only_api = {c: s for c, s in api.items() if held.get(c) != s}
            only_agent = {c: s for c, s in held.items() if api.get(c) != s}
            last = f"the API has {only_api}, the agent {only_agent}"
        if time.monotonic() > deadline:
            tally.violation(-1, f"after the {fault.kind} fault at {fault.at:.1f}s: {last}"[:600])
            return
        await asyncio.sleep(0.5)


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
    print(f"\nsoak finished after {took:.0f} s: {total} operations done", flush=True)
    outcomes = ("ok", "refused", "interrupted", "violation")
    print(f"  {'':<10} " + " ".join(f"{o:>11}" for o in outcomes))
    for op in OPS:
        print(f"  {op:<10} " + " ".join(f"{tally.outcomes[op, o]:11d}" for o in outcomes))
    refused = sum(tally.refused.values())
    print(f"  documented 503s answered (a fault's too) {refused}: {dict(tally.refused) or '-'}")
    if tally.chaos is not None:
        chaos = tally.chaos
        kinds = ", ".join(f"{k} {chaos.faults[k]}" for k in sorted(chaos.faults)) or "none"
        print(f"faults injected: {sum(chaos.faults.values())} ({kinds})")
        for fault in chaos.log:
            print(f"  {fault}")
        print("found after the faults (capsules audited):")
        for what, n in sorted(tally.settled.items()):
            print(f"  {n:5d}  {what}")
    print(f"violations: {len(tally.violations)}")
    for line in tally.violations:
        print(f"  {line}")


# -- a platform of its own ------------------------------------------------------------------


@dataclass
class Platform:
    url: str
    agent: AgentProcess
    control_plane: ServerProcess
    agent_target: str
    secret: str


@contextlib.contextmanager
def _platform(data_dir: Path) -> Iterator[Platform]:
    """A host agent and a control plane of the bench's own, each restartable on its address."""
    from ._common import free_port

    secret = secrets.token_urlsafe(24)
    agent_env = {**os.environ, "WRENN_AGENT_SECRET": secret,
                 "WRENN_AGENT_CAPSULE_SUBNET": "10.203.0.0/16"}  # fmt: skip
    agent = AgentProcess(data_dir, free_port(), agent_env)
    target = f"127.0.0.1:{agent.port}"
    with tempfile.TemporaryDirectory(prefix="wrenn-soak-cp-") as cp_dir:
        env = {
            **os.environ,
            "WRENN_AGENT_ADDRESS": target,
            "WRENN_AGENT_SECRET": secret,
            "WRENN_JWT_SECRET": secrets.token_urlsafe(32),
            "WRENN_SIGNUP": "open",
            "WRENN_LOG_LEVEL": "WARNING",
            # A create left `starting` by a killed control plane ends after this (the
            # product's 10 minutes would outlast a fault's audit); dead capsules seen sooner.
            "WRENN_CREATE_GRACE_SEC": "20",
            "WRENN_RECONCILE_INTERVAL_SEC": "2",
        }
        control_plane = ServerProcess(Path(cp_dir), free_port(), env)
        try:
            agent.start()
            control_plane.start()
            yield Platform(control_plane.url, agent, control_plane, target, secret)
        finally:
            control_plane.stop()
            agent.stop()
            with contextlib.suppress(OSError):
                shutil.copy(Path(cp_dir) / "server.log", data_dir.parent / "soak-controlplane.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--base-url", help="a running control plane (else one is started)")
    parser.add_argument("--agent-data-dir", type=Path, help="with --base-url: leak checks")
    parser.add_argument("--data-dir", type=Path, default=Path("/var/lib/wrenn-soak"))
    parser.add_argument(
        "--chaos", action="store_true", help="kill the agent, control plane, sandboxes at random"
    )
    parser.add_argument("--fault-interval", type=float, default=30.0, metavar="SEC",
                        help=f"mean time between faults ({MIN_INTERVAL_SEC:g}-"
                             f"{MAX_INTERVAL_SEC:g} s; default 30)")  # fmt: skip
    parser.add_argument("--max-faults", type=int, metavar="N", help="with --chaos: at most N")
    args = parser.parse_args()
    seconds = args.minutes * 60
    if not 0 < args.minutes <= 24 * 60 or not 1 <= args.clients <= 64:
        parser.error("--minutes: at most a day; --clients: 1 to 64")
    if args.chaos and not MIN_INTERVAL_SEC <= args.fault_interval <= MAX_INTERVAL_SEC:
        parser.error(f"--fault-interval: {MIN_INTERVAL_SEC:g} to {MAX_INTERVAL_SEC:g} s")
    if args.chaos and args.base_url:
        parser.error("--chaos restarts what it kills: it runs its own platform (no --base-url)")
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)

    if args.base_url:
        tally = asyncio.run(soak(args.base_url, clients=args.clients, seconds=seconds,
                                 seed=seed, agent_data_dir=args.agent_data_dir))  # fmt: skip
    else:
        if os.geteuid() != 0:
            raise SystemExit("starting a host agent needs root")
        args.data_dir.mkdir(parents=True, exist_ok=True)
        with _platform(args.data_dir) as platform:
            chaos = None
            if args.chaos:
                chaos = Chaos(
                    agent=platform.agent,
                    control_plane=platform.control_plane,
                    data_dir=args.data_dir,
                    interval=args.fault_interval,
                    rng=random.Random(seed ^ 0x5EED),
                    max_faults=args.max_faults,
                    agent_view=agent_view(platform.agent_target, platform.secret, args.data_dir),
                )
            tally = asyncio.run(soak(platform.url, clients=args.clients, seconds=seconds,
                                     seed=seed, agent_data_dir=args.data_dir,
                                     chaos=chaos))  # fmt: skip
    sys.exit(1 if tally.violations else 0)


if __name__ == "__main__":
    main()
