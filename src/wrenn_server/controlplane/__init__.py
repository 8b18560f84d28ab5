"""The control plane: REST API, auth, teams, scheduling and background workers.

Stateless: every piece of state lives in the database (SQLite on one box, PostgreSQL in
production). `app.create_app(settings)` builds the ASGI application; `db.migrate.migrate(url)`
brings a database to the current schema.
"""
