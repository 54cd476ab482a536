"""Tampering with what is stored: every kind of item, damaged every way, found and survived.

Each case builds a fresh report holding one item of every kind, damages one
of them as an attacker with the case server's disk or database (or a
failing disk) could, then walks the real interfaces: the reviewer app's
pages as an officer signed in through /login (the reviewer app decrypts on
the officer's machine; the real case server runs behind it in-process and
serves only ciphertext), and the source's thread with the codename. In
every case:

* the report page opens (200) and says "This item is damaged" for exactly
  the damaged item(s); every other item still decrypts and shows its content;
* a damaged file's download is a clear page with status 422, never a 500,
  a trace or a byte of the file; sound files still download whole;
* each damaged item is recorded as "item.damaged" in the case server's
  audit log (the reviewer app reports what it found);
* the source's thread still opens: a damaged office message says so, the
  others still read, and the source can still delete the damaged one;
* the audit chain, the inbox and the other reports keep working (the last
  test checks them after all the others).

The page checks what it can without reading a whole file: the key block, the
body's length, its header, and the sealed name and type. The content of a
file, or of the identity details, is read only when it is downloaded or
revealed, so damage inside it (a changed byte in a chunk, chunks swapped) is
found there, before any of it is given out.

The row's kind is checked against what is sealed: a file has a name, a
message none, and a message's content type names its kind. Not covered,
because the row alone says it and nothing seals it: an item's place in the
thread (seq), its date, its author, and whether the source has deleted it;
nor can messages sealed before their kind was be told apart by kind.

The cases share one instance (module scope): offices, officers and sign-ins
cost more than a case.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from nacl.bindings import crypto_secretstream_xchacha20poly1305_ABYTES as ABYTES
from nacl.bindings import crypto_secretstream_xchacha20poly1305_HEADERBYTES as HEADERBYTES
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from crypto import codenames, envelope
from crypto.keys import public_key_from_bytes
from dropbox import offices, reports
from dropbox.config import Config, CryptoSettings
from dropbox.instance import Instance
from dropbox.items import new_id
from dropbox.models import AuditEvent, Item, ItemKind, ItemRead, Office, Report
from dropbox.store import size_text
from journalist_interface import casefile
from journalist_interface.client import CaseServerClient, InboxQuery
from source_interface.uploads import Upload
from tests import key_block_helpers
from tests.conftest import CHEAP_COST, FIGURES, PostgresServer, pinned_config, reviewer_settings
from tests.reviewer_helpers import World, chain_intact, make_world, signed_in_client
from tests.source_helpers import csrf_token, login

MESSAGE = "The depot manager sells the fuel stock every Friday night."
WHERE = "At the north depot"
IDENTITY = "Jamie Doe"
ACKNOWLEDGEMENT = "Thank you. The Office of Internal Oversight has received your report."
REPLY = "Which depot do you mean, and since when?"
NOTE = "Check the depot fuel logs for the last three months."
ANSWER = "The north depot, since last winter."
REASON = "To arrange protection for the source."  # every reveal in this module gives it
EVIDENCE = os.urandom(2 * envelope.CHUNK_SIZE + 20_000)  # three chunks, the last one short
FUEL_LOG = b"Fuel log, week 12: 4,000 litres missing.\n" * 4

DAMAGED = "This item is damaged and cannot be decrypted."
DAMAGED_FILE = "This file is damaged and cannot be decrypted."
DAMAGED_IDENTITY = "The identity details are damaged."
DAMAGED_FOR_SOURCE = "This message could not be opened: it seems to be damaged."

# The items of a fresh report, by role, in their order in the thread.
ROLES = (
    "message",  # the source's report, with details
    "identity",  # the source's name, hidden until revealed
    "file",  # the source's evidence, in three chunks
    "acknowledgement",  # the automatic receipt, sealed to the source and the office
    "reply",  # an officer's question, sealed to the source and the office
    "note",  # an internal note, sealed to the office only
    "answer",  # the returning source's message
    "answer file",  # the returning source's file, in one chunk
    "reveal",  # an officer's reason for revealing the identity, sealed to the office only
)
# One role for each kind of item. Answers are stored as the first message and
# file are (the same kinds, the same code): they get a few of the cases.
EACH_KIND = (*ROLES[:6], "reveal")
ANSWERS = ("answer", "answer file")
# One role for each way an item is opened: a message read on the page, the
# identity checked but not read, a file checked but not read, an office message
# also read by the source.
EACH_WAY = ("message", "identity", "file", "reply")
FILES = {"file": ("evidence.bin", EVIDENCE), "answer file": ("fuel-log.txt", FUEL_LOG)}
SHOWN = {  # what the page shows of each item when it is sound
    "message": MESSAGE,  # and WHERE, its detail
    "identity": "Reveal identity details",
    "file": "evidence.bin",
    "acknowledgement": ACKNOWLEDGEMENT,
    "reply": REPLY,
    "note": NOTE,
    "answer": ANSWER,
    "answer file": "fuel-log.txt",
    "reveal": REASON,
}
READ_BY_SOURCE = {"acknowledgement": ACKNOWLEDGEMENT, "reply": REPLY}
READ_LATER = {ItemKind.IDENTITY, ItemKind.FILE}  # their content is read on reveal or download
PARTNER = {  # for swaps inside one report: the item swapped with
    "message": "answer",
    "answer": "message",
    "file": "answer file",
    "answer file": "file",
    "identity": "note",
    "note": "identity",
    "acknowledgement": "reply",
    "reply": "acknowledgement",
    "reveal": "note",
}

# A body: version byte, stream header, sealed name and type, then the chunks.
HEAD = 1 + HEADERBYTES
CONTENT = HEAD + envelope.METADATA_SIZE + ABYTES
SEALED_CHUNK = envelope.CHUNK_SIZE + ABYTES
# A key block: version byte, count, then entries of a recipient id and a sealed key.
ENTRY = 8 + 32 + 8 + 48


# --- the scene: one instance, an officer signed in, a report nobody touches ---------------


@dataclass
class Fresh:
    """A report with one item of every role."""

    id: str
    codename: str
    items: dict[str, str]  # role -> item id


@dataclass
class Desk:
    """An officer's browser, signed in to the reviewer app, and the CSRF token of its session."""

    client: FlaskClient
    csrf: str


