"""Notification e-mails, end to end: a real SMTP server (aiosmtpd) and the real `gpg` program.

Reports and answers come through the source interface; officers choose their
mails on the reviewer app's pages, through the real case server; the mails
are sent by `dropbox.notify.run_once` (what `dropbox notify --once` runs) to
an aiosmtpd server this test starts on loopback, one that refuses mail, one
that is not there, and one that disappears in the middle of a session. An
encrypted mail is opened with the `gpg` program and a key pair made here.

These tests speak plain SMTP to a server on loopback; TLS to the mail
server (STARTTLS, implicit TLS, certificates refused) is tests/test_mail_tls.py.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from flask import Flask
from nacl.public import PrivateKey
from sqlalchemy import func, select

from dropbox import notify
from dropbox.config import MailSettings
from dropbox.instance import Instance
from dropbox.models import (
    Notification,
    NotificationPreference,
    Officer,
    ReminderSent,
    Report,
)
from tests.conftest import CHEAP_CRYPTO_TOML, free_port, invoke
from tests.gpg_helpers import Keys, made_keys
from tests.reviewer_helpers import (
    World,
    audit_details,
    post_form,
    signed_in_client,
    source_report,
)

pytestmark = pytest.mark.database_engine

FROM = "dropbox@example.org"
LINK = "http://127.0.0.1:8081/"
MESSAGE = "The procurement lead took kickbacks from the catering contract in March."
ANSWER = "The second invoice was signed by the deputy director on a Sunday."


# --- a real SMTP server ------------------------------------------------------------------


@dataclass
class Mailbox:
    """An aiosmtpd handler: keeps every mail, or refuses, or disappears after some."""

    mails: list[tuple[list[str], bytes]] = field(default_factory=list)
    refuse: str | None = None
    vanish_after: int | None = None
    controller: Any = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.vanish_after is not None and len(self.mails) >= self.vanish_after:
            # Stop listening and drop this session without an answer: the server is gone.
            self.controller.server.close()
            server.transport.close()
            return "421 gone"
        if self.refuse is not None:
            return self.refuse
        self.mails.append((list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        """The mails delivered to `address`, parsed."""
        return [
            email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[misc]
            for rcpt, raw in self.mails
            if address in rcpt
        ]


@contextlib.contextmanager
def smtp_server(mailbox: Mailbox, port: int | None = None) -> Iterator[int]:
    """An aiosmtpd server on loopback for the length of the block; yields its port."""
    port = port or free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    mailbox.controller = controller
    controller.start()
    try:
        yield port
    finally:
        with contextlib.suppress(Exception):
            controller.stop()


def use_mail(instance: Instance, port: int, **overrides: Any) -> None:
    """Point the instance at the test's mail server (plain SMTP on loopback)."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "from_address": FROM,
        "reviewer_link": LINK,
        "timeout_seconds": 5,
        **overrides,
    }
    settings = MailSettings(**values)
    instance.config = replace(instance.config, mail=settings)


def address(role: str) -> str:
    return f"{role}@example.org"


def choose(world: World, role: str, mode: str = "immediate", key: str = "") -> None:
    """Record an officer's choice as the account page does (through the service)."""
    with world.instance.sessions.begin() as db:
        officer = db.get(Officer, world.people[role].id)
        assert officer is not None
        notify.choose(db, officer, email=address(role), mode=mode, openpgp_key=key)


def morning(days: int = 0) -> datetime:
    """Today (UTC), or a later day, at 08:00: after the default digest hour (7)."""
    today = datetime.now(UTC).replace(tzinfo=None).date() + timedelta(days=days)
    return datetime(today.year, today.month, today.day, 8)


def night() -> datetime:
    """Today (UTC) at 03:00: before the digest hour."""
    today = datetime.now(UTC).replace(tzinfo=None).date()
    return datetime(today.year, today.month, today.day, 3)


def report_content(instance: Instance, report_id: str) -> list[str]:
    """What must never be in a mail: the designation, the category's code and label, the text."""
    with instance.sessions() as db:
        report = db.get(Report, report_id)
        assert report is not None
        category = instance.config.category(report.category)
        return [report.designation, report.category, category.label, MESSAGE, ANSWER, report.id]


