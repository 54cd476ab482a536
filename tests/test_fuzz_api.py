"""Fuzzing the reviewer JSON API (/api/v1): never a server error, never a trace, always JSON.

Hypothesis sends every route of the API (found in the app's URL map, so a new
route cannot be missed) arbitrary methods, path ids, query strings, headers
and bodies, with and without a real token. Schemathesis then generates
requests from the API's own OpenAPI document, signed in with a token from
POST /api/v1/token, and checks each answer against that document.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi import checks as openapi_checks
from sqlalchemy import select
from werkzeug.test import TestResponse

from dropbox.models import Item, Report
from tests.fuzz_helpers import (
    NASTY_BYTES,
    assert_handled,
    assert_no_trace,
    fuzz,
    fuzz_one,
    hostile_bytes,
    hostile_text,
    percent,
)
from tests.reviewer_helpers import (
    Person,
    World,
    add_officer,
    chain_intact,
    fresh_code,
    source_report,
)

API = "/api/v1"
API_EXAMPLES = 20  # per route
SCHEMA_EXAMPLES = 12  # per operation and generation mode
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
FILTER_NAMES = ["status", "category", "mine", "overdue", "urgent", "sort", "page"]
BODY_NAMES = ["username", "passphrase", "code", "message", "status", "outcome", "reason"]
CONVERTER = re.compile(r"<(?:[a-z]+(?:\([^)]*\))?:)?([a-z_]+)>")  # <int(max=9):id>


@dataclass
class Target:
    """Real ids and tokens, so that fuzzed requests also reach past the lookups."""

    token: str
    report_ids: list[str]
    item_ids: list[str]
    locked_out: Person  # the officer whose sign-in is fuzzed (and may be locked out)


def api_rules(app: Flask) -> list[str]:
    """Every route of the API, as written in the URL map."""
    return sorted({r.rule for r in app.url_map.iter_rules() if r.rule.startswith(API + "/")})


def token_for(client: FlaskClient, world: World, person: Person) -> str:
    response = client.post(
        f"{API}/token",
        json={
            "username": person.username,
            "passphrase": person.passphrase,
            "code": fresh_code(world.instance, person),
        },
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    token: str = response.json["token"]  # type: ignore[index]
    return token


def make_target(reviewer: Flask, source: Flask, world: World) -> Target:
    """Two reports (one per office) with files, a token for an ECO officer."""
    reviewer.extensions["dropbox.limiter"].enabled = False  # fuzz past the rate limits
    source.extensions["dropbox.limiter"].enabled = False
    source_report(source, "retaliation", files=[("proof.pdf", b"%PDF-1.4 evidence")])
    source_report(source, "fraud", files=[("ledger.csv", b"a,b\n1,2\n")])
    with world.instance.sessions() as db:
        report_ids = list(db.execute(select(Report.id).order_by(Report.office_code)).scalars())
        item_ids = list(db.execute(select(Item.id)).scalars())
    client = reviewer.test_client()
    token = token_for(client, world, add_officer(world, "fuzz-api", ["ECO"]))
    return Target(token, report_ids, item_ids, add_officer(world, "fuzz-lockout", ["OIO"]))


# --- strategies -----------------------------------------------------------------------


def path_segment(target: Target) -> st.SearchStrategy[str]:
    """A path id: a real one, or anything at all, percent-encoded (or not) as sent."""
    return st.one_of(
        st.sampled_from(target.report_ids + target.item_ids),
        hostile_text.filter(lambda t: len(t) < 10_000).map(lambda t: percent(t.encode()).decode()),
        hostile_bytes.map(lambda b: percent(b).decode()),
        st.sampled_from(["%", "%zz", "%00", "..", ".", "%2F", "%2e%2e", "a;b", "x?y=1"]),
    )


def query_string(target: Target) -> st.SearchStrategy[str]:
    name = st.one_of(st.sampled_from(FILTER_NAMES), hostile_text.filter(lambda t: len(t) < 100))
    value = st.one_of(
        st.sampled_from(["received", "closed", "fraud", "retaliation", "1", "true", "x"]),
        hostile_text.filter(lambda t: len(t) < 10_000),
    )
    encoded = st.lists(st.tuples(name, value), max_size=6).map(
        lambda pairs: "&".join(
            percent(k.encode()).decode() + "=" + percent(v.encode()).decode() for k, v in pairs
        )
    )
    raw = st.lists(hostile_bytes.map(percent), max_size=4).map(
        lambda parts: "&".join(p.decode() for p in parts)
    )
    return st.one_of(
        encoded, raw, st.sampled_from(["page=%", "page=%zz&&=", "=&=&", "a=%ED%A0%80"])
    )


def authorization(target: Target) -> st.SearchStrategy[str | None]:
    latin1 = hostile_text.map(lambda t: t.encode("latin-1", "replace").decode("latin-1"))
    return st.one_of(
        st.just(f"Bearer {target.token}"),
        st.just(f"bearer   {target.token}  "),
        st.none(),
        latin1.filter(lambda t: len(t) < 10_000 and "\n" not in t and "\r" not in t),
        latin1.filter(lambda t: len(t) < 10_000 and "\n" not in t and "\r" not in t).map(
            lambda t: f"Bearer {t}"
        ),
        st.just(f"Bearer {target.token[:-2]}"),
        st.just(f"Bearer {target.token}{target.token}"),
    )


def json_containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Arrays and objects of `children` (objects mostly with the API's field names)."""
    names = st.one_of(st.sampled_from(BODY_NAMES), st.text(max_size=10))
    return st.one_of(st.lists(children, max_size=4), st.dictionaries(names, children))


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        hostile_text.filter(lambda t: len(t) < 100_000),
    ),
    json_containers,
    max_leaves=12,
)


