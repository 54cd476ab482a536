"""Casework on the server, over ciphertext: what the case server does for an officer's request.

The case server never decrypts. Reading a report hands out the sealed items
(key blocks and bodies; for files and identity details only the head of
the body) and records the reading; writing stores items the officer's own
machine sealed, after checking that they are well formed; a referral
stores key blocks the officer's machine re-sealed. Every function takes the
report already checked by `dropbox.access`, and writes the audit event for
what it does, in the caller's transaction.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from crypto import envelope
from crypto.errors import DecryptionError
from crypto.keys import public_key_from_bytes
from dropbox import access, audit, notify
from dropbox import api_schema as schema
from dropbox.errors import AccessDenied, DropboxError, NotFound
from dropbox.instance import Instance
from dropbox.items import StoredEnvelope, is_id, officer_now
from dropbox.items import add_item as add_stored_item
from dropbox.models import (
    AuditEvent,
    Item,
    ItemKind,
    ItemRead,
    Office,
    OfficeGrant,
    Officer,
    Outcome,
    Report,
    ReportShare,
    Status,
    StatusChange,
)
from dropbox.store import BlobNotFound, Store

# The first bytes of a body: enough for the reviewer app to check a file's key, size and name.
HEAD_BYTES = envelope.HEAD_BYTES

# Which status may follow which. Referral has its own action (`refer`).
TRANSITIONS: dict[str, frozenset[str]] = {
    Status.RECEIVED: frozenset({Status.ACKNOWLEDGED, Status.UNDER_ASSESSMENT, Status.CLOSED}),
    Status.ACKNOWLEDGED: frozenset({Status.UNDER_ASSESSMENT, Status.CLOSED}),
    Status.UNDER_ASSESSMENT: frozenset({Status.CLOSED}),
    Status.REFERRED: frozenset({Status.ACKNOWLEDGED, Status.UNDER_ASSESSMENT, Status.CLOSED}),
    Status.CLOSED: frozenset({Status.REOPENED}),
    Status.REOPENED: frozenset({Status.UNDER_ASSESSMENT, Status.CLOSED}),
}
SOURCE_KINDS = (ItemKind.MESSAGE, ItemKind.FILE, ItemKind.IDENTITY)
# Items served whole with the report; files and identity details come as a head only.
HEAD_ONLY_KINDS = frozenset({ItemKind.FILE, ItemKind.IDENTITY})
# What an officer's machine may add to a thread through `add_item`.
OFFICER_KINDS = frozenset({ItemKind.REPLY, ItemKind.NOTE})
# What an officer's machine may report about a report (never content). `report.export`:
# the report was exported, encrypted to the OpenPGP key whose fingerprint is the detail.
EVENT_ACTIONS = frozenset({"item.damaged", "key.mismatch", "report.export"})
MAX_EVENT_DETAIL = 200
# An OpenPGP fingerprint: 40 hexadecimal digits (v4 keys), or 64 (v5 and v6 keys).
_OPENPGP_FINGERPRINT = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")
# The largest item an officer's machine may store (a reply, a note, a reason).
MAX_OFFICER_ITEM = 1024 * 1024

# How `refer` records, in its audit event, the last item a kept copy shares.
_KEPT_COPY = " (copy kept of items up to no. {last})"
_KEPT_COPY_PATTERN = re.compile(r" \(copy kept of items up to no\. (\d+)\)$")


class Conflict(DropboxError):
    """The request does not fit the report as it is now (HTTP 409)."""


def _actor(officer: Officer) -> str:
    return officer.username


# --- reading ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SealedItem:
    """One thread item as the server holds it: metadata and (some of) its ciphertext."""

    item: Item
    author: str | None
    unread: bool
    body_length: int
    body: bytes | None = None
    head: bytes | None = None


def read_blob(store: Store, name: str, limit: int | None) -> tuple[bytes, int]:
    """The blob's first `limit` bytes (all if None) and its whole length; empty if it is gone."""
    try:
        blob = store.open(name)
    except (BlobNotFound, OSError):
        return b"", 0
    with blob:
        data = blob.read() if limit is None else blob.read(limit)
        length = blob.seek(0, 2)
    return data, length


def open_blob(store: Store, name: str) -> tuple[BinaryIO, int] | None:
    """A stored body opened for streaming, and its length; None if it is gone."""
    try:
        blob = store.open(name)
    except (BlobNotFound, OSError):
        return None
    length = blob.seek(0, 2)
    blob.seek(0)
    return blob, length


