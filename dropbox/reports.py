"""What a source does: submit a report, answer, read the office's messages, delete one.

The items themselves (sealing, opening, the message documents) are in
`dropbox.items`. Files stream in encrypted to a key that lives only for the
request (source_interface/uploads.py), because the office that must read
them is known only once the whole form has been read; `submit` and
`add_answer` have them re-sealed to the office (`Attachments`), and the
request key is forgotten.
"""

from __future__ import annotations

import calendar
import functools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from crypto import envelope
from crypto.errors import DecryptionError
from crypto.keys import Recipient, public_key_from_bytes
from dropbox import notify, offices
from dropbox.errors import DropboxError, NotFound
from dropbox.instance import Instance
from dropbox.items import (
    StoredEnvelope,
    add_item,
    is_id,
    message_document,
    message_type,
    open_item_bytes,
    read_message_document,
    seal_bytes,
    source_day,
)
from dropbox.models import (
    SOURCE_KINDS,
    TO_SOURCE_KINDS,
    Item,
    ItemKind,
    Office,
    Report,
    Status,
    StatusChange,
)

ACKNOWLEDGE_DAYS = 7
FEEDBACK_MONTHS = 3


def add_months(day: date, months: int) -> date:
    """The same day `months` later, or the month's last day if it is shorter."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


@dataclass(frozen=True)
class NewReport:
    """Everything a first submission carries, already checked by the interface."""

    lookup_id: bytes
    source_public_key: Recipient  # X-Wing for a new report (crypto.codenames)
    category: str
    text: str
    details: dict[str, str]
    identity: dict[str, str]
    urgent: bool
    acknowledgement: str


# Where the designation word lists live: neutral words (colours, plants, places,
# everyday objects), and the reviewed words a designation must never hold.
DESIGNATION_LISTS = Path(__file__).with_name("wordlists")


# Tries before giving up on a free designation. With N reports among C labels a try
# collides with probability N/C, so 100 tries all collide with (N/C)^100: below
# 10^-70 at 100,000 reports among the 528,906 labels the lists give (771 by 686).
DESIGNATION_TRIES = 100


def read_word_list(path: Path) -> tuple[str, ...]:
    """The words of a list file: one a line, '#' starts a comment, blank lines skipped."""
    words = (line.split("#", 1)[0].strip() for line in path.read_text("utf-8").splitlines())
    return tuple(word for word in words if word)


@functools.cache
def designation_words() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The first and second words designations are made of, read once per process.

    First words are colours, plants, materials, places and weather; second words
    are everyday objects. Neither may suggest a judgement of the report: see
    `dropbox/wordlists/designation-excluded.txt` and tests/test_wordlists.py.

    Built whole before anyone sees them: filling shared lists in place let a
    second thread see the first words but no second words yet, and fail
    (IndexError) on the first reports a new worker received at once
    (tests/test_load.py).
    """
    first = read_word_list(DESIGNATION_LISTS / "designation-first.txt")
    second = read_word_list(DESIGNATION_LISTS / "designation-second.txt")
    return first, second


def _designation() -> str:
    first, second = designation_words()
    return f"{secrets.choice(first)} {secrets.choice(second)}"


def new_designation(session: Session) -> str:
    """A random two-word label, unique in the instance, never derived from the codename."""
    for _ in range(DESIGNATION_TRIES):
        candidate = _designation()
        if (
            session.execute(select(Report.id).where(Report.designation == candidate)).first()
            is None
        ):
            return candidate
    raise DropboxError("could not find a free designation")  # see DESIGNATION_TRIES


def find(session: Session, lookup_id: bytes) -> Report | None:
    """The report whose codename gives this lookup id, if any."""
    return session.execute(select(Report).where(Report.lookup_id == lookup_id)).scalar_one_or_none()


