"""The source's key is bound inside the report: an office seals nothing to a swapped key.

Replies go to `reports.source_public_key`, a column of the case server's
database, which the server hands to the reviewer app with the report.
Someone who can write that database could put their own public key there
and read every later reply. The source's messages carry the key the source
interface derived from the codename, sealed to the office; before a reply
is sealed, the reviewer app (on the officer's machine) opens that copy and
compares it with the key the server sent, and refuses on any difference,
recording a `key.mismatch` event on the case server. Here rows are changed
in the database, as its owner would, and the reviewer app's pages are
driven through /login.

A new report's source key is X-Wing (hybrid post-quantum), derived from the
codename; swapping it for another X-Wing key, or for an X25519 key (a
downgrade), is refused alike. A report made before keeps its X25519 key and
works as before (docs/security.md, 6a).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from nacl.public import PrivateKey, PublicKey
from sqlalchemy import delete, select, update
from werkzeug.test import TestResponse

from crypto import codenames, envelope
from crypto.keys import Recipient, SecretKey, public_key_from_bytes
from dropbox.instance import Instance
from dropbox.items import (
    check_source_key,
    item_context,
    message_document,
    message_type,
    open_item_bytes,
)
from dropbox.models import Item, ItemKind, ItemRead, Report
from tests.reviewer_helpers import (
    World,
    chain_intact,
    post_form,
    signed_in_client,
    source_report,
)
from tests.source_helpers import csrf_token, derived, login, old_report
from tests.substitution_helpers import events, sealed_to
from tests.substitution_helpers import swap_source_key as swap_in_database

pytestmark = pytest.mark.database_engine

MESSAGE = "The depot manager sells the fuel stock every Friday night, with the gate logs changed."
EARLIER = "Which depot is it, and since when?"
LATER = "Can you send the gate logs?"
DIFFERS = (
    "The reply was not sent: the source's key on the server does not match the one"
    " the source sent with the report. An administrator should check the server."
)
UNREADABLE = (
    "The reply was not sent: the source's key cannot be checked, because the report's"
    " first message is missing or damaged. An administrator should check the server."
)
NOT_CHECKED = "this report was made before reports carried a sealed copy of it."


@pytest.fixture(autouse=True)
def audit_chain_verifies_after_every_flow(world: World) -> Iterator[None]:
    """Whatever a test did, including refused replies, the audit chain must still verify,
    and nothing was ever sealed to a key a test swapped in."""
    INTRUDERS.clear()
    yield
    assert chain_intact(world.instance)
    assert all(sealed_to(world.instance, key) == [] for key in INTRUDERS)


@pytest.fixture
def made(source: Flask, world: World) -> Made:
    """A fraud report (handled by OIO), sent through the source interface."""
    codename, client = source_report(
        source, "fraud", MESSAGE, extra={"identity_name": "Sam Example"}
    )
    with world.instance.sessions() as db:
        rid = db.execute(select(Report.id)).scalar_one()
    return Made(codename, client, rid)


class Made:
    """A report as a test sees it: the codename, the source's signed-in client, the id."""

    def __init__(self, codename: str, client: FlaskClient, rid: str) -> None:
        self.codename, self.client, self.rid = codename, client, rid


# --- helpers ------------------------------------------------------------------------


def derived_public_key(instance: Instance, codename: str) -> bytes:
    """The public key of a new report's source: X-Wing, derived from the codename."""
    return bytes(derived(instance, codename).hybrid_key.public_key)


def derived_classical_key(instance: Instance, codename: str) -> bytes:
    """The X25519 public key the codename derives: the key of reports made before X-Wing."""
    return bytes(derived(instance, codename).secret_key.public_key)


def items(instance: Instance, rid: str) -> list[Item]:
    """The report's items in thread order."""
    with instance.sessions() as db:
        return list(
            db.execute(select(Item).where(Item.report_id == rid).order_by(Item.seq)).scalars()
        )


