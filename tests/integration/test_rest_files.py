"""Capsule files over REST with real capsules: a big file streamed both ways through a real
HTTP server (the control plane must not hold it), missing paths, directories, and multipart
bodies that are wrong in every way a client can get them wrong."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from tests.ports import free_port

from ..controlplane.helpers import assert_error
from .rest_fixtures import Account, StartApp, make_capsule, new_account, sh

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
BIG = 64 * MiB + 12345  # > 50 MB, and not a multiple of any chunk size


@pytest.fixture
async def user(api: httpx.AsyncClient) -> Account:
    return await new_account(api)


@pytest.fixture
async def capsule(api: httpx.AsyncClient, user: Account) -> dict[str, Any]:
    return await make_capsule(api, user)


# -- a real HTTP server, and memory accounting ---------------------------------------------


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Serve an app whose lifespan already runs with uvicorn on a local port: the base URL.
    (httpx's ASGITransport collects a whole response before returning it, so streaming is
    only observable through a real server.)"""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="off", ws="none", log_config=None
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert not task.done() and time.monotonic() < deadline, "uvicorn did not start"
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
    assert match, field
    return int(match.group(1)) * 1024


@contextlib.contextmanager
def peak_memory_growth() -> Any:
    """Measure how far this process's resident memory rose above where it started: resets the
    kernel's peak RSS (VmHWM) on entry; `result["growth"]` is set on exit."""
    result: dict[str, int] = {}
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    start = _status_kb("VmRSS")
    yield result
    result["growth"] = _status_kb("VmHWM") - start


def data_chunks(size: int, seed: int, digest: Any) -> AsyncIterator[bytes]:
    """`size` pseudo-random bytes in 1 MiB chunks, made as they are sent (the test never holds
    the file either); `digest` sees every byte."""

    async def gen() -> AsyncIterator[bytes]:
        rng = random.Random(seed)
        left = size
        while left:
            chunk = rng.randbytes(min(MiB, left))
            digest.update(chunk)
            left -= len(chunk)
            yield chunk

    return gen()


def multipart(
    fields: list[tuple[str, bytes | AsyncIterator[bytes]]], boundary: str, *, close: bool = True
) -> AsyncIterator[bytes]:
    """A multipart/form-data body sent as a stream, parts in the given order; `close=False`
    leaves off the closing boundary (a body cut short)."""

    async def gen() -> AsyncIterator[bytes]:
        for name, value in fields:
            filename = '; filename="blob"' if name == "file" else ""
            yield (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            if isinstance(value, bytes):
                yield value
            else:
                async for chunk in value:
                    yield chunk
            if close:
                yield b"\r\n"
        if close:
            yield f"--{boundary}--\r\n".encode()

    return gen()


def multipart_headers(account: Account, boundary: str) -> dict[str, str]:
    return account.h | {"Content-Type": f"multipart/form-data; boundary={boundary}"}


# -- big files ------------------------------------------------------------------------------


async def test_big_file_streams_both_ways_without_being_held(
    start_app: StartApp, user: Account
) -> None:
    async with (
        start_app() as rest,
        serve(rest.app) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=300) as http,
    ):
        capsule = await make_capsule(http, user)
        cid = capsule["id"]
        boundary = uuid.uuid4().hex
        sent = hashlib.sha256()
        body = multipart(
            [("path", b"/home/wrenn-user/big.bin"), ("file", data_chunks(BIG, 7, sent))], boundary
        )
        with peak_memory_growth() as upload:
            resp = await http.post(
                f"/v1/capsules/{cid}/files/stream/write",
                content=body,
                headers=multipart_headers(user, boundary),
            )
        assert resp.status_code == 204, resp.text
        res = await sh(
            http,
            user,
            cid,
            "stat -c %s /home/wrenn-user/big.bin; sha256sum /home/wrenn-user/big.bin",
        )
        size, digest = res["stdout"].split()[:2]
        assert (int(size), digest) == (BIG, sent.hexdigest())

        got, chunks = hashlib.sha256(), 0
        with peak_memory_growth() as download:
            async with http.stream(
                "POST",
                f"/v1/capsules/{cid}/files/stream/read",
                json={"path": "/home/wrenn-user/big.bin"},
                headers=user.h,
            ) as resp:
                assert resp.status_code == 200
                assert resp.headers["content-type"] == "application/octet-stream"
                assert resp.headers.get("transfer-encoding") == "chunked"
                assert "content-length" not in resp.headers
                async for chunk in resp.aiter_raw():
                    got.update(chunk)
                    chunks += 1
        assert got.hexdigest() == sent.hexdigest()
        assert chunks > 10
    # Server and client share this process: had either end held the file, memory would have
    # risen by its size.
    assert upload["growth"] < BIG // 2, upload
    assert download["growth"] < BIG // 2, download


# -- paths that are not there ------------------------------------------------------------


async def test_missing_paths_are_not_found(
    api: httpx.AsyncClient, user: Account, capsule: dict[str, Any]
) -> None:
    cid = capsule["id"]
    for route in ("read", "stream/read", "list", "remove"):
        resp = await api.post(
            f"/v1/capsules/{cid}/files/{route}", json={"path": "/no/such/file"}, headers=user.h
        )
        assert_error(resp, 404, "not_found")


async def test_read_of_a_directory_is_a_bad_request(
    api: httpx.AsyncClient, user: Account, capsule: dict[str, Any]
) -> None:
    for route in ("read", "stream/read"):
        resp = await api.post(
            f"/v1/capsules/{capsule['id']}/files/{route}", json={"path": "/etc"}, headers=user.h
        )
        assert_error(resp, 400, "invalid_request")


