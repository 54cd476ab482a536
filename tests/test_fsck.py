"""`dropbox fsck`: the blobs on disk against the item rows, and what `--repair` may remove.

The leftovers are made as a crash leaves them: a blob committed whose row
never was, a report whose rows were removed but not its blobs, a partial
write, a killed backup's staging folder. Files are young unless the check is
run "later" (`now` two days on) or with a grace period of zero.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from nacl.public import PrivateKey
from sqlalchemy import func, select

from dropbox import audit, cases, offices
from dropbox.admin import fsck
from dropbox.config import load
from dropbox.instance import Instance
from dropbox.items import add_item, message_type, open_item, seal_bytes, source_day
from dropbox.models import AuditEvent, Item, ItemKind, Report
from source_interface import create_app
from tests.conftest import CHEAP_COST, CHEAP_CRYPTO_TOML, invoke, new_database_url
from tests.reviewer_helpers import source_report

pytestmark = pytest.mark.database_engine

FILE = b"minutes of the tender committee, page 1 of 3\n" * 4000
LATER = time.time() + 2 * 24 * 3600  # past the default grace period of everything made now


@dataclass
class Setup:
    """An instance with both offices and one report with a file, and its config file."""

    config: Path
    instance: Instance
    office_keys: dict[str, PrivateKey]

    def fsck(self, *args: str) -> tuple[int, str]:
        """Run `dropbox fsck` as an operator would; its exit code and output."""
        done = invoke("--config", str(self.config), "fsck", *args)
        assert "Traceback" not in done.stdout + done.stderr
        return done.returncode, done.stdout + done.stderr

    def blob_names(self) -> set[str]:
        """Every blob file on disk."""
        return set(self.instance.store.names())

    def item_blobs(self) -> set[str]:
        """Every blob an item refers to."""
        with self.instance.sessions() as db:
            return set(db.execute(select(Item.blob)).scalars())

    def all_items_decrypt(self) -> None:
        """Every item of every report opens with its office's key and checks out."""
        with self.instance.sessions() as db:
            rows = db.execute(select(Item, Report.office_code).join(Report)).all()
            for item, office in rows:
                reader, body = open_item(self.instance, item, self.office_keys[office])
                with body:
                    assert sum(len(chunk) for chunk in reader.chunks()) == item.size


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    """The instance, made through its configuration file so the CLI opens the same one."""
    config_path = tmp_path / "config.toml"
    config_path.write_text(
        f'data_dir = "data"\ndatabase_url = "{new_database_url()}"\n{CHEAP_CRYPTO_TOML}'
    )
    instance = Instance.initialise(load(config_path))
    keys = {}
    with instance.sessions.begin() as db:
        for office in instance.config.offices:
            _, keys[office.code], _, _ = offices.create(
                db, instance.config, office.code, CHEAP_COST, "test"
            )
    app = create_app(instance.config, instance)
    app.config["TESTING"] = True
    source_report(app, "fraud", files=[("tender.txt", FILE)])
    try:
        yield Setup(config_path, instance, keys)
    finally:
        instance.close()


def a_report(setup: Setup) -> Report:
    """The report made by the fixture."""
    with setup.instance.sessions() as db:
        return db.execute(select(Report)).scalar_one()


def orphan_blob(setup: Setup) -> str:
    """A blob committed whose row never was: a crash between the two steps of `add_item`."""
    report = a_report(setup)
    office = PrivateKey.generate().public_key
    stored = seal_bytes(
        setup.instance.store,
        report.id,
        b"never recorded",
        [office],
        content_type=message_type(ItemKind.MESSAGE),
    )
    stored.blob.commit()
    return stored.blob.name


def test_a_consistent_instance_is_reported_clean_with_exit_code_0(setup: Setup) -> None:
    code, output = setup.fsck()
    assert code == 0, output
    assert "3 blobs, 3 items" in output  # the message, the file, the acknowledgement
    assert "The blobs and the database agree." in output


def test_a_fresh_blob_without_an_item_is_left_alone_as_an_upload_in_progress(
    setup: Setup,
) -> None:
    name = orphan_blob(setup)

    code, output = setup.fsck("--repair")

    assert code == 0, output
    assert "Left alone: 1 stray file younger than 1440 minutes" in output
    assert "Removed 0 blobs without an item" in output
    assert name in setup.blob_names()


