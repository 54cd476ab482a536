"""What intake officers do with a report: read, reply, note, assign, change status, refer, delete.

Every function takes the report already checked by `dropbox.access`, and
writes the audit event for what it does. Decrypted content exists only in
the memory of the request that asked for it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime

from nacl.public import PrivateKey, PublicKey
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from crypto import envelope
from crypto.errors import DecryptionError
from dropbox import access, audit, offices
from dropbox.errors import AccessDenied, DropboxError, NotFound
from dropbox.instance import Instance
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
from dropbox.reports import (
    SourceKeyCheck,
    add_item,
    check_source_key,
    is_id,
    message_document,
    message_type,
    officer_now,
    open_item,
    open_item_bytes,
    post_reply,
    read_message_document,
    seal_bytes,
)


class NotShared(AccessDenied):
    """The item was added after the reader's office referred the report, and is not sealed to it."""


class SourceKeyMismatch(offices.KeyMismatch):
    """The source's key in the report row cannot be trusted: nothing was sealed to it."""


# What an officer reads when a reply is refused, by what the first item said.
KEY_REFUSALS = {
    SourceKeyCheck.DIFFERS: (
        "The reply was not sent: the source's key on the server does not match the one"
        " the source sent with the report. An administrator should check the server."
    ),
    SourceKeyCheck.UNREADABLE: (
        "The reply was not sent: the source's key cannot be checked, because the report's"
        " first message is missing or damaged. An administrator should check the server."
    ),
}
# The audit event's detail: which key, and why; never any content.
KEY_EVENTS = {
    SourceKeyCheck.DIFFERS: "source key: differs from the copy sealed in the source's messages",
    SourceKeyCheck.UNREADABLE: "source key: the report's first item is missing or damaged",
}


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


@dataclass(frozen=True)
class ThreadEntry:
    """One item of the thread as an officer sees it."""

    id: str
    seq: int
    kind: str  # an ItemKind, unless the row was altered (and the item is then damaged)
    from_source: bool
    created_at: datetime
    size: int
    author: str | None = None
    text: str | None = None
    details: dict[str, str] | None = None
    file_name: str | None = None
    content_type: str | None = None
    damaged: bool = False
    # Added after the reader's office referred the report and kept a copy:
    # sealed to the offices handling it since, not to the reader's.
    not_shared: bool = False
    deleted_by_source: bool = False
    unread: bool = False


def _actor(officer: Officer) -> str:
    return officer.username


def _sealing_key(
    instance: Instance,
    session: Session,
    officer: Officer,
    report: Report,
    code: str,
    holding: PrivateKey | None = None,
) -> PublicKey:
    """An office's key to seal to, checked by `offices.trusted_public_key`.

    On a mismatch nothing has been sealed or changed yet: a `key.mismatch`
    event is recorded, which the caller must commit although the action
    fails (as for `SourceKeyMismatch`), and KeyMismatch is raised.
    """
    try:
        return offices.trusted_public_key(session, instance.config, code, holding=holding)
    except offices.KeyMismatch as mismatch:
        audit.record(
            session, _actor(officer), "key.mismatch", report_id=report.id, detail=mismatch.detail
        )
        raise


# How `refer` records, in its audit event, the last item a kept copy shares.
_KEPT_COPY = " (copy kept of items up to no. {last})"
_KEPT_COPY_PATTERN = re.compile(r" \(copy kept of items up to no\. (\d+)\)$")


@dataclass(frozen=True)
class _Sharing:
    """Which items an office reading through a kept copy was never given.

    An office that referred a report and kept a copy was given every item
    up to the referral (its `refer` event says up to which one); what the
    report's office adds later is sealed to that office alone. Such an item
    has no entry for the copy's office in its key block: it is "not
    shared", not damaged. An entry that is there and fails to open, an item
    from before the referral without one, or any failure for the handling
    office itself is damage.
    """

    reader: bytes | None = None  # the copy's recipient id; None for the handling office
    shared_up_to: int | None = None  # None: the referral predates the record of it

    def withheld(self, item: Item) -> bool:
        """True if the item was added after the referral and not sealed to the reader."""
        if self.reader is None:
            return False
        if self.shared_up_to is not None and item.seq <= self.shared_up_to:
            return False
        try:
            return self.reader not in envelope.recipient_ids(item.key_block)
        except DecryptionError:
            return False  # a key block that does not parse is damaged, whoever reads it


