"""An officer enrolled before X-Wing replaces their X25519 key with an X-Wing key.

Such an officer's grants are sealed boxes, X25519 alone, even of an X-Wing
office's key. On their account page ("Get a post-quantum key") the reviewer
app makes an X-Wing key on the officer's machine, wraps it under their
passphrase, opens each office key they hold from their own grant (checked
against the server's key and the pin) and seals it to the new key; the case
server replaces the key, the wrap and the grants in one transaction
(`officers.replace_key`). Driven here through the reviewer app's pages and
the case server's API, with the officer's row made as enrolment made it
before X-Wing.
"""

from __future__ import annotations

import html
import re
import secrets

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from crypto.kdf import SALT_BYTES
from crypto.keys import (
    KeyChain,
    XWingSecretKey,
    derive_officer_keys,
    fingerprint,
    generate_hybrid_key,
    generate_keypair,
    is_hybrid,
    is_sealed_to_kind_of,
    open_sealed_secret_key,
    public_key_from_bytes,
    seal_secret_key,
    wrap_with_wrapping_key,
)
from dropbox import officers, offices
from dropbox.errors import DropboxError
from dropbox.models import OfficeGrant, Officer
from journalist_interface.client import ApiError
from tests.conftest import CHEAP_COST
from tests.reviewer_helpers import (
    PASSPHRASE,
    Person,
    World,
    add_officer_enrolled_before_x_wing,
    api_token,
    case_client,
    fresh_code,
    next_code,
    post_form,
    sign_in,
    source_report,
    wrong_code,
)
from tests.substitution_helpers import events, text_of

pytestmark = pytest.mark.database_engine

SHOWN = re.compile(r'<code id="key-fingerprint">([A-Z2-7 ]+)</code>')
OLDER_KIND = "Your key is of the older kind (X25519)."
PANEL = "Get a post-quantum key"
MESSAGE = "The depot manager sells the fuel stock every Friday night, and signs for it."
RETALIATION = "After I reported the fuel sales, my contract was cut short without a reason."


# --- what the database holds ----------------------------------------------------------------


def row(world: World, person: Person) -> tuple[bytes, bytes, bytes]:
    """(public key, wrapped key, auth verifier) as the database holds them."""
    with world.instance.sessions() as db:
        officer = db.get(Officer, person.id)
        assert officer is not None
        assert officer.public_key and officer.wrapped_secret_key and officer.auth_verifier
        return officer.public_key, officer.wrapped_secret_key, officer.auth_verifier


def grants(world: World, person: Person) -> dict[str, bytes]:
    """The officer's grants: office code -> sealed office key."""
    with world.instance.sessions() as db:
        rows = db.execute(select(OfficeGrant).where(OfficeGrant.officer_id == person.id))
        return {g.office_code: g.sealed_office_key for g in rows.scalars()}


def held_key(world: World, person: Person) -> KeyChain:
    """The key chain the officer's passphrase unwraps from their row."""
    with world.instance.sessions() as db:
        officer = db.get(Officer, person.id)
        assert officer is not None
        return officers.open_secret_key(officer, person.passphrase, CHEAP_COST)


def signed_in_as(reviewer: Flask, world: World, person: Person) -> tuple[FlaskClient, str]:
    """A browser signed in as `person`, and the text of the page it landed on."""
    client = reviewer.test_client()
    answer = sign_in(client, world.instance, person)
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return client, text_of(client.get(answer.headers["Location"]))


def replace_on_page(client: FlaskClient, passphrase: str, code: str) -> tuple[TestResponse, str]:
    """Post the account page's "Replace my key" form; (the answer, the page it lands on)."""
    answer = post_form(
        client, "/account", "/account/key", {"current_passphrase": passphrase, "code": code}
    )
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return answer, text_of(client.get(answer.headers["Location"]))


def shown_fingerprint(client: FlaskClient) -> str:
    found = SHOWN.search(client.get("/account").get_data(as_text=True))
    assert found is not None
    return found.group(1)


def the_reports(client: FlaskClient) -> set[str]:
    inbox = client.get("/").get_data(as_text=True)
    return set(re.findall(r'href="/reports/([0-9a-f]{32})"', inbox))


# --- through the reviewer app ------------------------------------------------------------


