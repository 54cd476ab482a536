"""Alembic revisions, oldest first; each one is checked by hand after autogenerate."""