def test_blobs_without_an_item_are_reported_then_removed_by_repair_once_settled(
    setup: Setup,
) -> None:
    kept = setup.item_blobs()
    name = orphan_blob(setup)

    code, output = setup.fsck("--grace-minutes", "0")
    assert code == 1, output
    assert f"blob without an item:      blobs/{name[:2]}/{name}" in output
    assert "Run 'dropbox fsck --repair' to remove the 1 leftover above." in output
    assert "1 problem found." in output
    assert name in setup.blob_names()  # a check alone changes nothing

    code, output = setup.fsck("--repair", "--grace-minutes", "0")
    assert code == 0, output
    assert "Removed 1 blob without an item" in output
    assert setup.blob_names() == kept
    setup.all_items_decrypt()
    assert setup.fsck("--grace-minutes", "0")[0] == 0


def test_the_blobs_of_a_report_deleted_just_before_a_crash_are_found_later(
    setup: Setup,
) -> None:
    with setup.instance.sessions.begin() as db:
        report = db.execute(select(Report)).scalar_one()
        blobs = cases.shred_report(db, report, "test", "report.delete")
    # The crash: the rows are gone, `cases.remove_blobs` never ran.
    assert set(blobs) <= setup.blob_names()

    findings = fsck.check(setup.instance)
    assert findings.problems == 0 and len(findings.in_progress) == len(blobs)

    later = fsck.check(setup.instance, now=LATER)
    assert {s.path.name for s in later.orphan_blobs} == set(blobs)
    assert later.problems == len(blobs)
    repairs = fsck.repair(setup.instance, later)
    assert repairs.orphan_blobs == len(blobs)
    assert setup.blob_names() == set()
    assert fsck.check(setup.instance, now=LATER).problems == 0


def test_repair_keeps_a_blob_that_an_upload_committed_after_the_check(setup: Setup) -> None:
    """The race fsck must lose: the row arrives between the check and the removal."""
    report = a_report(setup)
    office = setup.office_keys[report.office_code].public_key
    stored = seal_bytes(
        setup.instance.store,
        report.id,
        b"an answer",
        [office],
        content_type=message_type(ItemKind.MESSAGE),
    )
    stored.blob.commit()
    findings = fsck.check(setup.instance, now=LATER)
    assert [s.path.name for s in findings.leftovers] == [stored.blob.name]

    with setup.instance.sessions.begin() as db:
        loaded = db.get(Report, report.id)
        assert loaded is not None
        add_item(db, loaded, stored, ItemKind.MESSAGE, source_day())
    repairs = fsck.repair(setup.instance, findings)

    assert repairs.orphan_blobs == 0 and repairs.kept_referenced == 1
    assert stored.blob.name in setup.blob_names()
    setup.all_items_decrypt()
    assert fsck.check(setup.instance, now=LATER).problems == 0


def test_partial_writes_and_killed_backups_are_removed_once_settled(setup: Setup) -> None:
    store = setup.instance.store
    partial = store.temp_dir / f"{store.new_name()}.part"
    partial.write_bytes(os.urandom(4096))  # ciphertext of a request that died
    staging = store.temp_dir / "backup-k1ll3d"
    staging.mkdir()
    referenced = sorted(setup.item_blobs())[0]
    os.link(store.path(referenced), staging / referenced)  # as `dropbox backup` stages blobs
    (staging / "database.sqlite3").write_bytes(b"snapshot")
    young = fsck.check(setup.instance)
    assert young.problems == 0 and len(young.in_progress) == 2

    code, output = setup.fsck("--grace-minutes", "0")
    assert code == 1, output
    assert f"partial write:             tmp/{partial.name} (4.1 KB)" in output
    assert "leftover backup folder:    tmp/backup-k1ll3d" in output

    code, output = setup.fsck("--repair", "--grace-minutes", "0")
    assert code == 0, output
    assert "1 partial write and 1 backup leftover." in output
    assert list(store.temp_dir.iterdir()) == []
    assert store.exists(referenced)  # only the backup's second link to it went
    setup.all_items_decrypt()


