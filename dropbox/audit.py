"""The audit log: append-only, each event hashing the one before it.

Every read of decrypted content, reveal, referral, deletion, grant and login
is recorded here, and only here (`record` is the one writer). An event holds
who, what, which report and when, never content.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from dropbox.models import AuditEvent, AuditHead

GENESIS = bytes(32)


def _event_hash(
    prev_hash: bytes,
    event_id: int,
    at: datetime,
    actor: str,
    action: str,
    report_id: str | None,
    detail: str,
) -> bytes:
    canonical = json.dumps(
        [event_id, at.isoformat(), actor, action, report_id, detail],
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")
    return hashlib.blake2b(prev_hash + canonical, digest_size=32, person=b"dropbox-audit").digest()


def record(
    session: Session, actor: str, action: str, *, report_id: str | None = None, detail: str = ""
) -> AuditEvent:
    """Append an event in the caller's transaction (it commits with the change it records)."""
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
    event_id = head.last_event_id + 1
    at = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    digest = _event_hash(head.last_hash, event_id, at, actor, action, report_id, detail)
    event = AuditEvent(
        id=event_id,
        at=at,
        actor=actor,
        action=action,
        report_id=report_id,
        detail=detail,
        prev_hash=head.last_hash,
        hash=digest,
    )
    session.add(event)
    head.last_event_id = event_id
    head.last_hash = digest
    session.flush()
    return event


@dataclass(frozen=True)
class Verification:
    """The result of checking the chain: how many events, and the first broken one if any."""

    events: int
    first_broken: int | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        """True if the whole chain checks out."""
        return self.first_broken is None


def verify(session: Session) -> Verification:
    """Walk the chain from the first event; name the first event that does not check out."""
    head = session.get(AuditHead, 1)
    prev_hash, expected_id, count = GENESIS, 1, 0
    for event in session.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars():
        if event.id != expected_id:
            return Verification(count, expected_id, f"event {expected_id} is missing")
        if event.prev_hash != prev_hash:
            return Verification(count, event.id, "does not follow the event before it")
        digest = _event_hash(
            prev_hash, event.id, event.at, event.actor, event.action, event.report_id, event.detail
        )
        if digest != event.hash:
            return Verification(count, event.id, "was altered after it was written")
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
    return Verification(count)