def document(instance: Instance, item: Item, office_key: PrivateKey) -> dict[str, Any]:
    """An item's sealed message document, opened with the office's key, as JSON."""
    data = open_item_bytes(instance, item, office_key)
    parsed: dict[str, Any] = json.loads(data.decode("utf-8"))
    return parsed


def swap_source_key(instance: Instance, rid: str, kind: str = "X-Wing") -> SecretKey:
    """Do what a database writer would: put their own public key in the report row."""
    intruder = swap_in_database(instance, rid, kind)
    INTRUDERS.append(intruder.public_key)
    return intruder


# Every key swapped in by a test: nothing may ever be sealed to one of them.
INTRUDERS: list[Recipient] = []
# The two swaps of a hybrid source key: for another hybrid key, and for an X25519 key.
SWAPS = pytest.mark.parametrize(
    "kind", ["X-Wing", "X25519"], ids=["hybrid for hybrid", "hybrid for X25519 (downgrade)"]
)


def key_events(instance: Instance) -> list[tuple[str, str, str | None]]:
    """Every `key.mismatch` event: (actor, detail, report id)."""
    return events(instance, "key.mismatch")


def reply_page(client: FlaskClient, rid: str, message: str) -> TestResponse:
    """Post the reply form of the report page, and follow to the page it lands on."""
    path = f"/reports/{rid}"
    page = client.get(path).get_data(as_text=True)
    return client.post(
        f"{path}/reply",
        data={"csrf_token": csrf_token(page), "message": message},
        follow_redirects=True,
    )


def text_of(response: TestResponse) -> str:
    """A page's text with HTML entities (apostrophes) unescaped."""
    return html.unescape(response.get_data(as_text=True))


def source_thread(source: Flask, codename: str) -> str:
    """The thread page a returning source reads, signed in with the codename."""
    client = source.test_client()
    assert login(client, codename).status_code == 302
    return html.unescape(client.get("/thread").get_data(as_text=True))


def answer(made: Made, text: str) -> None:
    """The source answers with text through the thread page."""
    answered = post_form(made.client, "/thread", "/thread/answer", {"message": text})
    assert answered.status_code == 302, answered.get_data(as_text=True)


def reseal_first_item_the_old_way(instance: Instance, rid: str, office_key: PrivateKey) -> None:
    """Make the report's first item what the code before key binding wrote: no `source_key`.

    The same item (id, kind, text, details), sealed again to the office with
    the message document the earlier code made.
    """
    first = items(instance, rid)[0]
    old = document(instance, first, office_key)
    assert "source_key" in old
    data = message_document(old["text"], old["details"])
    assert b"source_key" not in data
    with instance.store.writer() as blob:
        writer = envelope.EnvelopeWriter(
            blob,
            [office_key.public_key],
            item_context(rid, first.id),
            content_type=message_type(ItemKind.MESSAGE),
        )
        writer.write(data)
        key_block = writer.close()
        blob.commit()
    with instance.sessions.begin() as db:
        db.execute(
            update(Item)
            .where(Item.id == first.id)
            .values(blob=blob.name, key_block=key_block, size=len(data))
        )


def assert_refused_and_recorded(
    instance: Instance, rid: str, before: list[Item], blobs: set[str], detail: str
) -> None:
    """Nothing was added (no row, no blob), and one `key.mismatch` event names the source key."""
    assert [i.id for i in items(instance, rid)] == [i.id for i in before]
    assert set(instance.store.names()) == blobs
    assert all(sealed_to(instance, key) == [] for key in INTRUDERS)
    assert key_events(instance) == [("oio-officer", detail, rid)]


SWAPPED = "source key: differs from the copy sealed in the source's messages"
MISSING = "source key: the report's first item is missing or damaged"


# --- the binding --------------------------------------------------------------------


