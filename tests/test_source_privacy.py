"""What the source interface must never leave behind: plaintext anywhere, addresses on disk.

Headers, third-party resources and log lines of both interfaces: tests/test_web_checks.py.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from pathlib import Path
from stat import S_ISREG

import pytest
from flask import Flask
from flask.testing import FlaskClient

from crypto.codenames import normalise
from dropbox.instance import Instance
from tests.conftest import database_files
from tests.source_helpers import (
    csrf_token,
    login,
    logout,
    new_codename,
    post_multipart,
    submit_report,
)

pytestmark = pytest.mark.database_engine

ADDRESS = "203.0.113.77"
RUN = uuid.uuid4().hex
# Unique per run, so that no copy of this file anywhere can match them.
USER_AGENT = f"CanaryBrowser/{RUN} (X11; Linux)"
REFERRER = f"http://referrer-{RUN}.invalid/where-i-came-from"
SKIP_LARGER_THAN = 64 * 1024 * 1024


def browser(source_app: Flask) -> FlaskClient:
    """A client that announces an address, a User-Agent and a referrer on every request."""
    client = source_app.test_client()
    client.environ_base.update(
        {"REMOTE_ADDR": ADDRESS, "HTTP_USER_AGENT": USER_AGENT, "HTTP_REFERER": REFERRER}
    )
    return client


def files_under(root: Path, *, changed_since: float | None = None) -> list[Path]:
    """Regular files under root; with changed_since, only those written since that time."""
    found = []
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            try:
                stat = path.lstat()
            except OSError:
                continue
            if not S_ISREG(stat.st_mode) or stat.st_size > SKIP_LARGER_THAN:
                continue
            if changed_since is None or max(stat.st_mtime, stat.st_ctime) >= changed_since:
                found.append(path)
    return found


def places_containing(
    needles: list[bytes], roots: list[Path], *, changed_since: float | None = None
) -> list[str]:
    """Every file under roots holding a needle. A needle made at time T can only be in a
    file written at T or later, so changed_since=T reads just those (a shared /tmp, or a
    PostgreSQL server holding other tests' databases, is otherwise gigabytes)."""
    hits: list[str] = []
    for root in roots:
        for path in files_under(root, changed_since=changed_since):
            try:
                data = path.read_bytes()
            except OSError:
                continue
            hits.extend(f"{path}: {needle!r}" for needle in needles if needle in data)
    return hits


@pytest.fixture
def temporary_files_made(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every temporary file the process makes (they still get made).

    Werkzeug's own upload handling spools to an unnamed temporary file that
    no directory scan could find afterwards; this catches it as it happens.
    """
    made: list[str] = []
    for name in ("TemporaryFile", "SpooledTemporaryFile", "NamedTemporaryFile", "mkstemp"):
        real = getattr(tempfile, name)

        def recording(
            *args: object, _real: object = real, _name: str = name, **kw: object
        ) -> object:
            made.append(_name)
            return _real(*args, **kw)  # type: ignore[operator]

        monkeypatch.setattr(tempfile, name, recording)
    return made


def test_canary_reaches_no_disk_no_table_and_no_log(
    source_app: Flask,
    instance: Instance,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    temporary_files_made: list[str],
) -> None:
    """Everything a source sends carries a canary; afterwards it, and the codename, are nowhere."""
    caplog.set_level(logging.DEBUG)
    # A second's margin for file systems that keep coarse times: nothing written before
    # this line can hold the canary or the codename, which do not exist yet.
    born = time.time() - 1
    canary = f"CANARY{uuid.uuid4().hex}"
    big = os.urandom(700_000) + canary.encode() + os.urandom(700_000) + canary.encode()
    client = browser(source_app)

    codename, form = new_codename(client)
    sent = submit_report(
        client,
        form,
        {
            "category": "harassment",
            "message": f"The facts are these: {canary}",
            "where": f"Office {canary}",
            "identity_name": f"Name {canary}",
            "identity_contact": f"{canary}@example.invalid",
        },
        [(f"{canary}-big.bin", big), (f"{canary}.txt", canary.encode())],
    )
    assert sent.status_code == 302
    logout(client)

    assert login(client, codename).status_code == 302
    page = client.get("/thread").get_data(as_text=True)
    answered = post_multipart(
        client,
        "/thread/answer",
        {"csrf_token": csrf_token(page), "message": f"My answer {canary}"},
        [(f"answer-{canary}.txt", f"answer file {canary}".encode())],
    )
    assert answered.status_code == 302
    logout(client)
    assert temporary_files_made == []
    instance.engine.dispose()  # let SQLite check-point the WAL into the database file

    # The codename too, as shown and as the server normalises it: it is never stored.
    unique = [
        canary.encode(),
        canary.encode("utf-16-le"),
        RUN.encode(),
        codename.encode(),
        normalise(codename).encode(),
    ]
    # On PostgreSQL, the server's files too: its data directory, WAL and log.
    roots = [instance.config.data_dir, Path(tempfile.gettempdir()), *database_files()]
    assert places_containing(unique, roots, changed_since=born) == []
    # The address is a fixed string (it could be in any copy of this file): the
    # data directory is where it must not be.
    assert places_containing([ADDRESS.encode()], [instance.config.data_dir]) == []
    # The address and User-Agent in logs: tests/test_web_checks.py, for both interfaces.
    logged = caplog.text + "".join(capfd.readouterr())
    assert canary not in logged
    assert codename not in logged and normalise(codename) not in logged
