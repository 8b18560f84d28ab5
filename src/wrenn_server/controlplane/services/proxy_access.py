"""Who may reach a capsule's port through the port proxy.

A port is open to anyone when the capsule lists it in `public_ports`. Otherwise the request needs
an API key of the capsule's team, the JWT of a member of the capsule's team (whichever team the
token has active), or a preview token for exactly that port of that capsule (from the link
`POST /v1/capsules/{id}/ports/{port}/url` gives, kept by the browser as a cookie for that host
only), or an E2B access token of the capsule (`X-Access-Token`, `E2B-Traffic-Access-Token`). No
credentials: 401; credentials that do not reach the capsule: 404, as for a capsule that does not
exist. The E2B envd protocol (services/e2b_envd) takes neither public ports nor preview tokens:
it runs commands, so only the team's credentials and the capsule's envd token open it (and a
file URL signed with that token opens its one file).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .. import ids
from ..db.models import APIKey, Team, TeamMember, User
from ..db.models.capsules import Sandbox
from ..db.session import Database, transaction
from ..errors import InvalidID, InvalidState, NotFound, Unauthorized
from ..security import E2bAccessKind, PreviewGrant, TokenCodec, hash_credential
from . import audit, auth_cache, capsules, principals
from .auth_cache import AuthCache
from .capsule_routes import CapsuleRoutes, Route
from .principals import Principal

# The query parameter a preview link carries, and the cookie the proxy turns it into.
PREVIEW_PARAM = "wrenn_preview"
PREVIEW_COOKIE = "wrenn_preview"
# What a request through a public port or a preview link does is done in the platform's name.
PROXY_ACTOR = audit.Actor(type="system", id=None, name="port proxy")
# ... and so is one carrying an E2B access token.
E2B_TOKEN_ACTOR = audit.Actor(type="system", id=None, name="E2B access token")


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request through the proxy carries: `X-API-Key`, `Authorization: Bearer`, a
    preview token (the cookie, or for a WebSocket upgrade also the query parameter), and E2B's
    access tokens (`X-Access-Token`: the envd kind, `E2B-Traffic-Access-Token`: the traffic
    kind)."""

    api_key: str | None = None
    bearer: str | None = None
    preview: str | None = None
    e2b_envd: str | None = None
    e2b_traffic: str | None = None


@dataclass(frozen=True, slots=True)
class Caches:
    """What a check may reuse instead of the database: who a credential is (auth_cache.py)
    and where a running capsule is (capsule_routes.py); both keep their own bounds."""

    auth: AuthCache
    routes: CapsuleRoutes


@dataclass(frozen=True, slots=True)
class Access:
    """A request let through to a capsule of `team_id`, done as `actor`."""

    team_id: uuid.UUID
    actor: audit.Actor


def _capsule_uuid(capsule_id: str) -> uuid.UUID | None:
    try:
        return ids.SANDBOX.parse(capsule_id)
    except InvalidID:
        return None


async def authorize(
    db: Database,
    codec: TokenCodec,
    capsule_id: str,
    port: int,
    credentials: Credentials,
    caches: Caches | None = None,
) -> Access:
    """The request's access to `port` of the capsule, or `Unauthorized` / `NotFound`."""
    return await _authorize(db, codec, capsule_id, port, credentials, caches)


async def authorize_envd(
    db: Database,
    codec: TokenCodec,
    capsule_id: str,
    credentials: Credentials,
    caches: Caches | None = None,
) -> Access:
    """The request's access to the capsule's E2B envd protocol: the capsule's envd token, an
    API key of its team or a member's JWT; never a public port, a preview or a traffic token."""
    only_team = Credentials(
        api_key=credentials.api_key, bearer=credentials.bearer, e2b_envd=credentials.e2b_envd
    )
    return await _authorize(db, codec, capsule_id, None, only_team, caches)


async def authorize_envd_signed(
    db: Database,
    codec: TokenCodec,
    capsule_id: str,
    check: Callable[[str], None],
    caches: Caches | None = None,
) -> Access:
    """Access to the capsule's envd by a signed file URL: `check` is given the capsule's envd
    token (recomputed: the kind is deterministic per capsule and team) and raises
    `Unauthorized` unless the URL was signed with it. Any failure is one 401, so a signature
    tells nothing about capsules it is not for."""
    sandbox_id = _capsule_uuid(capsule_id)
    route = caches.routes.get(sandbox_id) if caches is not None and sandbox_id else None
    if route is not None:
        team_id = route.team_id
    else:
        async with db.sessionmaker() as session, transaction(session):
            sandbox = await session.get(Sandbox, sandbox_id) if sandbox_id else None
        if sandbox is None:
            raise Unauthorized("invalid signature")
        team_id = sandbox.team_id
    check(codec.issue_e2b_access(capsule_id, team_id, "envd"))
    return Access(team_id, E2B_TOKEN_ACTOR)


