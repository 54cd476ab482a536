"""Signing in to the reviewer app and the case server, as an attacker would try it.

Where an officer lands afterwards (never another site), what an attempt
costs and tells (the same work and the same answer whether the username
exists or the passphrase is right), who a flood of failures can lock out
(new clients, never the officer's usual browser), and what a stolen
administrator session can do without the administrator's device (nothing
that invites officers, deactivates them or opens an office).

The `reviewer` fixture is the reviewer app (the officer's machine) over the
real case server (`case_app`) in this process: the passphrase is derived on
the app's side, the case server checks the auth key, the code and the
lockout. Case-server routes are also called directly, as any client could.
"""

from __future__ import annotations

import base64
import html
import random
import re
import statistics
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

import argon2._password_hasher
import nacl.bindings
import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from werkzeug.test import TestResponse

from crypto.kdf import KdfCost
from crypto.keys import derive_officer_keys, wrap_parameters
from dropbox import officers
from dropbox.config import CryptoSettings
from dropbox.models import OfficeGrant, Officer, Report
from tests.conftest import CHEAP_COST, FIGURES
from tests.fuzz_helpers import fuzz
from tests.reviewer_helpers import (
    PASSPHRASE,
    Person,
    World,
    add_officer,
    audit_actions,
    b64,
    case_client,
    chain_intact,
    fresh_code,
    held_fingerprint,
    login_form,
    next_code,
    post_form,
    sign_in,
    source_report,
    wrong_code,
)
from tests.source_helpers import csrf_token

API = "/api/v2"
DEVICE_COOKIE = "dropbox_reviewer_device"
BASE = "http://reviewer.example/login"


@pytest.fixture(autouse=True)
def audit_chain_verifies_afterwards(world: World) -> Iterator[None]:
    """Whatever a test did, the audit chain must still verify afterwards."""
    yield
    assert chain_intact(world.instance)


# --- 1. after signing in, only a page of this app ----------------------------------------


def as_a_browser_reads_it(location: str) -> tuple[str, Any]:
    """A Location value as a browser follows it (WHATWG URL parsing), resolved against BASE.

    Browsers strip leading and trailing C0 controls and spaces, drop every
    tab, CR and LF inside, and read a backslash as a slash in http(s) URLs.
    """
    text = location.strip("".join(chr(c) for c in range(0x21)))
    text = re.sub("[\t\n\r]", "", text).replace("\\", "/")
    return text, urlsplit(urljoin(BASE, text))


def assert_lands_on_this_app(location: str, what: object) -> None:
    text, resolved = as_a_browser_reads_it(location)
    assert text == location, (what, location)  # nothing in it that a browser would drop
    assert text.startswith("/") and not text.startswith("//"), (what, location)
    assert not unquote(text).startswith("//"), (what, location)
    assert (resolved.scheme, resolved.netloc) == ("http", "reviewer.example"), (what, location)


def test_the_issues_tab_trick_lands_on_the_inbox_not_on_another_site(
    reviewer: Flask, world: World
) -> None:
    person = world.people["eco"]
    code = fresh_code(world.instance, person)
    signed = login_form(
        reviewer.test_client(), person.username, person.passphrase, code, "/%09/evil.example/x"
    )
    assert signed.status_code == 302
    assert signed.headers["Location"] == "/"
    assert_lands_on_this_app(signed.headers["Location"], "the issue's example")


def test_a_page_of_this_app_given_as_next_is_where_sign_in_lands(
    reviewer: Flask, source: Flask, world: World
) -> None:
    source_report(source, "retaliation")
    with world.instance.sessions() as db:
        rid = db.execute(select(Report.id)).scalar_one()
    person = world.people["eco"]
    for wanted in ("/account", f"/reports/{rid}", "/?status=new&page=2"):
        client = reviewer.test_client()
        code = fresh_code(world.instance, person)
        signed = login_form(client, person.username, person.passphrase, code, quote(wanted))
        assert signed.headers["Location"] == wanted
    # Not a page: another site, a route that takes no GET, a JSON route, no route at all.
    for refused in ("//evil.example", "/logout", "/api/v2/reports", "/no/such/page", "/\\evil"):
        client = reviewer.test_client()
        code = fresh_code(world.instance, person)
        signed = login_form(client, person.username, person.passphrase, code, quote(refused))
        assert signed.headers["Location"] == "/", refused