def test_the_first_item_binds_the_source_key_derived_from_the_codename(
    made: Made, world: World
) -> None:
    instance, office_key = world.instance, world.office_keys["OIO"]
    hybrid = derived_public_key(instance, made.codename)
    expected = base64.b64encode(hybrid).decode()
    first, *rest = items(instance, made.rid)
    opened = document(instance, first, office_key)
    assert first.seq == 1 and first.kind == ItemKind.MESSAGE
    assert opened["text"] == MESSAGE
    assert opened["source_key"] == expected
    # A new report's source key is X-Wing: the row holds its 1,216 bytes, and the
    # acknowledgement is sealed to it with an X-Wing entry of a version 2 key block.
    assert len(hybrid) == 1216
    with instance.sessions() as db:
        row = db.get(Report, made.rid)
        assert row is not None and row.source_public_key == hybrid
    acknowledgement = rest[-1]
    assert envelope.key_block_version(acknowledgement.key_block) == 2
    source_id = envelope.recipient_id(public_key_from_bytes(hybrid))
    assert (source_id, True) in envelope.recipient_entries(acknowledgement.key_block)
    # The identity details and the acknowledgement carry no copy; a later answer does.
    assert [i.kind for i in rest] == [ItemKind.IDENTITY, ItemKind.ACKNOWLEDGEMENT]
    assert all("source_key" not in document(instance, i, office_key) for i in rest)
    answer(made, "It started in March, when the new manager came.")
    answered = items(instance, made.rid)[-1]
    assert answered.kind == ItemKind.MESSAGE
    assert document(instance, answered, office_key)["source_key"] == expected
    with instance.sessions() as db:
        report = db.get(Report, made.rid)
        assert report is not None
        assert check_source_key(instance, db, report, office_key) == "matches"


# --- a swapped key ------------------------------------------------------------------


@SWAPS
def test_a_swapped_source_key_stops_the_reply_page_with_a_warning_and_an_audit_event(
    made: Made, reviewer: Flask, source: Flask, world: World, kind: str
) -> None:
    instance = world.instance
    officer = signed_in_client(reviewer, world, "oio")
    sent = reply_page(officer, made.rid, EARLIER)
    assert "Your message was sent to the source." in text_of(sent)
    assert "source's key" not in text_of(officer.get(f"/reports/{made.rid}"))

    swap_source_key(instance, made.rid, kind)
    before, blobs = items(instance, made.rid), set(instance.store.names())
    shown = text_of(officer.get(f"/reports/{made.rid}"))
    assert "Replies cannot be sent." in shown
    assert "does not match the one the source sent with the report" in shown
    assert key_events(instance) == []  # reading the page is no action

    refused = reply_page(officer, made.rid, LATER)
    assert refused.status_code == 200
    assert DIFFERS in text_of(refused)
    assert "Your message was sent" not in text_of(refused)
    assert_refused_and_recorded(instance, made.rid, before, blobs, SWAPPED)

    # The real source still reads what was sent before the swap, and nothing after it.
    thread = source_thread(source, made.codename)
    assert EARLIER in thread and LATER not in thread


@SWAPS
def test_moving_or_deleting_the_first_message_does_not_hide_a_swapped_key(
    made: Made, reviewer: Flask, world: World, kind: str
) -> None:
    """An answer binds the key too: the first message cannot be moved out of the way."""
    instance = world.instance
    answer(made, "The logs are kept in the office next to the gate.")
    first, *_, answered = items(instance, made.rid)
    swap_source_key(instance, made.rid, kind)
    with instance.sessions.begin() as db:
        # The answer takes the first message's place; the first message's row goes.
        db.execute(delete(ItemRead).where(ItemRead.item_id == first.id))
        db.execute(delete(Item).where(Item.id == first.id))
        db.execute(update(Item).where(Item.id == answered.id).values(seq=first.seq))
    before, blobs = items(instance, made.rid), set(instance.store.names())
    assert before[0].id == answered.id
    refused = reply_page(signed_in_client(reviewer, world, "oio"), made.rid, LATER)
    assert DIFFERS in text_of(refused)
    assert_refused_and_recorded(instance, made.rid, before, blobs, SWAPPED)


