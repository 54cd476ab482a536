"""Which statements the project sends to the database, and whether PostgreSQL got them all.

`make test` runs the whole suite on SQLite, then on PostgreSQL only the modules
marked ``database_engine`` (tests/conftest.py says which). That smaller pass is
only enough if PostgreSQL still sees every statement the project sends. So each
phase of `make test` sets ``DROPBOX_TEST_SQL_SITES`` to a directory, and every
test process records there, test module by test module, each statement that
reached the database, named by the line of the project's own code (not of the
tests, not of a library) that sent it (the innermost frame in one of PACKAGES
when SQLAlchemy hands the statement to the driver) and by the statement as
SQLAlchemy's dialect-free compiler writes it, so that the same query built on
either engine has the same name. At the end,

    python -m tests.sql_sites DIRECTORY

compares the two engines and fails, naming the statements and the SQLite
modules that send them, if any statement sent to SQLite never reached
PostgreSQL. Marking one of those modules ``database_engine`` mends it. A
statement only the fuzzing modules sent (DRAWN_AT_RANDOM) is counted but not
required: what they reach differs from one run to the next.

What this does not see: statements sent by a server the test started as a
subprocess (gunicorn, the `dropbox` command); the same code runs in process in
other tests. Code whose statements are written for one engine (a PRAGMA) is
listed in ONE_ENGINE_ONLY with its reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import defaultdict
from pathlib import Path
from types import FrameType
from typing import Any

from sqlalchemy.sql.compiler import DDLCompiler

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "case_server",
    "crypto",
    "dropbox",
    "journalist_interface",
    "launcher",
    "source_interface",
)
_PREFIXES = tuple(f"{ROOT / name}{os.sep}" for name in PACKAGES)
ENVIRONMENT = "DROPBOX_TEST_SQL_SITES"
DRIVER_LEVEL = "(driver-level)"
SCHEMA_CHANGE = "(schema change)"
# Statements whose text is the engine's own: met by anything the same line sends there.
LINE_ONLY = (DRIVER_LEVEL, SCHEMA_CHANGE)

# "path::function" of code whose statements are written for one engine, with why.
ONE_ENGINE_ONLY: dict[str, str] = {
    "dropbox/database.py::make_engine.<locals>._begin": (
        "SQLite's BEGIN IMMEDIATE and read-only PRAGMA, on SQLite connections only"
    ),
    "dropbox/migrations/versions/0007_statistics.py::_count_days_taken": (
        "builds its day arithmetic for the engine at hand (julianday on SQLite, a date "
        "difference on PostgreSQL), so the statement differs by design; "
        "tests/test_migrations.py runs it on both"
    ),
    "dropbox/migrations/versions/0008_statistics_flags.py::_mark_deadlines_met": (
        "compares a stored time's day with a due date as each engine can (text on SQLite, "
        "a cast on PostgreSQL); tests/test_migrations.py runs it on both"
    ),
    "dropbox/statistics.py::_count_classes_by_range": (
        "SQLite's way to count without sorting (it has no hash aggregation); PostgreSQL "
        "groups, and tests/test_statistics.py checks both ways give the same figures"
    ),
    "dropbox/statistics.py::_count_days_by_range": (
        "SQLite's way to count the days taken without sorting, as above"
    ),
}


# A code file's path relative to ROOT, or "" outside PACKAGES (asked for each frame
# of each statement: worked out once per file).
_relative: dict[str, str] = {}


def _site(frame: FrameType | None) -> str | None:
    while frame is not None:
        filename = frame.f_code.co_filename
        path = _relative.get(filename)
        if path is None:
            inside = filename.startswith(_PREFIXES)
            path = _relative[filename] = (
                Path(filename).relative_to(ROOT).as_posix() if inside else ""
            )
        if path:
            return f"{path}::{frame.f_code.co_qualname}:{frame.f_lineno}"
        frame = frame.f_back
    return None


class Recorder:
    """Records, for the test module now running, each statement a project line sends."""

    def __init__(self) -> None:
        self.module = "(outside any test)"
        self.sites: defaultdict[str, set[str]] = defaultdict(set)
        self.texts: dict[str, str] = {}
        self._shapes: dict[int, tuple[Any, str]] = {}
        # Shapes by SQLAlchemy's cache key of the statement (its structure, without the
        # values): each test's new engine compiles its statements anew, and writing one
        # out again with the generic compiler cost about a twentieth of the suite's time.
        self._keyed: dict[Any, str] = {}

    def install(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "before_cursor_execute", self._seen)

    def uninstall(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.remove(Engine, "before_cursor_execute", self._seen)

    def _seen(
        self, _conn: Any, _cursor: Any, statement: str, _p: Any, context: Any, _m: Any
    ) -> None:
        site = _site(sys._getframe(1))
        if site is not None:
            self.sites[self.module].add(f"{site} {self._shape(statement, context)}")

    def _shape(self, statement: str, context: Any) -> str:
        """The statement as SQLAlchemy's own dialect-free compiler writes it, hashed."""
        compiled = getattr(context, "compiled", None)
        if compiled is None:
            # A string for the driver, written for one engine (a PRAGMA, Alembic's look at
            # the catalogue): only the line can be compared.
            return DRIVER_LEVEL
        known = self._shapes.get(id(compiled))
        if known is not None and known[0] is compiled:
            return known[1]
        if isinstance(compiled, DDLCompiler):
            # A change of schema is written for its engine (SQLite copies a table where
            # PostgreSQL alters it): only the line can be compared.
            return SCHEMA_CHANGE
        cache_key = getattr(compiled, "cache_key", None)
        key = None if cache_key is None else cache_key.key
        shape = None if key is None else self._keyed.get(key)
        if shape is None:
            # The ORM's flushes print one UPDATE per table, whichever columns changed:
            # which ones did can differ between engines (a time read back naive or aware).
            text = " ".join(str(compiled.statement).split())
            shape = hashlib.sha256(text.encode()).hexdigest()[:12]
            self.texts[shape] = text
            if key is not None:
                self._keyed[key] = shape
        self._shapes[id(compiled)] = (compiled, shape)
        return shape

    def write(self, directory: Path, engine: str, worker: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{engine}-{worker}-{os.getpid()}.json"
        document = {
            "engine": engine,
            "sites": {m: sorted(s) for m, s in self.sites.items()},
            "texts": self.texts,
        }
        path.write_text(json.dumps(document, indent=0), encoding="utf-8")


# Test modules whose requests are drawn by Hypothesis and Schemathesis. They run on both
# engines (tests/test_suite_layout.py says why), but do not always reach the same
# statements on each: in one clean-clone run, 8 inbox statements the fuzzing reached on
# SQLite were not reached on PostgreSQL, and 9 others the other way round (run alone,
# each module reached the same ones on both). A statement only they sent on SQLite is
# therefore not required of PostgreSQL; the inbox's every filter combination is sent on
# both engines by
# tests/test_inbox_paging.py::test_every_combination_of_filters_equals_the_plain_query.
DRAWN_AT_RANDOM: dict[str, str] = {
    "tests/test_fuzz_api.py": "requests drawn by Hypothesis and Schemathesis",
    "tests/test_fuzz_forms.py": "form posts drawn by Hypothesis",
}


def _read(directory: Path) -> dict[str, dict[str, set[str]]]:
    """engine -> site -> the test modules that reached it."""
    found: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in sorted(directory.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        for module, sites in document["sites"].items():
            for site in sites:
                found[document["engine"]][site].add(module)
    return found


def _line(site: str) -> str:
    """ "path::function:line" of a recorded "path::function:line shape"."""
    return site.split(" ", 1)[0]


def _function(site: str) -> str:
    """ "path::function" of a recorded "path::function:line shape"."""
    return _line(site).rsplit(":", 1)[0]


def missing_on_postgresql(directory: Path) -> dict[str, set[str]]:
    """Statements sent to SQLite but never to PostgreSQL, each with the modules sending it."""
    found = _read(directory)
    sqlite, postgresql = found.get("sqlite", {}), found.get("postgresql", {})
    # A driver-level string or a change of schema on SQLite (Alembic reading
    # sqlite_master, copying a table) is met by anything the same line sends to
    # PostgreSQL, where the same step takes another form.
    lines = {_line(site) for site in postgresql}
    return {
        site: modules
        for site, modules in sqlite.items()
        if site not in postgresql
        and not (site.endswith(LINE_ONLY) and _line(site) in lines)
        and _function(site) not in ONE_ENGINE_ONLY
        and not modules <= DRAWN_AT_RANDOM.keys()
    }


def drawn_only(directory: Path) -> set[str]:
    """Statements that on SQLite only DRAWN_AT_RANDOM modules sent, and PostgreSQL was not."""
    found = _read(directory)
    sqlite, postgresql = found.get("sqlite", {}), found.get("postgresql", {})
    return {
        site
        for site, modules in sqlite.items()
        if site not in postgresql and modules <= DRAWN_AT_RANDOM.keys()
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.sql_sites DIRECTORY", file=sys.stderr)
        return 2
    directory = Path(argv[0])
    found = _read(directory)
    if not found.get("sqlite") or not found.get("postgresql"):
        print(f"{directory}: no record of both engines (was {ENVIRONMENT} set?)", file=sys.stderr)
        return 2
    missing = missing_on_postgresql(directory)
    total = len(found["sqlite"])
    if not missing:
        excused = len(drawn_only(directory))
        print(
            f"PostgreSQL was sent every one of the {total} statements (by project line) "
            f"sent to SQLite ({len(found['postgresql'])} on PostgreSQL)"
            + (
                f", but {excused} that only fuzzing drew on SQLite (DRAWN_AT_RANDOM)"
                if excused
                else ""
            )
        )
        return 0
    print(
        f"{len(missing)} of the {total} statements (by project line) sent to SQLite never "
        "reached PostgreSQL. Mark one of the modules named with each `database_engine` "
        "(tests/conftest.py), or list its function in ONE_ENGINE_ONLY with the reason:",
        file=sys.stderr,
    )
    for site, modules in sorted(missing.items()):
        print(f"  {site}  <- {', '.join(sorted(modules))}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