class Attachments(Protocol):
    """The files of one request, received before the office that must read them was known.

    The source interface's `Upload` (source_interface/uploads.py) streams each
    file into an envelope sealed to a key that lives only for the request.
    """

    def sealed_to(self, recipients: Sequence[envelope.Recipient]) -> list[StoredEnvelope]:
        """Each complete file, its key given to the recipients and taken from the request."""
        ...


def submit(
    instance: Instance,
    session: Session,
    report_id: str,
    new: NewReport,
    files: Attachments | None = None,
) -> Report:
    """Record a first report with its files, and post the automatic acknowledgement."""
    config = instance.config
    try:
        office_code = config.category(new.category).office
    except KeyError:
        raise DropboxError("unknown category") from None
    office = session.get(Office, office_code)
    if office is None:
        raise DropboxError(f"office {office_code} cannot receive reports yet (no keys)")
    if find(session, new.lookup_id) is not None:
        raise DropboxError("a report already exists for this codename")
    # Checked against the configuration's pin before anything is stored or sealed.
    office_key = offices.trusted_public_key(session, config, office_code)
    day = source_day()
    report = Report(
        id=report_id,
        lookup_id=new.lookup_id,
        source_public_key=bytes(new.source_public_key),
        designation=new_designation(session),
        office_code=office_code,
        category=new.category,
        status=Status.RECEIVED,
        urgent=new.urgent,
        received_at=day,
        acknowledge_due=day.date() + timedelta(days=ACKNOWLEDGE_DAYS),
        feedback_due=add_months(day.date(), FEEDBACK_MONTHS),
        last_activity_at=day,
        next_seq=1,
    )
    session.add(report)
    session.flush()
    store = instance.store
    message = seal_bytes(
        store,
        report.id,
        message_document(new.text, new.details, source_key=new.source_public_key),
        [office_key],
        content_type=message_type(ItemKind.MESSAGE),
    )
    add_item(session, report, message, ItemKind.MESSAGE, day)
    if any(new.identity.values()):
        identity = seal_bytes(
            store,
            report.id,
            message_document("", new.identity),
            [office_key],
            content_type=message_type(ItemKind.IDENTITY),
        )
        add_item(session, report, identity, ItemKind.IDENTITY, day)
    for stored in files.sealed_to([office_key]) if files is not None else []:
        add_item(session, report, stored, ItemKind.FILE, day)
    acknowledgement = seal_bytes(
        store,
        report.id,
        message_document(new.acknowledgement),
        [office_key, new.source_public_key],
        content_type=message_type(ItemKind.ACKNOWLEDGEMENT),
    )
    add_item(session, report, acknowledgement, ItemKind.ACKNOWLEDGEMENT, day)
    session.add(
        StatusChange(report_id=report.id, from_status=None, to_status=Status.RECEIVED, at=day)
    )
    # Queued in this transaction, sent later by `dropbox notify`: never while the source waits.
    notify.report_arrived(session, report)
    return report


def add_answer(
    instance: Instance,
    session: Session,
    report: Report,
    text: str,
    files: Attachments,
    source_key: Recipient | None = None,
) -> list[Item]:
    """Record a returning source's answer: text (if any) and files, sealed to the office only.

    `source_key` is the key the source interface derived from the codename
    (never the report row's): the text binds it, like the first item. The
    office's key is checked against its pin first (KeyMismatch: nothing sealed).
    """
    if session.get(Office, report.office_code) is None:
        raise NotFound("the office of this report has no key")
    office_key = offices.trusted_public_key(session, instance.config, report.office_code)
    day = source_day()
    items = []
    if text:
        stored = seal_bytes(
            instance.store,
            report.id,
            message_document(text, source_key=source_key),
            [office_key],
            content_type=message_type(ItemKind.MESSAGE),
        )
        items.append(add_item(session, report, stored, ItemKind.MESSAGE, day))
    for stored in files.sealed_to([office_key]):
        items.append(add_item(session, report, stored, ItemKind.FILE, day))
    if items:
        report.last_activity_at = day
        notify.answer_arrived(session, report)
    return items


