"""The case server's report routes, through journalist_interface/client.py against the real app.

Nothing here decrypts on the server: the tests hold the office keys (as a
reviewer app would after opening its grants), seal what officers write and
open what the server sends, and check what the server stores, refuses and
records in the audit log, and who may do what (the access matrix).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from nacl.public import PrivateKey
from sqlalchemy import select

from case_server.wire import MAX_REQUEST_BYTES, REFERRAL_BYTES_PER_ITEM
from crypto import envelope
from dropbox import api_schema as schema
from dropbox.api_schema import dump
from dropbox.instance import Instance
from dropbox.items import item_context, read_message_document
from dropbox.models import Item, ItemKind, Report, ReportShare
from journalist_interface.client import (
    ApiError,
    InboxQuery,
    NewItem,
    ReportBundle,
    SealedItem,
)
from tests.case_helpers import (
    CaseWorld,
    audit_events,
    make_case_world,
    open_item,
    recording_client,
    seal,
    submit,
)

pytestmark = pytest.mark.database_engine

MESSAGE = "Someone sells the fuel stock every Friday night from the north depot."
ECO_MESSAGE = "My manager moved me to night shifts after I spoke to the auditors."


@pytest.fixture
def case_world(instance: Instance, office_keys: dict[str, PrivateKey]) -> Iterator[CaseWorld]:
    world = make_case_world(instance, office_keys)
    yield world
    world.close()


def _item(bundle: ReportBundle, kind: str) -> SealedItem:
    return next(i for i in bundle.items if i.kind == kind)


def _text(report_id: str, item: SealedItem, key: PrivateKey) -> tuple[str, dict[str, str]]:
    assert item.body is not None
    _, data = open_item(report_id, item.id, item.key_block, item.body, key)
    return read_message_document(data)


def _with_everything(world: CaseWorld, category: str = "retaliation") -> str:
    return submit(
        world,
        category,
        ECO_MESSAGE,
        files=[("evidence.txt", b"the roster of the night shifts")],
        identity={"identity_name": "Ada Example", "identity_contact": "ada@example.org"},
    )


def _referral_blocks(
    world: CaseWorld, bundle: ReportBundle, to: str, keep_copy: bool
) -> dict[str, bytes]:
    """Every item's key block re-sealed to `to` (and without the referring office unless kept)."""
    held = world.office_keys[bundle.office]
    out = {}
    for item in bundle.items:
        block = envelope.add_recipient(item.key_block, held, world.office_public(to))
        if not keep_copy:
            block = envelope.remove_recipient(block, held.public_key)
        out[item.id] = block
    return out


# --- the inbox ------------------------------------------------------------------------


def test_inbox_lists_only_the_offices_reports_with_assignees(case_world: CaseWorld) -> None:
    oio_report = submit(case_world, "fraud", MESSAGE)
    eco_report = submit(case_world, "retaliation", ECO_MESSAGE)

    eco_page = case_world.client("eco").inbox(InboxQuery())
    assert [r.id for r in eco_page.rows] == [eco_report]
    assert eco_page.total == 1 and eco_page.page == 1 and eco_page.pages == 1
    row = eco_page.rows[0]
    assert row.office == "ECO" and row.category == "retaliation" and row.unread >= 1
    assert {p.display_name for p in eco_page.assignees} == {"eco-officer", "eco-second"}

    oio_page = case_world.client("oio").inbox(InboxQuery(category="fraud"))
    assert [r.id for r in oio_page.rows] == [oio_report]
    assert case_world.client("oio").inbox(InboxQuery(status="closed")).rows == []
    assert case_world.client("admin").inbox(InboxQuery()).rows == []


def test_inbox_refuses_unknown_filters(case_world: CaseWorld) -> None:
    with case_world.http("eco") as http:
        for params in ({"status": "lost"}, {"sort": "name"}, {"page": "0"}, {"mine": "maybe"}):
            response = http.get("/reports", params=params)
            assert response.status_code == 400, params
            assert "error" in response.json()


# --- reading a report -----------------------------------------------------------------


