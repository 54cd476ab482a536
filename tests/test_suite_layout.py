"""Which test modules `make test` reruns on PostgreSQL.

The rule, written in tests/conftest.py's docstring: a module of tests/ is
marked ``database_engine`` if and only if it imports (at the top or inside a
function) sqlalchemy, alembic, a module of the database layer, or a name of
tests/conftest.py that depends on the engine, unless SQLITE_ONLY below names
it, with the reason its subject does not depend on the engine. Checked here
both ways, so that a new module working with the database is never left out of the
PostgreSQL pass, and a crypto or word-list module never slows it down.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
MARKER = "database_engine"
ENGINE_MODULES = (
    "sqlalchemy",
    "alembic",
    "dropbox.access",
    "dropbox.admin.bundles",
    "dropbox.admin.fsck",
    "dropbox.admin.operations",
    "dropbox.audit",
    "dropbox.cases",
    "dropbox.database",
    "dropbox.inbox",
    "dropbox.models",
    "dropbox.notify",
    "dropbox.sessions",
    "dropbox.statistics",
)
# Names of tests/conftest.py whose value or behaviour depends on the engine under test.
ENGINE_NAMES = ("DATABASE", "new_database_url", "database_files", "PostgresServer")
# Modules that import the database layer only to set up or look up what they test,
# whose subject is the same whichever engine stores it: not rerun on PostgreSQL.
# Each needs a reason; an entry that no longer imports the database layer is stale.
SQLITE_ONLY = {
    "test_casefile.py": "the reviewer app's cryptography; it imports one enum of the models",
    "test_transport.py": "how requests reach the servers: onion, TLS proxy, refused addresses",
    "test_source_form.py": "the shape of the report form and what it says",
    "test_mail_tls.py": "TLS to the mail server; the database only queues the mails it sends",
}


def imported(source: str) -> Iterator[str]:
    """Every module the source imports, and every `module.name` it imports from one."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def ties_to_the_engine(source: str) -> list[str]:
    """The rule's modules and conftest names the source imports (none: SQLite-only)."""
    names = set(imported(source))
    modules = [
        module
        for module in ENGINE_MODULES
        if any(name == module or name.startswith(f"{module}.") for name in names)
    ]
    return modules + [name for name in ENGINE_NAMES if f"tests.conftest.{name}" in names]


def is_marked(path: Path) -> bool:
    """Whether pytest sees the module-level marker (pytestmark: one mark or a list)."""
    module = importlib.import_module(f"tests.{path.stem}")
    marks = getattr(module, "pytestmark", [])
    if not isinstance(marks, list):
        marks = [marks]
    return any(mark.name == MARKER for mark in marks)


@pytest.mark.parametrize(
    ("source", "tied"),
    [
        ("from sqlalchemy import select", True),
        ("import sqlalchemy.orm", True),
        ("def test_x():\n    from sqlalchemy import select", True),
        ("from alembic import command", True),
        ("from dropbox import audit, config", True),
        ("from dropbox.models import ItemKind", True),
        ("from dropbox.sessions import session_store", True),
        ("from tests.conftest import CHEAP_COST, DATABASE", True),
        ("from tests.conftest import new_database_url", True),
        ("from dropbox import config, reports", False),
        ("from dropbox.instance import Instance", False),
        ("from crypto import envelope", False),
        ("from tests.conftest import CHEAP_COST, FIGURES", False),
        ("import sqlalchemyish", False),
        ("from dropbox.modelsx import thing", False),
        ('"""from sqlalchemy import select"""', False),
    ],
)
def test_the_rule_sees_imports_of_the_database_layer_and_nothing_else(
    source: str, tied: bool
) -> None:
    assert bool(ties_to_the_engine(source)) is tied


def test_a_module_is_rerun_on_postgresql_if_and_only_if_it_works_with_the_database_layer() -> None:
    wrong = []
    for path in sorted(TESTS.glob("test_*.py")):
        ties = ties_to_the_engine(path.read_text(encoding="utf-8"))
        marked = is_marked(path)
        if path.name in SQLITE_ONLY:
            if marked or not ties:
                wrong.append(
                    f"{path.name} is in SQLITE_ONLY, so it must import the database layer "
                    f"and carry no {MARKER} marker"
                )
        elif ties and not marked:
            wrong.append(
                f"{path.name} imports {', '.join(ties)} but is not rerun on PostgreSQL: "
                f"add `pytestmark = pytest.mark.{MARKER}`"
            )
        elif marked and not ties:
            wrong.append(
                f"{path.name} is marked {MARKER} but imports nothing of the database layer: "
                "remove the marker, or extend the rule (tests/conftest.py and this file)"
            )
    assert not wrong, "\n".join(wrong)


def test_every_module_of_the_database_layer_named_by_the_rule_exists() -> None:
    # A module renamed or moved would silently drop its tests from the PostgreSQL pass.
    for name in ENGINE_MODULES:
        assert importlib.util.find_spec(name) is not None, name
    conftest = importlib.import_module("tests.conftest")
    for name in ENGINE_NAMES:
        assert hasattr(conftest, name), name
    for name in SQLITE_ONLY:
        assert (TESTS / name).is_file(), name
