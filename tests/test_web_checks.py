"""Web checks on every route of the three apps: headers, CSRF, cookies, origins and logs.

The three: the source interface and the case server (JSON API, /api/v2) on
the server, and the reviewer app (the officer's pages, on 127.0.0.1 of the
officer's machine), which talks to the real case server (in this process
through httpx.WSGITransport; over real HTTP in the served test).

The routes come from each app's url_map: every table below must name exactly
the rules the app has (`concrete`), so a new route fails here until it is
given a path and, for a form, a way to post it.

- Every response (GET, HEAD and OPTIONS of each route, GET signed in too, and
  the 400, 404, 405 and 413 errors of each) carries the security headers of
  docs/security.md (section 9);
  so do the responses of the real server (`launcher.serve`, gunicorn), which
  also sends no `Server` header.
- Every state-changing form of the two HTML apps refuses a signed-in request
  without a CSRF token, or with a wrong one: a clear 400 page, and nothing in
  the database or the store changes. The same form with the right token is
  not refused for CSRF. The case server is called with a bearer token, never
  with a browser's cookie, and sets no cookie itself.
- Session cookies: HttpOnly, SameSite=Strict, Path=/, host-only, no lifetime
  of their own; the source's Secure when the request came over TLS (the
  reviewer app is plain http on loopback, so never Secure); signing out ends
  the session (the source's stored row, the reviewer app's keys in memory).
- No page of a whole journey (source and officer, signed in and not) names
  another origin, carries a script or an inline style, or has a POST form
  without a CSRF token.
- No IP address or User-Agent reaches any log line: every Python logger at
  DEBUG in this process, and in real served processes (source and case server
  under gunicorn, every logger at DEBUG plus gunicorn's error log at debug
  level; the reviewer app as `dropbox reviewer`, as it logs), over a whole
  journey.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from http.client import HTTPConnection
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.engine import make_url
from werkzeug.datastructures import FileStorage, Headers, MultiDict
from werkzeug.test import encode_multipart

from case_server import create_app as create_case_server
from case_server import tokens
from dropbox.instance import Instance
from dropbox.models import Base, Item, ItemKind, Officer, Report
from dropbox.sessions import Kind, session_id_hash, session_store
from source_interface import create_app as create_source
from tests.conftest import CHEAP_CRYPTO_TOML, FIGURES, free_port
from tests.reviewer_helpers import (
    World,
    fresh_code,
    read_out,
    signed_in_client,
    source_report,
)
from tests.served import reviewing
from tests.source_helpers import CODENAME, csrf_token

REPO = Path(__file__).resolve().parent.parent
RUN = uuid.uuid4().hex
# What a browser or a proxy in front would announce; none of it may be logged.
USER_AGENT = f"WebCheckBrowser/{RUN} (X11; Linux x86_64)"
REMOTE_ADDR = "192.0.2.61"
FORWARDED_FOR = "198.51.100.17"
REAL_IP = "203.0.113.29"
REVEALING_HEADERS = {
    "User-Agent": USER_AGENT,
    "X-Forwarded-For": f"{FORWARDED_FOR}, 203.0.113.5",
    "X-Real-IP": REAL_IP,
    "Forwarded": "for=198.51.100.44;proto=http",
}
NEEDLES = [USER_AGENT, RUN, REMOTE_ADDR, FORWARDED_FOR, "203.0.113.5", REAL_IP, "198.51.100.44"]

MESSAGE = "They moved me to another duty station after I testified to the oversight office."
SOURCE_EXPIRED = "This form has expired"
REVIEWER_EXPIRED = "Form expired"
SESSION_TABLES = frozenset({"source_sessions", "officer_sessions"})
SOURCE_MAX_MIB = 1  # the smallest allowed, so that a 413 costs little to provoke
REVIEWER_MAX_BYTES = 4 * 1024 * 1024  # journalist_interface.app's MAX_CONTENT_LENGTH
CASE_MAX_BYTES = 4 * 1024 * 1024  # case_server.wire.MAX_REQUEST_BYTES

# --- every route, as a path to request -------------------------------------------------

SOURCE_ROUTES = {
    "/": "/",
    "/robots.txt": "/robots.txt",
    "/favicon.ico": "/favicon.ico",
    "/static/<path:filename>": "/static/style.css",
    "/language/<code>": "/language/fr",
    "/codename": "/codename",
    "/codename/new": "/codename/new",
    "/report": "/report",
    "/receipt": "/receipt",
    "/login": "/login",
    "/thread": "/thread",
    "/thread/answer": "/thread/answer",
    "/thread/messages/<item_id>/delete": "/thread/messages/{reply}/delete",
    "/logout": "/logout",
}
DEACTIVATE = "/admin/officers/<int(max=2147483647):officer_id>/deactivate"
REINVITE = "/admin/officers/<int(max=2147483647):officer_id>/invite"
REVIEWER_ROUTES = {
    "/static/<path:filename>": "/static/style.css",
    "/robots.txt": "/robots.txt",
    "/favicon.ico": "/favicon.ico",
    "/login": "/login",
    "/logout": "/logout",
    "/": "/",
    "/reports/<report_id>": "/reports/{rid}",
    "/reports/<report_id>/files/<item_id>": "/reports/{rid}/files/{fid}",
    "/reports/<report_id>/files/<item_id>/cleaned": "/reports/{rid}/files/{fid}/cleaned",
    "/reports/<report_id>/reply": "/reports/{rid}/reply",
    "/reports/<report_id>/notes": "/reports/{rid}/notes",
    "/reports/<report_id>/assign": "/reports/{rid}/assign",
    "/reports/<report_id>/status": "/reports/{rid}/status",
    "/reports/<report_id>/refer": "/reports/{rid}/refer",
    "/reports/<report_id>/identity": "/reports/{rid}/identity",
    "/reports/<report_id>/delete": "/reports/{rid}/delete",
    "/reports/<report_id>/export": "/reports/{rid}/export",
    "/reports/<report_id>/export/key": "/reports/{rid}/export/key",
    "/account": "/account",
    "/account/passphrase": "/account/passphrase",
    "/account/key": "/account/key",
    "/account/totp": "/account/totp",
    "/account/totp/confirm": "/account/totp/confirm",
    "/account/notifications": "/account/notifications",
    "/enrol": "/enrol",
    "/enrol/confirm": "/enrol/confirm",
    "/admin/officers": "/admin/officers",
    DEACTIVATE: "/admin/officers/{officer}/deactivate",
    REINVITE: "/admin/officers/{officer}/invite",
    "/admin/grants": "/admin/grants",
    "/admin/audit": "/admin/audit",
    "/admin/notifications": "/admin/notifications",
    "/statistics": "/statistics",
    "/statistics.csv": "/statistics.csv",
}
API = "/api/v2"
OFFICER = "<int(max=2147483647):officer_id>"
CASE_ROUTES = {
    # Flask's default static route: the case server has no static folder, so a 404.
    "/static/<path:filename>": "/static/style.css",
    "/robots.txt": "/robots.txt",
    "/favicon.ico": "/favicon.ico",
    f"{API}/openapi.json": f"{API}/openapi.json",
    f"{API}/signin/params": f"{API}/signin/params",
    f"{API}/signin": f"{API}/signin",
    f"{API}/signout": f"{API}/signout",
    f"{API}/enrol/check": f"{API}/enrol/check",
    f"{API}/enrol": f"{API}/enrol",
    f"{API}/me": f"{API}/me",
    f"{API}/account/passphrase": f"{API}/account/passphrase",
    f"{API}/account/key": f"{API}/account/key",
    f"{API}/account/totp": f"{API}/account/totp",
    f"{API}/account/notifications": f"{API}/account/notifications",
    f"{API}/notifications/failures": f"{API}/notifications/failures",
    f"{API}/reports": f"{API}/reports",
    f"{API}/reports/<report_id>": f"{API}/reports/{{rid}}",
    f"{API}/reports/<report_id>/items/<item_id>/body": f"{API}/reports/{{rid}}/items/{{fid}}/body",
    f"{API}/reports/<report_id>/items": f"{API}/reports/{{rid}}/items",
    f"{API}/reports/<report_id>/reveal": f"{API}/reports/{{rid}}/reveal",
    f"{API}/reports/<report_id>/assign": f"{API}/reports/{{rid}}/assign",
    f"{API}/reports/<report_id>/status": f"{API}/reports/{{rid}}/status",
    f"{API}/reports/<report_id>/refer": f"{API}/reports/{{rid}}/refer",
    f"{API}/reports/<report_id>/delete": f"{API}/reports/{{rid}}/delete",
    f"{API}/reports/<report_id>/events": f"{API}/reports/{{rid}}/events",
    f"{API}/events": f"{API}/events",
    f"{API}/officers": f"{API}/officers",
    f"{API}/officers/{OFFICER}/deactivate": f"{API}/officers/{{officer}}/deactivate",
    f"{API}/officers/{OFFICER}/grants": f"{API}/officers/{{officer}}/grants",
    f"{API}/officers/{OFFICER}/invite": f"{API}/officers/{{officer}}/invite",
    f"{API}/audit": f"{API}/audit",
    f"{API}/audit/verify": f"{API}/audit/verify",
    f"{API}/statistics": f"{API}/statistics",
}
# What the case server answers without a token: its document, signing in and enrolling.
CASE_PUBLIC = {
    "/robots.txt",
    "/favicon.ico",
    f"{API}/openapi.json",
    f"{API}/signin/params",
    f"{API}/signin",
    f"{API}/enrol/check",
    f"{API}/enrol",
    "/static/<path:filename>",
}

# Every form of the HTML apps, in the order they are posted with a valid token
# (each leaves the session able to post the next), with what a browser sends.
SOURCE_FORMS: list[tuple[str, dict[str, str]]] = [
    ("/thread/answer", {"message": "One more thing: the transfer letter is dated May."}),
    ("/thread/messages/<item_id>/delete", {}),
    ("/report", {"category": "fraud", "message": MESSAGE}),
    ("/codename/new", {}),
    ("/codename", {"codename": "{codename}", "written_down": "yes"}),
    ("/login", {"codename": "{codename}"}),
    ("/logout", {}),
]
REVIEWER_FORMS: list[tuple[str, dict[str, str]]] = [
    ("/reports/<report_id>/reply", {"message": "Are you safe where you are now?"}),
    ("/reports/<report_id>/notes", {"text": "Check the transfer order."}),
    ("/reports/<report_id>/assign", {"assignee_id": ""}),
    ("/reports/<report_id>/status", {"status": "acknowledged"}),
    ("/reports/<report_id>/identity", {"reason": "Needed to arrange protection measures."}),
    ("/reports/<report_id>/export/key", {"key": "not an OpenPGP key"}),
    ("/reports/<report_id>/export", {"key": "not an OpenPGP key", "fingerprint": "0" * 40}),
    ("/reports/<report_id>/delete", {"confirm": "not the designation"}),
    ("/admin/officers", {"username": "invited", "display_name": "Invited", "code": "000000"}),
    (
        "/admin/grants",
        {
            "officer_id": "{oio}",
            "office": "ECO",
            "fingerprint": "{oio_fingerprint}",
            "key_source": "held",
            "code": "000000",
        },
    ),
    (DEACTIVATE, {"code": "000000"}),
    (REINVITE, {"code": "000000"}),
    ("/account/totp", {"current_passphrase": "{passphrase}"}),
    ("/account/totp/confirm", {"code": "000000"}),
    ("/account/key", {"current_passphrase": "{passphrase}", "code": "000000"}),
    ("/account/notifications", {"email": "me@example.org", "mode": "digest"}),
    (
        "/account/passphrase",
        {
            "current_passphrase": "{passphrase}",
            "new_passphrase": "a new and longer passphrase",
            "confirm_passphrase": "a new and longer passphrase",
            "code": "000000",
        },
    ),
    ("/enrol", {"username": "nobody", "code": "not-a-code", "passphrase": "x"}),
    ("/enrol/confirm", {"code": "000000"}),
    ("/login", {"username": "nobody", "passphrase": "wrong", "code": "000000"}),
    ("/reports/<report_id>/refer", {"office": "OIO"}),
    ("/logout", {}),
]


@dataclass
class Site:
    """The three apps over one instance, with a report (a file, a reply) and who acts on it."""

    world: World
    source: Flask
    reviewer: Flask
    case: Flask
    codename: str
    ids: dict[str, str]

    def source_client(self) -> FlaskClient:
        """A source signed in to the report."""
        client = self.source.test_client()
        signed = client.post(
            "/login", data={"csrf_token": token_of(client), "codename": self.codename}
        )
        assert signed.status_code == 302
        return client

    def reviewer_client(self) -> FlaskClient:
        """An administrator holding ECO's key (the report is ECO's): every page is open."""
        return signed_in_client(self.reviewer, self.world, "eco_admin")

    def case_client(self) -> FlaskClient:
        """A caller of the case server with the administrator's bearer token (no cookie)."""
        client = self.case.test_client(use_cookies=False)
        token = tokens.issue(self.world.instance, self.world.people["eco_admin"].id)
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        return client


