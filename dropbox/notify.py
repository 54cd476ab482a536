"""Notification e-mails to officers: how many reports wait, never what they say.

A mail tells an officer how many new reports and new answers from sources
wait for their offices, how many reports are due to be acknowledged within
two days or to get feedback within two weeks, and how many are overdue,
with a link to the reviewer app. It never holds a designation, a category,
a report id or anything a source wrote: the case server has none of that in
the clear, and this module reads only counts and dates.

Each officer chooses on their account page (through the case server's API):
a mail as soon as something arrives, one daily summary (which does not say
when anything arrived), or none; and may register an OpenPGP public key,
which every mail to them is then encrypted to (dropbox/openpgp.py).

Nothing is sent while a request is served. `report_arrived` and
`answer_arrived` (called by dropbox/reports.py in the source's transaction)
only add rows of counts, dated to the day, to the `notifications` table.
`run_once` (the `dropbox notify --once` command, from a timer) merges each
officer's rows into one mail, adds the deadline reminders once a day
(remembering which report's deadline was told, so that none is told twice),
and sends. A failed mail is retried after 1, 5 and 30 minutes and 2 hours;
then it is given up. Each failure is recorded in the audit log, and the
administrators' page lists the mails that failed (`failures`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, delete, insert, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from dropbox import audit, officers, openpgp
from dropbox.config import MailSettings, is_mail_address
from dropbox.errors import DropboxError
from dropbox.instance import Instance
from dropbox.items import source_day
from dropbox.mail import ConnectionLost, Delivery, MailError, Recipient, build
from dropbox.models import (
    Notification,
    NotificationMode,
    NotificationPreference,
    OfficeGrant,
    Officer,
    ReminderSent,
    Report,
    Status,
)

ACKNOWLEDGE_WARNING_DAYS = 2
FEEDBACK_WARNING_DAYS = 14
# Wait before each retry; after the last, the mail is given up.
BACKOFF = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
)
MAX_ATTEMPTS = len(BACKOFF) + 1
# Given-up mails stay on the administrators' page this long.
KEEP_GIVEN_UP = timedelta(days=30)
# Officers prepared, sent to and recorded per database transaction.
BATCH = 200
ACTOR = "notify"
LOCK_FILE = "notify.lock"
SUBJECT = {
    False: "Reviewer app: new activity for your office",
    True: "Reviewer app: your daily summary",
}


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


# --- counts and the words of a mail ----------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """What a mail tells: numbers only."""

    new_reports: int = 0
    new_answers: int = 0
    acknowledge_soon: int = 0
    feedback_soon: int = 0
    overdue: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    @classmethod
    def of(cls, row: Notification) -> Counts:
        """The counts a queued row holds."""
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})

    def put(self, row: Notification) -> None:
        """Write these counts into a queued row."""
        for f in fields(self):
            setattr(row, f.name, getattr(self, f.name))


def _number(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def describe(counts: Counts) -> list[str]:
    """One plain sentence for each thing the counts hold."""
    lines = []
    news = []
    if counts.new_reports:
        news.append(_number(counts.new_reports, "new report", "new reports"))
    if counts.new_answers:
        news.append(
            _number(counts.new_answers, "new answer from a source", "new answers from sources")
        )
    if news:
        single = len(news) == 1 and (counts.new_reports or counts.new_answers) == 1
        lines.append(
            f"{' and '.join(news)} {'is' if single else 'are'} waiting in the reviewer app."
        )
    if counts.acknowledge_soon:
        verb = "is" if counts.acknowledge_soon == 1 else "are"
        lines.append(
            f"{_number(counts.acknowledge_soon, 'report', 'reports')} {verb} due to be "
            f"acknowledged within {ACKNOWLEDGE_WARNING_DAYS} days."
        )
    if counts.feedback_soon:
        verb = "is" if counts.feedback_soon == 1 else "are"
        lines.append(
            f"{_number(counts.feedback_soon, 'report', 'reports')} {verb} due for feedback "
            f"within {FEEDBACK_WARNING_DAYS // 7} weeks."
        )
    if counts.overdue:
        verb = "is" if counts.overdue == 1 else "are"
        lines.append(f"{_number(counts.overdue, 'report', 'reports')} {verb} overdue.")
    return lines


def mail_text(counts: Counts, digest: bool, link: str) -> str:
    """The whole text of a mail: the counts in words, the link, and why nothing more is said."""
    opening = "Your daily summary from the reporting dropbox." if digest else "Hello,"
    closing = [
        "",
        f"Open the reviewer app to read them: {link}",
        "",
        "This e-mail only counts: it never names or describes a report. You can change",
        "these e-mails, or stop them, on your account page in the reviewer app.",
    ]
    return "\n".join([opening, "", *describe(counts), *closing]) + "\n"


# --- officers' choices ------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """An officer's notification settings, as their account page shows them."""

    email: str = ""
    mode: str = NotificationMode.NONE
    openpgp_fingerprint: str | None = None
    openpgp_user_ids: tuple[str, ...] = ()
    openpgp_expires: datetime | None = None


