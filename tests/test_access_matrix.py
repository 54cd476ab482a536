"""Who may do what: every page of the reviewer app, and every case-server route, by caller.

Two tables.

Pages (the reviewer app, the officer's machine, over the real case server in
this process). Callers: nobody signed in; an OIO officer; an ECO officer; an
administrator who holds no office; an ECO officer deactivated after signing
in; an ECO officer whose sign-in expired (idle in the reviewer app). The
report under test is a retaliation report, so it belongs to ECO. Outcomes:
"ok" (served, or done or refused for its content and redirected onwards),
"login" (sent to sign in), 403 (signed in, not allowed), 404 (not visible).

Case-server routes (/api/v2, bearer tokens). tests/test_case_server_reports.py
already has the matrix of the report routes (handling office, kept copy,
other office, administrator without office, no token, deactivated); the
table here covers every other route: sign-in, enrolment, the officer's own
account, sign-out and administration. `test_every_case_server_route_is_in_a_matrix`
keeps the two together equal to the routes the case server serves.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from nacl.public import PrivateKey
from sqlalchemy import select

from crypto.keys import seal_secret_key
from dropbox import officers
from dropbox.instance import Instance
from dropbox.models import AuditEvent, Item, OfficeGrant, Officer, Report
from journalist_interface.client import b64
from journalist_interface.vault import Vault
from tests.case_helpers import CaseWorld, make_case_world
from tests.conftest import world_extra
from tests.reviewer_helpers import (
    PASSPHRASE,
    World,
    held_fingerprint,
    next_code,
    signed_in_client,
    source_report,
    wrong_code,
)
from tests.signin_helpers import Codes
from tests.source_helpers import csrf_token

# --- the reviewer app's pages -------------------------------------------------------------

ROLES = ["anonymous", "oio", "eco", "admin", "deactivated", "expired"]

# Pages that answer from what the reviewer app holds in memory, without asking the
# case server: a deactivated officer's app learns of it at its next call to the
# server (which refuses every call: then the keys are forgotten and the officer is
# sent to sign in). These pages only start a TOTP re-enrolment, which the server
# must still confirm. (The account page itself asks the server for the account.)
LOCAL: list[object] = ["login", "ok", "ok", "ok", "ok", "login"]
SIGNED_IN: list[object] = ["login", "ok", "ok", "ok", "login", "login"]
REPORT: list[object] = ["login", 404, "ok", 404, "login", "login"]
REFUSED_FORM: list[object] = ["login", 404, 400, 404, "login", "login"]
# A deactivated officer who was no administrator is refused by the app before
# any call; the case server would refuse them too (tested below).
ADMIN: list[object] = ["login", 403, 403, "ok", 403, "login"]
PUBLIC: list[object] = ["ok"] * 6

# (method, path, form data, expected per role in ROLES order). In form data,
# "{code}" is a fresh code of the caller's authenticator, "{wrong}" a wrong one.
PAGES: list[tuple[str, str, dict[str, str], list[object]]] = [
    ("GET", "/", {}, SIGNED_IN),
    ("GET", "/?status=new&sort=activity&page=2", {}, SIGNED_IN),
    ("GET", "/reports/{rid}", {}, REPORT),
    ("GET", "/reports/{rid}/files/{fid}", {}, REPORT),
    ("GET", "/reports/{rid}/files/{fid}/cleaned", {}, REPORT),
    ("GET", "/reports/{rid}/export", {}, REPORT),
    # Refused for its content (no key) with the form shown again: 400, nothing exported.
    ("POST", "/reports/{rid}/export/key", {"key": "not a key"}, REFUSED_FORM),
    ("POST", "/reports/{rid}/export", {"key": "x", "fingerprint": "0" * 40}, REFUSED_FORM),
    ("POST", "/reports/{rid}/reply", {"message": "Hello"}, REPORT),
    ("POST", "/reports/{rid}/notes", {"text": "A note"}, REPORT),
    ("POST", "/reports/{rid}/assign", {"assignee_id": ""}, REPORT),
    ("POST", "/reports/{rid}/status", {"status": "acknowledged"}, REPORT),
    ("POST", "/reports/{rid}/identity", {"reason": "Needed for protection measures"}, REPORT),
    ("POST", "/reports/{rid}/refer", {"office": "OIO"}, REPORT),
    ("GET", "/reports/{rid}/delete", {}, REPORT),
    ("POST", "/reports/{rid}/delete", {"confirm": "x"}, REPORT),
    ("GET", "/account", {}, SIGNED_IN),
    (
        "POST",
        "/account/passphrase",
        {
            "current_passphrase": PASSPHRASE,
            "new_passphrase": "a new passphrase for the matrix",
            "confirm_passphrase": "a new passphrase for the matrix",
            "code": "{wrong}",
        },
        SIGNED_IN,
    ),
    ("POST", "/account/totp", {"current_passphrase": PASSPHRASE}, LOCAL),
    # Every officer here has an X-Wing key: the app says so without asking the server.
    ("POST", "/account/key", {"current_passphrase": PASSPHRASE, "code": "{wrong}"}, LOCAL),
    ("POST", "/account/totp/confirm", {"code": "123456"}, LOCAL),
    ("GET", "/account/notifications", {}, SIGNED_IN),
    ("POST", "/account/notifications", {"email": "me@example.org", "mode": "digest"}, SIGNED_IN),
    ("GET", "/admin/officers", {}, ADMIN),
    (
        "POST",
        "/admin/officers",
        {"username": "invited", "display_name": "Invited", "code": "{code}"},
        ADMIN,
    ),
    ("POST", "/admin/officers/{eco2}/invite", {"code": "{code}"}, ADMIN),
    ("POST", "/admin/officers/{eco2}/deactivate", {"code": "{code}"}, ADMIN),
    (
        "POST",
        "/admin/grants",
        {
            "officer_id": "{eco2}",
            "office": "ECO",
            "fingerprint": "{eco2_fingerprint}",
            "code": "{code}",
        },
        ADMIN,
    ),
    ("GET", "/admin/audit", {}, ADMIN),
    ("GET", "/admin/notifications", {}, ADMIN),
    # Statistics: any officer, of their own offices; all of them for administrators only.
    ("GET", "/statistics", {}, SIGNED_IN),
    ("GET", "/statistics?office=all", {}, ["login", 400, 400, "ok", "login", "login"]),
    ("GET", "/statistics?office=OIO", {}, ["login", "ok", 400, "ok", "login", "login"]),
    ("GET", "/statistics.csv", {}, SIGNED_IN),
    ("GET", "/login", {}, PUBLIC),
    (
        "POST",
        "/login",
        {"username": "eco-officer", "passphrase": "not the passphrase", "code": "{wrong}"},
        [400, 400, 400, 400, 400, 400],
    ),
    ("GET", "/enrol", {}, PUBLIC),
    ("GET", "/robots.txt", {}, PUBLIC),
    ("GET", "/favicon.ico", {}, [204] * 6),
    (
        "POST",
        "/enrol",
        {
            "username": "eco-officer",
            "code": "not-a-code-at-all",
            "passphrase": "a passphrase for the matrix",
            "confirm_passphrase": "a passphrase for the matrix",
        },
        [400, 400, 400, 400, 400, 400],
    ),
    ("POST", "/enrol/confirm", {"code": "123456"}, PUBLIC),
    ("POST", "/logout", {}, ["login", "login", "login", "login", "login", "login"]),
]

# Who the caller of each role is (the officer whose codes fill the form).
PERSON = {"oio": "oio", "eco": "eco", "admin": "admin", "deactivated": "gone", "expired": "eco"}

PAGE_CASES = [
    pytest.param(method, path, data, role, expected[i], id=f"{method} {path} as {role}")
    for method, path, data, expected in PAGES
    for i, role in enumerate(ROLES)
]


def caller(reviewer: Flask, world: World, role: str) -> FlaskClient:
    if role == "anonymous":
        return reviewer.test_client()
    client = signed_in_client(reviewer, world, PERSON[role])
    if role == "deactivated":
        with world.instance.sessions.begin() as db:
            gone = db.get(Officer, world.people["gone"].id)
            assert gone is not None
            officers.deactivate(db, gone, "test")
    if role == "expired":
        vault: Vault = reviewer.extensions["reviewer.vault"]
        later = datetime.now(UTC) + timedelta(minutes=vault.idle.total_seconds() / 60 + 1)
        vault.clock = lambda: later
    return client


def outcome(response: Any) -> object:
    status = response.status_code
    if status in (301, 302, 303):
        location = response.headers["Location"]
        return "login" if re.search(r"^(https?://[^/]+)?/login\b", location) else "ok"
    return "ok" if status == 200 else status


def retaliation_report(world: World) -> tuple[str, str]:
    """An ECO report with a file and identity details; its id and its file's id."""
    from source_interface import create_app as create_source

    source = create_source(world.instance.config, world.instance)
    source.config["TESTING"] = True
    source_report(
        source,
        "retaliation",
        "They moved me to another duty station after I testified.",
        [("a.txt", b"evidence")],
        extra={"identity_name": "J. Doe"},
    )
    with world.instance.sessions() as db:
        rid = db.execute(select(Report.id)).scalar_one()
        fid = db.execute(select(Item.id).where(Item.kind == "file")).scalar_one()
    return rid, fid


