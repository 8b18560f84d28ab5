"""envd's request-target parsing gives what urllib.parse's urlsplit and parse_qs gave it."""

from __future__ import annotations

import random
from urllib.parse import parse_qs, urlsplit

import pytest

from wrenn_server.envd.http1 import phrase, split_target, unquote


def _urllib(target: str) -> tuple[str, dict[str, str]]:
    url = urlsplit(target)
    pairs = parse_qs(url.query, keep_blank_values=True)
    return url.path, {key: values[-1] for key, values in pairs.items()}


CASES = [
    "/health",
    "/files?path=/home/user/a%20b.txt&username=wrenn-user",
    "/files?path=%2Ftmp%2F%E2%82%AC.txt",
    "/files?path=a+b&path=c",
    "/files?empty=&flag&=x&&",
    "/files?path=%ZZ%4&bad=%e2%82",
    "/process/12?x=1#fragment",
    "/files?path=caf\xc3\xa9%C3%A9",
    "/files?q=%2B+%2b",
    "/a?b=c=d",
]


@pytest.mark.parametrize("target", CASES)
def test_targets_parse_as_urllib_parses_them(target: str) -> None:
    assert split_target(target) == _urllib(target)


def test_random_targets_parse_as_urllib_parses_them() -> None:
    # As the request line gives them: no whitespace, and no leading "//" (made "/" before).
    rng = random.Random(7)
    alphabet = "ab/=&+%?#;.-_~9fFzZ\xe9\xff" + "%2F%E2%82%AC%zz"
    for _ in range(5000):
        target = "/a" + "".join(rng.choice(alphabet) for _ in range(rng.randrange(30)))
        assert split_target(target) == _urllib(target), target


def test_unquote_keeps_what_is_not_an_escape() -> None:
    assert unquote("100%") == "100%"
    assert unquote("%41%4a%6B") == "AJk"
    assert unquote("%e2%82") == "\ufffd"


def test_phrases() -> None:
    assert phrase(200) == "OK" and phrase(431) == "Request Header Fields Too Large"
    assert phrase(299) == ""