def choice(session: Session, officer: Officer) -> Choice:
    """The officer's settings (none yet: no mails)."""
    found = session.get(NotificationPreference, officer.id)
    if found is None:
        return Choice()
    user_ids: tuple[str, ...] = ()
    expires = None
    if found.openpgp_key:
        # Read again from the stored key, so that the page shows what mails use.
        with contextlib.suppress(openpgp.KeyRefused, openpgp.GpgMissing):
            key = openpgp.check_public_key(found.openpgp_key)
            user_ids, expires = key.user_ids, key.expires
    return Choice(found.email, found.mode, found.openpgp_fingerprint, user_ids, expires)


def choose(
    session: Session,
    officer: Officer,
    *,
    email: str,
    mode: str,
    openpgp_key: str = "",
    remove_openpgp_key: bool = False,
) -> Choice:
    """Record an officer's settings; DropboxError (or openpgp.KeyRefused) says what is wrong.

    A new key is checked before anything is stored (expired, revoked, or
    unable to encrypt: refused). An empty `openpgp_key` keeps the key
    already registered, unless `remove_openpgp_key`.
    """
    email = email.strip()
    if mode not in set(NotificationMode):
        raise DropboxError(f"choose how to be told: {', '.join(m.value for m in NotificationMode)}")
    if email and not is_mail_address(email):
        raise DropboxError(f"{email[:80]!r} is not an e-mail address such as name@example.org")
    if mode != NotificationMode.NONE and not email:
        raise DropboxError("give the e-mail address the notifications should go to")
    if openpgp_key.strip() and remove_openpgp_key:
        raise DropboxError("either register a new OpenPGP key or remove the current one, not both")
    key = openpgp.check_public_key(openpgp_key) if openpgp_key.strip() else None
    found = session.get(NotificationPreference, officer.id)
    if found is None:
        found = NotificationPreference(officer_id=officer.id, email="", mode=NotificationMode.NONE)
        session.add(found)
    found.email = email
    found.mode = mode
    if key is not None:
        found.openpgp_key, found.openpgp_fingerprint = key.armored, key.fingerprint
    elif remove_openpgp_key:
        found.openpgp_key = found.openpgp_fingerprint = None
    if mode == NotificationMode.NONE:
        session.execute(
            delete(Notification).where(
                Notification.officer_id == officer.id, Notification.gave_up_on.is_(None)
            )
        )
    audit.record(
        session,
        officer.username,
        "notify.settings",
        detail=f"mode {mode}; OpenPGP key {found.openpgp_fingerprint or 'none'}",
    )
    session.flush()
    return choice(session, officer)


# --- queueing, where reports and answers arrive ---------------------------------------------


def _enqueue(session: Session, office_code: str, counts: Counts) -> None:
    """A row of counts for every officer of the office who wants mail; nothing is sent here."""
    wanting = session.execute(
        select(NotificationPreference.officer_id)
        .join(Officer, Officer.id == NotificationPreference.officer_id)
        .join(OfficeGrant, OfficeGrant.officer_id == Officer.id)
        .where(
            OfficeGrant.office_code == office_code,
            Officer.active.is_(True),
            NotificationPreference.mode != NotificationMode.NONE,
            NotificationPreference.email != "",
        )
    ).scalars()
    # Dated to the day, like everything a source causes: the row does not say when.
    day = source_day().date()
    rows = [
        {
            "officer_id": officer_id,
            "created_on": day,
            "attempts": 0,
            "last_error": "",
            **{f.name: getattr(counts, f.name) for f in fields(Counts)},
        }
        for officer_id in wanting
    ]
    if rows:
        session.execute(insert(Notification), rows)


def report_arrived(session: Session, report: Report) -> None:
    """Queue "a new report" for the officers of the report's office."""
    _enqueue(session, report.office_code, Counts(new_reports=1))


def answer_arrived(session: Session, report: Report) -> None:
    """Queue "a new answer" for the officers of the office handling the report."""
    _enqueue(session, report.office_code, Counts(new_answers=1))


