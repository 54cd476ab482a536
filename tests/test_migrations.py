"""Schema migrations: the Alembic head equals the models, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url

from dropbox.database import (
    HEAD_REVISION,
    INITIAL_REVISION,
    alembic_config,
    create_schema,
    current_revision,
    head_revision,
    make_engine,
    upgrade_schema,
)
from dropbox.instance import Instance
from dropbox.models import AuditHead, Base
from tests.conftest import CHEAP_CRYPTO_TOML, invoke

pytestmark = pytest.mark.database_engine


@pytest.fixture
def postgres_url() -> str:
    """The test PostgreSQL server's URL (read when the test runs: conftest may set it late)."""
    url = os.environ.get("DROPBOX_TEST_POSTGRES_URL", "")
    if not url:
        pytest.skip(
            "no PostgreSQL: set DROPBOX_TEST_POSTGRES_URL to a postgresql+psycopg:// URL of a "
            "server where the tests may CREATE DATABASE (or run with DROPBOX_TEST_DATABASE="
            "postgresql)"
        )
    return url


@contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the test server; dropped afterwards."""
    name = f"dropbox_test_{secrets.token_hex(6)}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def schema_differences(engine: Engine) -> list[object]:
    """What autogenerate would change to make the database match the models."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def table_names(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(inspect(connection).get_table_names())


def test_migrated_sqlite_schema_equals_the_models(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    try:
        assert upgrade_schema(engine) == head_revision()
        assert schema_differences(engine) == []
        assert table_names(engine) == {*Base.metadata.tables, "alembic_version"}
    finally:
        engine.dispose()


def test_migrated_postgresql_schema_equals_the_models(postgres_url: str) -> None:
    with fresh_postgres_database(postgres_url) as url:
        engine = make_engine(url)
        try:
            assert upgrade_schema(engine) == head_revision()
            assert schema_differences(engine) == []
            assert table_names(engine) == {*Base.metadata.tables, "alembic_version"}
            # Downgrade and upgrade again: both directions work on PostgreSQL too.
            with engine.begin() as connection:
                command.downgrade(alembic_config(connection), "base")
            assert table_names(engine) == {"alembic_version"}
            assert upgrade_schema(engine) == head_revision()
            assert schema_differences(engine) == []
        finally:
            engine.dispose()


def test_initialise_and_open_bring_the_schema_to_head(instance: Instance) -> None:
    with instance.engine.connect() as connection:
        assert current_revision(connection) == head_revision()
    with instance.sessions() as session:
        assert session.get(AuditHead, 1) is not None
    again = Instance.open(instance.config)
    try:
        with again.engine.connect() as connection:
            assert current_revision(connection) == head_revision()
    finally:
        again.close()


def test_the_revision_servers_check_without_alembic_is_alembics_newest() -> None:
    # A migration added without moving HEAD_REVISION would leave servers on the old schema.
    assert head_revision() == HEAD_REVISION


# What a server worker does at start: open the instance and build its app.
_SERVER_START = """
import sys
from dropbox.config import load
from dropbox.instance import Instance
from source_interface import create_app as source_app
from case_server import create_app as case_server_app

config = load(sys.argv[1])
source_app(config)
case_server_app(config)
with Instance.open(config).engine.connect() as connection:
    version = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
loaded = sorted(name for name in sys.modules if name.split(".")[0] == "alembic")
print(version, len(loaded))
"""


def test_a_server_finds_the_newest_revision_without_loading_alembic(tmp_path: Path) -> None:
    """Alembic is about 10 MiB of a worker's memory: loaded only when there is work for it."""
    config = tmp_path / "config.toml"
    config.write_text(f'data_dir = "data"\n{CHEAP_CRYPTO_TOML}')
    assert invoke("--config", str(config), "init").returncode == 0

    def start_a_server() -> list[str]:
        result = subprocess.run(
            [sys.executable, "-c", _SERVER_START, str(config)],
            cwd=Path(__file__).resolve().parent.parent,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert start_a_server() == [HEAD_REVISION, "0"]
    # A database one revision behind is still brought to the newest, through Alembic.
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'dropbox.sqlite3'}")
    try:
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "-1")
            assert current_revision(connection) != HEAD_REVISION
    finally:
        engine.dispose()
    version, loaded = start_a_server()
    assert version == HEAD_REVISION
    assert int(loaded) > 0


def test_a_database_made_before_migrations_is_adopted(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    try:
        # How instances were made before Alembic: create_all of the models of then,
        # which revision 0001 reproduces exactly; only the version table is missing.
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), INITIAL_REVISION)
            connection.execute(text("DROP TABLE alembic_version"))
        assert "alembic_version" not in table_names(engine)
        create_schema(engine)
        with engine.connect() as connection:
            assert current_revision(connection) == head_revision()
        assert schema_differences(engine) == []
    finally:
        engine.dispose()


