"""The reviewer interface: officers sign in, read, download, reply, and manage reports."""

from __future__ import annotations

import html
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from flask import Flask
from sqlalchemy import func, select

from dropbox import officers
from dropbox.instance import Instance
from dropbox.models import Item, Officer, OfficerSession, Report
from journalist_interface.vault import Vault
from tests.conftest import CHEAP_COST
from tests.reviewer_helpers import (
    PASSPHRASE,
    World,
    audit_actions,
    b64,
    chain_intact,
    fresh_code,
    next_code,
    post_form,
    sign_in,
    signed_in_client,
    source_report,
)
from tests.source_helpers import csrf_token, login

MESSAGE = "My manager took my project away after I spoke to investigators in May."


@pytest.fixture(autouse=True)
def audit_chain_verifies_after_every_flow(world: World) -> Iterator[None]:
    """Whatever a test did, the audit chain must still verify afterwards."""
    yield
    assert_chain_intact(world.instance)


def report_id(instance: Instance) -> str:
    with instance.sessions() as db:
        return db.execute(select(Report.id)).scalar_one()


def assert_chain_intact(instance: Instance) -> None:
    assert chain_intact(instance)


# --- signing in -------------------------------------------------------------------


def test_sign_in_needs_passphrase_and_a_fresh_code(reviewer: Flask, world: World) -> None:
    person = world.people["eco"]
    client = reviewer.test_client()
    page = client.get("/login").get_data(as_text=True)
    good = {
        "csrf_token": csrf_token(page),
        "username": person.username,
        "passphrase": person.passphrase,
    }
    wrong_pass = client.post(
        "/login",
        data={**good, "passphrase": "not it at all", "code": fresh_code(world.instance, person)},
    )
    assert wrong_pass.status_code == 400
    assert "not right" in wrong_pass.get_data(as_text=True)
    assert client.post("/login", data={**good, "code": "000000"}).status_code == 400

    code = fresh_code(world.instance, person)
    assert client.post("/login", data={**good, "code": code}).status_code == 302
    assert client.get("/").status_code == 200

    replay = reviewer.test_client()
    page = replay.get("/login").get_data(as_text=True)
    again = replay.post("/login", data={**good, "csrf_token": csrf_token(page), "code": code})
    assert again.status_code == 400  # the same code is refused the second time
    previous = pyotp.TOTP(person.totp_secret).at(datetime.now().timestamp() - 30)
    assert (
        replay.post(
            "/login", data={**good, "csrf_token": csrf_token(page), "code": previous}
        ).status_code
        == 400
    )
    assert replay.get("/").status_code == 302


def test_five_failures_lock_the_account_and_say_until_when(reviewer: Flask, world: World) -> None:
    person = world.people["oio"]
    client = reviewer.test_client()
    page = client.get("/login").get_data(as_text=True)
    data = {"csrf_token": csrf_token(page), "username": person.username, "code": "123456"}
    statuses = [
        client.post("/login", data={**data, "passphrase": "wrong passphrase"}).status_code
        for _ in range(5)
    ]
    assert statuses == [400, 400, 400, 400, 429]
    locked = client.post(
        "/login",
        data={**data, "passphrase": person.passphrase, "code": fresh_code(world.instance, person)},
    )
    assert locked.status_code == 429
    assert re.search(r"Try again after \d\d:\d\d:\d\d UTC", locked.get_data(as_text=True))


COOKIE = "dropbox_reviewer"
DOMAIN = "127.0.0.1"  # the reviewer app's own address (its SERVER_NAME in tests)


def vault_of(reviewer: Flask) -> Vault:
    found: Vault = reviewer.extensions["reviewer.vault"]
    return found


def stored_tokens(instance: Instance) -> list[OfficerSession]:
    """The case server's stored bearer tokens (and any sessions): sealed states, by id hash."""
    with instance.sessions() as db:
        return list(db.execute(select(OfficerSession)).scalars())