def report_ids(instance: Instance) -> set[str]:
    with instance.sessions() as db:
        return set(db.execute(select(Report.id)).scalars())


def new_report(source: Flask, instance: Instance, category: str = "fraud") -> str:
    """Send a report through the source interface; its id."""
    before = report_ids(instance)
    source_report(source, category, MESSAGE)
    (made,) = report_ids(instance) - before
    return made


def queued(instance: Instance) -> list[Notification]:
    with instance.sessions() as db:
        return list(db.execute(select(Notification).order_by(Notification.id)).scalars())


def body_text(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


# --- OpenPGP keys made by the `gpg` program ----------------------------------------------


@pytest.fixture(scope="module")
def gpg_keys() -> Iterator[Keys]:
    """The officer's key pair in a GnuPG home of this test's own, and keys of every kind."""
    with made_keys("Officer <officer@example.org>") as keys:
        yield keys


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox()


@pytest.fixture
def mail_port(world: World, mailbox: Mailbox) -> Iterator[int]:
    """A running SMTP server the world's instance sends to."""
    with smtp_server(mailbox) as port:
        use_mail(world.instance, port)
        yield port


# --- what a mail says, and what it never says ----------------------------------------------


def test_a_new_report_and_an_answer_are_told_by_counts_only(
    world: World, mail_port: int, mailbox: Mailbox, source: Flask
) -> None:
    choose(world, "oio")
    choose(world, "eco")  # another office: told nothing about an OIO report
    before = report_ids(world.instance)
    _, client = source_report(source, "fraud", MESSAGE)
    (report_id,) = report_ids(world.instance) - before
    # Nothing is sent while the source's request is served: the mail waits in the queue.
    assert mailbox.mails == []
    assert [(r.officer_id, r.new_reports) for r in queued(world.instance)] == [
        (world.people["oio"].id, 1)
    ]

    summary = notify.run_once(world.instance)

    assert (summary.sent, summary.failed) == (1, 0)
    (mail,) = mailbox.to(address("oio"))
    assert mailbox.to(address("eco")) == []
    text = body_text(mail)
    assert "1 new report is waiting in the reviewer app." in text
    assert LINK in text
    for secret in report_content(world.instance, report_id):
        assert secret not in mail.as_string(), secret
    assert mail["From"] == FROM and mail["To"] == address("oio")
    assert queued(world.instance) == []  # a sent mail leaves no row

    # The source answers twice and another report arrives: one mail with all three.
    for text in (ANSWER, "And one more thing about the invoices."):
        answered = post_form(client, "/thread", "/thread/answer", {"message": text})
        assert answered.status_code == 302
    source_report(source, "harassment", "Another report about something else entirely here.")
    notify.run_once(world.instance)
    second = mailbox.to(address("oio"))[1]
    assert "1 new report and 2 new answers from sources are waiting" in body_text(second)
    for secret in report_content(world.instance, report_id):
        assert secret not in second.as_string(), secret


def test_nothing_is_sent_to_officers_who_chose_none_or_were_deactivated(
    world: World, mail_port: int, mailbox: Mailbox, source: Flask
) -> None:
    choose(world, "eco", mode="none")
    choose(world, "eco2")
    choose(world, "gone")  # deactivated (in the world): never mailed
    with world.instance.sessions.begin() as db:
        gone = db.get(Officer, world.people["gone"].id)
        assert gone is not None
        gone.active = False
    source_report(source, "retaliation", MESSAGE)
    notify.run_once(world.instance)
    assert [rcpt for rcpt, _ in mailbox.mails] == [[address("eco2")]]


def test_sending_never_waits_in_a_request_even_with_a_mail_server_that_never_answers(
    world: World, source: Flask
) -> None:
    # A port that accepts connections and then says nothing, for ever.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        use_mail(world.instance, silent.getsockname()[1], timeout_seconds=30)
        choose(world, "oio")
        started = time.monotonic()
        source_report(source, "fraud", MESSAGE)
        assert time.monotonic() - started < 10
        assert [r.new_reports for r in queued(world.instance)] == [1]
    finally:
        silent.close()


# --- OpenPGP ---------------------------------------------------------------------------------


def test_an_encrypted_mail_opens_with_gpg_and_holds_no_report_content(
    world: World, mail_port: int, mailbox: Mailbox, source: Flask, gpg_keys: Keys
) -> None:
    choose(world, "oio", key=gpg_keys.good)
    report_id = new_report(source, world.instance)

    summary = notify.run_once(world.instance)

    assert summary.errors == [] and summary.sent == 1
    (mail,) = mailbox.to(address("oio"))
    assert mail.get_content_type() == "multipart/encrypted"
    assert mail.get_param("protocol") == "application/pgp-encrypted"
    control, encrypted = mail.iter_parts()
    assert control.get_content_type() == "application/pgp-encrypted"
    raw = mail.as_string()
    assert "new report" not in raw and LINK not in raw  # only the ciphertext carries them
    decrypted = gpg_keys.decrypt(encrypted.get_payload(decode=True)).decode()
    inner = email.message_from_string(decrypted, policy=email.policy.default)
    assert inner.get_content_type() == "text/plain"
    plaintext = body_text(inner)  # type: ignore[arg-type]
    assert "1 new report is waiting in the reviewer app." in plaintext
    assert LINK in plaintext
    for secret in report_content(world.instance, report_id):
        assert secret not in decrypted, secret
        assert secret not in raw, secret


@pytest.mark.parametrize(
    ("which", "words"),
    [
        ("expired", "has expired"),
        ("revoked", "has been revoked"),
        ("sign_only", "cannot encrypt"),
        ("private", "secret key"),
        ("two", "holds 2 keys"),
        ("garbage", "not an OpenPGP public key"),
        ("huge", "too large (more than 64 KiB)"),
    ],
)
def test_a_key_that_cannot_be_used_is_refused_at_registration(
    world: World, case_app: Flask, gpg_keys: Keys, which: str, words: str
) -> None:
    from tests.reviewer_helpers import api_headers

    headers = api_headers(case_app, world, "oio")
    answer = case_app.test_client().post(
        "/api/v2/account/notifications",
        json={
            "email": address("oio"),
            "mode": "immediate",
            "openpgp_key": gpg_keys.pasted(which),
        },
        headers=headers,
    )
    assert answer.status_code == 400
    assert words in answer.get_json()["error"]
    with world.instance.sessions() as db:
        assert db.get(NotificationPreference, world.people["oio"].id) is None  # nothing kept


def test_a_key_that_expired_after_registration_is_never_bypassed(
    world: World, mail_port: int, mailbox: Mailbox, source: Flask, gpg_keys: Keys
) -> None:
    choose(world, "oio", key=gpg_keys.good)
    with world.instance.sessions.begin() as db:
        preference = db.get(NotificationPreference, world.people["oio"].id)
        assert preference is not None
        # As if time had passed: the stored key is now one that has expired.
        preference.openpgp_key = gpg_keys.expired
        preference.openpgp_fingerprint = gpg_keys.expired_fpr
    source_report(source, "fraud", MESSAGE)
    summary = notify.run_once(world.instance)
    assert (summary.sent, summary.failed) == (0, 1)
    assert mailbox.mails == []  # never sent in the clear instead
    (row,) = queued(world.instance)
    assert row.attempts == 1 and "can no longer encrypt" in row.last_error


def test_the_account_page_registers_a_key_and_tells_a_refusal_in_plain_words(
    world: World, mail_port: int, reviewer: Flask, gpg_keys: Keys
) -> None:
    client = signed_in_client(reviewer, world, "oio")
    page = "/account/notifications"
    assert "notify --test" not in client.get(page).get_data(as_text=True)  # no mails chosen
    refused = post_form(
        client,
        page,
        page,
        {"email": address("oio"), "mode": "digest", "openpgp_key": gpg_keys.revoked},
    )
    assert refused.status_code == 400
    text = refused.get_data(as_text=True)
    assert "has been revoked" in text
    assert f'value="{address("oio")}"' in text  # what was typed is kept
    saved = post_form(
        client,
        page,
        page,
        {"email": address("oio"), "mode": "digest", "openpgp_key": gpg_keys.good},
    )
    assert saved.status_code == 302
    shown = client.get(page).get_data(as_text=True)
    with world.instance.sessions() as db:
        preference = db.get(NotificationPreference, world.people["oio"].id)
        assert preference is not None and preference.openpgp_fingerprint
        assert preference.mode == "digest"
        assert "PRIVATE" not in (preference.openpgp_key or "")
        fingerprint = preference.openpgp_fingerprint
    assert fingerprint[:4] + " " + fingerprint[4:8] in shown
    assert "Officer &lt;officer@example.org&gt;" in shown
    # How to check that mails arrive and open: a test mail, with the command to ask for.
    assert "dropbox notify --test oio-officer" in shown
    assert audit_details(world.instance, "notify.settings") == [
        f"mode digest; OpenPGP key {fingerprint}"
    ]


# --- the daily summary and deadline reminders -----------------------------------------------


def test_the_daily_summary_waits_for_its_hour_and_goes_once_a_day(
    world: World, mail_port: int, mailbox: Mailbox, source: Flask
) -> None:
    choose(world, "oio", mode="digest")
    source_report(source, "fraud", MESSAGE)
    source_report(source, "other", "A second report, long enough to be accepted here.")
    notify.run_once(world.instance, now=night())
    assert mailbox.mails == []
    notify.run_once(world.instance, now=morning())
    (mail,) = mailbox.to(address("oio"))
    text = body_text(mail)
    assert text.startswith("Your daily summary")
    assert "2 new reports are waiting" in text
    # Both new reports are due to be acknowledged in 7 days: no reminder yet.
    assert "acknowledged" not in text
    source_report(source, "fraud", "A third report arrives after the summary went out today.")
    notify.run_once(world.instance, now=morning() + timedelta(hours=3))
    assert len(mailbox.mails) == 1  # the next one is tomorrow's
    notify.run_once(world.instance, now=morning(1))
    assert "1 new report is waiting" in body_text(mailbox.to(address("oio"))[1])


def test_each_deadline_is_reminded_once_and_overdue_reports_once(
    world: World, mail_port: int, mailbox: Mailbox, source: Flask
) -> None:
    choose(world, "oio")
    ids = [new_report(source, world.instance) for _ in range(3)]
    notify.run_once(world.instance, now=night())  # the three "new report" mails, merged
    assert "3 new reports" in body_text(mailbox.to(address("oio"))[0])
    today = morning().date()
    with world.instance.sessions.begin() as db:
        soon, feedback, late = (db.get(Report, i) for i in ids)
        assert soon and feedback and late
        soon.acknowledge_due = today + timedelta(days=2)
        feedback.acknowledged_at = morning()
        feedback.feedback_due = today + timedelta(days=10)
        late.acknowledge_due = today - timedelta(days=1)

    notify.run_once(world.instance, now=morning())
    text = body_text(mailbox.to(address("oio"))[1])
    assert "1 report is due to be acknowledged within 2 days." in text
    assert "1 report is due for feedback within 2 weeks." in text
    assert "1 report is overdue." in text
    assert "new report" not in text

    # The next day nothing changed: nothing is told twice.
    notify.run_once(world.instance, now=morning(1))
    assert len(mailbox.mails) == 2
    # Three days on, the first report is overdue too: only that is new.
    notify.run_once(world.instance, now=morning(3))
    text = body_text(mailbox.to(address("oio"))[2])
    assert text.splitlines()[2] == "1 report is overdue."
    assert "acknowledged within" not in text

    # A deleted report's reminders are forgotten with it.
    from dropbox import cases

    with world.instance.sessions.begin() as db:
        report = db.get(Report, ids[0])
        assert report is not None
        cases.shred_report(db, report, "test", "report.delete")
    with world.instance.sessions() as db:
        left = db.execute(
            select(func.count()).select_from(ReminderSent).where(ReminderSent.report_id == ids[0])
        ).scalar_one()
    assert left == 0


# --- failures: retried, given up, shown to administrators, audited ---------------------------


def test_a_refusing_server_is_retried_with_back_off_then_given_up_and_shown(
    world: World, mailbox: Mailbox, source: Flask, reviewer: Flask
) -> None:
    mailbox.refuse = "554 5.7.1 Message refused"
    with smtp_server(mailbox) as port:
        use_mail(world.instance, port)
        choose(world, "oio")
        source_report(source, "fraud", MESSAGE)
        start = morning()
        summary = notify.run_once(world.instance, now=start)
        assert (summary.sent, summary.failed) == (0, 1)
        (row,) = queued(world.instance)
        assert row.attempts == 1 and row.next_attempt_at == start + timedelta(minutes=1)
        assert "554" in row.last_error and "refused the mail" in row.last_error
        # Not yet due: a run 30 seconds later leaves it alone.
        assert notify.run_once(world.instance, now=start + timedelta(seconds=30)).waiting == 1
        at = start
        for wait in notify.BACKOFF:
            at = at + wait
            notify.run_once(world.instance, now=at)
        (row,) = queued(world.instance)
        assert row.attempts == notify.MAX_ATTEMPTS and row.gave_up_on == at.date()
        assert row.next_attempt_at is None
        assert len(audit_details(world.instance, "notify.failed")) == notify.MAX_ATTEMPTS - 1
        (gave_up,) = audit_details(world.instance, "notify.gave_up")
        assert "oio-officer" in gave_up and "554" in gave_up

    admin = signed_in_client(reviewer, world, "admin")
    page = admin.get("/admin/notifications").get_data(as_text=True)
    assert "oio-officer" in page and "Given up" in page and "554" in page
    assert "1 new report is waiting" in page
    assert "dropbox notify --once --retry" in page  # what to do once the server works again
    officer = signed_in_client(reviewer, world, "oio")
    assert officer.get("/admin/notifications").status_code in (302, 403, 404)


def test_given_up_mails_are_sent_again_only_when_the_operator_asks(
    world: World, mailbox: Mailbox, source: Flask
) -> None:
    mailbox.refuse = "451 4.3.0 Try again later"
    with smtp_server(mailbox) as port:
        use_mail(world.instance, port)
        choose(world, "oio")
        choose(world, "eco")
        source_report(source, "fraud", MESSAGE)
        at = morning()
        notify.run_once(world.instance, now=at)
        for wait in notify.BACKOFF:
            at = at + wait
            notify.run_once(world.instance, now=at)
        (row,) = queued(world.instance)
        assert row.gave_up_on is not None
        mailbox.refuse = None  # the mail server works again
        # A timer's run leaves a given-up mail alone...
        later = notify.run_once(world.instance, now=at + timedelta(hours=1))
        assert (later.sent, later.retried) == (0, 0) and mailbox.mails == []
        # ...the operator's --retry sends it, once, merged with what came since.
        source_report(source, "fraud", "A second report about the catering contract, in April.")
        again = notify.run_once(world.instance, now=at + timedelta(hours=2), retry=True)
        assert (again.retried, again.sent, again.failed) == (1, 1, 0)
        (mail,) = mailbox.to(address("oio"))
        assert "2 new reports are waiting in the reviewer app." in body_text(mail)
        assert mailbox.to(address("eco")) == []
        assert queued(world.instance) == []
        assert audit_details(world.instance, "notify.retry") == ["1 given-up mails made due again"]
        # Nothing left to retry: nothing more is sent.
        assert notify.run_once(world.instance, retry=True).retried == 0
        assert len(mailbox.mails) == 1


def test_a_server_that_is_not_there_fails_every_mail_at_once(world: World, source: Flask) -> None:
    use_mail(world.instance, free_port())  # nothing listens there
    for role in ("eco", "eco2", "eco_admin"):
        choose(world, role)
    source_report(source, "retaliation", MESSAGE)
    started = time.monotonic()
    summary = notify.run_once(world.instance)
    assert time.monotonic() - started < 5
    assert (summary.sent, summary.failed) == (0, 3)
    assert {r.last_error for r in queued(world.instance)} == {
        "the mail server refused the connection (is it running, and is mail.port right?)"
    }
    assert len(audit_details(world.instance, "notify.failed")) == 3


def test_a_server_that_disappears_mid_session_loses_no_mail(
    world: World, mailbox: Mailbox, source: Flask
) -> None:
    roles = ("eco", "eco2", "eco_admin")
    for role in roles:
        choose(world, role)
    mailbox.vanish_after = 1
    with smtp_server(mailbox) as port:
        use_mail(world.instance, port)
        source_report(source, "retaliation", MESSAGE)
        summary = notify.run_once(world.instance, now=morning())
    assert (summary.sent, summary.failed) == (1, 2)
    (first,) = mailbox.mails
    errors = sorted(r.last_error for r in queued(world.instance))
    assert errors[0] == "the mail server closed the connection"
    assert "refused the connection" in errors[1]  # it was gone when the next mail tried again

    # The server is back: the two waiting mails go at their retry, the first is not repeated.
    back = Mailbox()
    with smtp_server(back, port):
        notify.run_once(world.instance, now=morning() + timedelta(minutes=2))
    delivered = sorted(r for rcpt, _ in [first, *back.mails] for r in rcpt)
    assert delivered == sorted(address(r) for r in roles)
    assert queued(world.instance) == []


# --- a test mail ------------------------------------------------------------------------------


def test_a_test_mail_goes_at_once_as_the_officers_mails_go_and_leaves_the_queue_alone(
    world: World, mail_port: int, mailbox: Mailbox, source: Flask, gpg_keys: Keys
) -> None:
    choose(world, "oio")
    choose(world, "eco", key=gpg_keys.good)
    new_report(source, world.instance)  # queued for the OIO officer, not yet sent
    waiting = [(r.officer_id, r.new_reports) for r in queued(world.instance)]

    sent = notify.send_test_mail(world.instance, "oio-officer", "command line")

    assert sent == notify.SentTestMail(address("oio"), None)
    (mail,) = mailbox.to(address("oio"))
    assert mail["Subject"] == notify.TEST_SUBJECT and mail["From"] == FROM
    text = body_text(mail)
    assert "This is a test" in text and LINK in text
    assert "waiting in the reviewer app" not in text  # it counts nothing
    assert [(r.officer_id, r.new_reports) for r in queued(world.instance)] == waiting

    # To an officer with a key: encrypted, as their notifications are.
    sent = notify.send_test_mail(world.instance, "eco-officer", "command line")
    assert sent.openpgp_fingerprint is not None
    (encrypted,) = mailbox.to(address("eco"))
    assert encrypted.get_content_type() == "multipart/encrypted"
    assert "This is a test" not in encrypted.as_string()
    _, payload = encrypted.iter_parts()
    inner = gpg_keys.decrypt(payload.get_payload(decode=True)).decode()
    assert "This is a test" in inner and LINK in inner
    assert audit_details(world.instance, "notify.test") == [
        "to oio-officer: sent",
        "to eco-officer: sent",
    ]


@pytest.mark.parametrize(
    ("username", "words"),
    [
        ("nobody", "no officer is called 'nobody'"),
        ("eco-second", "eco-second has given no e-mail address"),
        ("admin", "admin chose to get no notification e-mails"),
        ("gone-officer", "gone-officer is deactivated"),
    ],
)
def test_a_test_mail_to_someone_who_gets_no_mail_is_refused_in_plain_words(
    world: World, mail_port: int, mailbox: Mailbox, username: str, words: str
) -> None:
    choose(world, "admin", mode="none")
    choose(world, "gone")
    with world.instance.sessions.begin() as db:
        gone = db.get(Officer, world.people["gone"].id)
        assert gone is not None
        gone.active = False
    with pytest.raises(notify.DropboxError) as refused:
        notify.send_test_mail(world.instance, username, "command line")
    assert str(refused.value).startswith(words)
    assert mailbox.mails == []
    assert audit_details(world.instance, "notify.test") == []


def test_a_test_mail_the_server_refuses_says_why_and_is_audited(
    world: World, mailbox: Mailbox
) -> None:
    mailbox.refuse = "550 5.1.1 No such mailbox"
    choose(world, "oio")
    with smtp_server(mailbox) as port:
        use_mail(world.instance, port)
        with pytest.raises(notify.DropboxError) as refused:
            notify.send_test_mail(world.instance, "oio-officer", "command line")
    assert str(refused.value) == (
        f"the test mail to oio-officer ({address('oio')}) was not sent: "
        "the mail server refused the mail (550 5.1.1 No such mailbox)"
    )
    (detail,) = audit_details(world.instance, "notify.test")
    assert detail.startswith("to oio-officer: failed: the mail server refused the mail (550")
    assert queued(world.instance) == []  # a test is not retried


# --- the command -----------------------------------------------------------------------------


def test_dropbox_notify_once_sends_and_says_what_it_did(
    tmp_path: Path,
    mailbox: Mailbox,
    source_app: Flask,
    instance: Instance,
    office_keys: dict[str, PrivateKey],
) -> None:
    from tests.reviewer_helpers import make_world

    with smtp_server(mailbox) as port:
        config_file = tmp_path / "config.toml"
        config_file.write_text(
            f'data_dir = "{instance.config.data_dir}"\n'
            f'database_url = "{instance.config.database_url}"\n'
            + CHEAP_CRYPTO_TOML
            + f'[mail]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
            f'from_address = "{FROM}"\n'
        )
        world = make_world(instance, office_keys)
        choose(world, "oio")
        source_report(source_app, "fraud", MESSAGE)
        done = invoke("--config", str(config_file), "notify", "--once")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "Notifications: sent 1 mail."
        assert len(mailbox.mails) == 1
        again = invoke("--config", str(config_file), "notify", "--once")
        assert again.stdout.strip() == "Notifications: sent 0 mails."
    source_report(source_app, "fraud", MESSAGE)
    failed = invoke("--config", str(config_file), "notify", "--once")
    assert failed.returncode == 1
    assert "1 failed" in failed.stdout and "refused the connection" in failed.stdout
    assert "Traceback" not in failed.stdout + failed.stderr
    missing = invoke("--config", str(config_file), "notify")
    assert missing.returncode == 2 and "--once" in missing.stderr and "--test" in missing.stderr

    # --test: one mail now, and the answer in one line whether it went or not.
    with smtp_server(mailbox, port):
        tested = invoke("--config", str(config_file), "notify", "--test", "oio-officer")
    assert tested.returncode == 0, tested.stderr
    assert tested.stdout.splitlines()[0] == (
        f"The mail server took a test mail to oio-officer at {address('oio')}, "
        "not encrypted (they registered no OpenPGP key)."
    )
    assert mailbox.to(address("oio"))[-1]["Subject"] == notify.TEST_SUBJECT
    down = invoke("--config", str(config_file), "notify", "--test", "oio-officer")
    assert down.returncode == 2 and "refused the connection" in down.stderr
    unknown = invoke("--config", str(config_file), "notify", "--test", "nobody")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "dropbox: no officer is called 'nobody'"
    both = invoke("--config", str(config_file), "notify", "--once", "--test", "oio-officer")
    assert both.returncode == 2 and "not both" in both.stderr
    alone = invoke("--config", str(config_file), "notify", "--retry")
    assert alone.returncode == 2 and "--retry goes with --once" in alone.stderr
    with smtp_server(mailbox, port):
        retried = invoke("--config", str(config_file), "notify", "--once", "--retry")
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.splitlines()[0] == "Given-up mails made due again: 0."
    for result in (tested, down, unknown, both, alone, retried):
        assert "Traceback" not in result.stdout + result.stderr


def test_two_runs_at_once_never_send_twice(world: World, mail_port: int, mailbox: Mailbox) -> None:
    lock = world.instance.config.data_dir / notify.LOCK_FILE
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with notify._single_run(world.instance.config.data_dir):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(10)
        with pytest.raises(notify.DropboxError, match="another 'dropbox notify'"):
            notify.run_once(world.instance)
    finally:
        release.set()
        thread.join()
    assert lock.exists()