# -- directories ------------------------------------------------------------------------


async def test_mkdir_list_remove(
    api: httpx.AsyncClient, user: Account, capsule: dict[str, Any]
) -> None:
    url = f"/v1/capsules/{capsule['id']}/files"

    async def names(path: str, depth: int = 1) -> dict[str, str]:
        resp = await api.post(f"{url}/list", json={"path": path, "depth": depth}, headers=user.h)
        assert resp.status_code == 200, resp.text
        return {e["path"]: e["type"] for e in resp.json()["entries"]}

    resp = await api.post(f"{url}/mkdir", json={"path": "/home/wrenn-user/a/b"}, headers=user.h)
    assert resp.status_code == 200, resp.text
    entry = resp.json()["entry"]
    assert (entry["name"], entry["path"], entry["type"]) == (
        "b",
        "/home/wrenn-user/a/b",
        "directory",
    )
    assert entry["permissions"].startswith("d") and entry["owner"]
    resp = await api.post(
        f"{url}/write",
        data={"path": "/home/wrenn-user/a/b/f.txt"},
        files={"file": ("f.txt", b"x")},
        headers=user.h,
    )
    assert resp.status_code == 204, resp.text
    assert await names("/home/wrenn-user/a") == {"/home/wrenn-user/a/b": "directory"}
    assert await names("/home/wrenn-user/a", depth=2) == {
        "/home/wrenn-user/a/b": "directory",
        "/home/wrenn-user/a/b/f.txt": "file",
    }

    resp = await api.post(f"{url}/remove", json={"path": "/home/wrenn-user/a"}, headers=user.h)
    assert resp.status_code == 204, resp.text
    assert "/home/wrenn-user/a" not in await names("/home/wrenn-user")
    resp = await api.post(f"{url}/list", json={"path": "/home/wrenn-user/a"}, headers=user.h)
    assert_error(resp, 404, "not_found")
    for route, body in [("mkdir", {"path": ""}), ("list", {"path": "/", "depth": -1})]:
        resp = await api.post(f"{url}/{route}", json=body, headers=user.h)
        assert_error(resp, 400, "invalid_request")


# -- uploads --------------------------------------------------------------------------------


async def test_uploads_replace_files_and_can_be_empty(
    api: httpx.AsyncClient, user: Account, capsule: dict[str, Any]
) -> None:
    cid = capsule["id"]
    for route, content in [("write", b"first version\n"), ("stream/write", b""), ("write", b"2")]:
        resp = await api.post(
            f"/v1/capsules/{cid}/files/{route}",
            data={"path": "/home/wrenn-user/f"},
            files={"file": ("f", content)},
            headers=user.h,
        )
        assert resp.status_code == 204, resp.text
        resp = await api.post(
            f"/v1/capsules/{cid}/files/read", json={"path": "/home/wrenn-user/f"}, headers=user.h
        )
        assert resp.status_code == 200 and resp.content == content


@pytest.mark.parametrize("route", ["write", "stream/write"])
async def test_bad_multipart_bodies_are_refused_and_write_nothing(
    api: httpx.AsyncClient, user: Account, capsule: dict[str, Any], route: str
) -> None:
    cid = capsule["id"]
    url = f"/v1/capsules/{cid}/files/{route}"
    boundary = uuid.uuid4().hex
    headers = multipart_headers(user, boundary)

    def big() -> AsyncIterator[bytes]:
        return data_chunks(8 * MiB, 1, hashlib.sha256())

    cases: list[tuple[str, dict[str, str], Any]] = [
        ("json instead", user.h, b'{"path": "/home/wrenn-user/x"}'),
        ("no boundary", user.h | {"Content-Type": "multipart/form-data"}, b"x"),
        ("no file", headers, multipart([("path", b"/home/wrenn-user/x")], boundary)),
        ("no path", headers, multipart([("file", b"data")], boundary)),
        (
            "file first",
            headers,
            multipart([("file", b"data"), ("path", b"/home/wrenn-user/x")], boundary),
        ),
        (
            "big file first",
            headers,
            multipart([("file", big()), ("path", b"/home/wrenn-user/x")], boundary),
        ),
        ("empty path", headers, multipart([("path", b""), ("file", b"data")], boundary)),
        ("garbage", headers, b"this is not multipart at all\r\n" * 10),
        ("cut short", headers, f"--{boundary}\r\nContent-Disposition: form-da".encode()),
        (
            "two paths",
            headers,
            multipart([("path", b"/home/wrenn-user/x"), ("path", b"/home/wrenn-user/y")], boundary),
        ),
        (
            "two files",
            headers,
            multipart([("path", b"/home/wrenn-user/x"), ("file", b"a"), ("file", b"b")], boundary),
        ),
        (
            "file cut short",
            headers,
            multipart(
                [("path", b"/home/wrenn-user/x"), ("file", b"some data")], boundary, close=False
            ),
        ),
        (
            "big file cut short",
            headers,
            multipart([("path", b"/home/wrenn-user/x"), ("file", big())], boundary, close=False),
        ),
    ]
    for label, case_headers, body in cases:
        async with asyncio.timeout(30):
            resp = await api.post(url, content=body, headers=case_headers)
        assert resp.status_code == 400, (label, resp.text)
        assert_error(resp, 400, "invalid_request")
    res = await sh(api, user, cid, "ls /home/wrenn-user")
    assert "x" not in res["stdout"].split()