def test_report_bundle_serves_ciphertext_and_records_the_reading(case_world: CaseWorld) -> None:
    report_id = _with_everything(case_world)
    eco = case_world.client("eco")
    key = case_world.office_keys["ECO"]

    bundle = eco.report(report_id)

    assert bundle.id == report_id and bundle.office == "ECO" and bundle.handling
    assert bundle.reading_office == "ECO" and bundle.shared_up_to is None
    assert bundle.shared_with == [] and "acknowledged" in bundle.next_statuses
    assert {p.display_name for p in bundle.assignees} == {"eco-officer", "eco-second"}
    assert [c.to_status for c in bundle.status_changes] == ["received"]
    kinds = [i.kind for i in bundle.items]
    assert kinds == ["message", "identity", "file", "acknowledgement"]
    assert all(i.unread for i in bundle.items)
    assert _text(report_id, _item(bundle, "message"), key)[0] == ECO_MESSAGE
    ack = _item(bundle, "acknowledgement")
    assert ack.body is not None and len(ack.body) == ack.body_length
    for kind in ("file", "identity"):
        item = _item(bundle, kind)
        assert item.body is None and item.head is not None
        assert len(item.head) == envelope.HEAD_BYTES
        contents = envelope.read_head(
            item.key_block,
            item.head,
            item.body_length,
            key,
            open_context(report_id, item.id),
        )
        assert contents.size == item.size
    assert (
        envelope.read_head(
            _item(bundle, "file").key_block,
            _item(bundle, "file").head or b"",
            _item(bundle, "file").body_length,
            key,
            open_context(report_id, _item(bundle, "file").id),
        ).name
        == "evidence.txt"
    )

    again = eco.report(report_id)
    assert not any(i.unread for i in again.items)
    assert case_world.client("eco2").report(report_id).items[0].unread  # read marks are per officer
    reads = [e for e in audit_events(case_world.instance, report_id) if e[1] == "report.read"]
    assert reads == [
        ("eco-officer", "report.read", ""),
        ("eco-officer", "report.read", ""),
        ("eco-second", "report.read", ""),
    ]


def open_context(report_id: str, item_id: str) -> bytes:

    return item_context(report_id, item_id)


def test_file_body_streams_the_stored_ciphertext_and_records_the_download(
    case_world: CaseWorld,
) -> None:
    report_id = _with_everything(case_world)
    eco = case_world.client("eco")
    file_item = _item(eco.report(report_id), "file")

    with eco.item_body(report_id, file_item.id) as response:
        assert response.headers["Content-Type"] == "application/octet-stream"
        body = response.read()
    assert len(body) == file_item.body_length
    contents, data = open_item(
        report_id, file_item.id, file_item.key_block, body, case_world.office_keys["ECO"]
    )
    assert data == b"the roster of the night shifts" and contents.name == "evidence.txt"
    assert ("eco-officer", "file.download", file_item.id) in audit_events(
        case_world.instance, report_id
    )

    message = _item(eco.report(report_id), "message")
    with pytest.raises(ApiError) as refused, eco.item_body(report_id, message.id):
        pass
    assert refused.value.status == 404
    with pytest.raises(ApiError) as unknown, eco.item_body(report_id, "0" * 32):
        pass
    assert unknown.value.status == 404


# --- replies and notes ----------------------------------------------------------------


def test_reply_and_note_are_stored_as_sealed_and_recorded(case_world: CaseWorld) -> None:
    report_id = submit(case_world, "retaliation", ECO_MESSAGE)
    eco = case_world.client("eco")
    bundle = eco.report(report_id)
    office = case_world.office_public("ECO")
    from crypto.keys import public_key_from_bytes

    source = public_key_from_bytes(bundle.source_public_key)
    reply = seal(report_id, "Thank you; we are looking into it.", ItemKind.REPLY, [office, source])
    note = seal(report_id, "Check the rota of March.", ItemKind.NOTE, [office])

    reply_seq = eco.add_item(report_id, "reply", reply)
    note_seq = eco.add_item(report_id, "note", note)

    assert note_seq == reply_seq + 1
    after = eco.report(report_id)
    stored_reply = next(i for i in after.items if i.id == reply.item_id)
    assert stored_reply.kind == "reply" and stored_reply.author == "eco-officer"
    assert stored_reply.body == reply.body and stored_reply.key_block == reply.key_block
    assert not stored_reply.unread  # read by its author
    key = case_world.office_keys["ECO"]
    assert _text(report_id, stored_reply, key)[0] == "Thank you; we are looking into it."
    stored_note = next(i for i in after.items if i.id == note.item_id)
    assert _text(report_id, stored_note, key)[0] == "Check the rota of March."
    assert after.last_activity is not None and after.last_activity > bundle.last_activity  # type: ignore[operator]
    events = audit_events(case_world.instance, report_id)
    assert ("eco-officer", "report.reply", reply.item_id) in events
    assert ("eco-officer", "report.note", note.item_id) in events