def test_downgrade_to_nothing_and_upgrade_again(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    try:
        upgrade_schema(engine)
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "base")
        assert table_names(engine) == {"alembic_version"}
        assert upgrade_schema(engine) == head_revision()
        assert schema_differences(engine) == []
    finally:
        engine.dispose()


def test_workers_starting_together_migrate_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    results: list[str] = []
    errors: list[BaseException] = []

    def start() -> None:
        engine = make_engine(url)
        try:
            create_schema(engine)
            with engine.connect() as connection:
                results.append(str(current_revision(connection)))
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [head_revision()] * 4


def test_db_upgrade_command(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'data_dir = "data"\n{CHEAP_CRYPTO_TOML}')

    missing = invoke("--config", str(config), "db", "upgrade")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"dropbox: {tmp_path / 'data'} does not exist; run 'dropbox init' first"
    ]

    (tmp_path / "data").mkdir()
    first = invoke("--config", str(config), "db", "upgrade")
    assert first.returncode == 0, first.stderr
    assert f"from nothing to revision {head_revision()}" in first.stdout
    again = invoke("--config", str(config), "db", "upgrade")
    assert again.returncode == 0, again.stderr
    assert f"at revision {head_revision()}, the newest; nothing to do" in again.stdout
    assert invoke("db", "--help").returncode == 0
    assert invoke("db", "upgrade", "--help").returncode == 0


def test_db_upgrade_names_an_unreachable_database_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'data_dir = "data"\ndatabase_url = "sqlite:///{tmp_path}/no/such/dir/db.sqlite3"\n'
        f"{CHEAP_CRYPTO_TOML}"
    )
    result = invoke("--config", str(config), "db", "upgrade")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dropbox: database error:"), result.stderr


def test_officers_made_before_the_reviewer_app_keep_their_rows_and_must_re_enrol(
    tmp_path: Path,
) -> None:
    """0001 -> head: the passphrase hash goes, and with it every credential, grant and session."""
    from datetime import datetime

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "0001")
        now = datetime(2026, 1, 2, 3, 4, 5)
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO officers (id, username, display_name, is_admin, active,"
                    " password_hash, public_key, wrapped_secret_key, totp_secret_sealed,"
                    " totp_last_counter, failed_logins, failed_window_start,"
                    " enrolment_code_hash, enrolment_expires_at, created_at) VALUES"
                    " (7, 'amina', 'Amina', 1, 1, '$argon2id$v=19$old', :pk, :wrapped,"
                    " :totp, 1234, 2, :now, 'pending', :now, :now)"
                ),
                {"pk": b"k" * 32, "wrapped": b"w" * 90, "totp": b"t" * 70, "now": now},
            )
            connection.execute(
                text(
                    "INSERT INTO offices (code, name, public_key, created_at)"
                    " VALUES ('ECO', 'Ethics', :pk, :now)"
                ),
                {"pk": b"o" * 32, "now": now},
            )
            connection.execute(
                text(
                    "INSERT INTO office_grants (officer_id, office_code, sealed_office_key,"
                    " granted_by_id, granted_at) VALUES (7, 'ECO', :sealed, NULL, :now)"
                ),
                {"sealed": b"s" * 80, "now": now},
            )
            connection.execute(
                text(
                    "INSERT INTO officer_sessions (id_hash, officer_id, state, last_seen_at,"
                    " expires_at) VALUES (:id, 7, :state, :now, :now)"
                ),
                {"id": b"i" * 32, "state": b"holds a secret key", "now": now},
            )
            connection.execute(
                text(
                    "INSERT INTO audit_events (id, at, actor, action, report_id, detail,"
                    " prev_hash, hash) VALUES (1, :now, 'amina', 'officer.sign_in', NULL, '',"
                    " :h, :h)"
                ),
                {"now": now, "h": bytes(32)},
            )

        assert upgrade_schema(engine) == head_revision()
        assert schema_differences(engine) == []
        with engine.connect() as connection:
            columns = {c["name"] for c in inspect(connection).get_columns("officers")}
            assert "auth_verifier" in columns
            assert not {"password_hash", "failed_logins", "failed_window_start"} & columns
            row = connection.execute(
                text(
                    "SELECT username, display_name, is_admin, active, auth_verifier, public_key,"
                    " wrapped_secret_key, totp_secret_sealed, totp_last_counter,"
                    " enrolment_code_hash, enrolment_expires_at FROM officers WHERE id = 7"
                )
            ).one()
            assert tuple(row) == ("amina", "Amina", 1, 1, None, None, None, None, 0, None, None)
            assert connection.execute(text("SELECT count(*) FROM office_grants")).scalar() == 0
            assert connection.execute(text("SELECT count(*) FROM officer_sessions")).scalar() == 0
            # The office and the officer's audit history stay.
            assert connection.execute(text("SELECT count(*) FROM offices")).scalar() == 1
            assert connection.execute(text("SELECT actor FROM audit_events")).scalar() == "amina"

        # Down again to 0001 and back: both directions work with the row in place.
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0001")
        assert upgrade_schema(engine) == head_revision()
        assert schema_differences(engine) == []
    finally:
        engine.dispose()