def sealed(instance: Instance, item: Item, *, author: str | None, unread: bool) -> SealedItem:
    """The item with its whole body, or only the head for files and identity details."""
    head_only = item.kind in HEAD_ONLY_KINDS
    data, length = read_blob(instance.store, item.blob, HEAD_BYTES if head_only else None)
    if head_only:
        return SealedItem(item, author, unread, length, head=data)
    return SealedItem(item, author, unread, length, body=data)


def items_of(session: Session, report: Report) -> list[Item]:
    """The report's items, in thread order."""
    query = select(Item).where(Item.report_id == report.id).order_by(Item.seq)
    return list(session.execute(query).scalars())


def sealed_items(
    instance: Instance, session: Session, items: list[Item], unread: Callable[[Item], bool]
) -> list[SealedItem]:
    """Each item as `sealed` gives it, with its author's name and whether it is `unread`."""
    ids = {i.author_id for i in items if i.author_id}
    authors: dict[int, str] = {}
    if ids:
        rows = session.execute(select(Officer.id, Officer.display_name).where(Officer.id.in_(ids)))
        authors = {row.id: row.display_name for row in rows}
    return [
        sealed(
            instance,
            item,
            author=authors.get(item.author_id) if item.author_id else None,
            unread=unread(item),
        )
        for item in items
    ]


def thread(
    instance: Instance, session: Session, officer: Officer, report: Report
) -> list[SealedItem]:
    """The whole sealed thread; marks it read and records the reading (`report.read`).

    Identity items come as a head only: their content is released by `reveal`.
    """
    items = items_of(session, report)
    read = set(
        session.execute(
            select(ItemRead.item_id).where(
                ItemRead.officer_id == officer.id, ItemRead.item_id.in_([i.id for i in items])
            )
        ).scalars()
    )
    out = sealed_items(instance, session, items, lambda item: item.id not in read)
    for shown in out:
        if shown.unread:
            session.add(ItemRead(officer_id=officer.id, item_id=shown.item.id))
    audit.record(session, _actor(officer), "report.read", report_id=report.id)
    return out


def wire_item(shown: SealedItem) -> schema.SealedItem:
    """A sealed item as the API and the export bundle carry it."""
    item = shown.item
    return schema.SealedItem(
        id=item.id,
        seq=item.seq,
        kind=item.kind,
        author=shown.author,
        created_at=item.created_at,
        size=item.size,
        deleted_by_source=item.deleted_by_source,
        unread=shown.unread,
        key_block=item.key_block,
        body_length=shown.body_length,
        body=shown.body,
        head=shown.head,
    )


def wire_event(event: AuditEvent) -> schema.AuditEntry:
    """An audit event as the API carries it (the audit page, a report's export)."""
    return schema.AuditEntry(
        id=event.id,
        at=event.at,
        actor=event.actor,
        action=event.action,
        report_id=event.report_id,
        detail=event.detail,
    )


def report_bundle(
    session: Session,
    report: Report,
    items: list[SealedItem],
    *,
    reading_office: str,
    handling: bool,
    assignees: list[tuple[int, str]],
) -> schema.ReportBundle:
    """The report with its sealed thread, as the API and the export bundle carry it.

    `reading_office`: the office the reader reads it through; `handling`:
    whether that office handles it (only then are next statuses listed);
    `assignees`: whom it may be assigned to, (id, name).
    """
    assignee = session.get(Officer, report.assignee_id) if report.assignee_id else None
    return schema.ReportBundle(
        id=report.id,
        designation=report.designation,
        office=report.office_code,
        category=report.category,
        status=report.status,
        outcome=report.outcome,
        urgent=report.urgent,
        received=report.received_at,
        last_activity=report.last_activity_at,
        acknowledge_due=report.acknowledge_due,
        feedback_due=report.feedback_due,
        acknowledged_at=report.acknowledged_at,
        closed_at=report.closed_at,
        assignee_id=report.assignee_id,
        assignee=assignee.display_name if assignee else None,
        source_public_key=report.source_public_key,
        reading_office=reading_office,
        handling=handling,
        shared_up_to=shared_up_to(session, report, reading_office),
        shared_with=shared_with(session, report),
        next_statuses=next_statuses(report) if handling else [],
        status_changes=[
            schema.StatusChange(
                from_status=change.from_status,
                to_status=change.to_status,
                outcome=change.outcome,
                at=change.at,
                officer=name,
            )
            for change, name in status_changes(session, report)
        ],
        assignees=[schema.Person(id=i, display_name=name) for i, name in assignees],
        items=[wire_item(i) for i in items],
    )