def _sharing(session: Session, report: Report, office_key: PrivateKey) -> _Sharing:
    """How the office whose key this is reads the report: handling it, or through a copy."""
    public = bytes(office_key.public_key)
    handling = session.get(Office, report.office_code)
    if handling is None or handling.public_key == public:
        return _Sharing()
    code = session.execute(select(Office.code).where(Office.public_key == public)).scalar()
    referrals = session.execute(
        select(AuditEvent.detail)
        .where(AuditEvent.report_id == report.id, AuditEvent.action == "report.refer")
        .order_by(AuditEvent.id.desc())
    ).scalars()
    last = next((d for d in referrals if code and d.startswith(f"{code} -> ")), "")
    kept = _KEPT_COPY_PATTERN.search(last)
    return _Sharing(
        envelope.recipient_id(office_key.public_key), int(kept.group(1)) if kept else None
    )


def thread(
    instance: Instance,
    session: Session,
    officer: Officer,
    office_key: PrivateKey,
    report: Report,
) -> list[ThreadEntry]:
    """The whole thread, decrypted in memory; marks it read and records the reading.

    Identity details are not decrypted here: see `reveal_identity`. An item
    that cannot be decrypted is shown as damaged and recorded; the rest of
    the thread still works. Sizes are the sealed ones, not the row's. An item
    added after the reader's office referred the report (keeping a copy) is
    shown as not shared with it, and is no damage (see `_Sharing`).
    """
    sharing = _sharing(session, report, office_key)
    items = list(
        session.execute(
            select(Item).where(Item.report_id == report.id).order_by(Item.seq)
        ).scalars()
    )
    read = set(
        session.execute(
            select(ItemRead.item_id).where(
                ItemRead.officer_id == officer.id, ItemRead.item_id.in_([i.id for i in items])
            )
        ).scalars()
    )
    authors = {
        o.id: o.display_name
        for o in session.execute(
            select(Officer).where(Officer.id.in_({i.author_id for i in items if i.author_id}))
        ).scalars()
    }
    entries = []
    for item in items:
        kind = item.kind
        base = ThreadEntry(
            id=item.id,
            seq=item.seq,
            kind=kind,
            from_source=kind in SOURCE_KINDS,
            created_at=item.created_at,
            size=item.size,
            author=authors.get(item.author_id) if item.author_id else None,
            deleted_by_source=item.deleted_by_source,
            unread=item.id not in read,
        )
        try:
            if kind not in set(ItemKind):
                raise DecryptionError()  # nothing says how to open an item of no known kind
            if kind == ItemKind.IDENTITY:
                # Its key, length, header and AD are checked; its content is not decrypted.
                contents = _file_contents(instance, item, office_key)
                entries.append(replace(base, size=contents.size))
            elif kind == ItemKind.FILE:
                contents = _file_contents(instance, item, office_key)
                entries.append(
                    replace(
                        base,
                        size=contents.size,
                        file_name=contents.name,
                        content_type=contents.content_type,
                    )
                )
            else:
                data = open_item_bytes(instance, item, office_key)
                text, details = read_message_document(data)
                entries.append(replace(base, size=len(data), text=text, details=details))
        except DecryptionError:
            if sharing.withheld(item):
                entries.append(replace(base, not_shared=True))
            else:
                entries.append(replace(base, damaged=True))
                audit.record(
                    session, _actor(officer), "item.damaged", report_id=report.id, detail=item.id
                )
        if item.id not in read:
            session.add(ItemRead(officer_id=officer.id, item_id=item.id))
    audit.record(session, _actor(officer), "report.read", report_id=report.id)
    return entries


def _file_contents(instance: Instance, item: Item, office_key: PrivateKey) -> envelope.Contents:
    reader, body = open_item(instance, item, office_key)
    body.close()
    return reader.contents


def _authenticate(instance: Instance, item: Item, office_key: PrivateKey) -> None:
    """Read the whole item once, keeping nothing; DecryptionError if any of it is damaged."""
    reader, body = open_item(instance, item, office_key)
    with body:
        try:
            for _ in reader.chunks():
                pass
        except (OSError, ValueError) as exc:
            raise DecryptionError() from exc


@dataclass
class FileDownload:
    """An opened file: its name, size, and its content as authenticated chunks."""

    name: str
    size: int
    chunks: Iterator[bytes]


def open_file(
    instance: Instance,
    session: Session,
    officer: Officer,
    office_key: PrivateKey,
    report: Report,
    item_id: str,
) -> FileDownload:
    """Open a file item for a streamed download, and record the download.

    DecryptionError (recorded) if it is damaged; NotShared (not recorded:
    nothing is wrong with it) if it was added after the reader's office
    referred the report and is not shared with that office.
    """
    item = session.get(Item, item_id) if is_id(item_id) else None
    if item is None or item.report_id != report.id or item.kind != ItemKind.FILE:
        raise NotFound("there is no such file")
    try:
        # A response cannot take back what it has sent: the whole file is
        # authenticated first, so that damage anywhere in it is refused before
        # the first byte goes out (and recorded), not found halfway through.
        _authenticate(instance, item, office_key)
        reader, body = open_item(instance, item, office_key)
    except DecryptionError:
        if _sharing(session, report, office_key).withheld(item):
            raise NotShared(
                "this file was added after your office referred the report,"
                " and is not shared with your office"
            ) from None
        audit.record(session, _actor(officer), "item.damaged", report_id=report.id, detail=item.id)
        raise

    def chunks() -> Iterator[bytes]:
        with body:
            yield from reader.chunks()

    audit.record(session, _actor(officer), "file.download", report_id=report.id, detail=item.id)
    return FileDownload(reader.contents.name, reader.contents.size, chunks())