# --- deadline reminders -------------------------------------------------------------------


def _stages(today: date) -> dict[str, ColumnElement[bool]]:
    """Each reminder and the reports it is about (as the inbox reads due dates and overdue)."""
    unacknowledged = Report.acknowledged_at.is_(None)
    open_report = Report.status != Status.CLOSED
    return {
        "acknowledge-soon": and_(
            unacknowledged,
            Report.acknowledge_due >= today,
            Report.acknowledge_due <= today + timedelta(days=ACKNOWLEDGE_WARNING_DAYS),
        ),
        "feedback-soon": and_(
            open_report,
            Report.feedback_due >= today,
            Report.feedback_due <= today + timedelta(days=FEEDBACK_WARNING_DAYS),
        ),
        "acknowledge-overdue": and_(unacknowledged, Report.acknowledge_due < today),
        "feedback-overdue": and_(open_report, Report.feedback_due < today),
    }


def new_reminders(session: Session, officer_id: int, today: date) -> Counts:
    """The reminders not yet sent to this officer about their offices' reports; now remembered."""
    codes = list(
        session.execute(
            select(OfficeGrant.office_code).where(OfficeGrant.officer_id == officer_id)
        ).scalars()
    )
    if not codes:
        return Counts()
    found: dict[str, list[str]] = {}
    for stage, condition in _stages(today).items():
        told = select(ReminderSent.report_id).where(
            ReminderSent.officer_id == officer_id,
            ReminderSent.report_id == Report.id,
            ReminderSent.stage == stage,
        )
        found[stage] = list(
            session.execute(
                select(Report.id).where(Report.office_code.in_(codes), condition, ~told.exists())
            ).scalars()
        )
        if found[stage]:
            session.execute(
                insert(ReminderSent),
                [{"officer_id": officer_id, "report_id": i, "stage": stage} for i in found[stage]],
            )
    return Counts(
        acknowledge_soon=len(found["acknowledge-soon"]),
        feedback_soon=len(found["feedback-soon"]),
        overdue=len(set(found["acknowledge-overdue"]) | set(found["feedback-overdue"])),
    )


def forget_report(session: Session, report_id: str) -> None:
    """Remove what was remembered about a report's deadlines (it is being deleted)."""
    session.execute(delete(ReminderSent).where(ReminderSent.report_id == report_id))


# --- sending --------------------------------------------------------------------------------


@dataclass
class Outgoing:
    """One mail of a run: the queued row it is, where it goes, and what it says."""

    row_id: int
    officer_id: int
    username: str
    recipient: Recipient
    counts: Counts
    digest: bool


@dataclass
class RunSummary:
    """What a run did, for `dropbox notify` to print."""

    sent: int = 0
    failed: int = 0
    gave_up: int = 0
    waiting: int = 0
    retried: int = 0
    errors: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _single_run(data_dir: Path) -> Iterator[None]:
    """Hold the data directory's notify lock: two runs at once would send twice."""
    path = data_dir / LOCK_FILE
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DropboxError(
                "another 'dropbox notify' is sending right now; this run sent nothing"
            ) from None
        yield
    finally:
        os.close(handle)


def _tidy(session: Session, now: datetime) -> None:
    """Drop queued mails nobody wants any more, and given-up mails past their time on show."""
    wanting = (
        select(NotificationPreference.officer_id)
        .join(Officer, Officer.id == NotificationPreference.officer_id)
        .where(
            Officer.active.is_(True),
            NotificationPreference.mode != NotificationMode.NONE,
            NotificationPreference.email != "",
        )
    )
    session.execute(
        delete(Notification).where(
            Notification.gave_up_on.is_(None), Notification.officer_id.not_in(wanting)
        )
    )
    session.execute(
        delete(Notification).where(Notification.gave_up_on < (now - KEEP_GIVEN_UP).date())
    )


