"""Case server administration: officers, grants and the audit log, through client.py.

Administrators only (403 for anyone else, 401 without a token), and every
change needs a fresh TOTP code of the acting administrator.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyotp
import pytest
from nacl.public import PrivateKey
from sqlalchemy import select, update

from crypto.keys import open_sealed_secret_key, public_key_from_bytes, seal_secret_key
from dropbox import officers
from dropbox.instance import Instance
from dropbox.models import AuditEvent, OfficeGrant, Officer
from journalist_interface.client import ApiError, CaseServerClient
from tests.case_helpers import BASE_URL, PASSPHRASE, CaseWorld, make_case_world
from tests.conftest import CHEAP_COST
from tests.signin_helpers import Codes, derive, open_keys, sign_in

pytestmark = pytest.mark.database_engine

CONFIRM = "confirm with a fresh code"


@pytest.fixture
def world(instance: Instance, office_keys: dict[str, PrivateKey]) -> Iterator[CaseWorld]:
    made = make_case_world(instance, office_keys)
    yield made
    made.close()


def codes(world: CaseWorld, role: str) -> Codes:
    person = world.people[role]
    return Codes(world.instance, person.id, person.totp_secret)


def anonymous(world: CaseWorld) -> CaseServerClient:
    made = CaseServerClient(BASE_URL, transport=world.transport())
    world.clients.append(made)
    return made


def enrol(world: CaseWorld, username: str, code: str, passphrase: str) -> tuple[PrivateKey, str]:
    """Enrol as the reviewer app does; the new key pair and TOTP secret."""
    made = officers.new_credentials(passphrase, CHEAP_COST)
    totp_secret = pyotp.random_base32()
    anonymous(world).enrol(
        username,
        code,
        auth_key=made.auth_key,
        public_key=made.public_key,
        wrapped_secret_key=made.wrapped_secret_key,
        totp_secret=totp_secret,
        totp_code=pyotp.TOTP(totp_secret).now(),
    )
    return made.secret_key, totp_secret


def actions(world: CaseWorld) -> list[tuple[str, str, str]]:
    with world.instance.sessions() as db:
        query = select(AuditEvent.actor, AuditEvent.action, AuditEvent.detail)
        return [(a, b, c) for a, b, c in db.execute(query.order_by(AuditEvent.id)).all()]


def test_administration_is_for_administrators_only(world: CaseWorld) -> None:
    officer = world.client("eco")
    eco = world.people["eco"]
    attempts = [
        officer.officers,
        lambda: officer.invite("someone", "Some One", False, codes(world, "eco").next()),
        lambda: officer.reinvite(eco.id, codes(world, "eco").next()),
        lambda: officer.deactivate(world.people["eco2"].id, codes(world, "eco").next()),
        lambda: officer.grant(eco.id, "OIO", bytes(80), codes(world, "eco").next()),
        officer.audit_log,
        officer.verify_audit,
    ]
    for attempt in attempts:
        with pytest.raises(ApiError) as refused:
            attempt()
        assert refused.value.status == 403, attempt
    nobody = anonymous(world)
    for call in (nobody.officers, nobody.audit_log, nobody.verify_audit):
        with pytest.raises(ApiError) as unsigned:
            call()
        assert unsigned.value.status == 401
    with world.instance.sessions() as db:
        assert officers.get(db, "eco-second").active
        assert db.execute(select(Officer).where(Officer.username == "someone")).first() is None


def test_every_change_needs_a_fresh_code(world: CaseWorld) -> None:
    admin = world.client("admin")
    target = world.people["eco2"].id
    for code in ("", "000000", "not a code"):
        with pytest.raises(ApiError) as refused:
            admin.deactivate(target, code)
        assert refused.value.status == 400 and CONFIRM in refused.value.message
    code = codes(world, "admin").next()
    admin.invite("first-one", "First", False, code)
    # The same code again: used up.
    with pytest.raises(ApiError) as replayed:
        admin.invite("second-one", "Second", False, code)
    assert replayed.value.status == 400 and CONFIRM in replayed.value.message
    with world.instance.sessions() as db:
        assert officers.get(db, "eco-second").active
        assert db.execute(select(Officer).where(Officer.username == "second-one")).first() is None


def test_invite_list_and_enrol(world: CaseWorld) -> None:
    admin = world.client("admin")
    ad = codes(world, "admin")
    invitation = admin.invite("new-officer", "New Officer", False, ad.next())
    assert invitation.code and invitation.expires_at is not None
    # A slip (a taken name, a bad name) is told without using up a code.
    with pytest.raises(ApiError) as taken:
        admin.invite("eco-officer", "", False, "")
    assert taken.value.status == 400 and "already exists" in taken.value.message
    with pytest.raises(ApiError) as bad:
        admin.invite("Not A Name!", "", False, "")
    assert bad.value.status == 400

    listed = {o.username: o for o in admin.officers()}
    new = listed["new-officer"]
    assert (new.id, new.enrolled, new.active, new.public_key, new.offices) == (
        invitation.officer_id,
        False,
        True,
        None,
        [],
    )
    assert listed["eco-officer"].offices == ["ECO"] and listed["eco-officer"].enrolled
    assert not listed["gone-officer"].active

    secret_key, _ = enrol(world, "new-officer", invitation.code, "the new officer's passphrase")
    new = {o.username: o for o in admin.officers()}["new-officer"]
    assert new.enrolled and new.public_key == bytes(secret_key.public_key)
    assert ("admin", "officer.invite", "new-officer") in actions(world)


def test_grant_stores_the_key_sealed_on_the_granting_machine(world: CaseWorld) -> None:
    admin = world.client("admin")
    ad = codes(world, "admin")
    invitation = admin.invite("new-officer", "", False, ad.next())
    # Not enrolled yet: nothing to seal to.
    with pytest.raises(ApiError) as early:
        admin.grant(invitation.officer_id, "OIO", bytes(80), ad.next())
    assert early.value.status == 400
    secret_key, totp_secret = enrol(world, "new-officer", invitation.code, "the new passphrase!")
    summary = {o.id: o for o in admin.officers()}[invitation.officer_id]
    assert summary.public_key is not None
    # Sealed where the office key is held (here: the test, as the reviewer app would).
    sealed = seal_secret_key(world.office_keys["OIO"], public_key_from_bytes(summary.public_key))
    for wrong_length in (sealed[:-1], sealed + b"x"):
        with pytest.raises(ApiError) as malformed:
            admin.grant(invitation.officer_id, "OIO", wrong_length, ad.next())
        assert malformed.value.status == 400
    with pytest.raises(ApiError) as no_office:
        admin.grant(invitation.officer_id, "NOPE", sealed, ad.next())
    assert no_office.value.status == 400
    with pytest.raises(ApiError) as gone:
        admin.grant(world.people["gone"].id, "OIO", sealed, ad.next())
    assert gone.value.status == 400
    with pytest.raises(ApiError) as missing:
        admin.grant(999_999, "OIO", sealed, ad.next())
    assert missing.value.status == 404

    admin.grant(invitation.officer_id, "OIO", sealed, ad.next())
    with world.instance.sessions() as db:
        stored = db.get(OfficeGrant, (invitation.officer_id, "OIO"))
        assert stored is not None and stored.sealed_office_key == sealed
        assert stored.granted_by_id == world.people["admin"].id
    assert ("admin", "office.grant", "OIO to new-officer") in actions(world)
    # The new officer's app opens it.
    client = anonymous(world)
    derived = derive(client, "new-officer", "the new passphrase!")
    signed = client.sign_in(
        "new-officer",
        derived.auth_key,
        Codes(world.instance, invitation.officer_id, totp_secret).next(),
    )
    opened, held = open_keys(signed, derived.wrapping_key)
    assert bytes(opened) == bytes(secret_key)
    assert bytes(held["OIO"]) == bytes(world.office_keys["OIO"])
    assert open_sealed_secret_key(signed.me.grants[0].sealed_office_key, opened)
    # Granting the same office again replaces the sealed key: still one grant, and it opens.
    again = seal_secret_key(world.office_keys["OIO"], public_key_from_bytes(summary.public_key))
    assert again != sealed
    admin.grant(invitation.officer_id, "OIO", again, ad.next())
    with world.instance.sessions() as db:
        grants = db.execute(
            select(OfficeGrant).where(OfficeGrant.officer_id == invitation.officer_id)
        ).scalars()
        assert [(g.office_code, g.sealed_office_key) for g in grants] == [("OIO", again)]
    assert bytes(open_sealed_secret_key(again, opened)) == bytes(world.office_keys["OIO"])


def test_reinvite_clears_credentials_grants_and_tokens(world: CaseWorld) -> None:
    admin = world.client("admin")
    eco2 = world.people["eco2"]
    theirs = world.client("eco2")
    assert theirs.me().username == "eco-second"
    old_key = derive(anonymous(world), "eco-second", PASSPHRASE).auth_key

    invitation = admin.reinvite(eco2.id, codes(world, "admin").next())
    assert invitation.officer_id == eco2.id and invitation.code
    with pytest.raises(ApiError) as ended:
        theirs.me()
    assert ended.value.status == 401
    with pytest.raises(ApiError) as old:
        anonymous(world).sign_in("eco-second", old_key, codes(world, "eco2").next())
    assert old.value.status == 401
    summary = {o.id: o for o in admin.officers()}[eco2.id]
    assert (summary.enrolled, summary.public_key, summary.offices) == (False, None, [])

    secret_key, totp_secret = enrol(world, "eco-second", invitation.code, "a fresh passphrase here")
    signed = sign_in(
        anonymous(world),
        "eco-second",
        "a fresh passphrase here",
        Codes(world.instance, eco2.id, totp_secret).next(),
    )
    assert signed.me.public_key == bytes(secret_key.public_key) and signed.me.grants == []
    with pytest.raises(ApiError) as myself:
        admin.reinvite(world.people["admin"].id, codes(world, "admin").next())
    assert myself.value.status == 400


def test_deactivate_ends_tokens_and_grants(world: CaseWorld) -> None:
    admin = world.client("admin")
    eco2 = world.people["eco2"]
    theirs = world.client("eco2")
    with pytest.raises(ApiError) as myself:
        admin.deactivate(world.people["admin"].id, codes(world, "admin").next())
    assert myself.value.status == 400
    admin.deactivate(eco2.id, codes(world, "admin").next())
    with pytest.raises(ApiError) as ended:
        theirs.me()
    assert ended.value.status == 401
    summary = {o.id: o for o in admin.officers()}[eco2.id]
    assert not summary.active and summary.offices == []
    with pytest.raises(ApiError) as refused:
        sign_in(anonymous(world), "eco-second", PASSPHRASE, codes(world, "eco2").next())
    assert refused.value.status == 401
    assert ("admin", "officer.deactivate", "eco-second") in actions(world)


def test_audit_log_pages_newest_first_and_verifies(world: CaseWorld) -> None:
    admin = world.client("admin")
    page = admin.audit_log()
    assert page.page == 1 and page.pages >= 1
    ids = [e.id for e in page.events]
    assert ids == sorted(ids, reverse=True) and ids
    with world.instance.sessions() as db:
        newest = db.execute(select(AuditEvent.id).order_by(AuditEvent.id.desc())).scalars().first()
    assert ids[0] == newest
    assert admin.audit_log(page=99).page == page.pages

    check = admin.verify_audit()
    assert check.ok and check.events == newest and check.problems == []

    # Someone who can write the database alters an event: the chain says so.
    with world.instance.sessions.begin() as db:
        db.execute(update(AuditEvent).where(AuditEvent.id == 1).values(detail="rewritten"))
    broken = admin.verify_audit()
    assert not broken.ok
    assert broken.problems == ["event 1: was altered after it was written"]
