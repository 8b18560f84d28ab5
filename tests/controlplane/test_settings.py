"""Settings: database URL default, and refusing the default JWT secret outside dev mode."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from wrenn_server.controlplane.app import create_app
from wrenn_server.controlplane.errors import InsecureConfiguration
from wrenn_server.controlplane.settings import DEFAULT_JWT_SECRET, Settings, ensure_jwt_secret


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WRENN_JWT_SECRET", "WRENN_DEV_MODE", "WRENN_DATABASE_URL", "WRENN_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_default_database_is_sqlite_in_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.effective_database_url == f"sqlite+aiosqlite:///{tmp_path}/wrenn.db"
    pg = "postgresql+asyncpg://u:p@db/wrenn"
    assert Settings(data_dir=tmp_path, database_url=pg).effective_database_url == pg


def test_reads_prefixed_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WRENN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("WRENN_PORT", "9999")
    monkeypatch.setenv("WRENN_DEV_MODE", "1")
    settings = Settings()
    assert (settings.data_dir, settings.port, settings.dev_mode) == (tmp_path, 9999, True)


def test_every_field_is_described() -> None:
    assert all(field.description for field in Settings.model_fields.values())


def test_refuses_default_secret_outside_dev_mode(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(InsecureConfiguration, match="default JWT secret"):
        settings.resolve_jwt_secret()
    with pytest.raises(InsecureConfiguration):
        create_app(settings)


def test_dev_mode_allows_default_secret(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path, dev_mode=True).resolve_jwt_secret() == DEFAULT_JWT_SECRET


def test_explicit_secret_must_be_long(tmp_path: Path) -> None:
    with pytest.raises(InsecureConfiguration, match="32"):
        Settings(data_dir=tmp_path, jwt_secret="short").resolve_jwt_secret()  # type: ignore[arg-type]
    secret = "s" * 40
    assert Settings(data_dir=tmp_path, jwt_secret=secret).resolve_jwt_secret() == secret  # type: ignore[arg-type]


def test_generated_secret_is_used_and_kept(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "state")
    path = ensure_jwt_secret(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = settings.resolve_jwt_secret()
    assert len(secret) >= 48 and secret != DEFAULT_JWT_SECRET
    # A second call keeps the existing secret (tokens issued before stay valid).
    ensure_jwt_secret(settings)
    assert settings.resolve_jwt_secret() == secret
    assert sorted(p.name for p in path.parent.iterdir()) == ["jwt_secret"]


def test_sqlite_directory_is_created(tmp_path: Path) -> None:
    from wrenn_server.controlplane.db.session import Database

    settings = Settings(data_dir=tmp_path / "new" / "dir")
    Database(settings.effective_database_url)
    assert (tmp_path / "new" / "dir").is_dir()


def test_postgresql_pool_sizes_are_settings(tmp_path: Path) -> None:
    """Each process has its own pool: N processes must fit PostgreSQL's max_connections, so the
    sizes are the operator's (nothing connects here)."""
    pg = "postgresql+asyncpg://u:p@127.0.0.1:1/wrenn"
    app = create_app(
        Settings(
            data_dir=tmp_path,
            database_url=pg,
            dev_mode=True,
            database_pool_size=4,
            database_max_overflow=6,
        )
    )
    pool = app.state.db.engine.sync_engine.pool
    assert (pool.size(), pool._max_overflow) == (4, 6)
    default = create_app(Settings(data_dir=tmp_path, database_url=pg, dev_mode=True))
    assert default.state.db.engine.sync_engine.pool.size() == 20
