"""With `limits.storage_uri = "redis://..."`, limits and sessions are shared by every worker.

A real `redis-server` runs on a free localhost port in a temporary directory
(no persistence), and the source interface runs for real: `python -m launcher
run source`, i.e. gunicorn with 4 worker processes, over an instance set up
through the CLI.

Which worker served a request is seen from outside, without adding anything
to the app (see tests/served.py: the worker holding the connection's
server-side socket). Connections are opened until one lands on the worker
the test wants next (they spread over the workers by themselves, since all
of them accept from the one listening socket); that is how the test makes
consecutive requests go to different workers on purpose and proves that they
did, rather than hoping the kernel spread them.

What is shown:

1. A limit holds across workers: with 3 codename attempts a minute, five
   wrong sign-ins from one session, each to a different worker than the one
   before (all 4 in turn), get 400, 400, 400, 429, 429. The same five with
   `memory://` all get 400: each worker counts only its own.
2. A session made on one worker works on every other: a codename is shown
   by one worker and confirmed on another, the report form then opens on
   each of the 4 workers (twice round), and the report is sent to yet
   another.
3. The session is in Redis (`redis-cli --scan` finds its `dropbox:source:`
   key) and not in the database (`source_sessions` is empty).
4. Nothing readable is in Redis: no value of any key holds the report's text
   or the codename.

Unit-level tests (the case server and the reviewer app in this process, the
same Redis) show that the case server keeps its bearer tokens there (not in
the database), that deactivating an officer ends their tokens at once (the
reviewer app then signs them out), and that the per-username sign-in lockout
is counted in Redis, so that another worker over the same Redis refuses the
username too. Nothing readable (no passphrase, auth key or secret key, no
username, no officer id in the clear) is in Redis.
"""

from __future__ import annotations

import html
import io
import itertools
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from nacl.public import PrivateKey
from sqlalchemy import func, select
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.test import encode_multipart

from crypto import codenames
from dropbox import offices
from dropbox.config import Config, CryptoSettings, LimitSettings
from dropbox.instance import Instance
from dropbox.models import OfficerSession
from tests.conftest import CHEAP_COST, CHEAP_CRYPTO_TOML, free_port, invoke, reviewer_settings
from tests.reviewer_helpers import (
    World,
    fresh_code,
    login_form,
    make_world,
    post_form,
    signed_in_client,
    wrong_code,
)
from tests.served import Browser, Served, start_source
from tests.source_helpers import CODENAME, csrf_token

WORKERS = 4
ATTEMPTS_PER_MINUTE = 3
CANARY = "Canary 7f3a: the depot manager sells the fuel vouchers every Friday."

pytestmark = [
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs Debian's redis-server"),
]


# --- a real Redis ---------------------------------------------------------------------


