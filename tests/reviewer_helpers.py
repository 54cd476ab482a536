"""A small world for reviewer tests: offices, officers of each kind, reports, and sign-in.

The `reviewer` fixture (tests/conftest.py) is the reviewer app, the officer's
machine, talking to the real case server (`case_app`) in this process. Pages
are driven here through the reviewer app's forms; case-server routes directly
with a bearer token from a real sign-in (`api_headers`, `case_client`): the
auth key derived from the passphrase as the app derives it, never the
passphrase itself.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import pyotp
from flask import Flask
from flask.testing import FlaskClient
from nacl.public import PrivateKey
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from crypto.kdf import SALT_BYTES
from crypto.keys import (
    KeyChain,
    auth_key_verifier,
    derive_officer_keys,
    fingerprint,
    generate_keypair,
    public_key_from_bytes,
    wrap_with_wrapping_key,
)
from dropbox import officers, offices
from dropbox.instance import Instance
from dropbox.models import Officer
from journalist_interface.client import CaseServerClient
from tests.conftest import CHEAP_COST
from tests.source_helpers import csrf_token, new_codename, submit_report

API = "/api/v2"

PASSPHRASE = "a long demo passphrase"
CASE_BASE = "http://case-server.test"  # the reviewer settings' server_url in tests


@dataclass
class Person:
    """An officer account and what a test needs to sign in as them."""

    username: str
    passphrase: str
    totp_secret: str
    id: int = 0


@dataclass
class World:
    """Offices with keys, and one officer of each kind the access rules distinguish."""

    instance: Instance
    office_keys: dict[str, PrivateKey]
    people: dict[str, Person] = field(default_factory=dict)


def make_world(instance: Instance, office_keys: dict[str, PrivateKey]) -> World:
    """OIO and ECO officers, an administrator without an office, and a deactivated officer."""
    world = World(instance, office_keys)
    specs = {
        "oio": ("oio-officer", False, ["OIO"]),
        "eco": ("eco-officer", False, ["ECO"]),
        "eco2": ("eco-second", False, ["ECO"]),
        "admin": ("admin", True, []),
        "eco_admin": ("eco-admin", True, ["ECO"]),
        "gone": ("gone-officer", False, ["ECO"]),
    }
    with instance.sessions.begin() as db:
        for role, (username, is_admin, codes) in specs.items():
            world.people[role] = _new_officer(db, world, username, codes, is_admin)
    return world


def _new_officer(db: Session, world: World, username: str, codes: list[str], admin: bool) -> Person:
    officer, secret = officers.add(db, username, PASSPHRASE, CHEAP_COST, "test", is_admin=admin)
    for code in codes:
        offices.grant(
            db, code, officer, world.office_keys[code], "test", read_out=read_out(officer)
        )
    return Person(username, PASSPHRASE, secret, officer.id)


def read_out(officer: Officer) -> str:
    """The fingerprint the officer reads out from their account page, for a key made just now.

    Only for an officer whose key pair this process made itself (as `officers.add`
    does): the fingerprint is then of the key the officer holds.
    """
    assert officer.public_key is not None
    return fingerprint(public_key_from_bytes(officer.public_key))


def held_fingerprint(instance: Instance, person: Person) -> str:
    """The fingerprint the officer's account page shows: of the key their passphrase unwraps.

    It comes from the officer's wrapped secret key, not from the public key in
    their database row, so a row swapped in the database does not change it.
    """
    with instance.sessions() as db:
        officer = db.get(Officer, person.id)
        assert officer is not None
        key = officers.open_secret_key(officer, person.passphrase, CHEAP_COST)
    return fingerprint(key.public_key)


def add_officer(world: World, username: str, codes: list[str], admin: bool = False) -> Person:
    """One more officer, known to the world by username (e.g. one a test may lock out)."""
    with world.instance.sessions.begin() as db:
        person = _new_officer(db, world, username, codes, admin)
    world.people[username] = person
    return person


def add_officer_enrolled_before_x_wing(world: World, username: str, codes: list[str]) -> Person:
    """An officer as enrolment made them before X-Wing, known to the world by username.

    Their key is X25519, wrapped as its 32 bytes under their passphrase, and
    each grant of `codes` is a sealed box to it (X25519 alone).
    """
    with world.instance.sessions.begin() as db:
        officer, totp_secret = officers.add(db, username, PASSPHRASE, CHEAP_COST, "test")
        old_key = generate_keypair()
        salt = secrets.token_bytes(SALT_BYTES)
        derived = derive_officer_keys(PASSPHRASE, salt, CHEAP_COST)
        officer.public_key = bytes(old_key.public_key)
        officer.wrapped_secret_key = wrap_with_wrapping_key(
            old_key, derived.wrapping_key, salt, CHEAP_COST
        )
        officer.auth_verifier = auth_key_verifier(derived.auth_key)
        for code in codes:
            offices.grant(
                db,
                code,
                officer,
                KeyChain.of(world.office_keys[code]),
                "test",
                read_out=fingerprint(old_key.public_key),
            )
    person = Person(username, PASSPHRASE, totp_secret, officer.id)
    world.people[username] = person
    return person


def fresh_code(instance: Instance, person: Person) -> str:
    """A valid code, after forgetting the last one used (as if 30 seconds had passed)."""
    with instance.sessions.begin() as db:
        officer = db.get(Officer, person.id)
        assert officer is not None
        officer.totp_last_counter = 0
    return pyotp.TOTP(person.totp_secret).now()


def next_code(person: Person) -> str:
    """The code of the next time step: fresh even if the current one was just used."""
    return pyotp.TOTP(person.totp_secret).at(datetime.now(UTC).timestamp() + 30)


def wrong_code(person: Person) -> str:
    """A well-formed code that is not valid now (none of the accepted time steps gives it)."""
    totp = pyotp.TOTP(person.totp_secret)
    now = datetime.now(UTC).timestamp()
    valid = {totp.at(now + step) for step in (-60, -30, 0, 30, 60)}
    return next(code for code in ("000000", "111111", "222222", "333333") if code not in valid)


def login_form(
    client: FlaskClient, username: str, passphrase: str, code: str, next_page: str = ""
) -> TestResponse:
    """Post the sign-in form with these values (and `?next=`, already encoded, if given)."""
    page = client.get("/login").get_data(as_text=True)
    return client.post(
        f"/login?next={next_page}" if next_page else "/login",
        data={
            "csrf_token": csrf_token(page),
            "username": username,
            "passphrase": passphrase,
            "code": code,
        },
    )


def sign_in(client: FlaskClient, instance: Instance, person: Person) -> TestResponse:
    """Sign in through the form."""
    code = fresh_code(instance, person)
    return login_form(client, person.username, person.passphrase, code)


def signed_in_client(app: Flask, world: World, role: str) -> FlaskClient:
    """A client signed in as the officer of `role`."""
    client = app.test_client()
    response = sign_in(client, world.instance, world.people[role])
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


def source_report(
    source_app: Flask,
    category: str,
    message: str = "A report with enough words to be accepted.",
    files: list[tuple[str, bytes]] | None = None,
    extra: dict[str, str] | None = None,
) -> tuple[str, FlaskClient]:
    """Make a report through the source interface; return (codename, signed-in source client)."""
    client = source_app.test_client()
    codename, form = new_codename(client)
    sent = submit_report(
        client, form, {"category": category, "message": message, **(extra or {})}, files
    )
    assert sent.status_code == 302, sent.get_data(as_text=True)
    return codename, client


def post_form(client: FlaskClient, page_path: str, path: str, data: dict[str, str]) -> TestResponse:
    """POST a form found on `page_path`, with that page's CSRF token."""
    page = client.get(page_path).get_data(as_text=True)
    return client.post(path, data={"csrf_token": csrf_token(page), **data})


