"""The chaos soak's audit after a fault (bench/soak.py Client.audit) against an API it cannot
tell from the real one (an httpx transport answering the documented routes): either outcome of
a cut-short operation passes, every lie is a violation naming the capsule - a capsule ended
without a reason, lost, listed running with a killed sandbox, answering with the wrong counter
or file. And the fault injector finds a capsule's sandbox and gofer by its bundle."""

from __future__ import annotations

import json
import random
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench import soak as soak_module
from bench.chaos import Chaos, Fault, sandbox_pids
from bench.soak import DIR, Capsule, Client, Tally

A, B = "sb-aaaa", "sb-bbbb"
FILE = f"{DIR}/f0"


@dataclass
class Held:
    status: str
    reason: str | None = None
    counter: str = "0"
    files: dict[str, bytes] = field(default_factory=dict)


class FakeApi:
    """The routes the audit calls, over capsules held here."""

    def __init__(self, capsules: dict[str, Held]) -> None:
        self.capsules = capsules
        self.resumed: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.strip("/").split("/")  # v1, capsules, id, ...
        if request.method == "GET" and parts == ["v1", "capsules"]:
            listed = [{"id": cid, "status": c.status, "status_reason": c.reason}
                      for cid, c in self.capsules.items()]  # fmt: skip
            return httpx.Response(200, json=listed)
        if parts[:2] == ["v1", "snapshots"]:
            return httpx.Response(204)
        capsule = self.capsules.get(parts[2])
        if capsule is None:
            return httpx.Response(404, json={"error": {"code": "not_found", "message": "-"}})
        action = parts[3:]
        if request.method == "DELETE":
            capsule.status = "stopped"
            return httpx.Response(204)
        if action == ["resume"]:
            capsule.status = "running"
            self.resumed.append(parts[2])
            return httpx.Response(200, json={"id": parts[2], "status": "running"})
        if action == ["exec"]:
            cmd = json.loads(request.content)["cmd"]
            if cmd.startswith("mkdir"):
                capsule.counter = "0"
            out = f"{capsule.counter}\n" if cmd.startswith("cat") else ""
            return httpx.Response(200, json={"exit_code": 0, "stdout": out, "stderr": ""})
        if action == ["files", "read"]:
            path = json.loads(request.content)["path"]
            if path not in capsule.files:
                return httpx.Response(404, json={"error": {"code": "not_found", "message": "-"}})
            return httpx.Response(200, content=capsule.files[path])
        raise AssertionError(f"unexpected call {request.method} {request.url}")


class NotRun:
    def kill9(self) -> None:
        raise AssertionError("the audit kills nothing")

    def start(self) -> None:
        raise AssertionError("the audit starts nothing")


def _setup(tmp_path: Path, held: dict[str, Held], **client_has: Capsule) -> tuple[Any, ...]:
    chaos = Chaos(agent=NotRun(), control_plane=NotRun(), data_dir=tmp_path, interval=15,
                  rng=random.Random(1))  # fmt: skip
    tally = Tally(chaos=chaos)
    api = FakeApi(held)
    http = httpx.AsyncClient(base_url="http://api.test", transport=httpx.MockTransport(api))
    client = Client(0, http, tally, random.Random(1))
    client.capsules = {c.cid: c for c in client_has.values()}
    fault = Fault("agent", 1.0, "restarted", [])
    return chaos, tally, api, client, fault


async def test_either_outcome_of_cut_short_operations_passes(tmp_path: Path) -> None:
    held = {
        # A pause cut short that finished: paused, resumes with its counter and file.
        A: Held("paused", counter="3", files={FILE: b"new"}),
        # A bump cut short that happened, a write cut short that did not.
        B: Held("running", counter="8", files={FILE: b"old"}),
    }
    a = Capsule(A, counter=3, files={FILE: b"new"}, unsure="pause")
    b = Capsule(B, counter=7, bumped=8, files={FILE: b"old"}, writing=(FILE, b"newer"))
    chaos, tally, api, client, fault = _setup(tmp_path, held, a=a, b=b)
    await client.audit(chaos, fault)
    assert tally.violations == []
    assert api.resumed == [A]
    assert (a.status, a.unsure) == ("running", "")
    assert (b.counter, b.bumped, b.writing, b.files) == (8, None, None, {FILE: b"old"})


async def test_an_ended_capsule_with_a_reason_leaves_the_run(tmp_path: Path) -> None:
    held = {A: Held("error", reason="sandbox exited"), B: Held("stopped")}
    chaos, tally, _api, client, fault = _setup(
        tmp_path, held, a=Capsule(A), b=Capsule(B, unsure="destroy")
    )
    await client.audit(chaos, fault)
    assert tally.violations == []  # B's destroy, cut short, went through
    assert client.capsules == {}


@pytest.mark.parametrize(
    ("held", "has", "found"),
    [
        ({A: Held("stopped")}, Capsule(A, unsure="pause"), "ended stopped with no status_reason"),
        ({}, Capsule(A), "is gone from the API: lost"),
        ({A: Held("running", counter="5")}, Capsule(A, counter=4), "counter '5', expected 4"),
        (
            {A: Held("paused", files={FILE: b"torn"})},
            Capsule(A, files={FILE: b"old"}, writing=(FILE, b"new")),
            f"{FILE}: 4 bytes, expected 3 bytes written or 3 bytes written",
        ),
        ({A: Held("running"), B: Held("running")}, Capsule(A), f"the API lists {B} (running)"),
    ],
)
async def test_a_lie_is_a_violation_naming_the_capsule(
    tmp_path: Path, held: dict[str, Held], has: Capsule, found: str
) -> None:
    chaos, tally, _api, client, fault = _setup(tmp_path, held, a=has)
    await client.audit(chaos, fault)
    assert len(tally.violations) == 1, tally.violations
    assert found in tally.violations[0] and (A in tally.violations[0] or B in found)


async def test_a_capsule_whose_sandbox_was_killed_must_not_stay_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(soak_module, "SETTLE_SEC", 1.0)
    chaos, tally, _api, client, fault = _setup(tmp_path, {A: Held("running")}, a=Capsule(A))
    chaos.victims[A] = Fault("sandbox", 1.0, f"capsule {A}", [])
    await client.audit(chaos, fault)
    assert any("not settled" in v and A in v for v in tally.violations), tally.violations
    assert any("its sandbox was killed" in v for v in tally.violations), tally.violations


def test_the_sandbox_and_gofer_of_a_capsule_are_found_by_its_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "capsules" / "sb-x"
    # Processes named as runsc names its own (argv[0]), holding the bundle flag.
    argv = ["-c", "sleep 60; :", f"--bundle={bundle}"]
    procs = [subprocess.Popen([name, *argv], executable="/bin/sh")
             for name in ("runsc-gofer", "runsc-sandbox", "runsc-other")]  # fmt: skip
    other = subprocess.Popen(
        ["runsc-sandbox", *argv[:2], f"--bundle={bundle}2"], executable="/bin/sh"
    )
    try:
        deadline = time.monotonic() + 10
        while len(found := sandbox_pids(bundle)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert found == [procs[1].pid, procs[0].pid]  # the sandbox first
    finally:
        for p in [*procs, other]:
            p.kill()
            p.wait()
