"""Nothing is sealed to an office key the database alone could have swapped in.

Offices' public keys live in the `offices` table of the case server.
Whoever can write that database could put in a key of their own and read
every report, answer, reply, note, reveal reason and referral sealed
afterwards. The source interface checks the key against the fingerprint
pinned in the configuration before it seals; the reviewer app (on the
officer's machine) checks the key the server lists against the office
secret key the officer holds and against the fingerprint pinned in its own
settings. Here the rows are changed in the database, as its owner would,
and the reviewer app's pages are driven through /login: the action is
refused with a warning, nothing is sealed to the swapped key, and a
`key.mismatch` event is recorded on the case server.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from flask import Flask
from nacl.public import PrivateKey
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from crypto import envelope
from crypto.keys import fingerprint
from dropbox import config as config_module
from dropbox import offices
from dropbox.config import ConfigError
from dropbox.instance import Instance
from dropbox.models import Item, ItemKind, Report
from tests.conftest import invoke
from tests.reviewer_helpers import World, chain_intact, post_form, signed_in_client, source_report
from tests.source_helpers import login, new_codename, submit_report
from tests.substitution_helpers import (
    HELD,
    PIN,
    act,
    events,
    item_ids,
    key_blocks,
    login_page,
    office_detail,
    office_warning,
    reviewer_app,
    sealed_to,
    signed_in,
    swap_grant,
    swap_office_key,
    text_of,
    the_report,
)
from tests.test_cli import write_config

MESSAGE = "The depot manager sells the fuel stock every Friday night, with the gate logs changed."
RETALIATION = "After I reported the fuel sales, my contract was cut short without a reason."
UNAVAILABLE = "The site cannot take reports right now"
# Every form of the report page that seals something to the handling office.
SEALING_FORMS = {
    "notes": {"text": "Check the gate logs first."},
    "identity": {"reason": "We need to call the source back about the logs."},
    "status": {"status": "closed", "outcome": "out of scope", "reason": "Nothing to act on."},
    "reply": {"message": "Which depot is it?"},
}


@pytest.fixture(autouse=True)
def audit_chain_verifies_after_every_flow(world: World) -> Iterator[None]:
    """Whatever a test did, including refused actions, the audit chain must still verify."""
    yield
    assert chain_intact(world.instance)


# --- helpers ------------------------------------------------------------------------


def key_events(instance: Instance) -> list[tuple[str, str, str | None]]:
    """Every `key.mismatch` event: (actor, detail, report id)."""
    return events(instance, "key.mismatch")


def report_count(instance: Instance) -> int:
    """How many reports the instance holds."""
    with instance.sessions() as db:
        return db.execute(select(func.count()).select_from(Report)).scalar_one()


def send_report(source: Flask, category: str, message: str) -> TestResponse:
    """A new source sends a report (with a file) through the source interface."""
    client = source.test_client()
    _, form = new_codename(client)
    return submit_report(
        client, form, {"category": category, "message": message}, [("logs.txt", b"gate logs")]
    )


def status_of(instance: Instance, rid: str) -> tuple[str, str]:
    """(handling office, status) of the report."""
    with instance.sessions() as db:
        report = db.get(Report, rid)
        assert report is not None
        return report.office_code, report.status


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


# --- (c) the handling office's own key, in the reviewer app -------------------------


def test_an_own_office_key_swapped_in_the_database_stops_the_sign_in_and_opens_nothing(
    source: Flask, reviewer: Flask, world: World
) -> None:
    """The key the server lists for the officer's office must be the one their grant opens."""
    instance = world.instance
    source_report(source, "fraud", MESSAGE, extra={"identity_name": "Sam Example"})
    rid = the_report(instance, "OIO")
    intruder = swap_office_key(instance, "OIO")
    before, blobs = item_ids(instance, rid), set(instance.store.names())
    client, answer = login_page(reviewer, world, "oio")
    assert answer.status_code == 409
    assert office_warning("OIO", HELD) in text_of(answer)
    assert not signed_in(client)
    assert client.get(f"/reports/{rid}").status_code == 302  # to /login: nothing opened
    assert item_ids(instance, rid) == before
    assert set(instance.store.names()) == blobs
    assert sealed_to(instance, intruder.public_key) == []
    assert status_of(instance, rid) == ("OIO", "received")


