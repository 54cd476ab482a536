"""Fuzzing the case server's JSON API (/api/v2): never a server error, never a trace, always JSON.

Hypothesis sends every route of the API (found in the app's URL map, so a new
route cannot be missed) arbitrary methods, path ids, query strings, headers
and bodies, with and without a real bearer token. Schemathesis then generates
requests from the API's own OpenAPI document (GET /api/v2/openapi.json), with
real tokens (`case_server.tokens.issue`, as sign-in gives them), and checks
each answer against that document. At the end an officer signs in for real
(auth key derived here, TOTP code) and the inbox and reports still work.

Routes that end something are fuzzed with what they may end: POST /signout
gets a new token for every request, and POST .../delete only reports made to
be deleted, after every other route.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from nacl.public import PrivateKey
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi import checks as openapi_checks
from sqlalchemy import select
from werkzeug.test import TestResponse

from dropbox import officers
from dropbox.instance import Instance
from dropbox.models import Item, Report
from journalist_interface.client import CaseServerClient, InboxQuery
from tests.case_helpers import BASE_URL, PASSPHRASE, CaseWorld, make_case_world, submit
from tests.conftest import CHEAP_COST, FIGURES
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
from tests.reviewer_helpers import chain_intact
from tests.signin_helpers import Codes, sign_in

pytestmark = pytest.mark.database_engine

API = "/api/v2"
API_EXAMPLES = 20  # per route
SCHEMA_EXAMPLES = 12  # per operation and generation mode
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
FILTER_NAMES = [
    *("status", "category", "mine", "overdue", "urgent", "sort", "page", "office"),
    *("year", "from_month", "to_month", "download"),
]
BODY_NAMES = [
    "username",
    "auth_key",
    "code",
    "device",
    "kind",
    "item_id",
    "size",
    "key_block",
    "body",
    "reason",
    "status",
    "outcome",
    "assignee_id",
    "office",
    "keep_copy",
    "key_blocks",
    "action",
    "detail",
    "public_key",
    "wrapped_secret_key",
    "totp_secret",
    "totp_code",
    "sealed_office_key",
    "is_admin",
]
CONVERTER = re.compile(r"<(?:[a-z]+(?:\([^)]*\))?:)?([a-z_]+)>")  # <int(max=9):id>
SIGNOUT = f"{API}/signout"
FILE_A = [("proof.pdf", b"%PDF-1.4 evidence")]
FILE_B = [("ledger.csv", b"a,b\n1,2\n")]
DELETE = f"{API}/reports/<report_id>/delete"
# Administration needs an administrator's token to get past the first check.
ADMIN_PREFIXES = (f"{API}/officers", f"{API}/audit", f"{API}/statistics")


@dataclass
class Target:
    """Real ids and tokens, so that fuzzed requests also reach past the lookups."""

    world: CaseWorld
    report_ids: list[str]  # one report per office, the ECO one (the fuzzing officer's) last
    victim_ids: list[str]  # reports only the delete route gets
    item_ids: list[str]
    officer_ids: list[int]
    locked_out: str  # the username whose sign-in is fuzzed (and may be locked out)
    issued: list[str] = field(default_factory=list)

    def token(self, rule: str) -> str:
        """The token a request to `rule` carries: a new one for sign-out, else a lasting one."""
        from case_server import tokens

        if rule == SIGNOUT or rule.endswith("/signout"):
            made = tokens.issue(self.world.instance, self.world.people["eco2"].id)
            self.issued.append(made)
            return made
        role = "admin" if rule.startswith(ADMIN_PREFIXES) else "eco"
        return self.world.people[role].token


@pytest.fixture
def world(instance: Instance, office_keys: dict[str, PrivateKey]) -> Iterator[CaseWorld]:
    made = make_case_world(instance, office_keys)
    yield made
    made.close()


def api_rules(app: Flask) -> list[str]:
    """Every route of the API, as written in the URL map; delete last (it ends its report)."""
    rules = sorted({r.rule for r in app.url_map.iter_rules() if r.rule.startswith(API + "/")})
    return sorted(rules, key=lambda rule: rule == DELETE)


def make_target(world: CaseWorld) -> Target:
    """Reports of both offices with files, victims for deletion, an officer to lock out."""
    world.app.extensions["dropbox.limiter"].enabled = False  # fuzz past the rate limits
    world.source.extensions["dropbox.limiter"].enabled = False
    made = {
        "retaliation": submit(world, "retaliation", "A report with enough words.", files=FILE_A),
        "fraud": submit(world, "fraud", "Another report with enough words.", files=FILE_B),
    }
    with world.instance.sessions() as db:
        offices = {row.id: row.office_code for row in db.execute(select(Report)).scalars()}
    eco = next(category for category, rid in made.items() if offices[rid] == "ECO")
    report_ids = sorted(made.values(), key=lambda rid: offices[rid] == "ECO")  # ECO's last
    victim_ids = [submit(world, eco, f"A report to be deleted, no. {n}.") for n in range(3)]
    with world.instance.sessions() as db:
        item_ids = list(db.execute(select(Item.id)).scalars())
    with world.instance.sessions.begin() as db:
        officers.add(db, "fuzz-lockout", PASSPHRASE, CHEAP_COST, "test")
    officer_ids = [p.id for p in world.people.values()]
    return Target(world, report_ids, victim_ids, item_ids, officer_ids, "fuzz-lockout")


# --- strategies -----------------------------------------------------------------------


def path_segment(target: Target, rule: str, name: str) -> st.SearchStrategy[str]:
    """A path id: a real one, or anything at all, percent-encoded (or not) as sent."""
    if name == "officer_id":
        real = st.sampled_from([str(i) for i in target.officer_ids] + ["0", "-1", "2147483648"])
    elif rule == DELETE:
        real = st.sampled_from(target.victim_ids)
    else:
        real = st.sampled_from(target.report_ids + target.item_ids)
    return st.one_of(
        real,
        hostile_text.filter(lambda t: len(t) < 10_000).map(lambda t: percent(t.encode()).decode()),
        hostile_bytes.map(lambda b: percent(b).decode()),
        st.sampled_from(["%", "%zz", "%00", "..", ".", "%2F", "%2e%2e", "a;b", "x?y=1"]),
    )


def query_string() -> st.SearchStrategy[str]:
    name = st.one_of(st.sampled_from(FILTER_NAMES), hostile_text.filter(lambda t: len(t) < 100))
    value = st.one_of(
        st.sampled_from(
            ["received", "closed", "fraud", "retaliation", "1", "true", "x", "ECO", "all", "2025"]
        ),
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


def authorization(token: str) -> st.SearchStrategy[str | None]:
    latin1 = hostile_text.map(lambda t: t.encode("latin-1", "replace").decode("latin-1"))
    return st.one_of(
        st.just(f"Bearer {token}"),
        st.just(f"bearer   {token}  "),
        st.none(),
        latin1.filter(lambda t: len(t) < 10_000 and "\n" not in t and "\r" not in t),
        latin1.filter(lambda t: len(t) < 10_000 and "\n" not in t and "\r" not in t).map(
            lambda t: f"Bearer {t}"
        ),
        st.just(f"Bearer {token[:-2]}"),
        st.just(f"Bearer {token}{token}"),
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

base64_text = st.one_of(
    st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()),
    st.sampled_from(["", "=", "====", "A", "AA=", "!!!!", "YWJj\n", "YW Jj"]),
)


def body(target: Target) -> st.SearchStrategy[bytes]:
    """A request body: JSON objects with the right and wrong fields, and what is not JSON."""
    fields = st.dictionaries(st.sampled_from(BODY_NAMES), json_values, max_size=5)
    signin = st.fixed_dictionaries(
        {
            "username": st.sampled_from([target.locked_out, target.locked_out.upper() + " "]),
            "auth_key": st.one_of(base64_text, hostile_text),
            "code": st.one_of(st.text(alphabet="0123456789", max_size=8), hostile_text),
        },
        optional={"device": st.one_of(base64_text, hostile_text)},
    )
    sealed = st.fixed_dictionaries(
        {
            "kind": st.sampled_from(["reply", "note", "message", "file", "reveal", "x"]),
            "item_id": st.one_of(st.sampled_from(target.item_ids), st.text(max_size=40)),
            "size": st.one_of(st.integers(), st.floats(), hostile_text),
            "key_block": base64_text,
            "body": base64_text,
        }
    )
    statuses = st.fixed_dictionaries(
        {"status": st.sampled_from(["acknowledged", "under assessment", "closed", "reopened"])},
        optional={"outcome": st.sampled_from(["substantiated", "withdrawn", "nope"])},
    )
    referral = st.fixed_dictionaries(
        {
            "office": st.sampled_from(["OIO", "ECO", "XYZ", ""]),
            "keep_copy": json_values,
            "key_blocks": st.one_of(
                json_values, st.dictionaries(st.sampled_from(target.item_ids), base64_text)
            ),
        }
    )
    as_json = st.one_of(json_values, fields, signin, sealed, statuses, referral).map(
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
                b'{"detail": "\\ud800"}',  # a lone surrogate, valid JSON
                b'{"username": "\\udfff\\ud800", "auth_key": "AAAA", "code": "1"}',
                b'{"status": "closed", "outcome": "\\ud83d"}',
                b'{"action": "a\\u0000b"}',
                b'{"size": 1e999}',
                b'{"size": NaN}',
                b'{"assignee_id": 9223372036854775808}',
                b'{"assignee_id": true}',
                b'{"kind": "x", "kind": 3}',
                b'{"detail": "' + b"\xed\xa0\x80" + b'"}',
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
    """Below 500, no trace, and (but for a file body or a HEAD) a JSON object."""
    text = assert_handled(response, sent, what)
    if response.request.method == "HEAD":
        return
    if response.status_code >= 400:
        assert response.mimetype == "application/json", f"{what}: {text[:500]}"
        parsed = json.loads(text)
        assert isinstance(parsed, dict) and isinstance(parsed.get("error"), str), what
    elif response.status_code < 300 and text and response.mimetype != "application/octet-stream":
        # Flask's own answer to OPTIONS (an Allow header) and a 204 have no body at all;
        # a doubled slash gets Werkzeug's redirect to the path without it (a 308).
        assert response.mimetype == "application/json", f"{what}: {text[:500]}"
        assert isinstance(json.loads(text), dict), what


def api_still_works(target: Target) -> None:
    """After the fuzzing: a real sign-in, the inbox and a report still work; the chain holds."""
    world = target.world
    person = world.people["eco"]
    client = CaseServerClient(BASE_URL, transport=world.transport())
    world.clients.append(client)
    codes = Codes(world.instance, person.id, person.totp_secret)
    signed = sign_in(client, person.username, PASSPHRASE, codes.next())
    assert signed.me.username == person.username
    page = client.inbox(InboxQuery())
    assert page.total >= 1
    for row in page.rows:
        bundle = client.report(row.id)
        assert bundle.id == row.id and bundle.items
    # The ECO officer's own report was never deleted (only victims were).
    assert target.report_ids[1] in {row.id for row in page.rows}
    assert chain_intact(world.instance)


# --- Hypothesis: every route, anything at all ---------------------------------------------


def test_every_api_route_is_fuzzed_and_documented(world: CaseWorld) -> None:
    """The routes fuzzed below come from the URL map; Schemathesis reads the document."""
    rules = api_rules(world.app)
    assert f"{API}/signin" in rules and f"{API}/reports/<report_id>/status" in rules
    assert rules[-1] == DELETE
    document = world.app.test_client().get(f"{API}/openapi.json").json
    assert document is not None
    documented = {
        CONVERTER.sub(lambda m: "{" + m.group(1) + "}", path).replace("{", "<").replace("}", ">")
        for path in document["paths"]
    }
    in_map = {CONVERTER.sub(lambda m: "<" + m.group(1) + ">", rule) for rule in rules}
    assert documented == in_map


def test_api_answers_anything_without_a_server_error(world: CaseWorld) -> None:
    target = make_target(world)
    rules = api_rules(world.app)
    client = world.app.test_client()

    def one_request(rule: str, data: st.DataObject) -> None:
        path = rule
        for match in CONVERTER.finditer(rule):
            segment = data.draw(path_segment(target, rule, match.group(1)), label=match.group(1))
            path = path.replace(match.group(0), segment, 1)  # segments are percent-encoded
        assert "<" not in path, f"a variable of {rule} was not filled"
        query = data.draw(st.one_of(st.just(""), query_string()), label="query")
        allowed = sorted(
            {m for r in world.app.url_map.iter_rules() if r.rule == rule for m in r.methods or ()}
        )
        method = data.draw(
            st.one_of(st.sampled_from(allowed), st.sampled_from(METHODS)), label="method"
        )
        headers: dict[str, str] = {}
        auth = data.draw(authorization(target.token(rule)), label="authorization")
        if auth is not None:
            headers["Authorization"] = auth
        content_type = data.draw(st.sampled_from(CONTENT_TYPES), label="content_type")
        if content_type:
            headers["Content-Type"] = content_type
        payload = b""
        if method not in ("GET", "HEAD", "OPTIONS"):
            payload = data.draw(body(target), label="body")
        full = f"{path}?{query}" if query else path
        response = client.open(full, method=method, headers=headers, data=payload)
        sent = " ".join([full, auth or "", payload.decode("utf-8", "replace")])
        check_api_answer(response, sent, f"{method} {full}")

    for rule in rules:
        fuzz_one(rule, API_EXAMPLES, one_request)
    api_still_works(target)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="nesting-deeper-than-the-stack"),
        pytest.param(b'{"username": "\\ud800", "auth_key": "AAAA", "code": "1"}', id="surrogate"),
        pytest.param(b'{"username": "a\\u0000b", "auth_key": "AAAA", "code": "1"}', id="nul"),
        pytest.param(b'{"username": "admin", "auth_key": "%%%", "code": "1"}', id="bad-base64"),
        pytest.param(b'{"username": "admin", "auth_key": 7, "code": 1}', id="wrong-types"),
    ],
)
def test_signin_refuses_hostile_json_with_a_400_or_401(world: CaseWorld, payload: bytes) -> None:
    for path in (f"{API}/signin", f"{API}/signin/params"):
        response = world.app.test_client().post(path, data=payload, content_type="application/json")
        check_api_answer(response, "", f"POST {path}")
        # The parameters are handed out (a stable fake header) for any name that is text.
        allowed = (400, 401) if path.endswith("/signin") else (200, 400)
        assert response.status_code in allowed, path


# --- Schemathesis: requests generated from the OpenAPI document -----------------------------


def real_path_parameters(target: Target, path: str) -> list[dict[str, Any]]:
    """Path parameters with real ids, for the path's variables (none if it has none)."""
    reports = target.victim_ids if path.endswith("/delete") else target.report_ids
    if "{item_id}" in path:
        return [{"report_id": r, "item_id": i} for r in target.report_ids for i in target.item_ids]
    if "{report_id}" in path:
        return [{"report_id": r} for r in reports]
    if "{officer_id}" in path:
        return [{"officer_id": o} for o in target.officer_ids]
    return []


