"""The audit log: a chain keyed outside the database, an anchor file, and signed checkpoints.

The attacks below are made the way their attacker could: with the database
only (SQL through the engine, the unkeyed hash function anyone can compute),
or also with the server's files (the audit key read from instance.json).
Verification goes through the real `dropbox audit verify` where the operator
would use it.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from nacl.signing import SigningKey
from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from dropbox import audit
from dropbox.config import Config, load
from dropbox.database import make_engine, make_sessionmaker
from dropbox.instance import SECRETS_FILE, Instance
from dropbox.models import AuditEvent, AuditHead
from tests.conftest import CHEAP_CRYPTO_TOML, invoke, new_database_url, run_cli
from tests.reviewer_helpers import World, signed_in_client

pytestmark = pytest.mark.database_engine

Row = tuple[datetime, str, str, str | None, str]
ChainValue = Callable[[bytes, int, datetime, str, str, str | None, str], bytes]


@pytest.fixture
def sessions(instance: Instance) -> sessionmaker[Session]:
    return instance.sessions


@pytest.fixture
def engine(instance: Instance) -> Engine:
    return instance.engine


def _record_events(
    sessions: sessionmaker[Session], count: int, action: str = "report.read"
) -> None:
    """Record `count` events, each committed in its own transaction, as the services do."""
    for i in range(1, count + 1):
        with sessions() as session:
            audit.record(
                session, f"officer-{i}", action, report_id=f"report-{i % 2}", detail=f"item {i}"
            )
            session.commit()


def _verify(sessions: sessionmaker[Session]) -> audit.Verification:
    with sessions() as session:
        return audit.verify(session)


def _rows(engine: Engine) -> list[Row]:
    """Every event as stored: (at, actor, action, report_id, detail), in order."""
    with engine.connect() as connection:
        return [
            (r.at, r.actor, r.action, r.report_id, r.detail)
            for r in connection.execute(select(AuditEvent).order_by(AuditEvent.id))
        ]


def _rewrite_log(engine: Engine, rows: list[Row], chain_value: ChainValue, keep: int = 0) -> None:
    """Replace the whole log with `rows`, numbered from 1 and chained, head row included.

    What someone who can write to the database does to remove or change events:
    the first `keep` events are left as they are, and from there every event
    gets a new chain value from `chain_value`, the function they can compute
    (the plain hash with the database only; the keyed MAC if they also hold
    the server's files).
    """
    with engine.connect() as connection:
        kept = list(connection.execute(select(AuditEvent.hash).order_by(AuditEvent.id)).scalars())
    prev_hash, values = audit.GENESIS, []
    for event_id, (at, actor, action, report_id, detail) in enumerate(rows, start=1):
        if event_id <= keep:
            digest = kept[event_id - 1]
        else:
            digest = chain_value(prev_hash, event_id, at, actor, action, report_id, detail)
        values.append(
            {
                "id": event_id,
                "at": at,
                "actor": actor,
                "action": action,
                "report_id": report_id,
                "detail": detail,
                "prev_hash": prev_hash,
                "hash": digest,
            }
        )
        prev_hash = digest
    with engine.begin() as connection:
        connection.execute(delete(AuditEvent))
        if values:
            connection.execute(insert(AuditEvent), values)
        connection.execute(
            update(AuditHead)
            .where(AuditHead.id == 1)
            .values(last_event_id=len(rows), last_hash=prev_hash)
        )


def _keyed(keys: audit.AuditKeys) -> ChainValue:
    """The chain function of someone who has read the audit key from the server's files."""

    def chain_value(
        prev: bytes, event_id: int, at: datetime, actor: str, action: str, rid: str | None, d: str
    ) -> bytes:
        return audit._event_mac(keys.mac_key, prev, event_id, at, actor, action, rid, d)

    return chain_value


def _stolen_keys(data_dir: Path) -> audit.AuditKeys:
    """The audit keys, read from instance.json as someone with the server's files can."""
    document = json.loads((data_dir / SECRETS_FILE).read_text())
    return audit.AuditKeys.from_document(document["audit"])


def _write_anchor(data_dir: Path, event_id: int, chain_hash: bytes) -> None:
    """Overwrite the anchor file directly, as someone with the server's files can."""
    (data_dir / audit.ANCHOR_FILE).write_text(
        json.dumps({"event": event_id, "hash": chain_hash.hex()})
    )


def _head(engine: Engine) -> tuple[int, bytes]:
    with engine.connect() as connection:
        head = connection.execute(select(AuditHead.last_event_id, AuditHead.last_hash)).one()
        return head[0], head[1]


# --- An instance set up and checked through the real command line ---------------------


@pytest.fixture
def operator(tmp_path: Path) -> Iterator[tuple[Path, Config]]:
    """An instance made with `dropbox init`: (its configuration file, its configuration)."""
    path = tmp_path / "config.toml"
    path.write_text(
        f'data_dir = "data"\ndatabase_url = "{new_database_url()}"\n{CHEAP_CRYPTO_TOML}'
    )
    result = invoke("--config", str(path), "init")
    assert result.returncode == 0, result.stderr
    yield path, load(path)


def _record_in(config: Config, count: int, action: str = "report.read") -> None:
    instance = Instance.open(config)
    try:
        _record_events(instance.sessions, count, action)
    finally:
        instance.close()


def _with_instance(config: Config, work: Callable[[Instance], Any]) -> Any:
    instance = Instance.open(config)
    try:
        return work(instance)
    finally:
        instance.close()


def _assert_broken(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Audit log BROKEN" in result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def _assert_refused(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """A checkpoint refused: one line, exit 2, saying why."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dropbox: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


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
    assert result.legacy == 0
    assert result.anchored == 5


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


def test_each_event_is_keyed_so_its_plain_hash_is_not_its_chain_value(
    sessions: sessionmaker[Session],
) -> None:
    _record_events(sessions, 1)
    with sessions() as session:
        event = session.get(AuditEvent, 1)
    assert event is not None
    plain = audit._event_hash(
        event.prev_hash, 1, event.at, event.actor, event.action, event.report_id, event.detail
    )
    assert event.hash != plain


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
    instance: Instance, sessions: sessionmaker[Session]
) -> None:
    with sessions() as session:
        audit.record(session, "alice", "report.delete")
        session.rollback()
    assert _verify(sessions).events == 0
    assert audit.read_anchor(instance.config.data_dir) == audit.Anchor(0, audit.GENESIS)
    with sessions() as session:
        event = audit.record(session, "alice", "report.delete")
        session.commit()
    assert event.id == 1
    assert _verify(sessions).ok


def test_the_anchor_names_the_newest_committed_event_and_never_moves_back(
    instance: Instance, engine: Engine, sessions: sessionmaker[Session]
) -> None:
    data_dir = instance.config.data_dir
    _record_events(sessions, 3)
    assert audit.read_anchor(data_dir) == audit.Anchor(*_head(engine))
    # A commit that ends after a later one must not pull the anchor back.
    audit.advance_anchor(data_dir, 2, bytes(32))
    assert audit.read_anchor(data_dir) == audit.Anchor(*_head(engine))
    assert (data_dir / audit.ANCHOR_FILE).stat().st_mode & 0o777 == 0o600


def test_a_session_without_the_instance_keys_cannot_record(engine: Engine) -> None:
    with make_sessionmaker(engine)() as session, pytest.raises(RuntimeError, match="audit keys"):
        audit.record(session, "alice", "report.read")


# --- Tampering by someone who can write to the database ------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("actor", "someone-else"),
        ("action", "report.list"),
        ("detail", "nothing to see"),
        ("at", datetime(2001, 1, 1)),
        ("report_id", "report-9"),
    ],
)
def test_edited_event_is_named_as_first_broken(
    engine: Engine, sessions: sessionmaker[Session], column: str, value: Any
) -> None:
    _record_events(sessions, 5)
    with engine.begin() as connection:
        connection.execute(update(AuditEvent).where(AuditEvent.id == 3).values({column: value}))
    result = _verify(sessions)
    assert not result.ok
    assert result.first_broken == 3
    assert result.events == 2


