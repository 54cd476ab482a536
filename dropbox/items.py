"""Items, the pieces of a report's thread, and what every part of the system does with them.

Every item is an envelope: the body goes to the store, the key block to the
item row, and the envelope is bound to its report and item (`item_context`).
Messages are JSON documents sealed with a content type that names their kind
(`message_type`), checked wherever an item is opened (`check_kind`). The
source's messages bind the source's public key (`check_source_key`).

Used by the source interface's submission (`dropbox.reports`), the case
server (`dropbox.cases`) and the reviewer app, which seals and opens items
on the officer's machine (`journalist_interface.casefile`).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

from nacl.public import PublicKey
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from crypto import envelope, xwing
from crypto.errors import DecryptionError
from crypto.keys import Recipient
from dropbox.instance import Instance
from dropbox.models import (
    Item,
    ItemKind,
    Report,
)
from dropbox.store import BlobNotFound, BlobWriter, Store

MESSAGE_TYPE = "application/vnd.dropbox.message+json"


def source_day() -> datetime:
    """The time stamp for anything a source causes: today, to the day, never finer."""
    now = datetime.now(UTC)
    return datetime(now.year, now.month, now.day)


def officer_now() -> datetime:
    """The time stamp for what officers do (they are not anonymous): to the second."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


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


@dataclass
class StoredEnvelope:
    """An envelope whose body is written (not yet committed) and whose key block is known."""

    item_id: str
    blob: BlobWriter
    key_block: bytes
    size: int
    name: str = ""


def seal_bytes(
    store: Store,
    report_id: str,
    data: bytes,
    recipients: Sequence[envelope.Recipient],
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
    text: str, details: dict[str, str] | None = None, *, source_key: Recipient | None = None
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
    # An X25519 key (reports made before hybrid source keys) or an X-Wing key.
    if len(key) not in (PublicKey.SIZE, xwing.PUBLIC_KEY_BYTES):
        raise DecryptionError()
    return key


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


def open_item(
    instance: Instance, item: Item, secret_key: envelope.SecretKey
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


def open_item_bytes(instance: Instance, item: Item, secret_key: envelope.SecretKey) -> bytes:
    """Decrypt a small item into memory (messages, notes; never used for files)."""
    reader, body = open_item(instance, item, secret_key)
    with body:
        try:
            return b"".join(reader.chunks())
        except (OSError, ValueError) as exc:
            raise DecryptionError() from exc


class SourceKeyCheck(enum.StrEnum):
    """What the report's first item says about the source's public key in the report row."""

    MATCHES = "matches"  # the row holds the key the source sent with the report
    NOT_BOUND = "not bound"  # the first item predates binding: nothing to check against
    DIFFERS = "differs"  # the row's key was changed after the report was made
    # The first item is gone, moved, damaged or not the source's message:
    # nothing shows which key the source sent.
    UNREADABLE = "unreadable"


def check_source_key(
    instance: Instance, session: Session, report: Report, office_key: envelope.SecretKey
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
