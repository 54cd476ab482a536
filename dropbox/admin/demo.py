"""Sample reports for `dropbox demo`: one in each state an officer meets, marked as demo data.

Each is made the way a source makes one (`reports.submit`: sealed on arrival
to the office key, with the automatic acknowledgement), then worked on the
way the case server records an officer's actions (`cases`), with replies and
notes sealed here as the officer's machine would seal them. Only then are its
dates moved back in the database, so that the inbox shows deadlines met,
near and missed. The codenames are thrown away: nobody can sign in as these
sources.

`serve_demo` runs the demo's three processes and stops them together.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from crypto import codenames, envelope
from crypto.keys import KeyChain, public_key_from_bytes
from dropbox import cases, reports
from dropbox.instance import Instance
from dropbox.items import item_context, message_document, message_type, new_id
from dropbox.models import Item, ItemKind, Officer, Outcome, Report, Status, StatusChange

# Opens every sample's text, so that nobody takes it for a real report.
DEMO_MARK = "DEMO DATA: a sample report made by 'dropbox demo', not a real one.\n\n"

ACKNOWLEDGEMENT = (
    "Thank you. The {office} has received your report. An officer will confirm it"
    " personally within {days} days and may ask you questions here. Please come back"
    " with your codename to read them."
)


@dataclass(frozen=True)
class Sample:
    """One sample report: the state it is left in, what it says, and how old it is."""

    state: str
    category: str
    text: str
    days_ago: int
    urgent: bool = False


SAMPLES = (
    Sample(
        "new",
        "fraud",
        "Fuel cards of the vehicle pool are used at weekends, when no vehicle is out.",
        0,
    ),
    Sample(
        "acknowledged",
        "harassment",
        "A team leader mocks one colleague in every meeting and leaves her out of emails.",
        3,
    ),
    Sample(
        "overdue",
        "abuse-of-authority",
        "A manager hired his cousin for a post that was never advertised.",
        10,
    ),
    Sample(
        "urgent",
        "retaliation",
        "Since I reported a safety problem, my supervisor has threatened to have me moved.",
        1,
        urgent=True,
    ),
    Sample(
        "referred",
        "other",
        "Invoices for office supplies are approved by the person who placed the order.",
        4,
    ),
    Sample(
        "closed",
        "discrimination",
        "Older staff were told not to apply for the training programme.",
        40,
    ),
)


def _seal(
    report: Report, text: str, kind: ItemKind, to: list[envelope.Recipient]
) -> cases.NewSealed:
    """An officer's text sealed as the reviewer app seals it."""
    item_id = new_id()
    data = message_document(text)
    key_block, body = envelope.encrypt_bytes(
        data,
        to,
        item_context(report.id, item_id),
        content_type=message_type(kind),
    )
    return cases.NewSealed(item_id, len(data), key_block, body)


def _submit(instance: Instance, session: Session, sample: Sample) -> Report:
    """The report as a source sends it, under a codename nobody keeps."""
    secrets = instance.secrets
    source = codenames.derive(
        codenames.generate("en"), secrets.codename_salt, secrets.codename_cost
    )
    office = instance.config.office(instance.config.category(sample.category).office)
    report_id = new_id()
    new = reports.NewReport(
        lookup_id=source.lookup_id,
        source_public_key=source.hybrid_key.public_key,
        category=sample.category,
        text=DEMO_MARK + sample.text,
        details={},
        identity={},
        urgent=sample.urgent,
        acknowledgement=ACKNOWLEDGEMENT.format(office=office.name, days=reports.ACKNOWLEDGE_DAYS),
    )
    return reports.submit(instance, session, report_id, new)


def _reply(
    instance: Instance, session: Session, officer: Officer, report: Report, key: KeyChain
) -> None:
    """The officer reads the report and replies: the reply acknowledges it."""
    cases.thread(instance, session, officer, report)
    to: list[envelope.Recipient] = [
        key.public_key,
        public_key_from_bytes(report.source_public_key),
    ]
    text = "Thank you for your report. We are looking into it. (Demo data.)"
    sealed = _seal(report, text, ItemKind.REPLY, to)
    cases.add_item(instance, session, officer, report, "reply", sealed, acknowledge=True)


def _refer(session: Session, officer: Officer, report: Report, keys: dict[str, KeyChain]) -> None:
    """Hand the report to the other office, every key block re-sealed, no copy kept."""
    from_key = keys[report.office_code]
    to_office = next(code for code in sorted(keys) if code != report.office_code)
    to_key = keys[to_office].public_key
    items = session.execute(select(Item).where(Item.report_id == report.id)).scalars()
    blocks = {
        item.id: envelope.remove_recipient(
            envelope.add_recipient(item.key_block, from_key, to_key), from_key.public_key
        )
        for item in items
    }
    cases.refer(session, officer, report, to_office, False, blocks)


