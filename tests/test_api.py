"""The reviewer JSON API (/api/v1): tokens, the inbox, reports, files, replies, status, errors."""

from __future__ import annotations

import base64
import os
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate
from sqlalchemy import select, update
from werkzeug.test import TestResponse

from dropbox import casework, officers, sessions
from dropbox.instance import Instance
from dropbox.models import Item, Officer, OfficerSession, Report
from tests.reviewer_helpers import (
    World,
    audit_actions,
    chain_intact,
    fresh_code,
    signed_in_client,
    source_report,
)
from tests.source_helpers import login

MESSAGE = "My manager took my project away after I spoke to investigators in May."
FRAUD = "Someone is selling the fuel stock every Friday night at the depot."
API = "/api/v1"


@pytest.fixture
def client(reviewer: Flask) -> FlaskClient:
    return reviewer.test_client()


def request_token(client: FlaskClient, world: World, role: str, **changes: str) -> TestResponse:
    person = world.people[role]
    body = {
        "username": person.username,
        "passphrase": person.passphrase,
        "code": fresh_code(world.instance, person),
        **changes,
    }
    return client.post(f"{API}/token", json=body)


def token_for(client: FlaskClient, world: World, role: str) -> str:
    response = request_token(client, world, role)
    assert response.status_code == 200, response.get_data(as_text=True)
    token: str = response.json["token"]  # type: ignore[index]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_of(response: TestResponse, status: int) -> str:
    """Assert a JSON error with this status; return its message."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_data(as_text=True)
    assert "Traceback" not in body and "<html" not in body.lower()
    assert isinstance(response.json, dict) and isinstance(response.json["error"], str)
    message: str = response.json["error"]
    assert message
    return message


def ids_by_office(instance: Instance) -> dict[str, str]:
    with instance.sessions() as db:
        return dict(db.execute(select(Report.office_code, Report.id)).all())


def report_status(instance: Instance, rid: str) -> str:
    with instance.sessions() as db:
        found = db.get(Report, rid)
        assert found is not None
        return found.status


# --- tokens -------------------------------------------------------------------------


def test_token_is_issued_for_passphrase_and_fresh_code(client: FlaskClient, world: World) -> None:
    response = request_token(client, world, "eco")
    assert response.status_code == 200
    body = response.json
    assert body is not None and body["expires_in"] == 900 and body["token_type"] == "Bearer"
    assert "Set-Cookie" not in response.headers  # the API neither reads nor sets cookies
    assert response.headers["Cache-Control"] == "no-store"
    assert client.get(f"{API}/reports", headers=bearer(body["token"])).status_code == 200

    with world.instance.sessions() as db:
        row = db.execute(select(OfficerSession)).scalar_one()
        officer = db.get(Officer, world.people["eco"].id)
        assert officer is not None
        key = officers.unlock(
            officer, world.people["eco"].passphrase, world.instance.config.crypto.kdf_cost
        )
    assert row.officer_id == world.people["eco"].id
    lifetime = row.expires_at - row.last_seen_at
    assert timedelta(minutes=14) < lifetime <= timedelta(minutes=15)
    assert key is not None and bytes(key) not in row.state
    assert base64.b64encode(bytes(key)) not in row.state and b"secret_key" not in row.state
    assert audit_actions(world.instance).count("api.token") == 1
    assert chain_intact(world.instance)


def test_wrong_passphrase_or_code_is_refused_with_401(client: FlaskClient, world: World) -> None:
    wrong = request_token(client, world, "oio", passphrase="not the passphrase at all")
    assert "not right" in error_of(wrong, 401)
    assert wrong.headers["WWW-Authenticate"].startswith("Bearer")
    error_of(request_token(client, world, "oio", code="000000"), 401)
    error_of(request_token(client, world, "oio", username="nobody-here"), 401)
    error_of(request_token(client, world, "gone", passphrase="wrong passphrase here"), 401)
    assert "api.token" not in audit_actions(world.instance)
    with world.instance.sessions() as db:
        assert db.execute(select(OfficerSession)).first() is None


def test_five_failures_lock_the_account_with_retry_after(client: FlaskClient, world: World) -> None:
    statuses = [
        request_token(client, world, "oio", passphrase="wrong passphrase here").status_code
        for _ in range(5)
    ]
    assert statuses == [401, 401, 401, 401, 429]
    locked = request_token(client, world, "oio")  # right passphrase and code, still locked
    error_of(locked, 429)
    assert locked.json is not None
    until = datetime.fromisoformat(locked.json["retry_after"])
    assert until.tzinfo is not None
    assert datetime.now(UTC) < until <= datetime.now(UTC) + timedelta(minutes=1, seconds=1)
    assert 1 <= int(locked.headers["Retry-After"]) <= 60


def test_totp_code_is_not_accepted_twice(client: FlaskClient, world: World) -> None:
    person = world.people["eco"]
    body = {
        "username": person.username,
        "passphrase": person.passphrase,
        "code": fresh_code(world.instance, person),
    }
    assert client.post(f"{API}/token", json=body).status_code == 200
    error_of(client.post(f"{API}/token", json=body), 401)
    previous = pyotp.TOTP(person.totp_secret).at(datetime.now(UTC).timestamp() - 30)
    error_of(client.post(f"{API}/token", json={**body, "code": previous}), 401)


def test_missing_garbage_and_expired_tokens_are_refused(client: FlaskClient, world: World) -> None:
    path = f"{API}/reports"
    for headers in (
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic b2lvOnNlY3JldA=="},
        {"Authorization": "Bearer garbage"},
        {"Authorization": "Bearer ÿÿÿ"},
        bearer(base64.urlsafe_b64encode(os.urandom(64)).rstrip(b"=").decode()),
    ):
        response = client.get(path, headers=headers)
        error_of(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")

    token = token_for(client, world, "eco")
    assert client.get(path, headers=bearer(token)).status_code == 200
    # A token whose key part is altered opens nothing.
    raw = bytearray(base64.urlsafe_b64decode(token + "=="))
    raw[-1] ^= 1
    altered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    error_of(client.get(path, headers=bearer(altered)), 401)

    with world.instance.sessions.begin() as db:
        db.execute(update(OfficerSession).values(expires_at=datetime(2000, 1, 1)))
    assert "expired" in error_of(client.get(path, headers=bearer(token)), 401)
    with world.instance.sessions() as db:
        assert db.execute(select(OfficerSession)).first() is None  # the expired row is gone


def test_state_without_the_api_scope_is_not_a_token(client: FlaskClient, world: World) -> None:
    """A browser session's state (no scope marker) does not open the API."""
    person = world.people["eco"]
    with world.instance.sessions() as db:
        officer = db.get(Officer, person.id)
        assert officer is not None
        key = officers.unlock(officer, person.passphrase, world.instance.config.crypto.kdf_cost)
    assert key is not None
    state = {"officer_id": person.id, "secret_key": base64.b64encode(bytes(key)).decode()}
    cookie_like = sessions.issue_token(world.instance, person.id, state, timedelta(minutes=5))
    error_of(client.get(f"{API}/reports", headers=bearer(cookie_like)), 401)