def item_id(instance: Instance, kind: ItemKind) -> str:
    with instance.sessions() as db:
        return db.execute(select(Item.id).where(Item.kind == kind)).scalars().first() or ""


@pytest.fixture
def site(world: World, reviewer: Flask, case_app: Flask) -> Site:
    config = world.instance.config
    small = replace(config, source=replace(config.source, max_upload_mib=SOURCE_MAX_MIB))
    source = create_source(small, world.instance)
    codename, _ = source_report(
        source,
        "retaliation",
        MESSAGE,
        [("transfer-letter.txt", b"the letter")],
        extra={"identity_name": "J. Doe"},
    )
    with world.instance.sessions() as db:
        rid = db.execute(select(Report.id)).scalar_one()
        oio = db.get(Officer, world.people["oio"].id)
        assert oio is not None
        oio_fingerprint = read_out(oio)
    officer = signed_in_client(reviewer, world, "eco_admin")
    page = officer.get(f"/reports/{rid}").get_data(as_text=True)
    sent = officer.post(
        f"/reports/{rid}/reply", data={"csrf_token": csrf_token(page), "message": "Thank you."}
    )
    assert sent.status_code == 302
    ids = {
        "rid": rid,
        "fid": item_id(world.instance, ItemKind.FILE),
        "reply": item_id(world.instance, ItemKind.REPLY),
        "officer": str(world.people["eco2"].id),
        "oio": str(world.people["oio"].id),
        "oio_fingerprint": oio_fingerprint,
        "codename": codename,
        "passphrase": world.people["eco_admin"].passphrase,
    }
    return Site(world, source, reviewer, case_app, codename, ids)