# Pieces that have turned same-site paths into other sites: doubled and backward slashes,
# tabs and newlines (raw and percent-encoded), schemes, user info, full-width forms.
PIECES = [
    "/", "//", "\\", "\t", "\n", "\r", " ", "\x00", "\x0b", "\u3000", "\u2028", "\ufeff",
    "%09", "%0a", "%0d", "%2f", "%2F", "%5c", "%20", "%00", "%e3%80%80", "%",
    "evil.example", "http:", "https:", "javascript:", "data:", "@", ":", "?", "#", ".", "..",
    "account", "reports", "admin", "officers", "api", "v1", "x", "\uff0f", "\uff3c",
]  # fmt: skip
next_values = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40),
    st.lists(st.sampled_from(PIECES), max_size=8).map("".join),
    # Starting with one slash, as a same-app path does: the case a naive check lets through.
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=8).map(lambda p: "/" + "".join(p)),
)


def test_after_sign_in_no_next_value_leads_off_this_app(
    reviewer: Flask, case_app: Flask, world: World
) -> None:
    case_app.extensions["dropbox.limiter"].enabled = False  # many sign-ins in a minute
    person = world.people["eco"]
    client = reviewer.test_client()
    tried = 0

    @fuzz(120)
    @given(target=next_values)
    def one(target: str) -> None:
        nonlocal tried
        code = fresh_code(world.instance, person)
        signed = login_form(
            client, person.username, person.passphrase, code, quote(target, safe="")
        )
        assert signed.status_code == 302, target
        assert_lands_on_this_app(signed.headers["Location"], target)
        tried += 1

    one()
    FIGURES.count("next values tried at reviewer sign-in", tried)


def test_the_one_next_check_takes_only_get_pages_of_the_app(reviewer: Flask) -> None:
    from journalist_interface.signin import safe_next

    adapter = reviewer.url_map.bind("reviewer.example")

    @fuzz(1500)
    @given(target=next_values)
    def one(target: str) -> None:
        taken = safe_next(reviewer, target)
        if taken is None:
            return
        assert taken == target
        assert_lands_on_this_app(taken, target)
        endpoint, _ = adapter.match(unquote(urlsplit(taken).path), method="GET")
        assert endpoint != "static" and not endpoint.startswith("signin."), endpoint

    one()
    assert safe_next(reviewer, "/account") == "/account"
    assert safe_next(reviewer, "/%09/evil.example/x") is None
    assert safe_next(reviewer, "/\t/evil.example/x") is None


# --- 8. every attempt costs the same work ------------------------------------------------