def test_items_that_do_not_fit_are_refused(case_world: CaseWorld) -> None:
    report_id = submit(case_world, "retaliation", ECO_MESSAGE)
    eco = case_world.client("eco")
    office = case_world.office_public("ECO")
    good = seal(report_id, "A note.", ItemKind.NOTE, [office])

    def refused(kind: str, item: NewItem) -> ApiError:
        with pytest.raises(ApiError) as caught:
            eco.add_item(report_id, kind, item)
        return caught.value

    assert refused("reveal", good).status == 400
    assert refused("message", good).status == 400
    assert refused("note", replace(good, item_id="not-an-id")).status == 400
    assert refused("note", replace(good, size=good.size + 1)).status == 400
    assert refused("note", replace(good, size=-1)).status == 400
    assert refused("note", replace(good, key_block=b"\x07junk")).status == 400
    # Sealed to the other office only: the handling office could not read it.
    stray = seal(report_id, "A note.", ItemKind.NOTE, [case_world.office_public("OIO")])
    assert refused("note", stray).status == 400
    # A reply must reach the source too.
    assert refused("reply", seal(report_id, "Hi.", ItemKind.REPLY, [office])).status == 400

    eco.add_item(report_id, "note", good)
    again = refused("note", good)
    assert again.status == 409 and "new id" in again.message
    with case_world.http("eco") as http:
        response = http.post(f"/reports/{report_id}/items", content=b"{not json")
        assert response.status_code == 400
        response = http.post(
            f"/reports/{report_id}/items", json={**dump(good), "kind": "note", "body": "%%%"}
        )
        assert response.status_code == 400 and "body" in response.json()["error"]
    notes = [i for i in eco.report(report_id).items if i.kind == "note"]
    assert len(notes) == 1


# --- identity reveal ------------------------------------------------------------------


def test_identity_only_after_a_reason_is_stored_and_recorded(case_world: CaseWorld) -> None:
    report_id = _with_everything(case_world)
    eco, key = case_world.client("eco"), case_world.office_keys["ECO"]
    identity = _item(eco.report(report_id), "identity")
    assert identity.body is None  # never with the report

    reason = seal(report_id, "The source asked to be contacted.", ItemKind.REVEAL, [key.public_key])
    released = eco.reveal(report_id, reason)

    assert [i.id for i in released] == [identity.id]
    assert released[0].body is not None
    details = _text(report_id, released[0], key)[1]
    assert set(details.values()) == {"Ada Example", "ada@example.org"}
    bundle = eco.report(report_id)
    stored = next(i for i in bundle.items if i.id == reason.item_id)
    assert stored.kind == "reveal" and stored.body == reason.body
    assert _text(report_id, stored, key)[0] == "The source asked to be contacted."
    assert _item(bundle, "identity").body is None  # the report still never carries it
    events = audit_events(case_world.instance, report_id)
    assert ("eco-officer", "identity.reveal", reason.item_id) in events


def test_reveal_without_identity_or_with_a_bad_reason_is_refused(case_world: CaseWorld) -> None:
    plain = submit(case_world, "retaliation", ECO_MESSAGE)
    eco, key = case_world.client("eco"), case_world.office_keys["ECO"]
    with pytest.raises(ApiError) as none:
        eco.reveal(plain, seal(plain, "Needed for the case.", ItemKind.REVEAL, [key.public_key]))
    assert none.value.status == 404

    report_id = _with_everything(case_world)
    stray = seal(
        report_id, "Needed for the case.", ItemKind.REVEAL, [case_world.office_public("OIO")]
    )
    with pytest.raises(ApiError) as refused:
        eco.reveal(report_id, stray)
    assert refused.value.status == 400
    actions = [e[1] for e in audit_events(case_world.instance, report_id)]
    assert "identity.reveal" not in actions


# --- assignment and status ------------------------------------------------------------


def test_assignment_to_an_officer_of_the_office_or_nobody(case_world: CaseWorld) -> None:
    report_id = submit(case_world, "retaliation", ECO_MESSAGE)
    eco = case_world.client("eco")
    eco2_id = case_world.people["eco2"].id

    eco.assign(report_id, eco2_id)
    bundle = eco.report(report_id)
    assert bundle.assignee_id == eco2_id and bundle.assignee == "eco-second"
    mine = case_world.client("eco2").inbox(InboxQuery(mine=True))
    assert [r.id for r in mine.rows] == [report_id]

    for outsider in ("oio", "gone", "admin"):
        with pytest.raises(ApiError) as refused:
            eco.assign(report_id, case_world.people[outsider].id)
        assert refused.value.status == 400
    eco.assign(report_id, None)
    assert eco.report(report_id).assignee_id is None
    details = [
        e[2] for e in audit_events(case_world.instance, report_id) if e[1] == "report.assign"
    ]
    assert details == [str(eco2_id), "nobody"]


