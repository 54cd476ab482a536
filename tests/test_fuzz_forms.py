"""Fuzzing every form of both interfaces: never a server error, never a trace, and still working.

The two interfaces with forms are the source interface and the reviewer app
(the officer's own machine), which talks to the real case server in this
process; the case server's JSON API is fuzzed in test_fuzz_api.py. Each POST
route is in a fuzz table (a test checks the table against the apps' URL
maps, and every form field the pages render against the table), with the
state a client needs to reach it: a fresh visitor, a source with a confirmed
codename, a signed-in source, an officer of the right kind. Hypothesis
then sends each route, with a valid CSRF token and session, fields holding
arbitrary text (Unicode, control characters, NUL, huge strings), fields
missing or repeated, bodies that are not UTF-8 (surrogates as bytes, overlong
forms), broken percent-encoding, JSON instead of a form, and multipart bodies
with arbitrary file names, content types and framing. Every GET route is sent
hostile path segments and query strings. Afterwards the apps must still work,
every item the case server stores must still open in the reviewer app
(`casefile.open_thread`, nothing damaged), and the audit chain must hold.
"""

from __future__ import annotations

import functools
import html
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from werkzeug.datastructures import MultiDict
from werkzeug.test import TestResponse, encode_multipart

from dropbox.models import Item, ItemKind, Officer, Report
from source_interface.views import DETAIL_FIELDS, IDENTITY_FIELDS
from tests.fuzz_helpers import (
    assert_handled,
    encoded_piece,
    fuzz,
    fuzz_each,
    hostile_bytes,
    hostile_text,
    office_reads,
    percent,
    urlencoded,
)
from tests.gpg_helpers import public_key
from tests.reviewer_helpers import (
    PASSPHRASE,
    World,
    add_officer,
    add_officer_enrolled_before_x_wing,
    chain_intact,
    fresh_code,
    post_form,
    read_out,
    sign_in,
    signed_in_client,
    source_report,
)
from tests.source_helpers import csrf_token, login, new_codename, submit_report

pytestmark = pytest.mark.database_engine

# --- the fuzz tables -------------------------------------------------------------------

# Every POST route of the source interface and the fields its forms send.
SOURCE_FORMS: dict[str, tuple[str, ...]] = {
    "confirm_codename": ("codename", "written_down"),
    "different_codename": (),
    "submit_report": (
        "category",
        "message",
        *DETAIL_FIELDS,
        "safety_risk",
        *IDENTITY_FIELDS,
        "website",
        "files",
    ),
    "login": ("codename",),
    "answer": ("message", "files"),
    "delete_message": (),
    "logout": (),
}

# Every POST route of the reviewer app, by endpoint, and the fields its forms send.
REVIEWER_FORMS: dict[str, tuple[str, ...]] = {
    "signin.login": ("username", "passphrase", "code"),
    "signin.logout": (),
    "signin.enrol": ("username", "code", "passphrase", "confirm_passphrase"),
    "signin.enrol_confirm": ("code",),
    "reports.reply": ("message", "acknowledge"),
    "reports.note": ("text",),
    "reports.assign": ("assignee_id",),
    "reports.status": ("status", "outcome", "reason"),
    "reports.refer": ("office", "keep_copy"),
    "reports.reveal": ("reason",),
    "reports.delete": ("confirm",),
    "reports.export_key": ("key", "key_file"),
    "reports.export_report": ("key", "fingerprint"),
    "account.change_passphrase": (
        "current_passphrase",
        "new_passphrase",
        "confirm_passphrase",
        "code",
    ),
    "account.reenrol_totp": ("current_passphrase",),
    "account.replace_key": ("current_passphrase", "code"),
    "account.confirm_totp": ("code",),
    "account.choose_notifications": ("email", "mode", "openpgp_key", "remove_openpgp_key"),
    "admin.officers": ("username", "display_name", "is_admin", "code"),
    "admin.reinvite": ("code",),
    "admin.deactivate": ("code",),
    "admin.grant": (
        "office",
        "officer_id",
        "fingerprint",
        "key_source",
        "recovery_file",
        "recovery_passphrase",
        "code",
    ),
}

UPLOAD_ROUTES = ("submit_report", "answer")
FORM = "application/x-www-form-urlencoded"
# Examples per route: small enough for the whole file to take well under a minute per suite run.
SOURCE_EXAMPLES = 10
UPLOAD_EXAMPLES = 20
REVIEWER_EXAMPLES = 8
GET_EXAMPLES = 80

# Before the random examples, each field of each form and each path variable holds each of
# these in turn (the other fields realistic): the values that have broken these apps before.
KILLERS = ["\x00", "²", "2147483648", "x" * 300_000]
KILLER_BYTES = [b"%ED%A0%80", b"%zz%"]  # a surrogate as UTF-8 bytes; broken percent-encoding
KILLER_SEGMENTS = ["%00", "%C2%B2", "2147483648", "99999999999999999999", "%ED%A0%80", "y" * 3000]
CODENAME_LIKE = "abacus bamboo candle dolphin eagle falcon garnet"
CONVERTER = re.compile(r"<(?:([a-z]+)(?:\([^)]*\))?:)?([a-z_]+)>")  # <int(max=9):id>


