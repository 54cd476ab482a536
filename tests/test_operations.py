"""Backups taken while sources submit, restores that decrypt every item, and retention purges."""

from __future__ import annotations

import dataclasses
import tarfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from nacl.public import PrivateKey
from sqlalchemy import func, select, update

from crypto import envelope
from dropbox import audit, cases, officers, offices
from dropbox.admin import operations
from dropbox.config import Config
from dropbox.instance import Instance
from dropbox.items import item_context, open_item_bytes, read_message_document
from dropbox.models import AuditEvent, Item, ItemKind, Officer, Report, Status
from source_interface import create_app as create_source
from tests.conftest import CHEAP_COST, CHEAP_CRYPTO_TOML, invoke, new_database_url
from tests.reviewer_helpers import World, make_world, source_report
from tests.source_helpers import login
from tests.test_migrations import fresh_postgres_database, postgres_url

pytestmark = pytest.mark.database_engine

__all__ = ["postgres_url"]  # a fixture, used by name

CANARY = "canary-quokka-5e1f"
MESSAGE = f"The deputy director signed contracts with his brother's firm ({CANARY})."
FILE_BYTES = (f"{CANARY} invoice ledger\n" * 4000).encode()


def submit(source: Flask, category: str = "fraud", *, files: bool = True) -> str:
    """A report through the source interface, with a file whose name and content hold the canary."""
    codename, _ = source_report(
        source,
        category,
        MESSAGE,
        files=[(f"{CANARY}-ledger.txt", FILE_BYTES)] if files else None,
    )
    return codename


def item_ids(instance: Instance) -> set[str]:
    with instance.sessions() as db:
        return set(db.execute(select(Item.id)).scalars())


def decrypt_everything(instance: Instance, office_keys: dict[str, PrivateKey]) -> list[bytes]:
    """Open every item of every report with its office's key; fail on any that does not open."""
    contents = []
    with instance.sessions() as db:
        for report in db.execute(select(Report)).scalars():
            key = office_keys[report.office_code]
            for item in report.items:
                if item.kind == ItemKind.FILE:
                    with instance.store.open(item.blob) as body:
                        reader = envelope.EnvelopeReader(
                            item.key_block, body, key, item_context(report.id, item.id)
                        )
                        data = b"".join(reader.chunks())
                        assert reader.contents.name == f"{CANARY}-ledger.txt"
                        assert data == FILE_BYTES
                else:
                    data = open_item_bytes(instance, item, key)
                    read_message_document(data)
                contents.append(data)
    return contents


def restored_config(config: Config, directory: Path, database_url: str | None = None) -> Config:
    """The same instance's configuration, with a new data directory (and a new, empty database)."""
    url = new_database_url() if database_url is None else database_url
    return dataclasses.replace(config, data_dir=directory, database_url=url)


def write_config(path: Path, data_dir: str, database_url: str, extra: str = "") -> Path:
    """A configuration file for the commands (data_dir relative to the file's folder)."""
    path.write_text(
        f'data_dir = "{data_dir}"\ndatabase_url = "{database_url}"\n{extra}\n{CHEAP_CRYPTO_TOML}'
    )
    return path


class Submitter:
    """A thread that keeps submitting reports (with files) through the source interface."""

    def __init__(self, source: Flask) -> None:
        self.sent: list[str] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(source,))
        self._thread.start()

    def _run(self, source: Flask) -> None:
        while not self._stop.is_set():
            try:
                self.sent.append(submit(source))
            except BaseException as exc:
                self.errors.append(exc)
                return

    def wait_for_more_than(self, count: int) -> None:
        deadline = time.monotonic() + 60
        while len(self.sent) <= count and not self.errors:
            assert time.monotonic() < deadline, "no submission went through"
            time.sleep(0.02)
        assert self.errors == []

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)
        assert not self._thread.is_alive()
        assert self.errors == []


@pytest.fixture
def submitter(source: Flask) -> Iterator[Submitter]:
    running = Submitter(source)
    try:
        yield running
    finally:
        running.stop()


# --- backup and restore ---------------------------------------------------------------


