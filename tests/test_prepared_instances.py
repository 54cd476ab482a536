"""The suite's prepared instances (tests/conftest.py, `Prepared`).

A test that asks for `office_keys` or `world` gets a copy of an instance made
once per session: its data directory copied, and its database copied (a file
on SQLite, CREATE DATABASE ... TEMPLATE on PostgreSQL). These tests check that
the copy is a whole, working instance, that what a test changes stays in its
own copy, and that a test with a configuration of its own builds from scratch;
the same of a world prepared with a module's extra (WORLD_EXTRAS). And that the
engines of a test process share their compiled statements.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select

from dropbox import audit
from dropbox.config import Config, RetentionSettings
from dropbox.database import make_engine
from dropbox.models import AuditEvent, Officer
from tests.conftest import PREPARED, new_database_url, suite_config, world_extra
from tests.reviewer_helpers import World, add_officer, signed_in_client

pytestmark = pytest.mark.database_engine

# Where this module's world extra was built, in this process.
BUILT: list[Path] = []


def one_more_officer(world: World) -> int:
    """The extra: an officer of OIO more; their id."""
    BUILT.append(world.instance.config.data_dir)
    return add_officer(world, "from-the-extra", ["OIO"]).id


WORLD_EXTRAS = {"extra_officer": one_more_officer}


@pytest.fixture
def extra_officer(request: pytest.FixtureRequest, world: World) -> int:
    officer_id: int = world_extra(request, world)
    return officer_id


def test_a_copied_world_verifies_and_its_officers_sign_in(
    request: pytest.FixtureRequest, world: World, reviewer: Flask
) -> None:
    prepared = request.node.stash.get(PREPARED, None)
    assert prepared is not None and prepared.people is not None, "this world was not a copy"
    assert world.instance.config.data_dir != prepared.config.data_dir
    with world.instance.sessions.begin() as db:
        checked = audit.verify(db)
        names = set(db.execute(select(Officer.username)).scalars())
    assert checked.first_broken is None, checked.problem
    # Both offices and six officers: their events, chained and anchored in the copy.
    assert checked.events > 6 and checked.anchored == checked.events
    assert names == {person.username for person in world.people.values()}
    for role in ("oio", "eco", "admin"):
        assert signed_in_client(reviewer, world, role).get("/").status_code == 200


def test_what_a_test_changes_stays_in_its_own_copy(
    request: pytest.FixtureRequest, world: World
) -> None:
    prepared = request.node.stash.get(PREPARED, None)
    assert prepared is not None and prepared.people is not None
    anchor = audit.read_anchor(prepared.config.data_dir)
    add_officer(world, "one-more", ["ECO"])
    world.people["eco"].passphrase = "changed in this test only"
    with world.instance.sessions() as db:
        assert db.execute(select(Officer).where(Officer.username == "one-more")).scalar()

    # The prepared instance itself, from which the next test's copy comes, is as it was.
    assert "one-more" not in prepared.people
    assert prepared.people["eco"].passphrase != "changed in this test only"
    assert audit.read_anchor(prepared.config.data_dir) == anchor
    engine = make_engine(prepared.config.db_url)
    try:
        with engine.connect() as connection:
            names = set(connection.execute(select(Officer.username)).scalars())
            events = connection.execute(select(func.count()).select_from(AuditEvent)).scalar()
    finally:
        engine.dispose()  # a template database must have no connections
    assert names == {person.username for person in prepared.people.values()}
    assert anchor is not None and events == anchor.event_id


@pytest.mark.parametrize("turn", [1, 2])
def test_a_world_extra_is_made_once_and_each_test_gets_a_copy_with_it(
    request: pytest.FixtureRequest, world: World, extra_officer: int, reviewer: Flask, turn: int
) -> None:
    prepared = request.node.stash.get(PREPARED, None)
    assert prepared is not None and prepared.built_by is one_more_officer
    assert prepared.extra == extra_officer
    # Built once in this process, in the prepared instance, not in this test's copy.
    assert BUILT == [prepared.config.data_dir] != [world.instance.config.data_dir]
    assert world.people["from-the-extra"].id == extra_officer
    assert signed_in_client(reviewer, world, "from-the-extra").get("/").status_code == 200
    with world.instance.sessions.begin() as db:
        checked = audit.verify(db)
        added = db.get(Officer, extra_officer)
        assert added is not None and added.username == "from-the-extra"
        # As the extra made it, whichever turn ran first in this process.
        assert not added.display_name.startswith("changed")
        added.display_name = f"changed by turn {turn}"
    assert checked.first_broken is None and checked.anchored == checked.events


def test_a_test_that_asks_only_for_the_offices_gets_no_officers(
    request: pytest.FixtureRequest, office_keys: dict[str, object], config: Config
) -> None:
    prepared = request.node.stash.get(PREPARED, None)
    assert prepared is not None and prepared.people is None
    assert set(office_keys) == {office.code for office in config.offices}
    instance = request.getfixturevalue("instance")
    with instance.sessions() as db:
        assert db.execute(select(func.count()).select_from(Officer)).scalar() == 0


class TestAConfigurationOfItsOwn:
    """A test whose configuration differs from the suite's builds its world from scratch."""

    @pytest.fixture
    def config(self, tmp_path: Path) -> Config:
        return replace(
            suite_config(tmp_path / "data", new_database_url()),
            retention=RetentionSettings(closed_report_days=30),
        )

    def test_its_world_extra_is_made_in_its_own_world(
        self, request: pytest.FixtureRequest, world: World, extra_officer: int
    ) -> None:
        assert request.node.stash.get(PREPARED, None) is None
        assert BUILT[-1] == world.instance.config.data_dir
        with world.instance.sessions() as db:
            added = db.get(Officer, extra_officer)
            assert added is not None and added.username == "from-the-extra"

    def test_it_gets_no_copy(self, request: pytest.FixtureRequest, world: World) -> None:
        assert request.node.stash.get(PREPARED, None) is None
        assert world.instance.config.retention.closed_report_days == 30
        with world.instance.sessions() as db:
            names = set(db.execute(select(Officer.username)).scalars())
        assert names == {person.username for person in world.people.values()}


def test_the_engines_of_a_test_process_share_one_cache_of_compiled_statements(
    tmp_path: Path,
) -> None:
    import dropbox.instance

    first, second = (
        dropbox.instance.make_engine(new_database_url() or f"sqlite:///{tmp_path / name}")
        for name in ("a.db", "b.db")
    )
    try:
        assert first.url.database != second.url.database
        assert first._compiled_cache is second._compiled_cache
        query = select(func.count()).select_from(Officer)
        with first.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE officers (id INTEGER PRIMARY KEY)")
            connection.execute(query)
        cached = len(first._compiled_cache)
        with second.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE officers (id INTEGER PRIMARY KEY)")
            assert connection.execute(query).scalar() == 0
            if second.dialect.name == "sqlite":
                # The project's pragmas are each engine's own still.
                assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
                assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert len(second._compiled_cache) == cached, "the second engine compiled it again"
    finally:
        first.dispose()
        second.dispose()