def test_token_is_not_a_browser_session_cookie(reviewer: Flask, world: World) -> None:
    token = token_for(reviewer.test_client(), world, "eco_admin")
    browser = reviewer.test_client()
    browser.set_cookie("dropbox_reviewer", token)
    assert browser.get("/").status_code == 302  # sent to sign in, not let in


def test_api_requests_neither_read_nor_renew_the_browser_session(
    reviewer: Flask, world: World
) -> None:
    browser = signed_in_client(reviewer, world, "oio")
    token = token_for(reviewer.test_client(), world, "oio")

    def seen() -> list[datetime | None]:
        with world.instance.sessions() as db:
            return [row.last_seen_at for row in db.execute(select(OfficerSession)).scalars()]

    before = seen()
    for headers in ({}, bearer(token)):
        answer = browser.get(f"{API}/reports", headers=headers)
        assert answer.status_code == (200 if headers else 401)
        assert "Set-Cookie" not in answer.headers
    assert seen() == before  # the idle timer of the browser session did not move
    assert browser.get("/").status_code == 200  # and the browser is still signed in


def test_deactivated_officers_token_stops_working(client: FlaskClient, world: World) -> None:
    token = token_for(client, world, "gone")
    assert client.get(f"{API}/reports", headers=bearer(token)).status_code == 200
    with world.instance.sessions.begin() as db:
        officer = db.get(Officer, world.people["gone"].id)
        assert officer is not None
        officers.deactivate(db, officer, "test")
    error_of(client.get(f"{API}/reports", headers=bearer(token)), 401)
    error_of(request_token(client, world, "gone"), 401)