def now_counter() -> int:
    """The current TOTP time step."""
    return int(datetime.now(UTC).timestamp()) // 30


def b64(data: bytes) -> str:
    """Base64 text."""
    return base64.b64encode(data).decode()


def audit_actions(instance: Instance) -> list[str]:
    """Every audit action so far, in order."""
    from sqlalchemy import select

    from dropbox.models import AuditEvent

    with instance.sessions() as db:
        return list(db.execute(select(AuditEvent.action).order_by(AuditEvent.id)).scalars())


def audit_details(instance: Instance, action: str) -> list[str]:
    """The details of every audit event with this action, in order."""
    from sqlalchemy import select

    from dropbox.models import AuditEvent

    with instance.sessions() as db:
        return list(
            db.execute(
                select(AuditEvent.detail).where(AuditEvent.action == action).order_by(AuditEvent.id)
            ).scalars()
        )


def chain_intact(instance: Instance) -> bool:
    """True if the audit chain verifies."""
    from dropbox import audit

    with instance.sessions() as db:
        return audit.verify(db).ok


def case_client(case_app: Flask, token: str | None = None) -> CaseServerClient:
    """A client of the case server in this process (as the reviewer app makes one)."""
    return CaseServerClient(CASE_BASE, transport=httpx.WSGITransport(app=case_app), token=token)


def api_token(case_app: Flask, world: World, role: str) -> str:
    """A bearer token of the officer of `role`, from a real sign-in on the case server.

    Derived as the reviewer app derives (`tests/signin_helpers.derive`): only
    the auth key and a fresh TOTP code are sent.
    """
    from tests.signin_helpers import sign_in as api_sign_in

    person = world.people[role]
    client = case_client(case_app)
    try:
        signed = api_sign_in(
            client, person.username, person.passphrase, fresh_code(world.instance, person)
        )
    finally:
        client.close()
    return signed.token


def api_headers(case_app: Flask, world: World, role: str) -> dict[str, str]:
    """A bearer token header for the officer of `role` (for raw requests under API)."""
    return {"Authorization": f"Bearer {api_token(case_app, world, role)}"}
