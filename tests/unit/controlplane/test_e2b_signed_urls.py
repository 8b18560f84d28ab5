"""E2B's signed file URLs, without IO: the server's check accepts exactly what the stock SDK's
`get_signature` makes with the sandbox's token, for its path, operation, user and expiry."""

from __future__ import annotations

import time

import pytest
from e2b.sandbox.signature import get_signature

from wrenn_server.controlplane.errors import Unauthorized
from wrenn_server.controlplane.services.e2b_envd import signed_urls
from wrenn_server.controlplane.services.e2b_envd.signed_urls import SignedFile

TOKEN = "envd-token"


def _query(
    path: str, op: str, user: str | None, token: str, expires_in: int | None
) -> dict[str, str]:
    made = get_signature(path, op, user, token, expires_in)  # type: ignore[arg-type]
    query = {"path": path, "signature": made["signature"]}
    if user:
        query["username"] = user
    if made["expiration"] is not None:
        query["signature_expiration"] = str(made["expiration"])
    return query


def test_the_sdks_signature_is_accepted_for_what_it_names() -> None:
    for op, method in (("read", "GET"), ("write", "POST")):
        for user, expires_in in ((None, None), ("root", 60)):
            signed = signed_urls.from_query(_query("/a b.txt", op, user, TOKEN, expires_in), method)
            assert signed is not None and signed.user == (user or "")
            signed_urls.check(signed, TOKEN, time.time())


def test_anything_else_is_refused() -> None:
    query = _query("/a.txt", "read", "root", TOKEN, 60)
    signed = signed_urls.from_query(query, "GET")
    assert signed is not None
    now = time.time()
    no_user = {k: v for k, v in query.items() if k != "username"}
    later = {**query, "signature_expiration": "9999999999"}
    for bad, token, at in (
        (signed_urls.from_query(query, "POST"), TOKEN, now),  # a read URL used to write
        (signed_urls.from_query({**query, "path": "/b.txt"}, "GET"), TOKEN, now),
        (signed_urls.from_query({**query, "username": "other"}, "GET"), TOKEN, now),
        (signed_urls.from_query(no_user, "GET"), TOKEN, now),
        (signed_urls.from_query(later, "GET"), TOKEN, now),
        (signed, "another-token", now),
        (signed, TOKEN, now + 120),  # expired
    ):
        assert bad is not None
        with pytest.raises(Unauthorized):
            signed_urls.check(bad, token, at)


def test_malformed_signed_queries_are_refused_and_unsigned_ones_are_not_signed() -> None:
    assert signed_urls.from_query({"path": "/a"}, "GET") is None
    for query, method in (
        ({"path": "/a", "signature_expiration": "1"}, "GET"),
        ({"signature": "v1_x"}, "GET"),  # no path: a multipart part could name any
        ({"path": "/a", "signature": "v1_x", "signature_expiration": "soon"}, "GET"),
        ({"path": "/a", "signature": "v1_x"}, "DELETE"),
    ):
        with pytest.raises(Unauthorized):
            signed_urls.from_query(query, method)
    junk = SignedFile("/a", "read", "", "v1_\u00e9\u0000", None)
    with pytest.raises(Unauthorized):
        signed_urls.check(junk, TOKEN, time.time())
