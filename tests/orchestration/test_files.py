"""Capsule files through the REST API over the fake host agent: multipart uploads streamed to
WriteFileStream, downloads from ReadFileStream, listings with cursors, mkdir and remove; the
agent's refusals become the documented errors, and a malformed upload writes nothing."""

from __future__ import annotations

from typing import Any

import httpx

from ..controlplane.helpers import assert_error
from .conftest import Stack
from .helpers import Account, make_capsule, new_account


async def _capsule(stack: Stack) -> tuple[Account, str]:
    alice = await new_account(stack.client)
    return alice, (await make_capsule(stack.client, alice))["id"]


async def _upload(
    api: httpx.AsyncClient, account: Account, cid: str, path: str, data: bytes, route: str = "write"
) -> httpx.Response:
    return await api.post(
        f"/v1/capsules/{cid}/files/{route}",
        data={"path": path},
        files={"file": ("upload.bin", data, "application/octet-stream")},
        headers=account.h,
    )


async def _post(api: httpx.AsyncClient, account: Account, url: str, **body: Any) -> httpx.Response:
    return await api.post(url, json=body, headers=account.h)


async def test_upload_download_list_mkdir_remove(stack: Stack) -> None:
    api = stack.client
    alice, cid = await _capsule(stack)
    files = stack.agent.sandboxes[cid].files
    big = bytes(range(256)) * 4096  # 1 MiB: several chunks each way
    assert (await _upload(api, alice, cid, "/data/big.bin", big)).status_code == 204
    assert (await _upload(api, alice, cid, "notes.txt", b"hi\n", "stream/write")).status_code == 204
    assert files.read("/data/big.bin") == big
    assert files.read("/home/wrenn-user/notes.txt") == b"hi\n"  # relative: the user's home

    for route in ("read", "stream/read"):
        got = await _post(api, alice, f"/v1/capsules/{cid}/files/{route}", path="/data/big.bin")
        assert got.status_code == 200 and got.content == big
    empty = await _upload(api, alice, cid, "/data/empty", b"")
    assert empty.status_code == 204
    got = await _post(api, alice, f"/v1/capsules/{cid}/files/read", path="/data/empty")
    assert got.status_code == 200 and got.content == b""

    made = await _post(api, alice, f"/v1/capsules/{cid}/files/mkdir", path="/data/a/b")
    assert made.status_code == 200
    assert (made.json()["entry"]["path"], made.json()["entry"]["type"]) == (
        "/data/a/b",
        "directory",
    )
    listing = await _post(api, alice, f"/v1/capsules/{cid}/files/list", path="/data", depth=2)
    assert [(e["path"], e["type"]) for e in listing.json()["entries"]] == [
        ("/data/a", "directory"),
        ("/data/a/b", "directory"),
        ("/data/big.bin", "file"),
        ("/data/empty", "file"),
    ]
    assert listing.json()["entries"][2]["size"] == len(big)

    # Pages: `limit` entries, then the rest after the cursor.
    first = (
        await _post(api, alice, f"/v1/capsules/{cid}/files/list", path="/data", limit=2)
    ).json()
    assert [e["name"] for e in first["entries"]] == ["a", "big.bin"]
    assert first["truncated"] and first["next_cursor"] == "/data/big.bin"
    rest = await _post(
        api, alice, f"/v1/capsules/{cid}/files/list", path="/data", cursor=first["next_cursor"]
    )
    assert [e["name"] for e in rest.json()["entries"]] == ["empty"]
    assert not rest.json()["truncated"] and rest.json()["next_cursor"] is None

    removed = await _post(api, alice, f"/v1/capsules/{cid}/files/remove", path="/data/a")
    assert removed.status_code == 204
    assert not files.is_dir("/data/a") and "/data/a/b" not in files.nodes


async def test_file_errors(stack: Stack) -> None:
    api = stack.client
    alice, cid = await _capsule(stack)
    base = f"/v1/capsules/{cid}/files"
    missing = await _post(api, alice, f"{base}/read", path="/nope")
    assert_error(missing, 404, "not_found")
    assert_error(
        await _post(api, alice, f"{base}/stream/read", path="/tmp"), 400, "invalid_request"
    )
    assert_error(await _post(api, alice, f"{base}/list", path="/nope"), 404, "not_found")
    assert_error(await _post(api, alice, f"{base}/remove", path="/"), 400, "invalid_request")
    assert_error(await _upload(api, alice, cid, "/tmp", b"x"), 400, "invalid_request")
    blocked = await _post(api, alice, f"{base}/mkdir", path="/etc/hostname/sub")
    assert_error(blocked, 409, "invalid_state")

    # A body that is not the documented multipart form writes nothing.
    before = dict(stack.agent.sandboxes[cid].files.nodes)
    no_file = await api.post(f"{base}/write", data={"path": "/tmp/x"}, headers=alice.h)
    assert_error(no_file, 400, "invalid_request")
    truncated = await api.post(
        f"{base}/write",
        content=b'--b\r\nContent-Disposition: form-data; name="path"\r\n\r\n/tmp/x\r\n--b\r\n'
        b'Content-Disposition: form-data; name="file"; filename="x"\r\n\r\nhalf a fi',
        headers={**alice.h, "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert_error(truncated, 400, "invalid_request")
    assert stack.agent.sandboxes[cid].files.nodes == before

    # A paused capsule's files are refused by the control plane, without asking the agent.
    assert (await api.post(f"/v1/capsules/{cid}/pause", headers=alice.h)).status_code == 200
    calls = len(stack.agent.calls)
    paused = await _post(api, alice, f"{base}/read", path="/etc/hostname")
    assert_error(paused, 409, "invalid_state")
    assert_error(await _upload(api, alice, cid, "/tmp/x", b"x"), 409, "invalid_state")
    assert len(stack.agent.calls) == calls