@contextmanager
def counted_derivations(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Record every Argon2id run (libsodium's and argon2-cffi's), still running each."""
    calls: list[str] = []
    real_alg = nacl.bindings.crypto_pwhash_alg
    real_hash = argon2._password_hasher.hash_secret
    real_verify = argon2._password_hasher.verify_secret

    def alg(*args: Any, **kwargs: Any) -> Any:
        calls.append("libsodium")
        return real_alg(*args, **kwargs)

    def hash_secret(*args: Any, **kwargs: Any) -> Any:
        calls.append("argon2 hash")
        return real_hash(*args, **kwargs)

    def verify_secret(*args: Any, **kwargs: Any) -> Any:
        calls.append("argon2 verify")
        return real_verify(*args, **kwargs)

    monkeypatch.setattr(nacl.bindings, "crypto_pwhash_alg", alg)
    monkeypatch.setattr(argon2._password_hasher, "hash_secret", hash_secret)
    monkeypatch.setattr(argon2._password_hasher, "verify_secret", verify_secret)
    yield calls


def test_every_sign_in_attempt_runs_exactly_one_memory_hard_derivation(
    reviewer: Flask, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One Argon2id run per attempt, on the officer's side; none on the case server.

    Both run in this process, so every derivation of either is counted: the
    reviewer app derives once from the header the server hands out (a fake
    one, at the same cost, for a name that cannot sign in), and the case
    server only compares the auth key with its verifier.
    """
    oio = world.people["oio"]
    gone = world.people["gone"]
    with world.instance.sessions.begin() as db:
        officers.create_enrolment(db, "not-enrolled", "Not Yet", False, "test")
        deactivated = db.get(Officer, gone.id)
        assert deactivated is not None
        officers.deactivate(db, deactivated, "test")
    used = fresh_code(world.instance, oio)
    assert login_form(reviewer.test_client(), oio.username, oio.passphrase, used).status_code == 302
    me, right = oio.username, oio.passphrase
    attempts: list[tuple[str, str, str, Callable[[], str], int]] = [
        ("unknown username", "nobody-here", PASSPHRASE, lambda: "123456", 400),
        ("text that is no username", "No Such User!", PASSPHRASE, lambda: "123456", 400),
        ("deactivated officer", gone.username, gone.passphrase, lambda: next_code(gone), 400),
        ("officer not yet enrolled", "not-enrolled", PASSPHRASE, lambda: "123456", 400),
        ("wrong passphrase", oio.username, "not the passphrase", lambda: next_code(oio), 400),
        ("right passphrase, wrong code", me, right, lambda: wrong_code(oio), 400),
        ("right passphrase, code already used", me, right, lambda: used, 400),
        ("right passphrase and a fresh code", me, right, lambda: next_code(oio), 302),
    ]  # fmt: skip
    counts = {}
    with counted_derivations(monkeypatch) as calls:
        for what, username, passphrase, code, expected in attempts:
            value = code()
            del calls[:]
            answer = login_form(reviewer.test_client(), username, passphrase, value)
            assert answer.status_code == expected, what
            counts[what] = list(calls)
    assert counts == {what: ["libsodium"] for what, *_ in attempts}, counts


def test_the_case_server_hands_out_the_same_header_for_names_that_cannot_sign_in(
    case_app: Flask, world: World
) -> None:
    """The header (cost, salt) is stable per name and at the real cost: it tells nothing."""
    gone = world.people["gone"]
    with world.instance.sessions.begin() as db:
        officers.create_enrolment(db, "not-enrolled", "Not Yet", False, "test")
        deactivated = db.get(Officer, gone.id)
        assert deactivated is not None
        officers.deactivate(db, deactivated, "test")
    client = case_client(case_app)
    try:
        headers = {
            name: client.signin_parameters(name)
            for name in ("oio-officer", "nobody-here", "not-enrolled", gone.username)
        }
        for name, header in headers.items():
            assert client.signin_parameters(name) == header, name  # the same every time
            assert wrap_cost(header) == (CHEAP_COST.iterations, CHEAP_COST.memory_bytes), name
        assert len(set(headers.values())) == len(headers)  # a salt of its own for each
    finally:
        client.close()


def wrap_cost(wrapped: bytes) -> tuple[int, int]:
    """The (iterations, memory) recorded in a wrap header (crypto/keys.py)."""
    _, iterations, memory = struct.unpack(">BIQ", wrapped[:13])
    return iterations, memory


TIMING_COST_KIB = 64 * 1024  # Argon2id dominates each attempt (about 0.1 s here)
TIMING_ROUNDS = 30
TIMING_RATIO = 1.15


def test_signing_in_takes_as_long_whether_the_username_exists_or_the_passphrase_is_right(
    world: World,
) -> None:
    """Medians of interleaved attempts through the reviewer app and the case server: an
    unknown username, a wrong passphrase, and the right passphrase with a wrong code."""
    import httpx

    from case_server import create_app as create_case_server
    from journalist_interface.app import create_reviewer_app
    from tests.conftest import reviewer_settings

    cost = KdfCost(iterations=1, memory_bytes=TIMING_COST_KIB * 1024)
    with world.instance.sessions.begin() as db:
        _, secret = officers.add(db, "timed-officer", PASSPHRASE, cost, "test")
    person = Person("timed-officer", PASSPHRASE, secret)
    # The server's configured cost is the one its fake headers carry: a server
    # configured as its officers were enrolled.
    config = replace(world.instance.config, crypto=CryptoSettings(1, TIMING_COST_KIB))
    world.instance.config = config
    case_app = create_case_server(config, world.instance)
    case_app.config["TESTING"] = True
    app = create_reviewer_app(
        reviewer_settings(config), transport=httpx.WSGITransport(app=case_app)
    )
    app.config["TESTING"] = True
    limiter = case_app.extensions["dropbox.limiter"]
    limiter.enabled = False  # the shared budget is not what is measured here
    client = app.test_client()
    token = csrf_token(client.get("/login").get_data(as_text=True))
    cases = {
        "unknown username": ("nobody-timed", PASSPHRASE),
        "wrong passphrase": (person.username, "not the passphrase at all"),
        "right passphrase, wrong code": (person.username, PASSPHRASE),
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    order = list(cases)
    shuffle = random.Random(8)  # noqa: S311 - an order of requests, no secret
    deadline = time.monotonic() + 60
    for round_number in range(TIMING_ROUNDS + 2):
        limiter.reset()  # clears the failure counts too: the lockout is tested elsewhere
        shuffle.shuffle(order)
        for name in order:
            username, passphrase = cases[name]
            data = {"csrf_token": token, "username": username, "passphrase": passphrase}
            data["code"] = wrong_code(person)
            started = time.perf_counter()
            answer = client.post("/login", data=data)
            elapsed = time.perf_counter() - started
            assert answer.status_code == 400, (name, answer.status_code)
            if round_number >= 2:  # the first two rounds warm up caches
                samples[name].append(elapsed)
        if time.monotonic() > deadline:
            break
    rounds = min(len(values) for values in samples.values())
    medians = {name: statistics.median(values) for name, values in samples.items()}
    # Each attempt against the middle one of its own round: the load of the machine
    # drifts, but hardly within one round, so this ratio is steadier than raw times.
    relative = {
        name: statistics.median(
            samples[name][r] / statistics.median(samples[n][r] for n in cases)
            for r in range(rounds)
        )
        for name in cases
    }
    ratio = max(relative.values()) / min(relative.values())
    FIGURES.add(
        f"reviewer sign-in timing (Argon2id 64 MiB, {rounds} interleaved rounds): medians "
        + ", ".join(f"{name} {1000 * m:.0f} ms" for name, m in medians.items())
        + f"; largest over smallest, each against its round: {ratio:.3f}"
    )
    assert rounds >= 12, "too few samples in the time allowed"
    assert ratio < TIMING_RATIO, (relative, medians)


# --- 9. no enumeration, and no way to lock an officer out ------------------------------------


def normalised(page: str, username: str) -> str:
    """A sign-in page without what may differ between two requests: token, time, the username."""
    page = re.sub(r'name="csrf_token" value="[^"]*"', 'name="csrf_token" value=""', page)
    page = re.sub(r"\d\d:\d\d:\d\d UTC", "HH:MM:SS UTC", page)
    return page.replace(username, "USERNAME")


def test_unknown_and_existing_usernames_answer_alike_through_the_lockout(
    reviewer: Flask, world: World
) -> None:
    existing = world.people["oio"]
    answers: dict[str, list[tuple[int, str]]] = {}
    for username in (existing.username, "nobody-atall"):
        client = reviewer.test_client()
        seen = []
        for _ in range(7):
            answer = login_form(client, username, "a wrong passphrase", "123456")
            seen.append((answer.status_code, normalised(answer.get_data(as_text=True), username)))
        # The right passphrase and a fresh code, for the existing one: still locked.
        passphrase = existing.passphrase if username == existing.username else PASSPHRASE
        code = fresh_code(world.instance, existing)
        answer = login_form(client, username, passphrase, code)
        seen.append((answer.status_code, normalised(answer.get_data(as_text=True), username)))
        answers[username] = seen
    statuses = [status for status, _ in answers[existing.username]]
    assert statuses == [400, 400, 400, 400, 429, 429, 429, 429]
    assert answers[existing.username] == answers["nobody-atall"]
    assert "Try again after HH:MM:SS UTC" in answers["nobody-atall"][-1][1]


def api_sign_in(
    http: FlaskClient, username: str, passphrase: str, code: str, device: str | None = None
) -> TestResponse:
    """POST /signin on the case server as the reviewer app does (derived here, none sent)."""
    params = http.post(f"{API}/signin/params", json={"username": username, "device": device or ""})
    assert params.status_code == 200, params.get_data(as_text=True)
    assert params.json is not None
    cost, salt = wrap_parameters(base64.b64decode(params.json["header"]), minimum=CHEAP_COST)
    auth_key = derive_officer_keys(passphrase, salt, cost).auth_key
    body = {"username": username, "auth_key": b64(auth_key), "code": code}
    if device is not None:
        body["device"] = device
    return http.post(f"{API}/signin", json=body)


def test_unknown_and_existing_usernames_answer_alike_through_the_api_lockout(
    case_app: Flask, world: World
) -> None:
    existing = world.people["oio"]
    answers = {}
    for username in (existing.username, "nobody-atall"):
        client = case_app.test_client()
        seen = []
        for _ in range(7):
            answer = api_sign_in(client, username, "a wrong passphrase", "123456")
            assert answer.json is not None
            error = re.sub(r"\d\d:\d\d:\d\d", "HH:MM:SS", answer.json["error"])
            seen.append((answer.status_code, sorted(answer.json), error))
            assert ("Retry-After" in answer.headers) == (answer.status_code == 429)
        answers[username] = seen
    assert [s for s, *_ in answers[existing.username]] == [401, 401, 401, 401, 429, 429, 429]
    assert answers[existing.username] == answers["nobody-atall"]


def device_cookie(response: TestResponse) -> dict[str, str]:
    """The attributes of the device cookie a response sets (lower-case names)."""
    for line in response.headers.getlist("Set-Cookie"):
        first, *rest = [part.strip() for part in line.split(";")]
        name, _, value = first.partition("=")
        if name == DEVICE_COOKIE:
            found = {"value": value}
            for part in rest:
                key, _, setting = part.partition("=")
                found[key.lower()] = setting
            return found
    return {}


def flood(client: FlaskClient, username: str, attempts: int) -> list[int]:
    """Wrong passphrases for `username`, as fast as the client can send them."""
    token = csrf_token(client.get("/login").get_data(as_text=True))
    data = {"csrf_token": token, "username": username, "passphrase": "guess", "code": "123456"}
    return [client.post("/login", data=data).status_code for _ in range(attempts)]


def test_a_flood_of_failures_does_not_keep_an_officer_out_of_their_usual_browser(
    reviewer: Flask, world: World
) -> None:
    person = world.people["oio"]
    usual = reviewer.test_client()
    signed = sign_in(usual, world.instance, person)
    assert signed.status_code == 302
    assert device_cookie(signed)["value"]
    assert post_form(usual, "/", "/logout", {}).status_code == 302  # the device stays known

    # More than the username's budget, and more than every budget the case server shares
    # among clients without a device token (60 sign-ins and 120 header requests a minute).
    statuses = flood(reviewer.test_client(), person.username, 125)
    assert statuses[:4] == [400] * 4 and set(statuses[4:]) == {429}
    assert flood(reviewer.test_client(), world.people["eco"].username, 5)[-1] == 429

    new_browser = reviewer.test_client()
    locked = login_form(
        new_browser, person.username, person.passphrase, fresh_code(world.instance, person)
    )
    assert locked.status_code == 429  # an unknown client waits for the window to end
    back = login_form(usual, person.username, person.passphrase, fresh_code(world.instance, person))
    assert back.status_code == 302  # at once, from the usual browser
    assert usual.get("/").status_code == 200
    # The device is known for its officer only: another, flooded, username stays locked.
    eco = world.people["eco"]
    other = login_form(usual, eco.username, eco.passphrase, fresh_code(world.instance, eco))
    assert other.status_code == 429


def test_a_known_browser_is_locked_by_its_own_failures_not_the_officers_others(
    reviewer: Flask, world: World
) -> None:
    person = world.people["eco"]
    usual = reviewer.test_client()
    assert sign_in(usual, world.instance, person).status_code == 302
    assert flood(usual, person.username, 5) == [400, 400, 400, 400, 429]
    code = fresh_code(world.instance, person)
    assert login_form(usual, person.username, person.passphrase, code).status_code == 429
    # Those failures were the device's: the username's budget is untouched.
    assert sign_in(reviewer.test_client(), world.instance, person).status_code == 302


def test_the_device_cookie_is_httponly_strict_and_long_lived(reviewer: Flask, world: World) -> None:
    person = world.people["eco"]
    client = reviewer.test_client()
    token = csrf_token(client.get("/login").get_data(as_text=True))
    data = {"csrf_token": token, "username": person.username, "passphrase": person.passphrase}
    data["code"] = fresh_code(world.instance, person)
    signed = client.post("/login", data=data)
    assert signed.status_code == 302
    cookie = device_cookie(signed)
    assert "httponly" in cookie and cookie.get("samesite") == "Strict"
    assert cookie.get("path") == "/" and "domain" not in cookie
    assert int(cookie["max-age"]) >= 90 * 24 * 3600
    assert person.username not in cookie["value"]  # the username only as a keyed digest
    # A failed attempt sets no device cookie.
    failed = login_form(client, person.username, "not it", "123456")
    assert failed.status_code == 400 and not device_cookie(failed)


def test_the_api_device_token_keeps_its_client_in_through_a_flood(
    case_app: Flask, world: World
) -> None:
    person = world.people["oio"]
    client = case_app.test_client()

    def token_request(device: str | None = None, passphrase: str = person.passphrase) -> Any:
        code = fresh_code(world.instance, person)
        return api_sign_in(client, person.username, passphrase, code, device)

    first = token_request()
    assert first.status_code == 200 and first.json is not None
    device = first.json["device"]
    assert isinstance(device, str) and device
    assert "Set-Cookie" not in first.headers
    statuses = [token_request(passphrase="a guess").status_code for _ in range(70)]
    assert statuses[:4] == [401] * 4 and set(statuses[4:]) == {429}
    assert token_request().status_code == 429  # no device token: locked
    assert token_request(device="forged.device.token").status_code == 429
    kept = token_request(device=device)
    assert kept.status_code == 200  # with it: in at once
    assert kept.json is not None and kept.json["device"]


# --- 13. administrator actions need the administrator's device ------------------------------


def _grant(world: World) -> tuple[str, dict[str, str], Callable[[], bool], str]:
    newcomer = add_officer(world, "newcomer", [])

    def done() -> bool:
        with world.instance.sessions() as db:
            grant = db.execute(
                select(OfficeGrant).where(OfficeGrant.officer_id == newcomer.id)
            ).first()
            return grant is not None

    form = {
        "officer_id": str(newcomer.id),
        "office": "ECO",
        "fingerprint": held_fingerprint(world.instance, newcomer),
    }
    return "/admin/grants", form, done, "office.grant"


def _deactivate(world: World) -> tuple[str, dict[str, str], Callable[[], bool], str]:
    target = world.people["eco2"]

    def done() -> bool:
        with world.instance.sessions() as db:
            officer = db.get(Officer, target.id)
            return officer is not None and not officer.active

    return f"/admin/officers/{target.id}/deactivate", {}, done, "officer.deactivate"


def _invite(
    username: str, is_admin: bool
) -> Callable[[World], tuple[str, dict[str, str], Callable[[], bool], str]]:
    def action(world: World) -> tuple[str, dict[str, str], Callable[[], bool], str]:
        def done() -> bool:
            with world.instance.sessions() as db:
                found = db.execute(select(Officer).where(Officer.username == username)).first()
                return found is not None

        form = {"username": username, "display_name": "New Officer"}
        if is_admin:
            form["is_admin"] = "yes"
        return "/admin/officers", form, done, "officer.invite"

    return action


def _reinvite(world: World) -> tuple[str, dict[str, str], Callable[[], bool], str]:
    target = world.people["eco2"]

    def done() -> bool:
        with world.instance.sessions() as db:
            officer = db.get(Officer, target.id)
            return officer is not None and officer.auth_verifier is None

    return f"/admin/officers/{target.id}/invite", {}, done, "officer.reinvite"


ACTIONS = {
    "granting an office": _grant,
    "deactivating an officer": _deactivate,
    "creating an administrator": _invite("new-admin", True),
    "inviting an officer": _invite("plain-officer", False),
    "re-inviting an officer": _reinvite,
}

CONFIRM = "with a fresh code from your authenticator app"


@pytest.mark.parametrize("action", list(ACTIONS))
def test_an_administrator_action_needs_a_fresh_code_of_the_administrators_own(
    reviewer: Flask, world: World, action: str
) -> None:
    path, form, done, event = ACTIONS[action](world)
    admin = world.people["eco_admin"]
    client = reviewer.test_client()
    used = fresh_code(world.instance, admin)
    assert login_form(client, admin.username, admin.passphrase, used).status_code == 302
    other = world.people["eco"]
    recorded = audit_actions(world.instance).count(event)
    refusals = {
        "no code": {},
        "a wrong code": {"code": wrong_code(admin)},
        "the code just used to sign in": {"code": used},
        "another officer's code": {"code": pyotp.TOTP(other.totp_secret).now()},
    }
    for why, code in refusals.items():
        before = audit_actions(world.instance)
        refused = post_form(client, "/admin/officers", path, {**form, **code})
        assert refused.status_code in (302, 400), (why, refused.status_code)
        assert not done(), why
        assert audit_actions(world.instance) == before, why
        if refused.status_code == 400:
            page = refused.get_data(as_text=True)
        else:
            page = client.get("/admin/officers").get_data(as_text=True)
        assert CONFIRM in html.unescape(page), why
    code = next_code(admin)
    confirmed = post_form(client, "/admin/officers", path, {**form, "code": code})
    assert confirmed.status_code in (200, 302)
    assert done()
    assert audit_actions(world.instance).count(event) == recorded + 1
    if event == "officer.invite":
        shown = html.unescape(confirmed.get_data(as_text=True))
        assert f"Enrolment code for {form['username']}" in shown
    # That code is used up now: it confirms nothing else. (The same code, not the next
    # step's again: under load the clock can pass into a step whose code is fresh.)
    if action == "granting an office":
        path, form, done, event = _deactivate(world)
        again = post_form(client, "/admin/officers", path, {**form, "code": code})
        assert again.status_code == 302 and not done()
