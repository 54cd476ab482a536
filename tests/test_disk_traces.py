"""What the server's disk keeps after a source or an officer acts: no destroyed keys, no times.

Crypto-shredding (issue 11, point 2): once an officer's deletion, a referral
without a kept copy, or a source's deletion of a reply is acknowledged, the
sealed key entries it destroyed are in no file under the data directory: not
in the database, not in its write-ahead log (`-wal`) or shared memory
(`-shm`) files, not in free pages, not in a backup's leftovers. Each test
first checks that the bytes it looks for are on disk before the action, so
that the search could find them.

Times (point 5): a source makes a report with files, an officer answers, the
source answers with a file and deletes the office's message. Afterwards no
blob, no folder of the store and no session row times any of it more finely
than the day; with Redis, no session key's expiry does either.

The officer's side (issue 12): officers act through the reviewer app on
their own machine, which talks to the real case server (in this process).
The reviewer app writes nothing decrypted to its disk: a download is spooled
to a temporary file as ciphertext only (checked while the download is being
sent, and after), and no file anywhere under the temporary directory or the
server's data directory holds the plaintext.
"""

from __future__ import annotations

import base64
import os
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from nacl.public import PrivateKey
from sqlalchemy import select
from werkzeug.test import TestResponse

from crypto import envelope
from crypto.keys import KeyChain, XWingSecretKey, public_key_from_bytes
from dropbox import officers, offices
from dropbox.admin import operations, reseal
from dropbox.config import Config, CryptoSettings, LimitSettings
from dropbox.instance import Instance
from dropbox.models import Item, ItemKind, Office, Officer, Report, SourceSession
from source_interface import create_app as create_source_app
from tests import key_block_helpers
from tests.conftest import CHEAP_COST, DATABASE, reviewer_settings
from tests.reviewer_helpers import (
    World,
    add_officer_enrolled_before_x_wing,
    fresh_code,
    held_fingerprint,
    make_world,
    next_code,
    post_form,
    signed_in_client,
    source_report,
)
from tests.source_helpers import csrf_token, post_multipart
from tests.test_redis import RedisServer, redis_server
from tests.test_source_privacy import places_containing

pytestmark = pytest.mark.database_engine

__all__ = ["redis_server"]  # a fixture, used by name

MESSAGE = "The stores clerk sells the spare tyres to a garage across the road."
DAY = 86400
# Files whose times are not set back to the day (docs/security.md says what they show): the
# database files, which SQLite writes at every commit; the instance secrets, made at `init`;
# the audit anchor, rewritten after each audit event (officers' actions, never a source's).
NOT_STAMPED = frozenset(
    {
        "dropbox.sqlite3",
        "dropbox.sqlite3-wal",
        "dropbox.sqlite3-shm",
        "instance.json",
        "audit-anchor.json",
    }
)


def sealed_entries(key_block: bytes, recipient: envelope.Recipient | None = None) -> list[bytes]:
    """The sealed part of each entry of a key block (of one recipient's only, if given).

    The 8-byte recipient id in front of each is left out: it is not secret and
    recurs in every other key block of that recipient.
    """
    version = key_block[0]
    wanted = envelope.recipient_id(recipient) if recipient is not None else None
    found = [
        key_block_helpers.sealed_part(entry, version)
        for entry in key_block_helpers.entries(key_block)
        if wanted is None or key_block_helpers.recipient_of(entry, version) == wanted
    ]
    assert found, "the key block has no entry of that recipient"
    return found


def key_blocks(instance: Instance, report_id: str) -> dict[str, bytes]:
    """Every item's key block of a report, by item id."""
    with instance.sessions() as db:
        rows = db.execute(select(Item.id, Item.key_block).where(Item.report_id == report_id))
        return {item_id: key_block for item_id, key_block in rows}


def only_report_id(instance: Instance) -> str:
    with instance.sessions() as db:
        return db.execute(select(Report.id)).scalar_one()


def office_key(instance: Instance, code: str) -> envelope.Recipient:
    with instance.sessions() as db:
        office = db.get(Office, code)
        assert office is not None
        return public_key_from_bytes(office.public_key)


