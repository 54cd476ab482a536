"""Database engine and sessions: SQLite by default (WAL, secure_delete), any SQLAlchemy URL.

The schema is made and changed only through the Alembic revisions in
`dropbox/migrations` (`upgrade_schema`), never with `create_all`.

Two kinds of sessions. Those of `make_sessionmaker` may write: on SQLite
their transactions begin IMMEDIATE, taking the one write lock first so that
they wait their turn instead of failing half-way. Those of `make_reader`
only read: on SQLite their transactions begin DEFERRED, reading a snapshot
(WAL) without waiting for any writer, and refuse to write. Before readers
existed, every request's session lookup queued for the write lock behind
uploads fsyncing their blobs (tests/test_load.py).
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.orm import Session, sessionmaker

from dropbox.models import AuditHead

MIGRATIONS = Path(__file__).parent / "migrations"
# The revision that matches the schema `create_all` made before migrations existed.
INITIAL_REVISION = "0001"
# Any constant: the PostgreSQL advisory lock that lets one process migrate at a time.
_MIGRATION_LOCK = 0x64726F70


_WAL_ATTEMPTS = 300
# The execution option that marks a reader's connections (`make_reader`).
_READ_ONLY = "dropbox_read_only"


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets the pragmas the threat model needs."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin, so
        # that they can begin IMMEDIATE (below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        _use_wal(cursor)
        # FULL: a committed submission survives power loss, not only a crash.
        cursor.execute("PRAGMA synchronous=FULL")
        # Deleted rows (shredded key blocks) are overwritten, not left in free pages.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        if connection.get_execution_options().get(_READ_ONLY):
            connection.exec_driver_sql("BEGIN")
            # A write here could fail at once with "database is locked" under
            # load (a snapshot cannot wait for the write lock): refuse it always.
            connection.exec_driver_sql("PRAGMA query_only=ON")
            connection.info[_READ_ONLY] = True  # kept with the pooled connection
            return
        # A deferred transaction that reads and then writes can fail with
        # "database is locked" instead of waiting; IMMEDIATE waits its turn.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_connection: Any, record: Any) -> None:
        # A reader's connection goes back to the pool, where a writer may take it next.
        read_only = record is not None and record.info.pop(_READ_ONLY, False)
        if read_only and dbapi_connection is not None:
            with contextlib.suppress(sqlite3.Error):
                dbapi_connection.execute("PRAGMA query_only=OFF")

    return engine


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    """Alembic's configuration, made in code: no alembic.ini is needed at run time."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def head_revision() -> str:
    """The newest revision this version of the code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package ships its revisions
        raise RuntimeError("no migrations found")
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at (None for an empty database)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade_schema(engine: Engine) -> str:
    """Bring the schema to the newest revision, and return that revision.

    Runs in one transaction that first takes a lock (SQLite: the write lock of
    BEGIN IMMEDIATE; PostgreSQL: an advisory lock), so that workers starting
    together migrate once, one after the other. A database made before
    migrations existed (tables, but no alembic_version) is first marked as
    being at the initial revision.
    """
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        current = current_revision(connection)
        if current == head_revision():
            return current
        config = alembic_config(connection)
        if current is None and inspect(connection).has_table("reports"):
            command.stamp(config, INITIAL_REVISION)
        command.upgrade(config, "head")
        upgraded = current_revision(connection)
    if upgraded is None:  # pragma: no cover - upgrade always writes the version
        raise RuntimeError("the database has no schema revision after upgrading")
    return upgraded


def _use_wal(cursor: Any) -> None:
    """Switch the database file to WAL (it stays so), waiting for other openers.

    When several processes open a new file at once, SQLite can refuse the
    switch with "database is locked" at once, without its busy handler,
    because waiting could deadlock. Retry for up to about 30 seconds.
    """
    for _ in range(_WAL_ATTEMPTS):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            time.sleep(0.1)
    cursor.execute("PRAGMA journal_mode=WAL")


def create_schema(engine: Engine) -> None:
    """Bring the schema to the newest revision, and make the audit log's head row."""
    upgrade_schema(engine)
    with Session(engine) as session, session.begin():
        # Made here, once, so that two first audit events cannot race to insert it.
        if session.get(AuditHead, 1) is None:
            session.add(AuditHead(id=1, last_event_id=0, last_hash=bytes(32)))


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """A session factory whose objects stay usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def make_reader(engine: Engine) -> sessionmaker[Session]:
    """A session factory for transactions that only read (on SQLite: DEFERRED, no writes)."""
    return sessionmaker(engine.execution_options(**{_READ_ONLY: True}), expire_on_commit=False)
