"""Casework hardening (issue 11): a reveal's reason is case content, and a kept copy is honest.

Point 10: the reason an officer gives for revealing the source's identity is
sealed to the offices as a `reveal` item of the thread; no table, no file of
the data directory and no audit event holds it in clear, and the source
never sees it. Point 11: after a referral with a copy kept, what is added
later is "not shared" with the old office, not "damaged", and writes no
`item.damaged` event; an item the copy did hold that loses its entry is
still damage.

Since issue 12 the reason is sealed by the reviewer app on the officer's
machine and the case server stores only its ciphertext; every flow here
goes through the reviewer app's pages (signed in through /login), with the
real case server behind it in-process.
"""

from __future__ import annotations

import logging
import re
import uuid
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import MetaData, select

from crypto import envelope
from crypto.keys import public_key_from_bytes
from dropbox.instance import Instance
from dropbox.models import AuditEvent, Item, ItemKind, Office, Report
from tests import key_block_helpers
from tests.conftest import database_files
from tests.reviewer_helpers import (
    World,
    chain_intact,
    post_form,
    signed_in_client,
    source_report,
)
from tests.source_helpers import csrf_token, login, post_multipart

pytestmark = pytest.mark.database_engine

MESSAGE = "The depot manager sells the fuel stock every Friday night."
EVIDENCE = b"Fuel log, week 12: 4,000 litres missing.\n"
ANSWER = "It has gone on since last winter."
LATE_FILE = b"Photographs of the tanker, week 14.\n"
REPLY = "Thank you. Which tanker company collects it?"
NOTE = "Ask the depot for the gate log of week 14."
NOT_SHARED = "Not shared with your office"
DAMAGED = "This item is damaged and cannot be decrypted."
ENTRY_HTML = re.compile(r'<li class="entry ([^"]*)" id="entry-([0-9a-f]{32})">(.*?)</li>', re.S)


def unique_reason() -> str:
    """A reason no other text of the test can contain by chance."""
    return f"To arrange interim protection, case marker {uuid.uuid4().hex}."


def only_report(instance: Instance) -> str:
    with instance.sessions() as db:
        return db.execute(select(Report.id)).scalar_one()


def entries(client: FlaskClient, report_id: str) -> dict[str, tuple[str, str]]:
    """Item id -> (the entry's classes, its HTML) on the report page."""
    page = client.get(f"/reports/{report_id}")
    assert page.status_code == 200, page.get_data(as_text=True)
    found = ENTRY_HTML.findall(page.get_data(as_text=True))
    return {item_id: (classes, body) for classes, item_id, body in found}


def item_ids(instance: Instance, report_id: str, *kinds: str) -> list[str]:
    with instance.sessions() as db:
        return list(
            db.execute(
                select(Item.id)
                .where(Item.report_id == report_id, Item.kind.in_(kinds))
                .order_by(Item.seq)
            ).scalars()
        )


def damage_events(instance: Instance) -> list[str]:
    with instance.sessions() as db:
        return list(
            db.execute(
                select(AuditEvent.detail).where(AuditEvent.action == "item.damaged")
            ).scalars()
        )


def reveal(client: FlaskClient, report_id: str, reason: str) -> str:
    """Reveal through the form; the page shown after it."""
    page = f"/reports/{report_id}"
    revealed = post_form(client, page, f"{page}/identity", {"reason": reason})
    assert revealed.status_code == 200, revealed.get_data(as_text=True)
    return revealed.get_data(as_text=True)


# --- point 10: the reason for a reveal -------------------------------------------------


def every_stored_value(instance: Instance) -> list[bytes]:
    """Every value of every column of every table of the database, as bytes."""
    values = []
    with instance.sessions() as db:
        # Reflected, not the models: a table no model names is searched too.
        tables = MetaData()
        tables.reflect(db.get_bind())
        assert "audit_events" in tables.tables and "items" in tables.tables
        for table in tables.sorted_tables:
            for row in db.execute(select(table)):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        values.append(bytes(value))
                    elif value is not None:
                        values.append(str(value).encode("utf-8"))
    return values


def files_holding(roots: list[Path], needle: bytes) -> list[Path]:
    """Every file under the roots whose bytes contain the needle."""
    return [
        path
        for root in roots
        for path in root.rglob("*")
        if path.is_file() and needle in path.read_bytes()
    ]