def post_routes(app: Flask) -> set[str]:
    """The endpoints that take POST, from the URL map."""
    return {rule.endpoint for rule in app.url_map.iter_rules() if "POST" in (rule.methods or set())}


def get_rules(app: Flask) -> list[str]:
    """The GET routes (static files aside), from the URL map."""
    return sorted(
        rule.rule
        for rule in app.url_map.iter_rules()
        if "GET" in (rule.methods or set()) and rule.endpoint != "static"
    )


class FormFields(HTMLParser):
    """The forms of a page: each POST form's action and the names of its fields."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, set[str]]] = []
        self._current: set[str] | None = None  # the fields of the POST form being read

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "form":
            self._current = None
            if (named.get("method") or "").lower() == "post":
                self._current = set()
                self.forms.append((html.unescape(named.get("action") or ""), self._current))
        elif tag in ("input", "select", "textarea", "button") and self._current is not None:
            self._current.add(named.get("name") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def posted_fields(app: Flask, page: str) -> dict[str, set[str]]:
    """For each form of a rendered page: its endpoint and the fields it sends (CSRF aside)."""
    parser = FormFields()
    parser.feed(page)
    adapter = app.url_map.bind(app.config.get("SERVER_NAME") or "localhost")
    found: dict[str, set[str]] = {}
    for action, names in parser.forms:
        endpoint, _ = adapter.match(urlsplit(action).path, method="POST")
        found.setdefault(endpoint, set()).update(names - {"csrf_token", ""})
    return found


# --- strategies ---------------------------------------------------------------------------


def value_for(realistic: list[str]) -> st.SearchStrategy[str]:
    """A field's value: one the app expects (to get past the first checks) or anything."""
    if realistic:
        return st.one_of(st.sampled_from(realistic), hostile_text)
    return hostile_text


@dataclass
class Sent:
    """A request as sent, and the text it holds (which a page may echo back)."""

    body: bytes
    content_type: str
    echo: str
    headers: dict[str, str] = field(default_factory=dict)


def form_request(
    fields: tuple[str, ...], realistic: dict[str, list[str]], token: str
) -> st.SearchStrategy[Sent]:
    """A form body for these fields: urlencoded by hand (anything goes), multipart, or JSON."""
    names = st.one_of(st.sampled_from([*fields, "csrf_token"]), hostile_text) if fields else None

    @st.composite
    def build(draw: st.DrawFn) -> Sent:
        chosen: list[tuple[str, str]] = []
        for name in fields:
            if name == "files":
                continue
            choice = draw(st.sampled_from(["value", "value", "missing", "twice"]))
            if choice != "missing":
                chosen.append((name, draw(value_for(realistic.get(name, [])))))
            if choice == "twice":
                chosen.append((name, draw(value_for(realistic.get(name, [])))))
        if names is not None:
            chosen += draw(st.lists(st.tuples(names, hostile_text), max_size=2))
        keep_token = draw(st.sampled_from([True, True, True, True, False]))
        echo = " ".join(f"{n} {v}" for n, v in chosen)
        encoding = draw(st.sampled_from(["urlencoded", "urlencoded", "raw", "multipart", "json"]))
        pairs = ([("csrf_token", token)] if keep_token else []) + chosen
        if encoding == "urlencoded":
            body = urlencoded((percent(n.encode()), percent(v.encode())) for n, v in pairs)
            return Sent(body, "application/x-www-form-urlencoded", echo)
        if encoding == "raw":
            raw = draw(st.lists(st.tuples(encoded_piece, encoded_piece), max_size=6))
            start = [(b"csrf_token", token.encode())] if keep_token else []
            mixed = start + [(percent(n.encode()), percent(v.encode())) for n, v in chosen] + raw
            return Sent(urlencoded(mixed), "application/x-www-form-urlencoded", echo)
        if encoding == "multipart":
            boundary, body = encode_multipart(MultiDict(pairs), boundary="fuzzformboundary")
            return Sent(body, f"multipart/form-data; boundary={boundary}", echo)
        headers = {"X-CSRFToken": token} if keep_token else {}
        return Sent(json.dumps(dict(pairs)).encode(), "application/json", echo, headers)

    return build()


