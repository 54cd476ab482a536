"""Database engine and sessions: SQLite by default (WAL, secure_delete), any SQLAlchemy URL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from dropbox.models import AuditHead, Base


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
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed submission survives power loss, not only a crash.
        cursor.execute("PRAGMA synchronous=FULL")
        # Deleted rows (shredded key blocks) are overwritten, not left in free pages.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # A deferred transaction that reads and then writes can fail with
        # "database is locked" instead of waiting; IMMEDIATE waits its turn.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def create_schema(engine: Engine) -> None:
    """Create every table that does not exist yet, and the audit log's head row."""
    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        # Made here, once, so that two first audit events cannot race to insert it.
        if session.get(AuditHead, 1) is None:
            session.add(AuditHead(id=1, last_event_id=0, last_hash=bytes(32)))


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """A session factory whose objects stay usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)
