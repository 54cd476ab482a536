"""The source interface served for real (`dropbox run source`: gunicorn), browsers for it,
and a check of what arrived against what a browser sent. Also the case server (`dropbox run
reviewer`) and the officer's reviewer app (`dropbox reviewer`) as real processes.

Which worker served a request, seen from outside and without adding anything
to the app: every request goes over a fresh TCP connection, and once a
worker has accepted a connection, the server side of it is a socket file
descriptor in that worker process alone. So after connecting, `Served.owner`
finds the server-side socket in /proc/net/tcp (local port = the server's,
remote port = the client's own), takes its inode, and looks for
`socket:[inode]` among the file descriptors (/proc/<pid>/fd) of each worker
(the children of the gunicorn master, from /proc/<pid>/stat). That names
exactly one worker, with no timing and no guessing.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path
from urllib.parse import urlencode

from flask import Flask
from nacl.public import PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.test import encode_multipart

from crypto import codenames
from dropbox import offices, reports
from dropbox.config import Config, load
from dropbox.instance import Instance
from dropbox.items import open_item, open_item_bytes, read_message_document
from dropbox.models import Item, ItemKind
from tests.conftest import CHEAP_COST, CHEAP_CRYPTO_TOML, free_port, new_database_url
from tests.source_helpers import CODENAME, csrf_token

REPO = Path(__file__).resolve().parent.parent
# States in /proc/net/tcp: a connection a worker may still accept is established.
_ESTABLISHED, _SYN_RECEIVED = "01", "03"
# How much of a request body goes to the socket at once.
SEND_PIECE = 256 * 1024


@dataclass
class Reply:
    """What came back: status, headers, body, and the worker process that served it."""

    status: int
    headers: dict[str, str]
    body: str
    worker: int


def _holds(pid: int, target: str) -> bool:
    """True if process `pid` has a file descriptor open on `target` (e.g. "socket:[123]")."""
    fd_dir = f"/proc/{pid}/fd"
    try:
        descriptors = os.listdir(fd_dir)
    except FileNotFoundError:
        return False  # that process has just died
    for fd in descriptors:
        try:
            if os.readlink(f"{fd_dir}/{fd}") == target:
                return True
        except FileNotFoundError:
            continue
    return False


def children(parent: int) -> list[int]:
    """The live processes whose parent is `parent` (gunicorn's workers, for its master)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces; the fields after ")" are fixed:
        # the state (a dead worker stays a zombie until gunicorn reaps it), then the parent.
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == parent and state not in ("Z", "X"):
            found.append(int(entry))
    return sorted(found)


@dataclass
class Served:
    """A running `dropbox run source`: its master process, port, data and workers."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log: Path  # gunicorn's error log (a file: a full pipe would stall the master)
    workers: list[int] = field(default_factory=list)

    def refresh_workers(self) -> list[int]:
        """The workers running now (gunicorn replaces any that die)."""
        self.workers = children(self.process.pid)
        return self.workers

    def wait_for_workers(self, count: int, timeout: float = 30) -> list[int]:
        """Wait until `count` workers run and the interface answers."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"server exited: {self.log.read_text()}"
            if len(self.refresh_workers()) == count:
                probe = HTTPConnection("127.0.0.1", self.port, timeout=2)
                try:
                    probe.request("HEAD", "/")
                    probe.getresponse().read()
                    return self.workers
                except OSError:
                    pass
                finally:
                    probe.close()
            assert time.monotonic() < deadline, "the source interface did not come up"
            time.sleep(0.1)

    def _server_side(self, client_port: int) -> tuple[str, int] | None:
        """The TCP state and inode of the connection's server side (inode 0 until accepted)."""
        local, remote = f":{self.port:04X}", f":{client_port:04X}"
        with open("/proc/net/tcp") as table:
            for line in table.readlines()[1:]:
                fields = line.split()
                if fields[1].endswith(local) and fields[2].endswith(remote):
                    return fields[3], int(fields[9])
        return None

    def owner(self, connection: HTTPConnection, timeout: float = 30) -> int:
        """The worker process that accepted this connection (holds its server-side socket).

        Raises ConnectionResetError if the server side is closed (a worker
        accepted it and died), as using the connection would.
        """
        assert connection.sock is not None
        client_port = connection.sock.getsockname()[1]
        began = time.monotonic()
        while time.monotonic() < began + timeout:
            state, inode = self._server_side(client_port) or ("", 0)
            # Not there yet, or the handshake still completing: a moment, at most.
            settling = state in ("", _SYN_RECEIVED) and time.monotonic() < began + 1
            if state != _ESTABLISHED and not settling:
                raise ConnectionResetError("the server closed the connection (its worker died)")
            if inode:
                target = f"socket:[{inode}]"
                # The known workers first; a worker started since (one died) on the next round.
                for pid in self.workers:
                    if _holds(pid, target):
                        return pid
                self.refresh_workers()
            time.sleep(0.005)  # not accepted yet (every worker busy, or starting)
        raise AssertionError("no worker accepted the connection")

    def connect(
        self,
        worker: int | None,
        *,
        identify: bool = True,
        timeout: float = 60,
        not_by: int | None = None,
    ) -> tuple[HTTPConnection, int]:
        """A fresh connection, accepted by `worker` (or by any, if None; by any but
        `not_by`, if that is given).

        Without `identify` (and no worker asked for), the owner is not looked
        up and is given as 0: a load test should not spend its CPU in /proc.
        """
        # The kernel hands each connection to whichever worker waits in accept() first; on
        # a busy machine one worker can win many times in a row. Keep asking, a little
        # more slowly each time so that the others get back to accept(), for up to a minute.
        deadline = time.monotonic() + 60
        attempts = 0
        while True:
            connection = HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            connection.connect()
            if worker is None and not_by is None and not identify:
                return connection, 0
            owner = self.owner(connection)
            if (worker is None or owner == worker) and owner != not_by:
                return connection, owner
            connection.close()
            attempts += 1
            if time.monotonic() > deadline:
                wanted = f"worker {worker}" if worker is not None else f"a worker but {not_by}"
                raise AssertionError(f"{attempts} connections and none went to {wanted}")
            time.sleep(min(attempts, 50) / 1000)

    def stop(self) -> str:
        """Stop gunicorn (SIGINT: its quick shutdown) and return its log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        # A worker can outlive its master (seen after crash tests on PostgreSQL, blocked on
        # a lock): whatever is left of the group goes too, as systemd would end the unit.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.log.read_text(errors="replace")


def with_umask(command: list[str], umask: int | None) -> list[str]:
    """`command` started with this umask (through sh, which execs it: the pid stays the same)."""
    if umask is None:
        return command
    return ["/bin/sh", "-c", f'umask {umask:03o} && exec "$0" "$@"', *command]


def start_source(
    config: Path, port: int, data_dir: Path, workers: int, umask: int | None = None
) -> Served:
    """Run `dropbox run source` for an initialised instance; return once every worker is up.

    With `umask`, the command starts with that umask, as a shell or service manager may give it.
    """
    log = config.parent / f"gunicorn-{port}.log"
    command = [sys.executable, "-m", "launcher", "--config", str(config), "run", "source"]
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            with_umask(command, umask),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            start_new_session=True,  # its own process group: `stop` ends every worker with it
        )
    served = Served(process, port, data_dir, log)
    try:
        served.wait_for_workers(workers)
    except BaseException:
        served.stop()
        raise
    return served


@contextmanager
def serving(
    config: Path, port: int, data_dir: Path, workers: int, umask: int | None = None
) -> Iterator[Served]:
    """The source interface for the length of the block, stopped even if the block fails."""
    served = start_source(config, port, data_dir, workers, umask)
    try:
        yield served
    finally:
        served.stop()


class Browser:
    """One browser (its own cookie) talking to a served interface, one connection a request."""

    def __init__(self, served: Served, *, identify: bool = True) -> None:
        self.served = served
        self.identify = identify  # look up which worker serves each request
        self.cookie: str | None = None
        self.served_by: list[int] = []

    def request(
        self,
        method: str,
        path: str,
        worker: int | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        on_sent: Callable[[int, int], None] | None = None,
        not_by: int | None = None,
    ) -> Reply:
        """One request over a fresh connection, served by `worker`; keeps the session cookie.

        The body goes out in pieces; `on_sent(bytes sent so far, worker)` is
        called after each (a crash test kills the worker from there).
        """
        connection, owner = self.served.connect(worker, identify=self.identify, not_by=not_by)
        try:
            connection.putrequest(method, path, skip_accept_encoding=True)
            connection.putheader("Connection", "close")
            if self.cookie:
                connection.putheader("Cookie", self.cookie)
            if content_type:
                connection.putheader("Content-Type", content_type)
            if body is not None:
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders()
            if body is not None:
                view = memoryview(body)
                for start in range(0, len(body), SEND_PIECE):
                    connection.send(view[start : start + SEND_PIECE])
                    if on_sent is not None:
                        on_sent(min(start + SEND_PIECE, len(body)), owner)
            response = connection.getresponse()
            text = response.read().decode()
            for name, value in response.getheaders():
                if name.lower() == "set-cookie" and value.startswith("dropbox_source="):
                    cookie = value.split(";", 1)[0]
                    self.cookie = cookie if cookie != "dropbox_source=" else None
            reply = Reply(response.status, dict(response.getheaders()), text, owner)
        finally:
            connection.close()
        self.served_by.append(owner)
        return reply

    def form(
        self,
        path: str,
        fields: dict[str, str],
        worker: int | None = None,
        not_by: int | None = None,
    ) -> Reply:
        """POST a urlencoded form."""
        body = urlencode(fields).encode()
        return self.request(
            "POST", path, worker, body, "application/x-www-form-urlencoded", not_by=not_by
        )

    def new_codename(self) -> tuple[str, str]:
        """Get a codename and confirm it is written down; return (codename, report form page)."""
        shown = self.request("GET", "/codename")
        assert shown.status == 200, shown.body
        match = CODENAME.search(shown.body)
        assert match is not None, "the codename page has no codename field"
        codename = html.unescape(match.group(1) or match.group(2))
        fields = {"csrf_token": csrf_token(shown.body), "codename": codename}
        confirmed = self.form("/codename", {**fields, "written_down": "yes"})
        assert confirmed.status == 302, (confirmed.status, confirmed.body)
        page = self.request("GET", "/report")
        assert page.status == 200, (page.status, page.body)
        return codename, page.body


def report_form(
    page: str, fields: dict[str, str], files: list[tuple[str, bytes]]
) -> tuple[bytes, str]:
    """The report form filled in as a browser sends it: (multipart body, content type)."""
    multi: MultiDict[str, object] = MultiDict({"csrf_token": csrf_token(page), **fields})
    for name, data in files or [("", b"")]:
        multi.add("files", FileStorage(io.BytesIO(data), filename=name))
    boundary, body = encode_multipart(multi)
    return body, f"multipart/form-data; boundary={boundary}"


# --- an instance to serve, and what arrived in it ------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """An initialised instance with both offices, ready to serve; the office keys for checking."""

    config: Path
    port: int
    data_dir: Path
    office_keys: dict[str, PrivateKey]


def prepare_instance(directory: Path, workers: int, extra_toml: str = "") -> Prepared:
    """Write a configuration (the suite's database, a cheap KDF) and initialise its instance."""
    port = free_port()
    config = directory / "config.toml"
    config.write_text(
        f'data_dir = "{directory / "data"}"\ndatabase_url = "{new_database_url()}"\n'
        f"{CHEAP_CRYPTO_TOML}[source]\nport = {port}\nworkers = {workers}\n{extra_toml}"
    )
    instance = Instance.initialise(load(config))
    keys = {}
    try:
        with instance.sessions.begin() as db:
            for office in instance.config.offices:
                _, keys[office.code], _, _ = offices.create(
                    db, instance.config, office.code, CHEAP_COST, "test"
                )
    finally:
        instance.close()
    return Prepared(config, port, directory / "data", keys)


@dataclass(frozen=True)
class Sent:
    """A report as a browser sent it: what must arrive, intact, if it was acknowledged."""

    codename: str
    category: str
    message: str
    file_name: str
    file_sha256: str
    file_size: int


def arrived(
    instance: Instance, db: Session, sent: Sent, office_keys: dict[str, PrivateKey]
) -> str | None:
    """The id of the report the codename leads to, checked whole against `sent`; None if none.

    Whole: the message, the file and the acknowledgement, nothing else, each
    decrypting with the office's key to exactly what was sent.
    """
    secrets = instance.secrets
    derived = codenames.derive(sent.codename, secrets.codename_salt, secrets.codename_cost)
    report = reports.find(db, derived.lookup_id)
    if report is None:
        return None
    assert report.office_code == instance.config.category(sent.category).office
    key = office_keys[report.office_code]
    items = list(
        db.execute(select(Item).where(Item.report_id == report.id).order_by(Item.seq)).scalars()
    )
    kinds = [item.kind for item in items]
    assert kinds == [ItemKind.MESSAGE, ItemKind.FILE, ItemKind.ACKNOWLEDGEMENT], kinds
    text, _ = read_message_document(open_item_bytes(instance, items[0], key))
    assert text == sent.message
    reader, body = open_item(instance, items[1], key)
    digest, size = hashlib.sha256(), 0
    with body:
        for chunk in reader.chunks():
            digest.update(chunk)
            size += len(chunk)
    assert (reader.contents.name, size) == (sent.file_name, sent.file_size)
    assert digest.hexdigest() == sent.file_sha256, f"{sent.file_name} differs from what was sent"
    read_message_document(open_item_bytes(instance, items[2], key))
    return report.id


# --- the case server and the reviewer app (issue 12) -----------------------------------------


def serve_case_server(config_path: str) -> None:
    """The case server under gunicorn, by `launcher.serve`'s own machinery (a child's entry point).

    `dropbox run reviewer` serves the case server once `launcher.serve` builds
    `case_server.create_app` for the reviewer interface; until then this
    serves it the same way (same options, logger, umask, headers), with only
    the app factory swapped.
    """
    import case_server
    from launcher import serve

    config = load(Path(config_path))

    def case_server_factory(config: Config, interface: str) -> Callable[[], Flask]:
        return lambda: case_server.create_app(config)

    serve.app_factory = case_server_factory
    serve.serve(config, "reviewer")


def case_server_switched() -> bool:
    """True once `dropbox run reviewer` serves the case server itself."""
    return "case_server" in (REPO / "launcher" / "serve.py").read_text()


def case_server_command(config: Path) -> list[str]:
    """The command that serves the case server for an instance."""
    if case_server_switched():
        return [sys.executable, "-m", "launcher", "--config", str(config), "run", "reviewer"]
    entry = "import sys; from tests.served import serve_case_server; serve_case_server(sys.argv[1])"
    return [sys.executable, "-c", entry, str(config)]


def start_case_server(config: Path, port: int, data_dir: Path, workers: int) -> Served:
    """The case server (the config's [reviewer] port, workers) under gunicorn, every worker up."""
    log = config.parent / f"gunicorn-case-{port}.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            case_server_command(config),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            start_new_session=True,
        )
    served = Served(process, port, data_dir, log)
    try:
        served.wait_for_workers(workers)
    except BaseException:
        served.stop()
        raise
    return served


@contextmanager
def case_serving(config: Path, port: int, data_dir: Path, workers: int) -> Iterator[Served]:
    """The case server for the length of the block, stopped even if the block fails."""
    served = start_case_server(config, port, data_dir, workers)
    try:
        yield served
    finally:
        served.stop()


def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue.extend(children(current))
    return sorted(found)


@dataclass
class ReviewerProcess:
    """A running `dropbox reviewer`: the officer's app, on its own loopback port."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def processes(self) -> list[int]:
        return descendants(self.process.pid)

    def wait_until_up(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, (
                f"the reviewer app exited: {self.log.read_text(errors='replace')}"
            )
            probe = HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                probe.request("GET", "/login", headers={"Host": f"127.0.0.1:{self.port}"})
                probe.getresponse().read()
                return
            except OSError:
                pass
            finally:
                probe.close()
            assert time.monotonic() < deadline, "the reviewer app did not come up"
            time.sleep(0.1)

    def stop(self) -> str:
        """Stop the app (SIGINT, as Ctrl-C would) and return its log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.log.read_text(errors="replace")


def reviewer_command(arguments: list[str]) -> list[str]:
    """`dropbox reviewer ARGUMENTS`, accepting the cheap KDF cost the test officers have.

    `--minimum-cost` (hidden, for tests) lowers the app's KDF floor and enrolment
    cost; everything else is the real command.
    """
    cost = f"{CHEAP_COST.iterations}:{CHEAP_COST.memory_bytes // 1024}"
    return [sys.executable, "-m", "launcher", "reviewer", "--minimum-cost", cost, *arguments]


def start_reviewer(
    directory: Path,
    server_url: str,
    pins: dict[str, str],
    *,
    extra: tuple[str, ...] = (),
) -> ReviewerProcess:
    """The reviewer app for `server_url`, on a free loopback port, accepting the cheap test cost."""
    port = free_port()
    arguments = ["--server", server_url, "--port", str(port), *extra]
    for code, text in pins.items():
        arguments += ["--pin", f"{code}={text}"]
    log = directory / f"reviewer-{port}.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            reviewer_command(arguments),
            cwd=REPO,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    reviewer = ReviewerProcess(process, port, log)
    try:
        reviewer.wait_until_up()
    except BaseException:
        reviewer.stop()
        raise
    return reviewer


@contextmanager
def reviewing(
    directory: Path, server_url: str, pins: dict[str, str], *, extra: tuple[str, ...] = ()
) -> Iterator[ReviewerProcess]:
    """The reviewer app for the length of the block, stopped even if the block fails."""
    reviewer = start_reviewer(directory, server_url, pins, extra=extra)
    try:
        yield reviewer
    finally:
        reviewer.stop()