def shared_up_to(session: Session, report: Report, office_code: str) -> int | None:
    """For an office reading through a kept copy: the last item number the copy was given.

    None for the handling office, or when the referral predates the record of it.
    """
    if office_code == report.office_code:
        return None
    referrals = session.execute(
        select(AuditEvent.detail)
        .where(AuditEvent.report_id == report.id, AuditEvent.action == "report.refer")
        .order_by(AuditEvent.id.desc())
    ).scalars()
    last = next((d for d in referrals if d.startswith(f"{office_code} -> ")), "")
    kept = _KEPT_COPY_PATTERN.search(last)
    return int(kept.group(1)) if kept else None


def shared_with(session: Session, report: Report) -> list[str]:
    """The offices that kept a copy of the report."""
    rows = session.execute(
        select(ReportShare.office_code)
        .where(ReportShare.report_id == report.id)
        .order_by(ReportShare.office_code)
    )
    return list(rows.scalars())


def status_changes(session: Session, report: Report) -> list[tuple[StatusChange, str | None]]:
    """The report's status changes in order, each with the officer's name (None: the system)."""
    rows = session.execute(
        select(StatusChange, Officer.display_name)
        .outerjoin(Officer, Officer.id == StatusChange.officer_id)
        .where(StatusChange.report_id == report.id)
        .order_by(StatusChange.id)
    )
    return [(row[0], row[1]) for row in rows]


def assignees(session: Session, codes: list[str]) -> list[tuple[int, str]]:
    """Active officers holding a grant for one of these offices: (id, name), by name."""
    if not codes:
        return []
    rows = session.execute(
        select(Officer.id, Officer.display_name)
        .join(OfficeGrant, OfficeGrant.officer_id == Officer.id)
        .where(OfficeGrant.office_code.in_(codes), Officer.active.is_(True))
        .distinct()
        .order_by(Officer.display_name, Officer.id)
    )
    return [(row.id, row.display_name) for row in rows]


def next_statuses(report: Report) -> list[str]:
    """The statuses the report may move to next, in workflow order (as `Status` lists them)."""
    allowed = TRANSITIONS.get(report.status, frozenset())
    return [status.value for status in Status if status in allowed]


def file_body(
    instance: Instance, session: Session, officer: Officer, report: Report, item_id: str
) -> tuple[BinaryIO, int] | None:
    """A file item's stored ciphertext, opened for streaming; records `file.download`.

    None if its blob is missing: that is recorded as damage (as the officer's
    machine would record a body that fails to open), and the caller must
    commit the event before it refuses.
    """
    item = session.get(Item, item_id) if is_id(item_id) else None
    if item is None or item.report_id != report.id or item.kind != ItemKind.FILE:
        raise NotFound("there is no such file")
    opened = open_blob(instance.store, item.blob)
    if opened is None:
        audit.record(session, _actor(officer), "item.damaged", report_id=report.id, detail=item.id)
        return None
    audit.record(session, _actor(officer), "file.download", report_id=report.id, detail=item.id)
    return opened


# --- storing what the officer's machine sealed ----------------------------------------


@dataclass(frozen=True)
class NewSealed:
    """An item sealed on the officer's machine: its id, plaintext size, key block and body."""

    item_id: str
    size: int
    key_block: bytes
    body: bytes


def _recipients(key_block: bytes, what: str) -> list[bytes]:
    try:
        return envelope.recipient_ids(key_block)
    except DecryptionError:
        raise DropboxError(f"the key block of the {what} is malformed") from None


def _office_recipient(session: Session, code: str) -> bytes:
    office = session.get(Office, code)
    if office is None:
        raise NotFound("the office of this report has no key")
    return envelope.recipient_id(public_key_from_bytes(office.public_key))