def _office_message(
    instance: Instance,
    session: Session,
    officer: Officer,
    report: Report,
    text: str,
    kind: ItemKind,
    recipients: list[PublicKey],
) -> Item:
    """Seal an officer's text as a message item of `kind`, already read by its author."""
    stored = seal_bytes(
        instance.store,
        report.id,
        message_document(text),
        recipients,
        content_type=message_type(kind),
    )
    item = add_item(session, report, stored, kind, officer_now(), officer.id)
    session.add(ItemRead(officer_id=officer.id, item_id=item.id))
    return item


def reveal_identity(
    instance: Instance,
    session: Session,
    officer: Officer,
    office_key: PrivateKey,
    report: Report,
    reason: str,
) -> dict[str, str]:
    """Decrypt the source's identity details, recording who asked, and why in the thread.

    The reason is case content: it becomes a `reveal` item sealed to the
    handling office (and to the revealing officer's office, if that is a
    kept copy), shown to officers in the thread and never to the source.
    The audit event says only who revealed, when, in which report, and
    names that item. A damaged identity item is recorded as such;
    DecryptionError if none could be opened, and then the caller must commit
    before showing the error. (A source gives one; more than one means rows
    were moved between reports.)
    """
    reason = reason.strip()
    if len(reason) < 10:
        raise DropboxError("write the reason for revealing the identity (at least 10 characters)")
    items = list(
        session.execute(
            select(Item)
            .where(Item.report_id == report.id, Item.kind == ItemKind.IDENTITY)
            .order_by(Item.seq)
        ).scalars()
    )
    if not items:
        raise NotFound("the source gave no identity details")
    # Both keys checked before anything is sealed: the handling office's against
    # its pin (and the held key, if the reader is of that office), and a kept
    # copy's own office key against the key the reader holds and its pin.
    reading = access.reading_office(session, officer, report)
    handling = report.office_code
    own = reading == handling
    handling_key = _sealing_key(
        instance, session, officer, report, handling, office_key if own else None
    )
    reading_key = (
        handling_key
        if own
        else _sealing_key(instance, session, officer, report, reading, office_key)
    )
    recorded = _office_message(
        instance, session, officer, report, reason, ItemKind.REVEAL, [handling_key, reading_key]
    )
    audit.record(
        session, _actor(officer), "identity.reveal", report_id=report.id, detail=recorded.id
    )
    sharing = _sharing(session, report, office_key)
    details: dict[str, str] = {}
    opened = False
    for item in items:
        try:
            details.update(read_message_document(open_item_bytes(instance, item, office_key))[1])
            opened = True
        except DecryptionError:
            if not sharing.withheld(item):
                audit.record(
                    session, _actor(officer), "item.damaged", report_id=report.id, detail=item.id
                )
    if not opened:
        raise DecryptionError()
    return details


@dataclass(frozen=True)
class SentReply:
    """A reply sealed to the source, and whether the source's key could be checked first."""

    item: Item
    # False for a report made before its first item bound the source's key.
    source_key_checked: bool


def reply(
    instance: Instance,
    session: Session,
    officer: Officer,
    office_key: PrivateKey,
    report: Report,
    text: str,
) -> SentReply:
    """Send a message to the source (sealed to the source and the handling office).

    The source's key in the report row is first checked against the copy
    bound in the report's first item (`check_source_key`): someone who can
    write the database could otherwise swap in their own key and read every
    later reply. If it differs or cannot be read, nothing is sealed; a
    `key.mismatch` event is recorded, which the caller must commit although
    the reply fails, and SourceKeyMismatch is raised. The office's key is
    checked the same way (`_sealing_key`), against the key the officer holds.
    """
    text = text.strip()
    if not text:
        raise DropboxError("write a message before sending")
    checked = check_source_key(instance, session, report, office_key)
    if checked in KEY_REFUSALS:
        audit.record(
            session,
            _actor(officer),
            "key.mismatch",
            report_id=report.id,
            detail=KEY_EVENTS[checked],
        )
        raise SourceKeyMismatch(KEY_REFUSALS[checked], KEY_EVENTS[checked])
    office_public = _sealing_key(instance, session, officer, report, report.office_code, office_key)
    item = post_reply(instance, session, report, text, officer.id, office_key=office_public)
    session.add(ItemRead(officer_id=officer.id, item_id=item.id))
    audit.record(session, _actor(officer), "report.reply", report_id=report.id, detail=item.id)
    return SentReply(item, checked == SourceKeyCheck.MATCHES)


