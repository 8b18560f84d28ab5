"""Alembic environment and the schema's revision chain, shipped inside the package."""