def test_status_follows_the_workflow(case_world: CaseWorld) -> None:
    report_id = submit(case_world, "retaliation", ECO_MESSAGE)
    eco = case_world.client("eco")

    eco.change_status(report_id, "acknowledged")
    bundle = eco.report(report_id)
    assert bundle.status == "acknowledged" and bundle.acknowledged_at is not None
    with pytest.raises(ApiError) as backwards:
        eco.change_status(report_id, "received")
    assert backwards.value.status == 409
    with pytest.raises(ApiError) as no_outcome:
        eco.change_status(report_id, "closed")
    assert no_outcome.value.status == 400
    eco.change_status(report_id, "closed", "withdrawn")
    closed = eco.report(report_id)
    assert closed.status == "closed" and closed.outcome == "withdrawn"
    assert closed.closed_at is not None and closed.next_statuses == ["reopened"]
    eco.change_status(report_id, "reopened")
    reopened = eco.report(report_id)
    assert reopened.outcome is None and reopened.closed_at is None
    assert [c.to_status for c in reopened.status_changes] == [
        "received",
        "acknowledged",
        "closed",
        "reopened",
    ]


# --- referral -------------------------------------------------------------------------


def test_referral_needs_a_key_block_for_exactly_every_item(case_world: CaseWorld) -> None:
    report_id = _with_everything(case_world)
    eco = case_world.client("eco")
    bundle = eco.report(report_id)
    blocks = _referral_blocks(case_world, bundle, "OIO", keep_copy=False)

    def refused(given: dict[str, bytes], keep_copy: bool = False) -> ApiError:
        with pytest.raises(ApiError) as caught:
            eco.refer(report_id, "OIO", keep_copy, given)
        return caught.value

    missing = dict(list(blocks.items())[1:])
    assert refused(missing).status == 409 and "1 missing" in refused(missing).message
    extra = {**blocks, "f" * 32: next(iter(blocks.values()))}
    assert refused(extra).status == 409 and "not of this report" in refused(extra).message
    first = bundle.items[0].id
    assert refused({**blocks, first: b"\x01\x05broken"}).status == 409
    # Still sealed to ECO although ECO keeps no copy, or not sealed to OIO at all.
    kept = _referral_blocks(case_world, bundle, "OIO", keep_copy=True)
    assert refused(kept).status == 409
    assert refused({**blocks, first: b"\x01\x00"}).status == 409
    with case_world.instance.sessions() as db:
        report = db.get(Report, report_id)
        assert report is not None and report.office_code == "ECO"
        stored = {i.id: i.key_block for i in db.execute(select(Item)).scalars()}
    assert all(stored[i.id] == i.key_block for i in bundle.items)  # nothing changed
    assert "report.refer" not in [e[1] for e in audit_events(case_world.instance, report_id)]


def test_referral_keeping_a_copy(case_world: CaseWorld) -> None:
    report_id = _with_everything(case_world)
    eco = case_world.client("eco")
    bundle = eco.report(report_id)
    last = max(i.seq for i in bundle.items)

    eco.refer(report_id, "OIO", True, _referral_blocks(case_world, bundle, "OIO", keep_copy=True))

    oio = case_world.client("oio").report(report_id)
    assert oio.office == "OIO" and oio.status == "referred" and oio.handling
    assert _text(report_id, _item(oio, "message"), case_world.office_keys["OIO"])[0] == ECO_MESSAGE
    copy = eco.report(report_id)
    assert not copy.handling and copy.reading_office == "ECO"
    assert copy.shared_up_to == last and copy.shared_with == ["ECO"]
    assert copy.next_statuses == []
    with case_world.instance.sessions() as db:
        assert db.get(ReportShare, (report_id, "ECO")) is not None
    assert (
        "eco-officer",
        "report.refer",
        f"ECO -> OIO (copy kept of items up to no. {last})",
    ) in audit_events(case_world.instance, report_id)