def _renumber_first_last(instance: Instance, rid: str) -> None:
    first, *_, last = items(instance, rid)
    with instance.sessions.begin() as db:
        db.execute(update(Item).where(Item.id == first.id).values(seq=last.seq + 1))


def _destroy_first_key_block(instance: Instance, rid: str) -> None:
    first = items(instance, rid)[0]
    with instance.sessions.begin() as db:
        db.execute(
            update(Item).where(Item.id == first.id).values(key_block=bytes(len(first.key_block)))
        )


def _first_passed_off_as_note(instance: Instance, rid: str) -> None:
    first = items(instance, rid)[0]
    with instance.sessions.begin() as db:
        db.execute(update(Item).where(Item.id == first.id).values(kind=ItemKind.NOTE))


@pytest.mark.parametrize(
    "substitution",
    [_renumber_first_last, _destroy_first_key_block, _first_passed_off_as_note],
    ids=["moved behind the others", "key block destroyed", "passed off as a note"],
)
def test_a_first_item_that_cannot_vouch_for_the_key_stops_the_reply(
    made: Made, reviewer: Flask, world: World, substitution: Any
) -> None:
    """Even with the row's key untouched: nothing then shows which key the source sent."""
    instance = world.instance
    substitution(instance, made.rid)
    before, blobs = items(instance, made.rid), set(instance.store.names())
    officer = signed_in_client(reviewer, world, "oio")
    assert "first message is missing or damaged" in text_of(officer.get(f"/reports/{made.rid}"))
    refused = reply_page(officer, made.rid, LATER)
    assert UNREADABLE in text_of(refused)
    assert_refused_and_recorded(instance, made.rid, before, blobs, MISSING)


# --- a report made before keys were bound -------------------------------------------


def test_a_report_made_before_keys_were_bound_can_still_be_replied_to_with_a_warning(
    made: Made, reviewer: Flask, source: Flask, world: World
) -> None:
    instance = world.instance
    reseal_first_item_the_old_way(instance, made.rid, world.office_keys["OIO"])
    officer = signed_in_client(reviewer, world, "oio")
    page = text_of(officer.get(f"/reports/{made.rid}"))
    assert MESSAGE in page  # the resealed first item reads as before
    assert f"The source's key cannot be checked: {NOT_CHECKED}" in page

    sent = text_of(reply_page(officer, made.rid, EARLIER))
    assert (
        f"Your message was sent to the source. The source's key could not be checked: {NOT_CHECKED}"
        in sent
    )
    assert "Your message was sent" in text_of(reply_page(officer, made.rid, LATER))
    assert key_events(instance) == []
    thread = source_thread(source, made.codename)
    assert EARLIER in thread and LATER in thread

    # Once the source answers, the answer's copy is checked.
    answer(made, "It is the north depot, since last spring.")
    assert "cannot be checked" not in text_of(officer.get(f"/reports/{made.rid}"))
    swap_source_key(instance, made.rid)
    assert DIFFERS in text_of(reply_page(officer, made.rid, "Thank you."))


# --- what else seals to the source, or changes its entries ---------------------------


def test_a_referred_report_is_checked_with_the_new_offices_key(
    made: Made, reviewer: Flask, source: Flask, world: World
) -> None:
    """Referral re-seals the office entries only: the source's key and entries stay."""
    instance = world.instance
    oio = signed_in_client(reviewer, world, "oio")
    assert "Your message was sent" in text_of(reply_page(oio, made.rid, EARLIER))
    referred = post_form(
        oio, f"/reports/{made.rid}", f"/reports/{made.rid}/refer", {"office": "ECO"}
    )
    assert referred.status_code == 302
    eco = signed_in_client(reviewer, world, "eco")
    assert "Your message was sent to the source." in text_of(reply_page(eco, made.rid, LATER))
    thread = source_thread(source, made.codename)
    assert EARLIER in thread and LATER in thread

    swap_source_key(instance, made.rid)
    assert DIFFERS in text_of(reply_page(eco, made.rid, "One more question."))
    assert [detail for _, detail, _ in key_events(instance)] == [SWAPPED]


