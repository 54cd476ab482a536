"""Reports and their threads: submission, answers, office messages, and what a source may see.

Every item is an envelope: the body goes to the store, the key block to the
item row. Files stream in encrypted to a key that lives only for the request
(an `Upload`), because the office that must read them is known only once the
whole form has been read; they are then re-sealed to the office, and the
request key is forgotten.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import enum
import functools
import hmac
import json
import secrets
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from nacl.public import PrivateKey, PublicKey
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from crypto import envelope
from crypto.errors import DecryptionError
from dropbox import offices
from dropbox.errors import DropboxError, NotFound
from dropbox.instance import Instance
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
from dropbox.store import BlobNotFound, BlobWriter, Store

ACKNOWLEDGE_DAYS = 7
FEEDBACK_MONTHS = 3
MESSAGE_TYPE = "application/vnd.dropbox.message+json"
MAX_NAME_BYTES = 255


def source_day() -> datetime:
    """The time stamp for anything a source causes: today, to the day, never finer."""
    now = datetime.now(UTC)
    return datetime(now.year, now.month, now.day)


def officer_now() -> datetime:
    """The time stamp for what officers do (they are not anonymous): to the second."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def add_months(day: date, months: int) -> date:
    """The same day `months` later, or the month's last day if it is shorter."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def new_id() -> str:
    """A random id for a report or an item (it says nothing about either)."""
    return secrets.token_hex(16)


def is_id(text: str) -> bool:
    """True if the text could be an id from `new_id`; nothing else names a report or an item.

    Checked before a lookup, so that text from a request that no id can match
    (a NUL, which PostgreSQL refuses in a query, or a huge string) never
    reaches the database.
    """
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def item_context(report_id: str, item_id: str) -> bytes:
    """What an item's envelope is bound to, so a blob cannot move to another report or item."""
    return envelope.context("dropbox-item", report_id, item_id)


def message_type(kind: ItemKind) -> str:
    """The sealed content type of a message item: it names the kind, so the row cannot change it."""
    return f"{MESSAGE_TYPE}; kind={kind.value}"


def check_kind(contents: envelope.Contents, kind: str) -> None:
    """Refuse an envelope whose sealed name and type do not fit the kind its row claims.

    Used where items are opened: the source interface, and the reviewer app
    (`journalist_interface.casefile`), where the kind is what the server claims.

    A file always has a name; every other item is a message document without one.
    """
    if kind == ItemKind.FILE:
        fits = contents.name != ""
    else:
        fits = contents.name == "" and contents.content_type == f"{MESSAGE_TYPE}; kind={kind}"
    if not fits:
        raise DecryptionError()


