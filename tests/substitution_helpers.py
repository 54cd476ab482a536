"""What a database writer does, and what the reviewer app must then refuse (issue 12, point 5).

Shared by the ported key and tampering tests: each changes a row the way
whoever owns the case server's database could (an office's, an officer's or
a source's public key, a grant, a key block), then drives the reviewer
app's pages through its /login form, the real case server behind it
in-process, and reads back what the server stored and recorded.
"""

from __future__ import annotations

import html
from typing import Any

import httpx
from flask import Flask
from flask.testing import FlaskClient
from nacl.public import PrivateKey
from sqlalchemy import select, update
from werkzeug.test import TestResponse

from crypto import envelope
from crypto.keys import XWingSecretKey, public_key_from_bytes, seal_secret_key
from dropbox.instance import Instance
from dropbox.models import AuditEvent, Item, Office, OfficeGrant, Officer, Report
from tests.reviewer_helpers import World, fresh_code, login_form
from tests.source_helpers import csrf_token

# The reviewer fixture's settings (tests/conftest.py) pin every configured office.
PIN = "the fingerprint pinned in the reviewer app's settings"
HELD = "the office key you hold"
OFFICE_WARNING = (
    "Nothing was sent: the key of office {code} on the server does not match {against}."
    " An administrator should check the server."
)


def office_warning(code: str, against: str) -> str:
    """What the reviewer app tells the officer when an office key fails a check."""
    return OFFICE_WARNING.format(code=code, against=against)


def office_detail(code: str, against: str) -> str:
    """The detail of the `key.mismatch` event for an office key that fails a check."""
    return f"office key: {code} differs from {against}"


# --- what a database writer does ----------------------------------------------------------


def swap_office_key(instance: Instance, code: str) -> PrivateKey:
    """Put a public key of the writer's own in the office's row."""
    intruder = PrivateKey.generate()
    with instance.sessions.begin() as db:
        db.execute(
            update(Office).where(Office.code == code).values(public_key=bytes(intruder.public_key))
        )
    return intruder


def swap_grant(instance: Instance, officer_id: int, code: str, intruder: PrivateKey) -> None:
    """Seal the writer's own office key to the officer, as their grant of the office."""
    with instance.sessions.begin() as db:
        officer = db.get(Officer, officer_id)
        assert officer is not None and officer.public_key is not None
        sealed = seal_secret_key(intruder, public_key_from_bytes(officer.public_key))
        db.execute(
            update(OfficeGrant)
            .where(OfficeGrant.officer_id == officer_id, OfficeGrant.office_code == code)
            .values(sealed_office_key=sealed)
        )


def swap_officer_key(instance: Instance, officer_id: int) -> PrivateKey:
    """Put a public key of the writer's own in the officer's row."""
    intruder = PrivateKey.generate()
    with instance.sessions.begin() as db:
        db.execute(
            update(Officer)
            .where(Officer.id == officer_id)
            .values(public_key=bytes(intruder.public_key))
        )
    return intruder


def swap_source_key(
    instance: Instance, rid: str, kind: str = "X25519"
) -> PrivateKey | XWingSecretKey:
    """Put a public key of the writer's own in the report's row: X25519, or X-Wing (hybrid).

    An X25519 key in place of a source's hybrid key is a downgrade: it must
    be refused like any other swapped key.
    """
    intruder: PrivateKey | XWingSecretKey = (
        XWingSecretKey.generate() if kind == "X-Wing" else PrivateKey.generate()
    )
    with instance.sessions.begin() as db:
        db.execute(
            update(Report)
            .where(Report.id == rid)
            .values(source_public_key=bytes(intruder.public_key))
        )
    return intruder


# --- the reviewer app's pages -------------------------------------------------------------


def login_page(reviewer: Flask, world: World, role: str) -> tuple[FlaskClient, TestResponse]:
    """Post the /login form as the officer of `role`: (the browser, the answer)."""
    client = reviewer.test_client()
    person = world.people[role]
    answer = login_form(
        client, person.username, person.passphrase, fresh_code(world.instance, person)
    )
    return client, answer


def signed_in(client: FlaskClient) -> bool:
    """Whether the browser has a signed-in session (the inbox opens, not /login)."""
    return client.get("/").status_code == 200


def text_of(response: TestResponse) -> str:
    """A page's text with HTML entities (apostrophes) unescaped; never a trace."""
    text = html.unescape(response.get_data(as_text=True))
    assert "Traceback" not in text
    return text


def act(client: FlaskClient, rid: str, action: str, data: dict[str, str]) -> TestResponse:
    """Post one of the report page's forms, and follow to the page it lands on."""
    page = client.get(f"/reports/{rid}").get_data(as_text=True)
    return client.post(
        f"/reports/{rid}/{action}",
        data={"csrf_token": csrf_token(page), **data},
        follow_redirects=True,
    )


def reviewer_app(case_app: Flask, config: Any, **overrides: Any) -> Flask:
    """Another reviewer app on the same case server, with settings overridden (e.g. no pins)."""
    from journalist_interface.app import create_reviewer_app
    from tests.conftest import reviewer_settings

    app = create_reviewer_app(
        reviewer_settings(config, **overrides), transport=httpx.WSGITransport(app=case_app)
    )
    app.config["TESTING"] = True
    return app


# --- what the server stored and recorded ---------------------------------------------------


def events(instance: Instance, action: str) -> list[tuple[str, str, str | None]]:
    """Every audit event of `action`: (actor, detail, report id), in order."""
    with instance.sessions() as db:
        rows = db.execute(
            select(AuditEvent.actor, AuditEvent.detail, AuditEvent.report_id)
            .where(AuditEvent.action == action)
            .order_by(AuditEvent.id)
        ).all()
    return [(actor, detail, report_id) for actor, detail, report_id in rows]


def the_report(instance: Instance, office: str) -> str:
    """The id of the one report the office handles."""
    with instance.sessions() as db:
        return db.execute(select(Report.id).where(Report.office_code == office)).scalar_one()


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


def sealed_to(instance: Instance, key: envelope.Recipient) -> list[str]:
    """The ids of every stored item with an entry for `key` in its key block."""
    wanted = envelope.recipient_id(key)
    with instance.sessions() as db:
        rows = db.execute(select(Item.id, Item.key_block)).all()
    return [item_id for item_id, block in rows if wanted in envelope.recipient_ids(block)]
