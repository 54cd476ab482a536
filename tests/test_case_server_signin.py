"""Case server sign-in, enrolment and account routes, through client.py against the real server.

The passphrase never travels: each test derives the auth key from the
header the server hands out, as the reviewer app does, and a capturing
transport shows that no request body holds the passphrase or a key that
opens anything.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pyotp
import pytest
from nacl.public import PrivateKey
from sqlalchemy import select

from crypto.kdf import SALT_BYTES
from crypto.keys import (
    WRAP_HEADER_BYTES,
    KeyChain,
    derive_officer_keys,
    fingerprint,
    generate_keypair,
    wrap_header,
    wrap_parameters,
    wrap_with_wrapping_key,
)
from dropbox import officers
from dropbox.instance import Instance
from dropbox.models import AuditEvent, Officer
from journalist_interface.client import ApiError, CaseServerClient
from tests.case_helpers import BASE_URL, PASSPHRASE, CaseWorld, make_case_world
from tests.conftest import CHEAP_COST, DATABASE
from tests.signin_helpers import Codes, current_step, derive, open_keys, sign_in

pytestmark = pytest.mark.database_engine

REFUSED = "the username, passphrase or code is not right; a code works only once"


@pytest.fixture
def world(instance: Instance, office_keys: dict[str, PrivateKey]) -> Iterator[CaseWorld]:
    made = make_case_world(instance, office_keys)
    yield made
    made.close()


def codes(world: CaseWorld, role: str) -> Codes:
    person = world.people[role]
    return Codes(world.instance, person.id, person.totp_secret)


def anonymous(world: CaseWorld, transport: httpx.BaseTransport | None = None) -> CaseServerClient:
    made = CaseServerClient(BASE_URL, transport=transport or world.transport())
    world.clients.append(made)
    return made


def actions(world: CaseWorld) -> list[tuple[str, str]]:
    with world.instance.sessions() as db:
        rows = db.execute(select(AuditEvent.actor, AuditEvent.action).order_by(AuditEvent.id))
        return [(a, b) for a, b in rows.all()]


# --- signing in ----------------------------------------------------------------------------


def test_sign_in_with_the_auth_key_and_a_code_opens_the_officers_keys(world: CaseWorld) -> None:
    client = anonymous(world)
    derived = derive(client, "eco-officer", PASSPHRASE)
    signed = client.sign_in("eco-officer", derived.auth_key, codes(world, "eco").next())
    assert signed.token and signed.device
    assert signed.me.username == "eco-officer" and not signed.me.is_admin
    # The app opens its keys locally: the officer's key, and ECO's key through the grant.
    secret_key, held = open_keys(signed, derived.wrapping_key)
    assert bytes(secret_key.public_key) == signed.me.public_key
    assert set(held) == {"ECO"}
    assert bytes(held["ECO"]) == bytes(world.office_keys["ECO"])
    assert {o.code for o in signed.me.offices} == {"OIO", "ECO"}
    assert signed.me.categories["fraud"]
    assert "received" in signed.me.statuses and "withdrawn" in signed.me.outcomes
    # The token works for the next calls, and is the one /me answers to.
    assert client.me().id == world.people["eco"].id
    assert ("eco-officer", "officer.sign_in") in actions(world)


def test_wrong_auth_key_wrong_code_and_a_replayed_code_are_refused(world: CaseWorld) -> None:
    client = anonymous(world)
    eco = codes(world, "eco")
    right = derive(client, "eco-officer", PASSPHRASE).auth_key
    wrong = derive(client, "eco-officer", "not the passphrase at all").auth_key

    with pytest.raises(ApiError) as refused:
        client.sign_in("eco-officer", wrong, eco.next())
    assert (refused.value.status, refused.value.message) == (401, REFUSED)

    code = eco.next()
    wrong_code = f"{(int(code) + 1) % 1_000_000:06d}"
    with pytest.raises(ApiError) as refused:
        client.sign_in("eco-officer", right, wrong_code)
    assert (refused.value.status, refused.value.message) == (401, REFUSED)

    client.sign_in("eco-officer", right, code)
    with pytest.raises(ApiError) as replayed:
        anonymous(world).sign_in("eco-officer", right, code)
    assert (replayed.value.status, replayed.value.message) == (401, REFUSED)
    failures = [a for a in actions(world) if a[1] == "officer.sign_in_failed"]
    assert failures == [("eco-officer", "officer.sign_in_failed")] * 3


def test_a_deactivated_officer_cannot_sign_in(world: CaseWorld) -> None:
    client = anonymous(world)
    key = derive(client, "gone-officer", PASSPHRASE).auth_key
    with pytest.raises(ApiError) as refused:
        client.sign_in("gone-officer", key, codes(world, "gone").next())
    assert refused.value.status == 401


def test_unknown_names_get_a_stable_header_of_the_same_shape(world: CaseWorld) -> None:
    client = anonymous(world)
    real = client.signin_parameters("eco-officer")
    with world.instance.sessions() as db:
        stored = officers.get(db, "eco-officer").wrapped_secret_key
    assert stored is not None and real == stored[:WRAP_HEADER_BYTES]

    unknown = client.signin_parameters("nobody-here")
    assert len(unknown) == len(real) == WRAP_HEADER_BYTES
    cost, salt = wrap_parameters(unknown, minimum=CHEAP_COST)
    assert (
        cost
        == world.instance.config.crypto.kdf_cost
        == wrap_parameters(real, minimum=CHEAP_COST)[0]
    )
    assert len(salt) == SALT_BYTES
    # Stable across calls (and case), different between names.
    assert client.signin_parameters("nobody-here") == unknown
    assert client.signin_parameters(" Nobody-Here ") == unknown
    assert client.signin_parameters("somebody-else") != unknown
    assert client.signin_parameters("not a username at all!") != unknown
    # The same version and cost fields as a real header: only the salt differs.
    assert unknown[:-SALT_BYTES] == wrap_header(cost, bytes(SALT_BYTES))[:-SALT_BYTES]

    # An invited officer who has not enrolled gets a fake header too.
    with world.instance.sessions.begin() as db:
        officers.create_enrolment(db, "newcomer", "New Comer", False, "test")
    pending = client.signin_parameters("newcomer")
    assert len(pending) == WRAP_HEADER_BYTES and client.signin_parameters("newcomer") == pending

    # Signing in as nobody is refused with the same words, and recorded without the text.
    derived = derive_officer_keys("whatever typed", salt, cost)
    with pytest.raises(ApiError) as refused:
        client.sign_in("nobody-here", derived.auth_key, "123456")
    assert (refused.value.status, refused.value.message) == (401, REFUSED)
    assert ("(unknown)", "officer.sign_in_failed") in actions(world)


def test_lockout_after_five_failures_and_a_known_device_gets_through(world: CaseWorld) -> None:
    eco = codes(world, "eco")
    right = derive(anonymous(world), "eco-officer", PASSPHRASE).auth_key
    # The officer's usual reviewer app signed in before: it holds a device token.
    usual = anonymous(world)
    device = usual.sign_in("eco-officer", right, eco.next()).device
    usual.sign_out()

    flood = anonymous(world)
    wrong = bytes(32)
    for _ in range(5):
        with pytest.raises(ApiError) as refused:
            flood.sign_in("eco-officer", wrong, "000000")
    assert refused.value.status == 429
    assert isinstance(refused.value.extra.get("retry_after"), int)
    assert 0 < refused.value.extra["retry_after"] <= 60
    # Locked: even the right key and code are refused without a device token...
    with pytest.raises(ApiError) as locked:
        anonymous(world).sign_in("eco-officer", right, eco.next())
    assert locked.value.status == 429
    # ...but the officer's own app, with its device token, is not held back by the flood.
    signed = usual.sign_in("eco-officer", right, eco.next(), device)
    assert signed.me.username == "eco-officer"
    # Names nobody has lock alike.
    for _ in range(5):
        with pytest.raises(ApiError) as ghost:
            flood.sign_in("no-such-officer", wrong, "000000")
    assert ghost.value.status == 429


def test_a_flood_of_header_requests_does_not_keep_a_known_device_out(world: CaseWorld) -> None:
    usual = anonymous(world)
    device = sign_in(usual, "eco-officer", PASSPHRASE, codes(world, "eco").next()).device
    flood = anonymous(world)
    answered = 0
    with pytest.raises(ApiError) as limited:
        for _ in range(200):
            flood.signin_parameters("eco-officer")
            answered += 1
    assert limited.value.status == 429 and answered < 120
    # The officer's own app, with its device token, still gets its header and signs in.
    header = usual.signin_parameters("eco-officer", device)
    cost, salt = wrap_parameters(header, minimum=CHEAP_COST)
    derived = derive_officer_keys(PASSPHRASE, salt, cost)
    assert usual.sign_in("eco-officer", derived.auth_key, codes(world, "eco").next(), device)


def test_requests_carry_no_passphrase_and_no_key_that_opens_anything(world: CaseWorld) -> None:
    seen: list[bytes] = []

    class Capturing(httpx.WSGITransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(request.read() + str(request.url).encode() + repr(request.headers).encode())
            return super().handle_request(request)

    client = anonymous(world, Capturing(app=world.app))
    derived = derive(client, "eco-officer", PASSPHRASE)
    signed = client.sign_in("eco-officer", derived.auth_key, codes(world, "eco").next())
    secret_key, held = open_keys(signed, derived.wrapping_key)
    new = derive_officer_keys(
        "another long passphrase", secrets.token_bytes(SALT_BYTES), CHEAP_COST
    )
    client.change_passphrase(
        auth_key=derived.auth_key,
        code=codes(world, "eco").next(),
        new_auth_key=new.auth_key,
        new_wrapped_secret_key=wrap_with_wrapping_key(
            secret_key, new.wrapping_key, secrets.token_bytes(SALT_BYTES), CHEAP_COST
        ),
    )
    assert len(seen) == 3
    wire = b"".join(seen)
    import base64

    forbidden = [
        PASSPHRASE.encode(),
        b"another long passphrase",
        derived.wrapping_key,
        new.wrapping_key,
        bytes(secret_key),
        bytes(held["ECO"]),
    ]
    for secret in forbidden:
        assert secret not in wire
        assert base64.b64encode(secret) not in wire
    # What did travel: the auth key (as base64), which the server keeps only a hash of.
    assert base64.b64encode(derived.auth_key) in wire


def test_sign_out_ends_the_token(world: CaseWorld) -> None:
    client = anonymous(world)
    sign_in(client, "eco-officer", PASSPHRASE, codes(world, "eco").next())
    token = client.token
    client.sign_out()
    stale = CaseServerClient(BASE_URL, transport=world.transport(), token=token)
    world.clients.append(stale)
    with pytest.raises(ApiError) as refused:
        stale.me()
    assert refused.value.status == 401
    with pytest.raises(ApiError) as none:
        anonymous(world).me()
    assert none.value.status == 401


# --- enrolment -----------------------------------------------------------------------------


def _enrol(
    client: CaseServerClient, username: str, code: str, passphrase: str
) -> tuple[KeyChain, str, bytes]:
    """Enrol as the reviewer app does; return the key pair, TOTP secret and auth key."""
    made = officers.new_credentials(passphrase, CHEAP_COST)
    totp_secret = pyotp.random_base32()
    client.enrol(
        username,
        code,
        auth_key=made.auth_key,
        public_key=made.public_key,
        wrapped_secret_key=made.wrapped_secret_key,
        totp_secret=totp_secret,
        totp_code=pyotp.TOTP(totp_secret).now(),
    )
    return made.secret_key, totp_secret, made.auth_key


def test_enrolment_with_a_one_time_code(world: CaseWorld) -> None:
    with world.instance.sessions.begin() as db:
        invited, code = officers.create_enrolment(db, "newcomer", "New Comer", False, "test")
        invited_id = invited.id
    client = anonymous(world)
    client.check_enrolment("newcomer", code)
    with pytest.raises(ApiError) as wrong:
        client.check_enrolment("newcomer", "not-the-right-code")
    assert wrong.value.status == 400
    with pytest.raises(ApiError) as other:
        client.check_enrolment("eco-officer", code)
    assert other.value.message == wrong.value.message

    # A code from the new authenticator that is not right: refused, the enrolment code still works.
    made = officers.new_credentials("the newcomer's passphrase", CHEAP_COST)
    with pytest.raises(ApiError) as bad_totp:
        client.enrol(
            "newcomer",
            code,
            auth_key=made.auth_key,
            public_key=made.public_key,
            wrapped_secret_key=made.wrapped_secret_key,
            totp_secret=pyotp.random_base32(),
            totp_code="000000",
        )
    assert bad_totp.value.status == 400
    with pytest.raises(ApiError) as bad_wrap:
        client.enrol(
            "newcomer",
            code,
            auth_key=made.auth_key,
            public_key=made.public_key,
            wrapped_secret_key=b"not a wrapped key",
            totp_secret=(secret := pyotp.random_base32()),
            totp_code=pyotp.TOTP(secret).now(),
        )
    assert bad_wrap.value.status == 400
    # A key pair made as before X-Wing (X25519, its 32-byte wrap) is refused: a new
    # officer's key is X-Wing, so that grants sealed to it are too.
    classical = generate_keypair()
    salt = secrets.token_bytes(SALT_BYTES)
    derived = derive_officer_keys("the newcomer's passphrase", salt, CHEAP_COST)
    with pytest.raises(ApiError) as x25519:
        client.enrol(
            "newcomer",
            code,
            auth_key=derived.auth_key,
            public_key=bytes(classical.public_key),
            wrapped_secret_key=wrap_with_wrapping_key(
                classical, derived.wrapping_key, salt, CHEAP_COST
            ),
            totp_secret=(secret := pyotp.random_base32()),
            totp_code=pyotp.TOTP(secret).now(),
        )
    assert x25519.value.status == 400 and "X-Wing" in x25519.value.message
    client.check_enrolment("newcomer", code)

    secret_key, totp_secret, auth_key = _enrol(
        client, "newcomer", code, "the newcomer's passphrase"
    )
    with world.instance.sessions() as db:
        stored = db.get(Officer, invited_id)
        assert stored is not None
        assert stored.public_key == bytes(secret_key.public_key)
        assert stored.auth_verifier is not None and auth_key not in stored.auth_verifier
        assert stored.enrolment_code_hash is None

    # Used once: neither the check nor a second enrolment takes it again.
    with pytest.raises(ApiError) as again:
        client.check_enrolment("newcomer", code)
    assert again.value.status == 400
    with pytest.raises(ApiError) as twice:
        _enrol(client, "newcomer", code, "someone else's passphrase")
    assert twice.value.status == 400

    # The new officer signs in with what their app derives; the header is now their own.
    signed = sign_in(
        client,
        "newcomer",
        "the newcomer's passphrase",
        Codes(world.instance, invited_id, totp_secret).next(),
    )
    assert signed.me.public_key == bytes(secret_key.public_key)
    assert signed.me.grants == []
    assert fingerprint(secret_key.public_key)


def test_an_expired_enrolment_code_is_refused(world: CaseWorld) -> None:
    with world.instance.sessions.begin() as db:
        invited, code = officers.create_enrolment(db, "late-comer", "", False, "test")
        invited.enrolment_expires_at = officers._now() - timedelta(minutes=1)
    client = anonymous(world)
    with pytest.raises(ApiError) as expired:
        client.check_enrolment("late-comer", code)
    assert expired.value.status == 400
    with pytest.raises(ApiError) as refused:
        _enrol(client, "late-comer", code, "a late passphrase here")
    assert refused.value.message == expired.value.message


# --- the account ---------------------------------------------------------------------------


def test_passphrase_change_retires_the_old_auth_key_and_other_tokens(world: CaseWorld) -> None:
    eco = codes(world, "eco")
    here, elsewhere = anonymous(world), anonymous(world)
    old = derive(here, "eco-officer", PASSPHRASE)
    signed = here.sign_in("eco-officer", old.auth_key, eco.next())
    elsewhere.sign_in("eco-officer", old.auth_key, eco.next())
    secret_key, _ = open_keys(signed, old.wrapping_key)

    new_salt = secrets.token_bytes(SALT_BYTES)
    new = derive_officer_keys("a brand new passphrase", new_salt, CHEAP_COST)
    new_wrapped = wrap_with_wrapping_key(secret_key, new.wrapping_key, new_salt, CHEAP_COST)
    with pytest.raises(ApiError) as wrong:
        here.change_passphrase(
            auth_key=bytes(32),
            code=eco.next(),
            new_auth_key=new.auth_key,
            new_wrapped_secret_key=new_wrapped,
        )
    assert wrong.value.status == 400
    with pytest.raises(ApiError) as malformed:
        here.change_passphrase(
            auth_key=old.auth_key,
            code=eco.next(),
            new_auth_key=new.auth_key,
            new_wrapped_secret_key=new_wrapped[:-1],
        )
    assert malformed.value.status == 400
    here.change_passphrase(
        auth_key=old.auth_key,
        code=eco.next(),
        new_auth_key=new.auth_key,
        new_wrapped_secret_key=new_wrapped,
    )
    # This token goes on; the other one ended.
    assert here.me().username == "eco-officer"
    with pytest.raises(ApiError) as ended:
        elsewhere.me()
    assert ended.value.status == 401
    # The header is the new one; the old auth key no longer signs in, the new one does.
    assert here.signin_parameters("eco-officer") == new_wrapped[:WRAP_HEADER_BYTES]
    with pytest.raises(ApiError) as stale:
        anonymous(world).sign_in("eco-officer", old.auth_key, eco.next())
    assert stale.value.status == 401
    again = anonymous(world)
    derived = derive(again, "eco-officer", "a brand new passphrase")
    assert derived.auth_key == new.auth_key
    reopened, held = open_keys(
        again.sign_in("eco-officer", derived.auth_key, eco.next()), derived.wrapping_key
    )
    assert bytes(reopened) == bytes(secret_key) and "ECO" in held
    assert ("eco-officer", "officer.passphrase") in actions(world)


def test_totp_replacement_needs_the_auth_key_and_a_code_from_the_new_secret(
    world: CaseWorld,
) -> None:
    client = anonymous(world)
    eco = codes(world, "eco")
    auth_key = derive(client, "eco-officer", PASSPHRASE).auth_key
    client.sign_in("eco-officer", auth_key, eco.next())
    new_secret = pyotp.random_base32()
    with pytest.raises(ApiError) as wrong_key:
        client.replace_totp(
            auth_key=bytes(32), secret=new_secret, code=pyotp.TOTP(new_secret).now()
        )
    assert wrong_key.value.status == 400
    with pytest.raises(ApiError) as old_code:
        client.replace_totp(auth_key=auth_key, secret=new_secret, code=eco.next())
    assert old_code.value.status == 400
    client.replace_totp(auth_key=auth_key, secret=new_secret, code=pyotp.TOTP(new_secret).now())

    # The old authenticator's codes stop working; the new one's work.
    now = current_step()
    with pytest.raises(ApiError):
        anonymous(world).sign_in(
            "eco-officer",
            auth_key,
            pyotp.TOTP(world.people["eco"].totp_secret).generate_otp(now + 1),
        )
    anonymous(world).sign_in("eco-officer", auth_key, pyotp.TOTP(new_secret).generate_otp(now + 1))
    assert ("eco-officer", "officer.totp_reenrol") in actions(world)


def _database_bytes(data_dir: Path) -> bytes:
    return b"".join(
        p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file() and "sqlite" in p.name
    )


@pytest.mark.skipif(DATABASE != "sqlite", reason="reads the SQLite file's bytes")
def test_no_totp_secret_in_the_database_file(world: CaseWorld) -> None:
    with world.instance.sessions.begin() as db:
        _, code = officers.create_enrolment(db, "newcomer", "", False, "test")
    _, enrolled_secret, _ = _enrol(anonymous(world), "newcomer", code, "the newcomer's passphrase")
    replaced = pyotp.random_base32()
    client = anonymous(world)
    auth_key = derive(client, "oio-officer", PASSPHRASE).auth_key
    client.sign_in("oio-officer", auth_key, codes(world, "oio").next())
    client.replace_totp(auth_key=auth_key, secret=replaced, code=pyotp.TOTP(replaced).now())

    dump = _database_bytes(world.instance.config.data_dir)
    assert len(dump) > 0
    for person in world.people.values():
        assert person.totp_secret.encode() not in dump
    for secret in (enrolled_secret, replaced):
        assert secret.encode() not in dump
        assert secret.lower().encode() not in dump
    # The key they are under is in instance.json, beside the database, not in it.
    assert b"totp_key" in (world.instance.config.data_dir / "instance.json").read_bytes()
