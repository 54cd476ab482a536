"""Crash safety: uploads through gunicorn while its workers are killed with SIGKILL.

`dropbox run source` serves with 2 workers. Three sources at a time act as
browsers (codename, report form, multipart report with one file of 1 to 4
MiB) until 50 reports have been sent. For most uploads the worker serving it
is killed (it is found through /proc, see tests/served.py): some while the
body streams in, at a random point of it, and some at a random moment after
the last byte, while the server encrypts, fsyncs and commits. A kill also
cuts whatever else that worker was doing; gunicorn starts a new worker.

Then, with the server stopped:

* every report whose sending was answered with the receipt (the server
  redirects there only after the commit) is stored, and decrypts with its
  office's key to exactly what was sent; so does any report stored although
  its answer was cut;
* no item row lacks its blob, and `dropbox fsck` finds only what a crash may
  leave (blobs without a row, partial writes); after `fsck --repair` the
  blobs on disk are exactly those the rows name, and nothing is left in the
  temporary folder;
* officers see, through the inbox and the report page, exactly the stored
  reports, each whole: message, file, acknowledgement, nothing damaged. As
  the reviewer app sees them: every inbox page and every report from the
  case server (`case_server.create_app`, in this process, through
  `journalist_interface.client`), each thread opened on the officer's side
  with the office key their passphrase unlocks (`casefile.open_thread`).

Set DROPBOX_CRASH_SEED to repeat a run's kill plan (it is printed); timing
still varies.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from http.client import HTTPException
from pathlib import Path

import httpx
import pyotp
import pytest
from sqlalchemy import select

from case_server import create_app
from crypto.envelope import body_size
from dropbox import officers, offices
from dropbox.admin import fsck
from dropbox.config import load
from dropbox.instance import Instance
from dropbox.models import Item, ItemKind, Report
from journalist_interface import casefile
from journalist_interface.client import CaseServerClient, InboxQuery
from tests.conftest import CHEAP_COST, DATABASE, FIGURES, invoke
from tests.reviewer_helpers import read_out
from tests.served import (
    Browser,
    Prepared,
    Sent,
    Served,
    arrived,
    children,
    prepare_instance,
    report_form,
    serving,
)
from tests.signin_helpers import derive

pytestmark = pytest.mark.database_engine

UPLOADS = 50
WORKERS = 2
SOURCES = 3
MIB = 1024 * 1024
# The kill plan: how many uploads get their worker killed during the body,
# how many after it, and how many are left alone (shuffled by the seed).
KILLED_DURING_BODY = 12
KILLED_AFTER_BODY = 8
CATEGORIES = ("fraud", "harassment", "retaliation")
# Whatever a cut connection raises on the client's side.
CUT = (OSError, HTTPException)


@dataclass(frozen=True)
class Plan:
    """When to kill the worker serving one upload: never, at a byte of the body, or after it."""

    kind: str  # "none", "body" or "after"
    fraction: float  # of the body, for "body"
    delay: float  # seconds after the last byte, for "after"


@dataclass
class Outcome:
    """What one upload did, as its browser saw it."""

    sent: Sent
    plan: Plan
    acknowledged: bool = False
    receipt_shown: bool = False


class Killer:
    """Sends SIGKILL to gunicorn workers, and only to them (never a pid reused meanwhile)."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self.killed: set[int] = set()
        self.timers: list[threading.Timer] = []
        self._lock = threading.Lock()

    def kill(self, pid: int) -> None:
        """Kill worker `pid` if it is still one of the master's children."""
        with self._lock:
            if pid not in self.killed and pid in children(self.served.process.pid):
                os.kill(pid, signal.SIGKILL)
                self.killed.add(pid)

    def later(self, delay: float, pid: int) -> None:
        """Kill worker `pid` after `delay` seconds."""
        timer = threading.Timer(delay, self.kill, args=(pid,))
        with self._lock:
            self.timers.append(timer)
        timer.start()


def kill_plan(rng: random.Random) -> list[Plan]:
    """The plan of every upload, in a random order."""
    plans = [Plan("body", rng.uniform(0.05, 0.95), 0) for _ in range(KILLED_DURING_BODY)]
    plans += [Plan("after", 0, rng.uniform(0, 0.15)) for _ in range(KILLED_AFTER_BODY)]
    plans += [Plan("none", 0, 0)] * (UPLOADS - len(plans))
    rng.shuffle(plans)
    return plans


