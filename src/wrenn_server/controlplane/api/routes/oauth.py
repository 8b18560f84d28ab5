"""`/v1/auth/oauth/{provider}`: browser login through an OAuth provider (GitHub).

The start route sets a short-lived state cookie and redirects to the provider; the callback
checks the state against the cookie, reads the profile from the provider, signs the user in and
redirects the browser to the dashboard's `/auth/{provider}/callback`, or to the same page with
`?error=<code>` (access_denied, invalid_state, missing_code, exchange_failed, email_taken,
signup_disabled, internal_error). An unconfigured provider is a 404 on these routes.

The session never travels in a URL: the callback's redirect sets it in a cookie that only
`POST /v1/auth/oauth/{provider}/session` receives (HttpOnly, SameSite=Lax, that path only, a
minute), and the dashboard's callback page reads it from there once (the answer clears it). A
link to the callback page cannot sign a browser in to someone else's account (login CSRF): the
page takes nothing from its address but an error code, and another site can neither set that
cookie nor make the browser send it (Lax: no cross-site POST carries it).

`/v1/me/providers/{provider}`: a signed-in user connects a provider (the same flow, with a link
cookie naming the user; the callback then links instead of logging in) or disconnects one.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import RedirectResponse

from ... import ids
from ...db.session import transaction
from ...errors import Conflict, InvalidID, NotFound, Unauthorized
from ...schemas.auth import AuthResponse, ConnectProviderResponse, OAuthProvidersResponse
from ...schemas.common import error_responses
from ...services import accounts, oauth, oauth_accounts, principals
from ...settings import Settings
from ..deps import CodecDep, CurrentUser, SessionDep, SettingsDep

log = logging.getLogger("wrenn.controlplane.oauth")

router = APIRouter(prefix="/v1/auth/oauth", tags=["auth"])
me_router = APIRouter(prefix="/v1/me/providers", tags=["account"])

STATE_COOKIE = "wrenn_oauth_state"
LINK_COOKIE = "wrenn_oauth_link"
SESSION_COOKIE = "wrenn_oauth_session"
_COOKIE_PATH = "/v1/auth/oauth"
# Long enough for the callback page to load and ask; the page asks at once.
SESSION_COOKIE_TTL_SEC = 60
_NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def session_cookie_path(provider: str) -> str:
    return f"{_COOKIE_PATH}/{provider}/session"


def _config(settings: Settings, provider: str) -> oauth.ProviderConfig:
    config = oauth.provider_config(settings, provider)
    if config is None:
        raise NotFound("OAuth provider not found or not configured")
    return config


def _callback_uri(settings: Settings, request: Request, provider: str) -> str:
    base = settings.oauth_callback_base_url or str(request.base_url)
    return f"{base.rstrip('/')}/v1/auth/oauth/{provider}/callback"


def _secure_cookie(settings: Settings, request: Request) -> bool:
    base = settings.oauth_callback_base_url or str(request.base_url)
    return base.startswith("https://")


def _frontend_redirect(
    settings: Settings, provider: str, params: dict[str, str]
) -> RedirectResponse:
    target = f"{settings.oauth_redirect_url.rstrip('/')}/auth/{provider}/callback"
    if params:
        target += "?" + urlencode(params)
    response = RedirectResponse(target, status_code=status.HTTP_302_FOUND, headers=_NO_STORE)
    response.delete_cookie(STATE_COOKIE, path=_COOKIE_PATH)
    response.delete_cookie(LINK_COOKIE, path=_COOKIE_PATH)
    return response


def _signed_in_redirect(
    settings: Settings, request: Request, provider: str, token: str
) -> RedirectResponse:
    response = _frontend_redirect(settings, provider, {})
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=SESSION_COOKIE_TTL_SEC,
        path=session_cookie_path(provider),
        httponly=True,
        samesite="lax",
        secure=_secure_cookie(settings, request),
    )
    return response


def _set_flow_cookies(
    response: Response, settings: Settings, request: Request, state: str, link: str
) -> None:
    for name, value in ((STATE_COOKIE, state), (LINK_COOKIE, link)):
        if not value:
            # A login: drop the link cookie a connect flow may have left behind.
            response.delete_cookie(name, path=_COOKIE_PATH)
            continue
        response.set_cookie(
            name,
            value,
            max_age=settings.oauth_state_ttl_sec,
            path=_COOKIE_PATH,
            httponly=True,
            # Lax: the cookie must come back on the provider's top-level redirect to the callback.
            samesite="lax",
            secure=_secure_cookie(settings, request),
        )


def _start(settings: Settings, request: Request, provider: str, link: str) -> tuple[str, str]:
    """(authorize URL, state) of a new flow."""
    config = _config(settings, provider)
    state = oauth.new_state(
        settings.resolve_jwt_secret(), provider, ttl_sec=settings.oauth_state_ttl_sec, link=link
    )
    url = oauth.authorize_url(
        config, redirect_uri=_callback_uri(settings, request, provider), state=state
    )
    return url, state


@router.get(
    "",
    operation_id="listOAuthProviders",
    summary="The OAuth providers a user may sign in with (the dashboard shows their buttons)",
)
async def list_providers(settings: SettingsDep) -> OAuthProvidersResponse:
    return OAuthProvidersResponse(
        providers=[p for p in oauth.PROVIDERS if oauth.provider_config(settings, p) is not None]
    )


@router.get(
    "/{provider}",
    operation_id="oauthRedirect",
    summary="Start OAuth login flow",
    status_code=status.HTTP_302_FOUND,
    response_class=RedirectResponse,
    responses={
        302: {"description": "Redirect to provider authorization URL"},
        **error_responses(404),
    },
)
async def oauth_redirect(
    provider: str, request: Request, settings: SettingsDep
) -> RedirectResponse:
    url, state = _start(settings, request, provider, link="")
    response = RedirectResponse(url, status_code=status.HTTP_302_FOUND, headers=_NO_STORE)
    _set_flow_cookies(response, settings, request, state, link="")
    return response


@router.get(
    "/{provider}/callback",
    operation_id="oauthCallback",
    summary="OAuth callback",
    status_code=status.HTTP_302_FOUND,
    response_class=RedirectResponse,
    responses={
        302: {
            "description": "Redirect to the dashboard's callback page: signed in (the session "
            "waits in a cookie for POST .../session) or with ?error=<code>"
        }
    },
)
async def oauth_callback(
    provider: str,
    request: Request,
    settings: SettingsDep,
    session: SessionDep,
    codec: CodecDep,
    code: str | None = None,
    state: str | None = None,
    error: str | None = None,
) -> RedirectResponse:
    config = _config(settings, provider)
    link = request.cookies.get(LINK_COOKIE, "")
    try:
        oauth.verify_state(
            settings.resolve_jwt_secret(),
            provider,
            state=state,
            cookie=request.cookies.get(STATE_COOKIE),
            link=link,
        )
        # The MAC covered `link`, so it is an id this server put there.
        link_user = ids.USER.parse(link) if link else None
        if error:
            raise oauth.OAuthError("access_denied", "the provider reported an error")
        if not code:
            raise oauth.OAuthError("missing_code", "no authorization code")
        profile = await oauth.fetch_profile(
            config,
            code=code,
            redirect_uri=_callback_uri(settings, request, provider),
            timeout=settings.oauth_http_timeout_sec,
        )
    except InvalidID:
        return _frontend_redirect(settings, provider, {"error": "invalid_state"})
    except oauth.OAuthError as exc:
        log.info("oauth %s login refused: %s (%s)", provider, exc.code, exc)
        return _frontend_redirect(settings, provider, {"error": exc.code})

    try:
        async with transaction(session, write=True):
            if link_user is None:
                signed_in = await oauth_accounts.oauth_login(
                    session, codec=codec, mode=settings.signup, profile=profile
                )
            else:
                signed_in = await oauth_accounts.oauth_link(
                    session, codec=codec, user_id=link_user, profile=profile
                )
    except Conflict:
        # Linking: the provider's account belongs to someone else (or this one has another).
        refusal = "email_taken" if link_user is None else "access_denied"
        return _frontend_redirect(settings, provider, {"error": refusal})
    except accounts.SignupDisabled:
        return _frontend_redirect(settings, provider, {"error": "signup_disabled"})
    except Unauthorized:
        return _frontend_redirect(settings, provider, {"error": "access_denied"})
    except Exception:
        log.exception("oauth %s login failed", provider)
        return _frontend_redirect(settings, provider, {"error": "internal_error"})
    return _signed_in_redirect(settings, request, provider, signed_in.token)


@router.post(
    "/{provider}/session",
    operation_id="oauthSession",
    summary="The session an OAuth sign-in left in this browser's cookie, handed over once",
    responses=error_responses(401, 404),
)
async def oauth_session(
    provider: str,
    request: Request,
    response: Response,
    settings: SettingsDep,
    session: SessionDep,
    codec: CodecDep,
) -> AuthResponse:
    _config(settings, provider)
    token = request.cookies.get(SESSION_COOKIE)
    response.headers.update(_NO_STORE)
    response.delete_cookie(SESSION_COOKIE, path=session_cookie_path(provider))
    if not token:
        raise Unauthorized("no sign-in to complete in this browser: sign in again")
    # The token is checked like any other (it may have been revoked in the meantime).
    async with transaction(session):
        principal = await principals.principal_from_token(session, codec=codec, token=token)
        found = await accounts.profile(session, principal=principal)
    return AuthResponse(
        token=token,
        user_id=ids.USER.format(found.user.id),
        team_id=ids.TEAM.format(principal.team_id) if principal.team_id else "",
        email=found.user.email,
        name=found.user.name,
    )


@me_router.get(
    "/{provider}/connect",
    operation_id="connectProvider",
    summary="Initiate OAuth provider link",
    responses=error_responses(401, 404),
)
async def connect_provider(
    provider: str,
    principal: CurrentUser,
    request: Request,
    response: Response,
    settings: SettingsDep,
) -> ConnectProviderResponse:
    link = ids.USER.format(principal.require_user())
    url, state = _start(settings, request, provider, link=link)
    _set_flow_cookies(response, settings, request, state, link=link)
    response.headers["Cache-Control"] = "no-store"
    return ConnectProviderResponse(auth_url=url)


@me_router.delete(
    "/{provider}",
    operation_id="disconnectProvider",
    summary="Disconnect an OAuth provider",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(400, 401, 404),
)
async def disconnect_provider(provider: str, principal: CurrentUser, session: SessionDep) -> None:
    async with transaction(session, write=True):
        await oauth_accounts.disconnect_provider(session, principal=principal, provider=provider)