def test_an_own_office_key_swapped_in_the_database_is_recorded_as_a_key_mismatch(
    source: Flask, reviewer: Flask, world: World
) -> None:
    """Issue 12 point 5: a mismatch stops the action with a warning *and an audit event*."""
    instance = world.instance
    source_report(source, "fraud", MESSAGE)
    swap_office_key(instance, "OIO")
    _, answer = login_page(reviewer, world, "oio")
    assert answer.status_code == 409
    assert [(actor, detail) for actor, detail, _ in key_events(instance)] == [
        ("oio-officer", office_detail("OIO", HELD))
    ]


def test_a_swapped_grant_with_a_swapped_office_key_is_refused_by_the_pin(
    source: Flask, reviewer: Flask, world: World
) -> None:
    """The held key comes from the server too: a writer can seal their own key as the grant.

    Then the key the officer holds and the key the server lists agree, and
    only the fingerprint pinned in the reviewer app's settings tells them
    from the office's real key.
    """
    instance = world.instance
    source_report(source, "fraud", MESSAGE, extra={"identity_name": "Sam Example"})
    rid = the_report(instance, "OIO")
    intruder = swap_office_key(instance, "OIO")
    swap_grant(instance, world.people["oio"].id, "OIO", intruder)
    before, blobs = item_ids(instance, rid), set(instance.store.names())
    officer = signed_in_client(reviewer, world, "oio")
    for action in ("notes", "identity", "status"):
        shown = act(officer, rid, action, SEALING_FORMS[action])
        assert shown.status_code == 200, action
        assert office_warning("OIO", PIN) in text_of(shown), action
        assert "Sam Example" not in text_of(shown)
    # A reply is refused too (the first item, sealed to the real key, does not open
    # with the writer's: the source's key cannot be vouched for either).
    replied = text_of(act(officer, rid, "reply", SEALING_FORMS["reply"]))
    assert "Your message was sent" not in replied and "was not sent" in replied
    assert item_ids(instance, rid) == before
    assert set(instance.store.names()) == blobs
    assert sealed_to(instance, intruder.public_key) == []
    assert status_of(instance, rid) == ("OIO", "received")
    recorded = key_events(instance)
    assert recorded[:3] == [("oio-officer", office_detail("OIO", PIN), rid)] * 3
    assert len(recorded) == 4 and recorded[3][0] == "oio-officer" and recorded[3][2] == rid


def test_an_office_key_swapped_after_sign_in_is_never_sealed_to(
    source: Flask, reviewer: Flask, world: World
) -> None:
    """The app seals to the keys it checked at sign-in, not to what the server lists later.

    The note and the reply are sealed to the real office key; the case server,
    reading the swapped row, then finds them not sealed to "its" office key and
    stores nothing. Either way nothing is ever sealed to the writer's key, and
    the next sign-in, which reads the swapped key, is refused.
    """
    instance = world.instance
    source_report(source, "fraud", MESSAGE)
    rid = the_report(instance, "OIO")
    officer = signed_in_client(reviewer, world, "oio")
    intruder = swap_office_key(instance, "OIO")
    before, blobs = item_ids(instance, rid), set(instance.store.names())
    noted = text_of(act(officer, rid, "notes", SEALING_FORMS["notes"]))
    assert "The note was saved." not in noted
    assert "not sealed to the office handling the report" in noted
    replied = text_of(act(officer, rid, "reply", SEALING_FORMS["reply"]))
    assert "Your message was sent" not in replied
    assert item_ids(instance, rid) == before
    assert set(instance.store.names()) == blobs
    assert sealed_to(instance, intruder.public_key) == []
    _, again = login_page(reviewer, world, "oio")
    assert again.status_code == 409 and office_warning("OIO", HELD) in text_of(again)


