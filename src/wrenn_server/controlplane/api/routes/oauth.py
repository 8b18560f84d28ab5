"""`/v1/auth/oauth/{provider}`: browser login through an OAuth provider (GitHub).

The start route sets a short-lived state cookie and redirects to the provider; the callback
checks the state against the cookie, reads the profile from the provider, signs the user in and
redirects the browser to the dashboard's `/auth/{provider}/callback` with the token, or with
`?error=<code>` (access_denied, invalid_state, missing_code, exchange_failed, email_taken,
internal_error). An unconfigured provider is a 404 on both routes.

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
from ...schemas.auth import ConnectProviderResponse, OAuthProvidersResponse
from ...schemas.common import error_responses
from ...services import accounts, oauth
from ...settings import Settings
from ..deps import CodecDep, CurrentUser, SessionDep, SettingsDep

log = logging.getLogger("wrenn.controlplane.oauth")

router = APIRouter(prefix="/v1/auth/oauth", tags=["auth"])
me_router = APIRouter(prefix="/v1/me/providers", tags=["account"])

STATE_COOKIE = "wrenn_oauth_state"
LINK_COOKIE = "wrenn_oauth_link"
_COOKIE_PATH = "/v1/auth/oauth"
_NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


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
    target = f"{settings.oauth_redirect_url.rstrip('/')}/auth/{provider}/callback?"
    response = RedirectResponse(
        target + urlencode(params), status_code=status.HTTP_302_FOUND, headers=_NO_STORE
    )
    response.delete_cookie(STATE_COOKIE, path=_COOKIE_PATH)
    response.delete_cookie(LINK_COOKIE, path=_COOKIE_PATH)
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
    responses={302: {"description": "Redirect to frontend with token or error"}},
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
                signed_in = await accounts.oauth_login(session, codec=codec, profile=profile)
            else:
                signed_in = await accounts.oauth_link(
                    session, codec=codec, user_id=link_user, profile=profile
                )
    except Conflict:
        # Linking: the provider's account belongs to someone else (or this one has another).
        refusal = "email_taken" if link_user is None else "access_denied"
        return _frontend_redirect(settings, provider, {"error": refusal})
    except Unauthorized:
        return _frontend_redirect(settings, provider, {"error": "access_denied"})
    except Exception:
        log.exception("oauth %s login failed", provider)
        return _frontend_redirect(settings, provider, {"error": "internal_error"})
    return _frontend_redirect(
        settings,
        provider,
        {
            "token": signed_in.token,
            "user_id": ids.USER.format(signed_in.user.id),
            "team_id": ids.TEAM.format(signed_in.team_id) if signed_in.team_id else "",
            "email": signed_in.user.email,
        },
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
        await accounts.disconnect_provider(session, principal=principal, provider=provider)
