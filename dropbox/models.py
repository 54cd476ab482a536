"""Database models: one class per concept (SQLAlchemy 2, typed).

Nothing here holds plaintext of a report, a reply, a note or a file name:
content lives in envelopes whose bodies are blobs in the store and whose key
blocks are the `key_block` columns below.
"""

from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    """The declarative base of every model."""


class Status(enum.StrEnum):
    """Where a report stands in its lifecycle (the moves allowed: `cases.TRANSITIONS`)."""

    RECEIVED = "received"
    ACKNOWLEDGED = "acknowledged"
    UNDER_ASSESSMENT = "under assessment"
    REFERRED = "referred"
    CLOSED = "closed"
    REOPENED = "reopened"


class Outcome(enum.StrEnum):
    """How a closed report ended."""

    SUBSTANTIATED = "substantiated"
    NOT_SUBSTANTIATED = "not substantiated"
    NO_PRIMA_FACIE = "no prima facie evidence"
    OUT_OF_SCOPE = "out of scope"
    WITHDRAWN = "withdrawn"


class ItemKind(enum.StrEnum):
    """What an item in a report's thread is."""

    MESSAGE = "message"  # text from the source (the report itself, or an answer)
    FILE = "file"  # a file from the source
    IDENTITY = "identity"  # optional identity or contact details, hidden until revealed
    ACKNOWLEDGEMENT = "acknowledgement"  # the automatic receipt posted to the source
    REPLY = "reply"  # a message from the office to the source
    NOTE = "note"  # an internal note, never shown to the source
    # The reason an officer gave for revealing the identity: case content, so
    # sealed to the offices like a note, never shown to the source.
    REVEAL = "reveal"


SOURCE_KINDS = frozenset({ItemKind.MESSAGE, ItemKind.FILE, ItemKind.IDENTITY})
TO_SOURCE_KINDS = frozenset({ItemKind.ACKNOWLEDGEMENT, ItemKind.REPLY})


class Office(Base):
    """An intake office (OIO, ECO) and its public key; its secret key is never stored plain."""

    __tablename__ = "offices"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # 1216 bytes for an X-Wing key, 32 for an X25519 key made before X-Wing: the length
    # tells them apart (crypto.keys.public_key_from_bytes). Neither SQLite's BLOB nor
    # PostgreSQL's BYTEA has a length, so the wider keys needed no migration.
    public_key: Mapped[bytes] = mapped_column(LargeBinary(1216))
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Officer(Base):
    """An intake officer or administrator of the reviewer interface."""

    __tablename__ = "officers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # What the case server checks an officer's auth key against
    # (crypto.keys.auth_key_verifier); None until the officer has enrolled. The auth
    # key is derived from the passphrase on the officer's own machine: the server
    # never sees the passphrase.
    auth_verifier: Mapped[bytes | None] = mapped_column(LargeBinary)
    public_key: Mapped[bytes | None] = mapped_column(LargeBinary(1216))  # as Office.public_key
    # The officer's secret key, wrapped on their machine under the wrapping key
    # derived from their passphrase (crypto.keys.wrap_with_wrapping_key): opaque here.
    wrapped_secret_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The TOTP secret, encrypted under the instance's TOTP key (instance.json, never
    # in the database): a database dump alone does not reveal it.
    totp_secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_last_counter: Mapped[int] = mapped_column(Integer, default=0)
    # A keyed hash of the one-time enrolment code (the key is an instance secret).
    enrolment_code_hash: Mapped[str | None] = mapped_column(String(255))
    enrolment_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime)

    grants: Mapped[list[OfficeGrant]] = relationship(
        back_populates="officer",
        foreign_keys="OfficeGrant.officer_id",
        cascade="all, delete-orphan",
    )


class OfficeGrant(Base):
    """An officer's access to an office: the office secret key sealed to the officer."""

    __tablename__ = "office_grants"

    officer_id: Mapped[int] = mapped_column(ForeignKey("officers.id"), primary_key=True)
    office_code: Mapped[str] = mapped_column(ForeignKey("offices.code"), primary_key=True)
    sealed_office_key: Mapped[bytes] = mapped_column(LargeBinary)
    granted_by_id: Mapped[int | None] = mapped_column(ForeignKey("officers.id"))
    granted_at: Mapped[datetime] = mapped_column(DateTime)

    officer: Mapped[Officer] = relationship(back_populates="grants", foreign_keys=[officer_id])


