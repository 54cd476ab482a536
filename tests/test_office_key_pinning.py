"""Nothing is sealed to an office key the database alone could have swapped in.

Offices' public keys live in the `offices` table. Whoever can write the
database could put in a key of their own and read every report, answer,
reply, note, reveal reason and referral sealed afterwards. Every sealing path
takes the key from `offices.trusted_public_key`: it must match the fingerprint
pinned in the configuration, and the office secret key the officer holds.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from nacl.public import PrivateKey, PublicKey
from sqlalchemy import func, select, update
from werkzeug.test import TestResponse

from crypto import envelope
from crypto.keys import fingerprint, seal_secret_key
from dropbox import config as config_module
from dropbox import offices
from dropbox.config import ConfigError
from dropbox.instance import Instance
from dropbox.models import AuditEvent, Item, ItemKind, Office, OfficeGrant, Officer, Report
from tests.conftest import invoke
from tests.reviewer_helpers import (
    World,
    api_headers,
    chain_intact,
    post_form,
    signed_in_client,
    source_report,
)
from tests.source_helpers import csrf_token, login, new_codename, submit_report
from tests.test_cli import write_config

MESSAGE = "The depot manager sells the fuel stock every Friday night, with the gate logs changed."
RETALIATION = "After I reported the fuel sales, my contract was cut short without a reason."
API = "/api/v1"
WARNING = (
    "Nothing was sent: the key of office OIO on the server does not match {against}."
    " An administrator should check the server."
)
HELD = "the office key you hold"
PIN = "the fingerprint pinned in the configuration"
UNAVAILABLE = "The site cannot take reports right now"


@pytest.fixture(autouse=True)
def audit_chain_verifies_after_every_flow(world: World) -> Iterator[None]:
    """Whatever a test did, including refused actions, the audit chain must still verify."""
    yield
    assert chain_intact(world.instance)


# --- helpers ------------------------------------------------------------------------


def swap_office_key(instance: Instance, code: str) -> PrivateKey:
    """Do what a database writer would: put their own public key in the office's row."""
    intruder = PrivateKey.generate()
    with instance.sessions.begin() as db:
        db.execute(
            update(Office).where(Office.code == code).values(public_key=bytes(intruder.public_key))
        )
    return intruder


def swap_grant(instance: Instance, officer_id: int, code: str, intruder: PrivateKey) -> None:
    """A database writer also seals their own key to the officer, as their grant of the office."""
    with instance.sessions.begin() as db:
        officer = db.get(Officer, officer_id)
        assert officer is not None and officer.public_key is not None
        sealed = seal_secret_key(intruder, PublicKey(officer.public_key))
        db.execute(
            update(OfficeGrant)
            .where(OfficeGrant.officer_id == officer_id, OfficeGrant.office_code == code)
            .values(sealed_office_key=sealed)
        )


def the_report(instance: Instance, category_office: str) -> str:
    """The id of the one report the office handles."""
    with instance.sessions() as db:
        return db.execute(
            select(Report.id).where(Report.office_code == category_office)
        ).scalar_one()


def item_ids(instance: Instance, rid: str) -> list[str]:
    """The report's item ids in thread order."""
    with instance.sessions() as db:
        return list(
            db.execute(select(Item.id).where(Item.report_id == rid).order_by(Item.seq)).scalars()
        )


def key_blocks(instance: Instance, rid: str) -> list[bytes]:
    """The report's key blocks in thread order."""
    with instance.sessions() as db:
        return list(
            db.execute(
                select(Item.key_block).where(Item.report_id == rid).order_by(Item.seq)
            ).scalars()
        )


def key_events(instance: Instance) -> list[tuple[str, str, str | None]]:
    """Every `key.mismatch` event: (actor, detail, report id)."""
    with instance.sessions() as db:
        rows = db.execute(
            select(AuditEvent.actor, AuditEvent.detail, AuditEvent.report_id)
            .where(AuditEvent.action == "key.mismatch")
            .order_by(AuditEvent.id)
        ).all()
    return [(actor, detail, report_id) for actor, detail, report_id in rows]