def test_a_report_too_large_for_an_ordinary_request_is_still_referred(
    case_world: CaseWorld,
) -> None:
    """Every item's re-sealed key block travels in the one referral: the body grows with it."""
    report_id = submit(case_world, "retaliation", ECO_MESSAGE)
    with case_world.instance.sessions.begin() as db:
        first = db.scalars(select(Item).where(Item.report_id == report_id)).first()
        assert first is not None
        for n in range(1, 1_600):  # answers, as a long exchange with the source would leave
            db.add(
                Item(
                    id=secrets.token_hex(16),
                    report_id=report_id,
                    seq=first.seq + n,
                    kind=ItemKind.MESSAGE,
                    created_at=first.created_at,
                    size=first.size,
                    key_block=first.key_block,
                    blob=secrets.token_hex(32),
                )
            )
    eco = case_world.client("eco")
    bundle = eco.report(report_id)
    blocks = _referral_blocks(case_world, bundle, "OIO", keep_copy=True)
    sent = json.dumps(dump(schema.ReferRequest(office="OIO", keep_copy=True, key_blocks=blocks)))
    assert len(sent) > MAX_REQUEST_BYTES  # more than any other request may carry

    # The allowance is per item: a body past it is refused. An officer who may not see the
    # report learns nothing from the size: they get 404 before it counts.
    allowed = MAX_REQUEST_BYTES + len(bundle.items) * REFERRAL_BYTES_PER_ITEM
    padded = sent[:-1] + ", " + json.dumps({"padding": "x" * allowed})[1:]
    for role, expected in (("eco", 413), ("oio", 404)):
        with case_world.http(role) as http:
            answer = http.post(
                f"/reports/{report_id}/refer",
                content=padded.encode(),
                headers={"Content-Type": "application/json"},
            )
        assert answer.status_code == expected, role

    eco.refer(report_id, "OIO", True, blocks)
    moved = case_world.client("oio").report(report_id)
    assert moved.office == "OIO" and len(moved.items) == len(bundle.items) > 1_600
    assert (
        _text(report_id, _item(moved, "message"), case_world.office_keys["OIO"])[0] == ECO_MESSAGE
    )


def test_referral_without_a_copy_leaves_the_office_nothing(case_world: CaseWorld) -> None:
    report_id = submit(case_world, "retaliation", ECO_MESSAGE)
    eco = case_world.client("eco")
    bundle = eco.report(report_id)
    eco.refer(report_id, "OIO", False, _referral_blocks(case_world, bundle, "OIO", False))
    with pytest.raises(ApiError) as gone:
        eco.report(report_id)
    assert gone.value.status == 404
    assert ("eco-officer", "report.refer", "ECO -> OIO") in audit_events(
        case_world.instance, report_id
    )
    with pytest.raises(ApiError) as same:
        case_world.client("oio").refer(report_id, "OIO", False, {})
    assert same.value.status == 409


# --- deletion and events --------------------------------------------------------------


def test_delete_shreds_the_report_and_its_blobs(case_world: CaseWorld) -> None:
    report_id = _with_everything(case_world)
    with case_world.instance.sessions() as db:
        blobs = list(db.execute(select(Item.blob).where(Item.report_id == report_id)).scalars())
    assert blobs and all(case_world.instance.store.exists(b) for b in blobs)

    case_world.client("eco").delete_report(report_id)

    assert not any(case_world.instance.store.exists(b) for b in blobs)
    with case_world.instance.sessions() as db:
        assert db.get(Report, report_id) is None
    with pytest.raises(ApiError) as gone:
        case_world.client("eco").report(report_id)
    assert gone.value.status == 404
    assert ("eco-officer", "report.delete", "") in audit_events(case_world.instance, report_id)


def test_events_the_reviewer_app_reports(case_world: CaseWorld) -> None:
    report_id = submit(case_world, "retaliation", ECO_MESSAGE)
    eco = case_world.client("eco")
    item_id = eco.report(report_id).items[0].id

    eco.record(report_id, "item.damaged", item_id)
    eco.record(report_id, "key.mismatch", "source key: differs from the copy in the first item")

    events = audit_events(case_world.instance, report_id)
    assert ("eco-officer", "item.damaged", item_id) in events
    assert (
        "eco-officer",
        "key.mismatch",
        "source key: differs from the copy in the first item",
    ) in events
    for action, detail in (
        ("report.delete", ""),
        ("item.damaged", "f" * 32),
        ("key.mismatch", "x" * 201),
        ("key.mismatch", "line\nbreak"),
        ("key.mismatch", "colour \x1b[31mred"),
    ):
        with pytest.raises(ApiError) as refused:
            eco.record(report_id, action, detail)
        assert refused.value.status == 400, (action, detail)


# --- the access matrix ----------------------------------------------------------------


def _shared_report(world: CaseWorld) -> tuple[str, str, str]:
    """A report handled by ECO of which OIO kept a copy; its file's and identity's ids."""
    report_id = _with_everything(world, "fraud")
    oio = world.client("oio")
    bundle = oio.report(report_id)
    oio.refer(report_id, "ECO", True, _referral_blocks(world, bundle, "ECO", keep_copy=True))
    return report_id, _item(bundle, "file").id, _item(bundle, "identity").id


