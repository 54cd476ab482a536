"""The audit log: append-only, each event authenticated with a key kept outside the database.

Every fetch of a report's ciphertext for reading (the server never sees the
decrypted content), reveal, referral, deletion, grant and login is recorded
here, and only here (`record` is the one writer). An event holds who, what,
which report and when, never content.

Three things outside the database make the chain trustworthy against someone
who can change the database (docs/security.md, "The audit log"):

- Each event's chain value is a keyed BLAKE2b MAC over the event's canonical
  form and the previous chain value. The key is in `instance.json`, not in the
  database, so a database owner can neither forge an event nor recompute the
  chain after removing or editing one. Events made before an instance had a
  key keep their plain hash; how many, and the last one's hash, were written
  next to the key when it was made, so they cannot be moved or cut either.
- After each transaction that appended events commits, the newest event's id
  and chain value are written to the anchor file in the data directory, so
  cutting events from the end and rewinding the head row is seen.
- `checkpoint` signs (Ed25519) the instance id, the newest event id, its chain
  value and the day. Kept off the server, a checkpoint proves later that the
  log up to that event was not rewritten, even by someone who has since held
  the server's files and so the key.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from dropbox.errors import DropboxError
from dropbox.models import AuditEvent, AuditHead
from dropbox.store import fsync_dir

GENESIS = bytes(32)
ANCHOR_FILE = "audit-anchor.json"
CHECKPOINT_FORMAT = "dropbox-audit-checkpoint/1"
# Session.info keys: the instance's audit context (set by `bind`), and the
# newest event this transaction appended, for the anchor once it commits.
_CONTEXT = "dropbox_audit"
_PENDING = "dropbox_audit_pending"
# The pending value of a transaction that found the log no longer holding the
# anchored event: the anchor stays where it is, as evidence.
_HOLD = object()
_PLAIN_PERSON = b"dropbox-audit"
_KEYED_PERSON = b"dropbox-audit-k1"
log = logging.getLogger(__name__)


class CheckpointError(DropboxError):
    """A checkpoint file that cannot be trusted or read; the message is one line."""


@dataclass(frozen=True)
class AuditKeys:
    """The audit log's secrets, kept in instance.json and never in the database."""

    instance_id: str
    mac_key: bytes
    # Ed25519 seed: signs checkpoints. On the server, next to the MAC key.
    signing_seed: bytes
    # Events made before the instance had keys: they are checked by their
    # plain hash, and the last one must still have this hash.
    legacy_events: int
    legacy_hash: bytes

    @classmethod
    def generate(cls, legacy_events: int, legacy_hash: bytes) -> AuditKeys:
        """New keys for an instance whose log so far ends at `legacy_events` with `legacy_hash`."""
        return cls(
            instance_id=secrets.token_hex(8),
            mac_key=secrets.token_bytes(32),
            signing_seed=secrets.token_bytes(32),
            legacy_events=legacy_events,
            legacy_hash=legacy_hash,
        )

    def to_document(self) -> dict[str, Any]:
        """The JSON object stored under "audit" in instance.json."""
        return {
            "instance_id": self.instance_id,
            "mac_key": base64.b64encode(self.mac_key).decode(),
            "signing_seed": base64.b64encode(self.signing_seed).decode(),
            "legacy_events": self.legacy_events,
            "legacy_hash": self.legacy_hash.hex(),
        }

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> AuditKeys:
        """Read the "audit" object of instance.json; ValueError/KeyError/TypeError if damaged."""
        keys = cls(
            instance_id=str(document["instance_id"]),
            mac_key=base64.b64decode(document["mac_key"], validate=True),
            signing_seed=base64.b64decode(document["signing_seed"], validate=True),
            legacy_events=int(document["legacy_events"]),
            legacy_hash=bytes.fromhex(document["legacy_hash"]),
        )
        if len(keys.mac_key) != 32 or len(keys.signing_seed) != 32 or len(keys.legacy_hash) != 32:
            raise ValueError("an audit key or hash has the wrong length")
        return keys

    @property
    def verify_key(self) -> bytes:
        """The public half of the checkpoint signing key."""
        return bytes(SigningKey(self.signing_seed).verify_key)


@dataclass(frozen=True)
class AuditContext:
    """What `record` and `verify` need besides the session: the keys and where the anchor is."""

    keys: AuditKeys
    data_dir: Path

    @property
    def anchor_path(self) -> Path:
        """The anchor file: the newest committed event id and chain value."""
        return self.data_dir / ANCHOR_FILE


