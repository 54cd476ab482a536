"""Which test modules `make test` reruns on PostgreSQL.

The whole suite runs on SQLite. On PostgreSQL, `make test` reruns only the
modules marked ``database_engine``, and those are exactly the modules named
below, each with its reason:

- ENGINE_SUBJECT: what they test is the engine's own behaviour (locking,
  migrations, what its files keep, types it refuses, its rollback, backups);
  or they drive servers in subprocesses, whose statements tests/sql_sites.py
  cannot see.
- FOR_STATEMENTS: they send statements that no module of ENGINE_SUBJECT sends.

Whether that is enough is measured, not assumed: every phase of `make test`
records each statement the project sends (by the project line that sends it,
tests/sql_sites.py), and the last phase fails, naming the statements and the
modules that send them, if any statement sent to SQLite never reached
PostgreSQL (but those only the fuzzing modules drew: what they reach differs
from run to run). The other modules (pages, access rules, cryptography, word lists)
send nothing PostgreSQL has not been sent by then. A marked module must import
the database layer (the rule below), so that a module with nothing to do with
the engine is never rerun by mistake.
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
ENGINE_SUBJECT = {
    "test_audit.py": "the audit chain as rows a database owner can rewrite",
    "test_cli.py": "operator commands against the engine, run as subprocesses",
    "test_concurrency.py": "transactions at once: PostgreSQL runs them side by side",
    "test_crash_safety.py": "what the engine kept of uploads cut by SIGKILL (gunicorn)",
    "test_disk_traces.py": "what the engine's own files keep after a source or an officer acts",
    "test_fuzz_api.py": "any input against the engine's types (PostgreSQL refuses NUL)",
    "test_fuzz_forms.py": "any input against the engine's types (PostgreSQL refuses NUL)",
    "test_inbox_paging.py": "ordering and paging, which each engine may do its own way",
    "test_load.py": "throughput with the engine under 32 sources at once (gunicorn)",
    "test_login_flood.py": "the engine's connections under a sign-in flood (gunicorn)",
    "test_migrations.py": "the schema each engine gets from the migrations",
    "test_notify.py": "the queue's lock, so that two runs never send one mail twice",
    "test_offline_bundle.py": "a refused import leaves nothing: the engine's rollback",
    "test_prepared_instances.py": "the suite's instances copied by the engine (a template)",
    "test_operations.py": "backups and restores of the engine's database",
    "test_reseal.py": "re-sealing in committed batches that a SIGKILL (a subprocess) cannot undo",
    "test_source_privacy.py": "the canary sought in the engine's own files",
    "test_statistics.py": "the figures' grouping, counted each engine's own way",
}
FOR_STATEMENTS = {
    "test_case_server_admin.py": "administration: invitations, re-grants, deactivation",
    "test_case_server_reports.py": "the report routes, the officers' session saves among them",
    "test_case_server_signin.py": "a new passphrase ends the officer's other sessions",
    "test_casework_hardening.py": "reveals and the copies an office keeps after a referral",
    "test_fsck.py": "fsck's repairs",
    "test_officer_rekey.py": "an officer's new key and grants replaced in one locked transaction",
    "test_reviewer_app_reports.py": "the inbox's filters and sorts as the reviewer app asks",
    "test_source_key_binding.py": "the look-up of the message that binds the source's key",
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


def test_exactly_the_listed_modules_are_rerun_on_postgresql_and_each_uses_the_database() -> None:
    listed = ENGINE_SUBJECT.keys() | FOR_STATEMENTS.keys()
    assert not ENGINE_SUBJECT.keys() & FOR_STATEMENTS.keys()
    wrong = []
    for path in sorted(TESTS.glob("test_*.py")):
        marked = is_marked(path)
        if marked and path.name not in listed:
            wrong.append(
                f"{path.name} is marked {MARKER} but not listed: add it to ENGINE_SUBJECT or "
                "FOR_STATEMENTS with its reason, or remove the marker"
            )
        elif path.name in listed and not marked:
            wrong.append(
                f"{path.name} is listed but not marked: add `pytestmark = pytest.mark.{MARKER}`"
            )
        elif marked and not ties_to_the_engine(path.read_text(encoding="utf-8")):
            wrong.append(
                f"{path.name} is marked {MARKER} but imports nothing of the database layer: "
                "remove the marker, or extend the rule (this file)"
            )
    assert not wrong, "\n".join(wrong)


def test_every_module_of_the_database_layer_named_by_the_rule_exists() -> None:
    # A module renamed or moved would silently drop its tests from the PostgreSQL pass.
    for name in ENGINE_MODULES:
        assert importlib.util.find_spec(name) is not None, name
    conftest = importlib.import_module("tests.conftest")
    for name in ENGINE_NAMES:
        assert hasattr(conftest, name), name
    for name in ENGINE_SUBJECT.keys() | FOR_STATEMENTS.keys():
        assert (TESTS / name).is_file(), name