def report_count(instance: Instance) -> int:
    """How many reports the instance holds."""
    with instance.sessions() as db:
        return db.execute(select(func.count()).select_from(Report)).scalar_one()


def text_of(response: TestResponse) -> str:
    """A page's text with HTML entities (apostrophes) unescaped."""
    return html.unescape(response.get_data(as_text=True))


def act(client: FlaskClient, rid: str, action: str, data: dict[str, str]) -> TestResponse:
    """Post one of the report page's forms, and follow to the page it lands on."""
    page = client.get(f"/reports/{rid}").get_data(as_text=True)
    return client.post(
        f"/reports/{rid}/{action}",
        data={"csrf_token": csrf_token(page), **data},
        follow_redirects=True,
    )


def send_report(source: Flask, category: str, message: str) -> TestResponse:
    """A new source sends a report (with a file) through the source interface."""
    client = source.test_client()
    _, form = new_codename(client)
    return submit_report(
        client, form, {"category": category, "message": message}, [("logs.txt", b"gate logs")]
    )


# --- (a) a source report ------------------------------------------------------------


def test_a_source_report_to_an_office_whose_key_was_swapped_is_refused_and_nothing_is_stored(
    source: Flask, world: World
) -> None:
    instance = world.instance
    swap_office_key(instance, "OIO")
    blobs = set(instance.store.names())
    refused = send_report(source, "fraud", MESSAGE)
    assert refused.status_code == 503
    assert UNAVAILABLE in text_of(refused)
    assert "Nothing was sent" in text_of(refused)
    assert "Traceback" not in text_of(refused)
    assert report_count(instance) == 0
    assert set(instance.store.names()) == blobs
    # The other office's key is untouched: its reports still arrive.
    assert send_report(source, "retaliation", RETALIATION).status_code == 302
    assert report_count(instance) == 1


# --- (b) an answer ------------------------------------------------------------------


def test_an_answer_in_a_thread_of_an_office_whose_key_was_swapped_is_refused(
    source: Flask, world: World
) -> None:
    instance = world.instance
    codename, _ = source_report(source, "fraud", MESSAGE)
    rid = the_report(instance, "OIO")
    before, blobs = item_ids(instance, rid), set(instance.store.names())
    swap_office_key(instance, "OIO")
    client = source.test_client()
    assert login(client, codename).status_code == 302
    refused = post_form(client, "/thread", "/thread/answer", {"message": "It began in March."})
    assert refused.status_code == 503
    assert UNAVAILABLE in text_of(refused)
    assert item_ids(instance, rid) == before
    assert set(instance.store.names()) == blobs


# --- (c) an officer's reply, note, reveal and closing --------------------------------


def test_an_officers_reply_note_and_reveal_are_refused_with_a_warning_and_an_audit_event(
    source: Flask, reviewer: Flask, world: World
) -> None:
    instance = world.instance
    source_report(source, "fraud", MESSAGE, extra={"identity_name": "Sam Example"})
    rid = the_report(instance, "OIO")
    swap_office_key(instance, "OIO")
    before, blobs = item_ids(instance, rid), set(instance.store.names())
    officer = signed_in_client(reviewer, world, "oio")
    warning = WARNING.format(against=HELD)
    forms = {
        "reply": {"message": "Which depot is it?"},
        "notes": {"text": "Check the gate logs first."},
        "identity": {"reason": "We need to call the source back about the logs."},
        "status": {"status": "closed", "outcome": "out of scope", "reason": "Nothing to act on."},
    }
    for action, data in forms.items():
        shown = act(officer, rid, action, data)
        assert shown.status_code == 200, action
        assert warning in text_of(shown), action
        assert "Sam Example" not in text_of(shown)
    assert item_ids(instance, rid) == before
    assert set(instance.store.names()) == blobs
    detail = f"office key: OIO differs from {HELD}"
    assert key_events(instance) == [("oio-officer", detail, rid)] * len(forms)
    with instance.sessions() as db:
        report = db.get(Report, rid)
        assert report is not None and report.status == "received"


