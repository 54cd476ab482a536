"""The audit log: an append-only hash chain that names the first event tampered with."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from dropbox import audit
from dropbox.database import create_schema, make_engine, make_sessionmaker
from dropbox.models import AuditEvent, AuditHead
from tests.conftest import new_database_url


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(new_database_url() or f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


def _record_events(sessions: sessionmaker[Session], count: int) -> None:
    """Record `count` events, each committed in its own transaction, as the services do."""
    for i in range(1, count + 1):
        with sessions() as session:
            audit.record(
                session,
                f"officer-{i}",
                "report.read",
                report_id=f"report-{i % 2}",
                detail=f"item {i}",
            )
            session.commit()


def _verify(sessions: sessionmaker[Session]) -> audit.Verification:
    with sessions() as session:
        return audit.verify(session)


def _sql(engine: Engine, statement: str, **params: Any) -> None:
    """Change the database behind the log's back, as someone with the database file could."""
    with engine.begin() as connection:
        connection.execute(text(statement), params)


# --- An intact log ------------------------------------------------------------


def test_empty_log_verifies_with_no_events(sessions: sessionmaker[Session]) -> None:
    result = _verify(sessions)
    assert result.ok
    assert result.events == 0
    assert result.first_broken is None


def test_recorded_events_verify_with_the_right_count(sessions: sessionmaker[Session]) -> None:
    _record_events(sessions, 5)
    result = _verify(sessions)
    assert result.ok, result.problem
    assert result.events == 5


def test_events_are_numbered_from_one_and_each_links_to_the_one_before(
    sessions: sessionmaker[Session],
) -> None:
    _record_events(sessions, 3)
    with sessions() as session:
        events = session.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars().all()
        head = session.get(AuditHead, 1)
    assert [e.id for e in events] == [1, 2, 3]
    assert events[0].prev_hash == audit.GENESIS
    assert events[1].prev_hash == events[0].hash
    assert events[2].prev_hash == events[1].hash
    assert head is not None
    assert (head.last_event_id, head.last_hash) == (3, events[2].hash)


def test_event_records_who_what_which_report_and_when_to_the_second(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        event = audit.record(session, "alice", "identity.reveal", report_id="r1", detail="why")
        session.commit()
    assert (event.actor, event.action, event.report_id, event.detail) == (
        "alice",
        "identity.reveal",
        "r1",
        "why",
    )
    assert event.at.microsecond == 0
    now = datetime.now(UTC).replace(tzinfo=None)  # stored as naive UTC
    assert abs((now - event.at).total_seconds()) < 60


def test_event_rolled_back_with_its_transaction_leaves_no_trace(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        audit.record(session, "alice", "report.delete")
        session.rollback()
    assert _verify(sessions).events == 0
    with sessions() as session:
        event = audit.record(session, "alice", "report.delete")
        session.commit()
    assert event.id == 1
    assert _verify(sessions).ok


# --- Tampering ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("actor", "someone-else"),
        ("action", "report.list"),
        ("detail", "nothing to see"),
        ("at", "2001-01-01 00:00:00.000000"),
        ("report_id", "report-9"),
    ],
)
def test_edited_event_is_named_as_first_broken(
    engine: Engine, sessions: sessionmaker[Session], column: str, value: str
) -> None:
    _record_events(sessions, 5)
    _sql(engine, f"UPDATE audit_events SET {column} = :value WHERE id = 3", value=value)  # noqa: S608
    result = _verify(sessions)
    assert not result.ok
    assert result.first_broken == 3
    assert result.events == 2