def run_cases(
    cases: st.SearchStrategy[schemathesis.Case[Any]],
    mode: GenerationMode,
    checks: list[Any],
    headers: Callable[[], dict[str, str]] | None = None,
) -> None:
    """Send the cases; no server error, no trace; positive cases must match the document."""

    @fuzz(SCHEMA_EXAMPLES)
    @given(case=cases)
    def one_case(case: schemathesis.Case[Any]) -> None:
        response = case.call(headers=headers() if headers is not None else None)
        label = f"{case.method} {case.formatted_path}"
        sent = json.dumps(
            [case.path_parameters, case.query, case.body], default=str, ensure_ascii=False
        )
        text = response.content.decode("utf-8", "replace")  # a file body is ciphertext
        assert response.status_code < 500, f"{label}: {text[:2000]}"
        assert_no_trace(text, sent)
        # Schemathesis's own check too; the document's checks only where the data is valid.
        chosen = [not_a_server_error, *(checks if mode is GenerationMode.POSITIVE else [])]
        case.validate_response(response, checks=chosen)

    one_case()


def test_schemathesis_finds_no_server_error_and_answers_match_the_document(
    world: CaseWorld,
) -> None:
    target = make_target(world)
    schema = schemathesis.openapi.from_wsgi(f"{API}/openapi.json", world.app)
    positive_checks = [
        openapi_checks.status_code_conformance,
        openapi_checks.content_type_conformance,
        openapi_checks.response_headers_conformance,
        openapi_checks.response_schema_conformance,
    ]
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the document is valid: every operation loads
        operations.append(result.ok())
    delete_path = DELETE.replace("<", "{").replace(">", "}")
    operations.sort(key=lambda op: op.path == delete_path)  # deletion last
    called: set[str] = set()
    for operation in operations:
        rule = CONVERTER.sub(lambda m: "<" + m.group(1) + ">", operation.path)
        rule = rule.replace("{", "<").replace("}", ">")
        headers = {"Authorization": f"Bearer {target.token(rule)}"}
        fresh = (
            (lambda: {"Authorization": f"Bearer {target.token(SIGNOUT)}"})
            if rule == SIGNOUT
            else None
        )
        # Only what has parameters or a body can be sent wrong (the document itself cannot).
        negatable = bool(list(operation.iter_parameters())) or bool(operation.body)
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if negatable else [])
        for mode in modes:
            strategies = [operation.as_strategy(generation_mode=mode, headers=headers)]
            # Real ids are valid values: a negative case with them needs a body to spoil.
            if mode is GenerationMode.POSITIVE or operation.body:
                strategies += [
                    operation.as_strategy(
                        generation_mode=mode, headers=headers, path_parameters=real
                    )
                    for real in real_path_parameters(target, operation.path)
                ]
            try:
                run_cases(st.one_of(strategies), mode, positive_checks, fresh)
            except Unsatisfiable:
                # Schemathesis found nothing in the document it could send wrong (e.g. an
                # optional body whose every value is valid); the positive cases ran.
                assert mode is GenerationMode.NEGATIVE, operation.path
                FIGURES.count("operations with nothing to send wrong (negative cases skipped)")
            except BaseException as failed:
                failed.add_note(f"operation: {operation.method.upper()} {operation.path} ({mode})")
                raise
        called.add(operation.path)
    # Every operation but the document itself was fuzzed (the raw fuzzing above sends it).
    document = world.app.test_client().get(f"{API}/openapi.json").json
    assert document is not None
    assert called == set(document["paths"]) - {f"{API}/openapi.json"}
    api_still_works(target)


def test_the_fuzzing_reaches_past_the_lookups(world: CaseWorld) -> None:
    """The fuzz targets are real: each token works, each report id is found, deletion deletes.

    Without this, a fuzz run whose tokens or ids were all wrong would pass on
    401s and 404s alone.
    """
    target = make_target(world)
    client = world.app.test_client()
    for rule in (f"{API}/reports", f"{API}/officers"):
        answer = client.get(rule, headers={"Authorization": f"Bearer {target.token(rule)}"})
        assert answer.status_code == 200, rule
    eco = {"Authorization": f"Bearer {target.token(f'{API}/reports')}"}
    assert client.get(f"{API}/reports/{target.report_ids[1]}", headers=eco).status_code == 200
    ended = {"Authorization": f"Bearer {target.token(SIGNOUT)}"}
    assert client.post(SIGNOUT, headers=ended).status_code < 300
    assert client.get(f"{API}/me", headers=ended).status_code == 401
    victim = target.victim_ids[0]
    assert client.post(f"{API}/reports/{victim}/delete", headers=eco).status_code == 200
    with world.instance.sessions() as db:
        assert db.get(Report, victim) is None
