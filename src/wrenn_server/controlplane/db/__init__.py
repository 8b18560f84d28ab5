"""Persistence: ORM models, portable types, engine/session handling and migrations."""

from .session import Database, transaction

__all__ = ["Database", "transaction"]
