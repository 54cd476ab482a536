"""A world for case-server tests: offices with keys, officers with tokens, reports from sources.

Reports are made through the real source interface (its forms, as a browser
sends them). Officers are made as the CLI and the demo make them
(`officers.add`, `offices.grant`), and get bearer tokens from
`case_server.tokens.issue`, as sign-in gives them. Every call to the case
server goes through `journalist_interface.client.CaseServerClient` over an
`httpx.WSGITransport` around the real app: no mock.

Sealing here stands in for the reviewer app (journalist_interface/casefile.py),
so that these tests depend only on the envelope format: an item is sealed
with `crypto.envelope.encrypt_bytes` to the keys a test chooses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from flask import Flask
from nacl.public import PrivateKey, PublicKey
from sqlalchemy import select

from crypto import envelope
from crypto.keys import fingerprint, public_key_from_bytes
from dropbox import officers, offices
from dropbox.instance import Instance
from dropbox.items import item_context, message_document, message_type, new_id
from dropbox.models import AuditEvent, ItemKind, Officer, Report
from journalist_interface.client import CaseServerClient, NewItem
from tests.conftest import CHEAP_COST
from tests.source_helpers import new_codename, submit_report

BASE_URL = "http://case-server.test"
PASSPHRASE = "a long demo passphrase"

# role -> (username, administrator?, offices)
ROLES: dict[str, tuple[str, bool, list[str]]] = {
    "oio": ("oio-officer", False, ["OIO"]),
    "eco": ("eco-officer", False, ["ECO"]),
    "eco2": ("eco-second", False, ["ECO"]),
    "admin": ("admin", True, []),
    "gone": ("gone-officer", False, ["ECO"]),
}


@dataclass
class Person:
    """An officer of the world, with a live bearer token."""

    id: int
    username: str
    totp_secret: str
    token: str = field(repr=False)


@dataclass
class CaseWorld:
    """The instance, its office keys, the case server and source apps, and officers by role."""

    instance: Instance
    office_keys: dict[str, PrivateKey]
    app: Flask
    source: Flask
    people: dict[str, Person] = field(default_factory=dict)
    clients: list[CaseServerClient] = field(default_factory=list)

    def transport(self) -> httpx.WSGITransport:
        """A transport that calls the case server app in this process."""
        return httpx.WSGITransport(app=self.app)

    def client(self, role: str | None) -> CaseServerClient:
        """A client with the token of the officer of `role` (None: no token)."""
        token = self.people[role].token if role is not None else None
        made = CaseServerClient(BASE_URL, transport=self.transport(), token=token)
        self.clients.append(made)
        return made

    def http(self, role: str | None) -> httpx.Client:
        """A raw HTTP client on /api/v2, with the role's token, for what client.py hides."""
        headers = {"Accept": "application/json"}
        if role is not None:
            headers["Authorization"] = f"Bearer {self.people[role].token}"
        return httpx.Client(
            base_url=f"{BASE_URL}/api/v2", transport=self.transport(), headers=headers
        )

    def office_public(self, code: str) -> PublicKey:
        """An office's public key (the tests hold the secret key, as a recovery would)."""
        return self.office_keys[code].public_key

    def close(self) -> None:
        for made in self.clients:
            made.close()


def make_case_world(instance: Instance, office_keys: dict[str, PrivateKey]) -> CaseWorld:
    """Officers of each kind the access rules distinguish; `gone` is deactivated with a token."""
    from case_server import create_app as create_case_server
    from case_server import tokens
    from source_interface import create_app as create_source

    app = create_case_server(instance.config, instance)
    app.config["TESTING"] = True
    source = create_source(instance.config, instance)
    source.config["TESTING"] = True
    world = CaseWorld(instance, office_keys, app, source)
    with instance.sessions.begin() as db:
        for role, (username, is_admin, codes) in ROLES.items():
            officer, totp_secret = officers.add(
                db, username, PASSPHRASE, CHEAP_COST, "test", is_admin=is_admin
            )
            assert officer.public_key is not None
            read_out = fingerprint(public_key_from_bytes(officer.public_key))
            for code in codes:
                offices.grant(db, code, officer, office_keys[code], "test", read_out=read_out)
            world.people[role] = Person(officer.id, username, totp_secret, "")
    for person in world.people.values():
        person.token = tokens.issue(instance, person.id)
    with instance.sessions.begin() as db:
        gone = db.get(Officer, world.people["gone"].id)
        assert gone is not None
        officers.deactivate(db, gone, "test")
    return world


# --- reports, as sources make them -------------------------------------------------------


def submit(
    world: CaseWorld,
    category: str,
    message: str,
    *,
    files: list[tuple[str, bytes]] | None = None,
    identity: dict[str, str] | None = None,
) -> str:
    """Make a report through the source interface; return its id."""
    before = _report_ids(world.instance)
    client = world.source.test_client()
    _, form = new_codename(client)
    fields = {"category": category, "message": message, **(identity or {})}
    sent = submit_report(client, form, fields, files)
    assert sent.status_code == 302, sent.get_data(as_text=True)
    (made,) = _report_ids(world.instance) - before
    return made


def _report_ids(instance: Instance) -> set[str]:
    with instance.sessions() as db:
        return set(db.execute(select(Report.id)).scalars())


# --- sealing, as the reviewer app does ---------------------------------------------------


def seal(report_id: str, text: str, kind: ItemKind, recipients: list[PublicKey]) -> NewItem:
    """An officer's text sealed as an item of `kind` to `recipients`."""
    item_id = new_id()
    data = message_document(text)
    key_block, body = envelope.encrypt_bytes(
        data,
        recipients,
        item_context(report_id, item_id),
        content_type=message_type(kind),
    )
    return NewItem(item_id=item_id, size=len(data), key_block=key_block, body=body)


def open_item(
    report_id: str, item_id: str, key_block: bytes, body: bytes, key: PrivateKey
) -> tuple[envelope.Contents, bytes]:
    """Decrypt an item the server sent, with an office's key."""
    return envelope.decrypt_bytes(key_block, body, key, item_context(report_id, item_id))


def audit_events(instance: Instance, report_id: str | None = None) -> list[tuple[str, str, str]]:
    """(actor, action, detail) of every audit event, or of one report's, in order."""
    query = select(AuditEvent.actor, AuditEvent.action, AuditEvent.detail).order_by(AuditEvent.id)
    if report_id is not None:
        query = query.where(AuditEvent.report_id == report_id)
    with instance.sessions() as db:
        return [(row.actor, row.action, row.detail) for row in db.execute(query)]


class RecordingTransport(httpx.WSGITransport):
    """A WSGI transport that keeps every response body it carried (to search them)."""

    def __init__(self, app: Flask) -> None:
        super().__init__(app=app)
        self.bodies: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        body = response.read()
        self.bodies.append(body)
        return httpx.Response(response.status_code, headers=response.headers, content=body)


def recording_client(world: CaseWorld, role: str) -> tuple[CaseServerClient, RecordingTransport]:
    """A client of the role whose transport records every response."""
    transport = RecordingTransport(world.app)
    made = CaseServerClient(BASE_URL, transport=transport, token=world.people[role].token)
    world.clients.append(made)
    return made, transport
