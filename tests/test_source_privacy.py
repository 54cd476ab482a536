"""What the source interface must never leave behind or load: plaintext, addresses, others."""

from __future__ import annotations

import logging
import os
import re
import tempfile
import uuid
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from nacl.public import PrivateKey

from dropbox.instance import Instance
from source_interface import create_app
from tests.conftest import database_files
from tests.source_helpers import (
    csrf_token,
    login,
    logout,
    new_codename,
    post_multipart,
    submit_report,
)

ADDRESS = "203.0.113.77"
RUN = uuid.uuid4().hex
# Unique per run, so that no copy of this file anywhere can match them.
USER_AGENT = f"CanaryBrowser/{RUN} (X11; Linux)"
REFERRER = f"http://referrer-{RUN}.invalid/where-i-came-from"
SKIP_LARGER_THAN = 64 * 1024 * 1024


@pytest.fixture
def app(instance: Instance, office_keys: dict[str, PrivateKey]) -> Flask:
    application = create_app(instance.config, instance)
    application.config["TESTING"] = True
    return application


def browser(app: Flask) -> FlaskClient:
    """A client that announces an address, a User-Agent and a referrer on every request."""
    client = app.test_client()
    client.environ_base.update(
        {"REMOTE_ADDR": ADDRESS, "HTTP_USER_AGENT": USER_AGENT, "HTTP_REFERER": REFERRER}
    )
    return client


def files_under(root: Path) -> list[Path]:
    found = []
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            try:
                small = path.stat().st_size <= SKIP_LARGER_THAN
                if path.is_file() and not path.is_symlink() and small:
                    found.append(path)
            except OSError:
                continue
    return found


def places_containing(needles: list[bytes], roots: list[Path]) -> list[str]:
    hits = []
    for root in roots:
        for path in files_under(root):
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
    app: Flask,
    instance: Instance,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    temporary_files_made: list[str],
) -> None:
    """Everything a source sends carries a canary; afterwards it is nowhere in the clear."""
    caplog.set_level(logging.DEBUG)
    canary = f"CANARY{uuid.uuid4().hex}"
    big = os.urandom(700_000) + canary.encode() + os.urandom(700_000) + canary.encode()
    client = browser(app)

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

    unique = [canary.encode(), canary.encode("utf-16-le"), RUN.encode()]
    # On PostgreSQL, the server's files too: its data directory, WAL and log.
    roots = [instance.config.data_dir, Path(tempfile.gettempdir()), *database_files()]
    assert places_containing(unique, roots) == []
    # The address is a fixed string (it could be in any copy of this file): the
    # data directory is where it must not be.
    assert places_containing([ADDRESS.encode()], [instance.config.data_dir]) == []
    logged = caplog.text + "".join(capfd.readouterr())
    for needle in (canary, ADDRESS, RUN):
        assert needle not in logged


ROUTES = [
    ("/", 200),
    ("/codename", 200),
    ("/login", 200),
    ("/report", 302),
    ("/receipt", 401),
    ("/thread", 401),
    ("/language/fr", 302),
    ("/static/style.css", 200),
    ("/no/such/page", 404),
]


def assert_security_headers(response: object, path: str) -> None:
    headers = response.headers  # type: ignore[attr-defined]
    policy = headers.get("Content-Security-Policy", "")
    assert policy.startswith("default-src 'none'"), path
    assert "script-src" not in policy, path
    assert headers.get("Referrer-Policy") == "no-referrer", path
    assert headers.get("X-Frame-Options") == "DENY", path
    assert headers.get("X-Content-Type-Options") == "nosniff", path
    assert headers.get("Cache-Control") == "no-store", path
    assert "Server" not in headers, path


@pytest.mark.parametrize(("path", "status"), ROUTES)
def test_every_route_sends_the_security_headers(app: Flask, path: str, status: int) -> None:
    response = app.test_client().get(path)
    assert response.status_code == status
    assert_security_headers(response, path)


def test_error_and_form_responses_send_the_security_headers_too(app: Flask) -> None:
    client = app.test_client()
    for response in (
        client.post("/login", data={"codename": "no token"}),  # CSRF failure
        client.get("/logout"),  # wrong method
        client.post("/thread/answer"),  # no session, no token
    ):
        assert_security_headers(response, response.request.path)


def test_onion_location_is_sent_when_an_onion_address_is_configured(
    instance: Instance, office_keys: dict[str, PrivateKey]
) -> None:
    from dataclasses import replace

    onion = "a" * 56 + ".onion"
    config = replace(instance.config, source=replace(instance.config.source, onion_address=onion))
    response = create_app(config, instance).test_client().get("/login")
    assert response.headers["Onion-Location"] == f"http://{onion}/login"
    without = create_app(instance.config, instance).test_client().get("/login")
    assert "Onion-Location" not in without.headers


URL_ATTRIBUTE = re.compile(r"""\b(?:href|src|action|srcset|poster|data)\s*=\s*["']([^"']*)["']""")


def pages_of_a_whole_journey(app: Flask, instance: Instance) -> dict[str, str]:
    client = app.test_client()
    pages = {"/": client.get("/").get_data(as_text=True)}
    pages["/login"] = client.get("/login").get_data(as_text=True)
    pages["/codename"] = client.get("/codename").get_data(as_text=True)
    _, pages["/report"] = new_codename(client)
    refused = submit_report(client, pages["/report"], {"category": "fraud", "message": "x"})
    pages["/report (errors)"] = refused.get_data(as_text=True)
    submit_report(client, pages["/report"], {"category": "fraud", "message": "A" * 40})
    pages["/receipt"] = client.get("/receipt").get_data(as_text=True)
    pages["/thread"] = client.get("/thread").get_data(as_text=True)
    pages["/logout"] = logout(client).get_data(as_text=True)
    pages["/thread (ended)"] = client.get("/thread").get_data(as_text=True)
    pages["404"] = client.get("/nothing").get_data(as_text=True)
    pages["style.css"] = client.get("/static/style.css").get_data(as_text=True)
    return pages


def test_no_page_refers_to_another_origin_or_carries_script(app: Flask, instance: Instance) -> None:
    for name, page in pages_of_a_whole_journey(app, instance).items():
        assert "<script" not in page.lower(), name
        assert " style=" not in page.lower(), name
        assert "@import" not in page, name
        for url in URL_ATTRIBUTE.findall(page) + re.findall(r"url\(([^)]*)\)", page):
            url = url.strip("'\" ")
            assert url.startswith(("/", "#", "?")) and not url.startswith("//"), (name, url)