def test_an_instance_made_before_the_totp_key_gets_one_when_opened(instance: Instance) -> None:
    import json

    from dropbox.instance import SECRETS_FILE, load_secrets

    path = instance.config.data_dir / SECRETS_FILE
    document = json.loads(path.read_text())
    del document["totp_key"]
    path.write_text(json.dumps(document))
    assert load_secrets(instance.config.data_dir).totp_key is None
    again = Instance.open(instance.config)
    try:
        key = load_secrets(instance.config.data_dir).totp_key
        assert key is not None and len(key) == 32
        assert again.secrets.totp_key == key
    finally:
        again.close()


def test_referrals_made_before_0007_get_their_offices_from_the_audit_log(tmp_path: Path) -> None:
    """0006 -> 0007: each referral row is named after its `report.refer` event, in order."""
    from datetime import datetime

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    now = datetime(2026, 3, 4, 5, 6, 7)
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "0006")
        with engine.begin() as connection:
            for code in ("OIO", "ECO"):
                connection.execute(
                    text(
                        "INSERT INTO offices (code, name, public_key, created_at)"
                        " VALUES (:code, :code, :pk, :now)"
                    ),
                    {"code": code, "pk": code.encode() * 11, "now": now},
                )
            connection.execute(
                text(
                    "INSERT INTO reports (id, lookup_id, source_public_key, designation,"
                    " office_code, category, status, urgent, received_at, acknowledge_due,"
                    " feedback_due, last_activity_at, next_seq) VALUES ('r1', :l, :k,"
                    " 'amber lamp', 'ECO', 'fraud', 'referred', 0, :now, :day, :day, :now, 1)"
                ),
                {"l": b"l" * 32, "k": b"k" * 32, "now": now, "day": now.date()},
            )
            for number, detail in enumerate(
                ["OIO -> ECO", "ECO -> OIO (copy kept of items up to no. 3)"], start=1
            ):
                connection.execute(
                    text(
                        "INSERT INTO status_changes (id, report_id, from_status, to_status, at)"
                        " VALUES (:n, 'r1', 'received', 'referred', :now)"
                    ),
                    {"n": number, "now": now},
                )
                connection.execute(
                    text(
                        "INSERT INTO audit_events (id, at, actor, action, report_id, detail,"
                        " prev_hash, hash) VALUES (:n, :now, 'x', 'report.refer', 'r1', :d, :h,"
                        " :h)"
                    ),
                    {"n": number, "now": now, "d": detail, "h": bytes(32)},
                )
        assert upgrade_schema(engine) == head_revision()
        assert schema_differences(engine) == []
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT from_office, to_office FROM status_changes ORDER BY id")
            ).all()
        assert [tuple(r) for r in rows] == [("OIO", "ECO"), ("ECO", "OIO")]
    finally:
        engine.dispose()


def _days_taken_after_0007(engine: Engine) -> dict[str, tuple[int | None, int | None]]:
    """Reports made at 0006, acknowledged and closed at times of day, then upgraded to head."""
    from datetime import datetime

    received = datetime(2025, 12, 30, 0, 0, 0)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0006")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO offices (code, name, public_key, created_at)"
                " VALUES ('ECO', 'ECO', :pk, :now)"
            ),
            {"pk": b"E" * 33, "now": received},
        )
        for report_id, status, acknowledged, closed in [
            ("new", "received", None, None),
            ("acked", "acknowledged", datetime(2026, 1, 2, 23, 59, 59), None),
            ("closed", "closed", datetime(2025, 12, 30, 9, 0, 0), datetime(2026, 3, 31, 0, 0, 1)),
            ("closed-unacked", "closed", None, datetime(2026, 1, 9, 12, 0, 0)),
            ("reopened", "reopened", datetime(2026, 1, 1, 1, 0, 0), None),
        ]:
            connection.execute(
                text(
                    "INSERT INTO reports (id, lookup_id, source_public_key, designation,"
                    " office_code, category, status, urgent, received_at, acknowledge_due,"
                    " feedback_due, acknowledged_at, last_activity_at, closed_at, next_seq)"
                    " VALUES (:id, :l, :k, :id, 'ECO', 'retaliation', :status, false, :received,"
                    " :day, :day, :acknowledged, :received, :closed, 1)"
                ),
                {
                    "id": report_id,
                    "l": report_id.encode().ljust(32, b"-"),
                    "k": bytes(32),
                    "status": status,
                    "received": received,
                    "day": received.date(),
                    "acknowledged": acknowledged,
                    "closed": closed,
                },
            )
    assert upgrade_schema(engine) == head_revision()
    assert schema_differences(engine) == []
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT id, acknowledge_days, close_days FROM reports")
        ).all()
    return {row[0]: (row[1], row[2]) for row in rows}