def _requests(world: CaseWorld, report_id: str, file_id: str, role: str | None) -> list[Any]:
    """One request for every report route: (name, method, path, JSON body, acts?)."""
    eco, oio = world.office_public("ECO"), world.office_public("OIO")
    note = seal(report_id, "A note for the matrix.", ItemKind.NOTE, [eco])
    reason = seal(report_id, "Needed for the matrix.", ItemKind.REVEAL, [eco, oio])
    base = f"/reports/{report_id}"
    return [
        ("report", "GET", base, None, False),
        ("file body", "GET", f"{base}/items/{file_id}/body", None, False),
        ("add item", "POST", f"{base}/items", {"kind": "note", **dump(note)}, True),
        ("reveal", "POST", f"{base}/reveal", {"reason": dump(reason)}, False),
        ("assign", "POST", f"{base}/assign", {"assignee_id": None}, True),
        ("status", "POST", f"{base}/status", {"status": "under assessment"}, True),
        (
            "refer",
            "POST",
            f"{base}/refer",
            {"office": "OIO", "keep_copy": False, "key_blocks": {}},
            True,
        ),
        ("events", "POST", f"{base}/events", {"action": "key.mismatch", "detail": "m"}, False),
        ("report events", "GET", f"{base}/events", None, True),
        ("delete", "POST", f"{base}/delete", {}, True),
    ]


@pytest.mark.parametrize(
    "role", ["handling", "copy", "other office", "admin without office", "no token", "deactivated"]
)
def test_access_matrix(case_world: CaseWorld, role: str) -> None:
    report_id, file_id, _ = _shared_report(case_world)
    other_report = submit(case_world, "fraud", MESSAGE)  # OIO's alone
    caller = {
        "handling": "eco",
        "copy": "oio",
        "other office": "eco",
        "admin without office": "admin",
        "no token": None,
        "deactivated": "gone",
    }[role]
    target = other_report if role == "other office" else report_id
    if role == "other office":
        with case_world.instance.sessions() as db:
            file_id = (
                db.execute(select(Item.id).where(Item.report_id == other_report)).scalars().first()
                or file_id
            )
    with case_world.http(caller) as http:
        inbox = http.get("/reports")
        assert inbox.status_code == (401 if role in ("no token", "deactivated") else 200)
        for name, method, path, body, acts in _requests(case_world, target, file_id, caller):
            if role == "handling" and name == "delete":
                continue  # shown in test_delete_shreds_the_report_and_its_blobs
            response = http.request(method, path, json=body)
            got = response.status_code
            if role in ("no token", "deactivated"):
                expected: set[int] = {401}
            elif role in ("other office", "admin without office"):
                expected = {404}
            elif role == "copy":
                expected = {403} if acts else {200, 201}
            else:
                expected = {409} if name == "refer" else {200, 201}
            assert got in expected, (role, name, got, response.text)
            assert (
                response.headers["Content-Type"].startswith("application/json")
                or name == "file body"
            )
            if got == 401:
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
            if got == 403:
                assert response.json()["error"] == (
                    "your office keeps a copy of this report to read; it cannot act on it"
                )
    with case_world.instance.sessions() as db:
        assert db.get(Report, report_id) is not None


def test_the_access_matrix_records_only_what_was_allowed(case_world: CaseWorld) -> None:
    report_id, file_id, _ = _shared_report(case_world)
    before = len(audit_events(case_world.instance, report_id))
    with case_world.http("admin") as http:
        for _, method, path, body, _ in _requests(case_world, report_id, file_id, "admin"):
            assert http.request(method, path, json=body).status_code == 404
    with case_world.http("oio") as http:
        response = http.get(f"/reports/{report_id}/items/{file_id}/body")
        assert response.status_code == 200
    events = audit_events(case_world.instance, report_id)[before:]
    assert events == [("oio-officer", "file.download", file_id)]


# --- nothing readable leaves the server -----------------------------------------------


