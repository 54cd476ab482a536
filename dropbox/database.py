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

A commit that destroys key material (an item's key block, an office grant, an
officer's wrapped keys) empties the SQLite WAL before it returns (`empty_wal`,
at the end of this file), so that no old copy outlives the deletion there.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.exc import UnboundExecutionError
from sqlalchemy.orm import Mapper, ORMExecuteState, Session, object_session, sessionmaker

from dropbox.models import AuditHead, Item, OfficeGrant, Officer

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS = Path(__file__).parent / "migrations"
# The revision that matches the schema `create_all` made before migrations existed.
INITIAL_REVISION = "0001"
# The newest revision in dropbox/migrations/versions, so that a process whose
# database is already there (every server worker, at start) can tell without
# loading Alembic, which alone is about 10 MiB of every worker's memory
# (bench/upload.py). tests/test_migrations.py checks it against Alembic's
# own reading of the revisions: a new migration must move it.
HEAD_REVISION = "0008"
# Any constant: the PostgreSQL advisory lock that lets one process migrate at a time.
_MIGRATION_LOCK = 0x64726F70


_WAL_ATTEMPTS = 300
# Emptying the WAL after key material was destroyed: each attempt waits this
# long for readers and writers, and all attempts together no longer than that.
_CHECKPOINT_WAIT_MS = 250
_CHECKPOINT_SECONDS = 10.0
_BUSY_TIMEOUT_MS = 30000
# Columns holding sealed key material, by model: a row of these models deleted,
# or one of these columns rewritten, destroys keys (crypto-shredding).
_KEY_COLUMNS: dict[type[Any], tuple[str, ...]] = {
    Item: ("key_block",),
    OfficeGrant: ("sealed_office_key",),
    Officer: ("wrapped_secret_key", "totp_secret_sealed"),
}
# The Session.info flag: this transaction destroyed key material.
_SHREDDED = "dropbox_shredded"
log = logging.getLogger(__name__)
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
        cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
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
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def head_revision() -> str:
    """The newest revision this version of the code knows, as Alembic reads the revisions."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package ships its revisions
        raise RuntimeError("no migrations found")
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _at_head(connection: Connection) -> bool:
    """The database records exactly HEAD_REVISION, read with plain SQL (no Alembic)."""
    if not inspect(connection).has_table("alembic_version"):
        return False
    versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return versions == [HEAD_REVISION]


def upgrade_schema(engine: Engine) -> str:
    """Bring the schema to the newest revision, and return that revision.

    Runs in one transaction that first takes a lock (SQLite: the write lock of
    BEGIN IMMEDIATE; PostgreSQL: an advisory lock), so that workers starting
    together migrate once, one after the other. A database made before
    migrations existed (tables, but no alembic_version) is first marked as
    being at the initial revision. A database already at the newest revision
    is told apart without loading Alembic (HEAD_REVISION).
    """
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        if _at_head(connection):
            return HEAD_REVISION
        from alembic import command

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


# --- crypto-shredding reaches the disk ----------------------------------------------
#
# On SQLite, `secure_delete` zeroes what a transaction deletes or overwrites,
# but only in the main database file: the write-ahead log still holds the
# earlier page images, with the key blocks as they were, until a later
# transaction happens to overwrite those frames. So a commit that destroyed key
# material (an item's key block rewritten or deleted, an office grant or an
# officer's wrapped keys replaced or deleted) is followed at once by a
# checkpoint that copies every frame into the main file (where secure_delete's
# zeroed pages replace the old ones) and truncates the WAL to nothing.

_PENDING: weakref.WeakSet[Engine] = weakref.WeakSet()


def _mark(session: Session | None) -> None:
    """Remember that this session's transaction destroys key material."""
    if session is not None:
        session.info[_SHREDDED] = True


def _after_update(_mapper: Mapper[Any], _connection: Connection, target: Any) -> None:
    """A flushed update that replaced a key column marks its session."""
    state = inspect(target)
    if any(state.attrs[name].history.has_changes() for name in _KEY_COLUMNS[type(target)]):
        _mark(object_session(target))


def _after_delete(_mapper: Mapper[Any], _connection: Connection, target: Any) -> None:
    """A flushed delete of a row holding key material marks its session."""
    _mark(object_session(target))


def _do_orm_execute(state: ORMExecuteState) -> None:
    """A bulk UPDATE or DELETE of a table holding key material marks its session."""
    if (state.is_update or state.is_delete) and any(
        mapper.class_ in _KEY_COLUMNS for mapper in state.all_mappers
    ):
        _mark(state.session)


def _after_commit(session: Session) -> None:
    """After a commit that destroyed key material, empty the WAL (SQLite)."""
    shredded = session.info.pop(_SHREDDED, False)
    try:
        bind = session.get_bind()
    except UnboundExecutionError:
        return
    engine = bind.engine if isinstance(bind, Engine | Connection) else None
    if engine is None or not (shredded or engine in _PENDING):
        return
    if empty_wal(engine):
        _PENDING.discard(engine)
        return
    # Retried after the next commit on this engine; say so without naming what was deleted.
    _PENDING.add(engine)
    log.warning("the write-ahead log could not be emptied after a deletion; retrying later")


def _after_rollback(session: Session) -> None:
    """Nothing was destroyed by a transaction that did not commit."""
    session.info.pop(_SHREDDED, None)


def empty_wal(engine: Engine) -> bool:
    """Copy the whole WAL into the database file and truncate it to zero bytes (SQLite).

    Readers still on an older snapshot hold the checkpoint up; each attempt
    waits briefly for them (new writers wait meanwhile), then lets writers
    through before the next. Returns False if the time bound ran out. Other
    databases have no such file here: True.
    """
    if engine.dialect.name != "sqlite" or not engine.url.database:
        return True
    deadline = time.monotonic() + _CHECKPOINT_SECONDS
    raw = engine.raw_connection()
    try:
        connection = raw.driver_connection
        if connection is None:  # pragma: no cover - a pooled connection is open
            return False
        connection.execute(f"PRAGMA busy_timeout={_CHECKPOINT_WAIT_MS}")
        try:
            while True:
                busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if not busy:
                    return True
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.02)
        finally:
            connection.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    finally:
        raw.close()


for _model in _KEY_COLUMNS:
    event.listen(_model, "after_update", _after_update)
    event.listen(_model, "after_delete", _after_delete)
event.listen(Session, "do_orm_execute", _do_orm_execute)
event.listen(Session, "after_commit", _after_commit)
event.listen(Session, "after_rollback", _after_rollback)