def test_backup_under_writes_restores_and_decrypts_every_item(
    world: World,
    source: Flask,
    tmp_path: Path,
    submitter: Submitter,
) -> None:
    instance, keys = world.instance, world.office_keys
    codename = submit(source, "retaliation")
    submit(source, "harassment", files=False)
    submitter.wait_for_more_than(0)
    before = item_ids(instance)

    archive = tmp_path / "backup.tar"
    summary = operations.backup(instance, archive)

    submitter.wait_for_more_than(len(submitter.sent))  # writes go on after the backup too
    submitter.stop()
    after = item_ids(instance)

    assert summary.reports >= 3 and summary.items == summary.blobs
    data = archive.read_bytes()
    assert CANARY.encode() not in data
    assert MESSAGE.encode() not in data
    assert b"invoice ledger" not in data
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert names[0] == "instance.json" and names[-1] == "manifest.json"
        assert {m.mtime for m in tar.getmembers()} == {
            int(datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp())
        }
    assert archive.stat().st_mode & 0o077 == 0

    target = restored_config(instance.config, tmp_path / "restored")
    restored = operations.restore(target, archive)
    assert restored.reports == summary.reports and restored.items == summary.items
    again = Instance.open(target)
    try:
        restored_items = item_ids(again)
        # A consistent snapshot: everything acknowledged before it, nothing it cannot explain.
        assert before <= restored_items <= after
        assert len(restored_items) == summary.items
        contents = decrypt_everything(again, keys)
        assert len(contents) == summary.items
        assert any(MESSAGE.encode() in c for c in contents)
        with again.sessions() as db:
            assert audit.verify(db).ok
        assert again.secrets == instance.secrets
        # The codename salt came back: the source's codename still opens the thread.
        restored_source = create_source(target, again)
        restored_source.config["TESTING"] = True
        client = restored_source.test_client()
        assert login(client, codename).status_code == 302
        assert client.get("/thread").status_code == 200
    finally:
        again.close()


def test_restore_refuses_a_non_empty_data_directory(world: World, tmp_path: Path) -> None:
    archive = tmp_path / "backup.tar"
    operations.backup(world.instance, archive)
    with pytest.raises(operations.OperationError, match="is not empty"):
        operations.restore(world.instance.config, archive)


def test_backup_refuses_to_overwrite_an_archive(world: World, tmp_path: Path) -> None:
    archive = tmp_path / "backup.tar"
    archive.write_bytes(b"earlier")
    with pytest.raises(operations.OperationError, match="already exists"):
        operations.backup(world.instance, archive)
    assert archive.read_bytes() == b"earlier"


def test_a_damaged_or_cut_archive_is_refused_and_leaves_nothing(
    world: World, source: Flask, tmp_path: Path
) -> None:
    submit(source)
    archive = tmp_path / "backup.tar"
    operations.backup(world.instance, archive)
    data = archive.read_bytes()
    target = restored_config(world.instance.config, tmp_path / "restored")

    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(operations.OperationError, match=r"damaged|incomplete"):
        operations.restore(target, cut)

    flipped = bytearray(data)
    with tarfile.open(archive) as tar:
        blob = next(m for m in tar.getmembers() if m.name.startswith("blobs/"))
    flipped[blob.offset_data + 10] ^= 1
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(bytes(flipped))
    with pytest.raises(operations.OperationError, match="checksum"):
        operations.restore(target, damaged)

    not_tar = tmp_path / "notes.txt"
    not_tar.write_text("not an archive")
    with pytest.raises(operations.OperationError, match="damaged or not a dropbox backup"):
        operations.restore(target, not_tar)

    assert not target.data_dir.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_postgresql_backup_restores_into_a_new_database(
    config: Config, tmp_path: Path, postgres_url: str
) -> None:
    with (
        fresh_postgres_database(postgres_url) as first,
        fresh_postgres_database(postgres_url) as second,
    ):
        live_config = dataclasses.replace(config, database_url=first)
        live = Instance.initialise(live_config)
        try:
            keys = {}
            with live.sessions.begin() as db:
                for office in live.config.offices:
                    _, key, _, _ = offices.create(db, live.config, office.code, CHEAP_COST, "test")
                    keys[office.code] = key
            world = make_world(live, keys)
            app = create_source(live.config, world.instance)
            app.config["TESTING"] = True
            submit(app)
            submit(app, "retaliation")
            archive = tmp_path / "pg.tar"
            summary = operations.backup(live, archive)
            assert summary.database == "rows" and summary.reports == 2
        finally:
            live.close()
        assert CANARY.encode() not in archive.read_bytes()
        target = restored_config(config, tmp_path / "restored", second)
        operations.restore(target, archive)
        again = Instance.open(target)
        try:
            assert len(decrypt_everything(again, keys)) == summary.items
            with again.sessions.begin() as db:
                assert audit.verify(db).ok
                audit.record(db, "test", "after.restore")  # ids continue past the restored ones
                assert audit.verify(db).ok
                # Rows the database numbers itself (officers here) continue past the
                # restored ones too: the restore moved each sequence on.
                newcomer, _ = officers.add(
                    db, "newcomer", "a long test passphrase", CHEAP_COST, "t"
                )
                db.flush()
                assert newcomer.id > max(person.id for person in world.people.values())
        finally:
            again.close()