def test_an_officer_enrolled_before_x_wing_replaces_their_key_and_reads_on(
    reviewer: Flask, source: Flask, world: World
) -> None:
    """The account page's button: a new X-Wing key, the grants re-sealed to it, all still read."""
    source_report(source, "fraud", MESSAGE)
    source_report(source, "retaliation", RETALIATION)
    person = add_officer_enrolled_before_x_wing(world, "early-bird", ["OIO", "ECO"])
    old_public, old_wrap, old_verifier = row(world, person)
    old_fingerprint = fingerprint(public_key_from_bytes(old_public))
    assert all(not is_sealed_to_kind_of(s, generate_hybrid_key().public_key)
               for s in grants(world, person).values())  # fmt: skip

    admin, _ = signed_in_as(reviewer, world, world.people["admin"])
    listed = text_of(admin.get("/admin/officers"))
    assert listed.count("Older key (X25519)") == 2  # early-bird's row, and the hint
    client, landing = signed_in_as(reviewer, world, person)
    assert OLDER_KIND in landing
    account = text_of(client.get("/account"))
    assert PANEL in account and "Replace my key with an X-Wing key" in account
    assert shown_fingerprint(client) == old_fingerprint
    reports = the_reports(client)
    assert len(reports) == 2
    other_session, _ = signed_in_as(reviewer, world, person)

    _, page = replace_on_page(client, PASSPHRASE, next_code(person))
    new_public, new_wrap, new_verifier = row(world, person)
    new_fingerprint = fingerprint(public_key_from_bytes(new_public))
    assert new_fingerprint.startswith("XWING ")
    assert (
        "You have a new X-Wing key, and your offices were moved to it. Its fingerprint is"
        f" {new_fingerprint}. Please tell your administrator" in page
    )
    assert PANEL not in page and shown_fingerprint(client) == new_fingerprint
    assert new_wrap != old_wrap and new_verifier != old_verifier

    # The new key is what the passphrase unwraps, alone in its chain (nothing is left
    # sealed to the old key), and each grant is sealed to it under X-Wing and opens
    # to the office's whole chain.
    chain = held_key(world, person)
    assert len(chain.keys) == 1 and isinstance(chain.current, XWingSecretKey)
    assert bytes(chain.public_key) == new_public
    sealed = grants(world, person)
    assert sorted(sealed) == ["ECO", "OIO"]
    for code, grant in sealed.items():
        assert is_sealed_to_kind_of(grant, chain.public_key)
        opened = open_sealed_secret_key(grant, chain)
        assert bytes(opened) == bytes(KeyChain.of(world.office_keys[code]))
    (event,) = events(world.instance, "officer.rekey")
    assert event[:2] == (
        "early-bird",
        f"early-bird {new_fingerprint} replaces {old_fingerprint}; 2 grants re-sealed",
    )

    # This session reads on; the other one was signed out.
    for rid in reports:
        report = html.unescape(client.get(f"/reports/{rid}").get_data(as_text=True))
        assert (MESSAGE in report or RETALIATION in report) and "damaged" not in report
    assert other_session.get("/").status_code == 302

    # Signing in again opens the new key with the passphrase: no notice, no panel.
    again, landing = signed_in_as(reviewer, world, person)
    assert OLDER_KIND not in landing and PANEL not in text_of(again.get("/account"))
    assert the_reports(again) == reports
    assert shown_fingerprint(again) == new_fingerprint

    # The administrators' page marked the older key until it was replaced.
    admin, _ = signed_in_as(reviewer, world, world.people["admin"])
    listed = text_of(admin.get("/admin/officers"))
    assert listed.count("Older key (X25519)") == 1  # the hint names it; no row is marked
    # An administrator now grants only against the new fingerprint.
    with world.instance.sessions.begin() as db:
        officer = officers.get(db, "early-bird")
        with pytest.raises(offices.KeyMismatch):
            offices.check_officer_key(db, officer, old_fingerprint, "test")
        offices.check_officer_key(db, officer, new_fingerprint, "test")


def test_an_officer_with_an_x_wing_key_is_offered_nothing(reviewer: Flask, world: World) -> None:
    client, landing = signed_in_as(reviewer, world, world.people["oio"])
    assert OLDER_KIND not in landing and PANEL not in text_of(client.get("/account"))
    before = row(world, world.people["oio"])
    _, page = replace_on_page(client, PASSPHRASE, next_code(world.people["oio"]))
    assert "Your key is already an X-Wing key: nothing was changed." in page
    assert row(world, world.people["oio"]) == before