def test_the_source_reads_answers_and_deletes_with_its_own_key_even_after_a_swap(
    made: Made, reviewer: Flask, source: Flask, world: World
) -> None:
    """The source interface needs no check: it uses the key it derives from the codename."""
    instance = world.instance
    officer = signed_in_client(reviewer, world, "oio")
    reply_page(officer, made.rid, EARLIER)
    reply_id = items(instance, made.rid)[-1].id
    real = public_key_from_bytes(derived_public_key(instance, made.codename))
    swap_source_key(instance, made.rid)

    client = source.test_client()
    assert login(client, made.codename).status_code == 302
    assert EARLIER in html.unescape(client.get("/thread").get_data(as_text=True))
    answered = post_form(client, "/thread", "/thread/answer", {"message": "Yes, since March."})
    assert answered.status_code == 302
    deleted = post_form(client, "/thread", f"/thread/messages/{reply_id}/delete", {})
    assert deleted.status_code == 302
    assert EARLIER not in html.unescape(client.get("/thread").get_data(as_text=True))
    with instance.sessions() as db:
        item = db.get(Item, reply_id)
        assert item is not None and item.deleted_by_source
        # The entry removed is the real source's, not the swapped-in key's: a
        # codename that leaks later no longer opens the reply; the office still does.
        assert envelope.recipient_id(real) not in envelope.recipient_ids(item.key_block)
        assert open_item_bytes(instance, item, world.office_keys["OIO"])


# --- hybrid source keys, and reports made before them ---------------------------------


def test_a_reply_to_a_new_report_is_sealed_to_the_sources_x_wing_key_and_read_with_the_codename(
    made: Made, reviewer: Flask, source: Flask, world: World
) -> None:
    """Source to office to reply to source, every source entry X-Wing; X25519 is never used."""
    instance = world.instance
    officer = signed_in_client(reviewer, world, "oio")
    assert "Your message was sent to the source." in text_of(reply_page(officer, made.rid, EARLIER))
    reply = items(instance, made.rid)[-1]
    assert reply.kind == ItemKind.REPLY
    hybrid = public_key_from_bytes(derived_public_key(instance, made.codename))
    office = world.office_keys["OIO"].public_key
    assert envelope.key_block_version(reply.key_block) == 2
    assert envelope.recipient_entries(reply.key_block) == [
        (envelope.recipient_id(office), True),
        (envelope.recipient_id(hybrid), True),
    ]
    # The source, back with the codename, reads it (with the X-Wing key: there is no other entry).
    assert EARLIER in source_thread(source, made.codename)
    # The X25519 key the codename also derives is never stored, sent nor sealed to.
    classical = PublicKey(derived_classical_key(instance, made.codename))
    assert sealed_to(instance, classical) == []
    with instance.sessions() as db:
        row = db.get(Report, made.rid)
        assert row is not None and row.source_public_key == bytes(hybrid)