@dataclass(frozen=True)
class SourceEntry:
    """One line of the thread as the source sees it (content only for office messages).

    `new`: an officer's reply that the source's thread page has not shown yet
    (`mark_seen_by_source` records that it has). The automatic acknowledgement
    is never new: the receipt page announces it.
    """

    id: str
    kind: str
    from_source: bool
    created_at: datetime
    size: int
    text: str | None = None
    damaged: bool = False
    new: bool = False


def thread_for_source(
    instance: Instance, session: Session, report: Report, source_key: envelope.SecretKey
) -> list[SourceEntry]:
    """The thread in order; office messages decrypted in memory with the source's key.

    `source_key` may be a chain (the source's two key pairs, the report's own
    first): an item opens with the first of its keys it has an entry for.
    """
    entries = []
    for item in session.execute(
        select(Item).where(Item.report_id == report.id).order_by(Item.seq)
    ).scalars():
        if item.kind not in set(ItemKind):
            continue  # a row whose kind was altered: nothing the source should see
        kind = ItemKind(item.kind)
        # Only what the source sent and what was sent to them: never the
        # offices' own items (notes, the reasons for revealing the identity).
        if kind not in SOURCE_KINDS | TO_SOURCE_KINDS or item.deleted_by_source:
            continue
        if kind not in TO_SOURCE_KINDS:
            entries.append(SourceEntry(item.id, kind, True, item.created_at, item.size))
            continue
        new = kind == ItemKind.REPLY and not item.seen_by_source
        try:
            text, _ = read_message_document(open_item_bytes(instance, item, source_key))
            entries.append(
                SourceEntry(item.id, kind, False, item.created_at, item.size, text, new=new)
            )
        except DecryptionError:
            entries.append(
                SourceEntry(item.id, kind, False, item.created_at, item.size, damaged=True, new=new)
            )
    return entries


def mark_seen_by_source(session: Session, report: Report, item_ids: Sequence[str]) -> None:
    """Record that the source's thread page has shown these replies: they are no longer new.

    Only the report's own replies that the source has not deleted are touched;
    any other id is ignored (the caller passes what the page showed).
    """
    if not item_ids:
        return
    session.execute(
        update(Item)
        .where(
            Item.report_id == report.id,
            Item.id.in_(list(item_ids)),
            Item.kind == ItemKind.REPLY,
            Item.deleted_by_source.is_(False),
            Item.seen_by_source.is_(False),
        )
        .values(seen_by_source=True)
        .execution_options(synchronize_session=False)
    )


def delete_for_source(
    session: Session, report: Report, item_id: str, source_keys: Sequence[Recipient] | None = None
) -> None:
    """Remove an office message from the source's view and destroy the source's copy of its key.

    The office keeps its own copy; a codename that leaks later no longer opens it.
    `source_keys` are the keys the source interface derived from the codename
    (both key pairs): the entries removed are theirs, even if the report
    row's key was swapped. Without them, the row's key's entry goes.
    """
    item = session.get(Item, item_id) if is_id(item_id) else None
    if item is None or item.report_id != report.id or item.kind not in TO_SOURCE_KINDS:
        raise NotFound("that message does not exist")
    if item.deleted_by_source:
        return
    try:
        keys = source_keys or [public_key_from_bytes(report.source_public_key)]
        key_block = item.key_block
        present = set(envelope.recipient_ids(key_block))
        for key in keys:
            if envelope.recipient_id(key) in present:
                key_block = envelope.remove_recipient(key_block, key)
        item.key_block = key_block
    except (DecryptionError, ValueError):
        # A damaged key block, or one whose only entry left is the source's:
        # nobody else can open it, so all of it goes, and the source's copy with it.
        item.key_block = bytes(len(item.key_block))
    item.deleted_by_source = True