# --- the commands ---------------------------------------------------------------------


def one_line_error(result: object) -> str:
    assert result.returncode == 2, result  # type: ignore[attr-defined]
    lines = result.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("dropbox: "), lines
    assert "Traceback" not in lines[0]
    return str(lines[0])


def test_backup_and_restore_commands(world: World, source: Flask, tmp_path: Path) -> None:
    submit(source)
    config = write_config(tmp_path / "config.toml", "data", world.instance.config.database_url)
    archive = tmp_path / "backup.tar"
    made = invoke("--config", str(config), "backup", str(archive))
    assert made.returncode == 0, made.stderr
    assert "1 reports" in made.stdout and "keep it where only operators" in made.stdout

    assert "already exists" in one_line_error(
        invoke("--config", str(config), "backup", str(archive))
    )
    assert "is not empty" in one_line_error(
        invoke("--config", str(config), "restore", str(archive))
    )

    other = write_config(tmp_path / "other.toml", "restored", new_database_url())
    assert "no archive" in one_line_error(
        invoke("--config", str(other), "restore", str(tmp_path / "missing.tar"))
    )
    restored = invoke("--config", str(other), "restore", str(archive))
    assert restored.returncode == 0, restored.stderr
    assert "Restored 1 reports" in restored.stdout
    assert "Audit log intact" in restored.stdout
    verified = invoke("--config", str(other), "audit", "verify")
    assert verified.returncode == 0, verified.stderr
    for command in (["backup"], ["restore"], ["purge"]):
        assert invoke(*command, "--help").returncode == 0


# --- retention ------------------------------------------------------------------------


def close(instance: Instance, report_id: str, days_ago: int) -> None:
    closed_at = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=days_ago)
    with instance.sessions.begin() as db:
        db.execute(
            update(Report)
            .where(Report.id == report_id)
            .values(status=Status.CLOSED, outcome="withdrawn", closed_at=closed_at)
        )


def reports_by_age(world: World, source: Flask) -> dict[str, Report]:
    """Four reports: closed long ago (two), closed recently, and open but old."""
    for category in ("fraud", "retaliation", "harassment", "fraud"):
        submit(source, category)
    with world.instance.sessions() as db:
        rows = list(db.execute(select(Report).order_by(Report.designation)).scalars())
    by_role = {"old": rows[0], "old2": rows[1], "recent": rows[2], "open": rows[3]}
    close(world.instance, by_role["old"].id, 800)
    close(world.instance, by_role["old2"].id, 731)
    close(world.instance, by_role["recent"].id, 30)
    with world.instance.sessions.begin() as db:
        db.execute(
            update(Report)
            .where(Report.id == by_role["open"].id)
            .values(received_at=datetime(2020, 1, 1))
        )
    return by_role


