"""Which wake-ups the live event streams use, and how often they poll, from the settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from wrenn_server.controlplane.settings import Settings

PG = "postgresql+asyncpg://wrenn@db.example/wrenn"
REDIS = "redis://cache.example:6379/0"


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(data_dir=tmp_path, **values)  # type: ignore[arg-type]


def test_auto_picks_postgres_then_redis_then_local(tmp_path: Path) -> None:
    cases = [
        ({"database_url": PG, "redis_url": REDIS}, "postgres", 5.0),
        ({"redis_url": REDIS}, "redis", 5.0),
        ({}, "local", 0.5),
    ]
    for values, wakeup, poll in cases:
        settings = _settings(tmp_path, **values)
        assert settings.effective_events_wakeup == wakeup
        assert settings.effective_events_poll_interval == poll


def test_explicit_choices_and_poll(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        database_url=PG,
        redis_url=REDIS,
        events_wakeup="redis",
        events_poll_interval_sec=60,
    )
    assert settings.effective_events_wakeup == "redis"
    assert settings.effective_events_poll_interval == 60


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"events_wakeup": "redis"}, "needs WRENN_REDIS_URL"),
        ({"events_wakeup": "postgres"}, "needs a PostgreSQL database"),
        ({"events_wakeup": "kafka"}, "events_wakeup"),
        ({"events_poll_interval_sec": 0}, "events_poll_interval_sec"),
    ],
)
def test_bad_choices_are_refused(tmp_path: Path, values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _settings(tmp_path, **values)