def bind(maker: sessionmaker[Session], context: AuditContext) -> None:
    """Give the sessions of `maker` the audit keys, and write the anchor after their commits."""
    maker.configure(info={_CONTEXT: context})
    event.listen(maker, "after_commit", _after_commit)
    event.listen(maker, "after_rollback", _after_rollback)


def _context(session: Session) -> AuditContext:
    context = session.info.get(_CONTEXT)
    if not isinstance(context, AuditContext):
        # Fail closed: an event without its MAC would read as forged later.
        raise RuntimeError("this session has no audit keys: open it through Instance")
    return context


def _canonical(
    event_id: int, at: datetime, actor: str, action: str, report_id: str | None, detail: str
) -> bytes:
    return json.dumps(
        [event_id, at.isoformat(), actor, action, report_id, detail],
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")


def _event_hash(
    prev_hash: bytes,
    event_id: int,
    at: datetime,
    actor: str,
    action: str,
    report_id: str | None,
    detail: str,
) -> bytes:
    """The unkeyed chain value of events made before the instance had audit keys."""
    canonical = _canonical(event_id, at, actor, action, report_id, detail)
    return hashlib.blake2b(prev_hash + canonical, digest_size=32, person=_PLAIN_PERSON).digest()


def _event_mac(
    key: bytes,
    prev_hash: bytes,
    event_id: int,
    at: datetime,
    actor: str,
    action: str,
    report_id: str | None,
    detail: str,
) -> bytes:
    """The keyed chain value: only a holder of the audit key can compute it."""
    canonical = _canonical(event_id, at, actor, action, report_id, detail)
    return hashlib.blake2b(
        prev_hash + canonical, digest_size=32, key=key, person=_KEYED_PERSON
    ).digest()


def record(
    session: Session, actor: str, action: str, *, report_id: str | None = None, detail: str = ""
) -> AuditEvent:
    """Append an event in the caller's transaction (it commits with the change it records)."""
    context = _context(session)
    # The lock makes appends wait their turn (SQLite: its BEGIN IMMEDIATE
    # already did). populate_existing: a head this session loaded before the
    # lock (in `verify`, or in an earlier transaction, since objects outlive
    # commits) is refreshed from the locked row, not trusted.
    head = session.execute(
        select(AuditHead)
        .where(AuditHead.id == 1)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if head is None:
        head = AuditHead(id=1, last_event_id=0, last_hash=GENESIS)
        session.add(head)
    if session.info.get(_PENDING) is not _HOLD and _anchor_contradicted(session, context, head):
        # Events were cut and the head rewound: moving the anchor on past
        # them would erase the only trace. `verify` reports it until an
        # operator has looked.
        log.warning("the audit log no longer holds the anchored event: the anchor is kept")
        session.info[_PENDING] = _HOLD
    event_id = head.last_event_id + 1
    at = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    digest = _event_mac(
        context.keys.mac_key, head.last_hash, event_id, at, actor, action, report_id, detail
    )
    entry = AuditEvent(
        id=event_id,
        at=at,
        actor=actor,
        action=action,
        report_id=report_id,
        detail=detail,
        prev_hash=head.last_hash,
        hash=digest,
    )
    session.add(entry)
    head.last_event_id = event_id
    head.last_hash = digest
    session.flush()
    if session.info.get(_PENDING) is not _HOLD:
        session.info[_PENDING] = (event_id, digest)
    return entry


def _anchor_contradicted(session: Session, context: AuditContext, head: AuditHead) -> bool:
    """True if the log this append extends no longer holds the anchored event as it was."""
    try:
        anchor = read_anchor(context.data_dir)
    except (ValueError, UnicodeDecodeError, OSError):
        return False  # `advance_anchor` leaves a damaged anchor alone anyway
    if anchor is None or anchor.event_id == 0:
        return False
    if anchor.event_id > head.last_event_id:
        return True
    stored = session.execute(
        select(AuditEvent.hash).where(AuditEvent.id == anchor.event_id)
    ).scalar_one_or_none()
    return stored != anchor.chain_hash


# --- the anchor outside the database ------------------------------------------------


@dataclass(frozen=True)
class Anchor:
    """An event id and the chain value it had, as kept outside the database."""

    event_id: int
    chain_hash: bytes


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Hold the data directory's lock (flock on the directory itself) across processes."""
    fd = os.open(data_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_anchor(data_dir: Path) -> Anchor | None:
    """The anchor, None if there is none; ValueError if it is damaged."""
    try:
        document = json.loads((data_dir / ANCHOR_FILE).read_text())
    except FileNotFoundError:
        return None
    try:
        anchor = Anchor(int(document["event"]), bytes.fromhex(document["hash"]))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{exc}") from None
    if anchor.event_id < 0 or len(anchor.chain_hash) != 32:
        raise ValueError("its event or hash is out of range")
    return anchor


def replace_private_file(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
    """Replace `path` atomically with `data` (owner-only); hold the data directory's lock.

    After a crash the file holds the old or the new content, whole. Without
    `sync_dir` the rename itself may be undone by a power loss.
    """
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    if sync_dir:
        fsync_dir(path.parent)


def advance_anchor(
    data_dir: Path, event_id: int, chain_hash: bytes, *, locked: bool = False
) -> None:
    """Move the anchor forward to `event_id`; never back (commits can end out of order)."""
    with contextlib.nullcontext() if locked else data_dir_lock(data_dir):
        try:
            current = read_anchor(data_dir)
        except (ValueError, UnicodeDecodeError):
            # Atomic writes never leave it damaged: keep it as evidence.
            log.warning("the audit anchor %s is damaged; not replacing it", data_dir / ANCHOR_FILE)
            return
        if current is not None and current.event_id >= event_id:
            return
        document = {"event": event_id, "hash": chain_hash.hex()}
        # No directory fsync (it would double the cost of every audited
        # commit): a power loss may bring back the previous anchor, which
        # only lags, as after a crash between commit and this write.
        replace_private_file(data_dir / ANCHOR_FILE, json.dumps(document).encode(), sync_dir=False)


def _after_commit(session: Session) -> None:
    pending = session.info.pop(_PENDING, None)
    if pending is None or pending is _HOLD:
        return
    try:
        advance_anchor(_context(session).data_dir, *pending)
    except OSError as exc:
        # The event is committed; the anchor lags until the next one
        # (docs/security.md says what that leaves undetected).
        log.warning("could not write the audit anchor: %s", exc.strerror or type(exc).__name__)


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)


# --- signed checkpoints -------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement: on `day`, event `event_id` of instance `instance_id` had `chain_hash`."""

    instance_id: str
    event_id: int
    chain_hash: bytes
    day: date
    public_key: bytes
    signature: bytes
    source: str = ""  # where it was read from, for messages

    def signed_bytes(self) -> bytes:
        """What the signature covers."""
        fields = [
            self.instance_id,
            self.event_id,
            self.chain_hash.hex(),
            self.day.isoformat(),
            self.public_key.hex(),
        ]
        return CHECKPOINT_FORMAT.encode() + b"\n" + json.dumps(fields).encode()

    def to_bytes(self) -> bytes:
        """The checkpoint file's content."""
        document = {
            "format": CHECKPOINT_FORMAT,
            "instance": self.instance_id,
            "event": self.event_id,
            "hash": self.chain_hash.hex(),
            "day": self.day.isoformat(),
            "public_key": self.public_key.hex(),
            "signature": self.signature.hex(),
        }
        return (json.dumps(document, indent=1) + "\n").encode()


def sign_checkpoint(keys: AuditKeys, event_id: int, chain_hash: bytes, day: date) -> Checkpoint:
    """Sign that the log's event `event_id` has `chain_hash` on `day`."""
    signing_key = SigningKey(keys.signing_seed)
    unsigned = Checkpoint(
        keys.instance_id, event_id, chain_hash, day, bytes(signing_key.verify_key), b""
    )
    signature = signing_key.sign(unsigned.signed_bytes()).signature
    return Checkpoint(
        keys.instance_id, event_id, chain_hash, day, unsigned.public_key, bytes(signature)
    )


def load_checkpoint(data: bytes, source: str, keys: AuditKeys) -> Checkpoint:
    """Read a checkpoint file and check its signature against this instance's key."""
    try:
        document = json.loads(data)
        if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("no checkpoint format")
        checkpoint = Checkpoint(
            instance_id=str(document["instance"]),
            event_id=int(document["event"]),
            chain_hash=bytes.fromhex(document["hash"]),
            day=date.fromisoformat(document["day"]),
            public_key=bytes.fromhex(document["public_key"]),
            signature=bytes.fromhex(document["signature"]),
            source=source,
        )
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise CheckpointError(f"{source} is not an audit checkpoint file") from None
    if checkpoint.public_key != keys.verify_key:
        raise CheckpointError(
            f"{source} is refused: it is not signed with this instance's checkpoint key "
            "(another instance's, forged, or this instance's key was replaced)"
        )
    try:
        VerifyKey(keys.verify_key).verify(checkpoint.signed_bytes(), checkpoint.signature)
    except (BadSignatureError, ValueError):
        raise CheckpointError(
            f"{source} is refused: its signature does not match its content (forged or altered)"
        ) from None
    if checkpoint.instance_id != keys.instance_id:  # pragma: no cover - signed by our key
        raise CheckpointError(f"{source} is refused: it is a checkpoint of another instance")
    return checkpoint


# --- verification ---------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    """The result of checking the chain: how many events, and the first broken one if any."""

    events: int
    first_broken: int | None = None
    problem: str = ""
    # How many events were made before the instance had audit keys (plain hash only).
    legacy: int = 0
    # The event the anchor file names, None when there is no anchor file.
    anchored: int | None = None
    checkpoints: tuple[Checkpoint, ...] = field(default=())
    last_hash: bytes = GENESIS

    @property
    def ok(self) -> bool:
        """True if the whole chain checks out."""
        return self.first_broken is None


def verify(session: Session, checkpoints: Sequence[Checkpoint] = ()) -> Verification:
    """Walk the chain from the first event; name the first event that does not check out.

    Call it at the start of the session's transaction (or in a writing one):
    the anchor is read before the database, so every event it names was
    committed before the snapshot the walk reads.
    """
    context = _context(session)
    keys = context.keys
    try:
        anchor = read_anchor(context.data_dir)
    except (ValueError, UnicodeDecodeError, OSError):
        return Verification(0, 1, f"the anchor file {context.anchor_path} is damaged or unreadable")
    # FOR SHARE: on PostgreSQL (a snapshot per statement) no append can commit
    # between reading the head and the events.
    head = session.execute(
        select(AuditHead)
        .where(AuditHead.id == 1)
        .with_for_update(read=True)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    wanted = {keys.legacy_events} | {c.event_id for c in checkpoints}
    if anchor is not None:
        wanted.add(anchor.event_id)
    seen: dict[int, bytes] = {0: GENESIS}
    prev_hash, expected_id, count = GENESIS, 1, 0
    for entry in session.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars():
        if entry.id != expected_id:
            return Verification(count, expected_id, f"event {expected_id} is missing")
        if entry.prev_hash != prev_hash:
            return Verification(count, entry.id, "does not follow the event before it")
        fields = (entry.id, entry.at, entry.actor, entry.action, entry.report_id, entry.detail)
        if entry.id <= keys.legacy_events:
            digest = _event_hash(prev_hash, *fields)
        else:
            digest = _event_mac(keys.mac_key, prev_hash, *fields)
        if digest != entry.hash:
            return Verification(count, entry.id, "was altered after it was written")
        if entry.id in wanted:
            seen[entry.id] = digest
        prev_hash, expected_id, count = digest, expected_id + 1, count + 1
    # The head row says where the chain ends: events cut from the end, added
    # past it, or a rewritten last event all show up here.
    last = head.last_event_id if head else 0
    if count < last:
        return Verification(count, count + 1, f"events after {count} are missing")
    if count > last:
        return Verification(count, last + 1, f"events after {last} are not in the log head")
    if head is not None and head.last_hash != prev_hash:
        return Verification(count, max(count, 1), "does not match the log head")
    # What is kept outside the database: the head row can be rewound with the
    # events, these cannot (without the server's files, or the officer's copy).
    outside: list[tuple[int, bytes, str]] = [
        (keys.legacy_events, keys.legacy_hash, "the record kept when the audit key was made")
    ]
    if anchor is not None:
        outside.append((anchor.event_id, anchor.chain_hash, "the anchor kept outside the database"))
    outside += [
        (c.event_id, c.chain_hash, f"the checkpoint of {c.day.isoformat()} ({c.source})")
        for c in checkpoints
    ]
    for event_id, chain_hash, where in outside:
        if event_id > count:
            return Verification(
                count,
                count + 1,
                f"events after {count} are missing: {where} names event {event_id}",
            )
        if seen[event_id] != chain_hash:
            return Verification(
                0,
                max(event_id, 1),
                f"differs from {where}: the log up to this event was rewritten",
            )
    return Verification(
        count,
        legacy=min(keys.legacy_events, count),
        anchored=anchor.event_id if anchor else None,
        checkpoints=tuple(checkpoints),
        last_hash=prev_hash,
    )