def test_no_response_carries_plaintext(case_world: CaseWorld) -> None:
    canaries = {
        "message": "CANARY-MESSAGE-4f1c9a",
        "name": "CANARY-NAME-77b2d0",
        "contact": "CANARY-CONTACT-0e93aa",
        "file": "CANARY-FILE-CONTENT-c2d8",
        "file name": "CANARY-FILENAME-5a1e",
    }
    report_id = submit(
        case_world,
        "retaliation",
        f"My manager retaliated. {canaries['message']} happened on Friday.",
        files=[(f"{canaries['file name']}.txt", canaries["file"].encode() * 50)],
        identity={"identity_name": canaries["name"], "identity_contact": canaries["contact"]},
    )
    eco, transport = recording_client(case_world, "eco")
    key = case_world.office_keys["ECO"]

    eco.inbox(InboxQuery())
    bundle = eco.report(report_id)
    with eco.item_body(report_id, _item(bundle, "file").id) as response:
        response.read()
    eco.add_item(report_id, "note", seal(report_id, "note text", ItemKind.NOTE, [key.public_key]))
    released = eco.reveal(
        report_id, seal(report_id, "A reason to reveal.", ItemKind.REVEAL, [key.public_key])
    )
    eco.assign(report_id, case_world.people["eco"].id)
    eco.change_status(report_id, "acknowledged")
    eco.record(report_id, "item.damaged", bundle.items[0].id)
    eco.refer(
        report_id, "OIO", True, _referral_blocks(case_world, eco.report(report_id), "OIO", True)
    )
    eco.report(report_id)

    # The test looks in the right place: what came back opens to the canaries.
    assert canaries["name"] in json.dumps(_text(report_id, released[0], key)[1])
    assert canaries["message"] in _text(report_id, _item(bundle, "message"), key)[0]
    assert len(transport.bodies) >= 11
    for body in transport.bodies:
        for what, canary in canaries.items():
            assert canary.encode() not in body, what


def test_errors_are_json_without_a_trace(case_world: CaseWorld) -> None:
    with case_world.http("eco") as http:
        for response in (
            http.get("/nowhere"),
            http.delete("/reports"),
            http.post(
                "/reports/" + "a" * 32 + "/status",
                content=b"x" * (5 * 1024 * 1024),
                headers={"Content-Type": "application/json"},
            ),
        ):
            assert response.status_code in (404, 405, 413)
            assert set(response.json()) == {"error"}
            assert "Traceback" not in response.text
            assert response.headers["Cache-Control"] == "no-store"


def test_a_token_stops_working_when_ended(case_world: CaseWorld) -> None:
    from case_server import tokens

    token = tokens.issue(case_world.instance, case_world.people["eco"].id)
    with httpx.Client(
        base_url="http://case-server.test/api/v2",
        transport=case_world.transport(),
        headers={"Authorization": f"Bearer {token}"},
    ) as http:
        assert http.get("/reports").status_code == 200
        tokens.end(token, case_world.instance)
        ended = http.get("/reports")
        assert ended.status_code == 401 and "sign in again" in ended.json()["error"]
        assert http.get("/reports", headers={"Authorization": "Bearer x"}).status_code == 401
        assert http.get("/reports", headers={"Authorization": f"Basic {token}"}).status_code == 401


