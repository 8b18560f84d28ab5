"""FastAPI dependencies as `Annotated` aliases: the database session, the token codec and the
calling principal.

`CurrentPrincipal` accepts an `X-API-Key` header or an `Authorization: Bearer <JWT>` (the key wins
when both are sent); `CurrentUser` accepts only a user JWT (account and team management are not
for API keys); `CurrentAdmin` is a user JWT whose user is a platform admin. All re-check the
database, at most every `auth_cache.TTL_SEC` per credential (see services/auth_cache.py).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.session import Database, transaction
from ..errors import Forbidden, Unauthorized
from ..jobs.build_workers import Builds
from ..security import TokenCodec, hash_credential
from ..services import auth_cache, principals
from ..services.auth_cache import AuthCache
from ..services.capsule_listings import CapsuleListings
from ..services.capsules import Hosts
from ..services.event_hub import EventHub
from ..services.principals import Principal
from ..settings import Settings


async def _database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def _codec(request: Request) -> TokenCodec:
    codec: TokenCodec = request.app.state.codec
    return codec


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


DatabaseDep = Annotated[Database, Depends(_database)]
CodecDep = Annotated[TokenCodec, Depends(_codec)]
SettingsDep = Annotated[Settings, Depends(_settings)]


async def _session(db: DatabaseDep) -> AsyncIterator[AsyncSession]:
    async with db.sessionmaker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(_session)]

_bearer = HTTPBearer(
    auto_error=False, scheme_name="bearerAuth", description="JWT from /v1/auth/login."
)
_api_key = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="apiKeyAuth",
    description="Team API key from POST /v1/api-keys.",
)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
APIKeyDep = Annotated[str | None, Depends(_api_key)]


async def _auth_cache(request: Request) -> AuthCache:
    cache: AuthCache = request.app.state.auth_cache
    return cache


AuthCacheDep = Annotated[AuthCache, Depends(_auth_cache)]


# Who is calling. These open a session only when they send SQL (a cache miss, the key's
# last-used refresh), so a request the cache answers makes none; and they read the app's state
# themselves rather than through sub-dependencies, which FastAPI solves on every request.


async def user_principal(
    db: Database, codec: TokenCodec, bearer: HTTPAuthorizationCredentials | None, cache: AuthCache
) -> Principal:
    if bearer is None:
        raise Unauthorized("missing credentials: send Authorization: Bearer <token>")
    token = bearer.credentials
    # Signature and expiry are checked every time; only the database part is cached.
    codec.verify(token)
    cached = cache.get(token)
    if cached is not None:
        return cached
    read_at = auth_cache.generation()
    async with db.sessionmaker() as session, transaction(session):
        principal = await principals.principal_from_token(session, codec=codec, token=token)
    cache.put(token, principal, read_at_generation=read_at)
    return principal


async def principal(
    db: Database,
    codec: TokenCodec,
    bearer: HTTPAuthorizationCredentials | None,
    api_key: str | None,
    cache: AuthCache,
) -> Principal:
    """The principal of an API key (which wins) or a user JWT."""
    if api_key is None:
        if bearer is None:
            raise Unauthorized("missing credentials: send X-API-Key or Authorization: Bearer")
        return await user_principal(db, codec, bearer, cache)
    # Keyed by the digest: the cache never holds a usable key.
    key = "k:" + hash_credential(api_key)
    found = cache.get(key)
    if found is None:
        read_at = auth_cache.generation()
        async with db.sessionmaker() as session, transaction(session):
            found = await principals.principal_from_api_key(session, key=api_key)
        cache.put(key, found, read_at_generation=read_at)
    now = dt.datetime.now(dt.UTC)
    if found.api_key_id is not None and principals.needs_last_used_refresh(found, now):
        async with db.sessionmaker() as session, transaction(session, write=True):
            await principals.touch_api_key(session, key_id=found.api_key_id, now=now)
        cache.discard(key)  # read again, with its new last use, by the next request
    return found


async def _user_principal(request: Request, bearer: BearerDep) -> Principal:
    state = request.app.state
    return await user_principal(state.db, state.codec, bearer, state.auth_cache)


async def _principal(request: Request, bearer: BearerDep, api_key: APIKeyDep) -> Principal:
    state = request.app.state
    return await principal(state.db, state.codec, bearer, api_key, state.auth_cache)


CurrentPrincipal = Annotated[Principal, Depends(_principal)]
CurrentUser = Annotated[Principal, Depends(_user_principal)]


async def _admin(principal: CurrentUser) -> Principal:
    # `principal.is_admin` was just read from the users table (the JWT's claim is only a hint),
    # so revoking an admin takes effect on their next request.
    if not principal.is_admin:
        raise Forbidden("this needs a platform admin")
    return principal


CurrentAdmin = Annotated[Principal, Depends(_admin)]


async def _hosts(request: Request) -> Hosts:
    hosts: Hosts = request.app.state.hosts
    return hosts


HostsDep = Annotated[Hosts, Depends(_hosts)]


async def _capsule_listings(request: Request) -> CapsuleListings:
    listings: CapsuleListings = request.app.state.capsule_listings
    return listings


CapsuleListingsDep = Annotated[CapsuleListings, Depends(_capsule_listings)]


async def _builds(request: Request) -> Builds:
    builds: Builds = request.app.state.builds
    return builds


BuildsDep = Annotated[Builds, Depends(_builds)]


async def _events(request: Request) -> EventHub:
    hub: EventHub = request.app.state.events
    return hub


EventsDep = Annotated[EventHub, Depends(_events)]


@dataclass(frozen=True)
class TeamContext:
    """A principal acting inside its current team (capsules, snapshots)."""

    principal: Principal
    team_id: uuid.UUID

    @property
    def is_admin(self) -> bool:
        return self.principal.is_admin


async def _team(principal: CurrentPrincipal) -> TeamContext:
    return TeamContext(principal, principal.require_team())


TeamDep = Annotated[TeamContext, Depends(_team)]