def test_the_api_refuses_a_reply_and_a_closing_with_409_and_an_audit_event(
    source: Flask, reviewer: Flask, world: World
) -> None:
    instance = world.instance
    source_report(source, "fraud", MESSAGE)
    rid = the_report(instance, "OIO")
    swap_office_key(instance, "OIO")
    before = item_ids(instance, rid)
    headers = api_headers(reviewer, world, "oio")
    client = reviewer.test_client()
    replied = client.post(f"{API}/reports/{rid}/replies", json={"message": "Hi"}, headers=headers)
    closed = client.post(
        f"{API}/reports/{rid}/status",
        json={"status": "closed", "outcome": "out of scope", "reason": "Nothing to act on."},
        headers=headers,
    )
    for response in (replied, closed):
        assert response.status_code == 409, response.get_data(as_text=True)
        assert response.json == {"error": WARNING.format(against=HELD)}
    assert item_ids(instance, rid) == before
    assert len(key_events(instance)) == 2


def test_a_swapped_grant_with_a_swapped_office_key_is_still_refused_by_the_pin(
    source: Flask, reviewer: Flask, world: World
) -> None:
    """The held key comes from the database too: a writer can seal their own key as the grant."""
    instance = world.instance
    source_report(source, "fraud", MESSAGE)
    rid = the_report(instance, "OIO")
    intruder = swap_office_key(instance, "OIO")
    swap_grant(instance, world.people["oio"].id, "OIO", intruder)
    before = item_ids(instance, rid)
    officer = signed_in_client(reviewer, world, "oio")
    shown = act(officer, rid, "notes", {"text": "Check the gate logs first."})
    assert WARNING.format(against=PIN) in text_of(shown)
    assert item_ids(instance, rid) == before
    assert key_events(instance) == [("oio-officer", f"office key: OIO differs from {PIN}", rid)]


def test_without_pins_the_held_office_key_still_stops_a_swapped_key(
    source: Flask, reviewer: Flask, world: World
) -> None:
    instance = world.instance
    instance.config = replace(
        instance.config, offices=tuple(replace(o, fingerprint="") for o in instance.config.offices)
    )
    source_report(source, "fraud", MESSAGE)
    rid = the_report(instance, "OIO")
    swap_office_key(instance, "OIO")
    before = item_ids(instance, rid)
    officer = signed_in_client(reviewer, world, "oio")
    shown = act(officer, rid, "reply", {"message": "Which depot is it?"})
    assert WARNING.format(against=HELD) in text_of(shown)
    assert item_ids(instance, rid) == before
    assert len(key_events(instance)) == 1


# --- (d) a referral -----------------------------------------------------------------


def test_referring_to_an_office_whose_pinned_key_was_swapped_is_refused_with_an_event(
    source: Flask, reviewer: Flask, world: World
) -> None:
    instance = world.instance
    source_report(source, "retaliation", RETALIATION)
    rid = the_report(instance, "ECO")
    blocks = key_blocks(instance, rid)
    intruder = swap_office_key(instance, "OIO")
    officer = signed_in_client(reviewer, world, "eco")
    shown = act(officer, rid, "refer", {"office": "OIO", "keep_copy": "yes"})
    assert WARNING.format(against=PIN) in text_of(shown)
    with instance.sessions() as db:
        report = db.get(Report, rid)
        assert report is not None and report.office_code == "ECO" and report.status == "received"
    assert key_blocks(instance, rid) == blocks
    intruder_id = envelope.recipient_id(intruder.public_key)
    assert all(intruder_id not in envelope.recipient_ids(b) for b in key_blocks(instance, rid))
    assert key_events(instance) == [("eco-officer", f"office key: OIO differs from {PIN}", rid)]