def _close(
    instance: Instance, session: Session, officer: Officer, report: Report, key: KeyChain
) -> None:
    """Assess and close the report, the reason first, as the reviewer app does."""
    cases.change_status(session, officer, report, Status.UNDER_ASSESSMENT, None)
    outcome = Outcome.NOT_SUBSTANTIATED
    reason = f"Closed ({outcome}): the programme was open to all ages. (Demo data.)"
    note = _seal(report, reason, ItemKind.NOTE, [key.public_key])
    cases.add_item(instance, session, officer, report, "note", note)
    cases.change_status(session, officer, report, Status.CLOSED, outcome)


def _move_back(session: Session, report: Report, days: int) -> None:
    """Every date of the report `days` earlier (the audit log keeps its own times)."""
    if not days:
        return
    delta = timedelta(days=days)
    report.received_at -= delta
    report.acknowledge_due -= delta
    report.feedback_due -= delta
    report.last_activity_at -= delta
    if report.acknowledged_at is not None:
        report.acknowledged_at -= delta
    if report.closed_at is not None:
        report.closed_at -= delta
    for item in session.execute(select(Item).where(Item.report_id == report.id)).scalars():
        item.created_at -= delta
    changes = select(StatusChange).where(StatusChange.report_id == report.id)
    for change in session.execute(changes).scalars():
        change.at -= delta


def seed(
    instance: Instance,
    session: Session,
    keys: dict[str, KeyChain],
    officers: dict[str, Officer],
) -> list[tuple[str, str]]:
    """Make the sample reports; return (state, designation) of each.

    `keys` and `officers` give, for each office code, its secret key and the
    demo officer who acts for it.
    """
    made = []
    for sample in SAMPLES:
        report = _submit(instance, session, sample)
        officer, key = officers[report.office_code], keys[report.office_code]
        if sample.state in ("acknowledged", "referred", "closed"):
            _reply(instance, session, officer, report, key)
        if sample.state == "referred":
            _refer(session, officer, report, keys)
        if sample.state == "closed":
            _close(instance, session, officer, report, key)
        session.flush()
        _move_back(session, report, sample.days_ago)
        made.append((sample.state, report.designation))
    return made


# --- the demo's processes ---------------------------------------------------------

# How long a stop of the demo may take before what is left is ended outright.
DEMO_STOP_SECONDS = 4.0


def stop_with_parent() -> None:
    """In a demo child: be told to stop (SIGTERM) if the demo itself dies without stopping it."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return  # not glibc: the demo stops its children itself
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class DemoStopped(Exception):
    """The demo ended otherwise than by being told to stop (each message one plain sentence)."""


def serve_demo(command: list[str], reviewer_settings: Path) -> None:
    """The three processes: source interface and case server (gunicorn), and the reviewer app.

    `command` runs the `dropbox` command with the demo's configuration
    (`dropbox demo` passes its own program); each child is it with `run
    source`, `run reviewer` or `reviewer`.

    Each child runs in a process group of its own, so that Ctrl-C in the
    terminal reaches only this process, which then tells each child once
    (SIGINT: gunicorn's quick stop, the reviewer app forgets its keys). A
    gunicorn worker that got Ctrl-C from the terminal and then its master's
    stop signal could hang in its signal handler until the master killed it
    ("sent SIGKILL! Perhaps out of memory?"). Whatever has not stopped after
    DEMO_STOP_SECONDS is ended outright.
    """
    arguments = [
        ["run", "source"],
        ["run", "reviewer"],
        ["reviewer", "--settings", str(reviewer_settings)],
    ]
    children = [
        subprocess.Popen(  # noqa: S603 - our own program
            [*command, *args],
            process_group=0,
            preexec_fn=stop_with_parent,
        )
        for args in arguments
    ]
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)
    while not stopping and all(child.poll() is None for child in children):
        time.sleep(0.2)
    # Once only: a second Ctrl-C while stopping changes nothing.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
    deadline = time.monotonic() + DEMO_STOP_SECONDS
    while time.monotonic() < deadline and any(child.poll() is None for child in children):
        time.sleep(0.05)
    late = [child for child in children if child.poll() is None]
    for child in late:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # the child and its gunicorn workers
        child.wait()
    if late:
        print("dropbox: a demo server was slow to stop and was ended.", file=sys.stderr)
    failed = [
        child.returncode
        for child in children
        if child not in late and child.returncode not in (0, -signal.SIGINT, -signal.SIGTERM)
    ]
    if failed or not stopping:
        raise DemoStopped("a server stopped with an error (see the lines above)")