def check_new_item(
    session: Session, report: Report, new: NewSealed, kind: ItemKind, offices: list[str]
) -> None:
    """Refuse an item that is malformed or not sealed to whom it must be (DropboxError).

    The id must be fresh, the body exactly as long as the size sealed for it
    says, the key block well formed and holding an entry for each of
    `offices` (and for the source, for a reply).
    """
    what = kind.value
    if not is_id(new.item_id):
        raise DropboxError("'item_id' must be 32 lowercase hexadecimal characters")
    if session.get(Item, new.item_id) is not None:
        raise Conflict("an item with this id exists already; seal it again with a new id")
    if new.size < 0 or new.size > MAX_OFFICER_ITEM:
        raise DropboxError(f"'size' must be from 0 to {MAX_OFFICER_ITEM}")
    if len(new.body) != envelope.body_size(new.size):
        raise DropboxError(f"the body of the {what} does not have the length its size gives")
    recipients = _recipients(new.key_block, what)
    needed = {_office_recipient(session, code) for code in offices}
    if kind == ItemKind.REPLY:
        # X25519 for a report made before sources got hybrid keys, X-Wing since.
        try:
            needed.add(envelope.recipient_id(public_key_from_bytes(report.source_public_key)))
        except ValueError:
            raise DropboxError("the source's key of this report is damaged") from None
    if not needed <= set(recipients):
        whom = "the source and the office" if kind == ItemKind.REPLY else "the office"
        raise DropboxError(f"the {what} is not sealed to {whom} handling the report")


def store_item(
    instance: Instance,
    session: Session,
    officer: Officer,
    report: Report,
    new: NewSealed,
    kind: ItemKind,
) -> Item:
    """Write the body to the store and record the item, already read by its author."""
    blob = instance.store.begin()
    try:
        blob.write(new.body)
        blob.commit()  # before the row: a crash leaves at worst a blob without a row
    except BaseException:
        blob.discard()
        raise
    stored = StoredEnvelope(new.item_id, blob, new.key_block, new.size)
    item = add_stored_item(session, report, stored, kind, officer_now(), officer.id)
    session.add(ItemRead(officer_id=officer.id, item_id=item.id))
    return item


def add_item(
    instance: Instance,
    session: Session,
    officer: Officer,
    report: Report,
    kind: str,
    new: NewSealed,
    acknowledge: bool = False,
) -> Item:
    """Store a reply (to the source and the office) or a note (to the office); audited.

    With `acknowledge`, a reply to a report not yet acknowledged also
    acknowledges it, in the same transaction: the personal reply is the
    acknowledgement the deadline asks for. A report acknowledged already is
    left as it is.
    """
    if kind not in OFFICER_KINDS:
        raise DropboxError("'kind' must be reply or note")
    item_kind = ItemKind(kind)
    if acknowledge and item_kind != ItemKind.REPLY:
        raise DropboxError("only a reply to the source can acknowledge the report")
    check_new_item(session, report, new, item_kind, [report.office_code])
    item = store_item(instance, session, officer, report, new, item_kind)
    if item_kind == ItemKind.REPLY:
        report.last_activity_at = item.created_at
    audit.record(session, _actor(officer), f"report.{kind}", report_id=report.id, detail=item.id)
    if acknowledge and report.acknowledged_at is None:
        _acknowledge_by_reply(session, officer, report, item.created_at)
    return item


def _acknowledge_by_reply(
    session: Session, officer: Officer, report: Report, now: datetime
) -> None:
    """Record the acknowledgement a first reply makes; the status follows where it may."""
    report.acknowledged(now)
    if Status.ACKNOWLEDGED not in TRANSITIONS.get(report.status, frozenset()):
        # Under assessment or reopened already: the deadline is met, the status stays.
        audit.record(
            session, _actor(officer), "report.acknowledge", report_id=report.id, detail="by reply"
        )
        return
    _move(session, officer, report, Status.ACKNOWLEDGED, now, why=" (by reply)")


def _move(
    session: Session,
    officer: Officer,
    report: Report,
    to_status: str,
    now: datetime,
    *,
    outcome: str | None = None,
    why: str = "",
) -> None:
    """Record a status move (its row and its `report.status` event), then make it."""
    session.add(
        StatusChange(
            report_id=report.id,
            from_status=report.status,
            to_status=to_status,
            outcome=outcome,
            officer_id=officer.id,
            at=now,
        )
    )
    detail = f"{report.status} -> {to_status}" + (f" ({outcome})" if outcome else "") + why
    audit.record(session, _actor(officer), "report.status", report_id=report.id, detail=detail)
    report.status = to_status