def test_an_item_whose_blob_is_missing_is_reported_and_kept_until_its_blob_comes_back(
    setup: Setup, tmp_path: Path
) -> None:
    with setup.instance.sessions() as db:
        item = db.execute(select(Item).where(Item.kind == ItemKind.FILE)).scalar_one()
        designation = db.execute(select(Report.designation)).scalar_one()
    blob = setup.instance.store.path(item.blob)
    saved = tmp_path / "from-backup"
    shutil.copy(blob, saved)
    blob.unlink()  # a lost disk, a restore without its blobs

    code, output = setup.fsck("--repair", "--grace-minutes", "0")

    assert code == 1, output
    where = f'item {item.id} (file) of report "{designation}"'
    assert f"{where}: blobs/{item.blob[:2]}/{item.blob} is missing" in output
    assert "Put the blob back from a backup" in output
    assert "1 problem remains." in output
    assert item.blob in setup.item_blobs()  # the row, and its key, are kept

    shutil.copy(saved, blob)
    code, output = setup.fsck()
    assert code == 0, output
    setup.all_items_decrypt()


def test_forget_missing_removes_the_item_its_key_and_records_it_in_the_audit_log(
    setup: Setup,
) -> None:
    with setup.instance.sessions() as db:
        item = db.execute(select(Item).where(Item.kind == ItemKind.FILE)).scalar_one()
    setup.instance.store.path(item.blob).unlink()

    code, output = setup.fsck("--repair", "--forget-missing", "--grace-minutes", "0")

    assert code == 0, output
    assert "Removed 1 item whose blob is missing (recorded in the audit log)." in output
    with setup.instance.sessions() as db:
        assert db.get(Item, item.id) is None
        assert db.scalar(select(func.count()).select_from(Item)) == 2
        event = db.execute(select(AuditEvent).order_by(AuditEvent.id.desc())).scalars().first()
        assert event is not None
        assert (event.actor, event.action, event.report_id) == (
            "fsck",
            "item.forget",
            item.report_id,
        )
        assert event.detail == f"{item.id} (file): blob {item.blob} missing"
        assert audit.verify(db).ok
    setup.all_items_decrypt()
    assert setup.fsck()[0] == 0


def test_a_blob_of_the_wrong_size_is_reported_as_damaged_and_never_removed(
    setup: Setup,
) -> None:
    with setup.instance.sessions() as db:
        item = db.execute(select(Item).where(Item.kind == ItemKind.FILE)).scalar_one()
    blob = setup.instance.store.path(item.blob)
    expected = blob.stat().st_size
    os.truncate(blob, expected - 100)  # a damaged disk

    code, output = setup.fsck("--repair", "--forget-missing", "--grace-minutes", "0")

    assert code == 1, output
    assert (
        f"blobs/{item.blob[:2]}/{item.blob} has {expected - 100} bytes, {expected} expected"
        in output
    )
    assert "put it back from a backup" in output
    assert blob.exists() and item.blob in setup.item_blobs()


def test_unexpected_entries_are_reported_but_never_removed(setup: Setup) -> None:
    stray = setup.instance.store.blob_dir / "notes.txt"
    stray.write_text("an operator's note")
    odd = setup.instance.store.temp_dir / "core"
    odd.write_bytes(b"\0")

    code, output = setup.fsck("--repair", "--grace-minutes", "0")

    assert code == 1, output
    assert "unexpected, left alone:    blobs/notes.txt" in output
    assert "unexpected, left alone:    tmp/core" in output
    assert stray.exists() and odd.exists()


def test_forget_missing_without_repair_is_a_one_line_error(setup: Setup) -> None:
    code, output = setup.fsck("--forget-missing")
    assert code == 2
    assert output.strip() == "dropbox: --forget-missing only works together with --repair"


def test_a_check_alone_changes_nothing_even_when_everything_is_settled(setup: Setup) -> None:
    orphan_blob(setup)
    (setup.instance.store.temp_dir / f"{'ab' * 16}.part").write_bytes(b"x")
    before = sorted(p for p in setup.instance.config.data_dir.rglob("*") if p.is_file())

    findings = fsck.check(setup.instance, timedelta(0))

    assert len(findings.leftovers) == 2
    after = sorted(p for p in setup.instance.config.data_dir.rglob("*") if p.is_file())
    assert before == after


def test_fsck_of_a_folder_that_is_no_instance_is_a_one_line_error(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'data_dir = "nothing-here"\n{CHEAP_CRYPTO_TOML}')

    done = invoke("--config", str(config), "fsck")

    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("dropbox: ") and "dropbox init" in done.stderr