def url_rules(app: Flask) -> dict[str, set[str]]:
    """Each rule of the app's url_map, with the methods of every rule of that path."""
    rules: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        rules.setdefault(rule.rule, set()).update(rule.methods or ())
    return rules


def concrete(app: Flask, table: dict[str, str], ids: dict[str, str]) -> list[tuple[str, set[str]]]:
    """(path, methods) for every route; the table must name exactly the app's routes."""
    rules = url_rules(app)
    assert set(table) == set(rules), "a route of the app is missing here, or one is gone"
    return [(table[rule].format(**ids), methods) for rule, methods in rules.items()]


def apps(site: Site) -> list[tuple[str, Flask, dict[str, str], Callable[[], FlaskClient]]]:
    return [
        ("source", site.source, SOURCE_ROUTES, site.source_client),
        ("reviewer", site.reviewer, REVIEWER_ROUTES, site.reviewer_client),
        ("case", site.case, CASE_ROUTES, site.case_client),
    ]


# What each app's responses must include, over every route: the HTML apps redirect and
# refuse forms; the case server refuses calls without a token.
EXPECTED_STATUSES = {
    "source": {200, 302, 400, 404, 405, 413},
    "reviewer": {200, 302, 400, 404, 405, 413},
    "case": {200, 400, 401, 404, 405, 413},
}
LIMITS = {
    "source": SOURCE_MAX_MIB * 1024 * 1024,
    "reviewer": REVIEWER_MAX_BYTES,
    "case": CASE_MAX_BYTES,
}


# --- headers ---------------------------------------------------------------------------


def assert_security_headers(headers: Headers, what: object, *, server: bool = False) -> None:
    """The security headers (docs/security.md, section 9), on one response."""
    FIGURES.count("responses checked for the security headers")
    policy = headers.get("Content-Security-Policy", "")
    directives = {}
    for directive in filter(None, (d.strip() for d in policy.split(";"))):
        name, *sources = directive.split()
        directives[name] = sources
    assert directives.get("default-src") == ["'none'"], (what, policy)
    assert directives.get("frame-ancestors") == ["'none'"], (what, policy)
    assert "script-src" not in directives, (what, policy)
    for name, sources in directives.items():
        allowed = {"'none'", "'self'"} | ({"data:"} if name == "img-src" else set())
        assert set(sources) <= allowed, (what, name, sources)
    assert headers.get("Referrer-Policy") == "no-referrer", what
    assert headers.get("X-Frame-Options") == "DENY", what
    assert headers.get("X-Content-Type-Options") == "nosniff", what
    assert headers.get("Cache-Control") == "no-store", what
    if not server:
        assert "Server" not in headers, what


