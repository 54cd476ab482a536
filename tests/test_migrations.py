"""Schema migrations: the Alembic head equals the models, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import secrets
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


def test_a_database_made_before_migrations_is_adopted(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    try:
        Base.metadata.create_all(engine)  # how instances were made before Alembic
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
