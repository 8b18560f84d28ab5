"""OAuth login (GitHub): the provider's configuration, the signed login state, and reading the
user's profile from the provider. No database here: `oauth_accounts.oauth_login` turns a profile
into a session.

- State: `<nonce>.<expiry>.<HMAC-SHA256(key, provider.nonce.expiry.link)>`, keyed by a key derived
  from the JWT secret; `link` is the id of the user connecting the provider to their account
  (from the link cookie), empty for a login. It goes to the provider in the authorize URL and
  into a short-lived cookie; the callback accepts it only if the query and the cookie carry the
  same value, the MAC verifies for that provider and link, and it has not expired.
- Profile: the code is exchanged at the token URL, then `/user` gives the id and name and
  `/user/emails` the primary verified email. That email is the one used even when `/user` shows a
  public one, because an existing account is linked by email and only a verified address may do
  that.
- Failures raise `OAuthError` with one of the contract's callback error codes; the provider's
  answers never reach the caller.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from ..schemas.auth import normalize_email
from ..settings import Settings

PROVIDERS = ("github",)
GITHUB_SCOPE = "read:user user:email"
NAME_MAX = 100
_STATE_KEY_LABEL = b"wrenn-oauth-state-v1"


class OAuthError(Exception):
    """The login flow failed; `code` is the contract's callback error code."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    client_id: str
    client_secret: str
    authorize_url: str
    token_url: str
    api_url: str
    scope: str


@dataclass(frozen=True, slots=True)
class ProviderProfile:
    """Who the provider says the user is: a stable id, a verified email and a display name."""

    provider: str
    provider_user_id: str
    email: str
    name: str


def provider_config(settings: Settings, provider: str) -> ProviderConfig | None:
    """The provider's configuration, or None when it is unknown or not configured."""
    if provider != "github":
        return None
    secret = (
        settings.github_client_secret.get_secret_value() if settings.github_client_secret else ""
    )
    if not settings.github_client_id or not secret:
        return None
    return ProviderConfig(
        name="github",
        client_id=settings.github_client_id,
        client_secret=secret,
        authorize_url=settings.github_authorize_url,
        token_url=settings.github_token_url,
        api_url=settings.github_api_url.rstrip("/"),
        scope=GITHUB_SCOPE,
    )


def authorize_url(config: ProviderConfig, *, redirect_uri: str, state: str) -> str:
    query = urlencode(
        {
            "client_id": config.client_id,
            "redirect_uri": redirect_uri,
            "scope": config.scope,
            "state": state,
        }
    )
    separator = "&" if "?" in config.authorize_url else "?"
    return f"{config.authorize_url}{separator}{query}"


def _state_key(jwt_secret: str) -> bytes:
    # A key of its own, so a state MAC can never be mistaken for anything else signed.
    return hmac.new(jwt_secret.encode(), _STATE_KEY_LABEL, hashlib.sha256).digest()


def _state_mac(jwt_secret: str, provider: str, nonce: str, expires: int, link: str) -> str:
    message = f"{provider}.{nonce}.{expires}.{link}".encode()
    digest = hmac.new(_state_key(jwt_secret), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def new_state(
    jwt_secret: str, provider: str, *, ttl_sec: int, link: str = "", now: float | None = None
) -> str:
    """A fresh state; `link` (the wire id of the user connecting a provider, '' for a login)
    is covered by the MAC, so the link cookie cannot be swapped for another user's id."""
    nonce = secrets.token_urlsafe(24)
    expires = int((time.time() if now is None else now) + ttl_sec)
    return f"{nonce}.{expires}.{_state_mac(jwt_secret, provider, nonce, expires, link)}"


def verify_state(
    jwt_secret: str,
    provider: str,
    *,
    state: str | None,
    cookie: str | None,
    link: str = "",
    now: float | None = None,
) -> None:
    """Raises `OAuthError("invalid_state")` unless `state` is this provider's, unexpired, and
    the same value as the cookie the flow set."""
    if not state or not cookie or not hmac.compare_digest(state.encode(), cookie.encode()):
        raise OAuthError("invalid_state", "state missing or not matching the cookie")
    parts = state.split(".")
    if len(parts) != 3 or not parts[1].isdigit():
        raise OAuthError("invalid_state", "malformed state")
    nonce, expires_text, mac = parts
    expires = int(expires_text)
    expected = _state_mac(jwt_secret, provider, nonce, expires, link)
    if not hmac.compare_digest(mac.encode(), expected.encode()):
        raise OAuthError("invalid_state", "state signature mismatch")
    if expires <= (time.time() if now is None else now):
        raise OAuthError("invalid_state", "state expired")


def _json(resp: httpx.Response) -> Any:
    if resp.status_code != 200:
        raise OAuthError("exchange_failed", f"provider answered HTTP {resp.status_code}")
    try:
        return resp.json()
    except ValueError:
        raise OAuthError("exchange_failed", "provider answered with invalid JSON") from None


def _primary_verified_email(emails: Any) -> str:
    if not isinstance(emails, list):
        raise OAuthError("exchange_failed", "unexpected email list")
    for entry in emails:
        if (
            isinstance(entry, dict)
            and entry.get("primary") is True
            and entry.get("verified") is True
            and isinstance(entry.get("email"), str)
            and 0 < len(entry["email"].strip()) <= 320
        ):
            return normalize_email(entry["email"])
    raise OAuthError("exchange_failed", "no primary verified email")


async def fetch_profile(
    config: ProviderConfig,
    *,
    code: str,
    redirect_uri: str,
    timeout: float,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ProviderProfile:
    """Exchange `code` for an access token and read the user; `OAuthError` on any failure."""
    async with httpx.AsyncClient(
        timeout=timeout, transport=transport, follow_redirects=False, trust_env=False
    ) as http:
        try:
            token_body = _json(
                await http.post(
                    config.token_url,
                    data={
                        "client_id": config.client_id,
                        "client_secret": config.client_secret,
                        "code": code,
                        "redirect_uri": redirect_uri,
                    },
                    headers={"Accept": "application/json"},
                )
            )
            # GitHub reports a bad code as HTTP 200 with an `error` field and no token.
            token = token_body.get("access_token") if isinstance(token_body, dict) else None
            if not isinstance(token, str) or not token:
                raise OAuthError("exchange_failed", "no access token in the provider's answer")
            headers = {
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
            }
            user = _json(await http.get(f"{config.api_url}/user", headers=headers))
            emails = _json(await http.get(f"{config.api_url}/user/emails", headers=headers))
        except httpx.HTTPError:
            raise OAuthError("exchange_failed", "provider unreachable") from None
    if not isinstance(user, dict):
        raise OAuthError("exchange_failed", "unexpected user object")
    user_id = user.get("id")
    if isinstance(user_id, bool) or not isinstance(user_id, int | str) or not str(user_id):
        raise OAuthError("exchange_failed", "user without an id")
    email = _primary_verified_email(emails)
    name = next(
        (
            value.strip()
            for value in (user.get("name"), user.get("login"))
            if isinstance(value, str) and value.strip()
        ),
        email.split("@", 1)[0],
    )
    return ProviderProfile(
        provider=config.name,
        provider_user_id=str(user_id),
        email=email,
        name=name[:NAME_MAX],
    )
