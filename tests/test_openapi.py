"""The case server's OpenAPI document is made from the definitions the API reads and writes with.

Every body is a definition in dropbox/api_schema.py; case_server/openapi.py
builds the document from their type hints and from the app's URL map, and the
reviewer app's client reads and writes with the same definitions. These tests
hold the ends together: the document describes exactly the routes the app
serves; the real answers (and the reviewer app's real requests) of a whole
journey through the API match it; a field added to a definition shows in the
document with no other edit; and the client keeps no copy of a definition.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import secrets
import subprocess
import sys
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import pyotp
import pytest
from flask import Flask
from nacl.public import PrivateKey
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from openapi_spec_validator import validate as validate_document

from case_server.openapi import OPERATIONS, Operation, Schemas, build_document, known_rules
from crypto import envelope
from crypto.kdf import SALT_BYTES
from crypto.keys import (
    auth_key_verifier,
    derive_officer_keys,
    generate_hybrid_key,
    generate_keypair,
    public_key_from_bytes,
    seal_secret_key,
    wrap_with_wrapping_key,
)
from dropbox import api_schema as schema
from dropbox import inbox, officers
from dropbox.api_schema import Doc, Known, Malformed
from dropbox.instance import Instance
from dropbox.models import ItemKind
from journalist_interface import client
from journalist_interface.client import ApiError, CaseServerClient, InboxQuery
from tests.case_helpers import BASE_URL, PASSPHRASE, CaseWorld, make_case_world, seal, submit
from tests.conftest import CHEAP_COST
from tests.signin_helpers import Codes, derive, sign_in

API = "/api/v2"
ROOT = Path(__file__).resolve().parent.parent
VARIABLE = re.compile(r"<(?:[^:<>]+:)?([a-z_]+)>")


@pytest.fixture
def world(instance: Instance, office_keys: dict[str, PrivateKey]) -> Iterator[CaseWorld]:
    made = make_case_world(instance, office_keys)
    yield made
    made.close()


def served_document(app: Flask) -> dict[str, Any]:
    answer = app.test_client().get(f"{API}/openapi.json")
    assert answer.status_code == 200
    document = answer.json
    assert isinstance(document, dict)
    return document


# --- (a) the document and the routes -------------------------------------------------------


def test_the_served_document_is_valid_openapi_and_names_every_route_the_app_serves(
    world: CaseWorld,
) -> None:
    document = served_document(world.app)
    validate_document(document)
    assert document["openapi"].startswith("3.")
    described = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    }
    served = {
        (method, VARIABLE.sub(r"{\1}", rule.rule))
        for rule in world.app.url_map.iter_rules()
        if rule.rule.startswith(f"{API}/")
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    assert described == served
    assert ("POST", f"{API}/reports/{{report_id}}/refer") in served


def test_a_route_without_a_description_stops_the_document_from_being_built(
    world: CaseWorld,
) -> None:
    app = Flask(__name__)
    for rule in world.app.url_map.iter_rules():
        if rule.rule.startswith(f"{API}/"):
            app.add_url_rule(
                rule.rule,
                rule.endpoint,
                world.app.view_functions[rule.endpoint],
                methods=list(rule.methods or ()),
            )
    known = known_rules(world.instance.config)
    assert build_document(app, OPERATIONS, known)["paths"]

    @app.get(f"{API}/reports/<report_id>/summary")
    def summary(report_id: str) -> dict[str, Any]:
        """A route nobody described."""
        return {}

    with pytest.raises(LookupError, match="has no entry in OPERATIONS"):
        build_document(app, OPERATIONS, known)
    # And an entry left behind by a route that is gone.
    stale = {**OPERATIONS, "summary": Operation(schema.Ok), "reports.gone": Operation(schema.Ok)}
    with pytest.raises(LookupError, match=r"reports\.gone"):
        build_document(app, stale, known)


# --- (b) real answers match the document ------------------------------------------------------


@dataclass
class Exchange:
    """One request through the reviewer app's client and the case server's answer."""

    method: str
    path: str
    sent: Any
    status: int
    content_type: str
    answer: bytes


class Recording(httpx.WSGITransport):
    """The real case server in this process; every exchange is kept."""

    def __init__(self, app: Flask, into: list[Exchange]) -> None:
        super().__init__(app=app)
        self.into = into

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        sent = request.read()
        response = super().handle_request(request)
        body = response.read()
        self.into.append(
            Exchange(
                request.method,
                request.url.path,
                json.loads(sent) if sent else None,
                response.status_code,
                response.headers.get("Content-Type", ""),
                body,
            )
        )
        return httpx.Response(response.status_code, headers=response.headers, content=body)


def operation_of(document: dict[str, Any], method: str, path: str) -> tuple[str, dict[str, Any]]:
    """The document's path template and operation for a request."""
    for template, item in document["paths"].items():
        pattern = re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path) and method.lower() in item:
            return template, item[method.lower()]
    raise AssertionError(f"{method} {path} is not in the document")