def test_sign_in_gives_a_new_session_id(reviewer: Flask, world: World) -> None:
    client = reviewer.test_client()
    client.get("/login")
    before = client.get_cookie(COOKIE, domain=DOMAIN)
    assert before is not None
    sign_in(client, world.instance, world.people["eco"])
    after = client.get_cookie(COOKIE, domain=DOMAIN)
    assert after is not None and after.value != before.value
    assert client.get("/").status_code == 200
    # Signing in again from the same browser: a new vault entry; the old one, and its
    # token on the case server, are gone.
    assert sign_in(client, world.instance, world.people["eco"]).status_code == 302
    again = client.get_cookie(COOKIE, domain=DOMAIN)
    assert again is not None and again.value != after.value
    assert len(vault_of(reviewer)) == 1
    assert len(stored_tokens(world.instance)) == 1
    replayed = reviewer.test_client()
    replayed.set_cookie(COOKIE, after.value, domain=DOMAIN)
    assert replayed.get("/").status_code == 302  # the old cookie names nothing now


def test_idle_and_absolute_timeouts_end_the_session(reviewer: Flask, world: World) -> None:
    vault = vault_of(reviewer)
    start = datetime.now(UTC)
    client = signed_in_client(reviewer, world, "eco")
    vault.clock = lambda: start + timedelta(minutes=16)  # idle for longer than 15 minutes
    assert client.get("/").status_code == 302
    assert len(vault) == 0
    assert stored_tokens(world.instance) == []  # its token ended on the case server too

    vault.clock = lambda: start
    client = signed_in_client(reviewer, world, "eco")
    # Busy all along, never idle for 15 minutes: still over after 8 hours in all.
    minutes = 0
    while minutes + 14 <= 8 * 60:
        minutes += 14
        vault.clock = lambda m=minutes: start + timedelta(minutes=m)  # type: ignore[misc]
        assert client.get("/").status_code == 200, minutes
    vault.clock = lambda: start + timedelta(hours=8, minutes=5)
    assert client.get("/").status_code == 302
    assert len(vault) == 0


def test_no_key_is_in_the_cookie_or_in_the_servers_stored_tokens(
    reviewer: Flask, world: World
) -> None:
    """The cookie holds only a random vault id; the case server's token state holds no key."""
    client = signed_in_client(reviewer, world, "eco")
    cookie = client.get_cookie(COOKIE, domain=DOMAIN)
    assert cookie is not None
    with world.instance.sessions() as db:
        officer = db.get(Officer, world.people["eco"].id)
        assert officer is not None
        key = officers.open_secret_key(officer, world.people["eco"].passphrase, CHEAP_COST)
    serializer = reviewer.session_interface.get_signing_serializer(reviewer)  # type: ignore[attr-defined]
    assert serializer is not None
    state = serializer.loads(cookie.value)
    assert set(state) <= {"vault", "csrf_token", "_flashes"}, state
    secrets = [bytes(key), bytes(world.office_keys["ECO"])]
    texts = [cookie.value, repr(state)]
    rows = stored_tokens(world.instance)
    assert len(rows) == 1
    for secret in secrets:
        for form in (secret, b64(secret).encode(), secret.hex().encode()):
            assert not any(form in text.encode() for text in texts)
            assert form not in rows[0].state
    assert b"secret_key" not in rows[0].state


# --- inbox and report ------------------------------------------------------------


def test_inbox_shows_only_the_officers_office(reviewer: Flask, source: Flask, world: World) -> None:
    source_report(source, "retaliation", MESSAGE, extra={"safety_risk": "yes"})
    source_report(source, "fraud", "Someone is selling the fuel stock every Friday night.")
    with world.instance.sessions() as db:
        designations = dict(db.execute(select(Report.office_code, Report.designation)).all())
    eco_page = signed_in_client(reviewer, world, "eco").get("/").get_data(as_text=True)
    oio_page = signed_in_client(reviewer, world, "oio").get("/").get_data(as_text=True)
    assert designations["ECO"] in eco_page and designations["OIO"] not in eco_page
    assert designations["OIO"] in oio_page and designations["ECO"] not in oio_page
    urgent_only = signed_in_client(reviewer, world, "oio").get("/?urgent=1").get_data(as_text=True)
    assert designations["OIO"] not in urgent_only