def upload_under_fire(
    served: Served, killer: Killer, number: int, plan: Plan, rng: random.Random
) -> tuple[Outcome, int]:
    """One source sends one report; return what happened, and how many steps before were cut."""
    retried = 0
    while True:  # a kill may cut the codename steps too: start again as a new browser
        browser = Browser(served)
        try:
            codename, page = browser.new_codename()
            break
        except CUT:
            retried += 1
    data = rng.randbytes(rng.randint(1 * MIB, 4 * MIB))
    sent = Sent(
        codename,
        rng.choice(CATEGORIES),
        f"Crash report {number}: fuel bought for vehicles the unit no longer has.",
        f"ledger-{number}.xlsx",
        hashlib.sha256(data).hexdigest(),
        len(data),
    )
    fields = {"category": sent.category, "message": sent.message}
    body, content_type = report_form(page, fields, [(sent.file_name, data)])
    outcome = Outcome(sent, plan)
    fired = False

    def on_sent(count: int, worker: int) -> None:
        nonlocal fired
        if fired:
            return  # once: the pieces still buffered by the kernel come after the kill
        if plan.kind == "body" and count >= plan.fraction * len(body):
            fired = True
            killer.kill(worker)
        elif plan.kind == "after" and count == len(body):
            fired = True
            killer.later(plan.delay, worker)

    try:
        reply = browser.request("POST", "/report", None, body, content_type, on_sent)
    except CUT:
        return outcome, retried
    assert reply.status == 302, (reply.status, reply.body[:300])
    assert reply.headers["Location"].endswith("/receipt"), reply.headers
    outcome.acknowledged = True
    try:
        receipt = browser.request("GET", "/receipt")
        outcome.receipt_shown = "Your report was received" in receipt.body
    except CUT:
        pass  # acknowledged all the same: the redirect comes only after the commit
    return outcome, retried


def officer_views(instance: Instance, prepared: Prepared) -> dict[str, list[str]]:
    """Each stored report as an officer of its office sees it: the kinds of its items, in order.

    Through the inbox (every page) and the report page, as the reviewer app
    gets them from the case server and opens them; a damaged item fails.
    """
    passphrase = "a long passphrase"
    totp_secrets: dict[str, str] = {}
    with instance.sessions.begin() as db:
        for code, key in prepared.office_keys.items():
            officer, totp_secrets[code] = officers.add(
                db, f"{code.lower()}-intake", passphrase, CHEAP_COST, "test"
            )
            offices.grant(db, code, officer, key, "test", read_out=read_out(officer))
    app = create_app(instance.config, instance)
    seen: dict[str, list[str]] = {}
    for code in prepared.office_keys:
        username = f"{code.lower()}-intake"
        client = CaseServerClient("http://case-server.test", transport=httpx.WSGITransport(app=app))
        try:
            derived = derive(client, username, passphrase)
            signed = client.sign_in(
                username, derived.auth_key, pyotp.TOTP(totp_secrets[code]).now()
            )
            keyring = casefile.open_keyring(signed.me, derived.wrapping_key)
            assert set(keyring.office_keys) == {code}
            page_number, pages = 1, 1
            while page_number <= pages:
                page = client.inbox(InboxQuery(page=page_number))
                pages = page.pages
                for row in page.rows:
                    thread = casefile.open_thread(client.report(row.id), keyring)
                    assert thread.damaged == [], row.designation
                    assert not any(entry.damaged for entry in thread.entries), row.designation
                    seen[row.id] = [str(entry.kind) for entry in thread.entries]
                page_number += 1
        finally:
            client.close()
    return seen