def every_response_of_every_route(
    app: Flask, table: dict[str, str], ids: dict[str, str], member: FlaskClient, limit: int
) -> Iterator[tuple[Any, tuple[str, ...]]]:
    """(response, what) for each method of each route, signed in and not, and each error."""
    anonymous = app.test_client()
    too_large, form_type = encode_form({"filler": "x" * (limit + 1024)}, None)
    too_large_json = b'{"filler": "' + b"x" * (limit + 1024) + b'"}'
    for path, methods in concrete(app, table, ids):
        html_page = not path.startswith("/api/")
        if not html_page:  # the case server reads JSON only, and only when it has to
            too_large, form_type = too_large_json, "application/json"
        # A bearer token would end at POST /signout: the case server's POSTs go without one.
        poster = member if html_page else anonymous
        for method in sorted(methods & {"GET", "HEAD", "OPTIONS"}):
            yield anonymous.open(path, method=method), (method, path, "anonymous")
        if "GET" in methods:
            yield member.get(path), ("GET", path, "signed in")
        if "POST" in methods:
            refused = poster.post(path, data={"field": "no token"})  # 400 or 401 for the API
            assert refused.status_code == 400 or not html_page, path
            yield refused, ("POST", path, "no token")
            large = poster.post(path, data=too_large, content_type=form_type)
            # The case server checks the token first: a 413 from its public routes only.
            assert large.status_code == 413 or not html_page, path
            yield large, ("POST", path, "too large")
        wrong = member.put(path)  # no route takes PUT
        assert wrong.status_code == 405, path
        yield wrong, ("PUT", path, "wrong method")
    for path in ("/no/such/page", "/static/no-such-file.css", "/reports/unknown"):
        missing = member.get(path)
        assert missing.status_code == 404, path
        yield missing, ("GET", path, "missing")


def test_every_response_of_every_route_sends_the_security_headers(site: Site) -> None:
    for name, app, table, signed_in in apps(site):
        statuses = set()
        for response, what in every_response_of_every_route(
            app, table, site.ids, signed_in(), LIMITS[name]
        ):
            statuses.add(response.status_code)
            assert_security_headers(response.headers, (name, *what))
            if name == "case":  # bearer tokens only: the case server never sets a cookie
                assert "Set-Cookie" not in response.headers, what
        assert EXPECTED_STATUSES[name] <= statuses, (name, statuses)


def test_onion_location_is_sent_by_the_source_interface_only(instance: Instance) -> None:
    """The source interface names its onion address; the case server, an API behind the
    reviewer onion service with client authorisation, does not advertise its own."""
    onion = "a" * 56 + ".onion"
    config = instance.config
    source = replace(config, source=replace(config.source, onion_address=onion))
    response = create_source(source, instance).test_client().get("/login?next=%2F")
    assert response.headers["Onion-Location"] == f"http://{onion}/login?next=%2F"
    without = create_source(config, instance).test_client().get("/login")
    assert "Onion-Location" not in without.headers
    case = replace(config, reviewer=replace(config.reviewer, onion_address=onion))
    answer = create_case_server(case, instance).test_client().get(f"{API}/openapi.json")
    assert answer.status_code == 200
    assert "Onion-Location" not in answer.headers


# --- CSRF ------------------------------------------------------------------------------


def snapshot(instance: Instance) -> dict[str, Any]:
    """Every row of every table but the sessions (whose count only), and the store's files."""
    state: dict[str, Any] = {}
    with instance.sessions() as db:
        for table in Base.metadata.sorted_tables:
            rows = [tuple(map(repr, row)) for row in db.execute(select(table)).all()]
            state[table.name] = len(rows) if table.name in SESSION_TABLES else sorted(rows)
    state["store"] = sorted(instance.store.names())
    state["store temp"] = sorted(p.name for p in instance.store.temp_dir.iterdir())
    return state


def token_of(client: FlaskClient) -> str:
    """A valid CSRF token for this client's session, from a page with a form."""
    return csrf_token(client.get("/login").get_data(as_text=True))


def assert_the_cookie_calls_no_api(site: Site) -> None:
    """The case server takes bearer tokens only: a browser's cookies and CSRF header call
    nothing, and change nothing."""
    browser = site.reviewer_client()
    assert browser.get("/").status_code == 200  # the cookie works for the reviewer app's pages
    name = site.reviewer.config["SESSION_COOKIE_NAME"]
    host = site.reviewer.config["SERVER_NAME"].split(":")[0]
    session_cookie = browser.get_cookie(name, domain=host)
    assert session_cookie is not None, "the reviewer app set no cookie"
    cookies = f"{name}={session_cookie.value}"
    rules = url_rules(site.case)
    assert set(rules) == set(CASE_ROUTES), "a case server route is missing here"
    caller = site.case.test_client()
    before = snapshot(site.world.instance)
    for rule, methods in rules.items():
        path = CASE_ROUTES[rule].format(**site.ids)
        for method in sorted(methods & {"GET", "POST"}):
            for extra in ({}, {"X-CSRFToken": token_of(browser)}):
                response = caller.open(
                    path, method=method, json={}, headers={"Cookie": cookies, **extra}
                )
                assert "Set-Cookie" not in response.headers, (method, path)
                if rule in CASE_PUBLIC:
                    # Credentials go in the body: a cookie is no credential.
                    assert response.status_code != 200 or method == "GET", (method, path)
                    continue
                # Refused: 401 without a token (a route that checks its body first may say
                # 400 about the empty body; nothing is done either way, see the snapshot).
                assert response.status_code in (400, 401), (method, path, response.status_code)
                if response.status_code == 401:
                    assert response.headers["WWW-Authenticate"].startswith("Bearer"), path
                assert response.is_json and set(response.get_json()) == {"error"}, path
    assert snapshot(site.world.instance) == before


def assert_every_form_wants_the_token(
    site: Site,
    app: Flask,
    table: dict[str, str],
    forms: list[tuple[str, dict[str, str]]],
    client: FlaskClient,
    expired: str,
) -> None:
    rules = url_rules(app)
    posted = {rule for rule, methods in rules.items() if methods & {"POST", "PUT", "DELETE"}}
    assert {rule for rule, _ in forms} == posted, "a form is missing here, or one is gone"
    other_session = token_of(app.test_client())  # valid, but for another session
    for rule, fields in forms:
        path = table[rule].format(**site.ids)
        data = {key: value.format(**site.ids) for key, value in fields.items()}
        before = snapshot(site.world.instance)
        for wrong in ({}, {"csrf_token": "not-a-token"}, {"csrf_token": other_session}):
            refused = client.post(path, data={**data, **wrong})
            body = refused.get_data(as_text=True)
            assert refused.status_code == 400 and expired in body, (path, wrong)
            assert_security_headers(refused.headers, (path, "refused"))
        assert snapshot(site.world.instance) == before, f"a refused {path} changed something"
        # The same request with this session's token is not refused for CSRF.
        accepted = client.post(path, data={**data, "csrf_token": token_of(client)})
        assert expired not in accepted.get_data(as_text=True), path
        assert_security_headers(accepted.headers, (path, "with token"))


