"""Transactions that run at the same time: PostgreSQL runs them side by side, SQLite in turn.

On SQLite every transaction begins IMMEDIATE, so these pass by construction;
on PostgreSQL (READ COMMITTED) they check the row locks that take its place.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pyotp
import pytest
from nacl.public import PrivateKey
from sqlalchemy import select

from dropbox import audit, officers
from dropbox.instance import Instance
from dropbox.models import AuditHead, Item, Report
from source_interface import create_app
from tests.conftest import CHEAP_COST
from tests.reviewer_helpers import source_report
from tests.source_helpers import post_reply

pytestmark = pytest.mark.database_engine

THREADS = 4


def at_once(work: Callable[[int, threading.Barrier], object]) -> list[object]:
    """Run `work(n, barrier)` in THREADS threads; the results, or the exceptions raised."""
    barrier = threading.Barrier(THREADS)
    results: list[object] = [None] * THREADS

    def run(n: int) -> None:
        try:
            results[n] = work(n, barrier)
        except BaseException as exc:
            results[n] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return results


def test_replies_posted_at_once_to_one_report_get_distinct_numbers(
    instance: Instance, office_keys: dict[str, PrivateKey]
) -> None:
    app = create_app(instance.config, instance)
    app.config["TESTING"] = True
    source_report(app, "fraud")
    with instance.sessions() as db:
        report_id = db.execute(select(Report.id)).scalar_one()

    def reply(n: int, barrier: threading.Barrier) -> int:
        with instance.sessions.begin() as db:
            report = db.get(Report, report_id)
            assert report is not None
            if instance.engine.dialect.name != "sqlite":  # SQLite lets in one at a time
                barrier.wait(timeout=10)  # every one has read the report before any writes
            return post_reply(instance, db, report, f"Reply {n}", None).seq

    results = at_once(reply)
    assert all(isinstance(seq, int) for seq in results), results
    with instance.sessions() as db:
        seqs = db.execute(select(Item.seq).where(Item.report_id == report_id)).scalars().all()
        next_seq = db.execute(select(Report.next_seq)).scalar_one()
    assert sorted(seqs) == list(range(1, len(seqs) + 1))
    assert set(results) <= set(seqs)
    assert next_seq == len(seqs) + 1


def test_one_totp_code_signs_in_once_even_when_tried_at_once(instance: Instance) -> None:
    with instance.sessions.begin() as db:
        amina, secret = officers.add(db, "amina", "a long demo passphrase", CHEAP_COST, "test")
        # Derived where the passphrase is typed, as the reviewer app does.
        auth_key, _ = officers.derive_auth_key(amina, "a long demo passphrase", CHEAP_COST)
    code = pyotp.TOTP(secret).now()

    def sign_in(_: int, barrier: threading.Barrier) -> bool:
        barrier.wait(timeout=10)
        with instance.sessions.begin() as db:
            result = officers.sign_in(db, "amina", auth_key, code)
            return result.officer is not None

    assert sorted(at_once(sign_in), key=str) == [False] * (THREADS - 1) + [True]


def test_an_audit_head_loaded_before_another_append_is_not_trusted(instance: Instance) -> None:
    with instance.sessions() as first:
        # The head, loaded by a first transaction and kept, as objects outlive commits.
        head = first.get(AuditHead, 1)
        first.commit()
        with instance.sessions.begin() as second:
            audit.record(second, "other", "report.read")
        audit.record(first, "first", "report.read")  # must see the other's event
        first.commit()
    assert head is not None and head.last_event_id == 2
    with instance.sessions() as db:
        result = audit.verify(db)
    assert result.ok, result.problem
    assert result.events == 2
