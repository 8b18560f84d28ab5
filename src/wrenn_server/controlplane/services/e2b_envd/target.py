"""The capsule an E2B envd request is for, as its credentials reach it, and the user it acts as
(E2B's SDKs name it in `Authorization: Basic base64(user:)`; none means the capsule's default
user)."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ....agentproto.client import AgentClient
from ...db.session import Database
from ...errors import Unauthorized
from ...security import TokenCodec
from .. import proxy, proxy_access
from ..auth_cache import AuthCache
from ..capsules import Hosts
from . import signed_urls
from .signed_urls import SignedFile

# The port E2B's SDKs address envd on (E2b-Sandbox-Port, `49983-{id}.{domain}`).
ENVD_PORT = 49983
MAX_USER_CHARS = 64


@dataclass(frozen=True, slots=True)
class Envd:
    """A running capsule reached through the protocol."""

    client: AgentClient
    capsule_id: str
    access: proxy_access.Access


Opener = Callable[[], Awaitable[Envd]]


def opener(
    db: Database,
    hosts: Hosts,
    codec: TokenCodec,
    capsule_id: str,
    credentials: proxy_access.Credentials,
    signed: SignedFile | None = None,
    auth: AuthCache | None = None,
) -> Opener:
    """Checks the credentials (or, without any, a signed file URL's signature) and finds the
    capsule's agent when first called (so a refusal is answered in the protocol's own framing),
    the same `Envd` after. With `auth`, credentials and the capsule's place are taken from the
    caches while they hold them."""
    found: list[Envd] = []
    caches = proxy_access.Caches(auth, hosts.routes) if auth is not None else None
    has_credentials = bool(credentials.e2b_envd or credentials.api_key or credentials.bearer)

    async def open_envd() -> Envd:
        if found:
            return found[0]
        if has_credentials:
            access = await proxy_access.authorize_envd(db, codec, capsule_id, credentials, caches)
        elif signed is not None:
            url = signed
            access = await proxy_access.authorize_envd_signed(
                db,
                codec,
                capsule_id,
                lambda token: signed_urls.check(url, token, time.time()),
                caches,
            )
        else:
            raise Unauthorized(
                "missing credentials: send the sandbox's envd access token in X-Access-Token "
                "(or an API key of its team in X-API-Key)"
            )
        client, _generation = await proxy.running_agent(db, hosts, access, capsule_id)
        found.append(Envd(client, capsule_id, access))
        return found[0]

    return open_envd


def basic_user(authorization: str | None) -> str:
    """The user of an `Authorization: Basic` header ('' for none: the capsule's default)."""
    if not authorization:
        return ""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("invalid Basic authorization header") from None
    user = decoded.partition(":")[0]
    if len(user) > MAX_USER_CHARS or any(c in user for c in "/\x00\n"):
        raise Unauthorized(f"invalid username: '{user[:MAX_USER_CHARS]}'")
    return user