@dataclass
class Scene:
    instance: Instance
    world: World
    reviewer: Flask
    source: Flask
    oio: Desk
    # What makes the officers' items of each fresh report: the case server's own
    # API, with an OIO officer's token, as the reviewer app calls it.
    case: CaseServerClient
    roles: dict[str, str] = field(default_factory=dict)  # item id -> role, in every report
    bystander: Fresh | None = None


def sign_in(reviewer: Flask, world: World, role: str) -> Desk:
    """Sign in through the reviewer app's /login form."""
    client = signed_in_client(reviewer, world, role)
    return Desk(client, csrf_token(client.get("/account").get_data(as_text=True)))


def in_memory_if_possible(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory on tmpfs if the system has one with room, else a temporary directory.

    Each case writes a dozen blobs and commits, each synced to disk: on a busy
    disk the syncs cost more than the rest of the case, and durability is not
    what this module tests (only ciphertext is written, as anywhere else).
    """
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 512 << 20:
        return Path(tempfile.mkdtemp(prefix="dropbox-tampering-", dir=shm))
    return tmp_path_factory.mktemp("tampering")


@pytest.fixture(scope="module")
def scene(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer | None
) -> Iterator[Scene]:
    # Made here rather than with the per-test fixtures so that the cases share
    # it; on PostgreSQL the database is this module's own, dropped at the end.
    data_dir = in_memory_if_possible(tmp_path_factory)
    database_url, database = "", ""
    if postgres_server is not None:
        database = f"t_{uuid.uuid4().hex}"
        postgres_server.admin.execute(f'CREATE DATABASE "{database}"')
        database_url = postgres_server.url(database)
    config = Config(
        data_dir=data_dir / "data",
        database_url=database_url,
        crypto=CryptoSettings(kdf_iterations=1, kdf_memory_kib=8),
    )
    instance: Instance | None = None
    client: CaseServerClient | None = None
    try:
        instance = Instance.initialise(config)
        keys = {}
        with instance.sessions.begin() as db:
            for office in config.offices:
                _, keys[office.code], _, _ = offices.create(
                    db, config, office.code, CHEAP_COST, "test"
                )
        # Pinned, as an operator does after 'office create' (the reviewer app's pins too).
        instance.config = config = pinned_config(config, keys)
        world = make_world(instance, keys)

        import httpx

        from case_server import create_app as case_server_app
        from case_server import tokens
        from journalist_interface.app import create_reviewer_app
        from source_interface import create_app as source_app

        case = case_server_app(config, instance)
        reviewer = create_reviewer_app(
            reviewer_settings(config), transport=httpx.WSGITransport(app=case)
        )
        source = source_app(config, instance)
        case.config["TESTING"] = reviewer.config["TESTING"] = source.config["TESTING"] = True
        # Each case signs a source in: more often than a real source may.
        source.extensions["dropbox.limiter"].enabled = False
        client = CaseServerClient(
            "http://case-server.test",
            transport=httpx.WSGITransport(app=case),
            token=tokens.issue(instance, world.people["oio"].id),
        )
        scene = Scene(instance, world, reviewer, source, sign_in(reviewer, world, "oio"), client)
        scene.bystander = fresh_report(scene)
        yield scene
    finally:
        if client is not None:
            client.close()
        if instance is not None:
            instance.close()
        shutil.rmtree(data_dir, ignore_errors=True)
        if postgres_server is not None:
            postgres_server.admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def fresh_report(scene: Scene) -> Fresh:
    """A report with every kind of item, made as the source interface and the reviewer app do.

    The source's items by the services the source interface calls; the
    officer's reply, note and reveal reason sealed with the reviewer app's own
    sealer and stored through the case server's API.
    """
    instance = scene.instance
    codename = codenames.generate("en")
    derived = codenames.derive(
        codename, instance.secrets.codename_salt, instance.secrets.codename_cost
    )
    report_id = new_id()

    def upload(role: str) -> Upload:
        files = Upload(instance.store, report_id)
        name, data = FILES[role]
        part = files.open_file(name, "application/octet-stream")
        part.write(data)
        part.seek(0)  # what the multipart parser does at the end of a part
        return files

    new = reports.NewReport(
        lookup_id=derived.lookup_id,
        source_public_key=derived.hybrid_key.public_key,
        category="fraud",
        text=MESSAGE,
        details={"Where it happened": WHERE},
        identity={"Name": IDENTITY},
        urgent=False,
        acknowledgement=ACKNOWLEDGEMENT,
    )
    office = scene.world.office_keys["OIO"].public_key
    source = derived.hybrid_key.public_key
    with instance.sessions.begin() as db:
        reports.submit(instance, db, report_id, new, upload("file"))
    case = scene.case
    case.add_item(
        report_id, "reply", casefile.seal_text(report_id, REPLY, "reply", [office, source])
    )
    case.add_item(report_id, "note", casefile.seal_text(report_id, NOTE, "note", [office]))
    with instance.sessions.begin() as db:
        report = db.get(Report, report_id)
        assert report is not None
        reports.add_answer(instance, db, report, ANSWER, upload("answer file"))
    case.reveal(report_id, casefile.seal_text(report_id, REASON, "reveal", [office]))
    with instance.sessions() as db:
        ids = db.execute(select(Item.id).where(Item.report_id == report_id).order_by(Item.seq))
        fresh = Fresh(report_id, codename, dict(zip(ROLES, ids.scalars(), strict=True)))
    scene.roles.update({item_id: role for role, item_id in fresh.items.items()})
    return fresh


# --- ways to damage an item --------------------------------------------------------------


@dataclass
class Damage:
    """What a tampering damaged, as (report id, item id), for the office and for the source."""

    office: set[tuple[str, str]] = field(default_factory=set)
    source: set[tuple[str, str]] = field(default_factory=set)
    reports: list[Fresh] = field(default_factory=list)  # every report it touched

    def of(self, fresh: Fresh, item_id: str, source: bool = True) -> Damage:
        self.office.add((fresh.id, item_id))
        if source:
            self.source.add((fresh.id, item_id))
        if fresh not in self.reports:
            self.reports.append(fresh)
        return self


Tampering = Callable[[Scene, Fresh, str], Damage]


def row(db: Session, item_id: str) -> Item:
    item = db.get(Item, item_id)
    assert item is not None
    return item


def blob_path(scene: Scene, item_id: str) -> Path:
    with scene.instance.sessions() as db:
        return scene.instance.store.path(row(db, item_id).blob)


def final_chunk(body: bytes) -> int:
    """Where the last chunk of a body starts."""
    return CONTENT + (len(body) - CONTENT - 1) // SEALED_CHUNK * SEALED_CHUNK


def rewrite(change: Callable[[bytes], bytes]) -> Tampering:
    """Rewrite the item's blob on disk."""

    def tamper(scene: Scene, fresh: Fresh, item_id: str) -> Damage:
        path = blob_path(scene, item_id)
        path.write_bytes(change(path.read_bytes()))
        return Damage().of(fresh, item_id)

    return tamper


def flip(where: Callable[[bytes], int]) -> Tampering:
    """Change one bit of the byte at `where(body)`."""

    def change(body: bytes) -> bytes:
        changed = bytearray(body)
        changed[where(body)] ^= 0x10
        return bytes(changed)

    return rewrite(change)


def chunk(body: bytes, index: int) -> bytes:
    return body[CONTENT + index * SEALED_CHUNK : CONTENT + (index + 1) * SEALED_CHUNK]


def delete_blob(scene: Scene, fresh: Fresh, item_id: str) -> Damage:
    blob_path(scene, item_id).unlink()
    return Damage().of(fresh, item_id)


def same_role_elsewhere(scene: Scene, fresh: Fresh, item_id: str) -> tuple[Fresh, str]:
    other = fresh_report(scene)
    return other, other.items[scene.roles[item_id]]


def partner_here(scene: Scene, fresh: Fresh, item_id: str) -> tuple[Fresh, str]:
    return fresh, fresh.items[PARTNER[scene.roles[item_id]]]


def swap_with(
    partner: Callable[[Scene, Fresh, str], tuple[Fresh, str]], key_blocks_too: bool = False
) -> Tampering:
    """Swap the item's blob (and its key block) with another item's."""

    def tamper(scene: Scene, fresh: Fresh, item_id: str) -> Damage:
        other_report, other = partner(scene, fresh, item_id)
        first, second = blob_path(scene, item_id), blob_path(scene, other)
        first_body, second_body = first.read_bytes(), second.read_bytes()
        first.write_bytes(second_body)
        second.write_bytes(first_body)
        if key_blocks_too:
            with scene.instance.sessions.begin() as db:
                one, two = row(db, item_id), row(db, other)
                one.key_block, two.key_block = two.key_block, one.key_block
        return Damage().of(fresh, item_id).of(other_report, other)

    return tamper


def office_recipient(scene: Scene) -> bytes:
    with scene.instance.sessions() as db:
        office = db.get(Office, "OIO")
        assert office is not None
        return envelope.recipient_id(public_key_from_bytes(office.public_key))


def edit_key_block(change: Callable[[bytes, bytes], bytes], source_too: bool) -> Tampering:
    """Rewrite the item's key block in its row: change(key block, the office's recipient id)."""

    def tamper(scene: Scene, fresh: Fresh, item_id: str) -> Damage:
        office = office_recipient(scene)
        with scene.instance.sessions.begin() as db:
            item = row(db, item_id)
            item.key_block = change(item.key_block, office)
        return Damage().of(fresh, item_id, source=source_too)

    return tamper


def corrupt_office_key(key_block: bytes, office: bytes) -> bytes:
    """Change a byte inside the file key sealed to the office."""
    start = 2 + envelope.recipient_ids(key_block).index(office) * ENTRY
    changed = bytearray(key_block)
    changed[start + 8 + 40] ^= 0x01
    return bytes(changed)


def remove_office_entry(key_block: bytes, office: bytes) -> bytes:
    """The key block without the office's entry: the source's alone, or none at all."""
    return key_block_helpers.without(key_block, office)


def move_to_another_report(scene: Scene, fresh: Fresh, item_id: str) -> Damage:
    """Point the item's row at another report of the same office."""
    other = fresh_report(scene)
    with scene.instance.sessions.begin() as db:
        item = row(db, item_id)
        item.report_id, item.seq = other.id, 100
    damage = Damage().of(other, item_id)
    damage.reports.insert(0, fresh)  # which is left without it, and otherwise sound
    return damage


def give_a_new_id(scene: Scene, fresh: Fresh, item_id: str) -> Damage:
    other_id = new_id()
    with scene.instance.sessions.begin() as db:
        db.execute(delete(ItemRead).where(ItemRead.item_id == item_id))
        db.execute(update(Item).where(Item.id == item_id).values(id=other_id))
    scene.roles[other_id] = scene.roles[item_id]
    return Damage().of(fresh, other_id)


def relabel(kind: str) -> Tampering:
    """Change the kind the item's row claims."""

    def tamper(scene: Scene, fresh: Fresh, item_id: str) -> Damage:
        with scene.instance.sessions.begin() as db:
            row(db, item_id).kind = kind
        return Damage().of(fresh, item_id)

    return tamper


# Each: how, and whether the page finds it even in a file or the identity
# (False: only reading their content does, on download or reveal).
ON_THE_PAGE, ON_OPENING = True, False
FOR_EACH_KIND: dict[str, tuple[Tampering, bool]] = {
    "flip a byte of the stream header": (flip(lambda body: 1 + 7), ON_THE_PAGE),
    "flip a byte of the sealed name and type": (flip(lambda body: HEAD + 100), ON_THE_PAGE),
    "flip a byte of the first chunk": (flip(lambda body: CONTENT + 3), ON_OPENING),
    "drop the final chunk": (rewrite(lambda body: body[: final_chunk(body)]), ON_THE_PAGE),
    "cut the final chunk in the middle": (
        rewrite(lambda body: body[: (final_chunk(body) + len(body)) // 2]),
        ON_THE_PAGE,
    ),
    "empty the blob": (rewrite(lambda body: b""), ON_THE_PAGE),
    "delete the blob": (delete_blob, ON_THE_PAGE),
    "swap blobs with the same item of another report": (
        swap_with(same_role_elsewhere),
        ON_THE_PAGE,
    ),
    "swap blobs with another item of the report": (swap_with(partner_here), ON_THE_PAGE),
    "corrupt the file key sealed to the office": (
        edit_key_block(corrupt_office_key, source_too=False),
        ON_THE_PAGE,
    ),
    "remove the office's entry from the key block": (
        edit_key_block(remove_office_entry, source_too=False),
        ON_THE_PAGE,
    ),
    "move the row to another report": (move_to_another_report, ON_THE_PAGE),
}
FOR_ANSWERS = {
    name: FOR_EACH_KIND[name]
    for name in (
        "flip a byte of the first chunk",
        "drop the final chunk",
        "swap blobs with another item of the report",
        "remove the office's entry from the key block",
        "move the row to another report",
    )
}
FOR_EACH_WAY: dict[str, tuple[Tampering, bool]] = {
    "flip the version byte": (flip(lambda body: 0), ON_THE_PAGE),
    "flip the last byte": (flip(lambda body: len(body) - 1), ON_OPENING),
    "append a byte": (rewrite(lambda body: body + b"\0"), ON_THE_PAGE),
    "swap blob and key block with the same item of another report": (
        swap_with(same_role_elsewhere, key_blocks_too=True),
        ON_THE_PAGE,
    ),
    "swap blob and key block with another item of the report": (
        swap_with(partner_here, key_blocks_too=True),
        ON_THE_PAGE,
    ),
    "zero the key block": (
        edit_key_block(lambda block, _: bytes(len(block)), source_too=True),
        ON_THE_PAGE,
    ),
    "give the row a new id": (give_a_new_id, ON_THE_PAGE),
}
FOR_THE_FILE: dict[str, tuple[Tampering, bool]] = {
    "flip a byte of the middle chunk": (flip(lambda body: CONTENT + SEALED_CHUNK + 9), ON_OPENING),
    "swap the first two chunks": (
        rewrite(lambda body: body[:CONTENT] + chunk(body, 1) + chunk(body, 0) + chunk(body, 2)),
        ON_OPENING,
    ),
    "repeat the first chunk in place of the second": (
        rewrite(lambda body: body[:CONTENT] + chunk(body, 0) + chunk(body, 0) + chunk(body, 2)),
        ON_OPENING,
    ),
    "drop the middle chunk": (
        rewrite(lambda body: body[:CONTENT] + chunk(body, 0) + chunk(body, 2)),
        ON_THE_PAGE,
    ),
}
RELABELLINGS = [  # (role, the kind its row is given)
    ("file", ItemKind.MESSAGE),  # a file read as a message
    ("message", ItemKind.FILE),  # a message offered as a download
    ("identity", ItemKind.MESSAGE),  # identity shown without a recorded reveal
    ("message", ItemKind.IDENTITY),  # the report hidden as identity details
    ("note", ItemKind.REPLY),  # a note passed off as sent to the source
    ("reply", ItemKind.NOTE),  # a question to the source passed off as a note
    ("acknowledgement", ItemKind.REPLY),  # the automatic receipt passed off as an officer's
    ("answer file", ItemKind.IDENTITY),
    ("reveal", ItemKind.NOTE),  # the reason for a reveal passed off as a note
    ("note", ItemKind.REVEAL),  # a note passed off as the reason for a reveal
    ("note", "minutes"),  # no kind the application knows
]


# --- what must hold afterwards -------------------------------------------------------------

ENTRY_HTML = re.compile(r'<li class="entry ([^"]*)" id="entry-([0-9a-f]{32})">(.*?)</li>', re.S)
SOURCE_ENTRY_HTML = re.compile(r'<li class="entry ([^"]*)">(.*?)</li>', re.S)


def clean(response: TestResponse) -> str:
    """The page's text, once it is known to be no server error and no trace."""
    text = response.get_data(as_text=True)
    assert response.status_code < 500, text
    assert "Traceback" not in text and "DecryptionError" not in text
    return text


def items_of(scene: Scene, report_id: str) -> dict[str, tuple[str, str]]:
    """Item id -> (role, kind now), for the items the report holds now."""
    with scene.instance.sessions() as db:
        rows = db.execute(select(Item.id, Item.kind).where(Item.report_id == report_id)).all()
    return {item_id: (scene.roles[item_id], kind) for item_id, kind in rows}


def last_event(scene: Scene) -> int:
    with scene.instance.sessions() as db:
        return db.execute(select(func.max(AuditEvent.id))).scalar_one() or 0


def damaged_events(scene: Scene, since: int, report_id: str) -> set[str]:
    with scene.instance.sessions() as db:
        return set(
            db.execute(
                select(AuditEvent.detail).where(
                    AuditEvent.id > since,
                    AuditEvent.action == "item.damaged",
                    AuditEvent.report_id == report_id,
                )
            ).scalars()
        )


def check_report_page(desk: Desk, scene: Scene, report_id: str, damaged: set[str]) -> None:
    """The page opens and marks exactly `damaged`; every other item shows its content."""
    page = clean(desk.client.get(f"/reports/{report_id}"))
    entries = {item_id: (classes, body) for classes, item_id, body in ENTRY_HTML.findall(page)}
    held = items_of(scene, report_id)
    assert set(entries) == set(held)
    for item_id, (role, kind) in held.items():
        classes, body = entries[item_id]
        assert f"entry-{kind} " in classes
        if item_id in damaged:
            assert "entry-damaged" in classes and DAMAGED in body, role
            assert SHOWN[role] not in body and WHERE not in body, role
        else:
            assert "entry-damaged" not in classes and DAMAGED not in body, role
            assert SHOWN[role] in body, role
            assert (WHERE in body) == (role == "message"), role


def check_downloads(desk: Desk, scene: Scene, report_id: str, damaged: set[str]) -> None:
    """Sound files download whole; damaged ones give a clear 422 and none of their content."""
    for item_id, (role, kind) in items_of(scene, report_id).items():
        if kind != ItemKind.FILE:
            continue
        content = FILES[role][1] if role in FILES else b"\xff"
        # Each streamed response is read in full before the next request.
        response = desk.client.get(f"/reports/{report_id}/files/{item_id}")
        response.get_data()
        if item_id in damaged:
            assert response.status_code == 422, role
            assert DAMAGED_FILE in clean(response)
            assert content[:32] not in response.data and content[-32:] not in response.data
        else:
            assert response.status_code == 200 and response.data == content, role


def check_reveal(desk: Desk, scene: Scene, report_id: str, damaged: set[str]) -> None:
    """Revealing works if a sound identity item is left; if not, it says they are damaged."""
    identities = {i for i, (_, kind) in items_of(scene, report_id).items() if kind == "identity"}
    response = desk.client.post(
        f"/reports/{report_id}/identity", data={"csrf_token": desk.csrf, "reason": REASON}
    )
    # The reveal, damaged identity or not, adds the sealed reason to the thread.
    with scene.instance.sessions() as db:
        reveals = db.execute(
            select(Item.id).where(Item.report_id == report_id, Item.kind == ItemKind.REVEAL)
        ).scalars()
        scene.roles.update({i: "reveal" for i in reveals if i not in scene.roles})
    if identities - damaged:
        assert response.status_code == 200 and IDENTITY in clean(response)
    else:
        assert response.status_code == 302
        page = clean(desk.client.get(f"/reports/{report_id}"))
        assert DAMAGED_IDENTITY in page and IDENTITY not in page


def check_source_thread(scene: Scene, fresh: Fresh, damaged: set[str]) -> None:
    """The source's thread opens; office messages read or say they are damaged, and go."""
    client = scene.source.test_client()
    assert login(client, fresh.codename).status_code == 302
    page = clean(client.get("/thread"))
    entries = {}
    for _, body in SOURCE_ENTRY_HTML.findall(page):
        found = re.search(r'id="entry-([0-9a-f]{32})-title"', body)
        assert found is not None
        entries[found.group(1)] = body
    with scene.instance.sessions() as db:
        gone = set(
            db.execute(
                select(Item.id).where(Item.report_id == fresh.id, Item.deleted_by_source)
            ).scalars()
        )
    held = {i: role_kind for i, role_kind in items_of(scene, fresh.id).items() if i not in gone}
    known = set(ItemKind) - {ItemKind.NOTE, ItemKind.REVEAL}  # the offices' own items
    assert set(entries) == {i for i, (_, kind) in held.items() if kind in known}
    assert NOTE not in page and REASON not in page
    for item_id, (role, kind) in held.items():
        if kind not in READ_BY_SOURCE:
            continue
        body = entries[item_id]
        if item_id in damaged or role not in READ_BY_SOURCE:
            assert DAMAGED_FOR_SOURCE in body and REPLY not in body, role
            assert ACKNOWLEDGEMENT not in body, role
            deleted = client.post(
                f"/thread/messages/{item_id}/delete", data={"csrf_token": csrf_token(page)}
            )
            assert deleted.status_code == 302, deleted.get_data(as_text=True)
            assert f"entry-{item_id}-title" not in clean(client.get("/thread"))
        else:
            assert DAMAGED_FOR_SOURCE not in body and READ_BY_SOURCE[role] in body, role


def check_everything(desk: Desk, scene: Scene, damage: Damage, on_the_page: bool) -> None:
    since = last_event(scene)
    for fresh in damage.reports:
        held = items_of(scene, fresh.id)
        office = {i for report_id, i in damage.office if report_id == fresh.id}
        shown = office if on_the_page else {i for i in office if held[i][1] not in READ_LATER}
        check_report_page(desk, scene, fresh.id, shown)
        if any(held[i][1] == ItemKind.FILE for i in office):
            check_downloads(desk, scene, fresh.id, office)
        if any(held[i][1] == ItemKind.IDENTITY for i in office):
            check_reveal(desk, scene, fresh.id, office)
        assert damaged_events(scene, since, fresh.id) == office
        source = {i for report_id, i in damage.source if report_id == fresh.id}
        if any(held[i][1] in READ_BY_SOURCE for i in office | source):
            check_source_thread(scene, fresh, source)


# --- the cases ----------------------------------------------------------------------------


ALL_TAMPERINGS = {**FOR_EACH_KIND, **FOR_EACH_WAY, **FOR_THE_FILE}
CASES = [
    pytest.param(name, role, id=f"{name}: {role}")
    for tamperings, roles in (
        (FOR_EACH_KIND, EACH_KIND),
        (FOR_ANSWERS, ANSWERS),
        (FOR_EACH_WAY, EACH_WAY),
        (FOR_THE_FILE, ("file",)),
    )
    for name in tamperings
    for role in roles
]


@pytest.mark.parametrize(("tampering", "role"), CASES)
def test_a_damaged_item_says_so_and_everything_else_still_works(
    scene: Scene, tampering: str, role: str
) -> None:
    fresh = fresh_report(scene)
    tamper, found_on_the_page = ALL_TAMPERINGS[tampering]
    damage = tamper(scene, fresh, fresh.items[role])
    check_everything(scene.oio, scene, damage, found_on_the_page)
    FIGURES.count("tampered items found damaged, recorded and contained")


@pytest.mark.parametrize(
    ("role", "kind"), [pytest.param(r, k, id=f"{r} as {k}") for r, k in RELABELLINGS]
)
def test_an_item_relabelled_as_another_kind_is_damaged(scene: Scene, role: str, kind: str) -> None:
    """A file has a sealed name, a message none, and a message's sealed type names its kind."""
    fresh = fresh_report(scene)
    damage = relabel(kind)(scene, fresh, fresh.items[role])
    check_everything(scene.oio, scene, damage, on_the_page=True)
    check_source_thread(scene, fresh, {item_id for _, item_id in damage.source})
    FIGURES.count("tampered items found damaged, recorded and contained")


def test_the_source_can_delete_a_reply_whose_office_entry_is_gone(scene: Scene) -> None:
    """Only the source's entry is left: deleting it leaves a key block nobody can open."""
    fresh = fresh_report(scene)
    reply = fresh.items["reply"]
    damage = FOR_EACH_KIND["remove the office's entry from the key block"][0](scene, fresh, reply)
    check_everything(scene.oio, scene, damage, on_the_page=True)
    client = scene.source.test_client()
    login(client, fresh.codename)
    page = clean(client.get("/thread"))
    assert REPLY in page
    deleted = client.post(f"/thread/messages/{reply}/delete", data={"csrf_token": csrf_token(page)})
    assert deleted.status_code == 302
    assert REPLY not in clean(client.get("/thread"))
    with scene.instance.sessions() as db:
        assert not any(row(db, reply).key_block)
    check_report_page(scene.oio, scene, fresh.id, {reply})


def test_a_file_row_with_another_size_shows_the_sealed_size(scene: Scene) -> None:
    """The size is sealed in the key block: the page shows that one, and the file is sound."""
    fresh = fresh_report(scene)
    with scene.instance.sessions.begin() as db:
        row(db, fresh.items["file"]).size = 12
    check_everything(scene.oio, scene, Damage(reports=[fresh]), on_the_page=True)
    page = clean(scene.oio.client.get(f"/reports/{fresh.id}"))
    assert size_text(len(EVIDENCE)) in page and size_text(12) not in page


def test_a_report_moved_to_the_other_office_in_the_database_is_damaged_there(
    scene: Scene,
) -> None:
    """Its items stay sealed to OIO: ECO sees the report, and every item damaged."""
    fresh = fresh_report(scene)
    with scene.instance.sessions.begin() as db:
        report = db.get(Report, fresh.id)
        assert report is not None
        report.office_code = "ECO"
        designation = report.designation
    assert scene.oio.client.get(f"/reports/{fresh.id}").status_code == 404
    assert designation not in clean(scene.oio.client.get("/"))

    eco = sign_in(scene.reviewer, scene.world, "eco")
    assert designation in clean(eco.client.get("/"))
    damage = Damage()
    for item_id in fresh.items.values():
        damage.of(fresh, item_id, source=False)  # the source's copies are sealed to the source
    check_everything(eco, scene, damage, on_the_page=True)
    client = scene.source.test_client()
    login(client, fresh.codename)
    assert "Ethics and Conduct Office" in clean(client.get("/thread"))


def test_a_report_with_damaged_items_can_still_be_referred_and_deleted(scene: Scene) -> None:
    fresh = fresh_report(scene)
    note, evidence = fresh.items["note"], fresh.items["file"]
    FOR_EACH_KIND["corrupt the file key sealed to the office"][0](scene, fresh, note)
    delete_blob(scene, fresh, evidence)
    since = last_event(scene)
    referred = scene.oio.client.post(
        f"/reports/{fresh.id}/refer", data={"csrf_token": scene.oio.csrf, "office": "ECO"}
    )
    assert referred.status_code == 302
    # The note's key could not be re-sealed to ECO: recorded; the body of the file is
    # not needed to re-seal its key, so that damage is found when ECO reads it.
    assert damaged_events(scene, since, fresh.id) == {note}

    eco = sign_in(scene.reviewer, scene.world, "eco")
    check_everything(eco, scene, Damage().of(fresh, note).of(fresh, evidence), on_the_page=True)
    with scene.instance.sessions() as db:
        report = db.get(Report, fresh.id)
        assert report is not None and report.office_code == "ECO"
        designation = report.designation
        blobs = list(db.execute(select(Item.blob).where(Item.report_id == fresh.id)).scalars())
    deleted = eco.client.post(
        f"/reports/{fresh.id}/delete", data={"csrf_token": eco.csrf, "confirm": designation}
    )
    assert deleted.status_code == 302 and designation not in clean(eco.client.get("/"))
    with scene.instance.sessions() as db:
        assert db.get(Report, fresh.id) is None
    assert len(blobs) == len(ROLES)
    assert not any(scene.instance.store.exists(name) for name in blobs)


def test_the_inbox_the_untouched_report_and_the_audit_chain_survive_it_all(
    scene: Scene,
) -> None:
    """Run last: after every case above, all that was not touched works in full."""
    assert scene.bystander is not None
    bystander = scene.bystander
    check_everything(scene.oio, scene, Damage(reports=[bystander]), on_the_page=True)
    check_downloads(scene.oio, scene, bystander.id, set())
    check_reveal(scene.oio, scene, bystander.id, set())
    check_source_thread(scene, bystander, set())
    with scene.instance.sessions() as db:
        total = db.execute(
            select(func.count()).select_from(Report).where(Report.office_code == "OIO")
        ).scalar_one()
    assert re.search(rf"\b{total} reports?\b", clean(scene.oio.client.get("/")))
    assert scene.case.inbox(InboxQuery()).total == total
    assert chain_intact(scene.instance)