# The columns the inbox filters on, held by its sort indexes (see Report).
INBOX_FILTERS = (
    "status",
    "category",
    "urgent",
    "assignee_id",
    "acknowledged_at",
    "acknowledge_due",
    "feedback_due",
)


def _sort_index(name: str, column: str) -> Index:
    """The index the inbox walks for one sort: an office's reports by `column`
    then id, with the filtered columns (so that the walk reads no table row)."""
    held = (c for c in INBOX_FILTERS if c != column)
    return Index(f"ix_reports_office_{name}", "office_code", column, "id", *held)


class Report(Base):
    """One source's thread with one office. Found only through the codename-derived lookup id."""

    __tablename__ = "reports"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    lookup_id: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    # 1216 bytes (X-Wing) since sources got hybrid keys, 32 (X25519) before: the length
    # tells which (crypto.keys.public_key_from_bytes); no DDL change, BLOB/BYTEA have no length.
    source_public_key: Mapped[bytes] = mapped_column(LargeBinary(1216))
    designation: Mapped[str] = mapped_column(String(64), unique=True)
    office_code: Mapped[str] = mapped_column(ForeignKey("offices.code"))
    category: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32), default=Status.RECEIVED)
    outcome: Mapped[str | None] = mapped_column(String(32))
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    # Times the source causes are kept to the day: enough for deadlines,
    # too coarse to match against traffic logs.
    received_at: Mapped[datetime] = mapped_column(DateTime)
    acknowledge_due: Mapped[date] = mapped_column(Date)
    feedback_due: Mapped[date] = mapped_column(Date)
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_activity_at: Mapped[datetime] = mapped_column(DateTime)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Whole days from the received day to the acknowledgement's day and to the
    # closing's day, stored when each happens (`days_since_received`; reopening
    # clears the closing's), so that statistics count by small integers.
    acknowledge_days: Mapped[int | None] = mapped_column(Integer)
    close_days: Mapped[int | None] = mapped_column(Integer)
    # Whether the acknowledgement came by `acknowledge_due` and the closing (the
    # feedback) by `feedback_due`, stored when each happens (`acknowledged`,
    # `closed`; reopening clears the closing's), so that statistics count
    # deadlines met by a column, not by comparing dates in every row.
    acknowledged_in_time: Mapped[bool | None] = mapped_column(Boolean)
    feedback_in_time: Mapped[bool | None] = mapped_column(Boolean)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("officers.id"))
    next_seq: Mapped[int] = mapped_column(Integer, default=1)

    items: Mapped[list[Item]] = relationship(
        back_populates="report", order_by="Item.seq", cascade="all, delete-orphan"
    )

    # The inbox (dropbox/inbox.py) pages an office's reports by walking the
    # index of the sort column (by status too for the default sort), and
    # counts them in `ix_reports_office_filters`, which holds every column it
    # filters on, so that a count reads no table row. The sort indexes hold
    # the id (the tie-break) and those columns too, so that a walk that skips
    # the first pages to a deep one reads no table row either.
    __table_args__ = (
        _sort_index("activity", "last_activity_at"),
        _sort_index("received", "received_at"),
        _sort_index("acknowledge_due", "acknowledge_due"),
        _sort_index("feedback_due", "feedback_due"),
        Index("ix_reports_office_status_received", "office_code", "status", "received_at", "id"),
        # Statistics (dropbox/statistics.py) read a period's reports in these
        # indexes alone. On SQLite, which has no hash aggregation, they count
        # each class (office, status, category, outcome, deadlines met) as a
        # range of `ix_reports_statistics_classes` and each number of days as a
        # range of the two days indexes, so that nothing is sorted; elsewhere
        # they group the period's range of `ix_reports_received_statistics`.
        Index(
            "ix_reports_received_statistics",
            "received_at",
            "office_code",
            "category",
            "status",
            "outcome",
            "acknowledged_in_time",
            "feedback_in_time",
            "acknowledge_due",
            "feedback_due",
            "acknowledge_days",
            "close_days",
        ),
        Index(
            "ix_reports_statistics_classes",
            "office_code",
            "status",
            "category",
            "outcome",
            "acknowledged_in_time",
            "feedback_in_time",
            "received_at",
            "acknowledge_due",
            "feedback_due",
        ),
        Index("ix_reports_acknowledge_days", "office_code", "acknowledge_days", "received_at"),
        Index("ix_reports_close_days", "office_code", "close_days", "received_at"),
        Index(
            "ix_reports_office_filters",
            "office_code",
            "status",
            "acknowledged_at",
            "acknowledge_due",
            "feedback_due",
            "category",
            "urgent",
            "assignee_id",
        ),
    )

    def days_since_received(self, at: datetime) -> int:
        """Whole days from the day the report was received to the day of `at`."""
        return (at.date() - self.received_at.date()).days

    def acknowledged(self, at: datetime) -> None:
        """Record the acknowledgement: when, the days it took, and whether it was in time."""
        self.acknowledged_at = at
        self.acknowledge_days = self.days_since_received(at)
        self.acknowledged_in_time = at.date() <= self.acknowledge_due

    def closed(self, at: datetime, outcome: str) -> None:
        """Record the closing (the feedback): outcome, when, the days it took, whether in time."""
        self.outcome = outcome
        self.closed_at = at
        self.close_days = self.days_since_received(at)
        self.feedback_in_time = at.date() <= self.feedback_due

    def reopened(self) -> None:
        """Forget the closing: the report is open again."""
        self.outcome, self.closed_at = None, None
        self.close_days, self.feedback_in_time = None, None