def clean_file_name(name: str | None) -> str:
    """A safe display name: no path, no control characters, at most 255 bytes of UTF-8."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if unicodedata.category(c)[0] != "C").strip().lstrip(".")
    encoded = base.encode("utf-8")[:MAX_NAME_BYTES]
    return encoded.decode("utf-8", "ignore") or "file"


def clean_content_type(value: str | None) -> str:
    """The declared content type if it looks like one; octet-stream otherwise."""
    value = (value or "").split(";", 1)[0].strip().lower()
    if 0 < len(value) <= 127 and value.count("/") == 1 and value.isascii() and " " not in value:
        return value
    return "application/octet-stream"


@dataclass
class StoredEnvelope:
    """An envelope whose body is written (not yet committed) and whose key block is known."""

    item_id: str
    blob: BlobWriter
    key_block: bytes
    size: int
    name: str = ""


class UploadedFile:
    """One file of an upload: a writable that encrypts as the request streams in.

    Werkzeug's multipart parser writes to it and calls ``seek(0)`` when the
    part is complete; that is when the envelope is closed.
    """

    def __init__(self, upload: Upload, name: str, content_type: str) -> None:
        self.item_id = new_id()
        self.name = name
        self.blob = upload.store.begin()
        self._writer = envelope.EnvelopeWriter(
            self.blob,
            [upload.request_key.public_key],
            item_context(upload.report_id, self.item_id),
            name=name,
            content_type=content_type,
        )
        self.key_block: bytes | None = None

    def write(self, data: bytes) -> int:
        """Encrypt a piece of the file."""
        return self._writer.write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        """Called by the parser at the end of the part: finish the envelope."""
        if self.key_block is None:
            self.key_block = self._writer.close()
        return 0

    def read(self, size: int = -1) -> bytes:
        """Plaintext is never kept, so there is nothing to read back."""
        return b""

    @property
    def size(self) -> int:
        """Bytes of content received."""
        return self._writer.size

    def discard(self) -> None:
        """Drop the partial or unwanted blob."""
        self.blob.discard()


@dataclass
class Upload:
    """The files of one request, encrypted to a request key until the office is known."""

    store: Store
    report_id: str
    request_key: PrivateKey = field(default_factory=PrivateKey.generate)
    files: list[UploadedFile] = field(default_factory=list)

    def open_file(self, filename: str | None, content_type: str | None) -> UploadedFile:
        """Start receiving one file part."""
        uploaded = UploadedFile(self, clean_file_name(filename), clean_content_type(content_type))
        self.files.append(uploaded)
        return uploaded

    def complete_files(self) -> list[UploadedFile]:
        """Files fully received and not empty (a browser sends an empty part for no file)."""
        return [f for f in self.files if f.key_block is not None and (f.size or f.name != "file")]

    def discard(self) -> None:
        """Remove every blob not yet committed (a failed or refused request)."""
        for uploaded in self.files:
            if not uploaded.blob.committed:
                uploaded.discard()

    def reseal(self, uploaded: UploadedFile, recipients: Sequence[PublicKey]) -> StoredEnvelope:
        """Give the recipients the file's key and forget the request key's entry."""
        assert uploaded.key_block is not None  # noqa: S101 - complete_files guarantees it
        key_block = uploaded.key_block
        for recipient in recipients:
            key_block = envelope.add_recipient(key_block, self.request_key, recipient)
        key_block = envelope.remove_recipient(key_block, self.request_key.public_key)
        return StoredEnvelope(uploaded.item_id, uploaded.blob, key_block, uploaded.size)


def seal_bytes(
    store: Store,
    report_id: str,
    data: bytes,
    recipients: Sequence[PublicKey],
    *,
    content_type: str,
    name: str = "",
) -> StoredEnvelope:
    """Encrypt a small item held in memory into a new blob (not yet committed)."""
    item_id = new_id()
    blob = store.begin()
    try:
        writer = envelope.EnvelopeWriter(
            blob, recipients, item_context(report_id, item_id), name=name, content_type=content_type
        )
        writer.write(data)
        key_block = writer.close()
    except BaseException:
        blob.discard()
        raise
    return StoredEnvelope(item_id, blob, key_block, len(data))


def message_document(
    text: str, details: dict[str, str] | None = None, *, source_key: PublicKey | None = None
) -> bytes:
    """The plaintext of a message item: the text, any labelled details, and a bound source key.

    The source's messages (the report's first item, and each later answer)
    bind the source's public key (`source_key`), as the source interface
    derived it from the codename: sealed to the office, a copy of the key
    that a database writer cannot change, to check the report row's key
    against (`check_source_key`).
    """
    fields = {k: v for k, v in (details or {}).items() if v}
    document: dict[str, object] = {"text": text, "details": fields}
    if source_key is not None:
        document["source_key"] = base64.b64encode(bytes(source_key)).decode("ascii")
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


def read_message_document(data: bytes) -> tuple[str, dict[str, str]]:
    """The text and details of a message item."""
    try:
        document = json.loads(data.decode("utf-8"))
        text, details = document["text"], document.get("details", {})
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DecryptionError() from exc
    if not isinstance(text, str) or not isinstance(details, dict):
        raise DecryptionError()
    return text, {str(k): str(v) for k, v in details.items()}


def read_bound_source_key(data: bytes) -> bytes | None:
    """The source's public key bound in a message document; None if it binds none.

    Items made before keys were bound, and every item but a report's first,
    have none. A field that is there but is not a public key is damage.
    """
    try:
        document = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise DecryptionError() from exc
    value = document.get("source_key") if isinstance(document, dict) else None
    if value is None:
        return None
    if not isinstance(value, str):
        raise DecryptionError()
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecryptionError() from exc
    if len(key) != PublicKey.SIZE:
        raise DecryptionError()
    return key


class SourceKeyCheck(enum.StrEnum):
    """What the report's first item says about the source's public key in the report row."""

    MATCHES = "matches"  # the row holds the key the source sent with the report
    NOT_BOUND = "not bound"  # the first item predates binding: nothing to check against
    DIFFERS = "differs"  # the row's key was changed after the report was made
    # The first item is gone, moved, damaged or not the source's message:
    # nothing shows which key the source sent.
    UNREADABLE = "unreadable"


def check_source_key(
    instance: Instance, session: Session, report: Report, office_key: PrivateKey
) -> SourceKeyCheck:
    """Compare the row's source key with the copies bound in the source's messages.

    The report's first item (the lowest number) must be the source's
    message, opened with the office's key: rows deleted or renumbered, or a
    damaged item there, leave nothing that vouches for the key. Every later
    message from the source that opens binds a copy too, so that moving
    the first message behind an answer, or deleting its row, does not pass
    a newer report off as one made before keys were bound.
    """
    first_seq = session.execute(
        select(Item.seq).where(Item.report_id == report.id).order_by(Item.seq).limit(1)
    ).scalar()
    items = (
        session.execute(
            select(Item)
            .where(Item.report_id == report.id, Item.kind == ItemKind.MESSAGE)
            .order_by(Item.seq)
        )
        .scalars()
        .all()
    )
    bound: list[bytes] = []
    first_opened = False  # stays False if the first item is not the source's message
    for item in items:
        try:
            key = read_bound_source_key(open_item_bytes(instance, item, office_key))
        except DecryptionError:
            if item.seq == first_seq:
                return SourceKeyCheck.UNREADABLE
            continue  # a damaged answer vouches for nothing; reading the thread records it
        first_opened = first_opened or item.seq == first_seq
        if key is not None:
            bound.append(key)
    if not first_opened:
        return SourceKeyCheck.UNREADABLE
    row_key = bytes(report.source_public_key)
    # Constant time: the row's key is not secret, but nothing should hint how much of it matched.
    if not all([hmac.compare_digest(key, row_key) for key in bound]):
        return SourceKeyCheck.DIFFERS
    return SourceKeyCheck.MATCHES if bound else SourceKeyCheck.NOT_BOUND


@dataclass(frozen=True)
class NewReport:
    """Everything a first submission carries, already checked by the interface."""

    lookup_id: bytes
    source_public_key: PublicKey
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


def add_item(
    session: Session,
    report: Report,
    stored: StoredEnvelope,
    kind: ItemKind,
    created_at: datetime,
    author_id: int | None = None,
) -> Item:
    """Commit the blob, then record the row (committed by the caller's transaction).

    In this order a crash leaves at worst a blob without a row (found by
    fsck), never a row whose blob is missing.
    """
    if not stored.blob.committed:
        stored.blob.commit()
    # The number comes from the row, in one UPDATE, not from the loaded object:
    # two items added to one report at once (PostgreSQL runs the transactions
    # side by side) get different numbers, the second waiting for the first.
    seq: int = (
        session.execute(
            update(Report)
            .where(Report.id == report.id)
            .values(next_seq=Report.next_seq + 1)
            .returning(Report.next_seq)
            .execution_options(synchronize_session=False)
        ).scalar_one()
        - 1
    )
    set_committed_value(report, "next_seq", seq + 1)
    item = Item(
        id=stored.item_id,
        report_id=report.id,
        seq=seq,
        kind=kind,
        author_id=author_id,
        created_at=created_at,
        size=stored.size,
        key_block=stored.key_block,
        blob=stored.blob.name,
        deleted_by_source=False,
    )
    session.add(item)
    session.flush()  # so rows that refer to the item (read marks) can follow it
    return item


def submit(
    instance: Instance, session: Session, report_id: str, new: NewReport, upload: Upload
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
    for uploaded in upload.complete_files():
        add_item(session, report, upload.reseal(uploaded, [office_key]), ItemKind.FILE, day)
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
    return report


def add_answer(
    instance: Instance,
    session: Session,
    report: Report,
    text: str,
    upload: Upload,
    source_key: PublicKey | None = None,
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
    for uploaded in upload.complete_files():
        stored = upload.reseal(uploaded, [office_key])
        items.append(add_item(session, report, stored, ItemKind.FILE, day))
    if items:
        report.last_activity_at = day
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
    instance: Instance, session: Session, report: Report, source_key: PrivateKey
) -> list[SourceEntry]:
    """The thread in order; office messages decrypted in memory with the source's key."""
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


def open_item(
    instance: Instance, item: Item, secret_key: PrivateKey
) -> tuple[envelope.EnvelopeReader, BinaryIO]:
    """Open an item's envelope: its reader, and the blob the caller must close.

    A missing blob, an unreadable one, a bad envelope or one sealed as another
    kind of item all raise DecryptionError.
    """
    try:
        body = instance.store.open(item.blob)
    except (BlobNotFound, OSError) as exc:
        raise DecryptionError() from exc
    try:
        context = item_context(item.report_id, item.id)
        reader = envelope.EnvelopeReader(item.key_block, body, secret_key, context)
        check_kind(reader.contents, item.kind)
        return reader, body
    except (DecryptionError, OSError, ValueError) as exc:
        body.close()
        raise DecryptionError() from exc


def open_item_bytes(instance: Instance, item: Item, secret_key: PrivateKey) -> bytes:
    """Decrypt a small item into memory (messages, notes; never used for files)."""
    reader, body = open_item(instance, item, secret_key)
    with body:
        try:
            return b"".join(reader.chunks())
        except (OSError, ValueError) as exc:
            raise DecryptionError() from exc


def delete_for_source(
    session: Session, report: Report, item_id: str, source_key: PublicKey | None = None
) -> None:
    """Remove an office message from the source's view and destroy the source's copy of its key.

    The office keeps its own copy; a codename that leaks later no longer opens it.
    `source_key` is the key the source interface derived from the codename:
    the entry removed is that key's, even if the report row's key was swapped.
    """
    item = session.get(Item, item_id) if is_id(item_id) else None
    if item is None or item.report_id != report.id or item.kind not in TO_SOURCE_KINDS:
        raise NotFound("that message does not exist")
    if item.deleted_by_source:
        return
    try:
        item.key_block = envelope.remove_recipient(
            item.key_block, source_key or PublicKey(report.source_public_key)
        )
    except (DecryptionError, ValueError):
        # A damaged key block, or one whose only entry left is the source's:
        # nobody else can open it, so all of it goes, and the source's copy with it.
        item.key_block = bytes(len(item.key_block))
    item.deleted_by_source = True


def post_reply(
    instance: Instance,
    session: Session,
    report: Report,
    text: str,
    author_id: int | None,
    *,
    office_key: PublicKey | None = None,
) -> Item:
    """Post a message from the office to the source, sealed to both of them.

    It seals to the key in the report row as it is. An officer's reply is
    sealed in the reviewer app instead, which checks that key first
    (`journalist_interface.casefile.reply_recipients`). The office's key is
    `office_key`, already checked by the caller, or else the database's
    checked here against its pin (`offices.trusted_public_key`).
    """
    if session.get(Office, report.office_code) is None:
        raise NotFound("the office of this report has no key")
    if office_key is None:
        office_key = offices.trusted_public_key(session, instance.config, report.office_code)
    recipients = [office_key, PublicKey(report.source_public_key)]
    stored = seal_bytes(
        instance.store,
        report.id,
        message_document(text),
        recipients,
        content_type=message_type(ItemKind.REPLY),
    )
    now = officer_now()
    report.last_activity_at = now
    return add_item(session, report, stored, ItemKind.REPLY, now, author_id)