def test_purge_dry_run_changes_nothing_and_purge_shreds_old_closed_reports(
    world: World, source: Flask, tmp_path: Path
) -> None:
    instance = world.instance
    by_role = reports_by_age(world, source)
    old_blobs = {}
    with instance.sessions() as db:
        for role in ("old", "old2"):
            old_blobs[role] = list(
                db.execute(select(Item.blob).where(Item.report_id == by_role[role].id)).scalars()
            )
        events_before = db.scalar(select(func.count()).select_from(AuditEvent))

    listed = operations.purge(instance, dry_run=True)
    assert {p.report_id for p in listed} == {by_role["old"].id, by_role["old2"].id}
    assert listed[0].report_id == by_role["old"].id  # oldest first
    with instance.sessions() as db:
        assert db.scalar(select(func.count()).select_from(Report)) == 4
        assert db.scalar(select(func.count()).select_from(AuditEvent)) == events_before
    assert all(instance.store.exists(b) for blobs in old_blobs.values() for b in blobs)

    purged = operations.purge(instance, dry_run=False)
    assert purged == listed
    with instance.sessions() as db:
        left = set(db.execute(select(Report.id)).scalars())
        assert left == {by_role["recent"].id, by_role["open"].id}
        events = list(
            db.execute(select(AuditEvent).where(AuditEvent.action == "report.purge")).scalars()
        )
        assert {e.report_id for e in events} == {by_role["old"].id, by_role["old2"].id}
        assert {e.actor for e in events} == {operations.RETENTION_ACTOR}
        assert all(e.detail.endswith("kept 730 days") for e in events)
        assert audit.verify(db).ok
        assert not db.execute(
            select(Item).where(Item.report_id.in_([by_role["old"].id, by_role["old2"].id]))
        ).first()
    assert not any(instance.store.exists(b) for blobs in old_blobs.values() for b in blobs)
    # The rest is untouched and still decrypts.
    assert decrypt_everything(instance, world.office_keys)
    assert operations.purge(instance, dry_run=False) == []


def test_a_report_reopened_after_the_listing_is_kept(world: World, source: Flask) -> None:
    instance = world.instance
    by_role = reports_by_age(world, source)
    later = datetime.now(UTC).replace(tzinfo=None)
    with instance.sessions.begin() as db:
        officer = db.get(Officer, world.people["oio"].id)
        report = db.get(Report, by_role["old"].id)
        assert officer is not None and report is not None
        cases.change_status(db, officer, report, Status.REOPENED, None)
    purged = operations.purge(instance, dry_run=False, now=later)
    assert [p.report_id for p in purged] == [by_role["old2"].id]


def test_purge_command_lists_designations_and_counts(
    world: World, source: Flask, tmp_path: Path
) -> None:
    by_role = reports_by_age(world, source)
    url = world.instance.config.database_url
    config = write_config(tmp_path / "config.toml", "data", url)

    dry = invoke("--config", str(config), "purge", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "Would purge 2 reports closed more than 730 days ago" in dry.stdout
    assert by_role["old"].designation in dry.stdout and by_role["old2"].designation in dry.stdout
    assert by_role["recent"].designation not in dry.stdout
    assert "Nothing was changed" in dry.stdout
    assert CANARY not in dry.stdout

    done = invoke("--config", str(config), "purge")
    assert done.returncode == 0, done.stderr
    assert "Purged 2 reports" in done.stdout
    nothing = invoke("--config", str(config), "purge")
    assert "nothing to purge" in nothing.stdout

    shorter = write_config(
        tmp_path / "short.toml", "data", url, "[retention]\nclosed_report_days = 7"
    )
    last = invoke("--config", str(shorter), "purge")
    assert "Purged 1 reports closed more than 7 days ago" in last.stdout
    assert by_role["recent"].designation in last.stdout


def test_a_sqlite_backup_restores_into_postgresql(
    world: World, source: Flask, tmp_path: Path, postgres_url: str
) -> None:
    """The way from one host to several: back up SQLite, restore into PostgreSQL."""
    if world.instance.engine.dialect.name != "sqlite":
        pytest.skip("the instance under test is not on SQLite")
    submit(source)
    archive = tmp_path / "backup.tar"
    summary = operations.backup(world.instance, archive)
    assert summary.database == "sqlite"
    with fresh_postgres_database(postgres_url) as url:
        target = restored_config(world.instance.config, tmp_path / "restored", url)
        operations.restore(target, archive)
        again = Instance.open(target)
        try:
            assert again.engine.dialect.name == "postgresql"
            assert len(decrypt_everything(again, world.office_keys)) == summary.items
            with again.sessions.begin() as db:
                audit.record(db, "test", "after.restore")
                assert audit.verify(db).ok
        finally:
            again.close()