def on_disk(instance: Instance, needles: list[bytes]) -> list[str]:
    """Where under the data directory any of the needles is (every file, whatever its name)."""
    return places_containing(needles, [instance.config.data_dir])


def assert_found_before(instance: Instance, needles: list[bytes]) -> None:
    """The search finds the bytes while they exist: it can see the database files."""
    assert on_disk(instance, needles), "the search cannot see the database files"


# --- point 2: destroyed keys leave no copy ---------------------------------------------

# PostgreSQL keeps its files outside the data directory, and keeps dead rows and WAL
# segments there until VACUUM and recycling (docs/security.md): nothing to show here.
sqlite_only = pytest.mark.skipif(
    DATABASE != "sqlite", reason="the database's files are PostgreSQL's own (docs/security.md)"
)


@sqlite_only
def test_an_officers_deletion_leaves_no_copy_of_the_key_blocks_in_any_file(
    reviewer: Flask, source: Flask, world: World
) -> None:
    instance = world.instance
    source_report(source, "fraud", MESSAGE, [("ledger.txt", b"the ledger, page 4")])
    rid = only_report_id(instance)
    destroyed = [
        entry for block in key_blocks(instance, rid).values() for entry in sealed_entries(block)
    ]
    assert len(destroyed) >= 4  # message, file, acknowledgement: at least one entry each
    assert_found_before(instance, destroyed)
    with instance.sessions() as db:
        report = db.get(Report, rid)
        assert report is not None
        designation = report.designation

    client = signed_in_client(reviewer, world, "oio")
    path = f"/reports/{rid}/delete"
    done = post_form(client, path, path, {"confirm": designation})

    assert done.status_code == 302
    assert key_blocks(instance, rid) == {}
    assert on_disk(instance, destroyed) == []


@sqlite_only
def test_a_referral_without_a_copy_leaves_no_copy_of_the_old_offices_entries(
    reviewer: Flask, source: Flask, world: World
) -> None:
    instance = world.instance
    source_report(source, "fraud", MESSAGE, [("ledger.txt", b"the ledger, page 4")])
    rid = only_report_id(instance)
    oio = office_key(instance, "OIO")
    destroyed = [
        e for block in key_blocks(instance, rid).values() for e in sealed_entries(block, oio)
    ]
    assert_found_before(instance, destroyed)

    client = signed_in_client(reviewer, world, "oio")
    done = post_form(client, f"/reports/{rid}", f"/reports/{rid}/refer", {"office": "ECO"})

    assert done.status_code == 302
    eco = office_key(instance, "ECO")
    for block in key_blocks(instance, rid).values():
        holders = envelope.recipient_ids(block)
        assert envelope.recipient_id(eco) in holders
        assert envelope.recipient_id(oio) not in holders
    assert on_disk(instance, destroyed) == []


@sqlite_only
def test_a_sources_deletion_of_a_reply_leaves_no_copy_of_the_sources_entry(
    reviewer: Flask, source: Flask, world: World
) -> None:
    instance = world.instance
    _, source_client = source_report(source, "fraud", MESSAGE)
    rid = only_report_id(instance)
    officer = signed_in_client(reviewer, world, "oio")
    sent = post_form(
        officer, f"/reports/{rid}", f"/reports/{rid}/reply", {"message": "Which month?"}
    )
    assert sent.status_code == 302
    with instance.sessions() as db:
        reply = db.execute(
            select(Item).where(Item.report_id == rid, Item.kind == ItemKind.REPLY)
        ).scalar_one()
        reply_id, block = reply.id, reply.key_block
        report = db.get(Report, rid)
        assert report is not None
        source_public_key = public_key_from_bytes(report.source_public_key)
    destroyed = sealed_entries(block, source_public_key)
    assert_found_before(instance, destroyed)

    page = source_client.get("/thread").get_data(as_text=True)
    assert "Which month?" in page
    done = source_client.post(
        f"/thread/messages/{reply_id}/delete", data={"csrf_token": csrf_token(page)}
    )

    assert done.status_code == 302
    assert "Which month?" not in source_client.get("/thread").get_data(as_text=True)
    assert on_disk(instance, destroyed) == []


