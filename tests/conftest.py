"""Shared fixtures: a cheap KDF cost (tests only), configurations and initialised instances.

The suite runs on SQLite (the default), or on PostgreSQL with
``DROPBOX_TEST_DATABASE=postgresql``: then a throwaway PostgreSQL server
(Debian's, from /usr/lib/postgresql/*/bin) is started for the session on a
free loopback port, every configuration a test makes gets a new empty
database on it (`new_database_url`), and the server and its files are gone
at the end. Its URL is exported as ``DROPBOX_TEST_POSTGRES_URL``.

`make test` reruns on PostgreSQL only the modules marked
``pytestmark = pytest.mark.database_engine``: those whose subject is the
engine's own behaviour, and those needed so that PostgreSQL is sent every
statement the project sends to SQLite (tests/test_suite_layout.py lists both,
with reasons). Each phase records the statements sent (tests/sql_sites.py, on
when DROPBOX_TEST_SQL_SITES names a directory), and the last phase of
`make test` fails if a statement sent to SQLite never reached PostgreSQL.

`make test` (scripts/run_tests.py) runs each pass in two parts, at the same
time: every test not marked ``serial``, spread over several pytest-xdist
workers (each worker has its own temporary directories, its own slice of free
ports and, on PostgreSQL, its own server), and the ``serial`` tests one at a
time: those that measure wall time or memory, or that pin requests to one
gunicorn worker, and that a busy neighbour would disturb (SERIAL_MODULES and
SERIAL_TESTS below). The others run with a small CPU share, so that the serial
tests get the cores whenever they want them.

The `instance` fixture does not run the migrations for every test: each
session (each worker) migrates one template database, and each test's
instance starts from a copy of it (a file copy on SQLite, CREATE DATABASE
... TEMPLATE on PostgreSQL), with its own data directory and new secrets.
A test that asks for `office_keys` or `world` starts from a copy of a whole
instance made once per session, offices and officers and all (`Prepared`).
"""

from __future__ import annotations

import atexit
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from jinja2 import BytecodeCache
from jinja2.bccache import Bucket
from nacl.public import PrivateKey

from crypto.kdf import KdfCost
from dropbox.config import Config, CryptoSettings
from dropbox.instance import Instance
from tests.sql_sites import ENVIRONMENT as SQL_SITES_ENVIRONMENT
from tests.sql_sites import Recorder

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from tests.reviewer_helpers import World

# The smallest cost libsodium allows. Production keeps crypto.kdf.PRODUCTION_COST;
# only tests, through these fixtures, turn it down.
CHEAP_COST = KdfCost(iterations=1, memory_bytes=8 * 1024)
CHEAP_CRYPTO_TOML = "[crypto]\nkdf_iterations = 1\nkdf_memory_kib = 8\n"

