"""The port proxy's HTTP edge: an ASGI middleware in front of everything else. A request whose
Host is `{port}-{capsule_id}.<proxy domain>` is authenticated (services/proxy_access.py), then
forwarded as HTTP/1.1 (h11) over a tunnel to that port (services/proxy.py), streamed both ways;
any other request goes on to the API. A preview link's token is turned into a host-only cookie
by a redirect; the platform's credentials never reach the app, and the app's cookies stay on its
own host (proxy_cookies.py). E2B's SDKs name the capsule and port in `E2b-Sandbox-Id` and
`E2b-Sandbox-Port` headers instead of the host (on any host: the control plane's own address),
and envd's port (49983) of a capsule, in either form, is E2B's in-sandbox protocol served here
(api/e2b_envd.py), not a port of the capsule."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Iterable

import h11
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketState

from ..errors import BadRequest, DomainError, PortUnreachable
from ..services import proxy, proxy_access, proxy_pool
from ..services.e2b_envd.target import ENVD_PORT
from . import e2b_envd, port_proxy_ws, proxy_cookies
from .errors import error_response, status_for

# Hop-by-hop headers (RFC 9110 7.6.1) end at this proxy; so do the platform credentials, which
# the capsule's code must never see.
_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
}
_FORWARDED = {b"x-forwarded-host", b"x-forwarded-proto", b"x-forwarded-for"}
# E2B's credentials and routing headers end here too.
_E2B = {b"x-access-token", b"e2b-traffic-access-token", b"e2b-sandbox-id", b"e2b-sandbox-port"}


class PortProxy:
    def __init__(self, app: ASGIApp, proxy_domain: str | None) -> None:
        self.app = app
        self.proxy_domain = proxy_domain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        host = _header(scope["headers"], b"host")
        try:
            target = e2b_target(scope["headers"])
        except DomainError as e:
            return await _error(e)(scope, receive, send)
        if target is None:
            target = proxy.parse_host(host, self.proxy_domain) if host else None
        if target is None:
            return await self.app(scope, receive, send)
        if target.port == ENVD_PORT:
            # E2B's envd protocol, served here for the capsule (never the capsule's own port).
            if scope["type"] == "websocket":
                return await WebSocket(scope, receive, send).close(code=1008)
            return await e2b_envd.serve(scope, receive, send, target.capsule_id)
        if scope["type"] == "websocket":
            return await _forward_websocket(WebSocket(scope, receive, send), host, target)
        try:
            await _forward(scope, receive, send, host, target)
        except DomainError as e:
            await _error(e)(scope, receive, send)
        return None


def e2b_target(headers: Iterable[tuple[bytes, bytes]]) -> proxy.Target | None:
    """The capsule port E2B's SDKs name in headers when they send every in-sandbox call to one
    address (`E2B_SANDBOX_URL`): `E2b-Sandbox-Id` and `E2b-Sandbox-Port`; None without them."""
    capsule_id = _header(headers, b"e2b-sandbox-id").strip()
    port = _header(headers, b"e2b-sandbox-port").strip()
    if not capsule_id and not port:
        return None
    if not capsule_id or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise BadRequest("E2b-Sandbox-Id and E2b-Sandbox-Port (1-65535) go together")
    return proxy.Target(port=int(port), capsule_id=capsule_id)


def _error(e: DomainError) -> JSONResponse:
    status, code = status_for(e)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return error_response(status, code, str(e), headers)


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return ""


def _credentials(scope: Scope, *, preview_param: str | None = None) -> proxy_access.Credentials:
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    authorization = _header(headers, b"authorization")
    bearer = authorization[7:].strip() if authorization[:7].lower() == "bearer " else None
    return proxy_access.Credentials(
        api_key=_header(headers, b"x-api-key") or None,
        bearer=bearer or None,
        preview=proxy_cookies.cookie_token(headers) or preview_param,
        e2b_envd=_header(headers, b"x-access-token") or None,
        e2b_traffic=_header(headers, b"e2b-traffic-access-token") or None,
    )


async def _open(
    scope: Scope,
    target: proxy.Target,
    *,
    preview_param: str | None = None,
    pool: proxy_pool.TunnelPool[proxy.Tunnel] | None = None,
) -> tuple[proxy.Tunnel, bool]:
    """The caller checked, then a tunnel to the port; and whether the Authorization header
    carries a token of this platform (so it stays here)."""
    state = scope["app"].state
    credentials = _credentials(scope, preview_param=preview_param)
    caches = proxy_access.Caches(state.auth_cache, state.hosts.routes)
    access = await proxy_access.authorize(
        state.db, state.codec, target.capsule_id, target.port, credentials, caches
    )
    tunnel = await proxy.open_tunnel(state.db, state.hosts, access, target, pool)
    ours = credentials.bearer is not None and proxy_access.is_platform_token(
        state.codec, credentials.bearer
    )
    return tunnel, ours


async def _forward(
    scope: Scope, receive: Receive, send: Send, host: str, target: proxy.Target
) -> None:
    query, token = proxy_cookies.split_preview_param(scope.get("query_string", b""))
    if token is not None:
        return await _redeem(scope, send, host, target, token, query)
    pool: proxy_pool.TunnelPool[proxy.Tunnel] = scope["app"].state.proxy_pool
    replay = proxy_pool.Replay(receive)
    while True:
        tunnel, used_bearer = await _open(scope, target, pool=pool)
        kept = False
        try:
            kept = await _exchange(scope, replay, send, tunnel, host, used_bearer=used_bearer)
        except PortUnreachable:
            # A kept tunnel the app closed just as this request went out: sent again on
            # another if the app saw nothing it could have acted on (each retry uses one up).
            if not (_retriable(scope, tunnel) and replay.replayable):
                raise
            replay.rewind()
            continue
        finally:
            if kept and tunnel.key is not None:
                pool.keep(tunnel.key.target, tunnel.key.generation, tunnel)
            else:
                tunnel.close()
        return


def _retriable(scope: Scope, tunnel: proxy.Tunnel) -> bool:
    return tunnel.reused and tunnel.received == 0 and scope["method"] in proxy_pool.IDEMPOTENT


async def _redeem(
    scope: Scope, send: Send, host: str, target: proxy.Target, token: str, query: bytes
) -> None:
    """A preview link: its token checked and kept as a cookie of this host, and the browser
    sent to the same address without it (so it is neither forwarded nor left in the history)."""
    state = scope["app"].state
    expires = await proxy_access.redeem(
        state.db, state.codec, target.capsule_id, target.port, token
    )
    path = scope.get("raw_path") or scope["path"].encode()
    location = f"{scope.get('scheme', 'http')}://{host}".encode("latin-1") + path
    if query:
        location += b"?" + query
    headers = [
        (b"location", location),
        (b"cache-control", b"no-store"),
        (b"referrer-policy", b"no-referrer"),
        (b"content-length", b"0"),
    ]
    if expires is not None:
        remaining = int((expires - dt.datetime.now(dt.UTC)).total_seconds())
        secure = scope.get("scheme") == "https"
        headers.append(
            (b"set-cookie", proxy_cookies.preview_cookie(token, remaining, secure=secure))
        )
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def _forward_websocket(websocket: WebSocket, host: str, target: proxy.Target) -> None:
    # A WebSocket cannot follow a redirect: a preview token in its query is taken as it is.
    query, token = proxy_cookies.split_preview_param(websocket.scope.get("query_string", b""))
    websocket.scope["query_string"] = query
    try:
        tunnel, used_bearer = await _open(websocket.scope, target, preview_param=token)
    except DomainError as e:
        return await port_proxy_ws.refuse(websocket, _error(e))
    try:
        await port_proxy_ws.relay(websocket, tunnel, host, used_bearer=used_bearer)
    except DomainError as e:
        if websocket.client_state == WebSocketState.CONNECTING:
            await port_proxy_ws.refuse(websocket, _error(e))
        else:
            with contextlib.suppress(Exception):
                await websocket.close(code=1011)
    finally:
        tunnel.close()


def _upstream_headers(scope: Scope, host: str, used_bearer: bool) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    named = {
        token.strip().lower().encode("latin-1")
        for token in _header(headers, b"connection").split(",")
        if token.strip()
    }
    drop = _HOP | named | _FORWARDED | _E2B | {b"x-api-key"}
    if used_bearer:
        drop.add(b"authorization")
    out = [(k, v) for k, v in proxy_cookies.without_preview_cookie(headers) if k not in drop]
    if any(k == b"transfer-encoding" for k, _ in headers) and not any(
        k == b"content-length" for k, _ in headers
    ):
        out.append((b"transfer-encoding", b"chunked"))  # h11 frames the body again
    client = scope.get("client")
    out.append((b"x-forwarded-host", host.encode("latin-1")))
    out.append((b"x-forwarded-proto", str(scope.get("scheme", "http")).encode()))
    if client:
        out.append((b"x-forwarded-for", str(client[0]).encode()))
    return out


async def _exchange(
    scope: Scope,
    receive: Receive,
    send: Send,
    tunnel: proxy.Tunnel,
    host: str,
    *,
    used_bearer: bool,
) -> bool:
    """One request and its answer over the tunnel, each streamed as it comes; whether the
    tunnel may carry another (both messages whole, and neither side asked to close)."""
    conn = h11.Connection(h11.CLIENT)
    target = scope.get("raw_path") or scope["path"].encode()
    if scope.get("query_string"):
        target += b"?" + scope["query_string"]
    request = h11.Request(
        method=scope["method"], target=target, headers=_upstream_headers(scope, host, used_bearer)
    )
    await tunnel.send(conn.send(request) or b"")
    sent = asyncio.Event()  # the whole request is on the tunnel

    async def request_body() -> None:
        """The caller's body to the service, then a watch for the caller leaving (which ends
        the exchange, e.g. of an endless event stream)."""
        sending = True
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            if not sending:
                continue
            if body := message.get("body", b""):
                await tunnel.send(conn.send(h11.Data(data=body)) or b"")
            if not message.get("more_body", False):
                await tunnel.send(conn.send(h11.EndOfMessage()) or b"")
                sending = False
                sent.set()

    caller = asyncio.create_task(request_body())
    started = False
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                receiving = asyncio.create_task(tunnel.recv())
                await asyncio.wait({receiving, caller}, return_when=asyncio.FIRST_COMPLETED)
                if not receiving.done():
                    receiving.cancel()
                    with contextlib.suppress(BaseException):
                        await receiving
                    caller.result()  # the upload's failure, if that is what ended it
                    return False  # the caller left: nothing more to answer
                conn.receive_data(receiving.result())
                continue
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                await send(
                    {
                        "type": "http.response.start",
                        "status": event.status_code,
                        "headers": proxy_cookies.safe_response_headers(
                            (k, v) for k, v in event.headers if k not in _HOP
                        ),
                    }
                )
                started = True
            elif isinstance(event, h11.Data):
                await send(
                    {"type": "http.response.body", "body": bytes(event.data), "more_body": True}
                )
            elif isinstance(event, h11.EndOfMessage):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return sent.is_set() and conn.our_state is h11.DONE is conn.their_state
            else:  # ConnectionClosed before the answer ended
                raise h11.RemoteProtocolError("connection closed")
    except h11.RemoteProtocolError:
        if started:
            raise  # mid-answer: all that is left is dropping the connection
        raise PortUnreachable(
            f"the service on port {tunnel.port} closed the connection without a valid HTTP answer"
        ) from None
    finally:
        caller.cancel()
        with contextlib.suppress(BaseException):
            await caller
