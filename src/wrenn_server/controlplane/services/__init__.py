"""Business logic, below the routes and the jobs, above the adapters (`agents/`, `builds/`) and
the database (`db/`). Services raise the domain errors of `errors.py`.

A service function's first parameter says who owns the database transaction:

- `session: AsyncSession`: the function runs inside the caller's transaction. It flushes, but
  never opens, commits or rolls back one; the caller wraps it in `transaction(session, ...)`.
- `db: Database`: the function owns its transactions and opens short ones itself (capsule
  operations, for one, never hold a transaction across a host agent call); the caller holds
  none.

Functions that touch no database (agent pass-through, stream sessions) take neither. The rule
is checked by tests/unit/controlplane/test_service_shapes.py.
"""