def reveal(
    instance: Instance, session: Session, officer: Officer, report: Report, reason: NewSealed
) -> list[SealedItem]:
    """Store the sealed reason as a `reveal` item, record `identity.reveal`, release identity.

    The reason is sealed on the officer's machine to the handling office (and
    to the reader's own office if they read through a kept copy): the audit
    event names the item, never its content.
    """
    items = list(
        session.execute(
            select(Item)
            .where(Item.report_id == report.id, Item.kind == ItemKind.IDENTITY)
            .order_by(Item.seq)
        ).scalars()
    )
    if not items:
        raise NotFound("the source gave no identity details")
    reading = access.reading_office(session, officer, report)
    offices = sorted({report.office_code, reading})
    check_new_item(session, report, reason, ItemKind.REVEAL, offices)
    recorded = store_item(instance, session, officer, report, reason, ItemKind.REVEAL)
    audit.record(
        session, _actor(officer), "identity.reveal", report_id=report.id, detail=recorded.id
    )
    read = set(
        session.execute(
            select(ItemRead.item_id).where(
                ItemRead.officer_id == officer.id, ItemRead.item_id.in_([i.id for i in items])
            )
        ).scalars()
    )
    out = []
    for item in items:
        data, length = read_blob(instance.store, item.blob, None)
        out.append(SealedItem(item, None, item.id not in read, length, body=data))
    return out


# --- metadata --------------------------------------------------------------------------


def assign(session: Session, officer: Officer, report: Report, assignee_id: int | None) -> None:
    """Assign the report to an active officer of the handling office, or to nobody."""
    if assignee_id is not None:
        grant = session.get(OfficeGrant, (assignee_id, report.office_code))
        assignee = session.get(Officer, assignee_id)
        if grant is None or assignee is None or not assignee.active:
            raise DropboxError("that officer does not work for the office handling this report")
    report.assignee_id = assignee_id
    audit.record(
        session,
        _actor(officer),
        "report.assign",
        report_id=report.id,
        detail=str(assignee_id) if assignee_id else "nobody",
    )


def change_status(
    session: Session, officer: Officer, report: Report, to_status: str, outcome: str | None
) -> None:
    """Move the report along its lifecycle; closing needs an outcome.

    The reason for closing is a note the officer's machine seals and stores
    (`add_item`) before it asks for the change.
    """
    if to_status not in TRANSITIONS.get(report.status, frozenset()):
        raise Conflict(f"a report that is {report.status} cannot become {to_status}")
    now = officer_now()
    if to_status == Status.CLOSED:
        if outcome not in set(Outcome):
            raise DropboxError("choose the outcome before closing the report")
        report.closed(now, outcome)
    else:
        outcome = None
    if to_status == Status.ACKNOWLEDGED and report.acknowledged_at is None:
        report.acknowledged(now)
    if to_status == Status.REOPENED:
        report.reopened()
    _move(session, officer, report, to_status, now, outcome=outcome)
    report.last_activity_at = now


def refer(
    session: Session,
    officer: Officer,
    report: Report,
    to_office: str,
    keep_copy: bool,
    key_blocks: Mapping[str, bytes],
) -> None:
    """Hand the report to another office, with every item's key block re-sealed by the officer.

    `key_blocks` must name exactly the report's items. Each new key block must
    be well formed, hold an entry for the office it goes to and, unless a
    copy is kept, none for the referring office. A key block sent back
    unchanged (an item the officer's machine found damaged, so could not
    re-seal) is kept as it is, as the server did before. Conflict otherwise:
    nothing is changed.
    """
    if to_office == report.office_code:
        raise Conflict("the report is already with that office")
    if session.get(Office, to_office) is None:
        raise DropboxError("there is no such office to refer to")
    from_office = report.office_code
    to_id = _office_recipient(session, to_office)
    from_id = _office_recipient(session, from_office)
    items = list(session.execute(select(Item).where(Item.report_id == report.id)).scalars())
    expected = {i.id for i in items}
    given = set(key_blocks)
    if given != expected:
        missing, extra = len(expected - given), len(given - expected)
        raise Conflict(
            "the key blocks do not match the report's items"
            f" ({missing} missing, {extra} not of this report); open the report again and"
            " refer it again"
        )
    for item in items:
        key_block = key_blocks[item.id]
        if hmac.compare_digest(key_block, item.key_block):
            continue
        try:
            recipients = envelope.recipient_ids(key_block)
        except DecryptionError:
            raise Conflict(f"the key block for item no. {item.seq} is malformed") from None
        if to_id not in recipients:
            raise Conflict(f"the key block for item no. {item.seq} is not sealed to {to_office}")
        if not keep_copy and from_id in recipients:
            raise Conflict(
                f"the key block for item no. {item.seq} is still sealed to {from_office},"
                " which keeps no copy"
            )
    for item in items:
        item.key_block = key_blocks[item.id]
    if keep_copy:
        session.merge(ReportShare(report_id=report.id, office_code=from_office))
    session.execute(
        delete(ReportShare).where(
            ReportShare.report_id == report.id, ReportShare.office_code == to_office
        )
    )
    now = officer_now()
    session.add(
        StatusChange(
            report_id=report.id,
            from_status=report.status,
            to_status=Status.REFERRED,
            officer_id=officer.id,
            at=now,
            from_office=from_office,
            to_office=to_office,
        )
    )
    report.office_code = to_office
    report.status = Status.REFERRED
    report.assignee_id = None
    report.last_activity_at = now
    audit.record(
        session,
        _actor(officer),
        "report.refer",
        report_id=report.id,
        detail=f"{from_office} -> {to_office}"
        + (_KEPT_COPY.format(last=max((i.seq for i in items), default=0)) if keep_copy else ""),
    )