def test_no_state_change_without_a_csrf_token_or_a_bearer_token(site: Site) -> None:
    """Each form, signed in: no token, a bad one or another session's is refused, and
    nothing changes; with the session's token it is not refused. The case server ignores
    cookies."""
    assert_the_cookie_calls_no_api(site)
    assert_every_form_wants_the_token(
        site, site.source, SOURCE_ROUTES, SOURCE_FORMS, site.source_client(), SOURCE_EXPIRED
    )
    assert_every_form_wants_the_token(
        site,
        site.reviewer,
        REVIEWER_ROUTES,
        REVIEWER_FORMS,
        site.reviewer_client(),
        REVIEWER_EXPIRED,
    )


# --- session cookies -------------------------------------------------------------------


def cookie_attributes(headers: Headers, name: str) -> list[dict[str, str]]:
    """The attributes (lower-case names) of each Set-Cookie for `name`."""
    found = []
    for line in headers.getlist("Set-Cookie"):
        first, *rest = (part.strip() for part in line.split(";"))
        if first.split("=", 1)[0] != name:
            continue
        attributes = {"value": first.split("=", 1)[1]}
        for part in rest:
            key, _, value = part.partition("=")
            attributes[key.lower()] = value
        found.append(attributes)
    return found


def assert_cookie_flags(attributes: dict[str, str], tls: bool, what: object) -> None:
    assert "httponly" in attributes, what
    assert attributes.get("samesite") == "Strict", what
    assert attributes.get("path") == "/", what
    assert "domain" not in attributes, what  # host-only
    assert ("secure" in attributes) == tls, what
    if attributes["value"]:
        # A live cookie lasts for the browser session at most: the server ends it sooner.
        assert "expires" not in attributes and "max-age" not in attributes, what
    else:
        assert attributes.get("max-age") == "0", what  # a deletion


def stored_session(instance: Instance, kind: Kind, cookie_value: str) -> object:
    """The stored session a cookie names (None once it is gone)."""
    session_id = base64.urlsafe_b64decode(cookie_value + "==")[:32]
    return session_store(instance).load(kind, session_id_hash(session_id))


def test_session_cookies_are_httponly_strict_and_secure_over_tls(site: Site) -> None:
    """Each HTML app: each cookie set, and the one sign-out ends. The source over HTTP and
    HTTPS; the reviewer app over plain HTTP on its own loopback address (never Secure)."""
    person = site.world.people["eco_admin"]
    reviewer_base = f"http://{site.reviewer.config['SERVER_NAME']}"
    cases = [
        ("source", site.source, "http://localhost", False),
        ("source", site.source, "https://localhost", True),
        ("reviewer", site.reviewer, reviewer_base, False),
    ]
    vault = site.reviewer.extensions["reviewer.vault"]
    for name, app, base, tls in cases:
        client = app.test_client()
        cookie = app.config["SESSION_COOKIE_NAME"]
        token = csrf_token(client.get("/login", base_url=base).get_data(as_text=True))
        if name == "source":
            credentials = {"codename": site.codename}
        else:
            code = fresh_code(site.world.instance, person)
            credentials = {"username": person.username, "passphrase": person.passphrase}
            credentials["code"] = code
        held_before = len(vault)
        signed = client.post("/login", data={"csrf_token": token, **credentials}, base_url=base)
        assert signed.status_code == 302, (name, signed.status_code)
        page = client.get({"source": "/thread", "reviewer": "/"}[name], base_url=base)
        assert page.status_code == 200, name
        if name == "reviewer":
            assert len(vault) == held_before + 1  # the officer's keys, in memory
        ended = client.post(
            "/logout",
            data={"csrf_token": csrf_token(page.get_data(as_text=True))},
            base_url=base,
        )
        assert ended.status_code in (200, 302)
        live = []
        for response in (signed, page, ended):
            for attributes in cookie_attributes(response.headers, cookie):
                assert_cookie_flags(attributes, tls, (name, base, response.request.path))
                live.append(attributes["value"])
        signed_in_cookie = cookie_attributes(signed.headers, cookie)[0]["value"]
        assert signed_in_cookie, name
        if name == "source":
            # Logout ends the signed-in session: its stored state is gone (DESIGN: the row
            # is deleted), whatever cookie comes back.
            assert stored_session(site.world.instance, "source", signed_in_cookie) is None
            assert "" in live  # the source's logout deletes the cookie
        else:
            # The reviewer app keeps nothing on disk: sign-out forgets the keys it held, and
            # a new session carries only the "signed out" message.
            assert len(vault) == held_before
            assert cookie_attributes(ended.headers, cookie)[0]["value"] != signed_in_cookie
            again = client.get("/", base_url=base)
            assert again.status_code == 302 and "/login" in again.headers["Location"]


# --- a whole journey, through any client -------------------------------------------------


@dataclass
class Page:
    """One response, as any client saw it."""

    method: str
    path: str
    status: int
    headers: Headers
    text: str
    by: str = ""  # which app answered, where the browser knows


class Browser(Protocol):
    def request(
        self,
        method: str,
        path: str,
        fields: dict[str, str] | None = None,
        files: list[tuple[str, bytes]] | None = None,
    ) -> Page: ...


