"""Prefixed wire IDs: formatting, parsing, rejection."""

from __future__ import annotations

import re
import uuid

import pytest

from wrenn_server.controlplane import ids
from wrenn_server.controlplane.errors import InvalidID, NotFound


@pytest.mark.parametrize("kind", ids.ALL_KINDS, ids=lambda k: k.prefix)
def test_round_trip(kind: ids.IdKind) -> None:
    value = uuid.uuid4()
    text = kind.format(value)
    assert text == f"{kind.prefix}{value}"
    assert kind.parse(text) == value
    # Upper-case hex is the same id; it formats back to the canonical lower-case spelling.
    assert kind.parse(kind.prefix + str(value).upper()) == value


def test_prefixes_match_the_wire_format() -> None:
    assert [k.prefix for k in ids.ALL_KINDS] == [
        "sb-",
        "usr-",
        "team-",
        "key-",
        "host-",
        "htok-",
        "hrt-",
        "log-",
        "bld-",
        "inv-",
        "ch-",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sb-",
        "usr-6f1c2a4e-8d2b-4c7e-9a51-0f3b8d1e2c4a",  # another kind's prefix
        "6f1c2a4e-8d2b-4c7e-9a51-0f3b8d1e2c4a",  # no prefix
        "sb-6f1c2a4e8d2b4c7e9a510f3b8d1e2c4a",  # unhyphenated
        "sb-{6f1c2a4e-8d2b-4c7e-9a51-0f3b8d1e2c4a}",
        "sb-6f1c2a4e-8d2b-4c7e-9a51-0f3b8d1e2c4",  # short
        "sb-6f1c2a4e-8d2b-4c7e-9a51-0f3b8d1e2c4az",
        "sb-zf1c2a4e-8d2b-4c7e-9a51-0f3b8d1e2c4a",
        "sb-6f1c2a4e-8d2b-4c7e-9a51-0f3b8d1e2c4a\n",
        "SB-6f1c2a4e-8d2b-4c7e-9a51-0f3b8d1e2c4a",
    ],
)
def test_rejects_malformed(text: str) -> None:
    with pytest.raises(InvalidID, match="capsule"):
        ids.SANDBOX.parse(text)
    with pytest.raises(NotFound):
        ids.SANDBOX.parse(text, not_found=True)


def test_platform_team_is_all_zeros() -> None:
    assert ids.PLATFORM_TEAM_ID == uuid.UUID("00000000-0000-0000-0000-000000000000")
    assert ids.TEAM.format(ids.PLATFORM_TEAM_ID) == "team-00000000-0000-0000-0000-000000000000"


def test_team_slug_and_snapshot_name() -> None:
    slugs = {ids.new_team_slug() for _ in range(50)}
    assert len(slugs) == 50
    assert all(re.fullmatch(r"[0-9a-f]{6}-[0-9a-f]{6}", s) for s in slugs)
    assert re.fullmatch(r"template-[0-9a-f]{8}", ids.new_snapshot_name())
