"""The upload parser (api/multipart.py) on bodies as a client may send them: split anywhere
(the boundary across chunks, one byte at a time), and wrong in every way the parser names. The
body reaches it through a real Starlette Request fed chunk by chunk, as the ASGI server does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from starlette.requests import Request

from wrenn_server.controlplane.api.multipart import (
    MAX_HEADER_BYTES,
    MAX_PATH_BYTES,
    MultipartUpload,
)
from wrenn_server.controlplane.errors import BadRequest

BOUNDARY = "b0undary-XyZ"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def part(name: str, data: bytes, *, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    return (
        (
            f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + b"\r\n"
    )


def body(*parts: bytes, closed: bool = True) -> bytes:
    return b"".join(parts) + (f"--{BOUNDARY}--\r\n".encode() if closed else b"")


def request(
    chunks: Sequence[bytes], content_type: str = CONTENT_TYPE, read: list[bytes] | None = None
) -> Request:
    """A request whose body arrives as `chunks` (each appended to `read` as it is read)."""
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        if not pending:
            return {"type": "http.request", "body": b"", "more_body": False}
        data = pending.pop(0)
        if read is not None:
            read.append(data)
        return {"type": "http.request", "body": data, "more_body": bool(pending)}

    scope = {
        "type": "http",
        "method": "PUT",
        "path": "/v1/capsules/x/files",
        "headers": [(b"content-type", content_type.encode())],
        "query_string": b"",
    }
    return Request(scope, receive)


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


async def upload(chunks: Sequence[bytes]) -> tuple[str, bytes]:
    parsed = MultipartUpload(request(chunks))
    path = await parsed.path()
    data = b"".join([c async for c in parsed.file_chunks()])
    assert parsed.error is None
    return path, data


# Content that looks like the boundary without being it must come through untouched.
CONTENT = b"line one\r\n--b0undary-Xy not quite\r\n--\r\n" + bytes(range(256)) * 40


async def test_path_then_file_in_one_chunk() -> None:
    data = body(part("path", b"/home/user/a.bin"), part("file", CONTENT, filename="a.bin"))
    assert await upload([data]) == ("/home/user/a.bin", CONTENT)


@pytest.mark.parametrize("size", [64, 1000, 4096])
async def test_any_chunking_gives_the_same_upload(size: int) -> None:
    data = body(part("path", "/tmp/é x".encode()), part("file", CONTENT))
    assert await upload(split(data, size)) == ("/tmp/é x", CONTENT)


def header_name_bytes(data: bytes) -> set[int]:
    """Offsets that cut a header name ("Content-Disposition") of `data` in two."""
    out: set[int] = set()
    for name in (b"Content-Disposition", b"Content-Type"):
        start = data.find(name)
        while start >= 0:
            out.update(range(start + 1, start + len(name)))
            start = data.find(name, start + 1)
    return out


async def test_a_body_cut_anywhere_but_in_a_header_name() -> None:
    """Every cut through boundaries (the closing one too), header values and data."""
    data = body(part("path", b"/x"), part("file", b"payload\r\n--b0und"))
    inside_names = header_name_bytes(data)
    for cut in range(len(data) + 1):
        if cut not in inside_names:
            assert await upload([data[:cut], data[cut:]]) == ("/x", b"payload\r\n--b0und"), cut


async def test_a_body_cut_inside_a_header_name() -> None:
    data = body(part("path", b"/x"), part("file", b"data"))
    for cut in sorted(header_name_bytes(data)):
        assert await upload([data[:cut], data[cut:]]) == ("/x", b"data"), cut


async def test_one_byte_at_a_time() -> None:
    data = body(part("path", b"/x"), part("file", CONTENT))
    assert await upload(split(data, 1)) == ("/x", CONTENT)


async def test_an_empty_file() -> None:
    assert await upload([body(part("path", b"/empty"), part("file", b""))]) == ("/empty", b"")


async def test_other_fields_are_ignored() -> None:
    data = body(part("note", b"hi"), part("path", b"/x"), part("file", b"1"), part("z", b"2"))
    assert await upload([data]) == ("/x", b"1")


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",  # no boundary
        "multipart/form-data; boundary=",
        "application/octet-stream; boundary=x",
        "",
    ],
)
def test_not_a_multipart_body(content_type: str) -> None:
    with pytest.raises(BadRequest, match="expected a multipart/form-data body"):
        MultipartUpload(request([b""], content_type))


async def path_error(chunks: Sequence[bytes]) -> str:
    with pytest.raises(BadRequest) as exc:
        await MultipartUpload(request(chunks)).path()
    return exc.value.message


async def file_error(chunks: Sequence[bytes]) -> str:
    parsed = MultipartUpload(request(chunks))
    await parsed.path()
    with pytest.raises(BadRequest) as exc:
        async for _chunk in parsed.file_chunks():
            pass
    assert parsed.error is exc.value  # kept for the caller abandoning the write
    return exc.value.message


async def test_before_the_file_starts() -> None:
    assert await path_error([body(part("file", b"x"))]) == (
        "the 'path' field must come before 'file'"
    )
    assert await path_error([body()]) == "missing the 'path' field"
    assert await path_error([body(part("path", b"/x"))]) == "missing the 'file' field"
    assert await path_error([body(part("path", b"/x"), part("path", b"/y"))]) == (
        "more than one 'path' field"
    )
    assert await path_error([body(part("path", b""), part("file", b""))]) == (
        "path: must not be empty"
    )
    assert await path_error([body(part("path", b"/\xff\xfe"), part("file", b""))]) == (
        "path: not valid UTF-8"
    )
    assert await path_error([b""]) == "missing the 'path' field"


async def test_oversized_parts() -> None:
    long_path = b"/" + b"a" * MAX_PATH_BYTES
    assert await path_error(split(body(part("path", long_path), part("file", b"")), 512)) == (
        f"path: longer than {MAX_PATH_BYTES} bytes"
    )
    # At the limit it is fine.
    at_limit = b"/" + b"a" * (MAX_PATH_BYTES - 1)
    assert await upload([body(part("path", at_limit), part("file", b"x"))]) == (
        at_limit.decode(),
        b"x",
    )
    # A part header line longer than python-multipart's own bound (4224 bytes) is refused by
    # the library before MAX_HEADER_BYTES could be reached.
    long_name = "p" * MAX_HEADER_BYTES
    assert await path_error(split(body(part(long_name, b"x")), 1000)) == (
        "malformed multipart body"
    )
    many_headers = (
        f"--{BOUNDARY}\r\n".encode()
        + b"".join(f"X-H{i}: v\r\n".encode() for i in range(20))
        + b'Content-Disposition: form-data; name="path"\r\n\r\n/x\r\n'
    )
    assert await path_error([many_headers + body(part("file", b""))]) == (
        "malformed multipart body"
    )


async def test_malformed_bodies() -> None:
    bad_header = f"--{BOUNDARY}\r\nthis line has no colon\r\n\r\nx\r\n".encode()
    assert await path_error([bad_header + body()]) == "malformed multipart body"
    bad_start = b"not the boundary at all\r\n" + body(part("path", b"/x"), part("file", b"1"))
    assert await path_error([bad_start]) == "malformed multipart body"


async def test_inside_and_after_the_file() -> None:
    # The body stops inside the file, or before the closing boundary: nothing may be written.
    whole = body(part("path", b"/x"), part("file", CONTENT))
    assert await file_error(at_file_data(whole[: len(whole) - 200])) == (
        "the multipart body ended before its closing boundary"
    )
    open_ended = body(part("path", b"/x"), part("file", b"data"), closed=False)
    assert await file_error(at_file_data(open_ended)) == (
        "the multipart body ended before its closing boundary"
    )
    # (Mistakes after the file's start come from file_chunks when they arrive after it.)
    twice = body(part("path", b"/x"), part("file", b"1"), part("file", b"2"))
    assert await file_error(at_file_data(twice)) == "more than one 'file' field"
    late_path = body(part("path", b"/x"), part("file", b"1"), part("path", b"/y"))
    assert await file_error(at_file_data(late_path)) == "more than one 'path' field"


def at_file_data(data: bytes) -> list[bytes]:
    """`data` in two chunks, the second from the first byte of the file's data."""
    header = data.index(b'name="file"')
    cut = data.index(b"\r\n\r\n", header) + 4
    return [data[:cut], data[cut:]]


async def test_the_file_streams_as_it_arrives() -> None:
    """Bytes of the file are handed on before the rest of the body is read (the control plane
    never holds a whole file)."""
    head = body(part("path", b"/x"), closed=False) + (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"\r\n\r\n'.encode()
    )
    first, second = b"A" * 5000, b"B" * 5000
    read: list[bytes] = []
    parsed = MultipartUpload(
        request([head, first, second, f"\r\n--{BOUNDARY}--\r\n".encode()], read=read)
    )
    assert await parsed.path() == "/x"
    assert len(read) == 1
    pieces = [(piece, len(read)) async for piece in parsed.file_chunks()]
    assert b"".join(p for p, _ in pieces) == first + second
    # The first bytes came out when only the head and the first half had been read.
    assert pieces[0][1] == 2