def test_acknowledged_uploads_survive_workers_killed_at_random_moments(
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("DROPBOX_CRASH_SEED", random.randrange(2**32)))  # noqa: S311
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    plans = kill_plan(rng)
    prepared = prepare_instance(tmp_path, WORKERS)
    outcomes: list[Outcome] = []
    failures: list[str] = []
    retried: list[int] = []
    numbers = iter(range(UPLOADS))
    numbers_lock = threading.Lock()

    started = time.perf_counter()
    with serving(prepared.config, prepared.port, prepared.data_dir, WORKERS) as served:
        killer = Killer(served)
        uploading = time.perf_counter()

        def source(n: int) -> None:
            source_rng = random.Random(seed + n + 1)  # noqa: S311 - test data, not secrets
            while True:
                with numbers_lock:
                    number = next(numbers, None)
                if number is None:
                    return
                try:
                    outcome, cut_before = upload_under_fire(
                        served, killer, number, plans[number], source_rng
                    )
                    outcomes.append(outcome)
                    retried.append(cut_before)
                except Exception as exc:
                    failures.append(f"upload {number}: {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=source, args=(n,)) for n in range(SOURCES)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert not any(thread.is_alive() for thread in threads), "a source hung"
        for timer in killer.timers:
            timer.join()
        # gunicorn replaced every worker killed, and serves on. A worker killed last may
        # still be exiting (not yet a zombie) while the count is right: wait it out.
        deadline = time.monotonic() + 30
        while set(served.wait_for_workers(WORKERS)) & killer.killed:
            assert time.monotonic() < deadline, "gunicorn did not replace every killed worker"
            time.sleep(0.2)
        uploaded = time.perf_counter() - uploading
    elapsed = time.perf_counter() - started
    log = served.log.read_text(errors="replace")
    assert failures == [], failures
    assert "Traceback" not in log and "unexpected error" not in log, log

    instance = Instance.open(load(prepared.config))
    try:
        with instance.sessions() as db:
            stored = {
                o.sent.codename: arrived(instance, db, o.sent, prepared.office_keys)
                for o in outcomes
            }
            report_ids = set(db.execute(select(Report.id)).scalars())
            rows = db.execute(select(Item.blob, Item.size)).all()
        acknowledged = [o for o in outcomes if o.acknowledged]
        lost = [o.sent.file_name for o in acknowledged if stored[o.sent.codename] is None]
        assert lost == [], f"acknowledged, then lost: {lost}"
        assert report_ids == {r for r in stored.values() if r is not None}, "a stray report"

        # No row without its blob, checked directly: every row's blob, whole.
        for name, size in rows:
            assert instance.store.path(name).stat().st_size == body_size(size), name
        found = fsck.check(instance, timedelta(0))
        assert found.broken_items == []
        assert found.unexpected == []
        config = str(prepared.config)
        checked = invoke("--config", config, "fsck", "--grace-minutes", "0")
        assert checked.returncode == (1 if found.leftovers else 0), checked.stdout
        repaired = invoke("--config", config, "fsck", "--repair", "--grace-minutes", "0")
        assert repaired.returncode == 0, repaired.stdout
        assert invoke("--config", config, "fsck", "--grace-minutes", "0").returncode == 0
        # And directly: the blobs on disk are exactly those the rows name.
        assert set(instance.store.names()) == {name for name, _ in rows}
        assert list(instance.store.temp_dir.iterdir()) == []

        seen = officer_views(instance, prepared)
        assert set(seen) == report_ids
        whole = [str(ItemKind.MESSAGE), str(ItemKind.FILE), str(ItemKind.ACKNOWLEDGEMENT)]
        assert all(kinds == whole for kinds in seen.values()), seen
        with instance.sessions() as db:  # and still intact after the repair
            for outcome in outcomes:
                assert (
                    arrived(instance, db, outcome.sent, prepared.office_keys)
                    == (stored[outcome.sent.codename])
                )
    finally:
        instance.close()

    cut = [o for o in outcomes if not o.acknowledged]
    stored_anyway = [o for o in cut if stored[o.sent.codename] is not None]
    FIGURES.add(
        f"crash safety ({DATABASE}, seed {seed}, {elapsed:.1f} s, {uploaded:.1f} s of uploads): "
        f"{len(outcomes)} uploads "
        f"({sum(o.sent.file_size for o in outcomes) / MIB:.0f} MiB), {len(killer.killed)} "
        f"workers killed with SIGKILL (each replaced by gunicorn); {len(acknowledged)} "
        f"acknowledged ({sum(o.receipt_shown for o in outcomes)} saw the receipt page), all "
        f"stored and intact; {len(cut)} cut "
        f"({len(stored_anyway)} of them stored anyway, intact); {sum(retried)} codename steps "
        f"cut and begun again; fsck found {len(found.orphan_blobs)} blobs without a row and "
        f"{len(found.partial_writes)} partial writes, no row without its blob; after repair "
        f"{len(report_ids)} reports, {len(rows)} blobs, all whole in the officers' view"
    )
    # The run really did both: kill workers mid-upload, and acknowledge uploads.
    assert len(cut) >= KILLED_DURING_BODY  # a kill during the body always cuts that upload
    assert len(killer.killed) >= KILLED_DURING_BODY // 2  # two uploads may share a worker
    assert len(acknowledged) >= 5