# Hypothesis's "too slow" check times how long the first examples take to make: it
# fails a test whose process the bulk lane of `make test` (scripts/run_tests.py)
# starved for a few seconds, which says nothing of the test. Every example still runs.
hypothesis_settings.register_profile("dropbox", suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile("dropbox")


# One cache of compiled statements for all the engines of a test process, one per
# database driver. SQLAlchemy keeps that cache per engine (its key holds the
# engine's dialect object), and each test makes new engines, so each test compiled
# again every statement it sent: `pytest -n 4 -m "not serial and not browser"` on
# SQLite took 17% less CPU with one cache (565 s against 679 s, one run each, back
# to back). The engines of one driver share the dialect of a first engine of that
# driver, initialised once (SQLite: on an in-memory database; PostgreSQL: on the
# database of the first engine asked for, then let go, so that it holds no
# connection to a database a test drops): same driver, same options, same server
# or library. Everything else is each engine's own (its pool, its connections,
# the project's pragmas and transaction events). The servers and commands the
# tests start as subprocesses keep one cache per engine, as in production.
# tests/test_prepared_instances.py checks the sharing on both engines.
def _share_compiled_statements() -> None:
    from sqlalchemy.exc import DBAPIError

    import dropbox.admin.operations
    import dropbox.database
    import dropbox.instance

    make = dropbox.database.make_engine
    prototypes: dict[tuple[str, str], Engine] = {}

    def prototype(engine: Engine, url: str) -> Engine | None:
        key = (engine.dialect.name, engine.dialect.driver)
        if key not in prototypes:
            first = make("sqlite://" if engine.dialect.name == "sqlite" else url)
            try:
                with first.connect():  # the dialect learns the server's or library's version
                    pass
            except DBAPIError:  # no such database yet: share from a later engine
                return None
            finally:
                first.dispose()
            prototypes[key] = first
        return prototypes[key]

    def make_engine(url: str) -> Engine:
        engine = make(url)
        first = prototype(engine, url)
        if first is not None:
            engine.dialect = first.dialect
            engine.pool._dialect = first.dialect
            engine._compiled_cache = first._compiled_cache
        return engine

    make_engine.__doc__ = make.__doc__
    # Those that import it when loaded; the others (launcher.cli) look it up when they run.
    for module in (dropbox.database, dropbox.instance, dropbox.admin.operations):
        assert module.make_engine is make, f"{module.__name__} has another make_engine"
        module.make_engine = make_engine  # type: ignore[assignment]


_share_compiled_statements()

DATABASE = os.environ.get("DROPBOX_TEST_DATABASE", "sqlite")
if DATABASE not in ("sqlite", "postgresql"):
    raise RuntimeError(f"DROPBOX_TEST_DATABASE must be sqlite or postgresql, not {DATABASE!r}")
POSTGRES_URL_VARIABLE = "DROPBOX_TEST_POSTGRES_URL"


class Figures:
    """What the reliability and security tests measured, printed at the end of every run."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.counts: Counter[str] = Counter()

    def add(self, line: str) -> None:
        """One measured result, in words."""
        self.lines.append(line)

    def count(self, what: str, how_many: int = 1) -> None:
        """Add to a running total (requests checked, log lines searched, cases run)."""
        self.counts[what] += how_many


FIGURES = Figures()


class _SharedTemplateCache(BytecodeCache):
    """Compiled templates kept in memory for every Flask app this test process makes.

    Nearly every test makes its own apps, and each app's Jinja environment
    would parse and compile every template it renders anew: a third of the
    suite's time. Jinja still reads each template's source on every load and
    uses the cached code only while the source's checksum matches, so what
    renders is exactly what the template files say. A server process never
    makes more than one app, so the packages have nothing to gain from this.
    """

    def __init__(self) -> None:
        self._compiled: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        compiled = self._compiled.get(bucket.key)
        if compiled is not None:
            bucket.bytecode_from_string(compiled)

    def dump_bytecode(self, bucket: Bucket) -> None:
        self._compiled[bucket.key] = bucket.bytecode_to_string()


Flask.jinja_options = {**Flask.jinja_options, "bytecode_cache": _SharedTemplateCache()}


def _share_url_builders() -> None:
    """Reuse each URL rule's generated builder across the apps of this test process.

    Werkzeug writes and compiles a small Python function for every route of
    every new app (its Rule._compile_builder), about a tenth of the time of
    a test that makes its apps. The function depends only on the rule's text
    and its parsed parts, so apps with the same routes can share it. Rules
    with defaults (which the builder resolves through the app's converters)
    are left to Werkzeug; if a release renames what this relies on, nothing
    is shared and the suite is only slower.
    """
    from werkzeug.routing.rules import Rule

    original = getattr(Rule, "_compile_builder", None)
    if original is None or not hasattr(Rule("/"), "_trace"):
        return
    builders: dict[tuple[object, ...], Any] = {}

    def compile_builder(self: Rule, append_unknown: bool = True) -> Any:
        if self.defaults:
            return original(self, append_unknown)
        key = (self.rule, tuple(self._trace), append_unknown)
        builder = builders.get(key)
        if builder is None:
            builder = builders[key] = original(self, append_unknown)
        return builder

    Rule._compile_builder = compile_builder  # type: ignore[method-assign]


_share_url_builders()


# Tests that measure wall time or memory, or how gunicorn spreads connections over
# its workers: a busy neighbour would change what they measure. They carry the
# marker `serial`; `make test` runs the rest in parallel (pytest-xdist) with a small
# CPU share, and beside them these one at a time (-m serial). By module, and by
# test (module::name).
SERIAL_MODULES = frozenset(
    {
        "test_bench_inbox.py",  # round-trip budgets
        "test_load.py",  # throughput and latency
        "test_login_flood.py",  # memory cap and latency under a flood
        "test_redis.py",  # requests pinned to one gunicorn worker
        "test_server_memory.py",  # scans the memory of server processes
        "test_source_hardening.py",  # bounded waits through floods
    }
)
SERIAL_TESTS = frozenset(
    {
        "test_cli.py::test_ctrl_c_stops_the_whole_demo_within_five_seconds_without_alarm",
        "test_cli.py::test_ctrl_c_on_dropbox_run_reaches_the_gunicorn_master_only",
        "test_cli.py::test_a_connection_that_sends_nothing_holds_up_neither_ctrl_c_nor_a_later_request",
        "test_disk_traces.py::test_a_sources_session_ends_at_its_exact_expiry_though_the_row_says_a_later_day",
        "test_officer_keys.py::test_a_cost_outside_the_bounds_is_refused_before_any_derivation",
        "test_reviewer_signin.py::test_signing_in_takes_as_long_whether_the_username_exists_or_the_passphrase_is_right",
    }
)
TESTS = Path(__file__).parent


SQL_SITES = Recorder() if os.environ.get(SQL_SITES_ENVIRONMENT) else None


def pytest_configure(config: pytest.Config) -> None:
    """Register `serial`, and check that every test the lists above name still exists."""
    if SQL_SITES is not None:
        SQL_SITES.install()
    config.addinivalue_line(
        "markers",
        "serial: measures time or memory; `make test` runs these one at a time, beside the "
        "parallel run, which has a small CPU share "
        "(SERIAL_MODULES and SERIAL_TESTS in tests/conftest.py)",
    )
    missing = sorted(name for name in SERIAL_MODULES if not (TESTS / name).is_file())
    for entry in SERIAL_TESTS:
        module, test = entry.split("::")
        path = TESTS / module
        if not path.is_file() or f"def {test}(" not in path.read_text(encoding="utf-8"):
            missing.append(entry)
    if missing:
        raise pytest.UsageError(
            "tests/conftest.py names serial tests that do not exist (renamed?): "
            + ", ".join(sorted(missing))
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of SERIAL_MODULES and SERIAL_TESTS `serial`."""
    for item in items:
        module = Path(str(item.path))
        if module.parent != TESTS:
            continue
        name = getattr(item, "originalname", item.name)
        if module.name in SERIAL_MODULES or f"{module.name}::{name}" in SERIAL_TESTS:
            item.add_marker(pytest.mark.serial)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Credit the SQL a test sends (its fixtures' too) to its module (tests/sql_sites.py)."""
    if SQL_SITES is not None:
        SQL_SITES.module = item.nodeid.split("::")[0]


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In a pytest-xdist worker, hand this worker's figures to the main process.

    With DROPBOX_TEST_SQL_SITES set, also write which project lines sent SQL.
    """
    if SQL_SITES is not None:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        SQL_SITES.write(Path(os.environ[SQL_SITES_ENVIRONMENT]), DATABASE, worker)
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["dropbox_figures"] = {
            "lines": FIGURES.lines,
            "counts": dict(FIGURES.counts),
        }


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """In the main process of a pytest-xdist run, gather each worker's figures."""
    figures = getattr(node, "workeroutput", {}).get("dropbox_figures")
    if figures:
        FIGURES.lines.extend(figures["lines"])
        FIGURES.counts.update(figures["counts"])


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With --dist loadgroup, keep the browser suite on one worker (its servers start once).

    tests/browser/conftest.py marks those tests xdist_group("browser"), but
    pytest-xdist 3.8 applies a group by rewriting `item._nodeid`, which
    pytest 9 no longer reads: the group would be ignored. This scheduler
    makes tests/browser one unit of work itself (the largest, so sent first)
    and spreads every other test one by one, as --dist load does.
    (The Tor network module was tried as a unit of its own, with its own
    servers and Chromium on another worker: the phase took 5:16 against 4:58
    in the clean-clone runs before and after. The phase is bound by the two
    cores, and a second set of servers and Chromium costs more than it saves.)
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling  # type: ignore[import-untyped]

    class BrowserTogether(LoadGroupScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith("tests/browser/"):
                return "browser"
            scope: str = super()._split_scope(nodeid)
            return scope

    return BrowserTogether(config, log)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the figures, so that `make test` shows what was measured, not only that it passed."""
    if not (FIGURES.lines or FIGURES.counts):
        return
    terminalreporter.section(f"figures measured in this run ({DATABASE})")
    for what, total in sorted(FIGURES.counts.items()):
        terminalreporter.write_line(f"{what}: {total}")
    for line in FIGURES.lines:
        terminalreporter.write_line(line)


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL cluster: its files, its port, and a maintenance connection."""

    base: Path  # holds the data directory, the socket and the server log
    bindir: Path
    port: int
    run_as: list[str]
    admin: Any = None  # an autocommit psycopg connection to the `postgres` database
    created: list[str] = field(default_factory=list)  # this test's databases

    @property
    def data(self) -> Path:
        return self.base / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def stop(self) -> None:
        if self.admin is not None:
            self.admin.close()
            self.admin = None
        if self.data.exists():
            self.pg_ctl("stop", "-m", "immediate", "-w")
        shutil.rmtree(self.base, ignore_errors=True)


_postgres: PostgresServer | None = None


def _postgres_bindir() -> Path:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not found:
        raise RuntimeError(
            "DROPBOX_TEST_DATABASE=postgresql needs Debian's postgresql package "
            "(/usr/lib/postgresql/*/bin/initdb): run scripts/install-test-deps"
        )
    return found[-1].parent


def start_postgres() -> PostgresServer:
    """initdb a new cluster in a temporary directory and start it on a free loopback port."""
    import psycopg

    bindir = _postgres_bindir()
    base = Path(tempfile.mkdtemp(prefix="dropbox-postgres-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root: run it as Debian's `postgres` user.
        owner = pwd.getpwnam("postgres")
        os.chown(base, owner.pw_uid, owner.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    server = PostgresServer(base, bindir, 0, run_as)
    try:
        subprocess.run(
            [
                *run_as,
                str(bindir / "initdb"),
                "-D",
                str(server.data),
                "-U",
                "postgres",
                # Trust, for this throwaway cluster only: it listens on 127.0.0.1
                # and on a socket in its own 0700 directory, and initdb's trust
                # lines cover only local connections.
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        for _ in range(5):  # another process may take the free port first
            server.port = free_port()
            options = " ".join(
                [
                    "-c listen_addresses=127.0.0.1",
                    f"-c port={server.port}",
                    f"-c unix_socket_directories={base}",
                    "-c max_connections=300",
                    # Nothing here has to survive a crash: no fsync, little WAL.
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                    "-c wal_level=minimal",
                    "-c max_wal_senders=0",
                    "-c max_wal_size=64MB",
                    "-c min_wal_size=32MB",
                ]
            )
            started = server.pg_ctl(
                "start", "-w", "-t", "60", "-l", str(base / "server.log"), "-o", options
            )
            if started.returncode == 0:
                break
        else:
            log = (base / "server.log").read_text(errors="replace")
            raise RuntimeError(f"PostgreSQL did not start: {started.stderr}\n{log}")
        server.admin = psycopg.connect(
            host="127.0.0.1", port=server.port, user="postgres", dbname="postgres", autocommit=True
        )
    except BaseException:
        server.stop()
        raise
    return server


def new_database_url() -> str:
    """A new, empty database for one configuration of this test; "" (SQLite) by default.

    On PostgreSQL each call makes a database, dropped when the test ends, as
    each SQLite configuration gets its own file in its own data directory.
    """
    if DATABASE == "sqlite":
        return ""
    if _postgres is None or _postgres.admin is None:
        raise RuntimeError("the PostgreSQL test server is not running (only inside a test)")
    name = f"t_{uuid.uuid4().hex}"
    _postgres.admin.execute(f'CREATE DATABASE "{name}"')
    _postgres.created.append(name)
    return _postgres.url(name)


def database_files() -> list[Path]:
    """Where the database server keeps its files, beyond the data directory (empty for SQLite).

    For PostgreSQL, after a checkpoint, so that what it holds only in memory
    reaches the data files, not only the WAL.
    """
    if _postgres is None or _postgres.admin is None:
        return []
    _postgres.admin.execute("CHECKPOINT")
    return [_postgres.base]


@pytest.fixture(scope="session", autouse=True)
def postgres_server() -> Iterator[PostgresServer | None]:
    """With DROPBOX_TEST_DATABASE=postgresql, the session's throwaway PostgreSQL server."""
    global _postgres
    if DATABASE != "postgresql":
        yield None
        return
    started = time.monotonic()
    _postgres = start_postgres()
    atexit.register(_postgres.stop)  # should the session end without its teardown
    previous = os.environ.get(POSTGRES_URL_VARIABLE)
    os.environ[POSTGRES_URL_VARIABLE] = _postgres.url()
    sys.stderr.write(
        f"\nPostgreSQL test server on port {_postgres.port} "
        f"({time.monotonic() - started:.1f} s to start)\n"
    )
    try:
        yield _postgres
    finally:
        if previous is None:
            os.environ.pop(POSTGRES_URL_VARIABLE, None)
        else:
            os.environ[POSTGRES_URL_VARIABLE] = previous
        _postgres.stop()
        _postgres = None


@pytest.fixture(autouse=True)
def _drop_test_databases(postgres_server: PostgresServer | None) -> Iterator[None]:
    """Drop the databases `new_database_url` made for this test, connections and all."""
    yield
    if postgres_server is None or postgres_server.admin is None:
        return
    while postgres_server.created:
        name = postgres_server.created.pop()
        postgres_server.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def cheap_cost() -> KdfCost:
    """An Argon2id cost low enough for a fast suite."""
    return CHEAP_COST


def suite_config(data_dir: Path, database_url: str) -> Config:
    """The suite's configuration: the defaults, with a cheap KDF."""
    return Config(
        data_dir=data_dir,
        database_url=database_url,
        crypto=CryptoSettings(kdf_iterations=1, kdf_memory_kib=8),
    )


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """A configuration with its own data directory and a cheap KDF."""
    return suite_config(tmp_path / "data", new_database_url())


@dataclass(frozen=True)
class InstanceTemplate:
    """A database brought to the newest schema once per session, for `instance` to copy."""

    sqlite_file: Path | None  # SQLite: the database file
    postgres_database: str | None  # PostgreSQL: a database on the session's server


TEMPLATE_DATABASE = "instance_template"


@pytest.fixture(scope="session")
def _instance_template(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer | None
) -> Iterator[InstanceTemplate]:
    """Run the migrations once per session (per pytest-xdist worker), not once per test.

    Only the database is shared as a template: it holds the schema and the
    audit log's empty head row, nothing secret. Each test's instance still
    gets its own data directory and its own secrets (below).
    """
    from dropbox.database import create_schema, make_engine

    if postgres_server is None:
        data_dir = tmp_path_factory.mktemp("instance-template") / "data"
        data_dir.mkdir(mode=0o700)
        config = Config(data_dir=data_dir)
        engine = make_engine(config.db_url)
        create_schema(engine)
        engine.dispose()  # the last connection's close empties and removes the WAL
        database = data_dir / "dropbox.sqlite3"
        leftover = sorted(p.name for p in data_dir.iterdir() if p != database)
        assert leftover == [], f"the template database left files behind: {leftover}"
        yield InstanceTemplate(sqlite_file=database, postgres_database=None)
        return
    assert postgres_server.admin is not None
    postgres_server.admin.execute(f'CREATE DATABASE "{TEMPLATE_DATABASE}"')
    engine = make_engine(postgres_server.url(TEMPLATE_DATABASE))
    create_schema(engine)
    engine.dispose()  # CREATE DATABASE ... TEMPLATE needs the template without connections
    yield InstanceTemplate(sqlite_file=None, postgres_database=TEMPLATE_DATABASE)


def _copy_template(config: Config, template: InstanceTemplate) -> None:
    """Give `config` a copy of the template database, if it is a new, empty one of this suite."""
    if template.sqlite_file is not None and not config.database_url:
        database = Path(config.db_url.removeprefix("sqlite:///"))
        if database.parent.exists():
            return  # not a fresh data directory: let initialise meet what is there
        # As Instance.initialise makes it (create_secrets), with the file's mode as SQLite made it.
        database.parent.mkdir(parents=True, mode=0o700)
        shutil.copyfile(template.sqlite_file, database)
        shutil.copymode(template.sqlite_file, database)
        return
    if template.postgres_database is not None:
        _refill_database(config, template.postgres_database)


def _database_name(url: str) -> str:
    """The database a PostgreSQL URL names."""
    return url.rsplit("/", 1)[-1]


def _refill_database(config: Config, source: str) -> bool:
    """Make `config`'s database a copy of `source`, if new_database_url made it for this test.

    False, with nothing done, for any other database.
    """
    if _postgres is None or _postgres.admin is None:
        return False
    name = _database_name(config.database_url)
    if name not in _postgres.created or config.database_url != _postgres.url(name):
        return False
    # new_database_url made it empty a moment ago and nothing has connected to it yet.
    _postgres.admin.execute(f'DROP DATABASE "{name}"')
    _postgres.admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
    return True


# Modules whose `instance` is made on an empty database, migrations and all: those
# that test the migrations (that Instance.initialise brings a new database to head).
MIGRATE_FROM_EMPTY = frozenset({"test_migrations.py"})


@pytest.fixture
def instance(
    request: pytest.FixtureRequest, config: Config, _instance_template: InstanceTemplate
) -> Iterator[Instance]:
    """An initialised instance (no offices or officers yet).

    Instance.initialise itself makes it, with new secrets and audit keys, but
    on a copy of the session's migrated template database: its upgrade finds
    the schema at the newest revision and does nothing. In the modules of
    MIGRATE_FROM_EMPTY, and in every `dropbox init` of the suite, it still
    migrates an empty database. For a test that asks for `office_keys` or
    `world`, it is a copy of a prepared instance that has them (`Prepared`).
    """
    prepared = _prepared_for(request, config, _instance_template)
    if prepared is not None:
        opened = Instance.open(config)
        request.node.stash[PREPARED] = prepared
    else:
        if request.path.name not in MIGRATE_FROM_EMPTY:
            _copy_template(config, _instance_template)
        opened = Instance.initialise(config)
    yield opened
    opened.close()


# --- whole instances made once per session: offices, and a world of officers -----
#
# A test that asks for `office_keys` or `world` as this file makes them gets, as its
# `instance`, a copy of one made once per session (per worker): the data directory
# copied whole (secrets, audit keys, the audit anchor and, on SQLite, the database),
# and on PostgreSQL a database made from that instance's as a template. Each test
# still has its own copy, and nothing it changes reaches the next test
# (tests/test_prepared_instances.py). What the copies share is what was random when
# the instance was made: its secrets, the office keys, the officers' keys and TOTP
# secrets. A test with a configuration of its own builds from scratch, as before.
#
# A module can prepare more than the world: WORLD_EXTRAS maps a fixture's name to a
# function that adds something to a world (tests/test_access_matrix.py: a report)
# and returns what the tests need of it. A test that asks for that fixture starts
# from a copy of a world prepared once per session with it done (`world_extra`).
#
# Making both offices and the six officers of `world` took 130 ms per test on
# SQLite (45 ms the offices alone), a copy 10 ms: the setup of the page cases of
# tests/test_access_matrix.py took 12 s in all instead of 41 s. Until the engines
# shared their compiled statements (above), most of that came back in the tests
# themselves, which compiled again what the building of their world had compiled.
# Making the matrix's report once as well took that module from 68 s to 45 s (one
# process). End to end, `make test` changed within the machine's noise.


@dataclass(frozen=True)
class Prepared:
    """An instance set up once per session, for tests to start from a copy of."""

    config: Config  # as it was made (offices not pinned): its data directory, its database
    office_keys: dict[str, Any]
    people: dict[str, Any] | None  # the world's officers; None: offices only
    extra: Any = None  # what a module's WORLD_EXTRAS builder returned (below)
    built_by: Any = None  # that builder


PREPARED = pytest.StashKey[Prepared]()
# Something a module adds to a world in every test of its (a report, say), as a
# function of the world that returns what the tests need to know of it (ids).
WorldExtra = Callable[["World"], Any]
# What each level adds, in the order the fixtures build it.
LEVELS = ("office_keys", "world")


class _Prepared:
    """The session's prepared instances, each made the first time a test needs it."""

    def __init__(self, root: Path, template: InstanceTemplate) -> None:
        self.root = root
        self.template = template
        self.made: dict[tuple[str, WorldExtra | None], Prepared] = {}

    def get(self, level: str, extra: WorldExtra | None = None) -> Prepared:
        key = (level, extra)
        if key not in self.made:
            if extra is None:
                self.made[key] = self._make(level)
            else:
                self.made[key] = self._extend(self.get(level), extra, f"extra{len(self.made)}")
        return self.made[key]

    def _database(self, name: str, template: str | None) -> str:
        """A database for a prepared instance, made from `template`; "" on SQLite."""
        if template is None:
            return ""
        assert _postgres is not None and _postgres.admin is not None
        name = f"prepared_{name}"  # not in `created`: kept for the session
        _postgres.admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return _postgres.url(name)

    def _make(self, level: str) -> Prepared:
        from tests.reviewer_helpers import make_world

        database_url = self._database(level, self.template.postgres_database)
        config = suite_config(self.root / level / "data", database_url)
        _copy_template(config, self.template)
        instance = Instance.initialise(config)
        try:
            keys = create_offices(instance)
            world = make_world(instance, keys) if level == "world" else None
        finally:
            instance.close()  # a template database must have no connections
        return Prepared(config, keys, None if world is None else world.people)

    def _extend(self, base: Prepared, extra: WorldExtra, name: str) -> Prepared:
        """A copy of the prepared world, with what `extra` adds to it."""
        from tests.reviewer_helpers import World

        assert base.people is not None, "extras are added to a world"
        source = _database_name(base.config.database_url) if base.config.database_url else None
        config = replace(
            base.config,
            data_dir=self.root / name / "data",
            database_url=self._database(name, source),
        )
        config.data_dir.parent.mkdir()
        shutil.copytree(base.config.data_dir, config.data_dir)
        instance = Instance.open(config)
        try:
            instance.config = pinned_config(config, base.office_keys)
            world = World(
                instance,
                dict(base.office_keys),
                {role: replace(person) for role, person in base.people.items()},
            )
            added = extra(world)
        finally:
            instance.close()
        return Prepared(config, base.office_keys, world.people, added, extra)


@pytest.fixture(scope="session")
def _prepared(
    tmp_path_factory: pytest.TempPathFactory, _instance_template: InstanceTemplate
) -> _Prepared:
    return _Prepared(tmp_path_factory.mktemp("prepared"), _instance_template)


def _level(request: pytest.FixtureRequest) -> str | None:
    """The furthest level this test asks for, of fixtures as this file makes them."""
    if request.path.name in MIGRATE_FROM_EMPTY:
        return None
    # A module or class that makes one of these fixtures itself builds from the level below.
    own = {*vars(request.module), *(vars(request.cls) if request.cls else {})}
    found = None
    for level in LEVELS:
        if level in own:
            break
        if level in request.fixturenames:
            found = level
    return found


def _extra(request: pytest.FixtureRequest) -> WorldExtra | None:
    """The builder of the module's WORLD_EXTRAS that this test asks for by name, if any."""
    extras: dict[str, WorldExtra] = getattr(request.module, "WORLD_EXTRAS", {})
    asked = [build for name, build in extras.items() if name in request.fixturenames]
    assert len(asked) <= 1, "a test may ask for one of its module's WORLD_EXTRAS at most"
    return asked[0] if asked else None


def _prepared_for(
    request: pytest.FixtureRequest, config: Config, template: InstanceTemplate
) -> Prepared | None:
    """Copy a prepared instance into `config`'s data directory and database, if one serves."""
    level = _level(request)
    if level is None or config.data_dir.exists():
        return None
    # Only for the suite's own configuration: a test that changed it builds its own.
    blank = Path("/")
    if replace(config, data_dir=blank, database_url="") != suite_config(blank, ""):
        return None
    prepared: _Prepared = request.getfixturevalue("_prepared")
    made = prepared.get(level, _extra(request) if level == "world" else None)
    if template.postgres_database is not None and not _refill_database(
        config, _database_name(made.config.database_url)
    ):
        return None
    shutil.copytree(made.config.data_dir, config.data_dir)  # modes kept (copy2, copystat)
    return made


def world_extra(request: pytest.FixtureRequest, world: World) -> Any:
    """For a fixture named in its module's WORLD_EXTRAS: what its builder gave.

    A test of the suite's configuration starts from a copy of a world prepared
    once per session with the builder's work done, and gets what the builder
    returned then; any other test's world gets the builder's work now.
    """
    build = _extra(request)
    assert build is not None, "the fixture is not in its module's WORLD_EXTRAS"
    prepared = request.node.stash.get(PREPARED, None)
    if prepared is not None and prepared.built_by is build:
        return prepared.extra
    return build(world)


# Where free_port looks: below the kernel's ephemeral range, from which every
# outgoing connection takes its source port. A port the kernel hands out (bind to
# port 0) could be taken by any test's client connection between the pick and the
# server's bind, which parallel runs make likely; a port below that range can only
# be taken by another bind. Each pytest-xdist worker picks in its own slice, and
# each of the two pytest runs that scripts/run-tests starts at once in its own
# range (PORTS_VARIABLE, "LOW-HIGH" with HIGH left out).
_LOWEST_PORT = 10000
PORTS_VARIABLE = "DROPBOX_TEST_PORTS"
_recent_ports: list[int] = []


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _port_range() -> tuple[int, int]:
    """Where this pytest run picks ports: PORTS_VARIABLE if set, else 10000 up to the ephemerals."""
    given = os.environ.get(PORTS_VARIABLE, "")
    if not given:
        return _LOWEST_PORT, _ephemeral_low()
    low, _, high = given.partition("-")
    if not (low.isdigit() and high.isdigit() and 1024 <= int(low) < int(high) <= 65536):
        raise RuntimeError(f'{PORTS_VARIABLE} must be "LOW-HIGH", 1024 <= LOW < HIGH: {given!r}')
    return int(low), int(high)


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) if worker.isdigit() else 0
    workers = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1), index + 1)
    lowest, highest = _port_range()
    width = (highest - lowest) // workers
    if width >= 100:
        first = lowest + index * width
        for _ in range(200):
            port = secrets.randbelow(width) + first
            if port in _recent_ports:
                continue  # handed out a moment ago, perhaps not bound yet
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _recent_ports[:] = [*_recent_ports[-63:], port]
            return port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        chosen: int = probe.getsockname()[1]
        return chosen


def invoke(
    *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `dropbox` in this process (fast), through the same entry point and error handling."""
    from click.testing import CliRunner

    from launcher.cli import main

    runner = CliRunner()
    with runner.isolation(input=input, env=env) as (stdout, stderr, _):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(
        list(args), code, stdout.getvalue().decode(), stderr.getvalue().decode()
    )


def run_cli(
    *args: str, input: str | None = None, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `dropbox` command in a child process, as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "launcher", *args],
        input=input,
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


@pytest.fixture
def office_keys(request: pytest.FixtureRequest, instance: Instance) -> dict[str, PrivateKey]:
    """Both offices created; their secret keys, as a recovery would give them."""
    prepared = request.node.stash.get(PREPARED, None)
    if prepared is None:
        return create_offices(instance)
    # The copied instance has them already.
    instance.config = pinned_config(instance.config, prepared.office_keys)
    return dict(prepared.office_keys)


def create_offices(instance: Instance) -> dict[str, PrivateKey]:
    """Create every configured office and pin its key; return their secret keys."""
    from dropbox import offices

    keys = {}
    with instance.sessions.begin() as session:
        for office in instance.config.offices:
            _, secret_key, _, _ = offices.create(
                session, instance.config, office.code, CHEAP_COST, "test"
            )
            keys[office.code] = secret_key
    # The configuration pins the new keys, as an operator does after 'office create'.
    instance.config = pinned_config(instance.config, keys)
    return keys


def pinned_config(config: Config, keys: dict[str, PrivateKey]) -> Config:
    """The configuration with each office's fingerprint pinned to its key in `keys`."""
    from crypto.keys import fingerprint

    return replace(
        config,
        offices=tuple(
            replace(o, fingerprint=fingerprint(keys[o.code].public_key)) if o.code in keys else o
            for o in config.offices
        ),
    )


# --- a world of officers and both apps, for reviewer-side tests ----------------------


@pytest.fixture
def world(
    request: pytest.FixtureRequest, instance: Instance, office_keys: dict[str, PrivateKey]
) -> World:
    """Both offices and one officer of each kind the access rules distinguish."""
    from tests.reviewer_helpers import World, make_world

    prepared = request.node.stash.get(PREPARED, None)
    if prepared is None or prepared.people is None:
        return make_world(instance, office_keys)
    # The copied instance has them already; each test may change its own Person.
    people = {role: replace(person) for role, person in prepared.people.items()}
    return World(instance, office_keys, people)


@pytest.fixture
def case_app(world: World) -> Flask:
    """The case server over the world's instance (what runs on the server)."""
    from case_server import create_app

    app = create_app(world.instance.config, world.instance)
    app.config["TESTING"] = True
    return app


def reviewer_settings(config: Config, **overrides: Any) -> Any:
    """Settings of a reviewer app for tests: pinned to the configured offices, cheap KDF floor."""
    from journalist_interface.settings import ReviewerSettings

    values: dict[str, Any] = {
        "server_url": "http://case-server.test",
        "pins": {o.code: o.fingerprint for o in config.offices if o.fingerprint},
        "minimum_cost": CHEAP_COST,
        "officer_cost": CHEAP_COST,
        **overrides,
    }
    return ReviewerSettings(**values)


@pytest.fixture
def reviewer(world: World, case_app: Flask) -> Flask:
    """The reviewer app (the officer's machine), talking to the real case server in-process."""
    import httpx

    from journalist_interface.app import create_reviewer_app

    app = create_reviewer_app(
        reviewer_settings(world.instance.config), transport=httpx.WSGITransport(app=case_app)
    )
    app.config["TESTING"] = True
    return app


@pytest.fixture
def source_app(instance: Instance, office_keys: dict[str, PrivateKey]) -> Flask:
    """The source interface alone: an instance whose offices have keys, and no officers."""
    from source_interface import create_app

    application = create_app(instance.config, instance)
    application.config["TESTING"] = True
    return application


@pytest.fixture
def source(world: World) -> Flask:
    """The source interface over the world's instance."""
    from source_interface import create_app

    app = create_app(world.instance.config, world.instance)
    app.config["TESTING"] = True
    return app