def add_note(
    instance: Instance,
    session: Session,
    officer: Officer,
    report: Report,
    text: str,
    *,
    office_key: PrivateKey | None = None,
) -> Item:
    """Add an internal note, sealed to the handling office only; the source never sees it.

    The office's key is checked first (`_sealing_key`): against `office_key`,
    the handling office's secret key, if the caller holds it, and its pin.
    """
    text = text.strip()
    if not text:
        raise DropboxError("write the note before saving")
    recipients = [_sealing_key(instance, session, officer, report, report.office_code, office_key)]
    item = _office_message(instance, session, officer, report, text, ItemKind.NOTE, recipients)
    audit.record(session, _actor(officer), "report.note", report_id=report.id, detail=item.id)
    return item


def assign(session: Session, officer: Officer, report: Report, assignee_id: int | None) -> None:
    """Assign the report to an officer of the handling office, or to nobody."""
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
    instance: Instance,
    session: Session,
    officer: Officer,
    report: Report,
    to_status: str,
    outcome: str | None = None,
    reason: str = "",
    *,
    office_key: PrivateKey | None = None,
) -> None:
    """Move the report along its lifecycle; closing needs an outcome and a reason.

    Closing writes a note (see `add_note`, which `office_key` is passed to).
    """
    if to_status not in TRANSITIONS.get(report.status, frozenset()):
        raise DropboxError(f"a report that is {report.status} cannot become {to_status}")
    now = officer_now()
    if to_status == Status.CLOSED:
        if outcome not in set(Outcome):
            raise DropboxError("choose the outcome before closing the report")
        if not reason.strip():
            raise DropboxError("write the reason for closing the report")
        add_note(
            instance,
            session,
            officer,
            report,
            f"Closed ({outcome}): {reason.strip()}",
            office_key=office_key,
        )
        report.outcome = outcome
        report.closed_at = now
    else:
        outcome = None
    if to_status == Status.ACKNOWLEDGED and report.acknowledged_at is None:
        report.acknowledged_at = now
    if to_status == Status.REOPENED:
        report.outcome, report.closed_at = None, None
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
    audit.record(
        session,
        _actor(officer),
        "report.status",
        report_id=report.id,
        detail=f"{report.status} -> {to_status}" + (f" ({outcome})" if outcome else ""),
    )
    report.status = to_status
    report.last_activity_at = now


def refer(
    instance: Instance,
    session: Session,
    officer: Officer,
    office_key: PrivateKey,
    report: Report,
    to_office: str,
    keep_copy: bool,
) -> None:
    """Hand the report to the other office: every item's key is re-sealed to it.

    The body of each item is untouched. Unless the referring office keeps a
    copy, its entries are removed from every key block, so it can no longer
    decrypt the report even with its own key. If it keeps one, the audit
    event names the last item the copy holds: an item after it that the copy
    cannot open was not shared with it; one up to it was damaged (`_Sharing`).
    Before anything is re-sealed, the referring office's key is checked
    against `office_key` and its pin, and the other office's against its pin
    (`_sealing_key`).
    """
    if to_office == report.office_code:
        raise DropboxError("the report is already with that office")
    if access.reading_office(session, officer, report) != report.office_code:
        raise AccessDenied("only the office handling a report can refer it")
    from_key = _sealing_key(instance, session, officer, report, report.office_code, office_key)
    to_key = _sealing_key(instance, session, officer, report, to_office)
    items = list(session.execute(select(Item).where(Item.report_id == report.id)).scalars())
    for item in items:
        try:
            key_block = envelope.add_recipient(item.key_block, office_key, to_key)
        except DecryptionError:
            audit.record(
                session, _actor(officer), "item.damaged", report_id=report.id, detail=item.id
            )
            continue
        if not keep_copy:
            key_block = envelope.remove_recipient(key_block, from_key)
        item.key_block = key_block
    from_office = report.office_code
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


def delete_report(
    instance: Instance, session: Session, officer: Officer, report: Report
) -> list[str]:
    """An officer deletes a report: crypto-shred it (see `shred_report`); return blobs to unlink."""
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
    audit.record(session, actor, action, report_id=report.id, detail=detail)
    session.delete(report)
    return blobs


def remove_blobs(instance: Instance, blobs: list[str]) -> None:
    """Unlink the blobs of a deleted report (their keys are already gone)."""
    for name in blobs:
        instance.store.delete(name)