def killer_forms(
    fields: tuple[str, ...], realistic: dict[str, list[str]]
) -> list[tuple[list[tuple[bytes, bytes]], str]]:
    """The realistic form, then each field in turn holding each killer: (encoded pairs, echo)."""
    base = {name: (realistic.get(name) or ["x"])[0] for name in fields if name != "files"}
    echo = " ".join(base.values())
    forms = [([(n.encode(), percent(v.encode())) for n, v in base.items()], echo)]
    for name in base:
        for value in [percent(k.encode()) for k in KILLERS] + KILLER_BYTES:
            pairs = [
                (n.encode(), value if n == name else percent(v.encode())) for n, v in base.items()
            ]
            forms.append((pairs, f"{value.decode()} {echo}"))
    return forms


def sweep(
    app: Flask,
    endpoint: str,
    fields: tuple[str, ...],
    realistic: dict[str, list[str]],
    ids: dict[str, list[str]],
    client_for: Callable[[], FlaskClient],
) -> None:
    """Post every killer form to the real path, and the realistic form to every killer path."""
    rule = next(r.rule for r in app.url_map.iter_rules() if r.endpoint == endpoint)
    forms = killer_forms(fields, realistic)
    for n, path in enumerate(killer_paths(rule, ids)):
        for pairs, echo in forms if n == 0 else forms[:1]:
            client = client_for()
            token = csrf_token(client.get("/login").text).encode()
            body = urlencoded([(b"csrf_token", token), *pairs])
            response = client.post(path, data=body, content_type=FORM)
            assert_handled(response, f"{echo} {path}", f"{endpoint} {path}")


def killer_paths(rule: str, ids: dict[str, list[str]]) -> Iterator[str]:
    """The rule with real ids, then with each variable in turn holding each killer segment."""
    found = list(CONVERTER.finditer(rule))
    real = {m.group(0): (ids.get(m.group(2)) or ["1"])[0] for m in found}
    for match in [None, *found]:
        for segment in KILLER_SEGMENTS if match is not None else [""]:
            path = rule
            for m in found:
                path = path.replace(m.group(0), segment if m is match else real[m.group(0)], 1)
            assert "<" not in path, f"a variable of {rule} was not filled"
            yield path


def send(client: FlaskClient, path: str, sent: Sent) -> TestResponse:
    return client.post(path, data=sent.body, content_type=sent.content_type, headers=sent.headers)


def path_segment(real: list[str]) -> st.SearchStrategy[str]:
    """A path id: a real one, or anything, percent-encoded as a browser would send it."""
    return st.one_of(
        st.sampled_from(real) if real else st.nothing(),
        hostile_text.filter(lambda t: len(t) < 5_000).map(lambda t: percent(t.encode()).decode()),
        hostile_bytes.map(lambda b: percent(b).decode()),
        st.sampled_from(["%", "%zz", "%00", "..", "%2F", "0", "-1", "99999999999999999999999"]),
    )


def fill_path(rule: str, draw: Callable[..., Any], ids: dict[str, list[str]]) -> str:
    """The rule with each of its variables drawn from `ids` (real values) or anything."""
    path = rule
    for match in CONVERTER.finditer(rule):
        converter, name = match.groups()
        real = ids.get(name, [])
        if converter == "int":
            segment = draw(
                st.one_of(
                    st.sampled_from(real) if real else st.nothing(),
                    st.integers(min_value=0).map(str),
                    path_segment([]),
                )
            )
        else:
            segment = draw(path_segment(real))
        path = path.replace(match.group(0), segment, 1)
    assert "<" not in path, f"a variable of {rule} was not filled"
    return path


query_strings = st.one_of(
    st.just(""),
    st.lists(st.tuples(encoded_piece, encoded_piece), max_size=5).map(
        lambda pairs: urlencoded(pairs).decode("latin-1")
    ),
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    *("page", "status", "category", "sort", "next", "mine", "urgent"),
                    # The statistics page's choices (a GET form).
                    *("office", "year", "from_month", "to_month"),
                ]
            ),
            hostile_text.filter(lambda t: len(t) < 5_000),
        ),
        max_size=4,
    ).map(lambda pairs: "&".join(f"{k}={percent(v.encode()).decode()}" for k, v in pairs)),
)


# --- the source interface -------------------------------------------------------------------


@dataclass
class SourceWorld:
    """A source with a report, and what a test needs to reach each form."""

    app: Flask
    codename: str
    client: FlaskClient
    office_message_ids: list[str]
    pending: FlaskClient | None = None  # a codename confirmed, no report sent yet


def source_world(source: Flask) -> SourceWorld:
    source.extensions["dropbox.limiter"].enabled = False  # fuzz past the rate limits
    codename, client = source_report(source, "retaliation", files=[("a.txt", b"evidence")])
    thread = client.get("/thread").get_data(as_text=True)
    ids = re.findall(r'action="/thread/messages/([0-9a-f]+)/delete"', thread)
    assert ids, "the thread offers no office message to delete"
    return SourceWorld(source, codename, client, ids)