@sqlite_only
def test_a_new_passphrase_and_a_deactivation_leave_no_copy_of_the_replaced_keys(
    reviewer: Flask, world: World
) -> None:
    """The same for an officer's wrapped secret key and the office keys sealed to them."""
    instance = world.instance
    person = world.people["eco"]
    with instance.sessions() as db:
        officer = db.get(Officer, person.id)
        assert officer is not None and officer.wrapped_secret_key is not None
        old_wrapped = officer.wrapped_secret_key
        grants = [grant.sealed_office_key for grant in officer.grants]
    assert grants
    assert_found_before(instance, [old_wrapped, *grants])

    # The officer changes their passphrase in the reviewer app: it re-wraps their key on
    # their machine and the case server replaces the stored wrapped key.
    client = signed_in_client(reviewer, world, "eco")
    new = "a different long passphrase"
    changed = post_form(
        client,
        "/account",
        "/account/passphrase",
        {
            "current_passphrase": person.passphrase,
            "new_passphrase": new,
            "confirm_passphrase": new,
            "code": fresh_code(instance, person),
        },
    )
    assert changed.status_code in (200, 302), changed.get_data(as_text=True)
    with instance.sessions() as db:
        officer = db.get(Officer, person.id)
        assert officer is not None
        assert officer.wrapped_secret_key not in (None, old_wrapped), "the passphrase is the same"
    assert on_disk(instance, [old_wrapped]) == []

    with instance.sessions.begin() as db:
        officer = db.get(Officer, person.id)
        assert officer is not None
        officers.deactivate(db, officer, "test")
    assert on_disk(instance, grants) == []


@sqlite_only
def test_an_officers_new_x_wing_key_leaves_no_copy_of_the_x25519_grants_or_wrap(
    reviewer: Flask, world: World
) -> None:
    """An officer enrolled before X-Wing replaces their key: the sealed boxes are gone."""
    instance = world.instance
    person = add_officer_enrolled_before_x_wing(world, "early-bird", ["OIO", "ECO"])
    with instance.sessions() as db:
        officer = db.get(Officer, person.id)
        assert officer is not None and officer.wrapped_secret_key is not None
        replaced = [officer.wrapped_secret_key, *(g.sealed_office_key for g in officer.grants)]
    assert len(replaced) == 3
    assert_found_before(instance, replaced)
    client = signed_in_client(reviewer, world, "early-bird")
    done = post_form(
        client,
        "/account",
        "/account/key",
        {"current_passphrase": person.passphrase, "code": next_code(person)},
    )
    assert done.status_code == 302
    with instance.sessions() as db:
        officer = db.get(Officer, person.id)
        assert officer is not None and officer.public_key is not None
        assert len(officer.public_key) == 1216
    assert on_disk(instance, replaced) == []


@sqlite_only
def test_retiring_an_offices_old_key_leaves_no_copy_of_the_grants_that_held_it(
    world: World,
) -> None:
    """The grants of a chain with the old X25519 key in it are removed, and leave nothing."""
    instance = world.instance
    old = PrivateKey.generate()
    chain = KeyChain((XWingSecretKey.generate(), old))
    read_out = held_fingerprint(instance, world.people["oio"])
    with instance.sessions.begin() as db:
        office = db.get(Office, "OIO")
        assert office is not None
        office.public_key = bytes(chain.public_key)
        # Written by the test itself, so that no product line is seen sending this UPDATE
        # (tests/sql_sites.py): an autoflush would charge it to officers.get.
        db.flush()
        officer = officers.get(db, world.people["oio"].username)
        offices.grant(db, "OIO", officer, chain, "test", read_out=read_out)
        sealed = [g.sealed_office_key for g in officer.grants if g.office_code == "OIO"]
    assert_found_before(instance, sealed)
    with instance.sessions.begin() as db:
        reseal.retire_old_keys(db, "OIO", chain, CHEAP_COST, "test")
    assert on_disk(instance, sealed) == []