def test_a_token_unused_for_the_idle_time_stops_working(case_world: CaseWorld) -> None:
    """The case server ends a token left unused, as when a reviewer app stops unannounced."""
    from datetime import timedelta

    from case_server import tokens
    from dropbox import sessions
    from dropbox.models import OfficerSession

    idle = timedelta(minutes=case_world.instance.config.reviewer.idle_minutes)
    token = tokens.issue(case_world.instance, case_world.people["eco"].id)
    other = tokens.issue(case_world.instance, case_world.people["eco"].id)

    def seen_ago(which: str, ago: timedelta) -> None:
        raw = base64.urlsafe_b64decode(which.encode() + b"==")
        with case_world.instance.sessions.begin() as db:
            row = db.get(OfficerSession, sessions.token_id_hash(raw[:32]))
            assert row is not None
            row.last_seen_at = datetime.now(UTC).replace(tzinfo=None) - ago

    with httpx.Client(
        base_url="http://case-server.test/api/v2", transport=case_world.transport()
    ) as http:
        # Used a little under the idle time ago: it works, and is marked seen now.
        seen_ago(token, idle - timedelta(minutes=1))
        assert http.get("/reports", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        # Unused for the idle time: refused, and gone.
        seen_ago(other, idle)
        refused = http.get("/reports", headers={"Authorization": f"Bearer {other}"})
        assert refused.status_code == 401
        # The first was marked seen when it was used, so its idle time starts again.
        raw = base64.urlsafe_b64decode(token.encode() + b"==")
        with case_world.instance.sessions() as db:
            row = db.get(OfficerSession, sessions.token_id_hash(raw[:32]))
            assert row is not None
            now = datetime.now(UTC).replace(tzinfo=None)
            assert now - row.last_seen_at < timedelta(minutes=1)


# --- a first reply acknowledges (issue 13, point 9) ----------------------------------------


def _reply(world: CaseWorld, report_id: str, text: str) -> NewItem:
    from crypto.keys import public_key_from_bytes

    source = public_key_from_bytes(world.client("eco").report(report_id).source_public_key)
    return seal(report_id, text, ItemKind.REPLY, [world.office_public("ECO"), source])


def test_a_reply_that_acknowledges_does_it_in_the_same_step(case_world: CaseWorld) -> None:
    report_id = submit(case_world, "retaliation", ECO_MESSAGE)
    eco = case_world.client("eco")
    reply = _reply(case_world, report_id, "Thank you; we have your report.")

    eco.add_item(report_id, "reply", reply, acknowledge=True)

    bundle = eco.report(report_id)
    assert bundle.status == "acknowledged" and bundle.acknowledged_at is not None
    stored = next(i for i in bundle.items if i.id == reply.item_id)
    assert bundle.acknowledged_at == stored.created_at
    change = bundle.status_changes[-1]
    assert (change.from_status, change.to_status) == ("received", "acknowledged")
    assert change.officer is not None
    events = audit_events(case_world.instance, report_id)
    assert ("eco-officer", "report.reply", reply.item_id) in events
    assert ("eco-officer", "report.status", "received -> acknowledged (by reply)") in events
    # The acknowledgement is met in the inbox too.
    (row,) = [r for r in eco.inbox(InboxQuery()).rows if r.id == report_id]
    assert row.acknowledged and not row.acknowledge_overdue


def test_a_reply_without_the_choice_leaves_the_report_unacknowledged(
    case_world: CaseWorld,
) -> None:
    report_id = submit(case_world, "retaliation", ECO_MESSAGE)
    eco = case_world.client("eco")

    eco.add_item(report_id, "reply", _reply(case_world, report_id, "A question first."))

    bundle = eco.report(report_id)
    assert bundle.status == "received" and bundle.acknowledged_at is None
    assert [c.to_status for c in bundle.status_changes] == ["received"]
    actions = [action for _, action, _ in audit_events(case_world.instance, report_id)]
    assert "report.status" not in actions


def test_a_second_reply_does_not_acknowledge_again(case_world: CaseWorld) -> None:
    report_id = submit(case_world, "retaliation", ECO_MESSAGE)
    eco = case_world.client("eco")
    eco.add_item(report_id, "reply", _reply(case_world, report_id, "First."), acknowledge=True)
    first = eco.report(report_id)
    eco.change_status(report_id, "under assessment")

    eco.add_item(report_id, "reply", _reply(case_world, report_id, "Second."), acknowledge=True)

    after = eco.report(report_id)
    assert after.status == "under assessment"
    assert after.acknowledged_at == first.acknowledged_at
    assert [c.to_status for c in after.status_changes] == [
        "received",
        "acknowledged",
        "under assessment",
    ]
    details = [
        d for _, a, d in audit_events(case_world.instance, report_id) if a == "report.status"
    ]
    assert details == ["received -> acknowledged (by reply)", "acknowledged -> under assessment"]


def test_only_a_reply_may_acknowledge(case_world: CaseWorld) -> None:
    report_id = submit(case_world, "retaliation", ECO_MESSAGE)
    eco = case_world.client("eco")
    note = seal(report_id, "Internal.", ItemKind.NOTE, [case_world.office_public("ECO")])
    with pytest.raises(ApiError) as refused:
        eco.add_item(report_id, "note", note, acknowledge=True)
    assert refused.value.status == 400
    with case_world.http("eco") as http:
        reply = _reply(case_world, report_id, "Hello.")
        bad = http.post(
            f"/reports/{report_id}/items",
            json={"kind": "reply", **dump(reply), "acknowledge": "yes"},
        )
    assert bad.status_code == 400 and "acknowledge" in bad.json()["error"]
    bundle = eco.report(report_id)
    assert bundle.status == "received" and len(bundle.items) == 2


def test_next_statuses_come_in_workflow_order(case_world: CaseWorld) -> None:
    report_id = submit(case_world, "retaliation", ECO_MESSAGE)
    assert case_world.client("eco").report(report_id).next_statuses == [
        "acknowledged",
        "under assessment",
        "closed",
    ]


def test_the_case_server_answers_robots_txt_and_favicon(case_world: CaseWorld) -> None:
    with httpx.Client(base_url="http://127.0.0.1", transport=case_world.transport()) as http:
        robots = http.get("/robots.txt")
        icon = http.get("/favicon.ico")
    assert robots.status_code == 200
    assert robots.text == "User-agent: *\nDisallow: /\n"
    assert robots.headers["Content-Type"].startswith("text/plain")
    assert icon.status_code == 204 and icon.content == b""
