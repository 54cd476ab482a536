"""Who may do what in the reviewer interface: one table, every route, every kind of caller.

Callers: nobody signed in; an OIO officer; an ECO officer; an administrator
who holds no office; an officer deactivated after signing in; an ECO officer
whose session expired. The report under test is a retaliation report, so it
belongs to ECO. Outcomes: "ok" (served, or done and redirected onwards),
"login" (sent to sign in), 403 (signed in, not allowed), 404 (not visible).
"""

from __future__ import annotations

from datetime import datetime

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from dropbox import officers
from dropbox.models import Item, Officer, OfficerSession, Report
from source_interface import create_app as create_source
from tests.reviewer_helpers import World, held_fingerprint, signed_in_client, source_report
from tests.source_helpers import csrf_token

ROLES = ["anonymous", "oio", "eco", "admin", "deactivated", "expired"]

# (method, path, form data, expected per role in ROLES order)
ROUTES: list[tuple[str, str, dict[str, str], list[object]]] = [
    ("GET", "/", {}, ["login", "ok", "ok", "ok", "login", "login"]),
    ("GET", "/reports/{rid}", {}, ["login", 404, "ok", 404, "login", "login"]),
    ("GET", "/reports/{rid}/files/{fid}", {}, ["login", 404, "ok", 404, "login", "login"]),
    (
        "POST",
        "/reports/{rid}/reply",
        {"message": "Hello"},
        ["login", 404, "ok", 404, "login", "login"],
    ),
    (
        "POST",
        "/reports/{rid}/notes",
        {"text": "A note"},
        ["login", 404, "ok", 404, "login", "login"],
    ),
    (
        "POST",
        "/reports/{rid}/assign",
        {"assignee_id": ""},
        ["login", 404, "ok", 404, "login", "login"],
    ),
    (
        "POST",
        "/reports/{rid}/status",
        {"status": "acknowledged"},
        ["login", 404, "ok", 404, "login", "login"],
    ),
    (
        "POST",
        "/reports/{rid}/identity",
        {"reason": "Needed for protection measures"},
        ["login", 404, "ok", 404, "login", "login"],
    ),
    (
        "POST",
        "/reports/{rid}/refer",
        {"office": "OIO"},
        ["login", 404, "ok", 404, "login", "login"],
    ),
    ("GET", "/reports/{rid}/delete", {}, ["login", 404, "ok", 404, "login", "login"]),
    (
        "POST",
        "/reports/{rid}/delete",
        {"confirm": "x"},
        ["login", 404, "ok", 404, "login", "login"],
    ),
    ("GET", "/account", {}, ["login", "ok", "ok", "ok", "login", "login"]),
    ("GET", "/admin/officers", {}, ["login", 403, 403, "ok", "login", "login"]),
    (
        "POST",
        "/admin/officers",
        {"username": "invited", "display_name": "Invited"},
        ["login", 403, 403, "ok", "login", "login"],
    ),
    (
        "POST",
        "/admin/officers/{eco2}/deactivate",
        {},
        ["login", 403, 403, "ok", "login", "login"],
    ),
    (
        "POST",
        "/admin/grants",
        {"officer_id": "{eco2}", "office": "ECO", "fingerprint": "{eco2_fingerprint}"},
        ["login", 403, 403, "ok", "login", "login"],
    ),
    ("GET", "/admin/audit", {}, ["login", 403, 403, "ok", "login", "login"]),
]

CASES = [
    pytest.param(method, path, data, role, expected[i], id=f"{method} {path} as {role}")
    for method, path, data, expected in ROUTES
    for i, role in enumerate(ROLES)
]


def caller(reviewer: Flask, world: World, role: str) -> FlaskClient:
    if role == "anonymous":
        return reviewer.test_client()
    if role == "deactivated":
        client = signed_in_client(reviewer, world, "gone")
        with world.instance.sessions.begin() as db:
            gone = db.get(Officer, world.people["gone"].id)
            assert gone is not None
            officers.deactivate(db, gone, "test")
        return client
    if role == "expired":
        client = signed_in_client(reviewer, world, "eco")
        with world.instance.sessions.begin() as db:
            db.execute(update(OfficerSession).values(expires_at=datetime(2000, 1, 1)))
        return client
    return signed_in_client(reviewer, world, role)


def outcome(response: object) -> object:
    status = response.status_code  # type: ignore[attr-defined]
    if status in (301, 302, 303):
        location = response.headers["Location"]  # type: ignore[attr-defined]
        return "login" if "/login" in location else "ok"
    return "ok" if status == 200 else status


@pytest.mark.parametrize(("method", "path", "data", "role", "expected"), CASES)
def test_access_matrix(
    reviewer: Flask,
    world: World,
    method: str,
    path: str,
    data: dict[str, str],
    role: str,
    expected: object,
) -> None:
    source = create_source(world.instance.config, world.instance)
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
    ids = {
        "rid": rid,
        "fid": fid,
        "eco2": str(world.people["eco2"].id),
        "eco2_fingerprint": held_fingerprint(world.instance, world.people["eco2"]),
    }
    url = path.format(**ids)
    form = {k: v.format(**ids) for k, v in data.items()}

    client = caller(reviewer, world, role)
    if method == "GET":
        response = client.get(url)
    else:
        token = csrf_token(client.get("/login").get_data(as_text=True))
        response = client.post(url, data={"csrf_token": token, **form})
    assert outcome(response) == expected