# --- inbox --------------------------------------------------------------------------


def test_list_shows_only_the_officers_office(
    client: FlaskClient, source: Flask, world: World
) -> None:
    source_report(source, "retaliation", MESSAGE, extra={"safety_risk": "yes"})
    source_report(source, "fraud", FRAUD)
    ids = ids_by_office(world.instance)
    eco = client.get(f"{API}/reports", headers=bearer(token_for(client, world, "eco"))).json
    oio = client.get(f"{API}/reports", headers=bearer(token_for(client, world, "oio"))).json
    assert eco is not None and oio is not None
    assert [r["id"] for r in eco["rows"]] == [ids["ECO"]]
    assert [r["id"] for r in oio["rows"]] == [ids["OIO"]]
    assert eco["total"] == 1 and eco["page"] == 1 and eco["pages"] == 1

    row = eco["rows"][0]
    assert row["office"] == "ECO" and row["category"] == "retaliation"
    assert row["status"] == "received" and row["urgent"] is True and row["acknowledged"] is False
    assert row["assignee"] is None and row["unread"] >= 1
    received = datetime.fromisoformat(row["received"]).date()
    assert datetime.fromisoformat(row["acknowledge_due"]).date() == received + timedelta(days=7)
    assert datetime.fromisoformat(row["feedback_due"]).date() > received
    assert datetime.fromisoformat(row["last_activity"]).tzinfo is not None
    assert MESSAGE not in str(eco)  # the inbox decrypts nothing

    # An office without a grant sees nothing, even with a token.
    admin = client.get(f"{API}/reports", headers=bearer(token_for(client, world, "admin"))).json
    assert admin is not None and admin["rows"] == [] and admin["total"] == 0


