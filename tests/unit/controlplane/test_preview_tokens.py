"""Preview tokens and the proxy's cookie handling, without IO: a preview token is never a login
(nor a host token) and no other token is a preview token; the cookie's attributes; an app's
Set-Cookie made host-only; our cookie and parameter taken out of what reaches the app."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from wrenn_server.controlplane.api import proxy_cookies
from wrenn_server.controlplane.errors import Unauthorized
from wrenn_server.controlplane.security import PreviewGrant, TokenCodec, UserClaims

CODEC = TokenCodec("unit-" + "k" * 40, dt.timedelta(hours=1))
GRANT = PreviewGrant(
    capsule_id=uuid.uuid4(), port=8000, team_id=uuid.uuid4(), issuer=f"key-{uuid.uuid4()}"
)


def test_a_preview_token_says_what_it_opens_and_until_when() -> None:
    now = dt.datetime.now(dt.UTC)
    token, expires = CODEC.issue_preview(GRANT, dt.timedelta(minutes=5), now=now)
    grant, until = CODEC.verify_preview(token)
    assert grant == GRANT and until == expires
    assert dt.timedelta(minutes=4, seconds=59) <= until - now <= dt.timedelta(minutes=5)
    other = TokenCodec("other-" + "k" * 40, dt.timedelta(hours=1))
    with pytest.raises(Unauthorized):
        other.verify_preview(token)


def test_preview_tokens_and_other_tokens_never_stand_in_for_each_other() -> None:
    preview, _ = CODEC.issue_preview(GRANT, dt.timedelta(minutes=5))
    login = CODEC.issue(
        UserClaims(uuid.uuid4(), uuid.uuid4(), "owner", False, "A", "a@example.com")
    )
    host = CODEC.issue_host(uuid.uuid4(), dt.timedelta(minutes=5))
    for verify in (CODEC.verify, CODEC.verify_host):
        with pytest.raises(Unauthorized):
            verify(preview)
    for token in (login, host):
        with pytest.raises(Unauthorized):
            CODEC.verify_preview(token)


def test_an_expired_preview_token_says_so() -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    token, _ = CODEC.issue_preview(GRANT, dt.timedelta(hours=1), now=past)
    with pytest.raises(Unauthorized, match="expired"):
        CODEC.verify_preview(token)


def test_the_preview_cookie_is_host_only() -> None:
    assert proxy_cookies.preview_cookie("t", 60, secure=False) == (
        b"wrenn_preview=t; Path=/; Max-Age=60; HttpOnly; SameSite=Lax"
    )
    assert proxy_cookies.preview_cookie("t", -5, secure=True).endswith(
        b"Max-Age=0; HttpOnly; SameSite=Lax; Secure"
    )


@pytest.mark.parametrize(
    ("app_sets", "passed_on"),
    [
        (b"a=1; Domain=example.com; Path=/", b"a=1; Path=/"),
        (b"a=1;domain=.example.com;Secure", b"a=1;Secure"),
        (b"a=1; DOMAIN = example.com", b"a=1"),
        (b"a=1; Path=/domain", b"a=1; Path=/domain"),
        (b"wrenn_preview=x; Path=/", None),
        (b"WRENN_PREVIEW=x", None),
        (b" wrenn_preview =x", None),
    ],
)
def test_an_apps_set_cookie_stays_on_its_host(app_sets: bytes, passed_on: bytes | None) -> None:
    headers = [(b"content-type", b"text/plain"), (b"set-cookie", app_sets)]
    expected = [(b"content-type", b"text/plain")]
    if passed_on is not None:
        expected.append((b"set-cookie", passed_on))
    assert proxy_cookies.safe_response_headers(headers) == expected


def test_our_cookie_and_parameter_do_not_reach_the_app() -> None:
    headers = [(b"cookie", b"a=1; wrenn_preview=t; b=2"), (b"cookie", b"wrenn_preview=t")]
    assert proxy_cookies.cookie_token(headers) == "t"
    assert proxy_cookies.without_preview_cookie(headers) == [(b"cookie", b"a=1; b=2")]
    assert proxy_cookies.cookie_token([(b"cookie", b"a=1")]) is None
    assert proxy_cookies.split_preview_param(b"x=1&wrenn_preview=a%2Bb&y=2") == (b"x=1&y=2", "a+b")
    assert proxy_cookies.split_preview_param(b"wrenn_preview=t") == (b"", "t")
    assert proxy_cookies.split_preview_param(b"x=1") == (b"x=1", None)
    assert proxy_cookies.split_preview_param(b"") == (b"", None)


def test_tokens_signed_here_are_told_from_others() -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    expired, _ = CODEC.issue_preview(GRANT, dt.timedelta(hours=1), now=past)
    host = CODEC.issue_host(uuid.uuid4(), dt.timedelta(minutes=5))
    for token in (expired, host):
        assert CODEC.signed_here(token)
    other = TokenCodec("other-" + "k" * 40, dt.timedelta(hours=1))
    foreign = other.issue_host(uuid.uuid4(), dt.timedelta(minutes=5))
    for token in (foreign, "app-own-token", ""):
        assert not CODEC.signed_here(token)