def _prepare(
    session: Session, settings: MailSettings, now: datetime, after: int, summary: RunSummary
) -> tuple[list[Outgoing], int | None]:
    """The next batch of officers after id `after`: their mails, each merged into one row.

    Returns the mails and the last officer id looked at (None when none is left).
    """
    today = now.date()
    daily_time = now.hour >= settings.digest_hour
    people = session.execute(
        select(Officer.id, Officer.username, NotificationPreference)
        .join(NotificationPreference, NotificationPreference.officer_id == Officer.id)
        .where(
            Officer.id > after,
            Officer.active.is_(True),
            NotificationPreference.mode != NotificationMode.NONE,
            NotificationPreference.email != "",
        )
        .order_by(Officer.id)
        .limit(BATCH)
    ).all()
    if not people:
        return [], None
    queued: dict[int, list[Notification]] = {}
    for row in session.execute(
        select(Notification)
        .where(
            Notification.officer_id.in_([p[0] for p in people]),
            Notification.gave_up_on.is_(None),
        )
        .order_by(Notification.id)
    ).scalars():
        queued.setdefault(row.officer_id, []).append(row)
    outgoing = []
    for officer_id, username, preference in people:
        rows = queued.get(officer_id, [])
        if any(r.next_attempt_at is not None and r.next_attempt_at > now for r in rows):
            summary.waiting += 1
            continue
        digest = preference.mode == NotificationMode.DIGEST
        daily = daily_time and preference.last_daily_on != today
        if digest and not daily:
            # Between summaries only a failed summary is retried; what arrived since
            # waits for the next one, so that no mail says when it came.
            rows = [r for r in rows if r.attempts]
        counts = sum((Counts.of(r) for r in rows), Counts())
        if daily:
            counts = counts + new_reminders(session, officer_id, today)
            preference.last_daily_on = today
        if not counts:
            for row in rows:
                session.delete(row)
            continue
        if rows:
            kept, *merged = rows
            for row in merged:
                session.delete(row)
        else:
            kept = Notification(officer_id=officer_id, created_on=today, attempts=0, last_error="")
            session.add(kept)
        counts.put(kept)
        kept.attempts = max(r.attempts for r in rows) if rows else 0
        session.flush()
        recipient = Recipient(
            preference.email, preference.openpgp_key, preference.openpgp_fingerprint
        )
        outgoing.append(Outgoing(kept.id, officer_id, username, recipient, counts, digest))
    return outgoing, people[-1][0]


def _send(delivery: Delivery, settings: MailSettings, mail: Outgoing) -> str | None:
    """Send one mail; None if it went, else why not (plain words)."""
    text = mail_text(mail.counts, mail.digest, settings.reviewer_link)
    try:
        message = build(settings, mail.recipient, SUBJECT[mail.digest], text)
        delivery.send(message, mail.recipient.address)
    except (openpgp.KeyRefused, openpgp.GpgMissing) as refused:
        return str(refused)
    except (MailError, ConnectionLost) as failed:
        return str(failed)
    return None


def _record(
    session: Session,
    results: Sequence[tuple[Outgoing, str | None]],
    now: datetime,
    summary: RunSummary,
) -> None:
    """Remove the sent mails' rows; schedule the failed ones again, or give them up (audited)."""
    for mail, error in results:
        row = session.get(Notification, mail.row_id)
        if row is None:
            continue
        if error is None:
            session.delete(row)
            summary.sent += 1
            continue
        row.attempts += 1
        row.last_error = error[:300]
        summary.failed += 1
        if error not in summary.errors:
            summary.errors.append(error)
        if row.attempts >= MAX_ATTEMPTS:
            row.next_attempt_at = None
            row.gave_up_on = now.date()
            summary.gave_up += 1
            action, detail = (
                "notify.gave_up",
                f"to {mail.username}, after {row.attempts} attempts: {error}",
            )
        else:
            row.next_attempt_at = now + BACKOFF[row.attempts - 1]
            action = "notify.failed"
            detail = f"to {mail.username}, attempt {row.attempts} of {MAX_ATTEMPTS}: {error}"
        audit.record(session, ACTOR, action, detail=detail[:500])


def _mail_settings(instance: Instance) -> MailSettings:
    """The instance's mail server settings; DropboxError if none is configured."""
    if not instance.config.mail.enabled:
        raise DropboxError("no mail server is configured (mail.host is empty): nothing was sent")
    return instance.config.mail


def _retry_given_up(session: Session, actor: str) -> int:
    """Make every given-up mail due again, with its attempts counted from nought; audited."""
    rows = list(
        session.execute(select(Notification).where(Notification.gave_up_on.is_not(None))).scalars()
    )
    for row in rows:
        row.gave_up_on = None
        row.next_attempt_at = None
        row.attempts = 0
    if rows:
        audit.record(
            session, actor, "notify.retry", detail=f"{len(rows)} given-up mails made due again"
        )
    return len(rows)


