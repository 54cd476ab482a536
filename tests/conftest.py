"""Shared fixtures: a cheap KDF cost (tests only), configurations and initialised instances.

The suite runs on SQLite (the default), or on PostgreSQL with
``DROPBOX_TEST_DATABASE=postgresql``: then a throwaway PostgreSQL server
(Debian's, from /usr/lib/postgresql/*/bin) is started for the session on a
free loopback port, every configuration a test makes gets a new empty
database on it (`new_database_url`), and the server and its files are gone
at the end. Its URL is exported as ``DROPBOX_TEST_POSTGRES_URL``.

`make test` reruns on PostgreSQL only the modules marked
``pytestmark = pytest.mark.database_engine``. The rule: a module in tests/
(tests/browser always stays on SQLite) carries the marker if and only if it
imports, anywhere in the file, sqlalchemy, alembic or one of the database
layer's modules (dropbox.access, audit, cases, database, fsck, inbox, models,
notify, operations, sessions), or one of this file's names that depend on the engine
(DATABASE, new_database_url, database_files, PostgresServer). Crypto, word
lists, translations, formats and config parsing stay SQLite-only.
tests/test_suite_layout.py checks the rule both ways.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask
from nacl.public import PrivateKey

from crypto.kdf import KdfCost
from dropbox.config import Config, CryptoSettings
from dropbox.instance import Instance

if TYPE_CHECKING:
    from tests.reviewer_helpers import World

# The smallest cost libsodium allows. Production keeps crypto.kdf.PRODUCTION_COST;
# only tests, through these fixtures, turn it down.
CHEAP_COST = KdfCost(iterations=1, memory_bytes=8 * 1024)
CHEAP_CRYPTO_TOML = "[crypto]\nkdf_iterations = 1\nkdf_memory_kib = 8\n"

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


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """A configuration with its own data directory and a cheap KDF."""
    return Config(
        data_dir=tmp_path / "data",
        database_url=new_database_url(),
        crypto=CryptoSettings(kdf_iterations=1, kdf_memory_kib=8),
    )


@pytest.fixture
def instance(config: Config) -> Iterator[Instance]:
    """An initialised instance (no offices or officers yet)."""
    opened = Instance.initialise(config)
    yield opened
    opened.close()


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


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
def office_keys(instance: Instance) -> dict[str, PrivateKey]:
    """Both offices created; their secret keys, as a recovery would give them."""
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
    from dataclasses import replace

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
def world(instance: Instance, office_keys: dict[str, PrivateKey]) -> World:
    """Both offices and one officer of each kind the access rules distinguish."""
    from tests.reviewer_helpers import make_world

    return make_world(instance, office_keys)


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
