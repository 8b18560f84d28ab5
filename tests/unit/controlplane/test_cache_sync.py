"""When a cache entry may be served (services/cache_sync.py): within its TTL always; past it,
up to MAX_AGE, only while the last answered heartbeat of the listener is under a second old."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from wrenn_server.controlplane.services import cache_sync
from wrenn_server.controlplane.services.cache_sync import FRESH_WITHIN, MAX_AGE, trusted

NOW = 10_000.0
TTL = 0.5


@pytest.fixture(autouse=True)
def no_listener() -> Iterator[None]:
    cache_sync.lost()
    yield
    cache_sync.lost()


def test_without_a_listener_an_entry_lives_its_ttl() -> None:
    assert trusted(NOW - 0.4, NOW, TTL)
    assert not trusted(NOW - 0.6, NOW, TTL)


def test_with_a_recent_heartbeat_an_entry_lives_up_to_max_age() -> None:
    cache_sync.confirmed(NOW - 0.3)
    assert trusted(NOW - 0.6, NOW, TTL)
    assert trusted(NOW - MAX_AGE + 0.1, NOW, TTL)
    assert not trusted(NOW - MAX_AGE, NOW, TTL)


def test_a_heartbeat_a_second_old_is_not_enough() -> None:
    cache_sync.confirmed(NOW - FRESH_WITHIN)
    assert not trusted(NOW - 0.6, NOW, TTL)
    assert trusted(NOW - 0.4, NOW, TTL)  # its TTL still holds


def test_a_lost_listener_ends_the_longer_life_at_once() -> None:
    cache_sync.confirmed(NOW - 0.1)
    cache_sync.lost()
    assert not trusted(NOW - 0.6, NOW, TTL)


def test_a_cache_turned_off_keeps_nothing() -> None:
    cache_sync.confirmed(NOW)
    assert not trusted(NOW, NOW, 0)