def body(target: Target, person: Person) -> st.SearchStrategy[bytes]:
    """A request body: JSON objects with the right and wrong fields, and what is not JSON."""
    fields = st.dictionaries(st.sampled_from(BODY_NAMES), json_values, max_size=5)
    real_names = st.fixed_dictionaries(
        {
            "username": st.sampled_from([person.username, person.username.upper() + " "]),
            "passphrase": st.one_of(st.just(person.passphrase), hostile_text),
            "code": st.one_of(st.text(alphabet="0123456789", max_size=8), hostile_text),
        }
    )
    statuses = st.fixed_dictionaries(
        {"status": st.sampled_from(["acknowledged", "under assessment", "closed", "reopened"])},
        optional={
            "outcome": st.sampled_from(["substantiated", "withdrawn", "nope"]),
            "reason": hostile_text,
        },
    )
    as_json = st.one_of(json_values, fields, real_names, statuses).map(
        lambda v: json.dumps(v, allow_nan=True).encode()
    )
    return st.one_of(
        as_json,
        hostile_bytes,
        st.sampled_from(
            [
                b"",
                b"[" * 100_000 + b"]" * 100_000,  # deeper than Python's recursion limit
                b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
                b'{"message": "\\ud800"}',  # a lone surrogate, valid JSON
                b'{"username": "\\udfff\\ud800", "passphrase": "x", "code": "1"}',
                b'{"status": "closed", "outcome": "withdrawn", "reason": "\\ud83d"}',
                b'{"message": "a\\u0000b"}',
                b'{"message": 1e999}',
                b'{"message": NaN}',
                b'{"message": "x", "message": 3}',
                b'{"message": "' + b"\xed\xa0\x80" + b'"}',
                b"\xef\xbb\xbf{}",
                b"\xff\xfe{\x00}\x00",
                *NASTY_BYTES,
            ]
        ),
    )


CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=latin-1",
    "application/json; charset=nonsense",
    "application/problem+json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/form-data; boundary=x",
    "",
    "\x7f/\x00",
]


def check_api_answer(response: TestResponse, sent: str, what: str) -> None:
    """Below 500, no trace, and (but for a file download or a HEAD) a JSON object."""
    body = assert_handled(response, sent, what)
    if response.status_code >= 400 and response.request.method != "HEAD":
        assert response.mimetype == "application/json", f"{what}: {body[:500]}"
        parsed = json.loads(body)
        assert isinstance(parsed, dict) and isinstance(parsed.get("error"), str), what


def api_still_works(reviewer: Flask, world: World, target: Target) -> None:
    """After the fuzzing: a new token, the inbox and a report still work; the audit chain holds."""
    client = reviewer.test_client()
    token = token_for(client, world, world.people["fuzz-api"])
    headers = {"Authorization": f"Bearer {token}"}
    inbox = client.get(f"{API}/reports", headers=headers)
    assert inbox.status_code == 200 and inbox.json is not None
    assert inbox.json["total"] >= 1
    for report_id in [row["id"] for row in inbox.json["rows"]]:
        assert client.get(f"{API}/reports/{report_id}", headers=headers).status_code == 200
    assert chain_intact(world.instance)


# --- Hypothesis: every route, anything at all ---------------------------------------------


def test_every_api_route_is_fuzzed_and_documented(reviewer: Flask) -> None:
    """The routes fuzzed below come from the URL map; Schemathesis reads the document."""
    rules = api_rules(reviewer)
    assert f"{API}/token" in rules and f"{API}/reports/<report_id>/status" in rules
    document = reviewer.test_client().get(f"{API}/openapi.json").json
    assert document is not None
    documented = {path.replace("{", "<").replace("}", ">") for path in document["paths"]}
    assert documented == set(rules)


