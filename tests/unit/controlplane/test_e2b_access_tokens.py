"""E2B access tokens, without IO: each names one capsule of one team and one kind (envd or
traffic); no other kind, capsule, key or token type stands in for it, and it stands in for none."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from typing import Any

import jwt
import pytest

from wrenn_server.controlplane import ids, security
from wrenn_server.controlplane.errors import Unauthorized
from wrenn_server.controlplane.security import PreviewGrant, TokenCodec, UserClaims

CODEC = TokenCodec("unit-" + "k" * 40, dt.timedelta(hours=1))
TEAM = uuid.uuid4()
CAPSULE = ids.SANDBOX.format(uuid.uuid4())


def test_a_token_names_its_capsule_and_team_for_its_own_kind_only() -> None:
    for kind, other in (("envd", "traffic"), ("traffic", "envd")):
        token = CODEC.issue_e2b_access(CAPSULE, TEAM, kind)  # type: ignore[arg-type]
        assert CODEC.verify_e2b_access(token, kind) == (CAPSULE, TEAM)  # type: ignore[arg-type]
        with pytest.raises(Unauthorized):
            CODEC.verify_e2b_access(token, other)  # type: ignore[arg-type]


def test_tokens_for_two_capsules_each_name_their_own() -> None:
    second = ids.SANDBOX.format(uuid.uuid4())
    a = CODEC.issue_e2b_access(CAPSULE, TEAM, "envd")
    b = CODEC.issue_e2b_access(second, TEAM, "envd")
    assert CODEC.verify_e2b_access(a, "envd")[0] == CAPSULE
    assert CODEC.verify_e2b_access(b, "envd")[0] == second


def _tamper(token: str, **claims: object) -> str:
    head, body, sig = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload.update(claims)
    raw = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"{head}.{raw}.{sig}"


def test_a_tampered_token_or_one_signed_with_another_key_is_refused() -> None:
    token = CODEC.issue_e2b_access(CAPSULE, TEAM, "envd")
    for bad in (
        _tamper(token, sub=ids.SANDBOX.format(uuid.uuid4())),
        _tamper(token, team_id=ids.TEAM.format(uuid.uuid4())),
        token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        "not-a-token",
        "",
    ):
        with pytest.raises(Unauthorized):
            CODEC.verify_e2b_access(bad, "envd")
    other = TokenCodec("other-" + "k" * 40, dt.timedelta(hours=1))
    with pytest.raises(Unauthorized):
        other.verify_e2b_access(token, "envd")


def test_e2b_tokens_and_other_tokens_never_stand_in_for_each_other() -> None:
    e2b = CODEC.issue_e2b_access(CAPSULE, TEAM, "envd")
    with pytest.raises(Unauthorized):
        CODEC.verify(e2b)
    with pytest.raises(Unauthorized):
        CODEC.verify_host(e2b)
    with pytest.raises(Unauthorized):
        CODEC.verify_preview(e2b)
    preview, _ = CODEC.issue_preview(
        PreviewGrant(uuid.uuid4(), 8000, TEAM, f"key-{uuid.uuid4()}"), dt.timedelta(minutes=5)
    )
    login = CODEC.issue(UserClaims(uuid.uuid4(), TEAM, "owner", False, "A", "a@example.com"))
    host = CODEC.issue_host(uuid.uuid4(), dt.timedelta(minutes=5))
    for token in (preview, login, host):
        for kind in ("envd", "traffic"):
            with pytest.raises(Unauthorized):
                CODEC.verify_e2b_access(token, kind)


def test_the_envd_token_is_recomputable_per_capsule_and_team_and_the_traffic_one_is_not() -> None:
    """A signed file URL is checked by recomputing the envd token it was made with."""
    envd = CODEC.issue_e2b_access(CAPSULE, TEAM, "envd")
    assert CODEC.issue_e2b_access(CAPSULE, TEAM, "envd") == envd
    others = {
        CODEC.issue_e2b_access(ids.SANDBOX.format(uuid.uuid4()), TEAM, "envd"),
        CODEC.issue_e2b_access(CAPSULE, uuid.uuid4(), "envd"),
        TokenCodec("other-" + "k" * 40, dt.timedelta(hours=1)).issue_e2b_access(
            CAPSULE, TEAM, "envd"
        ),
    }
    assert envd not in others and len(others) == 3
    traffic = CODEC.issue_e2b_access(CAPSULE, TEAM, "traffic")
    assert CODEC.issue_e2b_access(CAPSULE, TEAM, "traffic") != traffic


def test_a_verified_token_is_remembered_per_kind_and_a_bounded_number_of_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """E2B's envd protocol checks its token on every command: a token verified once is answered
    from memory (it has no expiry, so time cannot change the answer), for its own kind only;
    tampered copies are still refused; the oldest is forgotten past the bound."""
    codec = TokenCodec("memo-" + "k" * 40, dt.timedelta(hours=1))
    decodes = counted_decodes(monkeypatch)
    monkeypatch.setattr(security, "E2B_VERIFIED_MAX", 2)
    first = codec.issue_e2b_access(CAPSULE, TEAM, "envd")
    assert codec.verify_e2b_access(first, "envd") == (CAPSULE, TEAM)
    assert codec.verify_e2b_access(first, "envd") == (CAPSULE, TEAM)
    assert decodes == [first]
    with pytest.raises(Unauthorized):
        codec.verify_e2b_access(first, "traffic")
    with pytest.raises(Unauthorized):
        codec.verify_e2b_access(_tamper(first, team_id=ids.TEAM.format(uuid.uuid4())), "envd")
    others = [codec.issue_e2b_access(ids.SANDBOX.format(uuid.uuid4()), TEAM, "envd") for _ in "ab"]
    for token in others:
        codec.verify_e2b_access(token, "envd")
    decodes.clear()
    codec.verify_e2b_access(others[1], "envd")
    assert decodes == []  # still remembered
    codec.verify_e2b_access(first, "envd")
    assert decodes == [first]  # the oldest was forgotten: verified again


def counted_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens PyJWT is asked to decode from now on."""
    decodes: list[str] = []
    real = jwt.decode

    def counted(token: str, *args: Any, **kwargs: Any) -> Any:
        decodes.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counted)
    return decodes


def test_a_token_with_an_expiry_is_verified_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only this key mints them, and it never sets one; should one carry an expiry, it is not
    remembered (its answer changes when it ends)."""
    codec = TokenCodec("exp-" + "k" * 40, dt.timedelta(hours=1))
    claims = {"typ": "e2b-access", "aud": "wrenn:e2b-envd", "sub": CAPSULE}
    claims["team_id"] = ids.TEAM.format(TEAM)
    now = dt.datetime.now(dt.UTC)
    live = jwt.encode({**claims, "exp": now + dt.timedelta(hours=1)}, "exp-" + "k" * 40)
    decodes = counted_decodes(monkeypatch)
    for _ in range(2):
        assert codec.verify_e2b_access(live, "envd") == (CAPSULE, TEAM)
    assert decodes == [live, live]
    ended = jwt.encode({**claims, "exp": now - dt.timedelta(seconds=1)}, "exp-" + "k" * 40)
    for _ in range(2):
        with pytest.raises(Unauthorized):
            codec.verify_e2b_access(ended, "envd")
