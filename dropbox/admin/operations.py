"""Operating an instance: consistent backups, restore into an empty data directory, retention.

A backup is one tar archive, written to a temporary name, fsynced and renamed:

    instance.json       the instance secrets (codename salt, app secret, audit keys)
    database.sqlite3    a snapshot made with SQLite's online backup API, or
    database.jsonl      every row, read in one REPEATABLE READ transaction (PostgreSQL)
    blobs/ab/ab...      exactly the blobs the snapshot's items refer to, still encrypted
    manifest.json       format, schema revision, counts and each blob's SHA-256 (last)

It holds no plaintext and no key that opens a report: those are the office
keys, kept by officers (wrapped) and in the offline recovery files. Session
rows are left out. Blob times are not kept: every entry carries the backup's
date, no finer.

Consistency while the servers run: every blob present is first hard-linked
into a private folder (blobs never change once written), then the database
snapshot is taken, then any blob the snapshot names that was written in
between is linked too. A blob is written before its row and removed only
after its row is gone, so everything the snapshot refers to is there.

The database snapshot is made and kept in memory, never in a file under the
data directory: a backup killed half-way leaves only links to blobs (keyless
ciphertext), no copy of key blocks a later deletion destroys. Blobs are read
without touching their access time, and the folder the backup staged in
leaves the store's `tmp` folder with the day as its time.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Date,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    Table,
    func,
    inspect,
    select,
)
from sqlalchemy.engine import make_url

from dropbox import audit, cases
from dropbox.config import Config
from dropbox.database import current_revision, head_revision, make_engine, upgrade_schema
from dropbox.errors import DropboxError
from dropbox.instance import SECRETS_FILE, Instance
from dropbox.models import Base, Item, Report, Status
from dropbox.store import day_start, fsync_dir, open_quietly, stamp_dir

ARCHIVE_FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_MEMBER = "database.sqlite3"
ROWS_MEMBER = "database.jsonl"
# Sessions are short-lived and tied to cookies: a restored instance starts without them.
SKIPPED_TABLES = frozenset({"source_sessions", "officer_sessions"})
RETENTION_ACTOR = "retention"
_BLOB_MEMBER = re.compile(r"^blobs/([0-9a-f]{2})/(\1[0-9a-f]{30})$")
_CHUNK = 1024 * 1024


class OperationError(DropboxError):
    """A backup, restore or purge that cannot be carried out; the message says why."""


def _tables() -> list[Table]:
    """The tables a backup holds, parents before children."""
    return [t for t in Base.metadata.sorted_tables if t.name not in SKIPPED_TABLES]


# --- backup -------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupSummary:
    """What a backup archive holds."""

    path: Path
    database: str  # "sqlite" or "rows"
    revision: str
    reports: int
    items: int
    blobs: int
    size: int


@dataclass
class _Snapshot:
    member: str
    revision: str
    data: bytes = b""
    reports: int = 0
    items: int = 0
    blobs: set[str] = field(default_factory=set)


def backup(instance: Instance, archive: Path) -> BackupSummary:
    """Write one consistent archive of the database and the blobs, while the servers run."""
    archive = archive.absolute()
    if archive.exists():
        raise OperationError(f"{archive} already exists; choose another file name")
    if not archive.parent.is_dir():
        raise OperationError(f"the folder {archive.parent} does not exist")
    staging = Path(tempfile.mkdtemp(prefix="backup-", dir=instance.store.temp_dir))
    try:
        linked = {name for name in instance.store.names() if _link_blob(instance, name, staging)}
        snapshot = _snapshot(instance)
        for name in sorted(snapshot.blobs - linked):
            if not _link_blob(instance, name, staging):
                raise OperationError(
                    f"blob {name} of the database is missing from {instance.store.blob_dir}; "
                    "no backup was written"
                )
        size = _write_archive(instance, archive, staging, snapshot)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        stamp_dir(instance.store.temp_dir, day_start())
    return BackupSummary(
        archive,
        "sqlite" if snapshot.member == SQLITE_MEMBER else "rows",
        snapshot.revision,
        snapshot.reports,
        snapshot.items,
        len(snapshot.blobs),
        size,
    )


def _link_blob(instance: Instance, name: str, staging: Path) -> bool:
    """Keep this blob for the backup (a hard link, or a copy); False if it no longer exists."""
    source, target = instance.store.path(name), staging / name
    if target.exists():
        return True
    try:
        os.link(source, target)
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
    # No hard links here: copy from an open handle, which stays valid if the blob is removed.
    try:
        with open_quietly(source) as body, open(target, "xb") as copy:
            shutil.copyfileobj(body, copy, _CHUNK)
    except FileNotFoundError:
        return False
    return True


def _snapshot(instance: Instance) -> _Snapshot:
    """The database, consistent at one moment, held in memory (see the module doc)."""
    engine = instance.engine
    if engine.dialect.name == "sqlite":
        return _sqlite_snapshot(engine)
    return _rows_snapshot(engine)


def _sqlite_snapshot(engine: Engine) -> _Snapshot:
    database = engine.url.database
    if not database:
        raise OperationError("an in-memory database cannot be backed up")
    source = sqlite3.connect(database, timeout=30)
    copy = sqlite3.connect(":memory:")
    try:
        # One step (pages=-1): a single read transaction, so the copy is one consistent state.
        source.backup(copy)
        copy.execute("PRAGMA secure_delete=ON")
        for table in SKIPPED_TABLES:
            with contextlib.suppress(sqlite3.OperationalError):
                copy.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names  # nosec B608
        copy.commit()
        copy.execute("VACUUM")
        revision = copy.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        snapshot = _Snapshot(SQLITE_MEMBER, str(revision))
        snapshot.reports = copy.execute("SELECT count(*) FROM reports").fetchone()[0]
        snapshot.blobs = {row[0] for row in copy.execute("SELECT blob FROM items")}
        snapshot.items = len(snapshot.blobs)
        snapshot.data = copy.serialize()
    finally:
        copy.close()
        source.close()
    return snapshot


def _encode(table: Table, row: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for column in table.columns:
        value = getattr(row, column.key)
        if value is not None and isinstance(column.type, LargeBinary):
            value = base64.b64encode(value).decode()
        elif value is not None and isinstance(column.type, DateTime | Date):
            value = value.isoformat()
        values[column.key] = value
    return values


def _decode(table: Table, values: dict[str, Any]) -> dict[str, Any]:
    decoded: dict[str, Any] = {}
    for column in table.columns:
        value = values.get(column.key)
        if value is not None and isinstance(column.type, LargeBinary):
            value = base64.b64decode(value, validate=True)
        elif value is not None and isinstance(column.type, DateTime):
            value = datetime.fromisoformat(value)
        elif value is not None and isinstance(column.type, Date):
            value = date.fromisoformat(value)
        decoded[column.key] = value
    return decoded


def _rows_snapshot(engine: Engine) -> _Snapshot:
    out = io.StringIO()
    with engine.connect() as opened:
        connection = opened.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            revision = current_revision(connection)
            if revision is None:
                raise OperationError("the database has no schema; run 'dropbox db upgrade'")
            snapshot = _Snapshot(ROWS_MEMBER, revision)
            for table in _tables():
                rows = connection.execute(
                    select(table).order_by(*table.primary_key.columns),
                    execution_options={"yield_per": 1000},
                )
                for row in rows:
                    line = {"table": table.name, "row": _encode(table, row)}
                    out.write(json.dumps(line, separators=(",", ":")) + "\n")
                    if table.name == Item.__tablename__:
                        snapshot.blobs.add(row.blob)
                        snapshot.items += 1
                    elif table.name == Report.__tablename__:
                        snapshot.reports += 1
    snapshot.data = out.getvalue().encode("utf-8")
    return snapshot


class _HashingReader(io.RawIOBase):
    """Reads a file and hashes what passes through (one pass for the archive and its manifest)."""

    def __init__(self, handle: io.BufferedReader) -> None:
        self._handle = handle
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._handle.readinto(buffer)
        self.digest.update(memoryview(buffer)[:count])
        return count


def _write_archive(instance: Instance, archive: Path, staging: Path, snapshot: _Snapshot) -> int:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    mtime = int(today.timestamp())

    def info(name: str, size: int) -> tarfile.TarInfo:
        entry = tarfile.TarInfo(name)
        entry.size, entry.mtime, entry.mode = size, mtime, 0o600
        return entry

    fd, temporary = tempfile.mkstemp(prefix=f".{archive.name}.", suffix=".part", dir=archive.parent)
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                secrets_data = (instance.config.data_dir / SECRETS_FILE).read_bytes()
                tar.addfile(info(SECRETS_FILE, len(secrets_data)), io.BytesIO(secrets_data))
                tar.addfile(info(snapshot.member, len(snapshot.data)), io.BytesIO(snapshot.data))
                hashes = {}
                for name in sorted(snapshot.blobs):
                    # A link to the blob itself: read it as the store does, atime untouched.
                    with open_quietly(staging / name) as body:
                        reader = _HashingReader(body)
                        size = os.fstat(body.fileno()).st_size
                        tar.addfile(info(f"blobs/{name[:2]}/{name}", size), reader)
                        hashes[name] = reader.digest.hexdigest()
                manifest = {
                    "format": ARCHIVE_FORMAT,
                    "created": today.date().isoformat(),
                    "database": snapshot.member,
                    "revision": snapshot.revision,
                    "reports": snapshot.reports,
                    "items": snapshot.items,
                    "blobs": hashes,
                }
                data = json.dumps(manifest, indent=1, sort_keys=True).encode()
                tar.addfile(info(MANIFEST, len(data)), io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(temporary, archive)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    fsync_dir(archive.parent)
    return archive.stat().st_size


# --- restore ------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreSummary:
    """What a restore put back, and the audit chain's state after it."""

    data_dir: Path
    revision: str
    reports: int
    items: int
    blobs: int
    audit_events: int