def record_event(
    session: Session, officer: Officer, report: Report | None, action: str, detail: str
) -> None:
    """Record what the officer's machine found or did (damage, a key mismatch, an export).

    Never content: an export's detail is the fingerprint of the key it was
    encrypted to, and only the office handling the report exports it.

    Without a report only `key.mismatch` is taken: a key found wrong at
    sign-in (an office key the server lists) or at a grant (an officer's key).
    """
    if report is None and action != "key.mismatch":
        raise DropboxError("only 'key.mismatch' may be recorded without a report")
    if action not in EVENT_ACTIONS:
        raise DropboxError(f"'action' must be one of {', '.join(sorted(EVENT_ACTIONS))}")
    if len(detail) > MAX_EVENT_DETAIL or not detail.isprintable():
        raise DropboxError(
            f"'detail' must be at most {MAX_EVENT_DETAIL} printable characters, on one line"
        )
    if action == "item.damaged":
        item = session.get(Item, detail) if is_id(detail) else None
        if report is None or item is None or item.report_id != report.id:
            raise DropboxError("'detail' must be the id of an item of this report")
    if action == "report.export":
        if report is None or access.reading_office(session, officer, report) != report.office_code:
            raise AccessDenied("only the office handling a report can export it")
        if not _OPENPGP_FINGERPRINT.fullmatch(detail):
            raise DropboxError(
                "'detail' must be the OpenPGP fingerprint the export was encrypted to"
                " (40 or 64 hexadecimal digits, upper case)"
            )
    report_id = report.id if report is not None else None
    audit.record(session, _actor(officer), action, report_id=report_id, detail=detail)


def report_events(session: Session, report: Report) -> list[AuditEvent]:
    """The report's audit events, oldest first (for its export: who did what, never content)."""
    return list(
        session.execute(
            select(AuditEvent).where(AuditEvent.report_id == report.id).order_by(AuditEvent.id)
        ).scalars()
    )


# --- deletion --------------------------------------------------------------------------


def delete_report(session: Session, officer: Officer, report: Report) -> list[str]:
    """An officer deletes a report: crypto-shred it (see `shred_report`); return blobs to unlink."""
    if access.reading_office(session, officer, report) != report.office_code:
        raise AccessDenied("only the office handling a report can delete it")
    return shred_report(session, report, _actor(officer), "report.delete")


def shred_report(
    session: Session, report: Report, actor: str, action: str, detail: str = ""
) -> list[str]:
    """Crypto-shred a report: destroy every key block, remove the rows; return blobs to unlink.

    Records `action` by `actor` (an officer's username, or "retention" for a
    purge). The caller commits first and then calls `remove_blobs`: a crash
    in between leaves only keyless ciphertext, which nothing can decrypt.
    """
    blobs = []
    items = list(session.execute(select(Item).where(Item.report_id == report.id)).scalars())
    for item in items:
        item.key_block = bytes(len(item.key_block))
        blobs.append(item.blob)
    session.flush()
    ids = [i.id for i in items]
    session.execute(delete(ItemRead).where(ItemRead.item_id.in_(ids)))
    session.execute(delete(Item).where(Item.report_id == report.id))
    session.execute(delete(StatusChange).where(StatusChange.report_id == report.id))
    session.execute(delete(ReportShare).where(ReportShare.report_id == report.id))
    notify.forget_report(session, report.id)
    audit.record(session, actor, action, report_id=report.id, detail=detail)
    session.delete(report)
    return blobs


def remove_blobs(instance: Instance, blobs: list[str]) -> None:
    """Unlink the blobs of a deleted report (their keys are already gone)."""
    for name in blobs:
        instance.store.delete(name)