class Item(Base):
    """One entry of a thread; its content is an envelope (key block here, body in the store)."""

    __tablename__ = "items"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    report_id: Mapped[str] = mapped_column(ForeignKey("reports.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(24), index=True)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("officers.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    size: Mapped[int] = mapped_column(Integer)
    key_block: Mapped[bytes] = mapped_column(LargeBinary)
    blob: Mapped[str] = mapped_column(String(64), unique=True)
    # Set when the source deletes an office message after reading it; the
    # source's key entry is removed at the same time.
    deleted_by_source: Mapped[bool] = mapped_column(Boolean, default=False)
    # Set when the source's thread page has shown an office reply, so that it is
    # marked new only once. A flag, never a time: it says that the source came
    # back after the reply, not when. The case server never sends it to officers.
    seen_by_source: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The export bundle that first carried the item to an offline machine (`dropbox
    # bundle export`); None until then, so that an export carries what is new.
    exported_in: Mapped[str | None] = mapped_column(String(32))

    report: Mapped[Report] = relationship(back_populates="items")

    __table_args__ = (
        UniqueConstraint("report_id", "seq", name="uq_items_report_seq"),
        # Unread counts (report_id IN page AND kind IN source kinds): without it
        # SQLite picks ix_items_kind and walks every message of every report.
        Index("ix_items_report_kind", "report_id", "kind"),
    )


class ReportShare(Base):
    """An office that kept a copy of a report after referring it elsewhere."""

    __tablename__ = "report_shares"

    report_id: Mapped[str] = mapped_column(ForeignKey("reports.id"), primary_key=True)
    office_code: Mapped[str] = mapped_column(ForeignKey("offices.code"), primary_key=True)


class BundleTransfer(Base):
    """An offline bundle written for an office, or one imported from it (dropbox/admin/bundles.py).

    Counts and ids only: what a bundle held is in its file and, item by item,
    in `Item.exported_in` and the audit log.
    """

    __tablename__ = "bundle_transfers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bundle_id: Mapped[str] = mapped_column(String(32), index=True)
    direction: Mapped[str] = mapped_column(String(8))  # "export" or "import"
    office_code: Mapped[str] = mapped_column(ForeignKey("offices.code"))
    # For an import: the export bundle the offline machine answered.
    answers: Mapped[str | None] = mapped_column(String(32))
    reports: Mapped[int] = mapped_column(Integer)
    items: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime)


class ItemRead(Base):
    """An officer has opened an item (for unread counts); never shown to anyone else."""

    __tablename__ = "item_reads"

    officer_id: Mapped[int] = mapped_column(ForeignKey("officers.id"), primary_key=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), primary_key=True)