async def _authorize(
    db: Database,
    codec: TokenCodec,
    capsule_id: str,
    port: int | None,
    credentials: Credentials,
    caches: Caches | None,
) -> Access:
    sandbox_id = _capsule_uuid(capsule_id)
    route = caches.routes.get(sandbox_id) if caches is not None and sandbox_id else None
    if caches is not None and route is not None:
        cached = _cached_access(codec, caches.auth, route, capsule_id, port, credentials)
        if cached is not None:
            return cached
    auth = caches.auth if caches is not None else None
    read_at = auth_cache.generation()
    async with db.sessionmaker() as session, transaction(session):
        sandbox = await session.get(Sandbox, sandbox_id) if sandbox_id else None
        if sandbox is not None and port is not None and port in (sandbox.public_ports or []):
            return Access(sandbox.team_id, PROXY_ACTOR)
        if credentials.e2b_envd or credentials.e2b_traffic:
            # Checked before any other credentials the request carries, so a wrong token is
            # refused rather than passed over.
            team_id = _e2b_team(codec, credentials, capsule_id)
            allowed = sandbox is not None and sandbox.team_id == team_id
            access = Access(team_id, E2B_TOKEN_ACTOR) if allowed else None
        elif credentials.api_key:
            principal = await principals.principal_from_api_key(session, key=credentials.api_key)
            if auth is not None:
                auth.put(_key_entry(credentials.api_key), principal, read_at_generation=read_at)
            allowed = sandbox is not None and principal.team_id == sandbox.team_id
            access = Access(sandbox.team_id, principal.actor) if allowed and sandbox else None
        elif credentials.bearer:
            principal = await principals.principal_from_token(
                session, codec=codec, token=credentials.bearer
            )
            if auth is not None:
                auth.put(credentials.bearer, principal, read_at_generation=read_at)
            # The capsule's team decides, not the team the token has active.
            allowed = (
                sandbox is not None
                and principal.user_id is not None
                and await _is_member(session, principal.user_id, sandbox.team_id)
            )
            access = Access(sandbox.team_id, principal.actor) if allowed and sandbox else None
        elif credentials.preview and port is not None:
            grant = _grant(codec, credentials.preview, capsule_id, port)
            allowed = sandbox is not None and await _still_holds(session, grant, sandbox)
            access = Access(grant.team_id, PROXY_ACTOR) if allowed else None
        else:
            raise Unauthorized(
                "missing credentials: send X-API-Key or Authorization: Bearer, or open the "
                "port's preview link, to reach a capsule's port"
            )
    if access is None:
        raise NotFound("capsule not found")
    return access


def _cached_access(
    codec: TokenCodec,
    auth: AuthCache,
    route: Route,
    capsule_id: str,
    port: int | None,
    credentials: Credentials,
) -> Access | None:
    """The access `_authorize` would find, when the caches alone tell it is allowed; None
    otherwise (the database decides, and words any refusal)."""
    if port is not None and port in route.public_ports:
        return Access(route.team_id, PROXY_ACTOR)
    if credentials.e2b_envd or credentials.e2b_traffic:
        team_id = _e2b_team(codec, credentials, capsule_id)
        return Access(team_id, E2B_TOKEN_ACTOR) if team_id == route.team_id else None
    if credentials.api_key:
        principal = auth.get(_key_entry(credentials.api_key))
    elif credentials.bearer:
        codec.verify(credentials.bearer)  # signature and expiry, every time
        principal = auth.get(credentials.bearer)
    else:
        return None
    # The principal's team is the one its role was read for: its member, or its key.
    if principal is None or principal.team_id != route.team_id:
        return None
    return Access(route.team_id, principal.actor)


def _key_entry(api_key: str) -> str:
    # As api/deps.py keys it: by the digest, so the cache never holds a usable key.
    return "k:" + hash_credential(api_key)


async def redeem(
    db: Database, codec: TokenCodec, capsule_id: str, port: int, token: str
) -> dt.datetime | None:
    """When a preview link's token for this port stops working (for its cookie), after checking
    it here; None when it is not valid but the port is public anyway (nothing to remember)."""
    sandbox_id = _capsule_uuid(capsule_id)
    async with db.sessionmaker() as session, transaction(session):
        sandbox = await session.get(Sandbox, sandbox_id) if sandbox_id else None
        try:
            grant = _grant(codec, token, capsule_id, port)
        except Unauthorized:
            if sandbox is not None and port in (sandbox.public_ports or []):
                return None
            raise
        if sandbox is None or not await _still_holds(session, grant, sandbox):
            raise NotFound("capsule not found")
    return _expiry(codec, token)