def test_list_filters_like_the_inbox_and_refuses_unknown_values(
    client: FlaskClient, source: Flask, world: World
) -> None:
    source_report(source, "fraud", FRAUD)
    headers = bearer(token_for(client, world, "oio"))

    def count(query: str) -> int:
        response = client.get(f"{API}/reports?{query}", headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.json is not None
        total: int = response.json["total"]
        return total

    assert count("status=received") == 1 and count("status=closed") == 0
    assert count("category=fraud") == 1 and count("category=harassment") == 0
    assert count("urgent=1") == 0 and count("urgent=false") == 1
    assert count("mine=true") == 0 and count("overdue=1") == 0
    assert count("sort=feedback_due&page=1") == 1 and count("page=9") == 1
    for bad in ("status=lost", "category=gossip", "sort=name", "page=0", "page=x", "urgent=maybe"):
        error_of(client.get(f"{API}/reports?{bad}", headers=headers), 400)


# --- reading ------------------------------------------------------------------------


def test_report_has_decrypted_message_and_files_but_never_identity(
    client: FlaskClient, source: Flask, world: World
) -> None:
    evidence = os.urandom(200_000)
    source_report(
        source,
        "retaliation",
        MESSAGE,
        [("proof.pdf", evidence)],
        extra={"identity_name": "Jamie Doe", "protected_activity": "Interviewed by OIO"},
    )
    rid = ids_by_office(world.instance)["ECO"]
    response = client.get(f"{API}/reports/{rid}", headers=bearer(token_for(client, world, "eco")))
    assert response.status_code == 200
    assert "Jamie Doe" not in response.get_data(as_text=True)
    body = response.json
    assert body is not None
    assert body["id"] == rid and body["office"] == "ECO" and body["handling"] is True
    assert "acknowledged" in body["next_statuses"]
    items = {item["kind"]: item for item in body["items"]}
    assert items["message"]["text"] == MESSAGE and items["message"]["from_source"] is True
    assert "Interviewed by OIO" in items["message"]["details"].values()
    assert items["file"]["file_name"] == "proof.pdf" and items["file"]["text"] is None
    assert items["file"]["size"] == len(evidence) and items["file"]["content_type"]
    assert items["identity"]["text"] is None and items["identity"]["details"] is None
    assert items["acknowledgement"]["text"] and items["acknowledgement"]["from_source"] is False
    assert not any(item["damaged"] for item in body["items"])
    assert audit_actions(world.instance).count("report.read") == 1  # recorded once, by casework
    assert "identity.reveal" not in audit_actions(world.instance)


def test_download_gives_the_original_bytes_as_an_attachment(
    client: FlaskClient, source: Flask, world: World
) -> None:
    evidence = os.urandom(300_000)
    source_report(source, "fraud", FRAUD, [("déclaration finale.pdf", evidence)])
    rid = ids_by_office(world.instance)["OIO"]
    with world.instance.sessions() as db:
        file_id = db.execute(select(Item.id).where(Item.kind == "file")).scalar_one()
        message_id = db.execute(select(Item.id).where(Item.kind == "message")).scalar_one()
    headers = bearer(token_for(client, world, "oio"))
    download = client.get(f"{API}/reports/{rid}/files/{file_id}", headers=headers)
    assert download.status_code == 200
    assert download.data == evidence
    assert download.headers["Content-Type"] == "application/octet-stream"
    assert download.headers["Content-Length"] == str(len(evidence))
    disposition = download.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="d?claration finale.pdf"')
    assert "filename*=UTF-8''d%C3%A9claration%20finale.pdf" in disposition
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    assert download.headers["Cache-Control"] == "no-store"
    assert audit_actions(world.instance).count("file.download") == 1

    error_of(client.get(f"{API}/reports/{rid}/files/{message_id}", headers=headers), 404)
    error_of(client.get(f"{API}/reports/{rid}/files/nothing", headers=headers), 404)
    assert audit_actions(world.instance).count("file.download") == 1
    assert chain_intact(world.instance)


def test_damaged_file_is_a_422_and_recorded(
    client: FlaskClient, source: Flask, world: World
) -> None:
    source_report(source, "fraud", FRAUD, [("a.txt", b"evidence " * 100)])
    rid = ids_by_office(world.instance)["OIO"]
    with world.instance.sessions.begin() as db:
        item = db.execute(select(Item).where(Item.kind == "file")).scalar_one()
        item.key_block = bytes(len(item.key_block))
        file_id = item.id
    headers = bearer(token_for(client, world, "oio"))
    error_of(client.get(f"{API}/reports/{rid}/files/{file_id}", headers=headers), 422)
    assert audit_actions(world.instance)[-1] == "item.damaged"
    body = client.get(f"{API}/reports/{rid}", headers=headers).json
    assert body is not None
    assert [i["damaged"] for i in body["items"] if i["kind"] == "file"] == [True]


# --- acting on a report ---------------------------------------------------------------


def test_reply_round_trips_to_the_returning_source(
    client: FlaskClient, source: Flask, world: World
) -> None:
    codename, _ = source_report(source, "retaliation", MESSAGE)
    rid = ids_by_office(world.instance)["ECO"]
    headers = bearer(token_for(client, world, "eco"))
    sent = client.post(
        f"{API}/reports/{rid}/replies", json={"message": "Are you safe now?"}, headers=headers
    )
    assert sent.status_code == 201, sent.get_data(as_text=True)
    assert sent.json is not None
    reply_id = sent.json["id"]
    with world.instance.sessions() as db:
        item = db.get(Item, reply_id)
        assert item is not None and item.kind == "reply" and item.report_id == rid

    returning = source.test_client()
    assert login(returning, codename).status_code == 302
    assert "Are you safe now?" in returning.get("/thread").get_data(as_text=True)

    body = client.get(f"{API}/reports/{rid}", headers=headers).json
    assert body is not None
    replies = [i for i in body["items"] if i["kind"] == "reply"]
    assert [(r["id"], r["text"], r["author"]) for r in replies] == [
        (reply_id, "Are you safe now?", "eco-officer")
    ]
    error_of(
        client.post(f"{API}/reports/{rid}/replies", json={"message": "  "}, headers=headers), 400
    )
    assert audit_actions(world.instance).count("report.reply") == 1
    assert chain_intact(world.instance)


def test_status_change_and_refused_transitions(
    client: FlaskClient, source: Flask, world: World
) -> None:
    source_report(source, "fraud", FRAUD)
    rid = ids_by_office(world.instance)["OIO"]
    headers = bearer(token_for(client, world, "oio"))
    path = f"{API}/reports/{rid}/status"

    changed = client.post(path, json={"status": "acknowledged"}, headers=headers)
    assert changed.status_code == 200
    assert changed.json == {"status": "acknowledged", "outcome": None}
    assert report_status(world.instance, rid) == "acknowledged"

    def refused(body: dict[str, Any]) -> str:
        return error_of(client.post(path, json=body, headers=headers), 400)

    assert "cannot become" in refused({"status": "reopened"})
    assert "cannot become" in refused({"status": "referred"})  # referral is its own action
    assert "reason" in refused({"status": "closed", "outcome": "substantiated"})
    assert "outcome" in refused({"status": "closed", "reason": "No outcome given."})
    assert "outcome" in refused({"status": "closed", "outcome": "lost", "reason": "Unknown."})
    assert "status" in refused({"outcome": "withdrawn"})
    assert "status" in refused({"status": 3})
    assert "outcome" in refused({"status": "closed", "outcome": 1, "reason": "Not text."})
    assert report_status(world.instance, rid) == "acknowledged"

    closed = client.post(
        path,
        json={"status": "closed", "outcome": "substantiated", "reason": "Evidence confirmed it."},
        headers=headers,
    )
    assert closed.json == {"status": "closed", "outcome": "substantiated"}
    body = client.get(f"{API}/reports/{rid}", headers=headers).json
    assert body is not None
    assert body["acknowledged"] is True and body["closed_at"] is not None
    assert [c["to_status"] for c in body["status_changes"]][-2:] == ["acknowledged", "closed"]
    assert body["status_changes"][-1]["officer"] == "oio-officer"
    assert body["next_statuses"] == ["reopened"]
    assert audit_actions(world.instance).count("report.status") == 2
    assert chain_intact(world.instance)


def test_another_offices_report_is_404_everywhere(
    client: FlaskClient, source: Flask, world: World
) -> None:
    source_report(source, "fraud", FRAUD, [("a.txt", b"evidence")])
    rid = ids_by_office(world.instance)["OIO"]
    with world.instance.sessions() as db:
        file_id = db.execute(select(Item.id).where(Item.kind == "file")).scalar_one()
    headers = bearer(token_for(client, world, "eco"))
    before = audit_actions(world.instance)
    not_found = error_of(client.get(f"{API}/reports/{rid}", headers=headers), 404)
    assert error_of(client.get(f"{API}/reports/{'0' * 32}", headers=headers), 404) == not_found
    error_of(client.get(f"{API}/reports/{rid}/files/{file_id}", headers=headers), 404)
    error_of(
        client.post(f"{API}/reports/{rid}/replies", json={"message": "hi"}, headers=headers), 404
    )
    error_of(
        client.post(f"{API}/reports/{rid}/status", json={"status": "closed"}, headers=headers), 404
    )
    assert audit_actions(world.instance) == before  # nothing was read or changed
    assert report_status(world.instance, rid) == "received"


def test_kept_copy_is_read_only(client: FlaskClient, source: Flask, world: World) -> None:
    source_report(source, "harassment", MESSAGE)
    rid = ids_by_office(world.instance)["OIO"]
    with world.instance.sessions.begin() as db:
        officer = db.get(Officer, world.people["oio"].id)
        report = db.get(Report, rid)
        assert officer is not None and report is not None
        key = world.office_keys["OIO"]
        casework.refer(world.instance, db, officer, key, report, "ECO", keep_copy=True)
    oio = bearer(token_for(client, world, "oio"))
    copy = client.get(f"{API}/reports/{rid}", headers=oio)
    assert copy.status_code == 200 and copy.json is not None
    assert copy.json["handling"] is False and copy.json["next_statuses"] == []
    assert MESSAGE in [i["text"] for i in copy.json["items"]]
    listed = client.get(f"{API}/reports", headers=oio).json
    assert listed is not None and [r["id"] for r in listed["rows"]] == [rid]

    error_of(client.post(f"{API}/reports/{rid}/replies", json={"message": "hi"}, headers=oio), 403)
    error_of(
        client.post(f"{API}/reports/{rid}/status", json={"status": "closed"}, headers=oio), 403
    )
    eco = bearer(token_for(client, world, "eco"))
    sent = client.post(f"{API}/reports/{rid}/replies", json={"message": "ECO here"}, headers=eco)
    assert sent.status_code == 201
    assert report_status(world.instance, rid) == "referred"


# --- errors -------------------------------------------------------------------------


def test_errors_under_api_are_json_without_traces(
    client: FlaskClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = token_for(client, world, "oio")
    error_of(client.get(f"{API}/nothing-here"), 404)
    error_of(client.get("/api/v2/reports"), 404)
    error_of(client.get(f"{API}/token"), 405)
    error_of(client.delete(f"{API}/reports", headers=bearer(token)), 405)
    error_of(client.put(f"{API}/reports/x/status", headers=bearer(token)), 405)

    token_path = f"{API}/token"
    error_of(client.post(token_path, data="{not json", content_type="application/json"), 400)
    error_of(client.post(token_path, data="username=a", content_type="text/plain"), 400)
    error_of(client.post(token_path, json=["a", "list"]), 400)
    error_of(client.post(token_path, json={"username": "oio-officer"}), 400)
    error_of(client.post(token_path, json={"username": 1, "passphrase": "x", "code": "1"}), 400)
    error_of(
        client.post(
            f"{API}/reports/x/replies",
            data="{",
            content_type="application/json",
            headers=bearer(token),
        ),
        400,
    )
    error_of(
        client.post(token_path, data=b"x" * (5 * 1024 * 1024), content_type="application/json"), 413
    )

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug, with secret details")

    monkeypatch.setattr("dropbox.inbox.list_reports", broken)
    failed = client.get(f"{API}/reports", headers=bearer(token))
    assert "secret details" not in error_of(failed, 500)


def test_token_requests_are_rate_limited_with_json(client: FlaskClient) -> None:
    statuses = [client.post(f"{API}/token", json={}).status_code for _ in range(60)]
    assert set(statuses) == {400}
    error_of(client.post(f"{API}/token", json={}), 429)


# --- the OpenAPI document -----------------------------------------------------------


def api_routes(app: Flask) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(API):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            routes.add((path, method.lower()))
    return routes


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    return {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in methods
    }


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"unresolved $ref {ref}"
        node = node[part]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def test_openapi_document_matches_the_routes(client: FlaskClient, reviewer: Flask) -> None:
    response = client.get(f"{API}/openapi.json")  # no token needed
    assert response.status_code == 200 and response.mimetype == "application/json"
    document = response.json
    assert isinstance(document, dict)

    routes = api_routes(reviewer)
    assert len(routes) == 7
    assert routes - documented(document) == set(), "routes missing from the document"
    assert documented(document) - routes == set(), "documented operations that do not exist"

    validate(document)  # the OpenAPI 3.0 schema, and every $ref
    assert document["openapi"] == "3.0.3"
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    assert document["security"] == [{"bearerAuth": []}]
    for ref in refs(document):
        resolve(document, ref)
    for path, method in documented(document):
        item = document["paths"][path]
        operation = item[method]
        assert operation["responses"], (path, method)
        assert operation.get("operationId"), (path, method)
        declared = {
            p["name"]
            for p in [*item.get("parameters", []), *operation.get("parameters", [])]
            for p in [resolve(document, p["$ref"]) if "$ref" in p else p]
            if p["in"] == "path"
        }
        assert declared == set(re.findall(r"{(\w+)}", path)), (path, method)
        open_route = path in (f"{API}/token", f"{API}/openapi.json")
        assert (operation.get("security") == []) is open_route, (path, method)
        if not open_route:
            assert "401" in operation["responses"], (path, method)