# Each page case starts from a copy of a world prepared once with this report in it.
WORLD_EXTRAS = {"eco_report": retaliation_report}


@pytest.fixture
def eco_report(request: pytest.FixtureRequest, world: World) -> tuple[str, str]:
    """The retaliation report of `retaliation_report` in this test's world: its id, its file's."""
    ids: tuple[str, str] = world_extra(request, world)
    return ids


@pytest.mark.parametrize(("method", "path", "data", "role", "expected"), PAGE_CASES)
def test_page_access_matrix(
    reviewer: Flask,
    world: World,
    eco_report: tuple[str, str],
    method: str,
    path: str,
    data: dict[str, str],
    role: str,
    expected: object,
) -> None:
    rid, fid = eco_report
    client = caller(reviewer, world, role)
    person = world.people[PERSON.get(role, "eco")]
    ids = {
        "rid": rid,
        "fid": fid,
        "eco2": str(world.people["eco2"].id),
        "eco2_fingerprint": held_fingerprint(world.instance, world.people["eco2"]),
        "code": next_code(person),
        "wrong": wrong_code(person),
    }
    url = path.format(**ids)
    form = {k: v.format(**ids) for k, v in data.items()}
    if method == "GET":
        response = client.get(url)
    else:
        token = csrf_token(client.get("/login").get_data(as_text=True))
        response = client.post(url, data={"csrf_token": token, **form})
    assert outcome(response) == expected, response.get_data(as_text=True)[:2000]
    # Whoever may not see the report: nothing of it is on the page they get.
    if expected in (404, 403, "login"):
        page = response.get_data(as_text=True)
        assert "duty station" not in page and "J. Doe" not in page