def encode_form(
    fields: dict[str, str] | None, files: list[tuple[str, bytes]] | None
) -> tuple[bytes, str]:
    """A form body as a browser sends it: multipart when there are files."""
    if files is None:
        return urlencode(fields or {}).encode(), "application/x-www-form-urlencoded"
    multi: MultiDict[str, Any] = MultiDict(fields or {})
    for name, data in files:
        multi.add("files", FileStorage(io.BytesIO(data), filename=name))
    boundary, body = encode_multipart(multi)
    return body, f"multipart/form-data; boundary={boundary}"


@dataclass
class FlaskBrowser:
    """The Flask test client, announcing an address, a User-Agent and proxy headers."""

    client: FlaskClient

    def __post_init__(self) -> None:
        self.client.environ_base.update(
            {"REMOTE_ADDR": REMOTE_ADDR, "HTTP_USER_AGENT": USER_AGENT}
            | {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in REVEALING_HEADERS.items()}
        )

    def request(
        self,
        method: str,
        path: str,
        fields: dict[str, str] | None = None,
        files: list[tuple[str, bytes]] | None = None,
    ) -> Page:
        if method == "GET":
            response = self.client.get(path)
        else:
            body, content_type = encode_form(fields, files)
            response = self.client.post(path, data=body, content_type=content_type)
        text = response.get_data(as_text=True)
        return Page(method, path, response.status_code, response.headers, text)


@dataclass
class HttpBrowser:
    """A browser over real HTTP to 127.0.0.1: keeps its one cookie, sends revealing headers."""

    port: int
    name: str = ""
    cookie: str = ""

    def request(
        self,
        method: str,
        path: str,
        fields: dict[str, str] | None = None,
        files: list[tuple[str, bytes]] | None = None,
    ) -> Page:
        headers = {"Connection": "close", **REVEALING_HEADERS}
        body = None
        if self.cookie:
            headers["Cookie"] = self.cookie
        if method == "POST":
            body, headers["Content-Type"] = encode_form(fields, files)
        connection = HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            text = response.read().decode("utf-8", "replace")
            received = Headers(response.getheaders())
        finally:
            connection.close()
        for line in received.getlist("Set-Cookie"):
            pair = line.split(";", 1)[0]
            self.cookie = "" if pair.endswith("=") else pair
        return Page(method, path, response.status, received, text, self.name)


def journey(
    source: Browser, reviewer: Browser, site_world: World, case: Browser | None = None
) -> list[Page]:
    """A source reports with a file; an officer reads, downloads and replies; the source
    comes back, reads, answers with a file and deletes the reply; both log out. A caller
    of the case server (`case`) also asks it for its document and is refused without a
    token (the reviewer app's own calls carry no browser headers to it)."""
    instance = site_world.instance
    person = site_world.people["eco_admin"]
    pages: list[Page] = []
    with instance.sessions() as db:
        earlier = set(db.execute(select(Report.id)).scalars())

    def go(
        browser: Browser,
        method: str,
        path: str,
        fields: dict[str, str] | None = None,
        files: list[tuple[str, bytes]] | None = None,
        expect: int = 200,
        form: Page | None = None,
    ) -> Page:
        if form is not None:
            fields = {"csrf_token": csrf_token(form.text), **(fields or {})}
        page = browser.request(method, path, fields, files)
        assert page.status == expect, (method, path, page.status, page.text[:300])
        pages.append(page)
        return page

    go(source, "GET", "/")
    go(source, "GET", "/language/fr", expect=302)
    go(source, "GET", "/language/en", expect=302)
    shown = go(source, "GET", "/codename")
    match = CODENAME.search(shown.text)
    assert match is not None
    codename = html.unescape(match.group(1) or match.group(2))
    confirm = {"codename": codename, "written_down": "yes"}
    go(source, "POST", "/codename", confirm, form=shown, expect=302)
    form = go(source, "GET", "/report")
    go(source, "POST", "/report", {"category": "fraud", "message": "short"}, form=form, expect=400)
    report = {
        "category": "retaliation",
        "message": MESSAGE,
        "protected_activity": "Testified to OIO",
        "identity_name": "J. Doe",
    }
    files = [("transfer-letter.txt", b"The transfer letter, dated May.")]
    go(source, "POST", "/report", report, files, form=form, expect=302)
    go(source, "GET", "/receipt")
    thread = go(source, "GET", "/thread")
    go(source, "POST", "/logout", form=thread)

    signin = go(reviewer, "GET", "/login")
    credentials = {"username": person.username, "passphrase": person.passphrase}
    credentials["code"] = fresh_code(instance, person)
    go(reviewer, "POST", "/login", credentials, form=signin, expect=302)
    go(reviewer, "GET", "/")
    with instance.sessions() as db:
        (rid,) = set(db.execute(select(Report.id)).scalars()) - earlier
        fid = db.execute(
            select(Item.id).where(Item.report_id == rid, Item.kind == ItemKind.FILE)
        ).scalar_one()
    page = go(reviewer, "GET", f"/reports/{rid}")
    go(reviewer, "GET", f"/reports/{rid}/files/{fid}")
    reply = {"message": "Thank you. Where do you work now?"}
    go(reviewer, "POST", f"/reports/{rid}/reply", reply, form=page, expect=302)
    reason = {"reason": "Needed to arrange protection measures."}
    go(reviewer, "POST", f"/reports/{rid}/identity", reason, form=page)
    go(reviewer, "GET", f"/reports/{rid}/delete")
    account = go(reviewer, "GET", "/account")
    again = {"current_passphrase": person.passphrase}
    go(reviewer, "POST", "/account/totp", again, form=account)
    go(reviewer, "GET", "/account/notifications")
    go(reviewer, "GET", "/admin/officers")
    go(reviewer, "GET", "/admin/audit")
    go(reviewer, "GET", "/enrol")
    go(reviewer, "GET", "/static/style.css")
    go(reviewer, "GET", "/no/such/page", expect=404)
    go(reviewer, "POST", "/logout", form=account, expect=302)
    assert "You are signed out." in go(reviewer, "GET", "/login").text

    signin = go(source, "GET", "/login")
    go(source, "POST", "/login", {"codename": codename}, form=signin, expect=302)
    thread = go(source, "GET", "/thread")
    assert "Where do you work now?" in thread.text
    answer = {"message": "At the regional office since June."}
    files = [("new-post.txt", b"My new post.")]
    go(source, "POST", "/thread/answer", answer, files, form=thread, expect=302)
    thread = go(source, "GET", "/thread")
    with instance.sessions() as db:
        replied = db.execute(
            select(Item.id).where(Item.report_id == rid, Item.kind == ItemKind.REPLY)
        ).scalar_one()
    go(source, "POST", f"/thread/messages/{replied}/delete", form=thread, expect=302)
    thread = go(source, "GET", "/thread")
    go(source, "POST", "/logout", form=thread)
    go(source, "GET", "/thread", expect=401)
    go(source, "GET", "/no/such/page", expect=404)
    go(source, "GET", "/static/style.css")
    if case is not None:
        go(case, "GET", f"{API}/openapi.json")
        go(case, "GET", f"{API}/reports", expect=401)
        go(case, "GET", f"{API}/reports/{rid}", expect=401)
        go(case, "POST", f"{API}/signin", {"username": person.username}, expect=400)
        go(case, "GET", "/no/such/page", expect=404)
    return pages