def test_edited_hash_is_named_as_first_broken(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    _record_events(sessions, 5)
    with engine.begin() as connection:
        connection.execute(update(AuditEvent).where(AuditEvent.id == 2).values(hash=bytes(32)))
    result = _verify(sessions)
    assert (result.ok, result.first_broken) == (False, 2)


def test_deleted_middle_event_is_named_as_missing(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    _record_events(sessions, 5)
    with engine.begin() as connection:
        connection.execute(delete(AuditEvent).where(AuditEvent.id == 3))
    result = _verify(sessions)
    assert not result.ok
    assert result.first_broken == 3
    assert "missing" in result.problem
    assert result.events == 2


def test_deleted_last_event_is_detected(engine: Engine, sessions: sessionmaker[Session]) -> None:
    _record_events(sessions, 5)
    with engine.begin() as connection:
        connection.execute(delete(AuditEvent).where(AuditEvent.id == 5))
    result = _verify(sessions)
    assert not result.ok
    assert result.first_broken == 5
    assert result.events == 4


def test_deleting_every_event_is_detected(engine: Engine, sessions: sessionmaker[Session]) -> None:
    _record_events(sessions, 3)
    with engine.begin() as connection:
        connection.execute(delete(AuditEvent))
    result = _verify(sessions)
    assert (result.ok, result.first_broken, result.events) == (False, 1, 0)


def test_deleting_every_event_and_resetting_the_head_is_detected_through_the_anchor(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    _record_events(sessions, 3)
    _rewrite_log(engine, [], audit._event_hash)
    result = _verify(sessions)
    assert (result.ok, result.first_broken, result.events) == (False, 1, 0)
    assert "anchor" in result.problem


def test_deleting_the_last_event_and_rewinding_the_head_is_detected_by_audit_verify(
    operator: tuple[Path, Config],
) -> None:
    """The issue's first example: cut the newest event, rewind the head row to the one before."""
    path, config = operator
    _record_in(config, 5)

    def cut_last(instance: Instance) -> None:
        with instance.engine.begin() as connection:
            before = connection.execute(
                select(AuditEvent.hash).where(AuditEvent.id == 4)
            ).scalar_one()
            connection.execute(delete(AuditEvent).where(AuditEvent.id == 5))
            connection.execute(update(AuditHead).values(last_event_id=4, last_hash=before))

    _with_instance(config, cut_last)
    result = run_cli("--config", str(path), "audit", "verify")
    _assert_broken(result, "BROKEN at event 5", "anchor", "names event 5")


def test_a_log_cut_short_stays_detected_after_the_server_records_more_events(
    operator: tuple[Path, Config],
) -> None:
    """Cut events 4 and 5, rewind the head; the server then records three more (4 to 6)."""
    path, config = operator
    _record_in(config, 5)
    _with_instance(
        config,
        lambda instance: _rewrite_log(
            instance.engine, _rows(instance.engine)[:3], audit._event_hash, keep=3
        ),
    )
    _record_in(config, 3)
    _assert_broken(
        invoke("--config", str(path), "audit", "verify"), "BROKEN at event 5", "anchor", "rewritten"
    )


def test_removing_a_download_and_recomputing_the_chain_with_the_plain_hash_is_detected(
    operator: tuple[Path, Config],
) -> None:
    """The issue's second example, by someone with the database and no files of the server."""
    path, config = operator
    _record_in(config, 2)
    _record_in(config, 1, action="file.download")
    _record_in(config, 2)

    def remove_download(instance: Instance) -> None:
        rows = [row for row in _rows(instance.engine) if row[2] != "file.download"]
        assert len(rows) == 4
        _rewrite_log(instance.engine, rows, audit._event_hash, keep=2)

    _with_instance(config, remove_download)
    result = run_cli("--config", str(path), "audit", "verify")
    # Event 1 and 2 are unchanged; the old event 4, now 3, no longer carries a valid MAC.
    _assert_broken(result, "BROKEN at event 3", "altered")


def test_editing_an_events_detail_and_recomputing_the_chain_is_detected(
    operator: tuple[Path, Config],
) -> None:
    path, config = operator
    _record_in(config, 4)

    def edit(instance: Instance) -> None:
        rows = _rows(instance.engine)
        at, actor, action, report_id, _ = rows[1]
        rows[1] = (at, actor, action, report_id, "nothing happened")
        _rewrite_log(instance.engine, rows, audit._event_hash, keep=1)

    _with_instance(config, edit)
    _assert_broken(invoke("--config", str(path), "audit", "verify"), "BROKEN at event 2")


def test_consistently_rewritten_tail_is_named_at_its_first_event(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    """Rewriting events 3 to 5 with recomputed plain hashes: event 3 is named, not only the end."""
    _record_events(sessions, 5)
    rows = _rows(engine)
    rows[2:] = [(at, actor, action, rid, "forged") for at, actor, action, rid, _ in rows[2:]]
    _rewrite_log(engine, rows, audit._event_hash, keep=2)
    result = _verify(sessions)
    assert (result.ok, result.first_broken, result.events) == (False, 3, 2)


def test_event_appended_behind_the_logs_back_is_detected(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    """A well-formed event 6 inserted without `record`, head moved too: it has no valid MAC."""
    _record_events(sessions, 5)
    rows = _rows(engine)
    rows.append((rows[-1][0], "mallory", "report.read", None, ""))
    _rewrite_log(engine, rows, audit._event_hash, keep=5)
    result = _verify(sessions)
    assert (result.ok, result.first_broken) == (False, 6)


def test_a_damaged_anchor_file_is_reported(
    instance: Instance, sessions: sessionmaker[Session]
) -> None:
    _record_events(sessions, 2)
    (instance.config.data_dir / audit.ANCHOR_FILE).write_text("{not json")
    result = _verify(sessions)
    assert not result.ok
    assert "anchor" in result.problem and "damaged" in result.problem


def test_without_an_anchor_file_the_log_verifies_and_says_truncation_is_unseen(
    operator: tuple[Path, Config],
) -> None:
    """As after a restore into a new data directory; the next event writes the anchor again."""
    path, config = operator
    _record_in(config, 2)
    (config.data_dir / audit.ANCHOR_FILE).unlink()
    result = invoke("--config", str(path), "audit", "verify")
    assert result.returncode == 0, result.stderr
    assert "No anchor file" in result.stdout
    _record_in(config, 1)
    anchor = audit.read_anchor(config.data_dir)
    assert anchor is not None and anchor.event_id == 3


def test_the_reviewer_audit_page_shows_a_log_cut_short_as_broken(
    reviewer: Flask, world: World
) -> None:
    admin = signed_in_client(reviewer, world, "admin")
    assert "The audit log is intact." in admin.get("/admin/audit").get_data(as_text=True)
    engine = world.instance.engine
    last, _ = _head(engine)
    _rewrite_log(engine, _rows(engine)[:-1], audit._event_hash, keep=last - 1)
    page = admin.get("/admin/audit").get_data(as_text=True)
    # The case server verifies the chain; the reviewer app shows each problem it names.
    assert "The audit log is BROKEN." in page
    assert f"event {last}: events after {last - 1} are missing" in page
    assert "anchor" in page


# --- Signed checkpoints, against someone who also holds the server's files -----------


def _checkpoint(path: Path, out: Path) -> None:
    result = invoke("--config", str(path), "audit", "checkpoint", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.is_file()


def test_a_valid_chain_verifies_against_its_checkpoints(
    operator: tuple[Path, Config], tmp_path: Path
) -> None:
    path, config = operator
    _record_in(config, 3)
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    _checkpoint(path, first)
    _record_in(config, 2)
    _checkpoint(path, second)
    _record_in(config, 1)
    document = json.loads(first.read_text())
    assert (document["event"], document["day"]) == (3, date.today().isoformat())
    result = run_cli(
        "--config",
        str(path),
        "audit",
        "verify",
        "--checkpoint",
        str(first),
        "--checkpoint",
        str(second),
    )
    assert result.returncode == 0, result.stderr
    # 3 events, checkpoint (event 4), 2 events, checkpoint (event 7), 1 event.
    assert "Audit log intact: 8 events" in result.stdout
    assert f"Checkpoint {first} of {document['day']} (event 3) matches" in result.stdout
    assert "(event 6) matches" in result.stdout
    assert "anchor kept outside the database (event 8) matches" in result.stdout


def _remove_event_with_the_key(config: Config, action: str) -> None:
    """Remove every `action` event, re-key the chain, rewind head and anchor: a full rewrite."""
    keys = _stolen_keys(config.data_dir)

    def rewrite(instance: Instance) -> None:
        rows = [row for row in _rows(instance.engine) if row[2] != action]
        _rewrite_log(instance.engine, rows, _keyed(keys))
        _write_anchor(config.data_dir, *_head(instance.engine))

    _with_instance(config, rewrite)


def test_a_rewrite_with_the_audit_key_after_a_checkpoint_is_detected_by_the_checkpoint(
    operator: tuple[Path, Config], tmp_path: Path
) -> None:
    path, config = operator
    _record_in(config, 2)
    _record_in(config, 1, action="file.download")
    _record_in(config, 2)
    checkpoint = tmp_path / "checkpoint.json"
    _checkpoint(path, checkpoint)
    _record_in(config, 2)
    _remove_event_with_the_key(config, "file.download")

    # Holding the key, the rewrite passes everything kept on the server...
    alone = run_cli("--config", str(path), "audit", "verify")
    assert alone.returncode == 0, alone.stderr
    # ... but not the checkpoint an officer kept elsewhere.
    result = run_cli("--config", str(path), "audit", "verify", "--checkpoint", str(checkpoint))
    _assert_broken(result, "BROKEN at event 5", "checkpoint of", "rewritten")


def test_cutting_the_log_short_of_a_checkpoint_with_the_audit_key_is_detected(
    operator: tuple[Path, Config], tmp_path: Path
) -> None:
    path, config = operator
    _record_in(config, 3)
    checkpoint = tmp_path / "checkpoint.json"
    _checkpoint(path, checkpoint)
    keys = _stolen_keys(config.data_dir)

    def cut(instance: Instance) -> None:
        _rewrite_log(instance.engine, _rows(instance.engine)[:2], _keyed(keys))
        _write_anchor(config.data_dir, *_head(instance.engine))

    _with_instance(config, cut)
    assert invoke("--config", str(path), "audit", "verify").returncode == 0
    result = invoke("--config", str(path), "audit", "verify", "--checkpoint", str(checkpoint))
    _assert_broken(result, "BROKEN at event 3", "names event 3")


def test_no_checkpoint_is_written_of_a_broken_log(
    operator: tuple[Path, Config], tmp_path: Path
) -> None:
    path, config = operator
    _record_in(config, 3)
    _with_instance(
        config,
        lambda instance: _rewrite_log(
            instance.engine, _rows(instance.engine)[:2], audit._event_hash
        ),
    )
    out = tmp_path / "checkpoint.json"
    result = invoke("--config", str(path), "audit", "checkpoint", "--out", str(out))
    _assert_broken(result, "no checkpoint was written")
    assert not out.exists()


def _altered(document: dict[str, Any], **changes: Any) -> str:
    return json.dumps({**document, **changes})


@pytest.mark.parametrize(
    ("alteration", "message"),
    [
        ("event", "signature does not match"),
        ("hash", "signature does not match"),
        ("day", "signature does not match"),
        ("other key", "not signed with this instance's checkpoint key"),
        ("garbage", "is not an audit checkpoint file"),
    ],
)
def test_a_forged_or_altered_checkpoint_is_refused_in_one_line(
    operator: tuple[Path, Config], tmp_path: Path, alteration: str, message: str
) -> None:
    path, config = operator
    _record_in(config, 3)
    checkpoint = tmp_path / "checkpoint.json"
    _checkpoint(path, checkpoint)
    document = json.loads(checkpoint.read_text())
    forged = tmp_path / "forged.json"
    if alteration == "event":
        forged.write_text(_altered(document, event=2))
    elif alteration == "hash":
        forged.write_text(_altered(document, hash=bytes(32).hex()))
    elif alteration == "day":
        forged.write_text(_altered(document, day="2001-01-01"))
    elif alteration == "other key":
        # A checkpoint made and signed in full by someone without this instance's key.
        keys = audit.AuditKeys(
            document["instance"], bytes(32), bytes(SigningKey.generate()), 0, audit.GENESIS
        )
        made = audit.sign_checkpoint(keys, 2, bytes(32), date.today())
        forged.write_bytes(made.to_bytes())
    else:
        forged.write_text("not a checkpoint")
    result = invoke("--config", str(path), "audit", "verify", "--checkpoint", str(forged))
    _assert_refused(result, str(forged), message)


def test_a_missing_checkpoint_file_is_one_line(
    operator: tuple[Path, Config], tmp_path: Path
) -> None:
    path, _ = operator
    result = invoke(
        "--config", str(path), "audit", "verify", "--checkpoint", str(tmp_path / "nope")
    )
    _assert_refused(result, "cannot read the checkpoint")


def test_a_checkpoint_never_overwrites_a_file(
    operator: tuple[Path, Config], tmp_path: Path
) -> None:
    path, _ = operator
    out = tmp_path / "checkpoint.json"
    out.write_text("kept")
    result = invoke("--config", str(path), "audit", "checkpoint", "--out", str(out))
    _assert_refused(result, "already exists")
    assert out.read_text() == "kept"


def test_a_checkpoint_can_be_taken_to_standard_output_by_another_machine(
    operator: tuple[Path, Config], tmp_path: Path
) -> None:
    path, config = operator
    _record_in(config, 2)
    result = run_cli("--config", str(path), "audit", "checkpoint", "--out", "-")
    assert result.returncode == 0, result.stderr
    kept = tmp_path / "pulled.json"
    kept.write_text(result.stdout)
    assert json.loads(result.stdout)["event"] == 2
    verified = invoke("--config", str(path), "audit", "verify", "--checkpoint", str(kept))
    assert verified.returncode == 0, verified.stderr
    assert "(event 2) matches" in verified.stdout


# --- An instance made before audit keys ----------------------------------------------


def _as_made_before_audit_keys(config: Config, count: int) -> None:
    """Turn a new instance into one the previous version made: `count` plain-hashed events."""
    _record_in(config, count)
    secrets_path = config.data_dir / SECRETS_FILE
    document = json.loads(secrets_path.read_text())
    del document["audit"]
    secrets_path.write_text(json.dumps(document))
    (config.data_dir / audit.ANCHOR_FILE).unlink()
    plain = make_engine(config.db_url)
    try:
        _rewrite_log(plain, _rows(plain), audit._event_hash)
    finally:
        plain.dispose()


def test_events_made_before_audit_keys_are_counted_and_fixed_when_the_key_is_made(
    operator: tuple[Path, Config],
) -> None:
    path, config = operator
    _as_made_before_audit_keys(config, 3)
    result = invoke("--config", str(path), "audit", "verify")
    assert result.returncode == 0, result.stderr
    assert "Audit log intact: 3 events" in result.stdout
    assert "3 events were made before this instance had an audit key" in result.stdout
    keys = _stolen_keys(config.data_dir)
    assert keys.legacy_events == 3
    # New events are keyed and chained onto the old ones.
    _record_in(config, 2)
    result = invoke("--config", str(path), "audit", "verify")
    assert result.returncode == 0, result.stderr
    assert "Audit log intact: 5 events" in result.stdout


def test_an_event_made_before_audit_keys_cannot_be_rewritten_afterwards(
    operator: tuple[Path, Config],
) -> None:
    path, config = operator
    _as_made_before_audit_keys(config, 3)
    _with_instance(config, lambda instance: None)  # the upgrade: keys made, events 1-3 fixed

    def rewrite_old(instance: Instance) -> None:
        rows = _rows(instance.engine)
        at, actor, action, report_id, _ = rows[0]
        rows[0] = (at, actor, action, report_id, "nothing happened")
        _rewrite_log(instance.engine, rows, audit._event_hash)

    _with_instance(config, rewrite_old)
    _assert_broken(
        invoke("--config", str(path), "audit", "verify"), "BROKEN at event 3", "audit key was made"
    )


def test_events_made_before_audit_keys_cannot_be_cut_afterwards(
    operator: tuple[Path, Config],
) -> None:
    path, config = operator
    _as_made_before_audit_keys(config, 3)
    _with_instance(config, lambda instance: None)
    (config.data_dir / audit.ANCHOR_FILE).unlink()  # not even with the anchor gone
    _with_instance(
        config,
        lambda instance: _rewrite_log(
            instance.engine, _rows(instance.engine)[:2], audit._event_hash
        ),
    )
    _assert_broken(
        invoke("--config", str(path), "audit", "verify"), "BROKEN at event 3", "names event 3"
    )


def test_processes_opening_an_old_instance_together_make_one_audit_key(
    operator: tuple[Path, Config],
) -> None:
    _, config = operator
    _as_made_before_audit_keys(config, 2)
    keys: list[audit.AuditKeys] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_it() -> None:
        try:
            start.wait(timeout=10)
            keys.append(_with_instance(config, lambda instance: instance.audit_keys))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert len({k.mac_key for k in keys}) == 1
    assert keys[0] == _stolen_keys(config.data_dir)


# --- Concurrency --------------------------------------------------------------


def test_concurrent_writers_produce_one_contiguous_chain(
    instance: Instance, engine: Engine, sessions: sessionmaker[Session]
) -> None:
    threads, per_thread = 4, 25
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def writer(worker: int) -> None:
        try:
            start.wait(timeout=10)
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
    assert result.anchored == threads * per_thread
    assert audit.read_anchor(instance.config.data_dir) == audit.Anchor(*_head(engine))
    with sessions() as session:
        ids = session.execute(select(AuditEvent.id).order_by(AuditEvent.id)).scalars().all()
        actors = Counter(session.execute(select(AuditEvent.actor)).scalars())
    assert ids == list(range(1, threads * per_thread + 1))
    assert actors == {f"worker-{n}": per_thread for n in range(threads)}
