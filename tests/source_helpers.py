"""Helpers that walk the source interface as a browser would (forms, tokens, multipart)."""

from __future__ import annotations

import html
import re
from typing import Any

from flask.testing import FlaskClient
from nacl.public import PublicKey
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse, encode_multipart

from crypto import codenames
from crypto.keys import public_key_from_bytes
from dropbox import offices, reports
from dropbox.errors import NotFound
from dropbox.instance import Instance
from dropbox.items import (
    add_item,
    message_document,
    message_type,
    new_id,
    officer_now,
    seal_bytes,
)
from dropbox.models import Item, ItemKind, Office, Report

CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"')
CODENAME = re.compile(r'name="codename"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="codename"')


def csrf_token(page: str) -> str:
    """The CSRF token of the first form on a page."""
    match = CSRF.search(page)
    assert match is not None, "no CSRF token on the page"
    return match.group(1) or match.group(2)


def new_codename(client: FlaskClient) -> tuple[str, str]:
    """Get a codename and confirm it is written down; return (codename, report form page)."""
    page = client.get("/codename").get_data(as_text=True)
    match = CODENAME.search(page)
    assert match is not None, "the codename page has no codename field"
    codename = html.unescape(match.group(1) or match.group(2))
    confirmed = client.post(
        "/codename",
        data={"csrf_token": csrf_token(page), "codename": codename, "written_down": "yes"},
    )
    assert confirmed.status_code == 302, confirmed.get_data(as_text=True)
    form = client.get("/report")
    assert form.status_code == 200
    return codename, form.get_data(as_text=True)


def post_multipart(
    client: FlaskClient,
    path: str,
    fields: dict[str, str],
    files: list[tuple[str, bytes]] | None = None,
    **kwargs: Any,
) -> TestResponse:
    """POST a multipart form encoded in memory, exactly as a browser would send it.

    Encoding in memory (not with the test client's spooling) means no copy of
    the request body lands in a temporary file on the client's side either.
    """
    values: dict[str, Any] = dict(fields)
    file_list = files if files is not None else [("", b"")]
    from werkzeug.datastructures import FileStorage, MultiDict

    multi: MultiDict[str, Any] = MultiDict(values)
    import io

    for name, data in file_list:
        multi.add("files", FileStorage(io.BytesIO(data), filename=name))
    boundary, body = encode_multipart(multi)
    return client.post(
        path,
        data=body,
        content_type=f"multipart/form-data; boundary={boundary}",
        **kwargs,
    )


def submit_report(
    client: FlaskClient,
    form_page: str,
    fields: dict[str, str],
    files: list[tuple[str, bytes]] | None = None,
) -> TestResponse:
    """Fill in and send the report form."""
    return post_multipart(client, "/report", {"csrf_token": csrf_token(form_page), **fields}, files)


def login(client: FlaskClient, codename: str) -> TestResponse:
    """Sign in with a codename."""
    page = client.get("/login").get_data(as_text=True)
    return client.post("/login", data={"csrf_token": csrf_token(page), "codename": codename})


def logout(client: FlaskClient) -> TestResponse:
    """Log out through the button on any page."""
    page = client.get("/thread").get_data(as_text=True)
    return client.post("/logout", data={"csrf_token": csrf_token(page)})


def post_reply(
    instance: Instance,
    session: Session,
    report: Report,
    text: str,
    author_id: int | None,
    *,
    office_key: PublicKey | None = None,
) -> Item:
    """Post a message from the office to the source, sealed to both of them, on the server.

    A stand-in for an officer's reply, which the reviewer app seals on the
    officer's machine after checking the report row's key
    (`journalist_interface.casefile.reply_recipients`): this seals to the key
    in the row as it is. The office's key is `office_key`, or else the
    database's, checked against its pin (`offices.trusted_public_key`).
    """
    if session.get(Office, report.office_code) is None:
        raise NotFound("the office of this report has no key")
    if office_key is None:
        office_key = offices.trusted_public_key(session, instance.config, report.office_code)
    recipients = [office_key, public_key_from_bytes(report.source_public_key)]
    stored = seal_bytes(
        instance.store,
        report.id,
        message_document(text),
        recipients,
        content_type=message_type(ItemKind.REPLY),
    )
    now = officer_now()
    report.last_activity_at = now
    return add_item(session, report, stored, ItemKind.REPLY, now, author_id)


def derived(instance: Instance, codename: str) -> codenames.SourceSecrets:
    """What the source interface derives from the codename."""
    secrets = instance.secrets
    return codenames.derive(codename, secrets.codename_salt, secrets.codename_cost)


def old_report(instance: Instance, codename: str, text: str) -> str:
    """A report as the source interface made it before sources got hybrid keys: X25519.

    Its first item binds the X25519 key the codename derives, its row holds
    that key, and its acknowledgement is sealed to it.
    """
    keys = derived(instance, codename)
    rid = new_id()
    new = reports.NewReport(
        lookup_id=keys.lookup_id,
        source_public_key=keys.secret_key.public_key,
        category="fraud",
        text=text,
        details={},
        identity={},
        urgent=False,
        acknowledgement="Thank you: the office has received your report.",
    )
    with instance.sessions.begin() as db:
        reports.submit(instance, db, rid, new)
    return rid