def source_client(sw: SourceWorld, endpoint: str) -> tuple[FlaskClient, str]:
    """A client in the state this form expects, and the path to post to."""
    if endpoint == "submit_report":
        if sw.pending is None or sw.pending.get("/report").status_code != 200:  # it was sent
            sw.pending = sw.app.test_client()
            new_codename(sw.pending)
        return sw.pending, "/report"
    if endpoint in ("answer", "delete_message"):
        if sw.client.get("/thread").status_code != 200:  # a fuzzed request may have ended it
            assert login(sw.client, sw.codename).status_code == 302
        return sw.client, "/thread/answer"
    client = sw.app.test_client()
    if endpoint == "logout":
        assert login(client, sw.codename).status_code == 302
        return client, "/logout"
    paths = {"confirm_codename": "/codename", "different_codename": "/codename/new"}
    return client, {**paths, "login": "/login"}[endpoint]


def source_realistic(sw: SourceWorld) -> dict[str, list[str]]:
    return {
        "codename": [sw.codename, sw.codename.upper().replace(" ", "-"), CODENAME_LIKE],
        "written_down": ["yes"],
        "category": ["retaliation", "fraud", "not_sure"],
        "message": ["Something happened at the depot last Friday night."],
        "safety_risk": ["yes"],
        "protected_activity_date": ["2024-05-01"],
    }


def source_still_works(sw: SourceWorld) -> None:
    """A new report, a sign-in and an answer still work."""
    codename, client = source_report(sw.app, "fraud", files=[("b.txt", b"more")])
    client.post("/logout", data={"csrf_token": csrf_token(client.get("/thread").text)})
    assert login(client, codename).status_code == 302
    thread = client.get("/thread")
    assert thread.status_code == 200
    answered = post_form(client, "/thread", "/thread/answer", {"message": "One more thing."})
    assert answered.status_code == 302


# Who reads each office's reports when the fuzzing is over (an officer of that office).
READERS = {"ECO": "eco_admin", "OIO": "oio"}


def every_item_decrypts(world: World, case_app: Flask) -> None:
    """Whatever was sent, every item the case server stores opens in the reviewer app.

    Each report is fetched from the case server by an officer of its office
    and opened with the reviewer app's own code: every item decrypts, none
    is damaged, and the source's key bound in the first item still matches.
    """
    with world.instance.sessions() as db:
        by_office: dict[str, list[str]] = {}
        for report in db.execute(select(Report)).scalars():
            by_office.setdefault(report.office_code, []).append(report.id)
    assert by_office
    for office, report_ids in by_office.items():
        person = world.people[READERS[office]]
        threads = office_reads(
            world.instance,
            case_app,
            person.username,
            person.passphrase,
            person.totp_secret,
            report_ids,
        )
        for report_id, thread in threads.items():
            assert thread.entries and not thread.damaged, report_id
            assert not any(e.damaged for e in thread.entries), report_id
            assert thread.source_key == "matches", (report_id, thread.source_key)


def nothing_left_behind(world: World) -> None:
    """Refused, cut-off and failed uploads leave no blob and no partial write."""
    store = world.instance.store
    with world.instance.sessions() as db:
        kept = set(db.execute(select(Item.blob)).scalars())
    assert set(store.names()) == kept
    assert not list(store.temp_dir.iterdir())


def test_every_post_route_is_in_a_fuzz_table(source: Flask, reviewer: Flask) -> None:
    assert post_routes(source) == set(SOURCE_FORMS)
    assert post_routes(reviewer) == set(REVIEWER_FORMS)


def test_every_field_the_source_pages_render_is_fuzzed(source: Flask) -> None:
    sw = source_world(source)
    fresh = source.test_client()
    pages = [fresh.get(p).text for p in ("/", "/codename", "/login")]
    pending = source.test_client()
    pages.append(new_codename(pending)[1])
    pages.append(sw.client.get("/thread").text)
    found: dict[str, set[str]] = {}
    for page in pages:
        for endpoint, names in posted_fields(source, page).items():
            found.setdefault(endpoint, set()).update(names)
    assert set(found) == set(SOURCE_FORMS)
    for endpoint, names in found.items():
        assert names <= set(SOURCE_FORMS[endpoint]), (endpoint, names)


def test_source_forms_take_anything_without_a_server_error(
    source: Flask, world: World, case_app: Flask
) -> None:
    sw = source_world(source)
    realistic = source_realistic(sw)

    def one_post(endpoint: str, data: st.DataObject) -> None:
        client, path = source_client(sw, endpoint)
        if endpoint == "delete_message":
            item = data.draw(path_segment(sw.office_message_ids), label="item_id")
            path = f"/thread/messages/{item}/delete"
        token = csrf_token(client.get("/login").text)
        sent = data.draw(form_request(SOURCE_FORMS[endpoint], realistic, token), label="request")
        response = send(client, path, sent)
        assert_handled(response, sent.echo + path, f"{endpoint} {path}")

    for endpoint in sorted(SOURCE_FORMS):
        ids = {"item_id": sw.office_message_ids}
        fields = SOURCE_FORMS[endpoint]
        client_for = functools.partial(lambda e: source_client(sw, e)[0], endpoint)
        sweep(source, endpoint, fields, realistic, ids, client_for)
    assert fuzz_each(sorted(SOURCE_FORMS), SOURCE_EXAMPLES, one_post) == set(SOURCE_FORMS)
    source_still_works(sw)
    every_item_decrypts(world, case_app)
    assert chain_intact(world.instance)