def test_officer_reads_the_thread_downloads_files_and_identity_needs_a_reason(
    reviewer: Flask, source: Flask, world: World
) -> None:
    big = os.urandom(300_000)
    source_report(
        source,
        "retaliation",
        MESSAGE,
        [("proof.pdf", big)],
        extra={"identity_name": "Jamie Doe", "protected_activity": "Interviewed by OIO"},
    )
    rid = report_id(world.instance)
    client = signed_in_client(reviewer, world, "eco")
    page = client.get(f"/reports/{rid}").get_data(as_text=True)
    assert MESSAGE in page and "Interviewed by OIO" in page and "proof.pdf" in page
    assert "Jamie Doe" not in page

    with world.instance.sessions() as db:
        file_id = db.execute(select(Item.id).where(Item.kind == "file")).scalar_one()
    download = client.get(f"/reports/{rid}/files/{file_id}")
    assert download.status_code == 200
    assert download.data == big
    assert download.headers["Content-Type"] == "application/octet-stream"
    assert download.headers["Content-Disposition"].startswith("attachment;")
    assert "proof.pdf" in download.headers["Content-Disposition"]
    assert download.headers["X-Content-Type-Options"] == "nosniff"

    short = post_form(client, f"/reports/{rid}", f"/reports/{rid}/identity", {"reason": "why"})
    assert short.status_code == 302
    revealed = post_form(
        client,
        f"/reports/{rid}",
        f"/reports/{rid}/identity",
        {"reason": "Needed to arrange interim protection measures."},
    )
    assert "Jamie Doe" in revealed.get_data(as_text=True)
    actions = audit_actions(world.instance)
    assert "report.read" in actions and "file.download" in actions
    assert actions.count("identity.reveal") == 1
    assert_chain_intact(world.instance)


def test_reply_reaches_the_source_and_notes_do_not(
    reviewer: Flask, source: Flask, world: World
) -> None:
    _, source_client = source_report(source, "fraud", MESSAGE)
    rid = report_id(world.instance)
    client = signed_in_client(reviewer, world, "oio")
    post_form(client, f"/reports/{rid}", f"/reports/{rid}/reply", {"message": "Which depot?"})
    post_form(client, f"/reports/{rid}", f"/reports/{rid}/notes", {"text": "Check depot logs"})
    thread = source_client.get("/thread").get_data(as_text=True)
    assert "Which depot?" in thread
    assert "Check depot logs" not in thread
    page = client.get(f"/reports/{rid}").get_data(as_text=True)
    assert "Which depot?" in page and "Check depot logs" in page
    assert_chain_intact(world.instance)


def test_status_workflow_with_outcome_on_closing(
    reviewer: Flask, source: Flask, world: World
) -> None:
    _, source_client = source_report(source, "fraud", MESSAGE)
    rid = report_id(world.instance)
    client = signed_in_client(reviewer, world, "oio")
    path = f"/reports/{rid}"

    def status_now() -> str:
        with world.instance.sessions() as db:
            found = db.get(Report, rid)
            assert found is not None
            return found.status

    post_form(client, path, f"{path}/status", {"status": "acknowledged"})
    assert status_now() == "acknowledged"
    post_form(client, path, f"{path}/status", {"status": "reopened"})
    assert status_now() == "acknowledged"  # not allowed from here
    post_form(client, path, f"{path}/status", {"status": "closed", "outcome": "substantiated"})
    assert status_now() == "acknowledged"  # a reason is required
    post_form(
        client,
        path,
        f"{path}/status",
        {"status": "closed", "outcome": "substantiated", "reason": "Evidence confirmed it."},
    )
    assert status_now() == "closed"
    assert "Closed" in source_client.get("/thread").get_data(as_text=True)
    post_form(client, path, f"{path}/status", {"status": "reopened"})
    assert status_now() == "reopened"


def test_referral_moves_access_to_the_other_office(
    reviewer: Flask, source: Flask, world: World
) -> None:
    _, source_client = source_report(source, "harassment", MESSAGE)
    rid = report_id(world.instance)
    oio = signed_in_client(reviewer, world, "oio")
    post_form(oio, f"/reports/{rid}", f"/reports/{rid}/refer", {"office": "ECO"})
    assert oio.get(f"/reports/{rid}").status_code == 404
    eco = signed_in_client(reviewer, world, "eco")
    page = eco.get(f"/reports/{rid}").get_data(as_text=True)
    assert MESSAGE in page
    assert "Ethics and Conduct Office" in source_client.get("/thread").get_data(as_text=True)
    with world.instance.sessions() as db:
        from dropbox.items import open_item_bytes

        item = db.execute(select(Item).where(Item.report_id == rid, Item.seq == 1)).scalar_one()
        with pytest.raises(Exception):  # noqa: B017 - any failure: OIO's entry is gone
            open_item_bytes(world.instance, item, world.office_keys["OIO"])
        assert open_item_bytes(world.instance, item, world.office_keys["ECO"])