@dataclass
class RedisServer:
    """A redis-server of our own, and a client for looking inside it."""

    port: int
    client: redis.Redis

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def everything(self) -> dict[bytes, list[bytes]]:
        """Every key, and every byte string stored under it, whatever its type."""
        dump: dict[bytes, list[bytes]] = {}
        for key in self.client.scan_iter(match="*"):
            kind = self.client.type(key)
            values: list[bytes]
            if kind == b"string":
                values = [self.client.get(key) or b""]
            elif kind == b"hash":
                values = [b for pair in self.client.hgetall(key).items() for b in pair]
            elif kind == b"set":
                values = list(self.client.smembers(key))
            elif kind == b"zset":
                values = [m for m, _ in self.client.zrange(key, 0, -1, withscores=True)]
            elif kind == b"list":
                values = list(self.client.lrange(key, 0, -1))
            else:
                raise AssertionError(f"unexpected Redis type {kind!r} for {key!r}")
            dump[key] = values
        return dump

    def scan(self, pattern: str) -> list[str]:
        """Keys matching `pattern`, as the operator's `redis-cli --scan` lists them."""
        listed = subprocess.run(
            ["redis-cli", "-p", str(self.port), "--scan", "--pattern", pattern],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return listed.stdout.split()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """redis-server on a free localhost port, in a temporary directory, saving nothing."""
    directory = tmp_path_factory.mktemp("redis")
    port = free_port()
    process = subprocess.Popen(
        [
            *("redis-server", "--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(directory)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, "redis-server exited"
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield RedisServer(port, client)
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def fresh_redis(redis_server: RedisServer) -> RedisServer:
    """The Redis, emptied for this test."""
    redis_server.client.flushall()
    return redis_server


# --- the source interface under gunicorn ----------------------------------------------


@pytest.fixture
def serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Served]]:
    """Set up an instance through the CLI and run its source interface with 4 workers."""
    running: list[Served] = []

    def start(storage_uri: str) -> Served:
        work = tmp_path / f"instance-{len(running)}"
        work.mkdir()
        monkeypatch.chdir(work)  # `office create` writes its recovery file here
        port = free_port()
        config = work / "config.toml"
        config.write_text(
            f'data_dir = "{work / "data"}"\n'
            f"[source]\nport = {port}\nworkers = {WORKERS}\n"
            f'[limits]\nstorage_uri = "{storage_uri}"\n'
            f"codename_attempts_per_minute = {ATTEMPTS_PER_MINUTE}\n{CHEAP_CRYPTO_TOML}"
        )
        for command in (["init"], ["office", "create", "OIO"], ["office", "create", "ECO"]):
            done = invoke("--config", str(config), *command)
            assert done.returncode == 0, done.stderr
        served = start_source(config, port, work / "data", WORKERS)
        running.append(served)
        return served

    yield start
    for served in running:
        log = served.stop()
        assert "Traceback" not in log, log


def _wrong_sign_ins(served: Served) -> list[tuple[int, int]]:
    """Five wrong codenames from one session, each to another worker than the one before.

    Well-formed ones: only an attempt that costs a derivation counts against the limit.
    No worker sees more than three of the five, so a limit of three that each worker
    counted on its own would answer all five with 400. Which other worker takes each
    one is left to the kernel: a test that named the worker could wait on one that
    the kernel rarely hands a connection to.
    """
    browser = Browser(served)
    page = browser.request("GET", "/login")
    assert page.status == 200 and browser.cookie
    token = csrf_token(page.body)
    answers = []
    previous = page.worker
    for _ in range(5):
        wrong = codenames.generate("en")
        reply = browser.form("/login", {"csrf_token": token, "codename": wrong}, not_by=previous)
        answers.append((reply.status, reply.worker))
        previous = reply.worker
    return answers


def test_limits_and_sessions_are_shared_by_every_worker_through_redis(
    fresh_redis: RedisServer, serve: Callable[[str], Served]
) -> None:
    served = serve(fresh_redis.url)
    workers = served.workers

    # 1. The limit holds across workers.
    answers = _wrong_sign_ins(served)
    assert [status for status, _ in answers] == [400, 400, 400, 429, 429], answers
    assert all(a[1] != b[1] for a, b in itertools.pairwise(answers)), answers

    # 2. A session made on one worker works on the others.
    # Each request goes to another worker than the one before.
    browser = Browser(served)
    shown = browser.request("GET", "/codename")
    assert shown.status == 200
    match = CODENAME.search(shown.body)
    assert match is not None
    codename = html.unescape(match.group(1) or match.group(2))
    confirmed = browser.form(
        "/codename",
        {"csrf_token": csrf_token(shown.body), "codename": codename, "written_down": "yes"},
        not_by=shown.worker,
    )
    assert confirmed.status == 302, confirmed.body
    previous = confirmed.worker
    for _ in range(2 * WORKERS):
        form = browser.request("GET", "/report", not_by=previous)
        assert form.status == 200, (form.worker, form.body)
        previous = form.worker
    fields: MultiDict[str, object] = MultiDict(
        {"csrf_token": csrf_token(form.body), "category": "fraud", "message": CANARY}
    )
    fields.add("files", FileStorage(io.BytesIO(b""), filename=""))
    boundary, body = encode_multipart(fields)
    sent = browser.request(
        "POST",
        "/report",
        body=body,
        content_type=f"multipart/form-data; boundary={boundary}",
        not_by=previous,
    )
    assert sent.status == 302, sent.body
    assert sent.headers["Location"].endswith("/receipt")
    receipt = browser.request("GET", "/receipt", not_by=sent.worker)
    assert receipt.status == 200
    assert all(a != b for a, b in itertools.pairwise(browser.served_by)), browser.served_by
    assert set(browser.served_by) <= set(served.refresh_workers()) | set(workers)

    # 3. The session is in Redis, and not in the database.
    keys = fresh_redis.scan("dropbox:*")
    assert len([k for k in keys if k.startswith("dropbox:source:")]) >= 1, keys
    with sqlite3.connect(served.data_dir / "dropbox.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM source_sessions").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM reports").fetchone() == (1,)
    # The limiter's counters are in Redis too, under the source interface's prefix.
    assert any(b"dropbox-source" in k for k in fresh_redis.client.keys("*")), (
        fresh_redis.client.keys("*")
    )

    # 4. Nothing readable in Redis: no report text, no codename.
    dump = fresh_redis.everything()
    assert dump
    for key, values in dump.items():
        for value in (key, *values):
            assert CANARY.encode() not in value, key
            assert b"fuel vouchers" not in value, key
            assert codename.encode() not in value, key


def test_with_memory_storage_each_worker_counts_only_its_own(
    serve: Callable[[str], Served],
) -> None:
    """The contrast: without Redis, the same attempts over 4 workers are not limited."""
    served = serve("memory://")
    answers = _wrong_sign_ins(served)
    assert [status for status, _ in answers] == [400] * 5, answers
    assert all(a[1] != b[1] for a, b in itertools.pairwise(answers)), answers


# --- the case server's tokens and sign-in lockout in Redis ----------------------------------


@dataclass
class CaseDesk:
    """An instance whose limits and sessions are in Redis; two case server apps (as two
    workers would be) over it; a reviewer app talking to the first."""

    instance: Instance
    world: World
    case: Any
    other_worker: Any
    reviewer: Any


@pytest.fixture
def desk(fresh_redis: RedisServer, tmp_path: Path) -> Iterator[CaseDesk]:
    import httpx

    from case_server import create_app as create_case_server
    from journalist_interface.app import create_reviewer_app

    config = Config(
        data_dir=tmp_path / "data",
        crypto=CryptoSettings(kdf_iterations=1, kdf_memory_kib=8),
        limits=LimitSettings(storage_uri=fresh_redis.url),
    )
    instance = Instance.initialise(config)
    try:
        office_keys: dict[str, PrivateKey] = {}
        with instance.sessions.begin() as db:
            for office in config.offices:
                _, secret_key, _, _ = offices.create(db, config, office.code, CHEAP_COST, "test")
                office_keys[office.code] = secret_key
        world = make_world(instance, office_keys)
        case = create_case_server(config, instance)
        other = create_case_server(config, instance)
        reviewer = create_reviewer_app(
            reviewer_settings(config), transport=httpx.WSGITransport(app=case)
        )
        reviewer.config["TESTING"] = True
        yield CaseDesk(instance, world, case, other, reviewer)
    finally:
        instance.close()


def officer_keys(server: RedisServer, officer_id: int) -> set[bytes]:
    """The Redis keys of the officer's tokens and sessions."""
    found = set()
    for key in server.client.scan_iter(match="dropbox:*", _type="HASH"):
        owner: Any = server.client.hget(key, "officer")
        if owner == str(officer_id).encode():
            found.add(key)
    return found


def nothing_readable(server: RedisServer, world: World, *more: bytes) -> None:
    """No value or key in Redis holds a passphrase, a username, a secret or an officer id."""
    needles = [b"officer_id", b"secret_key", b"auth_key", *more]
    for person in world.people.values():
        needles += [person.passphrase.encode(), person.username.encode()]
    for key in server.client.scan_iter(match="*"):
        assert not any(n in key for n in needles if n), key
    for values in server.everything().values():
        for value in values:
            assert not any(n in value for n in needles if n), value[:200]


def test_case_server_tokens_are_in_redis_and_deactivation_ends_them(
    fresh_redis: RedisServer, desk: CaseDesk
) -> None:
    from case_server import tokens

    world = desk.world
    officer = world.people["oio"]
    client = signed_in_client(desk.reviewer, world, "oio")  # the reviewer app signs in
    admin = signed_in_client(desk.reviewer, world, "admin")
    assert client.get("/").status_code == 200
    mine = officer_keys(fresh_redis, officer.id)
    assert {k.split(b":")[1] for k in mine} == {b"token"}, mine  # the sign-in's bearer token
    assert fresh_redis.client.smembers(f"dropbox:officer-keys:{officer.id}") == mine
    with desk.instance.sessions() as db:
        assert db.execute(select(func.count()).select_from(OfficerSession)).scalar_one() == 0
    # A token issued by one worker works on the other: it is in the shared store.
    token = tokens.issue(desk.instance, officer.id)
    me = desk.other_worker.test_client().get(
        "/api/v2/me", headers={"Authorization": f"Bearer {token}"}
    )
    assert me.status_code == 200 and me.json is not None and me.json["id"] == officer.id
    assert len(officer_keys(fresh_redis, officer.id)) == 2

    confirm = {"code": fresh_code(desk.instance, world.people["admin"])}  # the admin's own
    deactivated = post_form(
        admin, "/admin/officers", f"/admin/officers/{officer.id}/deactivate", confirm
    )
    assert deactivated.status_code == 302, deactivated.get_data(as_text=True)

    assert officer_keys(fresh_redis, officer.id) == set()
    assert fresh_redis.client.exists(f"dropbox:officer-keys:{officer.id}") == 0
    gone = desk.other_worker.test_client().get(
        "/api/v2/me", headers={"Authorization": f"Bearer {token}"}
    )
    assert gone.status_code == 401
    # The reviewer app learns it at its next call to the server: keys forgotten, signed out.
    assert client.get("/").status_code == 302
    assert officer_keys(fresh_redis, world.people["admin"].id)  # the administrator is still in
    assert admin.get("/").status_code == 200
    nothing_readable(fresh_redis, world)


def test_the_sign_in_lockout_is_counted_in_redis_for_every_worker(
    fresh_redis: RedisServer, desk: CaseDesk
) -> None:
    """Five failed sign-ins through one worker lock the username on the other worker too,
    even with the right passphrase and code; another username is not locked."""
    world = desk.world
    person = world.people["eco"]
    desk.reviewer.config["TESTING"] = True
    before = set(fresh_redis.client.scan_iter(match="*"))
    statuses = []
    for _ in range(5):
        refused = login_form(
            desk.reviewer.test_client(), person.username, person.passphrase, wrong_code(person)
        )
        statuses.append(refused.status_code)
    # Refused; the fifth failure spends the budget, so it may already say until when.
    assert statuses[:4] == [400] * 4 and statuses[4] in (400, 429), statuses
    counted = set(fresh_redis.client.scan_iter(match="*")) - before
    assert any(b"signin" in key for key in counted), counted  # the failures, in Redis

    # The other worker (its own limiter, the same Redis): the right credentials are refused.
    import httpx

    from journalist_interface.client import ApiError, CaseServerClient
    from tests.signin_helpers import derive

    other = CaseServerClient(
        "http://case.test", transport=httpx.WSGITransport(app=desk.other_worker)
    )
    try:
        secrets = derive(other, person.username, person.passphrase)
        with pytest.raises(ApiError) as locked:
            other.sign_in(person.username, secrets.auth_key, fresh_code(desk.instance, person))
        assert locked.value.status == 429
        assert isinstance(locked.value.extra.get("retry_after"), int)
        # Through the reviewer app too, which says until when.
        page = login_form(
            desk.reviewer.test_client(),
            person.username,
            person.passphrase,
            fresh_code(desk.instance, person),
        )
        assert page.status_code == 429
        # Another officer is not locked out by it.
        second = world.people["eco2"]
        secrets = derive(other, second.username, second.passphrase)
        signed = other.sign_in(second.username, secrets.auth_key, fresh_code(desk.instance, second))
        assert signed.me.username == second.username
    finally:
        other.close()
    # The usernames tried are stored as keyed digests only.
    nothing_readable(fresh_redis, world, person.passphrase.encode())