class StatusChange(Base):
    """A change of a report's status: who (None for the system) and when."""

    __tablename__ = "status_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[str] = mapped_column(ForeignKey("reports.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str | None] = mapped_column(String(32))
    officer_id: Mapped[int | None] = mapped_column(ForeignKey("officers.id"))
    at: Mapped[datetime] = mapped_column(DateTime)
    # For a referral: the office that referred the report and the one it went to
    # (None for other changes, and for referrals made before migration 0007 that
    # the audit log did not name).
    from_office: Mapped[str | None] = mapped_column(String(32))
    to_office: Mapped[str | None] = mapped_column(String(32))

    __table_args__ = (
        # Statistics count a period's referrals from here, without reading other changes.
        Index("ix_status_changes_referrals", "to_status", "report_id", "from_office", "to_office"),
    )


class AuditEvent(Base):
    """One entry of the append-only, hash-chained audit log. Never content."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64))
    # Not a foreign key: the event outlives a deleted report.
    report_id: Mapped[str | None] = mapped_column(String(32), index=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))

    __table_args__ = (
        # Statistics count the reports exported to an investigator (`report.export`).
        Index("ix_audit_events_action_report", "action", "report_id"),
    )


class AuditHead(Base):
    """The single row that names the last audit event; locking it serialises appends."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_event_id: Mapped[int] = mapped_column(Integer, default=0)
    last_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class SourceSession(Base):
    """A source's server-side session. The cookie holds its id and the key to `state`."""

    __tablename__ = "source_sessions"

    id_hash: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class OfficerSession(Base):
    """A case server bearer token's session: who and which scope, no key; opens with the token."""

    __tablename__ = "officer_sessions"

    id_hash: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    # None until sign-in completes; kept in clear so sessions can be ended
    # when an officer is deactivated or changes passphrase.
    officer_id: Mapped[int | None] = mapped_column(ForeignKey("officers.id"), index=True)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class NotificationMode(enum.StrEnum):
    """How an officer wants to hear about their offices' reports by e-mail."""

    NONE = "none"
    IMMEDIATE = "immediate"  # a mail as soon as something arrives (`dropbox notify` runs)
    DIGEST = "digest"  # one mail a day, which does not say when anything arrived


class NotificationPreference(Base):
    """An officer's notification e-mails: where, how often, the OpenPGP key they go encrypted to."""

    __tablename__ = "notification_preferences"

    officer_id: Mapped[int] = mapped_column(ForeignKey("officers.id"), primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    mode: Mapped[str] = mapped_column(String(16), default=NotificationMode.NONE)
    # A minimal export of the officer's OpenPGP public key (never a secret key),
    # checked when registered (dropbox/openpgp.py); None sends mail unencrypted.
    openpgp_key: Mapped[str | None] = mapped_column(Text)
    openpgp_fingerprint: Mapped[str | None] = mapped_column(String(64))
    # The day the daily mail (digest and deadline reminders) last went to this officer.
    last_daily_on: Mapped[date | None] = mapped_column(Date)


class Notification(Base):
    """A mail waiting to go to an officer: only counts, never a report's id or content.

    Rows are made when something arrives (dated to the day, as everything a
    source causes) and merged, per officer, into one mail when it is sent; a
    sent mail's row is removed. A failed one waits for `next_attempt_at`;
    after the last attempt it is kept, as given up, for administrators to see.
    """

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    officer_id: Mapped[int] = mapped_column(ForeignKey("officers.id"), index=True)
    new_reports: Mapped[int] = mapped_column(Integer, default=0)
    new_answers: Mapped[int] = mapped_column(Integer, default=0)
    acknowledge_soon: Mapped[int] = mapped_column(Integer, default=0)
    feedback_soon: Mapped[int] = mapped_column(Integer, default=0)
    overdue: Mapped[int] = mapped_column(Integer, default=0)
    created_on: Mapped[date] = mapped_column(Date)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # None: due at the next run (or, for a digest, at the next daily mail).
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str] = mapped_column(String(300), default="")
    gave_up_on: Mapped[date | None] = mapped_column(Date)


class ReminderSent(Base):
    """A deadline reminder already sent to an officer, so that it is never sent twice."""

    __tablename__ = "reminders_sent"

    officer_id: Mapped[int] = mapped_column(ForeignKey("officers.id"), primary_key=True)
    # Not a foreign key, like the audit log's: cases.shred_report removes these rows.
    report_id: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)
    # "acknowledge-soon", "feedback-soon", "acknowledge-overdue" or "feedback-overdue".
    stage: Mapped[str] = mapped_column(String(24), primary_key=True)
