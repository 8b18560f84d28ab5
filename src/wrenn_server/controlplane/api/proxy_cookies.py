"""Cookies and the preview parameter at the port proxy's edge.

Every capsule port is a host under the proxy's domain, beside the others and below the domain
the dashboard may share. So the preview cookie is host-only (no Domain), and a capsule's own
Set-Cookie loses its Domain attribute: an app can set cookies for its own host, never for its
parent domain (the dashboard, other capsules). Our cookie and our parameter never reach the app,
and the app cannot set a cookie of our name.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote_plus

from ..services.proxy_access import PREVIEW_COOKIE, PREVIEW_PARAM

Headers = list[tuple[bytes, bytes]]


def preview_cookie(token: str, max_age: int, *, secure: bool) -> bytes:
    """The Set-Cookie value that keeps a preview token for this host only."""
    attributes = [f"{PREVIEW_COOKIE}={token}", "Path=/", f"Max-Age={max(max_age, 0)}"]
    attributes += ["HttpOnly", "SameSite=Lax", *(["Secure"] if secure else [])]
    return "; ".join(attributes).encode("latin-1")


def cookie_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The preview token in the request's cookies, if any."""
    for key, value in headers:
        if key != b"cookie":
            continue
        for pair in value.split(b";"):
            name, _, token = pair.partition(b"=")
            if name.strip() == PREVIEW_COOKIE.encode() and token.strip():
                return token.strip().strip(b'"').decode("latin-1")
    return None


def without_preview_cookie(headers: Headers) -> Headers:
    """The request's headers without our cookie (other cookies kept as they came)."""
    out: Headers = []
    for key, value in headers:
        if key == b"cookie":
            pairs = [p for p in value.split(b";") if p.strip()]
            kept = [p.strip() for p in pairs if _name(p) != PREVIEW_COOKIE.encode()]
            if not kept:
                continue
            value = b"; ".join(kept)
        out.append((key, value))
    return out


def split_preview_param(query: bytes) -> tuple[bytes, str | None]:
    """The query string without the preview parameter, and the parameter's value."""
    kept: list[bytes] = []
    token: str | None = None
    for part in query.split(b"&") if query else []:
        name, _, value = part.partition(b"=")
        if unquote_plus(name.decode("latin-1")) == PREVIEW_PARAM:
            token = unquote_plus(value.decode("latin-1"))
        else:
            kept.append(part)
    return b"&".join(kept), token


def safe_response_headers(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """The app's answer headers with each Set-Cookie made host-only; one naming our cookie is
    dropped."""
    out: Headers = []
    for key, value in headers:
        if key.lower() == b"set-cookie":
            cleaned = _host_only(value)
            if cleaned is None:
                continue
            value = cleaned
        out.append((key, value))
    return out


def _name(pair: bytes) -> bytes:
    return pair.split(b"=", 1)[0].strip()


def _host_only(set_cookie: bytes) -> bytes | None:
    parts = set_cookie.split(b";")
    if _name(parts[0]).lower() == PREVIEW_COOKIE.encode():
        return None
    kept = [parts[0]] + [p for p in parts[1:] if _name(p).lower() != b"domain"]
    return b";".join(kept)