def test_referral_keeping_a_copy_leaves_a_read_only_copy(
    reviewer: Flask, source: Flask, world: World
) -> None:
    source_report(source, "harassment", MESSAGE)
    rid = report_id(world.instance)
    oio = signed_in_client(reviewer, world, "oio")
    post_form(
        oio, f"/reports/{rid}", f"/reports/{rid}/refer", {"office": "ECO", "keep_copy": "yes"}
    )
    copy = oio.get(f"/reports/{rid}")
    assert copy.status_code == 200 and MESSAGE in copy.get_data(as_text=True)
    refused = post_form(oio, f"/reports/{rid}", f"/reports/{rid}/reply", {"message": "hi"})
    assert refused.status_code == 403


def test_deletion_needs_the_designation_and_leaves_nothing(
    reviewer: Flask, source: Flask, world: World
) -> None:
    source_report(source, "fraud", MESSAGE, [("a.txt", b"evidence")])
    rid = report_id(world.instance)
    client = signed_in_client(reviewer, world, "oio")
    with world.instance.sessions() as db:
        found = db.get(Report, rid)
        assert found is not None
        designation = found.designation
    confirm = f"/reports/{rid}/delete"
    post_form(client, confirm, confirm, {"confirm": "wrong words"})
    assert report_exists(world.instance, rid)
    post_form(client, confirm, confirm, {"confirm": designation})
    assert not report_exists(world.instance, rid)
    with world.instance.sessions() as db:
        assert db.execute(select(func.count()).select_from(Item)).scalar_one() == 0
    assert list(world.instance.store.names()) == []
    assert "report.delete" in audit_actions(world.instance)
    assert_chain_intact(world.instance)


def report_exists(instance: Instance, rid: str) -> bool:
    with instance.sessions() as db:
        return db.get(Report, rid) is not None


def test_reply_round_trips_to_a_returning_source(
    reviewer: Flask, source: Flask, world: World
) -> None:
    codename, _ = source_report(source, "retaliation", MESSAGE)
    rid = report_id(world.instance)
    eco = signed_in_client(reviewer, world, "eco")
    post_form(eco, f"/reports/{rid}", f"/reports/{rid}/reply", {"message": "Are you safe now?"})
    returning = source.test_client()
    assert login(returning, codename).status_code == 302
    assert "Are you safe now?" in returning.get("/thread").get_data(as_text=True)


# --- accounts ----------------------------------------------------------------------


def test_enrolment_grant_and_deactivation(reviewer: Flask, source: Flask, world: World) -> None:
    source_report(source, "retaliation", MESSAGE)
    admin = signed_in_client(reviewer, world, "eco_admin")
    admin_person = world.people["eco_admin"]
    created = post_form(
        admin,
        "/admin/officers",
        "/admin/officers",
        {
            "username": "newbie",
            "display_name": "New Officer",
            "code": fresh_code(world.instance, admin_person),
        },
    )
    code = re.search(r"([a-z]+(?:-[a-z]+){4})", created.get_data(as_text=True))
    assert code is not None

    newbie = reviewer.test_client()
    page = newbie.get("/enrol").get_data(as_text=True)
    passphrase = "newbie passphrase long"
    setup = newbie.post(
        "/enrol",
        data={
            "csrf_token": csrf_token(page),
            "username": "newbie",
            "code": code.group(1),
            "passphrase": passphrase,
            "confirm_passphrase": passphrase,
        },
    )
    assert setup.status_code == 200
    secret = re.search(r"secret=([A-Z2-7]+)", setup.get_data(as_text=True))
    assert secret is not None and "<svg" in setup.get_data(as_text=True)
    done = newbie.post(
        "/enrol/confirm",
        data={
            "csrf_token": csrf_token(setup.get_data(as_text=True)),
            "code": pyotp.TOTP(secret.group(1)).now(),
        },
    )
    assert done.status_code == 302
    # The enrolment ends by showing the new key's fingerprint, to read out to the administrator.
    finished = html.unescape(newbie.get(done.headers["Location"]).get_data(as_text=True))
    # A new officer's key is X-Wing: its fingerprint says so before its 8 groups.
    shown = re.search(r"Your key's fingerprint is (XWING (?:[A-Z2-7]{4} ){7}[A-Z2-7]{4})", finished)
    assert shown is not None, finished

    with world.instance.sessions() as db:
        newbie_id = db.execute(select(Officer.id).where(Officer.username == "newbie")).scalar_one()
    # Inviting, granting and deactivating each need a fresh code of the administrator's own.
    granted = {"officer_id": str(newbie_id), "office": "ECO", "fingerprint": shown.group(1)}
    granted["code"] = fresh_code(world.instance, admin_person)
    post_form(admin, "/admin/officers", "/admin/grants", granted)

    from tests.reviewer_helpers import Person

    person = Person("newbie", passphrase, secret.group(1), newbie_id)
    client = reviewer.test_client()
    assert sign_in(client, world.instance, person).status_code == 302
    rid = report_id(world.instance)
    assert client.get(f"/reports/{rid}").status_code == 200

    confirm = {"code": fresh_code(world.instance, admin_person)}
    post_form(admin, "/admin/officers", f"/admin/officers/{newbie_id}/deactivate", confirm)
    assert client.get("/").status_code == 302  # the session ended
    assert sign_in(reviewer.test_client(), world.instance, person).status_code == 400