def test_referring_from_an_office_whose_own_key_was_swapped_is_refused(
    source: Flask, reviewer: Flask, world: World
) -> None:
    instance = world.instance
    source_report(source, "retaliation", RETALIATION)
    rid = the_report(instance, "ECO")
    blocks = key_blocks(instance, rid)
    swap_office_key(instance, "ECO")
    officer = signed_in_client(reviewer, world, "eco")
    shown = act(officer, rid, "refer", {"office": "OIO"})
    expected = "Nothing was sent: the key of office ECO on the server does not match"
    assert expected in text_of(shown)
    assert key_blocks(instance, rid) == blocks
    assert key_events(instance) == [("eco-officer", f"office key: ECO differs from {HELD}", rid)]


# --- (e) the right keys -------------------------------------------------------------


def test_with_the_right_keys_every_sealing_action_works_and_nothing_is_refused(
    source: Flask, reviewer: Flask, world: World
) -> None:
    instance = world.instance
    assert all(o.fingerprint for o in instance.config.offices)  # the world runs pinned
    codename, _ = source_report(source, "fraud", MESSAGE, extra={"identity_name": "Sam Example"})
    rid = the_report(instance, "OIO")
    client = source.test_client()
    assert login(client, codename).status_code == 302
    answered = post_form(client, "/thread", "/thread/answer", {"message": "It began in March."})
    assert answered.status_code == 302
    officer = signed_in_client(reviewer, world, "oio")
    assert "Your message was sent" in text_of(act(officer, rid, "reply", {"message": "Where?"}))
    assert "The note was saved." in text_of(act(officer, rid, "notes", {"text": "Call back."}))
    revealed = act(officer, rid, "identity", {"reason": "We must call the source back now."})
    assert "Sam Example" in text_of(revealed)
    referred = act(officer, rid, "refer", {"office": "ECO", "keep_copy": "yes"})
    assert "The report was referred" in text_of(referred)
    assert key_events(instance) == []
    oio_id = envelope.recipient_id(world.office_keys["OIO"].public_key)
    eco_id = envelope.recipient_id(world.office_keys["ECO"].public_key)
    with instance.sessions() as db:
        kinds = dict(
            db.execute(select(Item.key_block, Item.kind).where(Item.report_id == rid)).all()
        )
    assert {ItemKind.REPLY, ItemKind.NOTE, ItemKind.REVEAL} <= set(kinds.values())
    for block in kinds:
        assert {oio_id, eco_id} <= set(envelope.recipient_ids(block))


# --- (f) the configuration ----------------------------------------------------------


def _document(fingerprint_text: object) -> dict[str, object]:
    return {
        "data_dir": "data",
        "offices": [
            {
                "code": "OIO",
                "name": "Office of Internal Oversight",
                "fingerprint": fingerprint_text,
            },
            {"code": "ECO", "name": "Ethics and Conduct Office"},
        ],
    }


@pytest.mark.parametrize(
    "bad",
    [
        "not a fingerprint",
        "ABCD EFGH IJKL MNOP QRST UVWX YZ23 456",  # one character short
        "ABCD EFGH IJKL MNOP QRST UVWX YZ23 4561",  # 1 is not base32
        "ABCD EFGH IJKL MNOP QRST UVWX YZ23 45678",
        "ÀBCD EFGH IJKL MNOP QRST UVWX YZ23 4567",
    ],
)
def test_a_malformed_fingerprint_is_refused_naming_the_key(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"^offices\[0\]\.fingerprint: expected the fingerprint"):
        config_module.from_dict(_document(bad))


def test_a_fingerprint_that_is_not_a_string_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^offices\[0\]\.fingerprint: expected a string"):
        config_module.from_dict(_document(12))