# Multipart bodies written by hand: what a browser sends, and what it never would.

file_names = st.one_of(
    hostile_text.filter(lambda t: len(t) < 5_000).map(lambda t: t.encode()),
    hostile_bytes,
    st.sampled_from(
        [
            b"",
            b"../../../etc/passwd",
            b"C:\\Users\\me\\report.pdf",
            b'quote"in"name.pdf',
            b"semi;colon.pdf",
            b".hidden",
            b"a" * 1000 + b".pdf",
            "été 2024 - rapport.pdf".encode(),
            b"\xed\xa0\x80.pdf",
            b"nul\x00.pdf",
        ]
    ),
)
content_types = st.one_of(
    st.sampled_from(
        [
            b"application/pdf",
            b"text/html; charset=utf-8",
            b"image/svg+xml",
            b"application/octet-stream",
            b"",
            b"nonsense",
            b"a/b/c",
            b"text/plain; charset=\xff",
            b"x" * 500,
        ]
    ),
    hostile_bytes.filter(lambda b: b"\r" not in b and b"\n" not in b),
)
file_contents = st.one_of(
    st.binary(max_size=2_000),
    st.integers(min_value=0, max_value=3).map(lambda n: bytes(65_536 * n + 3)),
)


@st.composite
def multipart_request(
    draw: st.DrawFn, fields: tuple[str, ...], realistic: dict[str, list[str]], token: str
) -> Sent:
    """A multipart body with file parts of any name, type and content, framed well or badly."""
    boundary = draw(st.sampled_from(["fuzzboundary", "----WebKitFormBoundaryx7", "a" * 69, "b"]))
    parts: list[bytes] = []
    echo: list[str] = []
    if draw(st.sampled_from([True, True, True, False])):
        parts.append(b'Content-Disposition: form-data; name="csrf_token"\r\n\r\n' + token.encode())
    for name in fields:
        if name == "files" or not draw(st.booleans()):
            continue
        value = draw(value_for(realistic.get(name, [])))
        echo.append(value)
        header = b'Content-Disposition: form-data; name="' + name.encode() + b'"'
        if draw(st.sampled_from([False, False, False, True])):  # a text field sent as a file
            header += b'; filename="' + name.encode() + b'.txt"'
        parts.append(header + b"\r\n\r\n" + value.encode())
    if draw(st.sampled_from([False] * 9 + [True])):  # more parts than Werkzeug takes: a 413
        many = b'Content-Disposition: form-data; name="files"; filename="a.txt"\r\n\r\nx'
        parts += [many] * 1001
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        name = draw(file_names)
        echo.append(name.decode("utf-8", "replace"))
        disposition = b'Content-Disposition: form-data; name="files"; filename="' + name + b'"'
        if draw(st.booleans()):
            disposition += b"; filename*=UTF-8''" + percent(name)
        headers = [disposition]
        if draw(st.booleans()):
            headers.append(b"Content-Type: " + draw(content_types))
        if draw(st.sampled_from([False, False, False, True])):
            headers = [draw(hostile_bytes).replace(b"\r\n", b"")]  # no usable disposition
        content = draw(file_contents)
        if draw(st.sampled_from([False, False, False, True])):
            content += b"\r\n--" + boundary.encode()[:-1]  # almost the boundary, inside a file
        parts.append(b"\r\n".join(headers) + b"\r\n\r\n" + content)
    delimiter = b"--" + boundary.encode()
    body = b"".join(delimiter + b"\r\n" + part + b"\r\n" for part in parts)
    ending = draw(st.sampled_from(["close", "close", "close", "none", "cut", "junk"]))
    if ending == "close":
        body += delimiter + b"--\r\n"
    elif ending == "cut":
        body = body[: draw(st.integers(min_value=0, max_value=len(body)))]
    elif ending == "junk":
        body += draw(st.binary(max_size=100))
    declared = draw(
        st.sampled_from(
            [
                f"multipart/form-data; boundary={boundary}",
                f"multipart/form-data; boundary={boundary}",
                f'multipart/form-data; boundary="{boundary}"',
                "multipart/form-data",
                "multipart/form-data; boundary=",
                "multipart/form-data; boundary=other",
                f"multipart/mixed; boundary={boundary}",
                "multipart/form-data; boundary=" + "c" * 300,
            ]
        )
    )
    return Sent(body, declared, " ".join(echo))