def test_api_answers_anything_without_a_server_error(
    reviewer: Flask, source: Flask, world: World
) -> None:
    target = make_target(reviewer, source, world)
    rules = api_rules(reviewer)
    client = reviewer.test_client()

    def one_request(rule: str, data: st.DataObject) -> None:
        path = rule
        for match in CONVERTER.finditer(rule):
            segment = data.draw(path_segment(target), label=match.group(1))
            path = path.replace(match.group(0), segment, 1)  # segments are percent-encoded
        assert "<" not in path, f"a variable of {rule} was not filled"
        query = data.draw(st.one_of(st.just(""), query_string(target)), label="query")
        route = next(r for r in reviewer.url_map.iter_rules() if r.rule == rule)
        allowed = sorted(route.methods or {"GET"})
        method = data.draw(
            st.one_of(st.sampled_from(allowed), st.sampled_from(METHODS)), label="method"
        )
        headers: dict[str, str] = {}
        auth = data.draw(authorization(target), label="authorization")
        if auth is not None:
            headers["Authorization"] = auth
        content_type = data.draw(st.sampled_from(CONTENT_TYPES), label="content_type")
        if content_type:
            headers["Content-Type"] = content_type
        payload = b""
        if method not in ("GET", "HEAD", "OPTIONS"):
            payload = data.draw(body(target, target.locked_out), label="body")
        full = f"{path}?{query}" if query else path
        response = client.open(full, method=method, headers=headers, data=payload)
        sent = " ".join([full, auth or "", payload.decode("utf-8", "replace")])
        check_api_answer(response, sent, f"{method} {full}")

    for rule in rules:
        fuzz_one(rule, API_EXAMPLES, one_request)
    api_still_works(reviewer, world, target)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="nesting-deeper-than-the-stack"),
        pytest.param(b'{"username": "\\ud800", "passphrase": "x", "code": "1"}', id="surrogate"),
        pytest.param(b'{"username": "a\\u0000b", "passphrase": "x", "code": "1"}', id="nul"),
    ],
)
def test_token_endpoint_refuses_hostile_json_with_a_400_or_401(
    reviewer: Flask, payload: bytes
) -> None:
    response = reviewer.test_client().post(
        f"{API}/token", data=payload, content_type="application/json"
    )
    check_api_answer(response, "", "POST /token")
    assert response.status_code in (400, 401)


# --- Schemathesis: requests generated from the OpenAPI document -----------------------------


def run_cases(
    cases: st.SearchStrategy[schemathesis.Case[Any]], mode: GenerationMode, checks: list[Any]
) -> None:
    """Send the cases; no server error, no trace; positive cases must match the document."""

    @fuzz(SCHEMA_EXAMPLES)
    @given(case=cases)
    def one_case(case: schemathesis.Case[Any]) -> None:
        response = case.call()
        label = f"{case.method} {case.formatted_path}"
        sent = json.dumps(
            [case.path_parameters, case.query, case.body], default=str, ensure_ascii=False
        )
        assert response.status_code < 500, f"{label}: {response.text[:2000]}"
        assert_no_trace(response.text, sent)
        # Schemathesis's own check too; the document's checks only where the data is valid.
        chosen = [not_a_server_error, *(checks if mode is GenerationMode.POSITIVE else [])]
        case.validate_response(response, checks=chosen)

    one_case()


def test_schemathesis_finds_no_server_error_and_answers_match_the_document(
    reviewer: Flask, source: Flask, world: World
) -> None:
    target = make_target(reviewer, source, world)
    schema = schemathesis.openapi.from_wsgi(f"{API}/openapi.json", reviewer)
    headers = {"Authorization": f"Bearer {target.token}"}
    positive_checks = [
        openapi_checks.status_code_conformance,
        openapi_checks.content_type_conformance,
        openapi_checks.response_headers_conformance,
        openapi_checks.response_schema_conformance,
    ]
    called: set[str] = set()
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the document is valid: every operation loads
        operation = result.ok()
        # Only what has parameters or a body can be sent wrong (the document itself cannot).
        negatable = bool(list(operation.iter_parameters())) or bool(operation.body)
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if negatable else [])
        for mode in modes:
            strategies = [operation.as_strategy(generation_mode=mode, headers=headers)]
            if "{report_id}" in operation.path:
                strategies += [
                    operation.as_strategy(
                        generation_mode=mode,
                        headers=headers,
                        path_parameters={"report_id": report_id},
                    )
                    for report_id in target.report_ids
                ]
            run_cases(st.one_of(strategies), mode, positive_checks)
        called.add(f"{operation.method.upper()} {operation.path}")
    # Every operation but the document itself was fuzzed.
    document = reviewer.test_client().get(f"{API}/openapi.json").json
    assert document is not None
    assert {label.split(" ", 1)[1] for label in called} == set(document["paths"]) - {
        f"{API}/openapi.json"
    }
    api_still_works(reviewer, world, target)
