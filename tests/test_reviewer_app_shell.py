"""The reviewer app's shell: where it answers, sign-in, enrolment, account and administration.

The reviewer app runs with the real case server in this process (an
`httpx.WSGITransport` around `case_server.create_app`), over a database made
by the real code paths (`tests/case_helpers.py`). Officers use the pages as
a browser does: forms with CSRF tokens, passphrases and TOTP codes. Every
request the app sends to the case server is recorded, to show that no
passphrase and no secret key ever goes over the wire.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient
from nacl.public import PrivateKey
from sqlalchemy import select, update
from werkzeug.test import TestResponse

from crypto import recovery
from crypto.keys import fingerprint, generate_keypair, public_key_from_bytes
from dropbox.instance import Instance
from dropbox.models import AuditEvent, OfficeGrant, Officer
from journalist_interface.app import create_reviewer_app
from journalist_interface.client import ApiError, CaseServerClient
from journalist_interface.settings import ReviewerSettings, load_settings
from journalist_interface.vault import Vault
from tests.case_helpers import BASE_URL, PASSPHRASE, CaseWorld, Person, make_case_world
from tests.conftest import CHEAP_COST
from tests.source_helpers import csrf_token

PORT = 8191
HOST = f"127.0.0.1:{PORT}"
WRONG = "The username, passphrase or code is not right. A code works only once."
NEW_PASSPHRASE = "another quite long passphrase"


class RecordingTransport(httpx.BaseTransport):
    """The real case server in this process; every request the reviewer app sends is kept."""

    def __init__(self, app: Flask) -> None:
        self.inner = httpx.WSGITransport(app=app)
        self.requests: list[bytes] = []
        self.fail = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.fail:
            raise httpx.ConnectError("tor is not running", request=request)
        self.requests.append(
            request.method.encode()
            + b" "
            + str(request.url).encode()
            + b"\n"
            + b"".join(f"{k}: {v}\n".encode() for k, v in request.headers.items())
            + request.read()
        )
        return self.inner.handle_request(request)

    def sent(self) -> bytes:
        return b"\n".join(self.requests)


@pytest.fixture
def world(instance: Instance, office_keys: dict[str, PrivateKey]) -> Iterator[CaseWorld]:
    made = make_case_world(instance, office_keys)
    yield made
    made.close()


@pytest.fixture
def wire(world: CaseWorld) -> RecordingTransport:
    return RecordingTransport(world.app)


def _settings(world: CaseWorld) -> ReviewerSettings:
    return ReviewerSettings(
        server_url=BASE_URL,
        port=PORT,
        pins={code: fingerprint(key.public_key) for code, key in world.office_keys.items()},
        minimum_cost=CHEAP_COST,
        officer_cost=CHEAP_COST,
    )


@pytest.fixture
def app(world: CaseWorld, wire: RecordingTransport) -> Flask:
    return create_reviewer_app(_settings(world), transport=wire)


def vault_of(app: Flask) -> Vault:
    found: Vault = app.extensions["reviewer.vault"]
    return found


# --- helpers: a browser's view --------------------------------------------------------


def fresh_code(world: CaseWorld, person: Person, secret: str | None = None) -> str:
    """A valid code, after forgetting the last one used (as if 30 seconds had passed)."""
    with world.instance.sessions.begin() as db:
        db.execute(update(Officer).where(Officer.id == person.id).values(totp_last_counter=0))
    return pyotp.TOTP(secret or person.totp_secret).now()


def post(client: FlaskClient, page: str, path: str, data: Mapping[str, object]) -> TestResponse:
    """Post a form as the browser does: with the CSRF token of `page`."""
    token = csrf_token(client.get(page).get_data(as_text=True))
    return client.post(path, data={"csrf_token": token, **data})


def sign_in(
    client: FlaskClient,
    world: CaseWorld,
    person: Person,
    passphrase: str = PASSPHRASE,
    code: str | None = None,
    secret: str | None = None,
) -> TestResponse:
    code = code if code is not None else fresh_code(world, person, secret)
    return post(
        client,
        "/login",
        "/login",
        {"username": person.username, "passphrase": passphrase, "code": code},
    )


def text(response: TestResponse) -> str:
    return response.get_data(as_text=True)


def flashed(client: FlaskClient, page: str = "/account") -> str:
    return text(client.get(page))


# --- where it answers -----------------------------------------------------------------


def test_only_its_own_loopback_address_is_served(app: Flask) -> None:
    client = app.test_client()
    for host in ("evil.example:8191", f"evil.example:{PORT}", "127.0.0.1:9999", "127.0.0.1"):
        refused = client.get("/login", headers={"Host": host})
        assert refused.status_code == 400, host
        assert f"This page can only be opened at http://127.0.0.1:{PORT}" in text(refused)
        assert "dropbox_reviewer" not in refused.headers.get("Set-Cookie", "")
    for host in (HOST, f"localhost:{PORT}", f"LOCALHOST:{PORT}"):
        served = client.get("/login", headers={"Host": host})
        assert served.status_code == 200, host
        assert 'name="passphrase"' in text(served)
    assert "img-src 'self' data:" in served.headers["Content-Security-Policy"]
    assert "Onion-Location" not in served.headers
    assert served.headers["X-Frame-Options"] == "DENY"


def test_a_rebound_name_cannot_post_either(app: Flask, world: CaseWorld) -> None:
    client = app.test_client()
    token = csrf_token(text(client.get("/login")))
    person = world.people["oio"]
    form = {
        "csrf_token": token,
        "username": person.username,
        "passphrase": PASSPHRASE,
        "code": fresh_code(world, person),
    }
    refused = client.post("/login", data=form, headers={"Host": "evil.example:8191"})
    assert refused.status_code == 400
    assert "This page can only be opened at" in text(refused)
    assert len(vault_of(app)) == 0
    # The very same form at the app's own address signs in.
    assert client.post("/login", data=form).status_code == 302


def test_a_post_from_another_origin_is_refused(app: Flask, world: CaseWorld) -> None:
    client = app.test_client()
    person = world.people["oio"]
    token = csrf_token(text(client.get("/login")))
    form = {
        "csrf_token": token,
        "username": person.username,
        "passphrase": PASSPHRASE,
        "code": fresh_code(world, person),
    }
    refused = client.post("/login", data=form, headers={"Origin": "http://evil.example"})
    assert refused.status_code == 403
    assert "came from another site" in text(refused)
    assert len(vault_of(app)) == 0
    # "null" from another site's sandboxed frame or data: page, which browsers mark
    # cross-site, or with nothing to say where it came from.
    for headers in (
        {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": f"http://{HOST}", "Sec-Fetch-Site": "cross-site"},
    ):
        refused = client.post("/login", data=form, headers=headers)
        assert refused.status_code == 403, headers
        assert len(vault_of(app)) == 0
    # The same form from its own page goes through: with its origin, or with the
    # "null" that browsers send under the no-referrer policy, marked same-origin.
    same = client.post("/login", data=form, headers={"Origin": f"http://{HOST}"})
    assert same.status_code == 302
    again = app.test_client()
    form["csrf_token"] = csrf_token(text(again.get("/login")))
    form["code"] = fresh_code(world, person)
    nulled = again.post(
        "/login", data=form, headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"}
    )
    assert nulled.status_code == 302


def test_a_form_without_its_csrf_token_is_refused(app: Flask, world: CaseWorld) -> None:
    client = app.test_client()
    person = world.people["oio"]
    form = {
        "username": person.username,
        "passphrase": PASSPHRASE,
        "code": fresh_code(world, person),
    }
    refused = client.post("/login", data=form)
    assert refused.status_code == 400
    assert "The form expired" in text(refused)
    assert len(vault_of(app)) == 0
    # Signed in, an action without the token is refused too.
    assert sign_in(client, world, person).status_code == 302
    assert client.post("/logout").status_code == 400
    assert len(vault_of(app)) == 1


def test_the_session_cookie_is_httponly_and_strict_and_holds_no_key(
    app: Flask, world: CaseWorld
) -> None:
    client = app.test_client()
    signed = sign_in(client, world, world.people["oio"])
    cookies = signed.headers.getlist("Set-Cookie")
    session_cookie = next(c for c in cookies if c.startswith("dropbox_reviewer="))
    assert "HttpOnly" in session_cookie and "SameSite=Strict" in session_cookie
    (entry,) = list(vault_of(app)._entries.values())
    key = bytes(entry.keyring.officer_key)
    value = session_cookie.split(";")[0].split("=", 1)[1]
    for form in (key, base64.b64encode(key), base64.urlsafe_b64encode(key).rstrip(b"=")):
        assert form not in value.encode()
    # A new process (a new app) does not know the cookie: every session ends at restart.
    other = create_reviewer_app(app.extensions["reviewer.settings"], transport=None)
    stranger = other.test_client()
    stranger.set_cookie("dropbox_reviewer", value, domain="127.0.0.1")
    assert stranger.get("/account").status_code == 302


# --- signing in -----------------------------------------------------------------------


def test_sign_in_opens_the_keys_and_sends_no_passphrase(
    app: Flask, world: CaseWorld, wire: RecordingTransport
) -> None:
    client = app.test_client()
    person = world.people["oio"]
    signed = sign_in(client, world, person)
    assert signed.status_code == 302
    assert signed.headers["Location"] == "/"
    inbox = client.get("/")
    assert inbox.status_code == 200
    (entry,) = list(vault_of(app)._entries.values())
    assert set(entry.keyring.office_keys) == {"OIO"}
    assert bytes(entry.keyring.office_keys["OIO"]) == bytes(world.office_keys["OIO"])
    # The wire carried the auth key and the code, never the passphrase or a secret key.
    sent = wire.sent()
    assert b"/api/v2/signin" in sent
    secrets_ = [
        PASSPHRASE.encode(),
        bytes(entry.keyring.officer_key),
        bytes(world.office_keys["OIO"]),
    ]
    for secret in secrets_:
        for form in (secret, base64.b64encode(secret), base64.urlsafe_b64encode(secret)):
            assert form not in sent


def test_a_known_device_and_next_page_after_sign_in(app: Flask, world: CaseWorld) -> None:
    client = app.test_client()
    person = world.people["admin"]
    assert client.get("/admin/audit").headers["Location"].startswith("/login?next=")
    token = csrf_token(text(client.get("/login?next=/admin/audit")))
    form = {
        "csrf_token": token,
        "username": person.username,
        "passphrase": PASSPHRASE,
        "code": fresh_code(world, person),
    }
    signed = client.post("/login?next=/admin/audit", data=form)
    assert signed.headers["Location"] == "/admin/audit"
    assert any(
        c.startswith("dropbox_reviewer_device=") for c in signed.headers.getlist("Set-Cookie")
    )
    # An address elsewhere is no landing place.
    client.post("/logout", data={"csrf_token": csrf_token(text(client.get("/account")))})
    token = csrf_token(text(client.get("/login")))
    form["code"] = fresh_code(world, person)
    form["csrf_token"] = token
    elsewhere = client.post("/login?next=//evil.example/", data=form)
    assert elsewhere.headers["Location"] == "/"


def test_a_wrong_passphrase_or_code_is_refused_as_today(app: Flask, world: CaseWorld) -> None:
    client = app.test_client()
    person = world.people["oio"]
    wrong_passphrase = sign_in(client, world, person, passphrase="not the passphrase at all")
    assert wrong_passphrase.status_code == 400
    assert WRONG in text(wrong_passphrase)
    code = fresh_code(world, person)
    wrong_code = sign_in(client, world, person, code=f"{(int(code) + 1) % 1000000:06d}")
    assert wrong_code.status_code == 400
    assert WRONG in text(wrong_code)
    unknown = post(
        client, "/login", "/login", {"username": "nobody", "passphrase": "x" * 20, "code": code}
    )
    assert unknown.status_code == 400
    assert WRONG in text(unknown)
    assert len(vault_of(app)) == 0
    assert client.get("/").status_code == 302


def test_a_locked_username_shows_until_when(app: Flask, world: CaseWorld) -> None:
    client = app.test_client()
    person = world.people["eco2"]
    answers = [
        sign_in(client, world, person, passphrase="not the passphrase at all") for _ in range(6)
    ]
    locked = answers[-1]
    assert locked.status_code == 429
    assert re.search(r"Try again after \d\d:\d\d:\d\d UTC", text(locked))


def test_the_server_unreachable_is_said_plainly(
    app: Flask, world: CaseWorld, wire: RecordingTransport
) -> None:
    client = app.test_client()
    person = world.people["oio"]
    assert sign_in(client, world, person).status_code == 302
    wire.fail = True
    down = client.get("/")
    assert down.status_code == 502
    assert "Check that tor is running" in text(down)
    assert "Traceback" not in text(down)
    client.get("/logout")
    fresh = app.test_client()
    refused = sign_in(fresh, world, person)
    assert refused.status_code == 502
    assert "cannot be reached" in text(refused)


def test_a_key_swapped_on_the_server_refuses_sign_in(app: Flask, world: CaseWorld) -> None:
    person = world.people["eco"]
    with world.instance.sessions.begin() as db:
        db.execute(
            update(Officer)
            .where(Officer.id == person.id)
            .values(public_key=bytes(generate_keypair().public_key))
        )
    client = app.test_client()
    refused = sign_in(client, world, person)
    assert refused.status_code == 409
    assert "is not your key" in text(refused)
    assert len(vault_of(app)) == 0


# --- forgetting keys ------------------------------------------------------------------


def test_sign_out_forgets_the_keys_and_ends_the_token(app: Flask, world: CaseWorld) -> None:
    client = app.test_client()
    assert sign_in(client, world, world.people["eco"]).status_code == 302
    vault = vault_of(app)
    (entry,) = list(vault._entries.values())
    token = entry.client.token
    keyring = entry.keyring
    assert token and keyring.office_keys
    out = post(client, "/account", "/logout", {})
    assert out.status_code == 302
    assert len(vault) == 0
    assert keyring.office_keys == {}
    assert entry.client.token is None
    with pytest.raises(ApiError) as ended:
        CaseServerClient(BASE_URL, transport=world.transport(), token=token).me()
    assert ended.value.status == 401
    assert client.get("/").status_code == 302


def test_idle_and_absolute_timeouts_forget_the_keys(app: Flask, world: CaseWorld) -> None:
    client = app.test_client()
    vault = vault_of(app)
    assert sign_in(client, world, world.people["eco"]).status_code == 302
    (entry,) = list(vault._entries.values())
    start = datetime.now(UTC)
    vault.clock = lambda: start + timedelta(minutes=14)
    assert client.get("/account").status_code == 200  # active: the idle clock restarts
    vault.clock = lambda: start + timedelta(minutes=28)
    assert client.get("/account").status_code == 200
    vault.clock = lambda: start + timedelta(minutes=44)
    ended = client.get("/account")
    assert ended.status_code == 302
    assert len(vault) == 0
    assert entry.keyring.office_keys == {}
    assert "Your session ended" in text(client.get("/login"))
    # Busy all day long: still over at the absolute limit.
    vault.clock = lambda: datetime.now(UTC)
    assert sign_in(client, world, world.people["eco"]).status_code == 302
    now = datetime.now(UTC)
    for minutes in range(10, 8 * 60, 10):
        vault.clock = lambda m=minutes: now + timedelta(minutes=m)  # type: ignore[misc]
        assert client.get("/account").status_code == 200
    vault.clock = lambda: now + timedelta(hours=8, minutes=5)
    assert client.get("/account").status_code == 302
    assert len(vault) == 0


def test_an_idle_session_is_swept_without_a_request(app: Flask, world: CaseWorld) -> None:
    client = app.test_client()
    vault = vault_of(app)
    assert sign_in(client, world, world.people["oio"]).status_code == 302
    (entry,) = list(vault._entries.values())
    vault.sweep()
    assert len(vault) == 1
    vault.clock = lambda: datetime.now(UTC) + timedelta(minutes=16)
    vault.sweep()
    assert len(vault) == 0
    assert entry.keyring.office_keys == {}


def test_forget_all_at_stop(app: Flask, world: CaseWorld) -> None:
    clients = [app.test_client() for _ in range(2)]
    for client, role in zip(clients, ("oio", "eco"), strict=True):
        assert sign_in(client, world, world.people[role]).status_code == 302
    vault = vault_of(app)
    keyrings = [e.keyring for e in vault._entries.values()]
    assert len(vault) == 2
    vault.forget_all()
    assert len(vault) == 0
    assert all(k.office_keys == {} for k in keyrings)


# --- enrolment ------------------------------------------------------------------------


def _secret_of(page: str) -> str:
    match = re.search(r"otpauth://totp/[^\"<]*secret=([A-Z2-7]+)", page)
    assert match is not None, page
    return match.group(1)


def _invite(app: Flask, world: CaseWorld, username: str) -> str:
    admin = app.test_client()
    assert sign_in(admin, world, world.people["admin"]).status_code == 302
    made = post(
        admin,
        "/admin/officers",
        "/admin/officers",
        {
            "username": username,
            "display_name": "New Officer",
            "code": fresh_code(world, world.people["admin"]),
        },
    )
    assert made.status_code == 200, text(made)
    match = re.search(r'class="enrolment-code"><code>([^<]+)</code>', text(made))
    assert match is not None
    return match.group(1)


def _enrol(app: Flask, username: str, code: str, passphrase: str = NEW_PASSPHRASE) -> str:
    client = app.test_client()
    page = post(
        client,
        "/enrol",
        "/enrol",
        {
            "username": username,
            "code": code,
            "passphrase": passphrase,
            "confirm_passphrase": passphrase,
        },
    )
    assert page.status_code == 200, text(page)
    secret = _secret_of(text(page))
    token = csrf_token(text(page))
    wrong = pyotp.TOTP(secret).at(datetime.now(UTC).timestamp() + 600)
    refused = client.post("/enrol/confirm", data={"csrf_token": token, "code": wrong})
    assert refused.status_code == 400
    assert "That code is not right" in text(refused)
    done = client.post(
        "/enrol/confirm", data={"csrf_token": token, "code": pyotp.TOTP(secret).now()}
    )
    assert done.status_code == 302 and done.headers["Location"] == "/login"
    assert "You are enrolled" in text(client.get("/login"))
    return secret


def test_enrolment_end_to_end_then_sign_in(
    app: Flask, world: CaseWorld, wire: RecordingTransport
) -> None:
    code = _invite(app, world, "new-officer")
    client = app.test_client()
    differ = post(
        client,
        "/enrol",
        "/enrol",
        {
            "username": "new-officer",
            "code": code,
            "passphrase": NEW_PASSPHRASE,
            "confirm_passphrase": NEW_PASSPHRASE + "x",
        },
    )
    assert differ.status_code == 400 and "The two passphrases differ." in text(differ)
    bad_code = post(
        client,
        "/enrol",
        "/enrol",
        {
            "username": "new-officer",
            "code": "WRONG-CODE-1234",
            "passphrase": NEW_PASSPHRASE,
            "confirm_passphrase": NEW_PASSPHRASE,
        },
    )
    assert bad_code.status_code == 400
    secret = _enrol(app, "new-officer", code)
    assert len(vault_of(app)) == 1  # the administrator only: the enrolment is forgotten
    assert vault_of(app)._enrolments == {}
    with world.instance.sessions() as db:
        officer = db.execute(select(Officer).where(Officer.username == "new-officer")).scalar_one()
        new = Person(officer.id, officer.username, secret, "")
    signed = sign_in(app.test_client(), world, new, passphrase=NEW_PASSPHRASE)
    assert signed.status_code == 302
    assert NEW_PASSPHRASE.encode() not in wire.sent()
    # The code worked once.
    again = post(
        app.test_client(),
        "/enrol",
        "/enrol",
        {
            "username": "new-officer",
            "code": code,
            "passphrase": NEW_PASSPHRASE,
            "confirm_passphrase": NEW_PASSPHRASE,
        },
    )
    assert again.status_code == 400


# --- account --------------------------------------------------------------------------


def test_account_shows_the_fingerprint_of_the_key_held(app: Flask, world: CaseWorld) -> None:
    client = app.test_client()
    person = world.people["eco"]
    assert sign_in(client, world, person).status_code == 302
    (entry,) = list(vault_of(app)._entries.values())
    page = text(client.get("/account"))
    assert fingerprint(entry.keyring.officer_key.public_key) in page
    assert person.username in page


def test_passphrase_change_then_the_old_one_fails(
    app: Flask, world: CaseWorld, wire: RecordingTransport
) -> None:
    client = app.test_client()
    person = world.people["eco"]
    assert sign_in(client, world, person).status_code == 302
    form = {
        "current_passphrase": "not the current one",
        "new_passphrase": NEW_PASSPHRASE,
        "confirm_passphrase": NEW_PASSPHRASE,
        "code": fresh_code(world, person),
    }
    post(client, "/account", "/account/passphrase", form)
    assert "The current passphrase is not right." in flashed(client)
    form["current_passphrase"] = PASSPHRASE
    form["confirm_passphrase"] = "something else entirely"
    post(client, "/account", "/account/passphrase", form)
    assert "The two new passphrases differ." in flashed(client)
    form["confirm_passphrase"] = NEW_PASSPHRASE
    changed = post(client, "/account", "/account/passphrase", form)
    assert changed.status_code == 302
    assert "Your passphrase was changed." in flashed(client)
    assert client.get("/").status_code == 200  # this session stays
    post(client, "/account", "/logout", {})
    other = app.test_client()
    old = sign_in(other, world, person)
    assert old.status_code == 400 and WRONG in text(old)
    assert sign_in(other, world, person, passphrase=NEW_PASSPHRASE).status_code == 302
    sent = wire.sent()
    for secret in (PASSPHRASE, NEW_PASSPHRASE):
        assert secret.encode() not in sent


def test_totp_reenrolment(app: Flask, world: CaseWorld) -> None:
    client = app.test_client()
    person = world.people["oio"]
    assert sign_in(client, world, person).status_code == 302
    refused = post(client, "/account", "/account/totp", {"current_passphrase": "wrong one here"})
    assert refused.status_code == 302
    assert "The current passphrase is not right." in flashed(client)
    page = post(client, "/account", "/account/totp", {"current_passphrase": PASSPHRASE})
    assert page.status_code == 200
    secret = _secret_of(text(page))
    token = csrf_token(text(page))
    wrong = client.post(
        "/account/totp/confirm",
        data={"csrf_token": token, "code": pyotp.TOTP(person.totp_secret).now()},
    )
    assert wrong.status_code == 400 and "That code is not right." in text(wrong)
    done = client.post(
        "/account/totp/confirm", data={"csrf_token": token, "code": pyotp.TOTP(secret).now()}
    )
    assert done.status_code == 302
    assert "Your new authenticator is set up." in flashed(client)
    post(client, "/account", "/logout", {})
    other = app.test_client()
    old = sign_in(other, world, person)  # a code of the old secret
    assert old.status_code == 400
    assert sign_in(other, world, person, secret=secret).status_code == 302


# --- administration -------------------------------------------------------------------


def _grant_form(world: CaseWorld, target: int, read_out: str, **extra: object) -> dict[str, object]:
    return {
        "officer_id": str(target),
        "office": "ECO",
        "fingerprint": read_out,
        "code": fresh_code(world, world.people["admin"]),
        **extra,
    }


def _granted(world: CaseWorld, officer_id: int) -> set[str]:
    with world.instance.sessions() as db:
        return set(
            db.execute(
                select(OfficeGrant.office_code).where(OfficeGrant.officer_id == officer_id)
            ).scalars()
        )


def test_admin_grants_from_a_recovery_file_only_to_the_key_read_out(
    app: Flask, world: CaseWorld, tmp_path: Path
) -> None:
    code = _invite(app, world, "newcomer")
    secret = _enrol(app, "newcomer", code)
    with world.instance.sessions() as db:
        officer = db.execute(select(Officer).where(Officer.username == "newcomer")).scalar_one()
        newcomer = Person(officer.id, officer.username, secret, "")
    # The newcomer signs in and reads out the fingerprint of the key they hold.
    own = app.test_client()
    assert sign_in(own, world, newcomer, passphrase=NEW_PASSPHRASE).status_code == 302
    read_out = re.search(r'id="key-fingerprint">([^<]+)<', text(own.get("/account")))
    assert read_out is not None
    admin = app.test_client()
    assert sign_in(admin, world, world.people["admin"]).status_code == 302
    file_passphrase = "recovery passphrase of the office"
    data = recovery.dump("ECO", world.office_keys["ECO"], file_passphrase, CHEAP_COST)

    def grant(fp: str, passphrase: str = file_passphrase) -> str:
        form = _grant_form(
            world,
            newcomer.id,
            fp,
            key_source="recovery",
            recovery_passphrase=passphrase,
        )
        form["recovery_file"] = (io.BytesIO(data), "ECO.recovery")
        token = csrf_token(text(admin.get("/admin/officers")))
        answer = admin.post(
            "/admin/grants",
            data={"csrf_token": token, **form},
            content_type="multipart/form-data",
        )
        assert answer.status_code == 302
        return text(admin.get("/admin/officers"))

    # The administrator holds no ECO key: without the file, nothing.
    token = csrf_token(text(admin.get("/admin/officers")))
    admin.post(
        "/admin/grants",
        data={"csrf_token": token, **_grant_form(world, newcomer.id, read_out.group(1))},
    )
    assert "You hold no key for that office" in text(admin.get("/admin/officers"))
    # Someone else's fingerprint: nothing sealed, nothing granted.
    other = fingerprint(generate_keypair().public_key)
    assert "does not match the fingerprint they read out" in grant(other)
    assert _granted(world, newcomer.id) == set()
    # A typing slip is told as such.
    assert "That is not a key fingerprint" in grant("ABCD")
    # A wrong recovery passphrase.
    assert "recovery passphrase is not right" in grant(read_out.group(1), "not the passphrase")
    assert _granted(world, newcomer.id) == set()
    # The fingerprint the newcomer read out: granted.
    assert "Access was granted." in grant(read_out.group(1))
    assert _granted(world, newcomer.id) == {"ECO"}
    # The newcomer's next sign-in opens the office key.
    post(own, "/account", "/logout", {})
    assert sign_in(own, world, newcomer, passphrase=NEW_PASSPHRASE).status_code == 302
    entry = next(e for e in vault_of(app)._entries.values() if e.username == "newcomer")
    assert bytes(entry.keyring.office_keys["ECO"]) == bytes(world.office_keys["ECO"])


def test_admin_grants_from_the_office_key_held(app: Flask, world: CaseWorld) -> None:
    # An administrator of ECO (made as the CLI makes one), granting eco2's colleague oio ECO.
    from dropbox import officers, offices

    with world.instance.sessions.begin() as db:
        officer, totp_secret = officers.add(
            db, "eco-admin", PASSPHRASE, CHEAP_COST, "test", is_admin=True
        )
        assert officer.public_key is not None
        offices.grant(
            db,
            "ECO",
            officer,
            world.office_keys["ECO"],
            "test",
            read_out=fingerprint(public_key_from_bytes(officer.public_key)),
        )
        eco_admin = Person(officer.id, "eco-admin", totp_secret, "")
    target = world.people["oio"]
    with world.instance.sessions() as db:
        row = db.get(Officer, target.id)
        assert row is not None and row.public_key is not None
        right = fingerprint(public_key_from_bytes(row.public_key))
    admin = app.test_client()
    assert sign_in(admin, world, eco_admin).status_code == 302

    def grant(fp: str) -> str:
        form = {
            "officer_id": str(target.id),
            "office": "ECO",
            "fingerprint": fp,
            "key_source": "held",
            "code": fresh_code(world, eco_admin),
        }
        assert post(admin, "/admin/officers", "/admin/grants", form).status_code == 302
        return text(admin.get("/admin/officers"))

    assert "does not match the fingerprint" in grant(fingerprint(generate_keypair().public_key))
    assert _granted(world, target.id) == {"OIO"}
    assert "Access was granted." in grant(right.lower())
    assert _granted(world, target.id) == {"OIO", "ECO"}


def test_admin_invite_and_deactivate_need_a_fresh_code(app: Flask, world: CaseWorld) -> None:
    admin = app.test_client()
    boss = world.people["admin"]
    assert sign_in(admin, world, boss).status_code == 302
    no_code = post(
        admin,
        "/admin/officers",
        "/admin/officers",
        {"username": "someone", "display_name": "Someone", "code": ""},
    )
    assert no_code.status_code == 400
    assert "onfirm with a fresh code" in text(no_code)
    target = world.people["eco2"]
    post(
        admin,
        "/admin/officers",
        f"/admin/officers/{target.id}/deactivate",
        {"code": "000000"},
    )
    assert "onfirm with a fresh code" in text(admin.get("/admin/officers"))
    with world.instance.sessions() as db:
        row = db.get(Officer, target.id)
        assert row is not None and row.active
    post(
        admin,
        "/admin/officers",
        f"/admin/officers/{target.id}/deactivate",
        {"code": fresh_code(world, boss)},
    )
    assert "The officer was deactivated." in text(admin.get("/admin/officers"))
    with world.instance.sessions() as db:
        row = db.get(Officer, target.id)
        assert row is not None and not row.active
    post(admin, "/admin/officers", f"/admin/officers/{boss.id}/deactivate", {"code": "1"})
    assert "You cannot deactivate your own account." in text(admin.get("/admin/officers"))


def test_officers_pages_are_for_administrators(app: Flask, world: CaseWorld) -> None:
    client = app.test_client()
    assert sign_in(client, world, world.people["oio"]).status_code == 302
    assert client.get("/admin/officers").status_code == 403
    assert client.get("/admin/audit").status_code == 403


def test_audit_log_page_and_verification(app: Flask, world: CaseWorld) -> None:
    admin = app.test_client()
    assert sign_in(admin, world, world.people["admin"]).status_code == 302
    page = admin.get("/admin/audit")
    assert page.status_code == 200
    assert "The audit log is intact." in text(page)
    assert "officer.sign_in" in text(page) or "sign_in" in text(page)
    with world.instance.sessions.begin() as db:
        first = db.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars().first()
        assert first is not None
        first.detail = first.detail + " (altered)"
    broken = admin.get("/admin/audit?page=1")
    assert "The audit log is BROKEN." in text(broken)
    assert "altered" in text(broken)


# --- settings -------------------------------------------------------------------------


def test_settings_file_and_clear_refusals(tmp_path: Path) -> None:
    from dropbox.config import ConfigError

    good = tmp_path / "reviewer.toml"
    fp = fingerprint(generate_keypair().public_key)
    good.write_text(
        '[reviewer]\nserver = "http://abc.onion"\nsocks = "127.0.0.1:9050"\nport = 8082\n'
        f'idle_minutes = 5\n[pins]\nOIO = "{fp}"\n'
    )
    loaded = load_settings(good)
    assert loaded.server_url == "http://abc.onion" and loaded.socks == "127.0.0.1:9050"
    assert loaded.port == 8082 and loaded.idle_minutes == 5 and loaded.pins == {"OIO": fp}
    for body, fault in [
        ('[reviewer]\nserver = "ftp://x"\n', "http"),
        ('[reviewer]\nserver = "http://x"\nport = 70000\n', "port"),
        ('[reviewer]\nserver = "http://x"\nsocks = "nowhere"\n', "socks"),
        ('[reviewer]\nserver = "http://x"\nidle_minutes = 0\n', "idle_minutes"),
        ('[reviewer]\nserver = "http://x"\n[pins]\nOIO = "nope"\n', "pins"),
        ('[reviewer]\nserver = "http://x"\ncolour = "blue"\n', "unknown"),
        ("[reviewer\n", "TOML"),
    ]:
        bad = tmp_path / "bad.toml"
        bad.write_text(body)
        with pytest.raises(ConfigError, match=fault):
            load_settings(bad)


def test_the_command_refuses_a_non_loopback_host_and_a_bad_server() -> None:
    from click.testing import CliRunner

    from journalist_interface.run import reviewer

    runner = CliRunner()
    wide = runner.invoke(reviewer, ["--server", "http://127.0.0.1:8080", "--host", "0.0.0.0"])  # noqa: S104
    assert wide.exit_code != 0 and "loopback" in wide.output
    ftp = runner.invoke(reviewer, ["--server", "ftp://127.0.0.1"])
    assert ftp.exit_code != 0 and "http" in ftp.output
    pin = runner.invoke(reviewer, ["--server", "http://127.0.0.1:8080", "--pin", "OIO"])
    assert pin.exit_code != 0 and "CODE=FINGERPRINT" in pin.output
    none = runner.invoke(reviewer, [])
    assert none.exit_code != 0 and "--server" in none.output


def test_a_session_ended_on_the_server_ends_here_too(app: Flask, world: CaseWorld) -> None:
    client = app.test_client()
    person = world.people["eco2"]
    assert sign_in(client, world, person).status_code == 302
    (entry,) = list(vault_of(app)._entries.values())
    admin = app.test_client()
    assert sign_in(admin, world, world.people["admin"]).status_code == 302
    post(
        admin,
        "/admin/officers",
        f"/admin/officers/{person.id}/deactivate",
        {"code": fresh_code(world, world.people["admin"])},
    )
    # The case server refuses the deactivated officer's token: the keys here go too.
    ended = client.get("/")
    assert ended.status_code == 302 and ended.headers["Location"].startswith("/login")
    assert entry not in vault_of(app)._entries.values()
    assert entry.keyring.office_keys == {}
    assert "Your session ended" in text(client.get("/login"))