def run_once(
    instance: Instance, now: datetime | None = None, *, retry: bool = False, actor: str = ACTOR
) -> RunSummary:
    """Send every mail that is due now, then return; for a timer (`dropbox notify --once`).

    With `retry` (the operator, once the mail server works again), the mails
    given up on are sent again too, each as if it had never failed.
    """
    settings = _mail_settings(instance)
    now = now or _now()
    summary = RunSummary()
    with _single_run(instance.config.data_dir), Delivery(settings) as delivery:
        with instance.sessions.begin() as session:
            _tidy(session, now)
            if retry:
                summary.retried = _retry_given_up(session, actor)
        after = 0
        while True:
            with instance.sessions.begin() as session:
                batch, last = _prepare(session, settings, now, after, summary)
            if last is None:
                break
            after = last
            # Sent outside any transaction: a slow mail server holds no database lock.
            results = [(mail, _send(delivery, settings, mail)) for mail in batch]
            if results:
                with instance.sessions.begin() as session:
                    _record(session, results, now, summary)
    return summary


# --- a test mail, to check the settings ------------------------------------------------------

TEST_SUBJECT = "Reviewer app: a test of your notification e-mails"


def text_of_test_mail(link: str) -> str:
    """The whole text of a test mail: what it is, and what real mails will say."""
    return (
        "\n".join(
            [
                "Hello,",
                "",
                "This is a test, sent by whoever runs the reporting dropbox, to check that",
                "notification e-mails reach you. Nothing is waiting for you because of it.",
                "",
                "Real notifications count the new reports, answers from sources and",
                "deadlines of your offices. They never name or describe a report.",
                "",
                f"The reviewer app: {link}",
                "",
                "You can change these e-mails, or stop them, on your account page in the",
                "reviewer app.",
            ]
        )
        + "\n"
    )


@dataclass(frozen=True)
class SentTestMail:
    """Where a test mail went."""

    address: str
    openpgp_fingerprint: str | None


def send_test_mail(instance: Instance, username: str, actor: str) -> SentTestMail:
    """Send one test mail to an officer now, as their notifications would go; audited.

    For the operator who has just set up [mail], or an officer who has just
    registered an OpenPGP key. It goes to the officer's address, encrypted if
    they registered a key, and touches no queued mail. DropboxError says why
    it was not sent (the mail server's refusal, in the same words as a
    failed notification).
    """
    settings = _mail_settings(instance)
    with instance.sessions() as session:
        officer = officers.get(session, username)
        preference = session.get(NotificationPreference, officer.id)
        if not officer.active:
            raise DropboxError(f"{username} is deactivated: no mail is sent to them")
        if preference is None or not preference.email:
            raise DropboxError(
                f"{username} has given no e-mail address: they add one on their account "
                "page in the reviewer app (E-mail notifications)"
            )
        if preference.mode == NotificationMode.NONE:
            raise DropboxError(
                f"{username} chose to get no notification e-mails: nothing was sent to them"
            )
        recipient = Recipient(
            preference.email, preference.openpgp_key, preference.openpgp_fingerprint
        )
    error = None
    with Delivery(settings) as delivery:
        try:
            message = build(
                settings, recipient, TEST_SUBJECT, text_of_test_mail(settings.reviewer_link)
            )
            delivery.send(message, recipient.address)
        except (openpgp.KeyRefused, openpgp.GpgMissing, MailError) as failed:
            error = str(failed)
    detail = f"to {username}: " + (f"failed: {error}" if error else "sent")
    with instance.sessions.begin() as session:
        audit.record(session, actor, "notify.test", detail=detail[:500])
    if error is not None:
        raise DropboxError(
            f"the test mail to {username} ({recipient.address}) was not sent: {error}"
        )
    return SentTestMail(recipient.address, recipient.openpgp_fingerprint)


# --- what administrators see ------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """A mail that failed: being retried, or given up."""

    officer: str
    display_name: str
    what: str
    attempts: int
    last_error: str
    next_attempt_at: datetime | None
    gave_up_on: date | None


def failures(session: Session) -> list[Failure]:
    """Mails that failed at least once and were not sent since, given-up ones first."""
    rows = session.execute(
        select(Notification, Officer.username, Officer.display_name)
        .join(Officer, Officer.id == Notification.officer_id)
        .where(Notification.attempts > 0)
        .order_by(Notification.gave_up_on.desc().nulls_last(), Notification.id.desc())
    ).all()
    return [
        Failure(
            officer=username,
            display_name=display_name,
            what=" ".join(describe(Counts.of(row))),
            attempts=row.attempts,
            last_error=row.last_error,
            next_attempt_at=row.next_attempt_at,
            gave_up_on=row.gave_up_on,
        )
        for row, username, display_name in rows
    ]