def test_edited_hash_is_named_as_first_broken(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    _record_events(sessions, 5)
    _sql(engine, "UPDATE audit_events SET hash = :value WHERE id = 2", value=bytes(32))
    result = _verify(sessions)
    assert (result.ok, result.first_broken) == (False, 2)


def test_deleted_middle_event_is_named_as_missing(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    _record_events(sessions, 5)
    _sql(engine, "DELETE FROM audit_events WHERE id = 3")
    result = _verify(sessions)
    assert not result.ok
    assert result.first_broken == 3
    assert "missing" in result.problem
    assert result.events == 2


def test_deleted_last_event_is_detected(engine: Engine, sessions: sessionmaker[Session]) -> None:
    _record_events(sessions, 5)
    _sql(engine, "DELETE FROM audit_events WHERE id = 5")
    result = _verify(sessions)
    assert not result.ok
    assert result.first_broken == 5
    assert result.events == 4


def test_deleting_every_event_is_detected(engine: Engine, sessions: sessionmaker[Session]) -> None:
    _record_events(sessions, 3)
    _sql(engine, "DELETE FROM audit_events")
    result = _verify(sessions)
    assert (result.ok, result.first_broken, result.events) == (False, 1, 0)


def _rewrite_tail(engine: Engine, sessions: sessionmaker[Session], first: int) -> None:
    """Rewrite events `first`.. with new details and correctly recomputed hashes."""
    with sessions() as session:
        events = session.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars().all()
    prev_hash = events[first - 2].hash if first > 1 else audit.GENESIS
    for event in events[first - 1 :]:
        digest = audit._event_hash(
            prev_hash, event.id, event.at, event.actor, event.action, event.report_id, "forged"
        )
        _sql(
            engine,
            "UPDATE audit_events SET detail = 'forged', prev_hash = :prev, hash = :hash"
            " WHERE id = :id",
            prev=prev_hash,
            hash=digest,
            id=event.id,
        )
        prev_hash = digest


def test_consistently_rewritten_tail_is_detected_through_the_head(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    """Rewriting events 3 to 5 with recomputed hashes leaves a chain that links up.

    What gives it away is the head row, which holds the hash of the real last
    event: the rewritten chain ends in a different hash, so the last event is
    named. Only the last event can be named, since every rewritten event
    checks out against the one before it.

    The head lives in the same database. Someone who can write to the database
    and also rewrites the head row is not detected by `verify` alone: that
    needs the head's hash kept somewhere they cannot reach (a copy of a past
    head, an exported log). This test shows what the head does guarantee.
    """
    _record_events(sessions, 5)
    _rewrite_tail(engine, sessions, first=3)
    result = _verify(sessions)
    assert not result.ok
    assert result.first_broken == 5
    assert "head" in result.problem


def test_event_appended_behind_the_logs_back_is_detected(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    """A well-formed event 6 inserted without `record` is not covered by the head."""
    _record_events(sessions, 5)
    with sessions() as session:
        last = session.get(AuditEvent, 5)
    assert last is not None
    at = last.at
    digest = audit._event_hash(last.hash, 6, at, "mallory", "report.read", None, "")
    _sql(
        engine,
        "INSERT INTO audit_events (id, at, actor, action, report_id, detail, prev_hash, hash)"
        " VALUES (6, :at, 'mallory', 'report.read', NULL, '', :prev, :hash)",
        at=at.strftime("%Y-%m-%d %H:%M:%S.%f"),
        prev=last.hash,
        hash=digest,
    )
    result = _verify(sessions)
    assert not result.ok
    assert result.first_broken == 6


# --- Concurrency --------------------------------------------------------------


def test_concurrent_writers_produce_one_contiguous_chain(
    sessions: sessionmaker[Session],
) -> None:
    threads, per_thread = 4, 25
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def writer(worker: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                with sessions() as session:
                    audit.record(session, f"worker-{worker}", "report.read", detail=str(i))
                    session.commit()
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in workers)
    assert errors == []

    result = _verify(sessions)
    assert result.ok, result.problem
    assert result.events == threads * per_thread
    with sessions() as session:
        ids = session.execute(select(AuditEvent.id).order_by(AuditEvent.id)).scalars().all()
        actors = Counter(session.execute(select(AuditEvent.actor)).scalars())
    assert ids == list(range(1, threads * per_thread + 1))
    assert actors == {f"worker-{n}": per_thread for n in range(threads)}
