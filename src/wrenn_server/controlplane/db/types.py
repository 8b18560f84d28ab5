"""Portable column types and the declarative base shared by every model.

SQLite is a first-class backend, so every type here behaves the same on both dialects:
- `UTCDateTime`: timezone-aware on the way in and out. PostgreSQL stores `timestamptz`; SQLite
  has no time zones, so values are stored as naive UTC and get UTC re-attached when read.
- `JSONType`: JSON, stored as JSONB on PostgreSQL (indexable, compact).
- `Uuid` (SQLAlchemy's): native `uuid` on PostgreSQL, 32 hex chars on SQLite.
Constraint names follow one naming convention, so migrations can refer to them on both dialects
(SQLite's batch mode needs names to drop or alter a constraint).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, MetaData, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware datetime, always UTC when read back."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            # A naive value is a bug in the caller: refuse rather than guess its zone.
            raise ValueError("naive datetime bound to a UTCDateTime column")
        value = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)

    def __repr__(self) -> str:
        pk = ", ".join(
            f"{c.name}={getattr(self, str(c.key), None)!r}" for c in self.__mapper__.primary_key
        )
        return f"{type(self).__name__}({pk})"


def enum_check(column: str, values: tuple[str, ...]) -> str:
    """SQL for a CHECK that `column` holds one of `values`.

    Plain strings with CHECK constraints instead of native enums: adding a value is then a
    constraint swap on both dialects, not an `ALTER TYPE` that SQLite does not have.
    """
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


def json_default_dict() -> dict[str, Any]:
    return {}


def json_default_list() -> list[Any]:
    return []