def test_a_backup_writes_no_copy_of_the_database_under_the_data_directory(
    source: Flask, world: World, tmp_path: Path
) -> None:
    """A killed backup leaves its folder behind: it must hold no database (so no key) then."""
    instance = world.instance
    source_report(source, "fraud", MESSAGE, [("ledger.txt", b"the ledger, page 4")])
    rid = only_report_id(instance)
    blocks = list(key_blocks(instance, rid).values())
    data_dir = instance.config.data_dir.resolve()
    written: list[str] = []
    watching = True

    def watch(event: str, args: tuple[Any, ...]) -> None:
        # Every file this process opens for writing, and every SQLite database it opens.
        if not watching:
            return
        if event == "sqlite3.connect":
            written.append(str(args[0]))
        elif event == "open" and isinstance(args[0], str | Path):
            mode = args[1] if isinstance(args[1], str) else ""
            flags = args[2] if isinstance(args[2], int) else 0
            if set(mode) & set("wax+") or flags & (os.O_WRONLY | os.O_RDWR):
                written.append(str(args[0]))

    sys.addaudithook(watch)
    try:
        operations.backup(instance, tmp_path / "backup.tar")
    finally:
        watching = False
    database = Path(str(instance.engine.url.database)).resolve()  # read, not written
    inside = [
        p
        for p in written
        if Path(p).resolve().is_relative_to(data_dir) and Path(p).resolve() != database
    ]
    assert inside == [], inside
    # The archive itself is complete: it holds every key block (as rows, base64, on PostgreSQL).
    sqlite = DATABASE == "sqlite"
    with tarfile.open(tmp_path / "backup.tar") as tar:
        member = tar.extractfile(operations.SQLITE_MEMBER if sqlite else operations.ROWS_MEMBER)
        assert member is not None
        snapshot = member.read()
    for block in blocks:
        assert (block if sqlite else base64.b64encode(block)) in snapshot
    assert list(instance.store.temp_dir.iterdir()) == []


# --- point 5: no time finer than the day ------------------------------------------------


def is_midnight(seconds: float) -> bool:
    """True for a time stamp at 00:00:00 UTC of some day."""
    return seconds == int(seconds) and int(seconds) % DAY == 0


def timed_finer_than_the_day(root: Path, allowed: frozenset[str]) -> list[str]:
    """Entries under root (folders too) whose modification time (files: or access) is not 00:00."""
    found = []
    for directory, folders, names in os.walk(root):
        for name in [*folders, *names]:
            path = Path(directory) / name
            if name in allowed:
                continue
            status = path.stat()
            times = [("mtime", status.st_mtime)]
            if name in names:
                # A folder's access time is that of the last listing (fsck, backups, this test).
                times.append(("atime", status.st_atime))
            for what, value in times:
                if not is_midnight(value):
                    found.append(f"{path.relative_to(root)} {what} {value}")
    return found