# --- no other origin, no script ---------------------------------------------------------

URL_ATTRIBUTE = re.compile(
    r"""\b(?:href|src|action|formaction|srcset|poster|data|xlink:href|ping|background)"""
    r"""\s*=\s*["']([^"']*)["']""",
    re.IGNORECASE,
)
META_REFRESH_URL = re.compile(r"""content\s*=\s*["'][^"']*url=([^"';]+)""", re.IGNORECASE)
POST_FORM = re.compile(r"<form\b[^>]*\bmethod=[\"']?post[\"']?[^>]*>(.*?)</form>", re.I | re.S)


def same_origin_relative(url: str) -> bool:
    url = url.strip().strip("'\"")
    return url.startswith(("/", "#", "?")) and not url.startswith("//") and "\\" not in url


def assert_no_other_origin_or_script(pages: list[Page]) -> None:
    """No page, stylesheet or redirect names another origin; no script; every POST form
    carries a CSRF token."""
    kinds = {page.headers.get("Content-Type", "").split(";")[0] for page in pages}
    assert {"text/html", "text/css", "application/octet-stream"} <= kinds
    for page in pages:
        if page.headers.get("Content-Type", "").startswith("application/json"):
            continue  # the case server's answers: data for the reviewer app, never rendered
        what = (page.method, page.path, page.status)
        location = page.headers.get("Location")
        if location is not None:
            assert same_origin_relative(location), (what, location)
        content_type = page.headers.get("Content-Type", "")
        if content_type.startswith("application/octet-stream"):
            continue  # a decrypted file, downloaded as an attachment, never rendered
        text = page.text
        urls = re.findall(r"url\(([^)]*)\)", text)
        assert "@import" not in text, what
        if content_type.startswith("text/html"):
            lowered = text.lower()
            assert "<script" not in lowered, what
            assert not re.search(r"<[^>]+\son[a-z]+\s*=", lowered), what  # no event handlers
            assert " style=" not in lowered and "<style" not in lowered, what
            urls += URL_ATTRIBUTE.findall(text) + META_REFRESH_URL.findall(text)
            for body in POST_FORM.findall(text):
                assert 'name="csrf_token"' in body, (what, "a POST form without a CSRF token")
        else:
            assert content_type.startswith("text/css"), what
        for url in urls:
            assert same_origin_relative(url), (what, url)


# --- no address or User-Agent in any log --------------------------------------------------


class Lines(logging.Handler):
    """Collects each record as one formatted line, its traceback included."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def every_logger_at_debug() -> Iterator[Lines]:
    """Every logger that exists now at DEBUG, each record collected (propagating or not)."""
    handler = Lines()
    manager = logging.root.manager
    loggers = [logging.root] + [logging.getLogger(name) for name in list(manager.loggerDict)]
    previous = [(logger, logger.level, logger.disabled) for logger in loggers]
    # pytest's own capture would keep (and on failure print) thousands of SQL lines.
    others = [(h, h.level) for h in logging.root.handlers]
    for other, _ in others:
        other.setLevel(logging.CRITICAL + 1)
    logging.disable(logging.NOTSET)
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
        if logger is logging.root or not logger.propagate:
            logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger, level, disabled in previous:
            logger.setLevel(level)
            logger.disabled = disabled
            logger.removeHandler(handler)
        for other, level in others:
            other.setLevel(level)


def assert_no_needle(lines: list[str], needles: list[str]) -> None:
    FIGURES.count("log lines searched for addresses and User-Agents", len(lines))
    for line in lines:
        for needle in needles:
            assert needle not in line, f"{needle!r} logged: {line[:300]}"


def test_a_whole_journey_names_no_other_origin_and_logs_no_address_or_user_agent(
    site: Site, capfd: pytest.CaptureFixture[str]
) -> None:
    """Through the test client, announcing an address, a User-Agent and proxy headers."""
    source = FlaskBrowser(site.source.test_client())
    reviewer = FlaskBrowser(site.reviewer.test_client())
    case = FlaskBrowser(site.case.test_client())
    with every_logger_at_debug() as logged:
        pages = journey(source, reviewer, site.world, case)
        failed = reviewer.request("POST", "/login", {"username": "x"})  # a refusal, logged or not
        assert failed.status == 400
    assert_no_other_origin_or_script(pages)
    out, err = capfd.readouterr()
    lines = logged.lines + out.splitlines() + err.splitlines()
    assert any(" DEBUG " in line for line in logged.lines), "the capture caught nothing"
    assert_no_needle(lines, NEEDLES)


# --- the real server ----------------------------------------------------------------------

# Serves one interface as `dropbox run` does (launcher.serve.serve: gunicorn, its
# logger and its response class), with gunicorn's error log at debug and every
# Python logger of the worker at DEBUG, written to stderr.
CHILD = """
import logging, sys
from launcher import serve
from dropbox.config import load