# Whole days from the received day (2025-12-30), whatever the time of day.
DAYS_TAKEN = {
    "new": (None, None),
    "acked": (3, None),
    "closed": (0, 91),
    "closed-unacked": (None, 10),
    "reopened": (2, None),
}


def test_0007_counts_the_days_reports_took_from_their_stored_times(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    try:
        assert _days_taken_after_0007(engine) == DAYS_TAKEN
    finally:
        engine.dispose()


def test_0007_counts_the_days_taken_on_postgresql_too(postgres_url: str) -> None:
    with fresh_postgres_database(postgres_url) as url:
        engine = make_engine(url)
        try:
            assert _days_taken_after_0007(engine) == DAYS_TAKEN
        finally:
            engine.dispose()


def _deadlines_met_after_0008(engine: Engine) -> dict[str, tuple[bool | None, bool | None]]:
    """Reports made at 0007, acknowledged and closed at times of day, then upgraded to head."""
    from datetime import date, datetime

    received = datetime(2025, 12, 30, 0, 0, 0)
    acknowledge_due, feedback_due = date(2026, 1, 6), date(2026, 3, 30)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0007")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO offices (code, name, public_key, created_at)"
                " VALUES ('ECO', 'ECO', :pk, :now)"
            ),
            {"pk": b"E" * 33, "now": received},
        )
        for report_id, status, acknowledged, closed in [
            ("new", "received", None, None),
            ("acked-on-the-due-day", "acknowledged", datetime(2026, 1, 6, 23, 59, 59), None),
            ("acked-a-day-late", "acknowledged", datetime(2026, 1, 7, 0, 0, 1), None),
            ("closed-on-the-due-day", "closed", received, datetime(2026, 3, 30, 23, 0, 0)),
            ("closed-late-unacked", "closed", None, datetime(2026, 3, 31, 0, 0, 1)),
            ("closed-no-time", "closed", received, None),
            ("reopened", "reopened", datetime(2026, 1, 8, 1, 0, 0), None),
        ]:
            connection.execute(
                text(
                    "INSERT INTO reports (id, lookup_id, source_public_key, designation,"
                    " office_code, category, status, urgent, received_at, acknowledge_due,"
                    " feedback_due, acknowledged_at, last_activity_at, closed_at, next_seq)"
                    " VALUES (:id, :l, :k, :id, 'ECO', 'retaliation', :status, false, :received,"
                    " :ack_due, :fb_due, :acknowledged, :received, :closed, 1)"
                ),
                {
                    "id": report_id,
                    "l": report_id.encode().ljust(32, b"-")[:32],
                    "k": bytes(32),
                    "status": status,
                    "received": received,
                    "ack_due": acknowledge_due,
                    "fb_due": feedback_due,
                    "acknowledged": acknowledged,
                    "closed": closed,
                },
            )
    assert upgrade_schema(engine) == head_revision()
    assert schema_differences(engine) == []
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT id, acknowledged_in_time, feedback_in_time FROM reports")
        ).all()
    return {row[0]: (_flag(row[1]), _flag(row[2])) for row in rows}


def _flag(stored: object) -> bool | None:
    return None if stored is None else bool(stored)


# By the due dates (2026-01-06 and 2026-03-30), whatever the time of day; only a report
# closed now, with its closing time, has a feedback flag.
DEADLINES_MET = {
    "new": (None, None),
    "acked-on-the-due-day": (True, None),
    "acked-a-day-late": (False, None),
    "closed-on-the-due-day": (True, True),
    "closed-late-unacked": (None, False),
    "closed-no-time": (True, None),
    "reopened": (False, None),
}


def test_0008_marks_the_deadlines_reports_met_from_their_stored_times(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    try:
        assert _deadlines_met_after_0008(engine) == DEADLINES_MET
    finally:
        engine.dispose()


def test_0008_marks_the_deadlines_met_on_postgresql_too(postgres_url: str) -> None:
    with fresh_postgres_database(postgres_url) as url:
        engine = make_engine(url)
        try:
            assert _deadlines_met_after_0008(engine) == DEADLINES_MET
        finally:
            engine.dispose()