def source_visit(
    source: Flask, reviewer: Flask, world: World
) -> tuple[FlaskClient, list[str], list[str]]:
    """A source reports with files, an officer answers, the source answers and deletes it.

    Returns the source's client, every blob, and what changed in the data
    directory's own entries (its folder's time, the files made at `init`)
    during the source's steps: that must be nothing.
    """
    data_dir = world.instance.config.data_dir
    changed: list[str] = []

    def as_source(step: Callable[[], None]) -> None:
        watched = [data_dir, data_dir / "instance.json"]
        before = [p.stat().st_mtime_ns for p in watched]
        step()
        after = [p.stat().st_mtime_ns for p in watched]
        changed.extend(str(p) for p, b, a in zip(watched, before, after, strict=True) if b != a)

    made: list[FlaskClient] = []

    def report() -> None:
        files = [("a.txt", b"first file"), ("b.bin", os.urandom(70_000))]
        made.append(source_report(source, "fraud", MESSAGE, files)[1])

    as_source(report)
    client = made[0]
    rid = only_report_id(world.instance)
    # The officer's side (officers are not anonymous: their audit events carry the second).
    officer = signed_in_client(reviewer, world, "oio")
    sent = post_form(officer, f"/reports/{rid}", f"/reports/{rid}/reply", {"message": "Which day?"})
    assert sent.status_code == 302
    assert "Which day?" in officer.get(f"/reports/{rid}").get_data(as_text=True)

    def answer() -> None:
        page = client.get("/thread").get_data(as_text=True)
        assert "Which day?" in page
        answered = post_multipart(
            client,
            "/thread/answer",
            {"csrf_token": csrf_token(page), "message": "A Tuesday."},
            [("c.txt", b"the third file")],
        )
        assert answered.status_code == 302

    def delete_reply() -> None:
        with world.instance.sessions() as db:
            reply_id = db.execute(select(Item.id).where(Item.kind == ItemKind.REPLY)).scalar_one()
        page = client.get("/thread").get_data(as_text=True)
        deleted = client.post(
            f"/thread/messages/{reply_id}/delete", data={"csrf_token": csrf_token(page)}
        )
        assert deleted.status_code == 302

    as_source(answer)
    as_source(delete_reply)
    with world.instance.sessions() as db:
        blobs = list(db.execute(select(Item.blob)).scalars())
    return client, blobs, changed


def test_a_source_visit_leaves_no_time_finer_than_the_day_on_disk(
    reviewer: Flask, source: Flask, world: World, tmp_path: Path
) -> None:
    instance = world.instance
    data_dir = instance.config.data_dir

    _, blobs, changed = source_visit(source, reviewer, world)

    assert changed == []
    assert len(blobs) >= 6
    assert all(instance.store.exists(name) for name in blobs)
    timed = timed_finer_than_the_day(data_dir, NOT_STAMPED)
    assert timed == [], timed
    for name in ("blobs", "tmp"):
        assert is_midnight((data_dir / name).stat().st_mtime), name

    with instance.sessions() as db:
        expiries = list(db.execute(select(SourceSession.expires_at)).scalars())
    assert expiries
    for expires_at in expiries:
        assert expires_at == datetime(expires_at.year, expires_at.month, expires_at.day)
        assert expires_at > datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=2)

    # An operator's backup taken now: every member carries the day, and the store stays so.
    archive = tmp_path / "backup.tar"
    operations.backup(instance, archive)
    with tarfile.open(archive) as tar:
        assert all(is_midnight(member.mtime) for member in tar.getmembers())
    timed = timed_finer_than_the_day(data_dir, NOT_STAMPED)
    assert timed == [], timed


def session_token(page: TestResponse) -> str:
    """The CSRF token a page carries, without the time stamp and signature around it."""
    return csrf_token(page.get_data(as_text=True)).split(".")[0]


def test_a_sources_session_ends_at_its_exact_expiry_though_the_row_says_a_later_day(
    source: Flask, world: World
) -> None:
    interface = source.session_interface
    interface.lifetime = timedelta(seconds=2)  # type: ignore[attr-defined]
    client = source.test_client()
    page = client.get("/codename")
    assert page.status_code == 200
    with world.instance.sessions() as db:
        (row,) = db.execute(select(SourceSession)).scalars()
    assert row.expires_at.time() == datetime.min.time()
    assert row.expires_at > datetime.now() + timedelta(hours=12)
    # The session's own token: a signed token also carries the second it was signed in.
    token = session_token(page)
    form = client.get("/login")
    assert session_token(form) == token  # still the same session

    time.sleep(2.2)
    after = client.get("/login")

    assert session_token(after) != token  # a new session: the old one ended
    with world.instance.sessions() as db:
        assert db.get(SourceSession, row.id_hash) is None


# --- with Redis -------------------------------------------------------------------------

needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs Debian's redis-server"
)


