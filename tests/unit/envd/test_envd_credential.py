"""envd's credential: the token comes on stdin (never the environment), /init only takes a token
that could be a secret, and only the capsule's gateway may connect (peers.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.ports import free_port
from tests.unit.envd.conftest import LAUNCH, PYTHON, start_envd
from wrenn_server.envd import peers

if TYPE_CHECKING:
    from conftest import Envd


def _env(port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WRENN_ENVD_")}
    return {**env, "WRENN_ENVD_BIND": "127.0.0.1", "WRENN_ENVD_PORT": str(port), **extra}


def _fails_to_start(env: dict[str, str], stdin: bytes | None) -> str:
    """envd's stderr, after checking it exited with status 2 without serving."""
    proc = subprocess.run(
        [PYTHON, "-I", "-S", "-c", LAUNCH],
        env=env,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 2, proc.stderr
    return proc.stderr.decode()


def test_the_token_is_read_from_stdin_and_stdin_is_gone(fresh_envd: Envd) -> None:
    pid = fresh_envd.proc.pid
    # Nothing of the token in the environment or the command line of envd.
    assert fresh_envd.token.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
    assert fresh_envd.token.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    # Its stdin is no longer the pipe the token came on.
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    assert fresh_envd.client.get("/health").status_code == 200


def _wait_listening(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 15
    while True:
        assert proc.poll() is None, "envd exited during startup"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            return
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, "envd did not start listening"
            time.sleep(0.02)


def test_a_token_with_a_trailing_newline_is_accepted() -> None:
    port, token = free_port(), "token-" + os.urandom(16).hex()
    proc = start_envd(_env(port, WRENN_ENVD_PEERS="any"), token.encode() + b"\n")
    try:
        _wait_listening(proc, port)
        headers = {"Authorization": f"Bearer {token}"}
        response = httpx.get(f"http://127.0.0.1:{port}/health", headers=headers)
        assert response.status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        (None, "must be written to stdin"),
        (b"", "must be written to stdin"),
        (b"short", "16 to 512 visible ASCII"),
        (b"a token with spaces inside it", "16 to 512 visible ASCII"),
        (b"x" * 5000, "16 to 512 visible ASCII"),
    ],
)
def test_a_missing_or_weak_token_stops_envd(stdin: bytes | None, message: str) -> None:
    assert message in _fails_to_start(_env(free_port()), stdin)


def test_a_token_in_the_environment_is_refused() -> None:
    env = _env(free_port(), WRENN_ENVD_TOKEN="x" * 32)
    stderr = _fails_to_start(env, b"y" * 32)
    assert "never from WRENN_ENVD_TOKEN" in stderr


def test_unknown_peer_policy_stops_envd() -> None:
    stderr = _fails_to_start(_env(free_port(), WRENN_ENVD_PEERS="everyone"), b"y" * 32)
    assert "WRENN_ENVD_PEERS must be one of gateway, any" in stderr


def test_init_refuses_a_token_that_cannot_be_a_secret(fresh_envd: Envd) -> None:
    for bad in ("", "short", "has a space in the middle", "é" * 20, "x" * 513):
        response = fresh_envd.client.post("/init", json={"token": bad})
        assert fresh_envd.error(response)[:2] == (400, "invalid_argument"), bad
    # The old token still works: nothing was changed.
    assert fresh_envd.client.get("/health").status_code == 200


# -- who may connect -----------------------------------------------------------------------

ROUTE_TABLE = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    "eth0\t00000000\t0100C90A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
    "eth0\t0000C90A\t00000000\t0001\t0\t0\t0\tFCFFFFFF\t0\t0\t0\n"
    "eth1\t0000A8C0\t0200A8C0\t0002\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"  # a gateway route that is down
    "garbage line\n"
)


def test_gateways_are_read_from_the_route_table(tmp_path: Path) -> None:
    table = tmp_path / "route"
    table.write_text(ROUTE_TABLE)
    assert peers.gateways(str(table)) == {"10.201.0.1"}
    assert peers.gateways(str(tmp_path / "missing")) == frozenset()


def test_only_the_gateway_is_admitted_and_a_new_gateway_is_learnt(tmp_path: Path) -> None:
    table = tmp_path / "route"
    table.write_text(ROUTE_TABLE)
    policy = peers.GatewayOnly(str(table))
    assert policy.allows("10.201.0.1")
    for other in ("10.201.0.2", "127.0.0.1", "192.168.0.2", ""):
        assert not policy.allows(other)
    # Restored into another capsule's network: the old gateway is gone, the new one admitted.
    table.write_text(ROUTE_TABLE.replace("0100C90A", "0500C90A"))
    assert policy.allows("10.201.0.5")
    assert not policy.allows("10.201.0.1")


def test_a_connection_from_elsewhere_than_the_gateway_gets_403_and_no_thread() -> None:
    """The real envd with the production policy: the test connects over loopback, which is
    no gateway of this machine, so it is refused before any request is read."""
    port, token = free_port(), os.urandom(24).hex()
    proc = start_envd(_env(port), token.encode())
    try:
        _wait_listening(proc, port)
        reply = b""
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            # Nothing sent: the refusal comes at once, whatever the request would have been.
            while chunk := conn.recv(4096):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 403 Forbidden\r\n"), reply
        assert b'"code":"permission_denied"' in reply
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}) as client:
            try:
                response = client.post(f"http://127.0.0.1:{port}/init", json={"token": "z" * 32})
                assert response.status_code == 403
            except httpx.TransportError:
                pass  # closed before the request was read: refused all the same
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(10)