def test_uploads_take_any_multipart_body_without_a_server_error(
    source: Flask, world: World, case_app: Flask
) -> None:
    sw = source_world(source)
    realistic = source_realistic(sw)
    seen: set[int] = set()

    def one_upload(endpoint: str, data: st.DataObject) -> None:
        client, path = source_client(sw, endpoint)
        token = csrf_token(client.get("/login").text)
        sent = data.draw(multipart_request(SOURCE_FORMS[endpoint], realistic, token))
        response = send(client, path, sent)
        assert_handled(response, sent.echo, f"{endpoint} upload")
        seen.add(response.status_code)

    fuzz_each(UPLOAD_ROUTES, UPLOAD_EXAMPLES, one_upload)
    assert 302 in seen and 400 in seen  # some were taken, some refused
    nothing_left_behind(world)
    source_still_works(sw)
    every_item_decrypts(world, case_app)


@pytest.mark.parametrize(
    ("name", "content", "stored"),
    [
        pytest.param("../../../etc/passwd", b"x", "passwd", id="path"),
        pytest.param("nul\x00.pdf", b"x", "nul.pdf", id="nul"),
        pytest.param("\u202etxt.exe", b"x", "txt.exe", id="direction-mark"),
        pytest.param("", b"", None, id="empty-part-is-no-file"),
    ],
)
def test_a_file_name_is_cleaned_before_it_is_sealed(
    source: Flask,
    reviewer: Flask,
    case_app: Flask,
    world: World,
    name: str,
    content: bytes,
    stored: str | None,
) -> None:
    client = source.test_client()
    _, form = new_codename(client)
    sent = submit_report(
        client, form, {"category": "fraud", "message": "x" * 40}, [(name, content)]
    )
    assert sent.status_code == 302, sent.text
    with world.instance.sessions() as db:
        report = db.execute(select(Report)).scalar_one()
        assert report.office_code == "OIO"
    person = world.people["oio"]
    (thread,) = office_reads(
        world.instance,
        case_app,
        person.username,
        person.passphrase,
        person.totp_secret,
        [report.id],
    ).values()
    names = [e.file_name for e in thread.entries if e.file_name is not None]
    assert names == ([stored] if stored else [])
    # What the officer's page shows: the cleaned name, never the one sent.
    page = signed_in_client(reviewer, world, "oio").get(f"/reports/{report.id}").text
    if stored:
        assert html.escape(stored) in page
    if name and name != stored:
        assert html.escape(name) not in page


def test_get_routes_take_any_path_and_query_without_a_server_error(
    source: Flask, reviewer: Flask, world: World
) -> None:
    sw = source_world(source)
    officer = signed_in_client(reviewer, world, "eco_admin")
    with world.instance.sessions() as db:
        report_ids = list(db.execute(select(Report.id)).scalars())
        file_ids = list(db.execute(select(Item.id).where(Item.kind == ItemKind.FILE)).scalars())
    ids = {
        "report_id": report_ids,
        "item_id": sw.office_message_ids + file_ids,
        "code": ["en", "fr", "es"],
    }
    apps = [("source", sw.client, get_rules(source)), ("reviewer", officer, get_rules(reviewer))]
    seen: set[str] = set()

    @fuzz(GET_EXAMPLES)
    @given(app=st.sampled_from(apps), data=st.data())
    def one_get(app: tuple[str, FlaskClient, list[str]], data: st.DataObject) -> None:
        name, client, rules = app
        rule = data.draw(st.sampled_from(rules), label="rule")
        path = fill_path(rule, data.draw, ids)
        query = data.draw(query_strings, label="query")
        full = f"{path}?{query}" if query else path
        response = client.get(full)
        assert_handled(response, full, f"{name} GET {full}")
        seen.add(f"{name} {rule}")

    one_get()
    assert len(seen) >= (len(apps[0][2]) + len(apps[1][2])) // 2
    assert sw.client.get("/thread").status_code == 200
    assert officer.get("/").status_code == 200
    assert officer.get(f"/reports/{report_ids[0]}").status_code == 200


# --- the reviewer app ------------------------------------------------------------------------


@dataclass
class ReviewerWorld:
    """Signed-in officers for each kind of form, reports to act on, an enrolment under way."""

    app: Flask
    case_app: Flask
    world: World
    clients: dict[str, FlaskClient]
    report_ids: list[str]  # the ECO report, then the OIO one
    doomed_id: str  # the deletion form's own report
    victim_id: int  # the officer the deactivation and invitation forms may act on
    realistic: dict[str, list[str]]
    enrolment_page: str  # the TOTP page that asks an enrolling officer for a first code
    totp_page: str  # the account's TOTP re-enrolment page


def _enrolment_code(page: str) -> str:
    found = re.search(r'class="enrolment-code"><code>([^<]+)</code>', page)
    assert found is not None, page
    return found.group(1)