@needs_redis
def test_with_redis_a_sources_session_key_expires_on_a_day_boundary(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    redis_server.client.flushall()
    config = Config(
        data_dir=tmp_path / "data",
        crypto=CryptoSettings(kdf_iterations=1, kdf_memory_kib=8),
        limits=LimitSettings(storage_uri=redis_server.url),
    )
    instance = Instance.initialise(config)
    try:
        keys: dict[str, PrivateKey] = {}
        with instance.sessions.begin() as db:
            for office in config.offices:
                _, secret_key, _, _ = offices.create(db, config, office.code, CHEAP_COST, "test")
                keys[office.code] = secret_key
        world = make_world(instance, keys)
        source = create_source_app(config, instance)
        source.config["TESTING"] = True
        reviewer = reviewer_app_for(config, instance)
        client, _, changed = source_visit(source, reviewer, world)
        assert changed == []
        assert client.get("/thread").status_code == 200  # still signed in

        source_keys = list(redis_server.client.scan_iter(match="dropbox:source:*"))
        assert source_keys
        for key in source_keys:
            expires_ms = redis_server.client.pexpiretime(key)
            assert expires_ms > 0 and expires_ms % (DAY * 1000) == 0, (key, expires_ms)
            stored = redis_server.client.hget(key, "expires")
            assert stored is not None and int(stored) == expires_ms
        # Officers are not anonymous: the case server's tokens keep their exact expiry.
        officer_keys = list(redis_server.client.scan_iter(match="dropbox:token:*"))
        assert officer_keys
        assert any(redis_server.client.pexpiretime(k) % (DAY * 1000) for k in officer_keys)
    finally:
        instance.close()


def reviewer_app_for(config: Config, instance: Instance) -> Flask:
    """The reviewer app talking to a case server over this instance, in this process."""
    import httpx

    from case_server import create_app as create_case_server
    from journalist_interface.app import create_reviewer_app

    case = create_case_server(config, instance)
    app = create_reviewer_app(reviewer_settings(config), transport=httpx.WSGITransport(app=case))
    app.config["TESTING"] = True
    return app


# --- the reviewer app writes no plaintext ------------------------------------------------

CANARY = b"Canary 5d1e: the depot ledger, page 4, shows the missing fuel."


def open_files_under(directory: Path) -> dict[str, bytes]:
    """What this process has open under `directory` (unlinked files too), read through /proc."""
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)):
            with open(f"/proc/self/fd/{fd}", "rb") as opened:
                found[target] = opened.read()
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_a_download_is_spooled_as_ciphertext_and_leaves_nothing_on_disk(
    reviewer: Flask, source: Flask, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During a download the reviewer app's spool holds the ciphertext the case server sent
    (the stored blob), never the plaintext; afterwards nothing is left in the temporary
    directory, and no file there or under the data directory holds the plaintext."""
    instance = world.instance
    content = CANARY * 2000  # more than one chunk of the envelope
    source_report(source, "fraud", MESSAGE, [("ledger.txt", content)])
    rid = only_report_id(instance)
    with instance.sessions() as db:
        item = db.execute(
            select(Item).where(Item.report_id == rid, Item.kind == ItemKind.FILE)
        ).scalar_one()
        file_id, blob = item.id, item.blob
    with instance.store.open(blob) as stored:
        ciphertext = stored.read()
    assert CANARY not in ciphertext

    spool_dir = tmp_path / "reviewer-tmp"
    spool_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool_dir))
    officer = signed_in_client(reviewer, world, "oio")
    response = officer.get(f"/reports/{rid}/files/{file_id}", buffered=False)
    try:
        assert response.status_code == 200
        assert response.headers["Content-Disposition"].startswith("attachment")
        during = open_files_under(spool_dir)
        assert during, "the download is not spooled under the temporary directory"
        for name, held in during.items():
            assert CANARY not in held, name
        assert ciphertext in during.values(), "the spool does not hold what the server sent"
        received = b"".join(response.response)  # type: ignore[arg-type]
    finally:
        response.close()
    assert received == content  # the officer's chosen download: plaintext to the browser only
    assert open_files_under(spool_dir) == {}
    assert list(spool_dir.iterdir()) == []
    assert places_containing([CANARY], [spool_dir, instance.config.data_dir]) == []
