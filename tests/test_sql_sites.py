"""tests/sql_sites.py: the check that PostgreSQL is sent every statement SQLite is."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.dialects import postgresql, sqlite

from dropbox import database
from dropbox.models import Base, Report
from tests import sql_sites
from tests.sql_sites import DRIVER_LEVEL, SCHEMA_CHANGE, Recorder, main, missing_on_postgresql


def write(directory: Path, engine: str, worker: str, sites: dict[str, list[str]]) -> None:
    directory.mkdir(exist_ok=True)
    document = {"engine": engine, "sites": sites, "texts": {}}
    (directory / f"{engine}-{worker}.json").write_text(json.dumps(document), encoding="utf-8")


def test_a_statement_only_sqlite_was_sent_is_named_with_the_modules_sending_it(
    tmp_path: Path, capsys: object
) -> None:
    write(tmp_path, "sqlite", "gw0", {"tests/test_a.py": ["dropbox/x.py::f:1 aaa"]})
    write(
        tmp_path,
        "sqlite",
        "gw1",
        {"tests/test_b.py": ["dropbox/x.py::f:1 aaa", "dropbox/x.py::g:9 bbb"]},
    )
    write(tmp_path, "postgresql", "gw0", {"tests/test_a.py": ["dropbox/x.py::f:1 aaa"]})
    assert missing_on_postgresql(tmp_path) == {"dropbox/x.py::g:9 bbb": {"tests/test_b.py"}}
    assert main([str(tmp_path)]) == 1
    write(tmp_path, "postgresql", "gw1", {"tests/test_c.py": ["dropbox/x.py::g:9 bbb"]})
    assert missing_on_postgresql(tmp_path) == {}
    assert main([str(tmp_path)]) == 0


def test_the_same_line_with_another_statement_is_still_missing(tmp_path: Path) -> None:
    write(tmp_path, "sqlite", "gw0", {"tests/test_a.py": ["dropbox/x.py::f:1 aaa"]})
    write(tmp_path, "postgresql", "gw0", {"tests/test_a.py": ["dropbox/x.py::f:1 ccc"]})
    assert missing_on_postgresql(tmp_path) == {"dropbox/x.py::f:1 aaa": {"tests/test_a.py"}}


def test_a_driver_level_string_is_met_by_anything_from_its_line_and_listed_code_is_excused(
    tmp_path: Path,
) -> None:
    listed = next(iter(sql_sites.ONE_ENGINE_ONLY))
    write(
        tmp_path,
        "sqlite",
        "gw0",
        {"tests/test_a.py": [f"dropbox/x.py::f:1 {DRIVER_LEVEL}", f"{listed}:5 ddd"]},
    )
    write(tmp_path, "postgresql", "gw0", {"tests/test_a.py": ["dropbox/x.py::f:1 eee"]})
    assert missing_on_postgresql(tmp_path) == {}
    write(tmp_path, "sqlite", "gw1", {"tests/test_b.py": [f"dropbox/y.py::g:3 {SCHEMA_CHANGE}"]})
    write(tmp_path, "postgresql", "gw1", {"tests/test_b.py": ["dropbox/y.py::g:3 fff"]})
    assert missing_on_postgresql(tmp_path) == {}
    write(tmp_path, "postgresql", "gw0", {"tests/test_a.py": ["dropbox/x.py::f:2 eee"]})
    assert missing_on_postgresql(tmp_path) == {
        f"dropbox/x.py::f:1 {DRIVER_LEVEL}": {"tests/test_a.py"}
    }


def test_what_only_fuzzing_drew_is_not_required_but_what_others_sent_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fuzzing = next(iter(sql_sites.DRAWN_AT_RANDOM))
    write(
        tmp_path,
        "sqlite",
        "gw0",
        {fuzzing: ["dropbox/x.py::f:1 aaa", "dropbox/x.py::f:1 bbb"]},
    )
    write(tmp_path, "sqlite", "gw1", {"tests/test_a.py": ["dropbox/x.py::f:1 bbb"]})
    write(tmp_path, "postgresql", "gw0", {fuzzing: ["dropbox/x.py::f:1 ccc"]})
    # bbb was sent by a module whose requests are fixed: still required.
    assert missing_on_postgresql(tmp_path) == {
        "dropbox/x.py::f:1 bbb": {fuzzing, "tests/test_a.py"}
    }
    write(tmp_path, "postgresql", "gw1", {"tests/test_a.py": ["dropbox/x.py::f:1 bbb"]})
    assert missing_on_postgresql(tmp_path) == {}
    assert main([str(tmp_path)]) == 0
    assert "but 1 that only fuzzing drew on SQLite" in capsys.readouterr().out


def test_a_record_of_one_engine_alone_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "sqlite", "gw0", {"tests/test_a.py": ["dropbox/x.py::f:1 aaa"]})
    assert main([str(tmp_path)]) == 2


def test_the_recorder_names_the_project_line_and_the_same_query_alike_on_each_engine(
    tmp_path: Path,
) -> None:
    recorder = Recorder()
    recorder.install()
    try:
        engine = create_engine("sqlite://")
        Base.metadata.create_all(engine)
        recorder.module = "tests/test_here.py"
        with engine.connect() as connection:
            database.current_revision(connection)  # Alembic, in the project's function
            connection.execute(select(Report.id).where(Report.office_code == "OIO"))
            connection.execute(text("SELECT 1"))
    finally:
        recorder.uninstall()
    sites = recorder.sites["tests/test_here.py"]
    # The SELECT and the text() were sent from this test, not from the project: not counted.
    assert len(sites) == 1
    (site,) = sites
    assert site.startswith("dropbox/database.py::current_revision:")

    # The name of a statement does not depend on the engine: it is the dialect-free text,
    # not what each dialect hands its driver (? on SQLite, %(name)s on PostgreSQL).
    def named(dialect: Any) -> str:
        query = select(Report.id).where(Report.office_code == "OIO").limit(5)
        return recorder._shape("ignored", SimpleNamespace(compiled=query.compile(dialect=dialect)))

    assert named(sqlite.dialect()) == named(postgresql.dialect())
    other = select(Report.id).where(Report.office_code == "ECO")
    assert named(sqlite.dialect()) != recorder._shape(
        "ignored", SimpleNamespace(compiled=other.compile(dialect=sqlite.dialect()))
    )


def test_a_statement_met_again_on_a_new_engine_keeps_its_name_and_another_keeps_its_own() -> None:
    # Each test's engine compiles its statements anew; the recorder names a statement it
    # has met by SQLAlchemy's cache key (its structure) instead of writing it out again.
    recorder = Recorder()
    contexts: list[Any] = []
    queries = [
        select(Report.id).where(Report.office_code == "OIO"),
        select(Report.id).where(Report.office_code == "ECO").limit(5),
        select(Report.id).where(Report.id == "R-1"),
    ]
    named: list[list[str]] = []

    def keep(*arguments: Any) -> None:
        contexts.append(arguments[4])  # the execution context

    for _ in range(2):
        engine = create_engine("sqlite://")
        Base.metadata.create_all(engine)
        event.listen(engine, "before_cursor_execute", keep)
        with engine.connect() as connection:
            for query in queries:
                connection.execute(query)
        named.append([recorder._shape("", context) for context in contexts[-3:]])
    first, again = named
    assert contexts[0].compiled is not contexts[3].compiled  # compiled anew...
    assert again == first  # ...and named alike
    assert len(recorder._keyed) == 3
    assert first == [
        hashlib.sha256(" ".join(str(query).split()).encode()).hexdigest()[:12] for query in queries
    ]


def test_every_function_excused_as_one_engine_only_still_exists() -> None:
    for name in sql_sites.ONE_ENGINE_ONLY:
        path, function = name.split("::")
        source = (sql_sites.ROOT / path).read_text(encoding="utf-8")
        assert f"def {function.split('.')[0]}(" in source, name
