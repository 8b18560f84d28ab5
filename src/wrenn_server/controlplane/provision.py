"""Accounts made straight in the control plane's database, without the API: `wrenn admin
create-user`, and the admin account `wrenn up` creates on first start (signup is closed there).

The database is migrated first, so this works before any control plane has started on it. An
account made here counts as verified, like one an admin adds through the API.
"""

from __future__ import annotations

from . import ids
from .db.migrate import migrate
from .db.session import Database, transaction
from .services.accounts import create_account
from .settings import Settings


async def create_user(
    settings: Settings, *, email: str, name: str, password: str, is_admin: bool
) -> str:
    """Add an active account with its default team; its wire id. `Conflict` if the email is
    taken. `email` and `name` must already be validated (`SignupRequest`)."""
    db = Database(settings.effective_database_url)  # creates the SQLite file's directory
    try:
        await migrate(db.url)
        async with db.sessionmaker() as session, transaction(session, write=True):
            user, _team = await create_account(
                session,
                email=email,
                password=password,
                name=name,
                is_admin=is_admin,
                verified=True,
            )
        return ids.USER.format(user.id)
    finally:
        await db.dispose()