def test_a_wrong_passphrase_or_code_changes_nothing(reviewer: Flask, world: World) -> None:
    person = add_officer_enrolled_before_x_wing(world, "early-bird", ["OIO"])
    before, granted = row(world, person), grants(world, person)
    client, _ = signed_in_as(reviewer, world, person)

    _, page = replace_on_page(client, "not the passphrase at all", next_code(person))
    assert "The current passphrase is not right." in page
    _, page = replace_on_page(client, PASSPHRASE, wrong_code(person))
    assert "The passphrase or the code is not right; a code works only once." in page
    assert row(world, person) == before and grants(world, person) == granted
    assert events(world.instance, "officer.rekey") == []
    assert PANEL in page  # still offered: nothing happened


def test_a_fake_office_key_from_the_server_stops_the_new_key_and_is_recorded(
    reviewer: Flask, world: World
) -> None:
    """The server lists an office key of its own and seals it to the officer as their grant.

    The app re-seals only what it can vouch for: the office key it opens must
    match the fingerprint pinned in its settings. Nothing is made or sent.
    """
    person = add_officer_enrolled_before_x_wing(world, "early-bird", ["OIO"])
    client, _ = signed_in_as(reviewer, world, person)
    fake = generate_hybrid_key()
    with world.instance.sessions.begin() as db:
        office = offices.get(db, "OIO")
        office.public_key = bytes(fake.public_key)
        grant = db.get(OfficeGrant, (person.id, "OIO"))
        assert grant is not None
        grant.sealed_office_key = seal_secret_key(fake, public_key_from_bytes(row_key(db, person)))
    before = row(world, person)

    _, page = replace_on_page(client, PASSPHRASE, next_code(person))
    assert (
        "Nothing was sent: the key of office OIO on the server does not match the fingerprint"
        " pinned in the reviewer app's settings." in page
    )
    assert row(world, person) == before
    assert [e[1] for e in events(world.instance, "key.mismatch")] == [
        "office key: OIO differs from the fingerprint pinned in the reviewer app's settings"
    ]
    assert events(world.instance, "officer.rekey") == []


def row_key(db: object, person: Person) -> bytes:
    officer = db.get(Officer, person.id)  # type: ignore[attr-defined]
    assert officer is not None and officer.public_key is not None
    return bytes(officer.public_key)


def test_a_grant_that_does_not_open_stops_the_new_key_with_a_way_forward(
    reviewer: Flask, world: World
) -> None:
    person = add_officer_enrolled_before_x_wing(world, "early-bird", ["OIO", "ECO"])
    client, _ = signed_in_as(reviewer, world, person)
    with world.instance.sessions.begin() as db:
        grant = db.get(OfficeGrant, (person.id, "ECO"))
        assert grant is not None
        grant.sealed_office_key = seal_secret_key(generate_keypair(), generate_keypair().public_key)
    before = row(world, person)
    _, page = replace_on_page(client, PASSPHRASE, next_code(person))
    assert (
        "Your key for office ECO does not open, so it cannot be moved to a new key. Ask an"
        " administrator to grant you that office again, then try again. Nothing was changed."
        in page
    )
    assert row(world, person) == before
    # Signing in again says so too (the notice comes after the session starts).
    _, landing = signed_in_as(reviewer, world, person)
    assert (
        "Your key for office ECO did not open: ask an administrator to grant you that office"
        " again." in landing
    )
    assert OLDER_KIND in landing


# --- what the case server accepts ---------------------------------------------------------


def replacement(world: World, person: Person, **changes: object) -> dict[str, object]:
    """A well-made replacement for `person`, as their app makes it, with `changes`."""
    old = held_key(world, person)
    new = generate_hybrid_key()
    salt = secrets.token_bytes(SALT_BYTES)
    derived = derive_officer_keys(person.passphrase, salt, CHEAP_COST)
    sealed = {
        code: seal_secret_key(open_sealed_secret_key(grant, old), new.public_key)
        for code, grant in grants(world, person).items()
    }
    with world.instance.sessions() as db:
        officer = db.get(Officer, person.id)
        assert officer is not None
        auth_key, _ = officers.derive_auth_key(officer, person.passphrase, CHEAP_COST)
    body: dict[str, object] = {
        "auth_key": auth_key,
        "code": fresh_code(world.instance, person),
        "new_auth_key": derived.auth_key,
        "public_key": bytes(new.public_key),
        "wrapped_secret_key": wrap_with_wrapping_key(new, derived.wrapping_key, salt, CHEAP_COST),
        "grants": sealed,
    }
    body.update(changes)
    return body


