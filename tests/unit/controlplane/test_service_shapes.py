"""The services' call shapes (services/__init__.py): a function's first parameter says who owns
the transaction. `session: AsyncSession` first: it runs in the caller's transaction and never
opens, commits or rolls back one. `db: Database` first: it owns its transactions. A function
that opens transactions takes `db: Database` first; none takes both."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from wrenn_server.controlplane import services

SERVICES = Path(services.__file__).parent
# Calls that open or end a transaction, whatever they are called on.
OWNING_CALLS = {"transaction", "sessionmaker", "begin", "commit", "rollback"}
SHAPES = {"AsyncSession": "session", "Database": "db"}

Function = ast.FunctionDef | ast.AsyncFunctionDef


def _owning_calls(function: Function) -> set[str]:
    found = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in OWNING_CALLS:
                found.add(name)
    return found


def violations(source: str) -> Iterator[str]:
    """What breaks the rule in a module's top-level functions."""
    for node in ast.parse(source).body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        params = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
        shaped = [
            (p.arg, ast.unparse(p.annotation))
            for p in params
            if p.annotation is not None and ast.unparse(p.annotation) in SHAPES
        ]
        first = shaped[0] if shaped and params[0].arg == shaped[0][0] else None
        if len(shaped) > 1:
            yield f"{node.name}: takes both a session and a database"
        elif shaped and first is None:
            yield f"{node.name}: {shaped[0][0]} is not the first parameter"
        elif first is not None and first[0] != SHAPES[first[1]]:
            yield f"{node.name}: its {first[1]} is named {first[0]}, not {SHAPES[first[1]]}"
        owning = _owning_calls(node)
        if owning and (first is None or first[1] != "Database"):
            yield f"{node.name}: calls {sorted(owning)} without taking db: Database first"


def _modules() -> list[Path]:
    return sorted(SERVICES.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SERVICES)))
def test_service_functions_say_who_owns_the_transaction(path: Path) -> None:
    assert list(violations(path.read_text())) == []


def test_the_check_catches_each_wrong_shape() -> None:
    source = """
async def opens_in_callers(session: AsyncSession) -> None:
    async with transaction(session, write=True):
        pass

async def commits(session: AsyncSession) -> None:
    await session.commit()

async def session_second(name: str, session: AsyncSession) -> None: ...

async def badly_named(database: Database) -> None: ...

async def both(db: Database, session: AsyncSession) -> None: ...

async def owns_without_db(sessions: Factory) -> None:
    async with sessions() as s, transaction(s):
        pass

async def fine_in_callers(session: AsyncSession, *, name: str) -> None:
    await session.flush()

async def fine_owner(db: Database, *, name: str) -> None:
    async with db.sessionmaker() as session, transaction(session, write=True):
        pass

def fine_pure(name: str) -> str:
    return name
"""
    assert list(violations(source)) == [
        "opens_in_callers: calls ['transaction'] without taking db: Database first",
        "commits: calls ['commit'] without taking db: Database first",
        "session_second: session is not the first parameter",
        "badly_named: its Database is named database, not db",
        "both: takes both a session and a database",
        "owns_without_db: calls ['transaction'] without taking db: Database first",
    ]