def test_a_fingerprint_copied_in_lower_case_or_without_spaces_pins_the_same_key() -> None:
    key = PrivateKey.generate().public_key
    printed = fingerprint(key)
    for text in (printed, printed.lower(), printed.replace(" ", ""), f"  {printed}  "):
        loaded = config_module.from_dict(_document(text))
        assert offices.pinned_digest(loaded, "OIO") == config_module.fingerprint_digest(printed)
    assert offices.pinned_digest(config_module.from_dict(_document("")), "OIO") is None


# --- (g) an instance without pins, and the command line ----------------------------


def test_an_unpinned_instance_keeps_working_and_seals_to_the_key_the_database_holds(
    source: Flask, reviewer: Flask, world: World
) -> None:
    """What pinning is for: without it, a swapped key receives what a source sends."""
    instance = world.instance
    instance.config = replace(
        instance.config, offices=tuple(replace(o, fingerprint="") for o in instance.config.offices)
    )
    source_report(source, "fraud", MESSAGE)
    rid = the_report(instance, "OIO")
    officer = signed_in_client(reviewer, world, "oio")
    assert "The note was saved." in text_of(act(officer, rid, "notes", {"text": "Call back."}))
    with instance.sessions() as db:
        assert [s.state for s in offices.pin_status(db, instance.config)] == ["not pinned"] * 2
    intruder = swap_office_key(instance, "OIO")
    assert send_report(source, "fraud", MESSAGE).status_code == 302
    with instance.sessions() as db:
        newest = db.execute(
            select(Item.key_block)
            .join(Report, Report.id == Item.report_id)
            .where(Report.id != rid, Item.kind == ItemKind.MESSAGE)
        ).scalar_one()
    assert envelope.recipient_ids(newest) == [envelope.recipient_id(intruder.public_key)]


def test_office_create_prints_the_pin_line_and_office_list_reports_each_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = tmp_path / "cli"  # tmp_path/data is the world's instance
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    config = write_config(workdir)
    assert invoke("--config", str(config), "init").returncode == 0
    lines = {}
    for code in ("OIO", "ECO"):
        created = invoke("--config", str(config), "office", "create", code)
        assert created.returncode == 0, created.stderr
        found = re.search(r'^  (fingerprint = "[A-Z2-7 ]{39}")$', created.stdout, re.M)
        assert found is not None, created.stdout
        printed = re.search(r"^Fingerprint: (.+)$", created.stdout, re.M)
        assert printed is not None and printed.group(1) in found.group(1)
        lines[code] = found.group(1)
        # The recovery file keeps the same fingerprint.
        assert printed.group(1) in (workdir / f"{code}-recovery.json").read_text()

    listed = invoke("--config", str(config), "office", "list")
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^OIO\s+[A-Z2-7 ]{39}\s+not pinned$", listed.stdout, re.M), listed.stdout
    assert "Office OIO's key is not pinned" in listed.stdout

    tables = "".join(
        f'[[offices]]\ncode = "{code}"\nname = "Office {code}"\n{line}\n\n'
        for code, line in lines.items()
    )
    pinned = workdir / "pinned.toml"
    pinned.write_text(config.read_text() + "\n" + tables)
    listed = invoke("--config", str(pinned), "office", "list")
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^OIO\s+[A-Z2-7 ]{39}\s+pinned$", listed.stdout, re.M), listed.stdout
    assert "not pinned" not in listed.stdout

    opened = Instance.open(config_module.load(pinned))
    try:
        swap_office_key(opened, "OIO")
    finally:
        opened.close()
    listed = invoke("--config", str(pinned), "office", "list")
    assert listed.returncode == 1
    assert re.search(r"^OIO\s+[A-Z2-7 ]{39}\s+differs$", listed.stdout, re.M), listed.stdout
    assert "does not match the fingerprint pinned" in listed.stdout