def test_without_pins_the_held_office_key_still_stops_a_swapped_key(
    source: Flask, case_app: Flask, world: World
) -> None:
    instance = world.instance
    unpinned = reviewer_app(case_app, instance.config, pins={})
    source_report(source, "fraud", MESSAGE)
    rid = the_report(instance, "OIO")
    intruder = swap_office_key(instance, "OIO")
    before = item_ids(instance, rid)
    client, answer = login_page(unpinned, world, "oio")
    assert answer.status_code == 409
    assert office_warning("OIO", HELD) in text_of(answer)
    assert not signed_in(client)
    assert item_ids(instance, rid) == before
    assert sealed_to(instance, intruder.public_key) == []


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
    for keep_copy in ("yes", ""):
        shown = act(officer, rid, "refer", {"office": "OIO", "keep_copy": keep_copy})
        assert office_warning("OIO", PIN) in text_of(shown)
        assert "The report was referred" not in text_of(shown)
    assert status_of(instance, rid) == ("ECO", "received")
    assert key_blocks(instance, rid) == blocks
    assert sealed_to(instance, intruder.public_key) == []
    assert key_events(instance) == [("eco-officer", office_detail("OIO", PIN), rid)] * 2


def test_referring_to_an_office_with_no_pin_is_refused_with_an_event(
    source: Flask, case_app: Flask, world: World
) -> None:
    """Nothing vouches for another office's key without a pin: not even an unchanged one."""
    instance = world.instance
    eco_only = {"ECO": fingerprint(world.office_keys["ECO"].public_key)}
    app = reviewer_app(case_app, instance.config, pins=eco_only)
    source_report(source, "retaliation", RETALIATION)
    rid = the_report(instance, "ECO")
    blocks = key_blocks(instance, rid)
    officer = signed_in_client(app, world, "eco")
    shown = text_of(act(officer, rid, "refer", {"office": "OIO", "keep_copy": "yes"}))
    assert "there is no pinned fingerprint for office OIO" in shown
    assert "The report was referred" not in shown
    assert status_of(instance, rid) == ("ECO", "received")
    assert key_blocks(instance, rid) == blocks
    assert key_events(instance) == [
        ("eco-officer", "office key: OIO has no pinned fingerprint", rid)
    ]


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


# `office list`'s line for OIO, up to its state: a new office's key is X-Wing.
LISTED_OIO = r"^OIO\s+XWING [A-Z2-7 ]{39}\s+"
LISTED_SWAPPED = r"^OIO\s+[A-Z2-7 ]{39}\s+"  # swap_office_key puts in an X25519 key


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
        found = re.search(r'^  (fingerprint = "XWING [A-Z2-7 ]{39}")$', created.stdout, re.M)
        assert found is not None, created.stdout
        printed = re.search(r"^Fingerprint: (.+)$", created.stdout, re.M)
        assert printed is not None and printed.group(1) in found.group(1)
        lines[code] = found.group(1)
        # The recovery file keeps the same fingerprint.
        assert printed.group(1) in (workdir / f"{code}-recovery.json").read_text()

    listed = invoke("--config", str(config), "office", "list")
    assert listed.returncode == 0, listed.stderr
    assert re.search(LISTED_OIO + r"not pinned$", listed.stdout, re.M), listed.stdout
    assert "Office OIO's key is not pinned" in listed.stdout

    tables = "".join(
        f'[[offices]]\ncode = "{code}"\nname = "Office {code}"\n{line}\n\n'
        for code, line in lines.items()
    )
    pinned = workdir / "pinned.toml"
    pinned.write_text(config.read_text() + "\n" + tables)
    listed = invoke("--config", str(pinned), "office", "list")
    assert listed.returncode == 0, listed.stderr
    assert re.search(LISTED_OIO + r"pinned$", listed.stdout, re.M), listed.stdout
    assert "not pinned" not in listed.stdout

    opened = Instance.open(config_module.load(pinned))
    try:
        swap_office_key(opened, "OIO")
    finally:
        opened.close()
    listed = invoke("--config", str(pinned), "office", "list")
    assert listed.returncode == 1
    assert re.search(LISTED_SWAPPED + r"differs$", listed.stdout, re.M), listed.stdout
    assert "does not match the fingerprint pinned" in listed.stdout