def test_every_page_of_the_reviewer_app_is_in_the_matrix(reviewer: Flask) -> None:
    listed = set()
    for method, path, _, _ in PAGES:
        adapter = reviewer.url_map.bind("127.0.0.1:8081")
        endpoint, _ = adapter.match(path.split("?")[0].format(rid="r", fid="f", eco2="1"), method)
        listed.add((method, endpoint))
    served = {
        (method, rule.endpoint)
        for rule in reviewer.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    assert served == listed


def test_pages_that_are_refused_record_nothing_on_the_case_server(
    reviewer: Flask, world: World
) -> None:
    """An officer of another office or an administrator without one leaves no report event."""
    rid, fid = retaliation_report(world)
    before = report_events(world.instance, rid)
    for role in ("oio", "admin"):
        client = caller(reviewer, world, role)
        assert client.get(f"/reports/{rid}").status_code == 404
        assert client.get(f"/reports/{rid}/files/{fid}").status_code == 404
    assert report_events(world.instance, rid) == before
    eco = caller(reviewer, world, "eco")
    assert eco.get(f"/reports/{rid}/files/{fid}").status_code == 200
    # The download fetches the report (recorded as read) and its file (a download).
    assert report_events(world.instance, rid)[len(before) :] == [
        ("eco-officer", "report.read"),
        ("eco-officer", "file.download"),
    ]


def report_events(instance: Instance, report_id: str) -> list[tuple[str, str]]:
    with instance.sessions() as db:
        rows = db.execute(
            select(AuditEvent.actor, AuditEvent.action)
            .where(AuditEvent.report_id == report_id)
            .order_by(AuditEvent.id)
        )
        return [(row.actor, row.action) for row in rows]


# --- the case server's routes other than the report routes --------------------------------

# Covered by tests/test_case_server_reports.py::test_access_matrix (and the inbox by its
# first request there).
REPORT_ROUTES = {
    ("GET", "/api/v2/reports"),
    ("GET", "/api/v2/reports/{report_id}"),
    ("GET", "/api/v2/reports/{report_id}/items/{item_id}/body"),
    ("POST", "/api/v2/reports/{report_id}/items"),
    ("POST", "/api/v2/reports/{report_id}/reveal"),
    ("POST", "/api/v2/reports/{report_id}/assign"),
    ("POST", "/api/v2/reports/{report_id}/status"),
    ("POST", "/api/v2/reports/{report_id}/refer"),
    ("POST", "/api/v2/reports/{report_id}/events"),
    ("GET", "/api/v2/reports/{report_id}/events"),
    ("POST", "/api/v2/reports/{report_id}/delete"),
}

API_ROLES = ["no token", "officer", "admin", "deactivated"]
TOKEN_OF = {"no token": None, "officer": "eco", "admin": "admin", "deactivated": "gone"}

OWN = [401, 200, 200, 401]  # the caller's own account: any active officer
REFUSED_CONTENT = [401, 400, 400, 401]  # any active officer reaches it; the content is wrong
ADMIN_ONLY = [401, 403, 200, 401]
ANYONE_200 = [200] * 4  # needs no token: the same answer with any

ONLY_ADMINISTRATORS = "only administrators may do this"
FORBIDDEN = {"/api/v2/statistics": "you may see the statistics of your own offices only"}

FAKE_KEY = b64(bytes(32))
FAKE_WRAP = b64(bytes(officers.WRAPPED_KEY_BYTES))

# (method, route, concrete path, JSON body, expected per role in API_ROLES order). In
# bodies, "{code}" is a fresh code of the caller's authenticator. The requests run in
# this order within one test, the sign-out last (it ends the token).
API: list[tuple[str, str, str, dict[str, Any] | None, list[int]]] = [
    ("GET", "/api/v2/openapi.json", "/openapi.json", None, ANYONE_200),
    (
        "POST",
        "/api/v2/signin/params",
        "/signin/params",
        {"username": "eco-officer"},
        ANYONE_200,
    ),
    (
        "POST",
        "/api/v2/signin",
        "/signin",
        {"username": "eco-officer", "auth_key": FAKE_KEY, "code": "123456"},
        [401] * 4,  # a wrong auth key, whoever sends it
    ),
    (
        "POST",
        "/api/v2/enrol/check",
        "/enrol/check",
        {"username": "eco-officer", "code": "not-a-code-at-all"},
        [400] * 4,
    ),
    (
        "POST",
        "/api/v2/enrol",
        "/enrol",
        {
            "username": "eco-officer",
            "enrolment_code": "not-a-code-at-all",
            "auth_key": FAKE_KEY,
            "public_key": FAKE_KEY,
            "wrapped_secret_key": FAKE_WRAP,
            "totp_secret": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
            "totp_code": "123456",
        },
        [400] * 4,
    ),
    ("GET", "/api/v2/me", "/me", None, OWN),
    (
        "POST",
        "/api/v2/account/passphrase",
        "/account/passphrase",
        {
            "auth_key": FAKE_KEY,
            "code": "{code}",
            "new_auth_key": FAKE_KEY,
            "new_wrapped_secret_key": FAKE_WRAP,
        },
        REFUSED_CONTENT,
    ),
    (
        "POST",
        "/api/v2/account/key",
        "/account/key",
        {
            "auth_key": FAKE_KEY,
            "code": "{code}",
            "new_auth_key": FAKE_KEY,
            "public_key": FAKE_KEY,
            "wrapped_secret_key": FAKE_WRAP,
            "grants": [],
        },
        REFUSED_CONTENT,
    ),
    (
        "POST",
        "/api/v2/account/totp",
        "/account/totp",
        {"auth_key": FAKE_KEY, "secret": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "code": "123456"},
        REFUSED_CONTENT,
    ),
    ("GET", "/api/v2/officers", "/officers", None, ADMIN_ONLY),
    (
        "POST",
        "/api/v2/officers",
        "/officers",
        {"username": "matrix-invitee", "display_name": "", "is_admin": False, "code": "{code}"},
        ADMIN_ONLY,
    ),
    (
        "POST",
        "/api/v2/officers/{officer_id}/grants",
        "/officers/{eco}/grants",
        {"office": "ECO", "sealed_office_key": "{sealed}", "code": "{code}"},
        ADMIN_ONLY,
    ),
    (
        "POST",
        "/api/v2/officers/{officer_id}/invite",
        "/officers/{eco2}/invite",
        {"code": "{code}"},
        ADMIN_ONLY,
    ),
    (
        "POST",
        "/api/v2/officers/{officer_id}/deactivate",
        "/officers/{oio}/deactivate",
        {"code": "{code}"},
        ADMIN_ONLY,
    ),
    (
        "POST",
        "/api/v2/events",
        "/events",
        {"action": "key.mismatch", "detail": "office key: the matrix's test"},
        [401, 201, 201, 401],  # what an officer's machine found outside any report
    ),
    ("GET", "/api/v2/account/notifications", "/account/notifications", None, OWN),
    (
        "POST",
        "/api/v2/account/notifications",
        "/account/notifications",
        {"email": "me@example.org", "mode": "immediate"},
        OWN,
    ),
    ("GET", "/api/v2/notifications/failures", "/notifications/failures", None, ADMIN_ONLY),
    ("GET", "/api/v2/audit", "/audit", None, ADMIN_ONLY),
    ("GET", "/api/v2/statistics", "/statistics", None, OWN),
    ("GET", "/api/v2/statistics", "/statistics?office=all", None, ADMIN_ONLY),
    ("GET", "/api/v2/statistics", "/statistics?office=OIO", None, ADMIN_ONLY),
    ("POST", "/api/v2/audit/verify", "/audit/verify", None, ADMIN_ONLY),
    ("POST", "/api/v2/signout", "/signout", None, [401, 204, 204, 401]),
]


@pytest.fixture
def case_world(instance: Instance, office_keys: dict[str, PrivateKey]) -> Iterator[CaseWorld]:
    world = make_case_world(instance, office_keys)
    yield world
    world.close()


def _filled(value: Any, fill: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**fill) if "{" in value else value
    if isinstance(value, dict):
        return {k: _filled(v, fill) for k, v in value.items()}
    return value


def audit_count(instance: Instance) -> int:
    with instance.sessions() as db:
        return len(list(db.execute(select(AuditEvent.id)).scalars()))


@pytest.mark.parametrize("role", API_ROLES)
def test_case_server_access_matrix(case_world: CaseWorld, role: str) -> None:
    holder = TOKEN_OF[role]
    person = case_world.people[holder] if holder else None
    codes = Codes(case_world.instance, person.id, person.totp_secret) if person else None
    ids = {r: str(case_world.people[r].id) for r in ("eco", "eco2", "oio")}
    sealed = seal_secret_key(case_world.office_keys["ECO"], case_world.office_public("ECO"))
    counted_before = audit_count(case_world.instance)
    with case_world.http(holder) as http:
        for method, route, path, body, expected in API:
            fill = {"code": codes.next() if codes else "123456", "sealed": b64(sealed)}
            response = http.request(method, path.format(**ids), json=_filled(body, fill))
            want = expected[API_ROLES.index(role)]
            assert response.status_code == want, (role, route, response.text[:500])
            if response.status_code != 204:
                assert response.headers["Content-Type"].startswith("application/json")
            if response.status_code == 401 and route != "/api/v2/signin":
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
            if response.status_code == 403:
                assert response.json() == {"error": FORBIDDEN.get(route, ONLY_ADMINISTRATORS)}
    if role in ("no token", "deactivated"):
        # Refused without a token that works: no officer's action was recorded (the
        # failed sign-in with a wrong auth key is the only event, as for anyone).
        with case_world.instance.sessions() as db:
            actions = list(
                db.execute(
                    select(AuditEvent.action)
                    .where(AuditEvent.id > counted_before)
                    .order_by(AuditEvent.id)
                ).scalars()
            )
        assert actions == ["officer.sign_in_failed"], actions


def test_a_non_administrator_changes_nothing_through_the_admin_routes(
    case_world: CaseWorld,
) -> None:
    """403 before anything is done: the invitee, the deactivation and the grant do not happen."""
    eco = case_world.people["eco"]
    codes = Codes(case_world.instance, eco.id, eco.totp_secret)
    sealed = seal_secret_key(case_world.office_keys["ECO"], case_world.office_public("ECO"))
    with case_world.instance.sessions() as db:
        grant_before = db.execute(
            select(OfficeGrant.sealed_office_key).where(
                OfficeGrant.officer_id == case_world.people["eco2"].id
            )
        ).scalar_one()
    with case_world.http("eco") as http:
        assert (
            http.post("/officers", json={"username": "sneaky", "code": codes.next()}).status_code
            == 403
        )
        oio = case_world.people["oio"].id
        eco2 = case_world.people["eco2"].id
        assert (
            http.post(f"/officers/{oio}/deactivate", json={"code": codes.next()}).status_code == 403
        )
        assert http.post(f"/officers/{eco2}/invite", json={"code": codes.next()}).status_code == 403
        body = {"office": "ECO", "sealed_office_key": b64(sealed), "code": codes.next()}
        assert http.post(f"/officers/{eco2}/grants", json=body).status_code == 403
    with case_world.instance.sessions() as db:
        assert db.execute(select(Officer).where(Officer.username == "sneaky")).first() is None
        oio_row = db.get(Officer, case_world.people["oio"].id)
        eco2_row = db.get(Officer, case_world.people["eco2"].id)
        assert oio_row is not None and oio_row.active
        assert eco2_row is not None and officers.enrolled(eco2_row)
        grant_after = db.execute(
            select(OfficeGrant.sealed_office_key).where(
                OfficeGrant.officer_id == case_world.people["eco2"].id
            )
        ).scalar_one()
    assert grant_after == grant_before


def test_every_case_server_route_is_in_a_matrix(case_world: CaseWorld) -> None:
    served = set()
    for rule in case_world.app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v2/"):
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        served |= {(m, path) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    listed = {(method, route) for method, route, *_ in API}
    assert not listed & REPORT_ROUTES
    assert served == listed | REPORT_ROUTES
