"""Alembic's environment: migrate the connection that dropbox.database hands over.

Run through `dropbox.database.upgrade_schema` (or `dropbox db upgrade`), the
connection arrives in `config.attributes["connection"]`, already inside a
transaction that serialises concurrent upgrades. Without one (a developer
running Alembic by hand to autogenerate a revision), the URL comes from the
`sqlalchemy.url` option.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from dropbox.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: later revisions copy the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations() -> None:
    """Migrate the given connection, or one opened from `sqlalchemy.url`."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection and no sqlalchemy.url to migrate")
    engine = create_engine(url)
    try:
        with engine.begin() as opened:
            _run(opened)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported")
run_migrations()