def restore(config: Config, archive: Path) -> RestoreSummary:
    """Restore an archive into the configured, empty (or not yet existing) data directory."""
    data_dir = config.data_dir
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise OperationError(f"{data_dir} is not empty; restore only into an empty data directory")
    if not archive.is_file():
        raise OperationError(f"there is no archive at {archive}")
    url = make_url(config.db_url)
    sqlite_path = Path(url.database or "") if url.get_backend_name() == "sqlite" else None
    if (
        sqlite_path is not None
        and not sqlite_path.is_relative_to(data_dir)
        and sqlite_path.exists()
    ):
        raise OperationError(f"{sqlite_path} already exists; restore needs no database there")
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.restore-", dir=data_dir.parent))
    try:
        manifest = _extract(archive, staging)
        _restore_database(config, staging, manifest, sqlite_path)
        if data_dir.exists():
            data_dir.rmdir()
        os.rename(staging, data_dir)
        fsync_dir(data_dir.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    instance = Instance.open(config)
    try:
        with instance.sessions() as session:
            verification = audit.verify(session)
            reports = session.scalar(select(func.count()).select_from(Report)) or 0
            blobs = list(session.execute(select(Item.blob)).scalars())
        missing = [name for name in blobs if not instance.store.exists(name)]
        revision = head_revision()
    finally:
        instance.close()
    if missing:
        raise OperationError(f"restored, but {len(missing)} blobs are missing (e.g. {missing[0]})")
    if not verification.ok:
        raise OperationError(
            f"restored, but the audit log is broken at event {verification.first_broken}: "
            f"{verification.problem}"
        )
    return RestoreSummary(data_dir, revision, reports, len(blobs), len(blobs), verification.events)


def _extract(archive: Path, staging: Path) -> dict[str, Any]:
    """Unpack the archive into `staging`, checking every entry; return the manifest."""
    hashes: dict[str, str] = {}
    seen: set[str] = set()
    manifest: dict[str, Any] | None = None
    try:
        with tarfile.open(archive, mode="r:") as tar:
            for member in tar:
                name = member.name
                blob = _BLOB_MEMBER.fullmatch(name)
                known = name in (SECRETS_FILE, SQLITE_MEMBER, ROWS_MEMBER, MANIFEST) or blob
                if not member.isfile() or not known or name in seen:
                    raise OperationError(f"{archive} holds {name!r}: it is not a dropbox backup")
                seen.add(name)
                source = tar.extractfile(member)
                if source is None:  # pragma: no cover - isfile() members always have data
                    raise OperationError(f"{archive}: cannot read {name}")
                if name == MANIFEST:
                    manifest = json.loads(source.read())
                    continue
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                hashes[name] = _copy_synced(source, target)
    except (tarfile.TarError, EOFError, ValueError, UnicodeDecodeError) as exc:
        raise OperationError(f"{archive} is damaged or not a dropbox backup ({exc})") from None
    if manifest is None:
        raise OperationError(f"{archive} is incomplete (no manifest): it was cut short")
    if manifest.get("format") != ARCHIVE_FORMAT:
        raise OperationError(f"{archive} has an unknown format {manifest.get('format')!r}")
    for needed in (SECRETS_FILE, manifest.get("database")):
        if needed not in seen:
            raise OperationError(f"{archive} is incomplete: {needed} is missing")
    expected = manifest.get("blobs", {})
    found = {n.rsplit("/", 1)[1]: h for n, h in hashes.items() if n.startswith("blobs/")}
    if found.keys() != expected.keys():
        raise OperationError(
            f"{archive} is incomplete: {len(expected)} blobs listed, {len(found)} present"
        )
    for name, digest in found.items():
        if expected[name] != digest:
            raise OperationError(f"{archive} is damaged: blob {name} does not match its checksum")
    (staging / "tmp").mkdir(mode=0o700, exist_ok=True)
    (staging / "blobs").mkdir(mode=0o700, exist_ok=True)
    return manifest


def _copy_synced(source: Any, target: Path) -> str:
    digest = hashlib.sha256()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def _restore_database(
    config: Config, staging: Path, manifest: dict[str, Any], sqlite_path: Path | None
) -> None:
    member = staging / manifest["database"]
    target_url = config.db_url
    if sqlite_path is not None:
        inside = sqlite_path.is_relative_to(config.data_dir)
        target = staging / sqlite_path.relative_to(config.data_dir) if inside else sqlite_path
        if manifest["database"] == SQLITE_MEMBER:
            # The snapshot is the database: move it into place (the schema is upgraded on open).
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(member, target)
            fsync_dir(target.parent)
            return
        target_url = f"sqlite:///{target}"
    if manifest["revision"] != head_revision():
        raise OperationError(
            f"the archive is at schema revision {manifest['revision']}, this version at "
            f"{head_revision()}: restore with the version that made it, then upgrade"
        )
    engine = make_engine(target_url)
    try:
        with engine.connect() as connection:
            _refuse_non_empty(connection)
        upgrade_schema(engine)
        with engine.begin() as connection:
            _load_rows(connection, _rows(member))
    finally:
        engine.dispose()
    member.unlink()


def _refuse_non_empty(connection: Connection) -> None:
    existing = set(inspect(connection).get_table_names())
    for table in Base.metadata.sorted_tables:
        if table.name in existing and connection.execute(select(table).limit(1)).first():
            url = connection.engine.url.render_as_string(hide_password=True)
            raise OperationError(f"the database {url} already holds data; restore needs it empty")


def _rows(path: Path) -> Iterator[tuple[Table, dict[str, Any]]]:
    """The rows of a snapshot, decoded to Python values."""
    tables = {t.name: t for t in _tables()}
    if path.name == SQLITE_MEMBER:
        engine = make_engine(f"sqlite:///{path}")
        try:
            with engine.connect() as connection:
                for table in tables.values():
                    for row in connection.execute(select(table)):
                        yield table, dict(row._mapping)
        finally:
            engine.dispose()
        return
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            entry = json.loads(line)
            named = tables.get(entry.get("table"))
            if named is None:
                raise OperationError(f"the archive names an unknown table {entry.get('table')!r}")
            yield named, _decode(named, entry["row"])


def _load_rows(connection: Connection, rows: Iterator[tuple[Table, dict[str, Any]]]) -> None:
    """Insert rows in batches; tables arrive parents first (the order of the snapshot)."""
    batch: list[dict[str, Any]] = []
    current: Table | None = None
    for table, row in rows:
        if table is not current and batch and current is not None:
            connection.execute(current.insert(), batch)
            batch = []
        current = table
        batch.append(row)
        if len(batch) >= 500:
            connection.execute(table.insert(), batch)
            batch = []
    if batch and current is not None:
        connection.execute(current.insert(), batch)
    if connection.dialect.name == "postgresql":
        # Rows came with their ids: move each id sequence past the highest one.
        for table in _tables():
            key = list(table.primary_key.columns)
            if len(key) == 1 and isinstance(key[0].type, Integer):
                # Built by SQLAlchemy (quoted identifiers, bound names), not as SQL text.
                column = key[0]
                highest = func.max(column)
                sequence = func.pg_get_serial_sequence(table.name, column.name)
                connection.execute(
                    select(
                        func.setval(sequence, func.coalesce(highest, 1), highest.is_not(None))
                    ).select_from(table)
                )


# --- retention ----------------------------------------------------------------------


@dataclass(frozen=True)
class Purged:
    """A closed report the retention period has run out for (no content: a label and dates)."""

    report_id: str
    designation: str
    office_code: str
    closed_on: date


def purge(instance: Instance, *, dry_run: bool, now: datetime | None = None) -> list[Purged]:
    """Crypto-shred closed reports older than the retention period; a dry run changes nothing."""
    days = instance.config.retention.closed_report_days
    cutoff = (now or datetime.now(UTC).replace(tzinfo=None)) - timedelta(days=days)
    due_filter = (Report.status == Status.CLOSED, Report.closed_at.is_not(None))
    with instance.sessions() as session:
        due = [
            Purged(row.id, row.designation, row.office_code, row.closed_at.date())
            for row in session.execute(
                select(Report.id, Report.designation, Report.office_code, Report.closed_at)
                .where(*due_filter, Report.closed_at < cutoff)
                .order_by(Report.closed_at, Report.designation)
            )
        ]
    if dry_run:
        return due
    purged = []
    for entry in due:
        with instance.sessions.begin() as session:
            report = session.get(Report, entry.report_id)
            # Reopened (or already deleted) since the list was made: keep it.
            if (
                report is None
                or report.status != Status.CLOSED
                or report.closed_at is None
                or report.closed_at >= cutoff
            ):
                continue
            blobs = cases.shred_report(
                session,
                report,
                RETENTION_ACTOR,
                "report.purge",
                detail=f"closed {entry.closed_on.isoformat()}; kept {days} days",
            )
        cases.remove_blobs(instance, blobs)
        purged.append(entry)
    return purged