config, interface = load(sys.argv[1]), sys.argv[2]
build = serve.app_factory(config, interface)

def factory():
    app = build()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("python %(name)s %(levelname)s %(message)s"))
    for name in ["", *logging.root.manager.loggerDict]:
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
        if name == "" or not logger.propagate:
            logger.addHandler(handler)
    return app

options = serve.gunicorn_options
serve.gunicorn_options = lambda c, i: {**options(c, i), "loglevel": "debug"}
serve.app_factory = lambda c, i: factory
serve.serve(config, interface)
"""


@dataclass
class Served:
    process: subprocess.Popen[str]
    port: int
    log: Path

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()


# The source interface and the case server (`dropbox run reviewer` serves it), by name.
SERVED = {"source": "source", "case": "reviewer"}


def write_config(instance: Instance, path: Path, source_port: int, reviewer_port: int) -> None:
    config = instance.config
    path.write_text(
        f"data_dir = {str(config.data_dir)!r}\n"
        f"database_url = {child_database_url(config.database_url)!r}\n"
        f"[source]\nport = {source_port}\nworkers = 1\n"
        f"[reviewer]\nport = {reviewer_port}\nworkers = 1\n"
        f"{CHEAP_CRYPTO_TOML}"
    )


def wait_until_serving(served: Served) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert served.process.poll() is None, served.lines()[-20:]
        try:
            connection = HTTPConnection("127.0.0.1", served.port, timeout=2)
            connection.request("GET", "/static/style.css")
            connection.getresponse().read()
            connection.close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the server did not start")


def child_database_url(url: str) -> str:
    """PostgreSQL through its socket: its 127.0.0.1 would be in the pool's debug lines,
    where the check below would take it for a client's address."""
    import tests.conftest

    server = tests.conftest._postgres
    if not url or server is None:
        return url
    socket_query = {"host": str(server.base), "port": str(server.port)}
    return (
        make_url(url)
        .set(host=None, port=None)
        .update_query_dict(socket_query)
        .render_as_string(hide_password=False)
    )


def stop(running: dict[str, Served]) -> None:
    """gunicorn's quick shutdown (SIGINT) for each server still running, and wait."""
    for served in running.values():
        if served.process.poll() is None:
            served.process.send_signal(signal.SIGINT)
    for served in running.values():
        try:
            served.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            served.process.kill()
            served.process.wait()


@pytest.fixture
def servers(instance: Instance, tmp_path: Path) -> Iterator[dict[str, Served]]:
    """Both interfaces starting for real over the instance (they boot while `site` is made),
    each process's whole output written to a file."""
    ports = {"source": free_port(), "case": free_port()}
    config = tmp_path / "config.toml"
    write_config(instance, config, ports["source"], ports["case"])
    running = {}
    try:
        for name, port in ports.items():
            log = tmp_path / f"{name}.log"
            with log.open("w") as output:
                process = subprocess.Popen(
                    [sys.executable, "-c", CHILD, str(config), SERVED[name]],
                    cwd=REPO,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            running[name] = Served(process, port, log)
        yield running
    finally:
        stop(running)


def send_garbage(port: int) -> bytes:
    """A request gunicorn cannot parse: it logs the refusal itself, before any app code."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"NOT AN HTTP REQUEST\r\n\r\n")
        return raw.recv(65536)


def test_real_server_sends_the_headers_and_logs_no_address_or_user_agent(
    servers: dict[str, Served], site: Site, tmp_path: Path
) -> None:
    """Source and case server under gunicorn, the reviewer app as `dropbox reviewer` talking
    to the case server over real HTTP: a whole journey, then every log line is searched."""
    for served in servers.values():
        wait_until_serving(served)
    pins = {o.code: o.fingerprint for o in site.world.instance.config.offices if o.fingerprint}
    case_url = f"http://127.0.0.1:{servers['case'].port}"
    with reviewing(tmp_path, case_url, pins) as app:
        source = HttpBrowser(servers["source"].port, "source")
        reviewer = HttpBrowser(app.port, "reviewer")
        case = HttpBrowser(servers["case"].port, "case")
        pages = journey(source, reviewer, site.world, case)
        reviewer_log = app.stop()
    for page in pages:
        # The reviewer app's Server header is checked last, so that the rest is checked first.
        what = ("served", page.by, page.method, page.path)
        assert_security_headers(page.headers, what, server=page.by == "reviewer")
    for served in servers.values():
        refusal = send_garbage(served.port)
        assert refusal.startswith(b"HTTP/1.1 400")
        # gunicorn answers this itself, before any Flask code: the headers are there too,
        # and nothing of the refused request is quoted back.
        head, _, body = refusal.partition(b"\r\n\r\n")
        fields = Headers(line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:])
        assert_security_headers(fields, ("gunicorn refusal", served.port))
        assert b"NOT AN HTTP" not in body and b"<" not in body
    stop(servers)
    lines = servers["source"].lines() + servers["case"].lines()
    # The capture works: gunicorn's debug lines and the workers' Python loggers are in it.
    assert any("Listening at" in line for line in lines), lines[:20]
    assert any(line.startswith("python ") and " DEBUG " in line for line in lines), lines[:20]
    assert any("Invalid request from" in line for line in lines), lines[-20:]
    # No control interface: gunicorn's control socket is off.
    assert not any("Control socket listening" in line for line in lines)
    # The case server saw the reviewer app's calls, all from 127.0.0.1: none is logged.
    assert_no_needle(lines, [*NEEDLES, "127.0.0.1"])
    # The reviewer app on the officer's machine, as it logs: no browser's headers either
    # (it prints its own loopback address to open, which is no visitor's).
    assert "Reviewer app: open" in reviewer_log, reviewer_log[-2000:]
    assert_no_needle(reviewer_log.splitlines(), NEEDLES)
    # Like the server's pages, the reviewer app's name no server software.
    for page in pages:
        assert "Server" not in page.headers, ("served", page.by, page.path, page.headers["Server"])
