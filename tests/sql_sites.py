"""Which lines of the project send SQL, and whether the PostgreSQL pass reaches them all.

`make test` runs the whole suite on SQLite, then on PostgreSQL only the modules
marked ``database_engine`` (tests/conftest.py says which). That smaller pass is
only enough if PostgreSQL still sees every statement the project sends. So each
phase of `make test` sets ``DROPBOX_TEST_SQL_SITES`` to a directory, and every
test process records there, test module by test module, each line of the
project's own code (not of the tests, not of a library) from which a statement
reached the database: the innermost frame in one of PACKAGES at the moment
SQLAlchemy hands the statement to the driver. At the end,

    python -m tests.sql_sites DIRECTORY

compares the two engines and fails, naming the lines and the SQLite modules that
reach them, if any line that sent SQL on SQLite sent none on PostgreSQL. Marking
one of those modules ``database_engine`` (or another that reaches the line)
mends it.

What this does not see: statements sent by a server the test started as a
subprocess (gunicorn, the `dropbox` command); the same code runs in process in
other tests. Lines that can only run on one engine (a PRAGMA) are listed in
ONE_ENGINE_ONLY with their reason.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from pathlib import Path
from types import FrameType
from typing import Any

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

# "path::function" of code that only one engine ever runs, with why.
ONE_ENGINE_ONLY: dict[str, str] = {}


def _site(frame: FrameType | None) -> str | None:
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith(_PREFIXES):
            path = Path(filename).relative_to(ROOT).as_posix()
            return f"{path}::{frame.f_code.co_qualname}:{frame.f_lineno}"
        frame = frame.f_back
    return None


class Recorder:
    """Records, for the test module now running, each project line that sends SQL."""

    def __init__(self) -> None:
        self.module = "(outside any test)"
        self.sites: defaultdict[str, set[str]] = defaultdict(set)

    def install(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "before_cursor_execute", self._seen)

    def _seen(self, *_: Any) -> None:
        site = _site(sys._getframe(1))
        if site is not None:
            self.sites[self.module].add(site)

    def write(self, directory: Path, engine: str, worker: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{engine}-{worker}-{os.getpid()}.json"
        document = {"engine": engine, "sites": {m: sorted(s) for m, s in self.sites.items()}}
        path.write_text(json.dumps(document, indent=0), encoding="utf-8")


def _read(directory: Path) -> dict[str, dict[str, set[str]]]:
    """engine -> site -> the test modules that reached it."""
    found: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in sorted(directory.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        for module, sites in document["sites"].items():
            for site in sites:
                found[document["engine"]][site].add(module)
    return found


def _function(site: str) -> str:
    return site.rsplit(":", 1)[0]


def missing_on_postgresql(directory: Path) -> dict[str, set[str]]:
    """Sites reached on SQLite but not on PostgreSQL, each with the SQLite modules reaching it."""
    found = _read(directory)
    sqlite, postgresql = found.get("sqlite", {}), found.get("postgresql", {})
    return {
        site: modules
        for site, modules in sqlite.items()
        if site not in postgresql and _function(site) not in ONE_ENGINE_ONLY
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
        print(
            f"every one of the {total} project lines that sent SQL on SQLite "
            f"sent SQL on PostgreSQL too ({len(found['postgresql'])} lines there)"
        )
        return 0
    print(
        f"{len(missing)} of the {total} project lines that sent SQL on SQLite sent none on "
        "PostgreSQL. Mark one of the modules named with each line `database_engine` "
        "(tests/conftest.py), or list the line in ONE_ENGINE_ONLY with its reason:",
        file=sys.stderr,
    )
    for site, modules in sorted(missing.items()):
        print(f"  {site}  <- {', '.join(sorted(modules))}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
