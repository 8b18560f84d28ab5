"""envd HTTP layer: auth, health, errors, keep-alive, /init, /snapshot/prepare, shutdown."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import wrenn_server.envd as envd_package
from tests.unit.envd.procs import session_alive
from wrenn_server.envd import __version__

if TYPE_CHECKING:
    from conftest import Envd


def test_health_reports_version_and_pid(envd: Envd) -> None:
    response = envd.client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__, "pid": envd.proc.pid}


def test_requests_without_the_token_are_rejected(envd: Envd) -> None:
    for token in (None, "wrong", envd.token[:-1]):
        with envd.new_client(token) as client:
            response = client.get("/health")
        assert envd.error(response)[:2] == (401, "unauthorized")
    with envd.new_client(None) as client:
        response = client.get("/health", headers={"Authorization": f"Basic {envd.token}"})
        assert response.status_code == 401
        # Every route is protected, not only /health.
        assert client.post("/processes", json={"cmd": "true"}).status_code == 401
        assert client.get("/files", params={"path": "/etc/hostname"}).status_code == 401


def test_unknown_route_and_bad_json_have_error_shape(envd: Envd) -> None:
    assert envd.error(envd.client.get("/nope"))[:2] == (404, "not_found")
    assert envd.error(envd.client.delete("/health"))[:2] == (404, "not_found")
    response = envd.client.post("/processes", content=b"{not json")
    assert envd.error(response)[:2] == (400, "invalid_argument")
    response = envd.client.post("/processes", json=["cmd"])
    assert envd.error(response)[:2] == (400, "invalid_argument")
    response = envd.client.post("/processes", json={"cmd": 5})
    assert envd.error(response) == (400, "invalid_argument", "cmd must be a string")


def test_deeply_nested_json_is_a_client_error(envd: Envd) -> None:
    body = b"[" * 200_000 + b"]" * 200_000
    response = envd.client.post("/processes", content=body)
    assert envd.error(response)[:2] == (400, "invalid_argument")
    assert envd.client.get("/health").status_code == 200


def test_unexpected_errors_are_500_without_traceback(fresh_envd: Envd, tmp_path: Path) -> None:
    # A lone surrogate survives JSON decoding but cannot be encoded for the OS: an error
    # nothing in envd anticipates.
    body = b'{"path": "/tmp/bad-\\ud800"}'
    response = fresh_envd.client.post("/fs/mkdir", content=body)
    assert fresh_envd.error(response) == (500, "internal", "internal error")
    assert "Traceback" not in response.text
    assert fresh_envd.client.get("/health").status_code == 200  # still serving
    fresh_envd.stop()
    log = (tmp_path / "envd.stderr").read_text()
    assert "Traceback" in log and "UnicodeEncodeError" in log


def test_keep_alive_serves_pipelined_requests_on_one_connection(envd: Envd) -> None:
    request = f"GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {envd.token}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", envd.port), timeout=10) as sock:
        sock.sendall(request.encode() * 3)
        data = b""
        while data.count(b'"status":"ok"') < 3:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert b"Connection: close" not in data


def test_malformed_request_gets_json_error(envd: Envd) -> None:
    with socket.create_connection(("127.0.0.1", envd.port), timeout=10) as sock:
        sock.sendall(b"GARBAGE\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b'"code":"invalid_argument"' in data


def test_malformed_bodies_are_400_and_close_the_connection(envd: Envd) -> None:
    auth = f"Authorization: Bearer {envd.token}\r\n"
    for framing in ("Content-Length: abc\r\n\r\n", "Transfer-Encoding: chunked\r\n\r\nzz\r\n"):
        request = f"POST /fs/mkdir HTTP/1.1\r\nHost: x\r\n{auth}{framing}"
        with socket.create_connection(("127.0.0.1", envd.port), timeout=10) as sock:
            sock.sendall(request.encode())
            data = b""
            while chunk := sock.recv(65536):  # ends: the server closes the connection
                data += chunk
        assert data.startswith(b"HTTP/1.1 400 "), data
        assert b"Connection: close\r\n" in data and b'"code":"invalid_argument"' in data


def test_init_sets_default_user_and_env(fresh_envd: Envd, throwaway_user: str) -> None:
    response = fresh_envd.client.post(
        "/init", json={"default_user": throwaway_user, "env": {"GREETING": "hi", "LANG": "X"}}
    )
    assert response.status_code == 204
    stream = fresh_envd.run(cmd='id -un; echo "$GREETING $LANG $HOME"; pwd')
    home = f"/home/{throwaway_user}"
    assert stream.stdout.decode().splitlines() == [throwaway_user, f"hi X {home}", home]
    # A request's own user and env still win.
    stream = fresh_envd.run(cmd='id -un; echo "$GREETING"', user="root", env={"GREETING": "yo"})
    assert stream.stdout == b"root\nyo\n"
    # A later /init adds to the environment rather than replacing it.
    assert fresh_envd.client.post("/init", json={"env": {"OTHER": "1"}}).status_code == 204
    assert fresh_envd.run(cmd='echo "$GREETING$OTHER"').stdout == b"hi1\n"
    # File operations use the default user too: relative paths start at its home.
    written = fresh_envd.client.put("/files", params={"path": "init-note.txt"}, content=b"x")
    assert written.json()["path"] == f"{home}/init-note.txt"
    assert written.json()["owner"] == throwaway_user


def test_init_rejects_unknown_user(fresh_envd: Envd) -> None:
    response = fresh_envd.client.post("/init", json={"default_user": "no-such-user-here"})
    assert fresh_envd.error(response)[:2] == (400, "invalid_argument")
    assert fresh_envd.run(cmd="id -un").stdout == b"root\n"


def test_init_rotates_the_token(fresh_envd: Envd) -> None:
    rotated = "rotated-token-of-32-characters!"
    assert fresh_envd.client.post("/init", json={"token": rotated}).status_code == 204
    assert fresh_envd.client.get("/health").status_code == 401
    with fresh_envd.new_client(rotated) as client:
        assert client.get("/health").status_code == 200


def test_snapshot_prepare(envd: Envd) -> None:
    response = envd.client.post("/snapshot/prepare")
    assert response.status_code == 204
    assert response.content == b""


def test_configuration_is_not_passed_to_processes(envd: Envd) -> None:
    names = {line.split("=", 1)[0] for line in envd.run(cmd="env").stdout.decode().splitlines()}
    assert not any(name.startswith("WRENN_") for name in names)
    assert {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG"} <= names


def test_sigterm_stops_envd_and_its_processes(fresh_envd: Envd) -> None:
    with fresh_envd.start(cmd="sleep 300 & echo started; wait") as stream:
        stream.wait_for(b"started")
        pid = stream.pid
        started = time.monotonic()
        assert fresh_envd.stop() == 0
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 5
    while session_alive(pid):
        assert time.monotonic() < deadline, "processes survived envd"
        time.sleep(0.05)


def _exchange(envd: Envd, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", envd.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):  # ends when the server closes the connection
            data += chunk
    return data


def test_connection_close_and_http10_end_the_connection(envd: Envd) -> None:
    auth = f"Authorization: Bearer {envd.token}\r\n".encode()
    for head in (b"GET /health HTTP/1.1\r\nConnection: close\r\n", b"GET /health HTTP/1.0\r\n"):
        data = _exchange(envd, head + auth + b"\r\n")
        assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data
        assert b"Connection: close\r\n" in data
    # HTTP/1.0 asking to keep the connection: two answers on one connection.
    request = b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n" + auth + b"\r\n"
    with socket.create_connection(("127.0.0.1", envd.port), timeout=10) as sock:
        sock.sendall(request * 2)
        data = b""
        while data.count(b'"status":"ok"') < 2:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk


def test_header_names_are_case_insensitive(envd: Envd) -> None:
    request = f"GET /health HTTP/1.1\r\nconnection: close\r\nAUTHORIZATION: Bearer {envd.token}\r\n"
    data = _exchange(envd, request.encode() + b"\r\n")
    assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data


def test_expect_100_continue_is_answered_before_the_body(envd: Envd, tmp_path: Path) -> None:
    made = tmp_path / "expected"
    body = b'{"path": "%s"}' % str(made).encode()
    head = (
        f"POST /fs/mkdir HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {envd.token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Expect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", envd.port), timeout=10) as sock:
        sock.sendall(head.encode())
        interim = sock.recv(65536)  # before any body byte is sent
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim
        sock.sendall(body)
        data = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n") :]
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ") or data.startswith(b"HTTP/1.1 201 "), data
    assert made.is_dir()


def test_malformed_requests_get_their_status_and_a_closed_connection(envd: Envd) -> None:
    auth = f"Authorization: Bearer {envd.token}\r\n"
    cases = {
        b"GET /health HTTP/2.0\r\n\r\n": 505,
        b"GET /health FTP/1.1\r\n\r\n": 400,
        b"GET /health HTTP/x.y\r\n\r\n": 400,
        b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n": 414,
        f"GET /health HTTP/1.1\r\n{auth}no colon here\r\n\r\n".encode(): 400,
        f"GET /health HTTP/1.1\r\n{auth}Bad Name : x\r\n\r\n".encode(): 400,
        ("GET /health HTTP/1.1\r\n" + "X-A: b\r\n" * 101 + "\r\n").encode(): 431,
        ("GET /health HTTP/1.1\r\nX-A: " + "b" * 70000 + "\r\n\r\n").encode(): 431,
    }
    for request, status in cases.items():
        data = _exchange(envd, request)
        assert data.startswith(b"HTTP/1.1 %d " % status), (request[:60], data)
        assert b"Connection: close\r\n" in data and b'"code":' in data


def test_envd_starts_without_http_server_ssl_email_urllib_or_archives() -> None:
    """What makes a capsule's start slower inside gVisor (every module a file read through the
    sandbox) stays out of envd's import: http.server alone brought in ~40 more modules."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import envd.server, envd.__main__; "
        "print(' '.join(m for m in sorted(sys.modules) if m.split('.')[0] in "
        "('ssl', '_ssl', 'email', 'shutil', 'bz2', 'lzma', 'html', 'mimetypes', 'urllib', "
        "'ipaddress', 'http')))"
    )
    src = Path(envd_package.__file__).parent.parent
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(src)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    assert out.split() == []
