"""Credentials, without IO: password hashes, user JWTs and API keys.

- Passwords: argon2id (argon2-cffi's defaults), re-hashed on login when the parameters change.
- User JWTs: HS256 with claims `sub` (user id), `team_id`, `role`, `is_admin`, `name`, `email`
  and `tv`, the user's token version when it was issued (a password change or reset, or a
  deactivation, bumps the version in the database and so revokes every earlier token).
  Role, is_admin and name are hints for the UI only: every authorization decision re-reads the
  database (see `services/principals.py`).
- One-time tokens (password reset links, invitations): 256 random bits, URL-safe; only their
  SHA-256 is stored.
- API keys: `wrn_` + 64 hex digits (256 random bits). High entropy, so a plain SHA-256 is the right
  stored form (a slow hash buys nothing and would need a scan to look keys up); the first 12
  characters are kept as a visible prefix. Host registration and refresh tokens are made and
  stored the same way (`wrh_`, `wrr_`).
- Host JWTs: HS256 with the same key, `typ` "host" and `sub` the host id; a user token is never a
  host token or the reverse.
- Preview tokens: HS256 with the same key, `typ` "preview" and an audience of their own, bound to
  one port of one capsule of one team (`sub`, `port`, `team_id`) and naming who made it (`by`);
  they open that port through the port proxy and nothing else, and no other token opens a port
  as one.
- E2B access tokens (the `envdAccessToken` and `trafficAccessToken` an E2B create or connect
  returns): HS256 with the same key, `typ` "e2b-access" and an audience per kind, naming one capsule
  (`sub`, its wire id) of one team. They carry no expiry: the capsule's own lifetime bounds them,
  as the SDK keeps them for as long as it holds the sandbox. The envd kind is deterministic per
  capsule and team, so the server can recompute it to check a signed file URL (whose signature
  is a hash over it) without storing it.
- Agent secrets: what the control plane presents to a registered host's agent on every call,
  HMAC(key, host id). Each host knows only its own, and none is stored: rotating the key rotates
  them all (agents fetch the new one when their host JWT, signed with the old key, is refused).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from . import ids
from .errors import InvalidID, Unauthorized

API_KEY_PREFIX = "wrn_"
API_KEY_VISIBLE_CHARS = 12
_JWT_ALGORITHM = "HS256"
_JWT_TYPE = "user"
_HOST_JWT_TYPE = "host"
_PREVIEW_JWT_TYPE = "preview"
_PREVIEW_AUDIENCE = "wrenn:port-preview"
_E2B_JWT_TYPE = "e2b-access"
_E2B_AUDIENCES = {"envd": "wrenn:e2b-envd", "traffic": "wrenn:e2b-traffic"}
E2bAccessKind = Literal["envd", "traffic"]
# How many verified E2B access tokens a codec remembers (the oldest goes first).
E2B_VERIFIED_MAX = 4096
HOST_REGISTRATION_PREFIX = "wrh_"
HOST_REFRESH_PREFIX = "wrr_"

_hasher = PasswordHasher()
# Verified against when the email is unknown, so a login takes as long either way and does not
# tell which emails have accounts.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True if `password` matches; an absent or corrupt hash never matches."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


@dataclass(frozen=True, slots=True)
class UserClaims:
    """What a verified user JWT says; only `user_id` and `team_id` are used (and re-checked)."""

    user_id: uuid.UUID
    team_id: uuid.UUID | None
    role: str | None
    is_admin: bool
    name: str
    email: str
    # Tokens issued before this version existed carry none: they are version 0.
    token_version: int = 0


@dataclass(frozen=True, slots=True)
class PreviewGrant:
    """What a preview token opens: one port of one capsule, while it belongs to one team."""

    capsule_id: uuid.UUID
    port: int
    team_id: uuid.UUID
    # Who made it: a user (`usr-...`) or an API key (`key-...`); it stops working when they
    # could no longer make it.
    issuer: str


class TokenCodec:
    """Issues and verifies user JWTs with one HMAC key."""

    def __init__(self, secret: str, lifetime: dt.timedelta) -> None:
        self._secret = secret
        self.lifetime = lifetime
        # E2B access tokens verified with this key (PyJWT took ~0.6 ms of CPU per E2B command to
        # verify one again): they carry no expiry, so a verification holds for the key's life.
        self._e2b_verified: dict[tuple[str, str], tuple[str, uuid.UUID]] = {}

    def issue(self, claims: UserClaims, *, now: dt.datetime | None = None) -> str:
        now = now or dt.datetime.now(dt.UTC)
        payload: dict[str, Any] = {
            "typ": _JWT_TYPE,
            "sub": ids.USER.format(claims.user_id),
            "team_id": ids.TEAM.format(claims.team_id) if claims.team_id else "",
            "role": claims.role or "",
            "is_admin": claims.is_admin,
            "name": claims.name,
            "email": claims.email,
            "tv": claims.token_version,
            "iat": now,
            "exp": now + self.lifetime,
        }
        return jwt.encode(payload, self._secret, algorithm=_JWT_ALGORITHM)

    def _decode(self, token: str, typ: str, audience: str | None = None) -> dict[str, Any]:
        # Without `audience`, a token that names one (a preview token) is refused by PyJWT.
        required = ["exp", "iat", "sub", "typ", *(["aud"] if audience else [])]
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[_JWT_ALGORITHM],
                audience=audience,
                options={"require": required},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.PyJWTError:
            raise Unauthorized("invalid token") from None
        if payload.get("typ") != typ:
            raise Unauthorized("invalid token")
        return payload

    def verify(self, token: str) -> UserClaims:
        """The token's claims; `Unauthorized` for a bad signature, expiry or malformed claims."""
        payload = self._decode(token, _JWT_TYPE)
        try:
            team = payload.get("team_id") or None
            return UserClaims(
                user_id=ids.USER.parse(str(payload["sub"])),
                team_id=ids.TEAM.parse(str(team)) if team else None,
                role=str(payload.get("role") or "") or None,
                is_admin=bool(payload.get("is_admin", False)),
                name=str(payload.get("name", "")),
                email=str(payload.get("email", "")),
                token_version=int(payload.get("tv", 0)),
            )
        except (InvalidID, KeyError, TypeError, ValueError):
            raise Unauthorized("invalid token") from None

    def issue_host(
        self, host_id: uuid.UUID, lifetime: dt.timedelta, *, now: dt.datetime | None = None
    ) -> str:
        now = now or dt.datetime.now(dt.UTC)
        payload = {
            "typ": _HOST_JWT_TYPE,
            "sub": ids.HOST.format(host_id),
            "iat": now,
            "exp": now + lifetime,
        }
        return jwt.encode(payload, self._secret, algorithm=_JWT_ALGORITHM)

    def verify_host(self, token: str) -> uuid.UUID:
        """The host id of a valid host JWT; `Unauthorized` otherwise."""
        payload = self._decode(token, _HOST_JWT_TYPE)
        try:
            return ids.HOST.parse(str(payload["sub"]))
        except InvalidID:
            raise Unauthorized("invalid token") from None

    def issue_preview(
        self, grant: PreviewGrant, lifetime: dt.timedelta, *, now: dt.datetime | None = None
    ) -> tuple[str, dt.datetime]:
        """A preview token for one port of one capsule, and when it expires."""
        now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        expires = now + lifetime
        payload = {
            "typ": _PREVIEW_JWT_TYPE,
            "aud": _PREVIEW_AUDIENCE,
            "sub": ids.SANDBOX.format(grant.capsule_id),
            "port": grant.port,
            "team_id": ids.TEAM.format(grant.team_id),
            "by": grant.issuer,
            "iat": now,
            "exp": expires,
        }
        return jwt.encode(payload, self._secret, algorithm=_JWT_ALGORITHM), expires

    def verify_preview(self, token: str) -> tuple[PreviewGrant, dt.datetime]:
        """What a valid preview token grants, and when it expires; `Unauthorized` otherwise."""
        payload = self._decode(token, _PREVIEW_JWT_TYPE, audience=_PREVIEW_AUDIENCE)
        try:
            port = payload["port"]
            if not isinstance(port, int) or isinstance(port, bool):
                raise TypeError
            grant = PreviewGrant(
                capsule_id=ids.SANDBOX.parse(str(payload["sub"])),
                port=port,
                team_id=ids.TEAM.parse(str(payload["team_id"])),
                issuer=str(payload["by"]),
            )
            kind = ids.API_KEY if grant.issuer.startswith(ids.API_KEY.prefix) else ids.USER
            kind.parse(grant.issuer)
            return grant, dt.datetime.fromtimestamp(int(payload["exp"]), dt.UTC)
        except (InvalidID, KeyError, TypeError, ValueError):
            raise Unauthorized("invalid token") from None

    def issue_e2b_access(self, capsule_id: str, team_id: uuid.UUID, kind: E2bAccessKind) -> str:
        """An E2B access token of `kind` for one capsule (its wire id) of one team."""
        payload = {
            "typ": _E2B_JWT_TYPE,
            "aud": _E2B_AUDIENCES[kind],
            "sub": capsule_id,
            "team_id": ids.TEAM.format(team_id),
        }
        if kind == "traffic":
            # Two traffic tokens for one capsule differ, so a leaked one is told from a new one.
            payload["jti"] = secrets.token_hex(8)
        # The envd kind is the same every time for one capsule of one team (HS256 is
        # deterministic): a signed file URL's signature is made with it, and the server
        # recomputes it to check one rather than storing a secret per capsule.
        return jwt.encode(payload, self._secret, algorithm=_JWT_ALGORITHM)

    def verify_e2b_access(self, token: str, kind: E2bAccessKind) -> tuple[str, uuid.UUID]:
        """The capsule (wire id) and team a valid E2B access token of `kind` names;
        `Unauthorized` otherwise (another kind, a bad signature, malformed claims)."""
        verified = self._e2b_verified.get((token, kind))
        if verified is not None:
            return verified
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[_JWT_ALGORITHM],
                audience=_E2B_AUDIENCES[kind],
                options={"require": ["aud", "sub", "typ"]},
            )
        except jwt.PyJWTError:
            raise Unauthorized("invalid token") from None
        if payload.get("typ") != _E2B_JWT_TYPE:
            raise Unauthorized("invalid token")
        try:
            capsule_id = str(payload["sub"])
            ids.SANDBOX.parse(capsule_id)
            verified = capsule_id, ids.TEAM.parse(str(payload["team_id"]))
        except (InvalidID, KeyError):
            raise Unauthorized("invalid token") from None
        if "exp" not in payload and "nbf" not in payload:  # time cannot change the answer
            if len(self._e2b_verified) >= E2B_VERIFIED_MAX:
                del self._e2b_verified[next(iter(self._e2b_verified))]  # the oldest
            self._e2b_verified[(token, kind)] = verified
        return verified

    def signed_here(self, token: str) -> bool:
        """Whether the token carries this key's signature, whatever its type or expiry."""
        try:
            jwt.decode(
                token,
                self._secret,
                algorithms=[_JWT_ALGORITHM],
                options={"verify_exp": False, "verify_aud": False, "verify_iat": False},
            )
        except jwt.PyJWTError:
            return False
        return True

    def agent_secret(self, host_id: uuid.UUID) -> str:
        """The secret a registered host's agent expects from the control plane."""
        digest = hmac.new(self._secret.encode(), b"agent:" + host_id.bytes, hashlib.sha256)
        return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class NewCredential:
    plaintext: str
    prefix: str
    hash: str


def generate_credential(prefix: str = API_KEY_PREFIX) -> NewCredential:
    """A new random credential: API key, or (with their prefix) a host token."""
    plaintext = prefix + secrets.token_hex(32)
    return NewCredential(
        plaintext=plaintext,
        prefix=plaintext[:API_KEY_VISIBLE_CHARS],
        hash=hash_credential(plaintext),
    )


def hash_credential(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def new_one_time_token() -> tuple[str, str]:
    """(plaintext, SHA-256) of a new one-time token for a mailed link."""
    plaintext = secrets.token_urlsafe(32)
    return plaintext, hash_credential(plaintext)


def looks_like_api_key(value: str) -> bool:
    return value.startswith(API_KEY_PREFIX) and len(value) == len(API_KEY_PREFIX) + 64