@pytest.mark.parametrize(
    ("change", "status", "said"),
    [
        pytest.param(
            lambda w, p: {"public_key": bytes(generate_keypair().public_key)},
            400,
            "that is not an X-Wing public key",
            id="an X25519 key",
        ),
        pytest.param(
            lambda w, p: {"public_key": b"\x01" * 1000},
            400,
            "that is not an X-Wing public key",
            id="no key at all",
        ),
        pytest.param(
            lambda w, p: {"grants": {}},
            409,
            "your offices changed while your new key was being made",
            id="a grant left out",
        ),
        pytest.param(
            lambda w, p: {
                "grants": {
                    "OIO": seal_secret_key(
                        KeyChain.of(w.office_keys["OIO"]), generate_keypair().public_key
                    )
                }
            },
            400,
            "the key of office OIO is not sealed to an X-Wing key",
            id="a grant sealed with X25519",
        ),
        pytest.param(
            lambda w, p: {"wrapped_secret_key": b"\x02" * 60},
            400,
            "the wrapped secret key is not in the expected format",
            id="a damaged wrap",
        ),
        pytest.param(
            lambda w, p: {"code": wrong_code(p)},
            400,
            "the passphrase or the code is not right",
            id="a wrong code",
        ),
    ],
)
def test_the_case_server_refuses_a_replacement_that_is_not_whole(
    case_app: Flask, world: World, change: object, status: int, said: str
) -> None:
    person = add_officer_enrolled_before_x_wing(world, "early-bird", ["OIO"])
    before, granted = row(world, person), grants(world, person)
    client = case_client(case_app, api_token(case_app, world, "early-bird"))
    try:
        with pytest.raises(ApiError) as refused:
            client.replace_key(**replacement(world, person, **change(world, person)))  # type: ignore[operator, arg-type]
    finally:
        client.close()
    assert refused.value.status == status and said in refused.value.message
    assert row(world, person) == before and grants(world, person) == granted
    assert events(world.instance, "officer.rekey") == []


def test_the_case_server_refuses_an_officer_whose_key_is_x_wing_already(
    case_app: Flask, world: World
) -> None:
    person = world.people["oio"]
    before = row(world, person)
    client = case_client(case_app, api_token(case_app, world, "oio"))
    try:
        with pytest.raises(ApiError) as refused:
            client.replace_key(**replacement(world, person))  # type: ignore[arg-type]
    finally:
        client.close()
    assert refused.value.status == 400 and "X-Wing already" in refused.value.message
    assert row(world, person) == before


def test_a_grant_sealed_to_the_key_an_officer_replaced_is_refused(
    case_app: Flask, world: World
) -> None:
    """An administrator's app that sealed to the old X25519 key just before the change."""
    person = add_officer_enrolled_before_x_wing(world, "early-bird", ["OIO"])
    old_public = public_key_from_bytes(row(world, person)[0])
    client = case_client(case_app, api_token(case_app, world, "early-bird"))
    try:
        client.replace_key(**replacement(world, person))  # type: ignore[arg-type]
    finally:
        client.close()
    assert is_hybrid(public_key_from_bytes(row(world, person)[0]))
    late = seal_secret_key(KeyChain.of(world.office_keys["ECO"]), old_public)
    admin = case_client(case_app, api_token(case_app, world, "admin"))
    try:
        with pytest.raises(ApiError) as refused:
            admin.grant(person.id, "ECO", late, fresh_code(world.instance, world.people["admin"]))
    finally:
        admin.close()
    assert refused.value.status == 400
    assert refused.value.message == (
        "that office key was sealed to a key early-bird no longer has (their key changed): ask"
        " them to read out the fingerprint on their account page, and grant again"
    )
    assert sorted(grants(world, person)) == ["OIO"]
    with world.instance.sessions.begin() as db:  # the same check for a direct caller
        officer = officers.get(db, "early-bird")
        with pytest.raises(DropboxError, match="sealed to a key early-bird no longer has"):
            offices.store_grant(db, "ECO", officer, late, "test")