def strict_errors(document: dict[str, Any], value: Any, target: dict[str, Any]) -> list[str]:
    """Where `value` does not match the schema `target` of the document (formats checked)."""
    resolved = {**target, "components": document["components"]}
    validator = OAS30Validator(resolved, format_checker=oas30_format_checker)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(value)
    ]


def mismatches(document: dict[str, Any], exchange: Exchange) -> list[str]:
    """What, in one exchange, the document does not describe."""
    template, operation = operation_of(document, exchange.method, exchange.path)
    where = f"{exchange.method} {template} -> {exchange.status}"
    found: list[str] = []
    request_body = operation.get("requestBody")
    if request_body is not None:
        target = request_body["content"]["application/json"]["schema"]
        found += [f"{where}, request: {e}" for e in strict_errors(document, exchange.sent, target)]
    response = operation["responses"].get(str(exchange.status))
    if response is None:
        return [*found, f"{where}: this status is not in the document"]
    if "$ref" in response:
        response = document["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    content = response.get("content")
    if content is None:
        if exchange.answer:
            found.append(f"{where}: a body the document does not describe")
        return found
    media = exchange.content_type.split(";")[0].strip()
    if media not in content:
        return [*found, f"{where}: {media} is not in the document"]
    if media == "application/json":
        target = content[media]["schema"]
        answer = json.loads(exchange.answer)
        found += [f"{where}, answer: {e}" for e in strict_errors(document, answer, target)]
    return found


def referral_blocks(world: CaseWorld, bundle: schema.ReportBundle, to: str) -> dict[str, bytes]:
    """Every item's key block re-sealed to `to`, the referring office keeping a copy."""
    held = world.office_keys[bundle.office]
    return {
        item.id: envelope.add_recipient(item.key_block, held, world.office_public(to))
        for item in bundle.items
    }


def journey(world: CaseWorld, record: list[Exchange]) -> None:
    """Every route of the API, as the reviewer app calls it, with a few refusals on the way."""

    def connect(token: str | None = None) -> CaseServerClient:
        made = CaseServerClient(BASE_URL, transport=Recording(world.app, record), token=token)
        world.clients.append(made)
        return made

    def codes(role: str) -> Codes:
        person = world.people[role]
        return Codes(world.instance, person.id, person.totp_secret)

    report_id = submit(
        world,
        "retaliation",
        "My manager moved me to night shifts after I spoke to the auditors.",
        files=[("roster.txt", b"the roster of the night shifts")],
        identity={"identity_name": "Ada Example", "identity_contact": "ada@example.org"},
    )
    key = world.office_keys["ECO"]
    anonymous = connect()
    anonymous._call("GET", "/openapi.json")

    # Signing in as the reviewer app does; refusals first.
    with pytest.raises(ApiError) as no_token:
        anonymous.me()
    assert no_token.value.status == 401
    eco = connect()
    sign_in(eco, "eco-officer", PASSPHRASE, codes("eco").next())
    assert eco.me().username == "eco-officer"
    locked = 0
    for _ in range(8):
        with pytest.raises(ApiError) as refused:
            connect().sign_in("eco-second", b"\0" * 32, "000000")
        locked = refused.value.status
        if locked == 429:
            break
    assert locked == 429 and refused.value.extra["retry_after"] >= 1

    # A report, from the inbox to the referral.
    assert report_id in {row.id for row in eco.inbox(InboxQuery(urgent=False)).rows}
    bundle = eco.report(report_id)
    file_item = next(i for i in bundle.items if i.kind == ItemKind.FILE)
    with eco.item_body(report_id, file_item.id) as response:
        assert response.read()
    with pytest.raises(ApiError) as unknown:
        eco.report("0" * 32)
    assert unknown.value.status == 404
    source = public_key_from_bytes(bundle.source_public_key)
    reply = seal(report_id, "We have your report.", ItemKind.REPLY, [key.public_key, source])
    eco.add_item(report_id, "reply", reply, acknowledge=True)
    eco.add_item(report_id, "note", seal(report_id, "A note.", ItemKind.NOTE, [key.public_key]))
    reason = seal(report_id, "Needed to protect the source.", ItemKind.REVEAL, [key.public_key])
    assert eco.reveal(report_id, reason)
    eco.assign(report_id, world.people["eco"].id)
    eco.change_status(report_id, eco.report(report_id).next_statuses[0])
    eco.record(report_id, "item.damaged", file_item.id)
    eco.record(None, "key.mismatch", "office key of OIO: differs from the pin")
    eco.record(report_id, "report.export", "0123456789ABCDEF0123456789ABCDEF01234567")
    assert "report.export" in [event.action for event in eco.report_events(report_id)]
    with pytest.raises(ApiError) as malformed:
        eco.change_status(report_id, "closed")  # closing needs an outcome
    assert malformed.value.status in (400, 409)
    eco.refer(report_id, "OIO", True, referral_blocks(world, eco.report(report_id), "OIO"))
    kept = eco.report(report_id)
    assert not kept.handling and kept.shared_up_to is not None
    with pytest.raises(ApiError) as copy_only:
        eco.assign(report_id, None)
    assert copy_only.value.status == 403
    oio = connect(world.people["oio"].token)
    oio.change_status(report_id, "closed", outcome="withdrawn")
    assert oio.report(report_id).status == "closed"
    oio.delete_report(report_id)

    # Administration: a new officer from invitation to their own account's changes.
    admin = connect(world.people["admin"].token)
    admin_codes = codes("admin")
    invitation = admin.invite("journey-officer", "Journey Officer", False, admin_codes.next())
    newcomer = connect()
    newcomer.check_enrolment("journey-officer", invitation.code)
    made = officers.new_credentials("the first passphrase of the journey", CHEAP_COST)
    totp_secret = pyotp.random_base32()
    newcomer.enrol(
        "journey-officer",
        invitation.code,
        auth_key=made.auth_key,
        public_key=made.public_key,
        wrapped_secret_key=made.wrapped_secret_key,
        totp_secret=totp_secret,
        totp_code=pyotp.TOTP(totp_secret).now(),
    )
    summary = {o.username: o for o in admin.officers()}["journey-officer"]
    sealed = seal_secret_key(world.office_keys["OIO"], public_key_from_bytes(made.public_key))
    admin.grant(summary.id, "OIO", sealed, admin_codes.next())
    derived = derive(newcomer, "journey-officer", "the first passphrase of the journey")
    newcomer.sign_in(
        "journey-officer", derived.auth_key, Codes(world.instance, summary.id, totp_secret).next()
    )
    salt = secrets.token_bytes(SALT_BYTES)
    renewed = derive_officer_keys("the second passphrase of the journey", salt, CHEAP_COST)
    newcomer.change_passphrase(
        auth_key=derived.auth_key,
        code=Codes(world.instance, summary.id, totp_secret).next(),
        new_auth_key=renewed.auth_key,
        new_wrapped_secret_key=wrap_with_wrapping_key(
            made.secret_key, renewed.wrapping_key, salt, CHEAP_COST
        ),
    )
    new_secret = pyotp.random_base32()
    newcomer.replace_totp(
        auth_key=renewed.auth_key, secret=new_secret, code=pyotp.TOTP(new_secret).now()
    )
    newcomer.sign_out()
    # An officer enrolled before X-Wing (an X25519 key) replaces it with an X-Wing key.
    early_key = generate_keypair()
    early_salt = secrets.token_bytes(SALT_BYTES)
    early = derive_officer_keys(PASSPHRASE, early_salt, CHEAP_COST)
    with world.instance.sessions.begin() as db:
        row, early_totp = officers.add(db, "journey-early", PASSPHRASE, CHEAP_COST, "test")
        row.public_key = bytes(early_key.public_key)
        row.wrapped_secret_key = wrap_with_wrapping_key(
            early_key, early.wrapping_key, early_salt, CHEAP_COST
        )
        row.auth_verifier = auth_key_verifier(early.auth_key)
        early_id = row.id
    sealed_early = seal_secret_key(world.office_keys["OIO"], early_key.public_key)
    admin.grant(early_id, "OIO", sealed_early, admin_codes.next())
    early_codes = Codes(world.instance, early_id, early_totp)
    early_client = connect()
    early_client.sign_in("journey-early", early.auth_key, early_codes.next())
    x_wing = generate_hybrid_key()
    salt = secrets.token_bytes(SALT_BYTES)
    renewed = derive_officer_keys(PASSPHRASE, salt, CHEAP_COST)
    early_client.replace_key(
        auth_key=early.auth_key,
        code=early_codes.next(),
        new_auth_key=renewed.auth_key,
        public_key=bytes(x_wing.public_key),
        wrapped_secret_key=wrap_with_wrapping_key(x_wing, renewed.wrapping_key, salt, CHEAP_COST),
        grants={"OIO": seal_secret_key(world.office_keys["OIO"], x_wing.public_key)},
    )
    with pytest.raises(ApiError) as already:  # once is enough
        early_client.replace_key(
            auth_key=renewed.auth_key,
            code=early_codes.next(),
            new_auth_key=renewed.auth_key,
            public_key=bytes(x_wing.public_key),
            wrapped_secret_key=wrap_with_wrapping_key(
                x_wing, renewed.wrapping_key, salt, CHEAP_COST
            ),
            grants={"OIO": seal_secret_key(world.office_keys["OIO"], x_wing.public_key)},
        )
    assert already.value.status == 400
    early_client.sign_out()
    with pytest.raises(ApiError) as not_admin:
        eco.officers()
    assert not_admin.value.status == 403
    admin.reinvite(world.people["eco2"].id, admin_codes.next())
    admin.deactivate(world.people["eco2"].id, admin_codes.next())
    assert admin.audit_log().events
    assert admin.verify_audit().ok

    # Notification e-mails: an officer's choice, a refusal, and the administrators' list.
    assert eco.notification_settings().mode == "none"
    chosen = eco.choose_notifications(email="eco-officer@example.org", mode="digest")
    assert chosen.mode == "digest" and chosen.openpgp_fingerprint is None
    with pytest.raises(ApiError) as bad_address:
        eco.choose_notifications(email="not an address", mode="immediate")
    assert bad_address.value.status == 400
    assert admin.notification_failures().failures == []

    # Statistics: an officer's own office, a refusal, and every office for an administrator.
    year = datetime.now(UTC).year
    own = eco.statistics(schema.StatisticsQuery(year=year, from_month=1, to_month=12))
    assert own.office == "ECO" and own.offices == ["ECO"]
    with pytest.raises(ApiError) as not_theirs:
        eco.statistics(schema.StatisticsQuery(office="all", year=year))
    assert not_theirs.value.status == 403
    everything = admin.statistics(schema.StatisticsQuery(office="all", year=year, download=True))
    assert everything.tables[1].columns == ["OIO", "ECO", "all"]


def test_every_answer_of_a_journey_through_the_api_matches_the_document(world: CaseWorld) -> None:
    record: list[Exchange] = []
    journey(world, record)
    document = served_document(world.app)
    problems = [problem for exchange in record for problem in mismatches(document, exchange)]
    assert problems == []
    # The journey went everywhere: every operation answered with success at least once.
    succeeded = {
        (e.method.lower(), operation_of(document, e.method, e.path)[0])
        for e in record
        if e.status < 300
    }
    every = {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert every - succeeded == set()
    refused = {e.status for e in record if e.status >= 400}
    assert {401, 403, 404, 429} <= refused and refused & {400, 409}


def test_every_answer_of_the_journey_reads_back_as_its_definition(world: CaseWorld) -> None:
    """What the server wrote with `dump`, `load` reads back whole: a client could parse with it."""
    record: list[Exchange] = []
    journey(world, record)
    urls = world.app.url_map.bind("case-server.test")
    read_back = set()
    for exchange in record:
        endpoint, _ = urls.match(exchange.path, exchange.method)
        spec = OPERATIONS[endpoint]
        if exchange.status < 300 and isinstance(spec.answer, type):
            answer = json.loads(exchange.answer)
            assert schema.dump(schema.load(spec.answer, answer)) == answer, endpoint
            read_back.add(spec.answer)
    assert schema.ReportBundle in read_back and schema.SignIn in read_back
    assert len(read_back) >= 18


def test_an_answer_that_leaves_its_definition_is_caught(world: CaseWorld) -> None:
    """The check above is strict: a missing, an extra or a mistyped field each fail it."""
    record: list[Exchange] = []
    connect = CaseServerClient(
        BASE_URL, transport=Recording(world.app, record), token=world.people["eco"].token
    )
    world.clients.append(connect)
    submit(world, "retaliation", "The roster changed the day after I spoke to the auditors.")
    connect.inbox(InboxQuery())
    document = served_document(world.app)
    (real,) = record
    assert mismatches(document, real) == []
    row = json.loads(real.answer)["rows"][0]
    spoiled = {
        "a field missing": {k: v for k, v in row.items() if k != "unread"},
        "a field the definition lacks": {**row, "source_name": "Ada"},
        "a number sent as text": {**row, "unread": str(row["unread"])},
        "a time where a day goes": {**row, "received": "2025-05-01T09:30:00+00:00"},
        "a status no report has": {**row, "status": "lost"},
        "a day that is not one": {**row, "feedback_due": "soon"},
    }
    for what, changed in spoiled.items():
        answer = {**json.loads(real.answer), "rows": [changed]}
        broken = dataclasses.replace(real, answer=json.dumps(answer).encode())
        assert mismatches(document, broken), what
    header = document["components"]["schemas"]["SignInParameters"]
    assert strict_errors(document, {"header": "%%%"}, header), "base64 that is not"


# --- (c) a field added to a definition is in the document -------------------------------------


def tiny_app() -> Flask:
    """An app with one route under /api/v2."""
    app = Flask(__name__)

    @app.get(f"{API}/badge")
    def badge() -> dict[str, Any]:
        """The caller's badge."""
        return {}

    return app


@dataclass(frozen=True, kw_only=True)
class Badge:
    """An officer's badge."""

    holder: Annotated[str, Doc("Who wears it")]
    office: Annotated[str, Known("offices")]
    issued: date
    photo: bytes | None


@dataclass(frozen=True, kw_only=True)
class BadgeWithColour:
    """An officer's badge."""

    holder: Annotated[str, Doc("Who wears it")]
    office: Annotated[str, Known("offices")]
    issued: date
    photo: bytes | None
    colour: Annotated[str, Doc("As printed")] = "blue"


def badge_schema(definition: type, config_known: dict[str, dict[str, Any]]) -> dict[str, Any]:
    app = tiny_app()
    built = build_document(app, {"badge": Operation(definition)}, config_known)
    validate_document(built)
    answer = built["paths"][f"{API}/badge"]["get"]["responses"]["200"]
    ref = answer["content"]["application/json"]["schema"]["$ref"]
    component: dict[str, Any] = built["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return component


def test_a_field_added_to_a_definition_shows_in_the_document_with_no_other_edit(
    instance: Instance,
) -> None:
    known = known_rules(instance.config)
    before = badge_schema(Badge, known)
    assert list(before["properties"]) == ["holder", "office", "issued", "photo"]
    assert before["required"] == ["holder", "office", "issued", "photo"]
    assert before["properties"]["holder"] == {"type": "string", "description": "Who wears it"}
    assert before["properties"]["office"]["enum"] == [o.code for o in instance.config.offices]
    assert before["properties"]["issued"] == {"type": "string", "format": "date"}
    assert before["properties"]["photo"]["format"] == "byte"
    assert before["properties"]["photo"]["nullable"] is True
    after = badge_schema(BadgeWithColour, known)
    assert list(after["properties"]) == ["holder", "office", "issued", "photo", "colour"]
    assert after["properties"]["colour"] == {
        "type": "string",
        "description": "As printed",
        "default": "blue",
    }
    assert "colour" not in after["required"]  # it has a default: a request may leave it out
    # What dump writes for the definition is what the schema says.
    sent = schema.dump(
        BadgeWithColour(holder="Ada", office="ECO", issued=date(2025, 5, 1), photo=b"\x89PNG")
    )
    assert sent == {
        "holder": "Ada",
        "office": "ECO",
        "issued": "2025-05-01",
        "photo": base64.b64encode(b"\x89PNG").decode(),
        "colour": "blue",
    }
    document = {"components": {"schemas": {"BadgeWithColour": after}}}
    ref = {"$ref": "#/components/schemas/BadgeWithColour"}
    assert strict_errors(document, sent, ref) == []
    assert strict_errors(document, {**sent, "colour": 7}, ref)


def test_every_definition_the_api_uses_is_in_the_document(world: CaseWorld) -> None:
    document = served_document(world.app)
    named = {
        spec.answer.__name__
        for spec in OPERATIONS.values()
        if isinstance(spec.answer, type) and dataclasses.is_dataclass(spec.answer)
    } | {spec.body.__name__ for spec in OPERATIONS.values() if spec.body is not None}
    assert named <= set(document["components"]["schemas"])
    for name, component in document["components"]["schemas"].items():
        definition = getattr(schema, name)
        assert list(component["properties"]) == [f.name for f in dataclasses.fields(definition)]


def test_every_public_key_says_its_two_lengths(world: CaseWorld) -> None:
    """A client must tell an X-Wing key from an X25519 one, and the length is how."""
    schemas = served_document(world.app)["components"]["schemas"]
    for component, name in (
        ("ReportBundle", "source_public_key"),
        ("Me", "public_key"),
        ("OfficeInfo", "public_key"),
        ("OfficerSummary", "public_key"),
    ):
        described = schemas[component]["properties"][name].get("description", "")
        assert "X-Wing (1216 bytes)" in described and "X25519 (32 bytes)" in described, name
    # A key made now is X-Wing only, and says so; no public key goes undescribed.
    keys = [
        (component, name, value.get("description", ""))
        for component, definition in schemas.items()
        for name, value in definition["properties"].items()
        if name.endswith("public_key")
    ]
    assert len(keys) == 6, keys
    for component, name, described in keys:
        assert "X-Wing" in described and "1216 bytes" in described, (component, name)


def test_a_type_the_generator_cannot_describe_is_refused_not_guessed() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Odd:
        """Holds a set."""

        tags: set[str]

    with pytest.raises(TypeError, match="no OpenAPI schema"):
        Schemas({}).of(Odd)


# --- reading requests with the same definitions -------------------------------------------------


def test_a_request_is_read_as_its_definition_and_a_wrong_field_is_named() -> None:
    auth_key = secrets.token_bytes(32)
    sent = {"username": "ada", "auth_key": base64.b64encode(auth_key).decode(), "code": "123456"}
    read = schema.load(schema.SignInRequest, sent)
    assert read == schema.SignInRequest(username="ada", auth_key=auth_key, code="123456")
    assert read.device == ""  # left out: its default
    for wrong, message in [
        ({**sent, "username": 7}, "'username' must be a string"),
        ({**sent, "auth_key": "%%%"}, "'auth_key' must be base64 text"),
        ({**sent, "username": "\ud800"}, "'username' must be text without lone surrogates"),
        ({"username": "ada", "auth_key": sent["auth_key"]}, "'code' must be a string"),
    ]:
        with pytest.raises(Malformed, match=re.escape(message)):
            schema.load(schema.SignInRequest, wrong)
    nested = {"reason": {"item_id": "a" * 32, "size": "9", "key_block": "", "body": ""}}
    with pytest.raises(Malformed, match=re.escape("'reason.size' must be a whole number")):
        schema.load(schema.RevealRequest, nested)
    with pytest.raises(Malformed, match=re.escape("'key_blocks.x' must be base64 text")):
        schema.load(schema.ReferRequest, {"office": "OIO", "key_blocks": {"x": 1}})
    with pytest.raises(Malformed, match=re.escape("'ok' must be true")):
        schema.load(schema.Ok, {"ok": 1})
    with pytest.raises(Malformed, match=re.escape("'problems.1' must be a string")):
        schema.load(schema.AuditCheck, {"ok": False, "events": 2, "problems": ["a", 2]})
    with pytest.raises(Malformed, match=re.escape("'expires_at' must be an RFC 3339 time")):
        schema.load(schema.Invitation, {"officer_id": 1, "code": "c", "expires_at": "soon"})


def test_the_case_server_names_the_wrong_field_of_a_request(world: CaseWorld) -> None:
    http = world.app.test_client()
    answer = http.post(f"{API}/signin/params", json={"username": ["ada"]})
    assert answer.status_code == 400
    assert answer.json == {"error": "'username' must be a string"}
    token = {"Authorization": f"Bearer {world.people['eco'].token}"}
    answer = http.post(f"{API}/events", json={"action": "key.mismatch", "detail": 5}, headers=token)
    assert answer.status_code == 400
    assert answer.json == {"error": "'detail' must be a string"}


def test_times_travel_as_utc_and_days_as_dates() -> None:
    entry = schema.AuditEntry(
        id=1,
        at=datetime(2025, 5, 1, 9, 30),  # naive: UTC, as the database stores it
        actor="ada",
        action="report.read",
        report_id=None,
        detail="",
    )
    assert schema.dump(entry)["at"] == "2025-05-01T09:30:00+00:00"
    # A field declared as a day is sent as one, even when given a time.
    sent = schema.dump(schema.AuditCheck(ok=True, events=0, problems=[]))
    assert sent == {"ok": True, "events": 0, "problems": []}
    received = datetime(2025, 5, 1, 23, 59, tzinfo=UTC)
    assert Badge(holder="", office="", issued=received, photo=None).issued == received
    assert schema.dump(Badge(holder="", office="", issued=received, photo=None))["issued"] == (
        "2025-05-01"
    )


# --- the reviewer app's client reads with the same definitions -----------------------------------


def definitions() -> dict[str, type]:
    """Every body definition of the API, by name."""
    return {
        name: value
        for name, value in vars(schema).items()
        if isinstance(value, type)
        and dataclasses.is_dataclass(value)
        and value.__module__ == schema.__name__
    }


def classes_named(hint: Any) -> Iterator[type]:
    """The classes a type hint names, inside lists, maps, unions and `Annotated`."""
    bare, _ = schema.unwrap(hint)
    if isinstance(bare, type):
        yield bare
    for arg in typing.get_args(bare):
        yield from classes_named(arg)


def test_the_reviewer_apps_client_keeps_no_copy_of_a_definition() -> None:
    """One copy of each body: the client defines no class with a definition's fields."""
    fields_of = {name: [f.name for f in dataclasses.fields(d)] for name, d in definitions().items()}
    own = [
        value
        for value in vars(client).values()
        if isinstance(value, type) and value.__module__ == client.__name__
    ]
    assert own, "the client module defines its own classes (the client, its errors)"
    for cls in own:
        if dataclasses.is_dataclass(cls):
            mine = [f.name for f in dataclasses.fields(cls)]
            copied = [name for name, theirs in fields_of.items() if set(theirs) == set(mine)]
            assert copied == [], f"client.{cls.__name__} repeats {copied}"


def test_the_reviewer_apps_client_takes_and_gives_the_api_definitions() -> None:
    """Every body type in the client's methods is a definition of dropbox/api_schema.py."""
    known = set(definitions().values())
    used: set[type] = set()
    for name, method in vars(CaseServerClient).items():
        if name.startswith("_") or not callable(method):
            continue
        for hint in typing.get_type_hints(method).values():
            used |= {c for c in classes_named(hint) if dataclasses.is_dataclass(c)}
    assert used, "the client's methods name no body types"
    assert used <= known, sorted(c.__qualname__ for c in used - known)
    assert {schema.Me, schema.SignIn, schema.ReportBundle, schema.InboxQuery} <= used


MALFORMED = "the case server sent a malformed answer"


class Spoiling(httpx.WSGITransport):
    """The real case server, with one field of its JSON answers changed on the way."""

    def __init__(self, app: Flask, change: dict[str, Any]) -> None:
        super().__init__(app=app)
        self.change = change

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        answer = json.loads(response.read())
        rows = answer.get("rows") or [answer]
        for row in rows:
            row.update({k: v for k, v in self.change.items() if k in row})
        headers = {"Content-Type": "application/json"}
        return httpx.Response(response.status_code, headers=headers, json=answer)


def test_the_client_refuses_an_answer_that_leaves_its_definition(world: CaseWorld) -> None:
    """A wrong type in an answer is a calm refusal (502, malformed), never a crash or a guess."""
    submit(world, "retaliation", "The roster changed the day after I spoke to the auditors.")
    token = world.people["eco"].token

    def inbox_page(connect: CaseServerClient) -> object:
        return connect.inbox(InboxQuery())

    spoiled: list[tuple[str, Callable[[CaseServerClient], object], dict[str, Any]]] = [
        ("a number sent as text", inbox_page, {"unread": "3"}),
        ("a day that is not one", inbox_page, {"received": "soon"}),
        ("a key that is not base64", CaseServerClient.me, {"public_key": "%%%"}),
        ("a list sent as text", CaseServerClient.me, {"grants": "OIO"}),
        ("a name sent as null", CaseServerClient.me, {"username": None}),
    ]
    for what, ask, change in spoiled:
        connect = CaseServerClient(BASE_URL, transport=Spoiling(world.app, change), token=token)
        world.clients.append(connect)
        with pytest.raises(ApiError) as refused:
            ask(connect)
        assert (refused.value.status, refused.value.message) == (502, MALFORMED), what
    # Untouched, the same answers read.
    honest = CaseServerClient(BASE_URL, transport=Spoiling(world.app, {}), token=token)
    world.clients.append(honest)
    assert honest.me().username == "eco-officer"
    assert honest.inbox(InboxQuery()).rows


def modules_loaded_by(module: str) -> set[str]:
    """The top-level packages a fresh interpreter has loaded after importing `module`."""
    code = (
        f"import sys, {module}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    )
    ran = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(ran.stdout.split())


def test_both_ends_may_import_the_definitions_and_neither_imports_the_other() -> None:
    apps = {"case_server", "journalist_interface", "source_interface"}
    loaded = modules_loaded_by("dropbox.api_schema")
    assert loaded & {*apps, "crypto", "flask", "sqlalchemy", "httpx"} == set()
    assert "case_server" not in modules_loaded_by("journalist_interface.client")


def test_the_inbox_query_is_the_filters_the_inbox_takes() -> None:
    names = [f.name for f in dataclasses.fields(schema.InboxQuery)]
    assert names == [f.name for f in dataclasses.fields(inbox.Filters)]
    assert schema.InboxQuery() == schema.InboxQuery(**dataclasses.asdict(inbox.Filters()))