async def issue(
    session: AsyncSession,
    codec: TokenCodec,
    principal: Principal,
    capsule_id: str,
    port: int,
    lifetime: dt.timedelta,
) -> tuple[str, dt.datetime]:
    """A preview token for `port` of a capsule of the caller's team, and when it expires."""
    team_id = principal.require_team()
    sandbox = await capsules.get_capsule(session, team_id, capsule_id)
    if sandbox.status in ("stopped", "error"):
        raise InvalidState(f"capsule {capsule_id} is {sandbox.status}: its ports cannot be opened")
    if principal.api_key_id is not None:
        issuer = ids.API_KEY.format(principal.api_key_id)
    else:
        issuer = ids.USER.format(principal.require_user())
    grant = PreviewGrant(capsule_id=sandbox.id, port=port, team_id=team_id, issuer=issuer)
    return codec.issue_preview(grant, lifetime)


def _e2b_team(codec: TokenCodec, credentials: Credentials, capsule_id: str) -> uuid.UUID:
    """The team of a valid E2B access token for this capsule (either kind); `Unauthorized`
    for a token that is invalid or names another capsule."""
    tokens: list[tuple[str | None, E2bAccessKind]] = [
        (credentials.e2b_envd, "envd"),
        (credentials.e2b_traffic, "traffic"),
    ]
    for token, kind in tokens:
        if token:
            named, team_id = codec.verify_e2b_access(token, kind)
            if named != capsule_id:
                raise Unauthorized("the access token is for another sandbox")
            return team_id
    raise Unauthorized("invalid access token")


def _grant(codec: TokenCodec, token: str, capsule_id: str, port: int) -> PreviewGrant:
    """The token's grant, if it is valid and for this port of this capsule."""
    try:
        grant, _expires = codec.verify_preview(token)
    except Unauthorized as e:
        if str(e) == "token expired":
            raise Unauthorized(
                "the preview link has expired: get a new one "
                f"(POST /v1/capsules/{capsule_id}/ports/{port}/url)"
            ) from None
        raise Unauthorized("invalid preview token") from None
    if ids.SANDBOX.format(grant.capsule_id) != capsule_id or grant.port != port:
        raise Unauthorized("the preview token is for another capsule or port")
    return grant


def _expiry(codec: TokenCodec, token: str) -> dt.datetime:
    return codec.verify_preview(token)[1]


async def _still_holds(session: AsyncSession, grant: PreviewGrant, sandbox: Sandbox) -> bool:
    """The capsule still belongs to the token's team, which still exists; `Unauthorized` when
    whoever made the token could not make it now (a removed member, a revoked key)."""
    if sandbox.team_id != grant.team_id:
        return False
    team = await session.get(Team, grant.team_id)
    if team is None or team.deleted_at is not None:
        return False
    if not await _issuer_holds(session, grant):
        raise Unauthorized(
            "the preview link is no longer valid (whoever made it lost access to the team): "
            "get a new one"
        )
    return True


async def _issuer_holds(session: AsyncSession, grant: PreviewGrant) -> bool:
    """The token's maker is still an active member of its team, or its API key is unrevoked
    and the key's creator still is (as `principals` requires of a caller)."""
    if grant.issuer.startswith(ids.API_KEY.prefix):
        creator = await session.scalar(
            select(APIKey.created_by).where(
                APIKey.id == ids.API_KEY.parse(grant.issuer),
                APIKey.team_id == grant.team_id,
                APIKey.revoked_at.is_(None),
            )
        )
    else:
        creator = ids.USER.parse(grant.issuer)
    if creator is None:
        return False
    active = await session.scalar(
        select(User.id)
        .join(TeamMember, TeamMember.user_id == User.id)
        .where(
            User.id == creator,
            User.is_active,
            User.deleted_at.is_(None),
            TeamMember.team_id == grant.team_id,
        )
    )
    return active is not None


async def _is_member(session: AsyncSession, user_id: uuid.UUID, team_id: uuid.UUID) -> bool:
    role = await session.scalar(
        select(TeamMember.role)
        .join(Team, Team.id == TeamMember.team_id)
        .where(
            TeamMember.team_id == team_id,
            TeamMember.user_id == user_id,
            Team.deleted_at.is_(None),
        )
    )
    return role is not None


def is_platform_token(codec: TokenCodec, bearer: str) -> bool:
    """A Bearer token this platform signed (a login, preview or host token, even expired):
    never passed on to a capsule, even where it was not needed (a public port, an API key sent
    too)."""
    return codec.signed_here(bearer)