def reviewer_world(reviewer: Flask, source: Flask, case_app: Flask, world: World) -> ReviewerWorld:
    case_app.extensions["dropbox.limiter"].enabled = False  # fuzz past the rate limits
    source.extensions["dropbox.limiter"].enabled = False
    source_report(
        source,
        "retaliation",
        extra={"identity_name": "Jamie Doe"},
        files=[("evidence.txt", b"a file")],
    )
    source_report(source, "fraud")
    source_report(source, "retaliation", message="This one is for the deletion form to delete.")
    with world.instance.sessions() as db:
        # Reports are dated to the day, so the day cannot order them: the first ECO report
        # has more items (its file and identity details) than the one to be deleted.
        rows = db.execute(
            select(Report.id, Report.designation, Report.office_code).order_by(
                Report.office_code.desc(), Report.next_seq.desc()
            )
        ).all()
    (oio_id, _, oio_office), (eco_id, _, eco_office), (doomed_id, designation, _) = rows
    assert (eco_office, oio_office) == ("ECO", "OIO")
    for role in ("fuzz-login", "fuzz-logout", "fuzz-account"):
        add_officer(world, role, ["ECO"])
    victim = add_officer(world, "fuzz-victim", ["OIO"])
    # Enrolled before X-Wing: their account page offers a new key.
    add_officer_enrolled_before_x_wing(world, "fuzz-early", ["ECO"])
    with world.instance.sessions() as db:
        victim_row = db.get(Officer, victim.id)
        assert victim_row is not None
        victim_fingerprint = read_out(victim_row)
    admin_person = world.people["eco_admin"]
    admin = signed_in_client(reviewer, world, "eco_admin")

    def invite(username: str) -> str:
        code = fresh_code(world.instance, admin_person)
        made = post_form(
            admin,
            "/admin/officers",
            "/admin/officers",
            {"username": username, "display_name": "Fuzz", "code": code},
        )
        assert made.status_code == 200, made.text
        return _enrolment_code(made.text)

    enrolling = reviewer.test_client()
    step = post_form(
        enrolling,
        "/enrol",
        "/enrol",
        {
            "username": "fuzz-enrolling",
            "code": invite("fuzz-enrolling"),
            "passphrase": PASSPHRASE,
            "confirm_passphrase": PASSPHRASE,
        },
    )
    assert step.status_code == 200 and "otpauth://" in step.text, step.text
    new_code = invite("fuzz-new")
    account = signed_in_client(reviewer, world, "fuzz-account")
    totp = post_form(account, "/account", "/account/totp", {"current_passphrase": PASSPHRASE})
    assert totp.status_code == 200 and "otpauth://" in totp.text, totp.text
    clients = {
        "eco": signed_in_client(reviewer, world, "eco"),
        "admin": admin,
        "account": account,
        "early": signed_in_client(reviewer, world, "fuzz-early"),
        "enrolling": enrolling,
    }
    realistic = {
        "username": ["fuzz-login", "FUZZ-LOGIN ", "fuzz-new", "new-officer", "a"],
        "passphrase": [PASSPHRASE],
        "current_passphrase": [PASSPHRASE],
        "new_passphrase": ["another long passphrase"],
        "confirm_passphrase": ["another long passphrase", PASSPHRASE],
        "code": ["123456", new_code],
        "message": ["Could you tell us more about the depot?"],
        "text": ["Call the depot manager."],
        "assignee_id": [str(world.people["eco"].id), str(victim.id), "0", "²"],
        "status": ["acknowledged", "under assessment", "referred", "closed", "reopened"],
        "outcome": ["substantiated", "withdrawn", "out of scope"],
        "reason": ["Needed for the interview plan."],
        "office": ["ECO", "OIO"],
        "keep_copy": ["yes"],
        "acknowledge": ["yes"],
        "confirm": [designation, designation.upper()],
        "display_name": ["Fuzz Officer"],
        "is_admin": ["yes"],
        "officer_id": [str(victim.id), "²", "99999999999999999999"],
        "fingerprint": [victim_fingerprint, victim_fingerprint.lower().replace(" ", ""), "ABCD"],
        "key_source": ["held", "recovery"],
        "recovery_passphrase": [PASSPHRASE],
        "recovery_file": ["not a recovery file"],
    }
    return ReviewerWorld(
        reviewer,
        case_app,
        world,
        clients,
        [eco_id, oio_id],
        doomed_id,
        victim.id,
        realistic,
        step.text,
        totp.text,
    )


def reviewer_client(rw: ReviewerWorld, endpoint: str) -> FlaskClient:
    """A client in the state this form expects."""
    if endpoint in ("signin.login", "signin.enrol"):
        return rw.app.test_client()
    if endpoint == "signin.logout":
        client = rw.app.test_client()
        assert sign_in(client, rw.world.instance, rw.world.people["fuzz-logout"]).status_code == 302
        return client
    role = {
        "signin.enrol_confirm": "enrolling",
        "account.change_passphrase": "account",
        "account.reenrol_totp": "account",
        "account.replace_key": "early",
        "account.confirm_totp": "account",
    }.get(endpoint, "admin" if endpoint.startswith("admin.") else "eco")
    client = rw.clients[role]
    if role in ("eco", "admin", "account", "early") and client.get("/account").status_code != 200:
        # A fuzzed request may have signed the officer out (a 401 from the server ends it).
        assert sign_in(client, rw.world.instance, rw.world.people[_person(role)]).status_code == 302
    return client


