"""E2B's in-sandbox protocol for one capsule at the HTTP edge: the Connect services
(api/e2b_connect.py), envd's `/files` (downloads and uploads, octet-stream or multipart,
streamed both ways), `/health` and `/envs`. The port proxy hands a request here when it is for
envd's port of a capsule (`E2b-Sandbox-Port: 49983` or `49983-{id}.{domain}`); the caller's
credentials are checked on first use (services/e2b_envd/target.py), so a refusal is answered in
the protocol's own framing. envd's HTTP errors are `{"code": status, "message"}`, as E2B's SDKs
read them."""

from __future__ import annotations

import asyncio
import os.path
from collections.abc import AsyncIterator, Iterable
from urllib.parse import parse_qs, quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from ...proto.hostagent.v1 import hostagent_pb2 as pb
from ..errors import BadRequest, DomainError, HostAgentError, TooLarge
from ..services import proxy_access
from ..services.e2b_envd import files, signed_urls
from ..services.e2b_envd.filesystem import FilesystemService
from ..services.e2b_envd.process import ProcessService
from ..services.e2b_envd.signed_urls import SignedFile
from ..services.e2b_envd.target import Envd, Opener, basic_user, opener
from . import e2b_multipart
from .e2b_connect import FILESYSTEM_PREFIX, PROCESS_PREFIX, serve_filesystem, serve_process
from .errors import status_for

# What a gzip upload may inflate to (an octet-stream one is as large as it is sent).
MAX_INFLATED_BYTES = 16 * 1024 * 1024 * 1024


async def serve(scope: Scope, receive: Receive, send: Send, capsule_id: str) -> None:
    state = scope["app"].state
    open_envd = opener(
        state.db, state.hosts, state.codec, capsule_id, credentials(scope), auth=state.auth_cache
    )
    path: str = scope["path"]
    gone = asyncio.Event()

    async def watched() -> Message:
        """The request's messages, noting the client's leaving for the streams."""
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
        return message

    if path.startswith(PROCESS_PREFIX):
        return await serve_process(ProcessService(open_envd, gone), scope, watched, send)
    if path.startswith(FILESYSTEM_PREFIX):
        service = FilesystemService(open_envd, state.e2b_watchers, gone)
        return await serve_filesystem(service, scope, watched, send)
    request = Request(scope, receive)
    try:
        signed = _signed(request) if path == "/files" else None
        if signed is not None:
            open_envd = opener(
                state.db,
                state.hosts,
                state.codec,
                capsule_id,
                credentials(scope),
                signed,
                auth=state.auth_cache,
            )
        response = await _http(request, path, open_envd, signed)
    except DomainError as e:
        response = _error(e)
    await response(scope, receive, send)


def credentials(scope: Scope) -> proxy_access.Credentials:
    headers = _headers(scope["headers"])
    authorization = headers.get("authorization", "")
    bearer = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
    return proxy_access.Credentials(
        api_key=headers.get("x-api-key") or None,
        bearer=bearer or None,
        e2b_envd=headers.get("x-access-token") or None,
    )


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}


async def _http(
    request: Request, path: str, open_envd: Opener, signed: SignedFile | None
) -> Response:
    method = request.method
    if path == "/health" and method == "GET":
        await open_envd()
        return Response(status_code=204)
    if path == "/envs" and method == "GET":
        envd = await open_envd()
        return JSONResponse(await files.environment(envd, _user(request)))
    if path == "/files" and method == "GET":
        return await _download(request, await open_envd(), signed)
    if path == "/files" and method == "POST":
        return await _upload(request, await open_envd(), signed)
    if path in ("/health", "/envs", "/files"):
        return _envd_error(405, f"method {method} not allowed")
    return _envd_error(404, f"no such path: {path}")


def _signed(request: Request) -> SignedFile | None:
    """A signed URL's access, when the request carries a signature and no credentials (with
    credentials the signature is not needed, as on E2B)."""
    found = credentials(request.scope)
    if found.e2b_envd or found.api_key or found.bearer:
        return None
    return signed_urls.from_query(_query(request), request.method)


def _query(request: Request) -> dict[str, str]:
    parsed = parse_qs(request.scope.get("query_string", b"").decode("latin-1"))
    return {name: values[0] for name, values in parsed.items() if values}


def _user(request: Request, signed: SignedFile | None = None) -> str:
    if signed is not None:
        return signed.user  # the one it was signed for, whatever Basic auth says
    user = _query(request).get("username")
    return user if user is not None else basic_user(request.headers.get("authorization"))


async def _download(request: Request, envd: Envd, signed: SignedFile | None) -> Response:
    ref = files.file_ref(envd, _query(request).get("path"), _user(request, signed))
    chunks = await files.read(envd, ref)
    name = os.path.basename(ref.path) or "download"
    return StreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"},
    )


async def _upload(request: Request, envd: Envd, signed: SignedFile | None) -> Response:
    query, user = _query(request), _user(request, signed)
    if any(name.lower().startswith("x-metadata-") for name in request.headers):
        # Refused rather than dropped: code relying on it must not run on without it.
        raise BadRequest("file metadata (X-Metadata-* headers) is not supported")
    content_type = request.headers.get("content-type", "")
    boundary = e2b_multipart.boundary_of(content_type)
    if boundary is None:
        if not content_type.startswith("application/octet-stream"):
            raise BadRequest("expected an application/octet-stream or multipart/form-data body")
        ref = files.file_ref(envd, query.get("path"), user)
        body: AsyncIterator[bytes] = request.stream()
        if request.headers.get("content-encoding", "").lower() == "gzip":
            body = files.gunzipped(body, MAX_INFLATED_BYTES)
        entry = await files.write(envd, ref, body)
        return JSONResponse([_write_info(entry)])
    parts = e2b_multipart.FileParts(request.stream(), boundary)
    written: list[dict[str, str]] = []
    async for field, filename in parts.parts():
        if field != "file":
            async for _ in parts.chunks():  # not ours: skipped
                pass
            continue
        if signed is not None and written:
            # A signed URL writes the one path it names, never a part's own filename.
            raise BadRequest("a signed upload URL writes one file")
        ref = files.file_ref(envd, filename or query.get("path"), user)
        if query.get("path") and not written:
            ref.path = query["path"]
        written.append(_write_info(await files.write(envd, ref, parts.chunks())))
    if not written:
        raise BadRequest("the multipart body has no 'file' part")
    return JSONResponse(written)


def _write_info(entry: pb.FileEntry) -> dict[str, str]:
    return {
        "name": entry.name,
        "type": "dir" if entry.type == "dir" else "file",
        "path": entry.path,
    }


def _error(e: DomainError) -> Response:
    status, _code = status_for(e)
    if isinstance(e, TooLarge):
        status = 507  # envd's "not enough disk space"
    elif isinstance(e, HostAgentError):
        status = 500  # a 502 would read as "the sandbox is gone" to E2B's SDKs
    return _envd_error(status, str(e))


def _envd_error(status: int, message: str) -> Response:
    return JSONResponse({"code": status, "message": message}, status_code=status)