def test_a_reveal_reason_is_stored_nowhere_in_clear_yet_the_office_reads_it_in_the_thread(
    reviewer: Flask, source: Flask, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _, source_client = source_report(source, "fraud", MESSAGE, extra={"identity_name": "Jamie Doe"})
    rid = only_report(world.instance)
    oio = signed_in_client(reviewer, world, "oio")
    reason = unique_reason()
    shown = reveal(oio, rid, reason)
    assert "Jamie Doe" in shown

    # Nowhere in clear: no column of any table, no file of the data directory
    # (database, its journal or WAL, blobs), no database server file, no log.
    marker = reason.encode("utf-8")
    assert not [value for value in every_stored_value(world.instance) if marker in value]
    roots = [world.instance.config.data_dir, *database_files()]
    assert files_holding(roots, marker) == []
    assert reason not in caplog.text

    # In the thread, to the office: who revealed, and why.
    (reveal_id,) = item_ids(world.instance, rid, ItemKind.REVEAL)
    classes, body = entries(oio, rid)[reveal_id]
    assert "entry-reveal" in classes and "entry-damaged" not in classes
    assert f"Identity revealed by {world.people['oio'].username}:" in body and reason in body

    # In the audit log: that it happened, by whom, in which report; not why.
    with world.instance.sessions() as db:
        event = db.execute(
            select(AuditEvent).where(AuditEvent.action == "identity.reveal")
        ).scalar_one()
        assert (event.actor, event.report_id, event.detail) == (
            world.people["oio"].username,
            rid,
            reveal_id,
        )
    admin = signed_in_client(reviewer, world, "admin")
    audit_page = admin.get("/admin/audit")
    assert audit_page.status_code == 200 and "identity.reveal" in audit_page.get_data(as_text=True)
    assert reason not in audit_page.get_data(as_text=True)

    # Never to the source.
    thread = source_client.get("/thread")
    assert thread.status_code == 200
    assert reason not in thread.get_data(as_text=True)
    assert reveal_id not in thread.get_data(as_text=True)
    assert chain_intact(world.instance)


def test_a_reveal_reason_follows_a_referral_and_dies_with_the_report(
    reviewer: Flask, source: Flask, world: World
) -> None:
    source_report(source, "fraud", MESSAGE, extra={"identity_name": "Jamie Doe"})
    rid = only_report(world.instance)
    oio = signed_in_client(reviewer, world, "oio")
    reason = unique_reason()
    reveal(oio, rid, reason)
    (reveal_id,) = item_ids(world.instance, rid, ItemKind.REVEAL)
    referred = post_form(oio, f"/reports/{rid}", f"/reports/{rid}/refer", {"office": "ECO"})
    assert referred.status_code == 302

    eco = signed_in_client(reviewer, world, "eco")
    _, body = entries(eco, rid)[reveal_id]
    assert reason in body and DAMAGED not in body
    with world.instance.sessions() as db:
        item = db.get(Item, reveal_id)
        office = db.get(Office, "OIO")
        assert item is not None and office is not None
        held_by = envelope.recipient_ids(item.key_block)
        blob = item.blob
    assert envelope.recipient_id(public_key_from_bytes(office.public_key)) not in held_by
    assert world.instance.store.exists(blob)

    with world.instance.sessions() as db:
        found = db.get(Report, rid)
        assert found is not None
        designation = found.designation
    confirm = f"/reports/{rid}/delete"
    deleted = post_form(eco, confirm, confirm, {"confirm": designation})
    assert deleted.status_code == 302
    with world.instance.sessions() as db:
        assert db.get(Item, reveal_id) is None
    assert not world.instance.store.exists(blob)


def test_an_office_revealing_through_its_kept_copy_and_the_handling_office_both_read_why(
    reviewer: Flask, source: Flask, world: World
) -> None:
    source_report(source, "fraud", MESSAGE, extra={"identity_name": "Jamie Doe"})
    rid = only_report(world.instance)
    oio = signed_in_client(reviewer, world, "oio")
    post_form(
        oio, f"/reports/{rid}", f"/reports/{rid}/refer", {"office": "ECO", "keep_copy": "yes"}
    )
    reason = unique_reason()
    assert "Jamie Doe" in reveal(oio, rid, reason)
    (reveal_id,) = item_ids(world.instance, rid, ItemKind.REVEAL)
    for client in (oio, signed_in_client(reviewer, world, "eco")):
        classes, body = entries(client, rid)[reveal_id]
        assert reason in body and "entry-damaged" not in classes and NOT_SHARED not in body
    assert damage_events(world.instance) == []


# --- point 11: a kept copy after the referral --------------------------------------------


def test_what_is_added_after_a_referral_is_not_shared_with_the_kept_copy_and_is_no_damage(
    reviewer: Flask, source: Flask, world: World
) -> None:
    codename, _ = source_report(source, "fraud", MESSAGE, [("fuel-log.txt", EVIDENCE)])
    rid = only_report(world.instance)
    oio = signed_in_client(reviewer, world, "oio")
    before = set(item_ids(world.instance, rid, *ItemKind))
    referred = post_form(
        oio, f"/reports/{rid}", f"/reports/{rid}/refer", {"office": "ECO", "keep_copy": "yes"}
    )
    assert referred.status_code == 302

    # The source answers with text and a file; ECO replies and writes a note.
    returning = source.test_client()
    assert login(returning, codename).status_code == 302
    page = returning.get("/thread").get_data(as_text=True)
    answered = post_multipart(
        returning,
        "/thread/answer",
        {"csrf_token": csrf_token(page), "message": ANSWER},
        [("tanker.txt", LATE_FILE)],
    )
    assert answered.status_code == 302
    eco = signed_in_client(reviewer, world, "eco")
    post_form(eco, f"/reports/{rid}", f"/reports/{rid}/reply", {"message": REPLY})
    post_form(eco, f"/reports/{rid}", f"/reports/{rid}/notes", {"text": NOTE})
    later = set(item_ids(world.instance, rid, *ItemKind)) - before
    assert len(later) == 4
    (old_file,) = set(item_ids(world.instance, rid, ItemKind.FILE)) & before
    (new_file,) = set(item_ids(world.instance, rid, ItemKind.FILE)) & later

    # The old office: what it had still reads; what came later says it is not shared.
    shown = entries(oio, rid)
    assert set(shown) == before | later
    for item_id in later:
        classes, body = shown[item_id]
        assert "entry-not-shared" in classes and NOT_SHARED in body
        assert "entry-damaged" not in classes and DAMAGED not in body
        for content in (ANSWER, REPLY, NOTE, "tanker.txt"):
            assert content not in body
    for item_id in before:
        classes, body = shown[item_id]
        assert "entry-not-shared" not in classes and "entry-damaged" not in classes
    (first_message,) = set(item_ids(world.instance, rid, ItemKind.MESSAGE)) & before
    assert MESSAGE in shown[first_message][1]
    assert oio.get(f"/reports/{rid}/files/{old_file}").data == EVIDENCE
    refused = oio.get(f"/reports/{rid}/files/{new_file}")
    assert refused.status_code == 403
    assert "not shared with your office" in refused.get_data(as_text=True)
    assert LATE_FILE not in refused.data

    assert damage_events(world.instance) == []

    # The office handling it reads everything.
    shown = entries(eco, rid)
    for item_id in before | later:
        classes, body = shown[item_id]
        assert "entry-not-shared" not in classes and "entry-damaged" not in classes
    page_text = "".join(body for _, body in shown.values())
    for content in (MESSAGE, ANSWER, REPLY, NOTE, "tanker.txt", "fuel-log.txt"):
        assert content in page_text
    assert eco.get(f"/reports/{rid}/files/{new_file}").data == LATE_FILE
    assert eco.get(f"/reports/{rid}/files/{old_file}").data == EVIDENCE
    assert damage_events(world.instance) == []

    # Referred back, the old office is given every item again.
    post_form(eco, f"/reports/{rid}", f"/reports/{rid}/refer", {"office": "OIO"})
    shown = entries(oio, rid)
    assert not [c for c, _ in shown.values() if "entry-not-shared" in c or "entry-damaged" in c]
    assert oio.get(f"/reports/{rid}/files/{new_file}").data == LATE_FILE
    assert damage_events(world.instance) == []
    assert chain_intact(world.instance)


def test_an_item_the_kept_copy_held_that_loses_its_entry_is_damage_not_unshared(
    reviewer: Flask, source: Flask, world: World
) -> None:
    """The referral says up to which item the copy holds: before it, a missing entry is damage."""
    source_report(source, "fraud", MESSAGE)
    rid = only_report(world.instance)
    oio = signed_in_client(reviewer, world, "oio")
    post_form(
        oio, f"/reports/{rid}", f"/reports/{rid}/refer", {"office": "ECO", "keep_copy": "yes"}
    )
    (message,) = item_ids(world.instance, rid, ItemKind.MESSAGE)
    oio_id = envelope.recipient_id(world.office_keys["OIO"].public_key)
    with world.instance.sessions.begin() as db:
        item = db.get(Item, message)
        assert item is not None
        # As someone with the database could: the copy's entry taken out of an old item.
        item.key_block = key_block_helpers.without(item.key_block, oio_id)
    classes, body = entries(oio, rid)[message]
    assert "entry-damaged" in classes and DAMAGED in body and NOT_SHARED not in body
    assert damage_events(world.instance) == [message]
    _, body = entries(signed_in_client(reviewer, world, "eco"), rid)[message]
    assert MESSAGE in body