def _person(role: str) -> str:
    return {"eco": "eco", "admin": "eco_admin", "account": "fuzz-account", "early": "fuzz-early"}[
        role
    ]


def reviewer_ids(rw: ReviewerWorld, endpoint: str) -> dict[str, list[str]]:
    """Real values for the route's variables: the deletion form gets a report of its own."""
    return {
        "report_id": [rw.doomed_id] if endpoint == "reports.delete" else rw.report_ids,
        "officer_id": [str(rw.victim_id), str(rw.world.people["eco_admin"].id)],
    }


def reviewer_path(rw: ReviewerWorld, endpoint: str, draw: Callable[..., Any]) -> str:
    rule = next(r.rule for r in rw.app.url_map.iter_rules() if r.endpoint == endpoint)
    return fill_path(rule, draw, reviewer_ids(rw, endpoint))


def reviewer_still_works(rw: ReviewerWorld) -> None:
    """Officers still sign in, read the inbox and a report, and reply (and the source sees it)."""
    client = signed_in_client(rw.app, rw.world, "eco_admin")
    assert client.get("/").status_code == 200
    assert client.get("/admin/officers").status_code == 200
    assert client.get("/admin/audit").status_code == 200
    oio = signed_in_client(rw.app, rw.world, "oio")
    path = f"/reports/{rw.report_ids[1]}"
    assert oio.get(path).status_code == 200
    replied = post_form(oio, path, f"{path}/reply", {"message": "Thank you, we are on it."})
    assert replied.status_code == 302, replied.text
    assert "Thank you, we are on it." in oio.get(path).text


def test_every_field_the_reviewer_pages_render_is_fuzzed(
    reviewer: Flask, source: Flask, case_app: Flask, world: World
) -> None:
    rw = reviewer_world(reviewer, source, case_app, world)
    admin = rw.clients["admin"]
    pages = [reviewer.test_client().get(p).text for p in ("/login", "/enrol")]
    for path in (
        "/",
        "/account",
        "/account/notifications",
        "/admin/officers",
        "/admin/audit",
        "/statistics",
    ):
        pages.append(admin.get(path).text)
    for report_id in [*rw.report_ids[:1], rw.doomed_id]:
        pages.append(admin.get(f"/reports/{report_id}").text)
    pages.append(admin.get(f"/reports/{rw.doomed_id}/delete").text)
    export = admin.get(f"/reports/{rw.doomed_id}/export").text
    confirm = admin.post(
        f"/reports/{rw.doomed_id}/export/key",
        data={"csrf_token": csrf_token(export), "key": public_key("Fuzz <fuzz@example.org>")},
    )
    assert confirm.status_code == 200, confirm.text
    pages += [export, confirm.text, rw.totp_page, rw.enrolment_page]
    pages.append(rw.clients["early"].get("/account").text)  # the form for a new key
    found: dict[str, set[str]] = {}
    for page in pages:
        for endpoint, names in posted_fields(reviewer, page).items():
            found.setdefault(endpoint, set()).update(names)
    assert set(found) == set(REVIEWER_FORMS)
    for endpoint, names in found.items():
        assert names <= set(REVIEWER_FORMS[endpoint]), (endpoint, names)


def test_reviewer_forms_take_anything_without_a_server_error(
    reviewer: Flask, source: Flask, case_app: Flask, world: World
) -> None:
    rw = reviewer_world(reviewer, source, case_app, world)

    def one_post(endpoint: str, data: st.DataObject) -> None:
        client = reviewer_client(rw, endpoint)
        path = reviewer_path(rw, endpoint, data.draw)
        token = csrf_token(client.get("/login").text)
        sent = data.draw(form_request(REVIEWER_FORMS[endpoint], rw.realistic, token))
        response = send(client, path, sent)
        assert_handled(response, sent.echo + path, f"{endpoint} {path}")

    for endpoint in sorted(REVIEWER_FORMS):
        ids = reviewer_ids(rw, endpoint)
        fields = REVIEWER_FORMS[endpoint]
        client_for = functools.partial(reviewer_client, rw, endpoint)
        sweep(reviewer, endpoint, fields, rw.realistic, ids, client_for)
    assert fuzz_each(sorted(REVIEWER_FORMS), REVIEWER_EXAMPLES, one_post) == set(REVIEWER_FORMS)
    reviewer_still_works(rw)
    every_item_decrypts(world, case_app)
    assert chain_intact(world.instance)