def test_a_downgraded_row_does_not_make_the_source_fall_back_to_its_x25519_key(
    made: Made, reviewer: Flask, source: Flask, world: World
) -> None:
    """A database owner who puts an X25519 key in a hybrid report's row forces no switch.

    The source interface keeps reading and binding with the X-Wing key (the
    row holds not the source's own X25519 key, which nobody but the
    codename's holder knows), and the reviewer app refuses the reply.
    """
    instance, office_key = world.instance, world.office_keys["OIO"]
    officer = signed_in_client(reviewer, world, "oio")
    reply_page(officer, made.rid, EARLIER)
    swap_source_key(instance, made.rid, "X25519")

    client = source.test_client()
    assert login(client, made.codename).status_code == 302
    assert EARLIER in html.unescape(client.get("/thread").get_data(as_text=True))
    answer(Made(made.codename, client, made.rid), "The logs are in the gate office.")
    answered = items(instance, made.rid)[-1]
    bound = base64.b64decode(document(instance, answered, office_key)["source_key"])
    assert bound == derived_public_key(instance, made.codename)
    classical = PublicKey(derived_classical_key(instance, made.codename))
    assert sealed_to(instance, classical) == []

    before, blobs = items(instance, made.rid), set(instance.store.names())
    assert DIFFERS in text_of(reply_page(officer, made.rid, LATER))
    assert_refused_and_recorded(instance, made.rid, before, blobs, SWAPPED)


def test_a_report_made_with_an_x25519_source_key_works_as_before(
    reviewer: Flask, source: Flask, world: World
) -> None:
    """The source signs in and reads, answers binding X25519, officers reply: it stays X25519."""
    instance, office_key = world.instance, world.office_keys["OIO"]
    codename = codenames.generate("en")
    rid = old_report(instance, codename, MESSAGE)
    classical = derived_classical_key(instance, codename)
    classical_id = envelope.recipient_id(PublicKey(classical))
    hybrid = public_key_from_bytes(derived_public_key(instance, codename))

    officer = signed_in_client(reviewer, world, "oio")
    page = text_of(officer.get(f"/reports/{rid}"))
    assert MESSAGE in page and "source's key" not in page
    assert "Your message was sent to the source." in text_of(reply_page(officer, rid, EARLIER))
    reply = items(instance, rid)[-1]
    assert (classical_id, False) in envelope.recipient_entries(reply.key_block)

    client = source.test_client()
    assert login(client, codename).status_code == 302
    thread = html.unescape(client.get("/thread").get_data(as_text=True))
    assert "the office has received your report" in thread and EARLIER in thread
    answer(Made(codename, client, rid), "It is the north depot.")
    answered = items(instance, rid)[-1]
    assert base64.b64decode(document(instance, answered, office_key)["source_key"]) == classical
    with instance.sessions() as db:
        row = db.get(Report, rid)
        assert row is not None and row.source_public_key == classical

    assert "Your message was sent to the source." in text_of(reply_page(officer, rid, LATER))
    thread = html.unescape(client.get("/thread").get_data(as_text=True))
    assert EARLIER in thread and LATER in thread
    deleted = post_form(client, "/thread", f"/thread/messages/{reply.id}/delete", {})
    assert deleted.status_code == 302
    with instance.sessions() as db:
        gone = db.get(Item, reply.id)
        assert gone is not None and gone.deleted_by_source
        assert classical_id not in envelope.recipient_ids(gone.key_block)
        assert open_item_bytes(instance, gone, office_key)
    # The hybrid key the codename also derives was never used for this report.
    assert sealed_to(instance, hybrid) == []
    assert key_events(instance) == []


@pytest.mark.parametrize(
    "kind", ["X-Wing", "X25519"], ids=["X25519 for hybrid", "X25519 for X25519"]
)
def test_an_x25519_source_key_swapped_on_the_server_gets_no_reply(
    reviewer: Flask, world: World, kind: str
) -> None:
    """Neither another X25519 key nor a hybrid one passes for an old report's key."""
    instance = world.instance
    rid = old_report(instance, codenames.generate("en"), MESSAGE)
    swap_source_key(instance, rid, kind)
    before, blobs = items(instance, rid), set(instance.store.names())
    refused = reply_page(signed_in_client(reviewer, world, "oio"), rid, LATER)
    assert DIFFERS in text_of(refused)
    assert_refused_and_recorded(instance, rid, before, blobs, SWAPPED)