def test_passphrase_change_rewraps_and_ends_other_sessions(reviewer: Flask, world: World) -> None:
    person = world.people["eco"]
    first = signed_in_client(reviewer, world, "eco")
    second = signed_in_client(reviewer, world, "eco")
    change = {
        "current_passphrase": person.passphrase,
        "new_passphrase": "an even longer passphrase",
        "confirm_passphrase": "an even longer passphrase",
    }
    # A wrong current passphrase, or no code of the officer's device: nothing changes.
    for refused in (
        {**change, "current_passphrase": "not my passphrase", "code": next_code(person)},
        {**change, "code": ""},
    ):
        assert post_form(first, "/account", "/account/passphrase", refused).status_code == 302
        assert second.get("/").status_code == 200
    changed = {**change, "code": fresh_code(world.instance, person)}
    post_form(first, "/account", "/account/passphrase", changed)
    assert first.get("/").status_code == 200
    assert second.get("/").status_code == 302
    assert sign_in(reviewer.test_client(), world.instance, person).status_code == 400
    person.passphrase = "an even longer passphrase"
    assert sign_in(reviewer.test_client(), world.instance, person).status_code == 302


def test_audit_log_page_shows_events_and_verification(reviewer: Flask, world: World) -> None:
    admin = signed_in_client(reviewer, world, "admin")
    page = admin.get("/admin/audit").get_data(as_text=True)
    assert "officer.sign_in" in page
    assert signed_in_client(reviewer, world, "eco").get("/admin/audit").status_code == 403


def test_reenrolling_totp_replaces_the_device_only_once_confirmed(
    reviewer: Flask, world: World
) -> None:
    person = world.people["oio"]
    client = signed_in_client(reviewer, world, "oio")
    wrong_passphrase = post_form(
        client, "/account", "/account/totp", {"current_passphrase": "not my passphrase"}
    )
    assert wrong_passphrase.status_code == 302  # back to the account page, nothing started
    setup = post_form(client, "/account", "/account/totp", {"current_passphrase": PASSPHRASE})
    assert setup.status_code == 200
    page = setup.get_data(as_text=True)
    assert "<svg" in page
    new_secret = re.search(r"secret=([A-Z2-7]+)", page)
    assert new_secret is not None and new_secret.group(1) != person.totp_secret
    wrong = client.post("/account/totp/confirm", data={"csrf_token": csrf_token(page), "code": "1"})
    assert wrong.status_code == 400
    # Not confirmed yet: the old device still signs in.
    assert sign_in(reviewer.test_client(), world.instance, person).status_code == 302
    confirmed = client.post(
        "/account/totp/confirm",
        data={"csrf_token": csrf_token(page), "code": pyotp.TOTP(new_secret.group(1)).now()},
    )
    assert confirmed.status_code == 302
    old_device = reviewer.test_client()
    assert sign_in(old_device, world.instance, person).status_code == 400
    person.totp_secret = new_secret.group(1)
    assert sign_in(reviewer.test_client(), world.instance, person).status_code == 302
