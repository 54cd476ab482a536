"""The source interface, page by page, through the Flask test client (no JavaScript anywhere)."""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import re
import zlib
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from nacl.public import PrivateKey
from sqlalchemy import func, select, update

from crypto import codenames, envelope
from crypto.codenames import WORD_COUNT, normalise
from crypto.errors import DecryptionError
from crypto.kdf import KdfCost
from crypto.keys import XWingSecretKey
from dropbox.config import Config, LimitSettings
from dropbox.instance import Instance
from dropbox.items import (
    MESSAGE_TYPE,
    add_item,
    item_context,
    message_document,
    message_type,
    open_item_bytes,
    read_message_document,
    seal_bytes,
    source_day,
)
from dropbox.models import Item, ItemKind, Report, SourceSession
from source_interface import create_app
from source_interface.uploads import PARSE_BLOCK, READ_BLOCK
from tests.source_helpers import (
    csrf_token,
    derived,
    login,
    logout,
    new_codename,
    old_report,
    post_multipart,
    post_reply,
    submit_report,
)

MESSAGE = "My supervisor moved me off every project after I spoke to the oversight office."
RETALIATION = {
    "category": "retaliation",
    "message": MESSAGE,
    "protected_activity": "I reported a fraud to OIO",
    "protected_activity_date": "March 2026",
    "detrimental_action": "Removed from projects, bad review",
    "safety_risk": "yes",
}


@pytest.fixture
def client(source_app: Flask) -> FlaskClient:
    return source_app.test_client()


def decrypt_item(
    instance: Instance, item: Item, key: envelope.SecretKey
) -> tuple[envelope.Contents, bytes]:
    with instance.store.open(item.blob) as body:
        return envelope.decrypt_bytes(
            item.key_block, body.read(), key, item_context(item.report_id, item.id)
        )


def only_report(instance: Instance) -> tuple[Report, list[Item]]:
    with instance.sessions() as db:
        report = db.execute(select(Report)).scalar_one()
        items = list(
            db.execute(select(Item).where(Item.report_id == report.id).order_by(Item.seq)).scalars()
        )
        return report, items


def count_reports(instance: Instance) -> int:
    with instance.sessions() as db:
        return db.execute(select(func.count()).select_from(Report)).scalar_one()


def test_landing_page_explains_the_channel_and_offers_two_ways_on(client: FlaskClient) -> None:
    page = client.get("/").get_data(as_text=True)
    assert "Office of Internal Oversight" in page
    assert "Ethics and Conduct Office" in page
    assert 'href="/codename"' in page
    assert 'href="/login"' in page
    assert "<script" not in page


def test_each_visit_gets_a_new_eight_word_codename_and_nothing_is_stored(
    client: FlaskClient, instance: Instance
) -> None:
    first, _ = new_codename(client)
    second, _ = new_codename(client.application.test_client())
    assert len(first.split()) == WORD_COUNT == 8
    assert first != second
    assert count_reports(instance) == 0


def test_french_codename_uses_the_french_word_list(client: FlaskClient) -> None:
    from crypto.codenames import _words

    client.get("/language/fr")
    codename, _ = new_codename(client)
    assert all(word in _words("fr") for word in codename.split())


def test_codename_must_be_confirmed_as_written_down(client: FlaskClient) -> None:
    page = client.get("/codename").get_data(as_text=True)
    codename = re.search(r'name="codename"[^>]*value="([^"]+)"', page)
    assert codename is not None
    refused = client.post(
        "/codename", data={"csrf_token": csrf_token(page), "codename": codename.group(1)}
    )
    assert refused.status_code == 400
    body = refused.get_data(as_text=True)
    assert codename.group(1) in body  # the same codename, shown again
    assert "tick the box" in body
    assert client.get("/report").status_code == 302  # not yet allowed on


def test_retaliation_report_goes_to_eco_encrypted_with_its_files(
    client: FlaskClient, instance: Instance, office_keys: dict[str, PrivateKey]
) -> None:
    codename, form = new_codename(client)
    big = os.urandom(1024 * 1024 + 12345)
    sent = submit_report(
        client,
        form,
        {**RETALIATION, "identity_name": "A. Person"},
        [("evidence.pdf", big), ("notes.txt", b"plain words")],
    )
    assert sent.status_code == 302 and sent.location.endswith("/receipt")
    receipt = client.get("/receipt").get_data(as_text=True)
    assert "Ethics and Conduct Office" in receipt

    report, items = only_report(instance)
    assert report.office_code == "ECO" and report.category == "retaliation"
    assert report.urgent is True
    assert report.acknowledge_due == report.received_at.date() + timedelta(days=7)
    assert report.received_at.hour == 0 and report.received_at.minute == 0
    kinds = [item.kind for item in items]
    assert kinds == ["message", "identity", "file", "file", "acknowledgement"]

    eco, oio = office_keys["ECO"], office_keys["OIO"]
    _, message = decrypt_item(instance, items[0], eco)
    text, details = read_message_document(message)
    assert text == MESSAGE
    assert "I reported a fraud to OIO" in details.values()
    assert any("immediate risk" in value for value in details.values())
    contents, data = decrypt_item(instance, items[2], eco)
    assert (contents.name, data) == ("evidence.pdf", big)
    assert decrypt_item(instance, items[3], eco)[1] == b"plain words"
    for item in items:
        with pytest.raises(DecryptionError):
            decrypt_item(instance, item, oio)

    source_key = reports_source_key(instance, codename)
    with pytest.raises(DecryptionError):
        decrypt_item(instance, items[0], source_key)  # a source cannot read back what it sent
    ack_text, _ = read_message_document(decrypt_item(instance, items[4], source_key)[1])
    assert "Ethics and Conduct Office" in ack_text
    # The source's key is hybrid: the row holds its X-Wing public key, the acknowledgement
    # has an X-Wing entry for it, and the X25519 key the codename also derives opens nothing.
    assert report.source_public_key == bytes(source_key.public_key)
    source_id = envelope.recipient_id(source_key.public_key)
    assert (source_id, True) in envelope.recipient_entries(items[4].key_block)
    with pytest.raises(DecryptionError):
        decrypt_item(instance, items[4], derived(instance, codename).secret_key)


def near_boundary_bytes(size: int) -> bytes:
    """Random bytes sprinkled with the line breaks and dashes a multipart boundary starts with."""
    data = bytearray(os.urandom(size))
    for offset in range(0, size - 8, 97):
        data[offset : offset + 7] = b"\r\n--\r\n-"
    return bytes(data)


def test_files_arrive_intact_whatever_their_size_against_the_parser_blocks(
    client: FlaskClient, instance: Instance, office_keys: dict[str, PrivateKey]
) -> None:
    # The body is read in 1 MiB blocks and parsed in 512 KiB pieces: a boundary,
    # or something that looks like the start of one, can fall across either edge.
    sizes = [0, 1, PARSE_BLOCK - 1, PARSE_BLOCK, PARSE_BLOCK + 1, READ_BLOCK + 3, 2 * READ_BLOCK]
    sent = {f"part-{size}.bin": near_boundary_bytes(size) for size in sizes}
    _, form = new_codename(client)
    answer = submit_report(
        client, form, {"category": "fraud", "message": MESSAGE}, list(sent.items())
    )
    assert answer.status_code == 302 and answer.location.endswith("/receipt")

    _, items = only_report(instance)
    received = {}
    for item in items:
        if item.kind == "file":
            contents, data = decrypt_item(instance, item, office_keys["OIO"])
            received[contents.name] = data
    assert received == sent


@pytest.mark.parametrize(
    ("content_type", "opens"),
    [
        (message_type(ItemKind.MESSAGE), True),
        (MESSAGE_TYPE, False),  # names no kind: it could pass for any
        (message_type(ItemKind.NOTE), False),  # names another kind
    ],
)
def test_a_message_opens_only_as_the_kind_sealed_inside_it(
    client: FlaskClient,
    instance: Instance,
    office_keys: dict[str, PrivateKey],
    content_type: str,
    opens: bool,
) -> None:
    _, form = new_codename(client)
    submit_report(client, form, {"category": "fraud", "message": MESSAGE})
    report, _ = only_report(instance)
    key = office_keys["OIO"]
    stored = seal_bytes(
        instance.store,
        report.id,
        message_document("An answer."),
        [key.public_key],
        content_type=content_type,
    )
    stored.blob.commit()
    with instance.sessions.begin() as db:
        item = add_item(db, report, stored, ItemKind.MESSAGE, source_day())
    if opens:
        assert read_message_document(open_item_bytes(instance, item, key))[0] == ("An answer.")
    else:
        with pytest.raises(DecryptionError):
            open_item_bytes(instance, item, key)


def reports_source_key(instance: Instance, codename: str) -> XWingSecretKey:
    """The key pair of a new report's source: X-Wing, derived from the codename."""
    return derived(instance, codename).hybrid_key


@pytest.mark.parametrize(
    ("category", "office"),
    [
        ("fraud", "OIO"),
        ("harassment", "OIO"),
        ("sexual-exploitation", "OIO"),
        ("unsure", "OIO"),
        ("retaliation", "ECO"),
    ],
)
def test_category_routes_the_report_to_its_office(
    client: FlaskClient, instance: Instance, category: str, office: str
) -> None:
    _, form = new_codename(client)
    sent = submit_report(client, form, {"category": category, "message": MESSAGE})
    assert sent.status_code == 302
    report, _ = only_report(instance)
    assert report.office_code == office
    assert report.urgent is False


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"message": MESSAGE}, "choose what it is about"),
        ({"category": "fraud", "message": "too short"}, "at least 20 characters"),
        ({"category": "made-up", "message": MESSAGE}, "choose what it is about"),
        ({"category": "fraud", "message": MESSAGE, "website": "spam"}, "leave the last field"),
    ],
)
def test_bad_report_is_refused_clearly_keeping_the_text_and_storing_nothing(
    client: FlaskClient, instance: Instance, fields: dict[str, str], expected: str
) -> None:
    _, form = new_codename(client)
    refused = submit_report(
        client, form, {**fields, "where": "Field office"}, [("kept.txt", b"x" * 5000)]
    )
    assert refused.status_code == 400
    page = refused.get_data(as_text=True)
    assert expected in page
    assert "Field office" in page  # what was typed is still there
    assert "Your files were not kept. Please choose them again." in page
    assert count_reports(instance) == 0
    assert list(instance.store.names()) == []
    assert list(instance.store.temp_dir.iterdir()) == []


def test_returning_source_reads_the_thread_answers_and_deletes_a_reply(
    client: FlaskClient, instance: Instance, office_keys: dict[str, PrivateKey]
) -> None:
    codename, form = new_codename(client)
    submit_report(client, form, {"category": "fraud", "message": MESSAGE})
    report, _ = only_report(instance)
    with instance.sessions.begin() as db:
        stored = db.get(Report, report.id)
        assert stored is not None
        reply = post_reply(instance, db, stored, "Could you tell us the month?", None)
        reply_id = reply.id
    logout(client)
    assert client.get("/thread").status_code == 401

    messy = "  " + normalise(codename).upper().replace(" ", "  -  ") + "\n"
    signed_in = login(client, messy)
    assert signed_in.status_code == 302 and signed_in.location.endswith("/thread")
    page = client.get("/thread").get_data(as_text=True)
    assert "Could you tell us the month?" in page
    assert "Office of Internal Oversight" in page
    assert "Received" in page
    assert MESSAGE not in page  # what the source sent is listed, never shown

    answered = post_multipart(
        client,
        "/thread/answer",
        {"csrf_token": csrf_token(page), "message": "It was in March."},
        [("march.txt", b"calendar")],
    )
    assert answered.status_code == 302
    assert "Your message and 1 file are encrypted" in client.get("/thread").get_data(as_text=True)
    _, items = only_report(instance)
    answer_items = [i for i in items if i.seq > 3]
    assert [i.kind for i in answer_items] == ["message", "file"]
    oio = office_keys["OIO"]
    text, _ = read_message_document(decrypt_item(instance, answer_items[0], oio)[1])
    assert text == "It was in March."
    assert decrypt_item(instance, answer_items[1], oio)[1] == b"calendar"

    page = client.get("/thread").get_data(as_text=True)
    deleted = client.post(
        f"/thread/messages/{reply_id}/delete", data={"csrf_token": csrf_token(page)}
    )
    assert deleted.status_code == 302
    assert "Could you tell us the month?" not in client.get("/thread").get_data(as_text=True)
    with instance.sessions() as db:
        item = db.get(Item, reply_id)
        assert item is not None and item.deleted_by_source
        with pytest.raises(DecryptionError):
            decrypt_item(instance, item, reports_source_key(instance, codename))
        office_copy, _ = read_message_document(decrypt_item(instance, item, oio)[1])
        assert office_copy == "Could you tell us the month?"


def test_an_empty_answer_is_refused_with_a_message(client: FlaskClient) -> None:
    _, form = new_codename(client)
    submit_report(client, form, {"category": "fraud", "message": MESSAGE})
    page = client.get("/thread").get_data(as_text=True)
    response = post_multipart(client, "/thread/answer", {"csrf_token": csrf_token(page)})
    assert response.status_code == 302
    assert "Write an answer or choose a file" in client.get("/thread").get_data(as_text=True)


def test_a_source_cannot_delete_another_reports_message_or_its_own_submission(
    client: FlaskClient, instance: Instance
) -> None:
    _, form = new_codename(client)
    submit_report(client, form, {"category": "fraud", "message": MESSAGE})
    _, items = only_report(instance)
    page = client.get("/thread").get_data(as_text=True)
    own_message = items[0].id
    response = client.post(
        f"/thread/messages/{own_message}/delete", data={"csrf_token": csrf_token(page)}
    )
    assert response.status_code == 404
    response = client.post("/thread/messages/nope/delete", data={"csrf_token": csrf_token(page)})
    assert response.status_code == 404


def test_signing_in_costs_one_derivation_and_keeps_the_same_keys_whichever_a_report_uses(
    source_app: Flask,
    instance: Instance,
    office_keys: dict[str, PrivateKey],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hybrid report and one made before: the same work, answer and session shape.

    Both key pairs come from the one Argon2id run (counted here around the
    real derivation), so how long signing in takes, and what the session
    holds, cannot tell which kind of key a codename's report has.
    """
    hybrid_client = source_app.test_client()
    hybrid_codename, form = new_codename(hybrid_client)
    submit_report(hybrid_client, form, {"category": "fraud", "message": MESSAGE})
    old_codename = codenames.generate("en")
    old_report(instance, old_codename, MESSAGE)

    runs: list[bytes] = []
    real = codenames.derive_key

    def counted(secret: bytes, salt: bytes, cost: KdfCost) -> bytes:
        runs.append(secret)
        return real(secret, salt, cost)

    monkeypatch.setattr(codenames, "derive_key", counted)
    shapes = []
    for codename in (hybrid_codename, old_codename):
        client = source_app.test_client()
        runs.clear()
        signed_in = login(client, codename)
        assert signed_in.status_code == 302 and signed_in.location.endswith("/thread")
        assert len(runs) == 1
        with client.session_transaction() as state:
            shapes.append({k: len(str(v)) for k, v in state.items() if k != "report_id"})
        assert client.get("/thread").status_code == 200
    assert shapes[0] == shapes[1]
    assert {"secret_key", "hybrid_key"} <= set(shapes[0])


def test_a_session_begun_before_hybrid_keys_sends_its_report_with_the_x25519_key(
    client: FlaskClient, instance: Instance
) -> None:
    """A session that holds the X25519 key alone (begun before the upgrade) loses nothing."""
    codename, _ = new_codename(client)
    with client.session_transaction() as state:
        del state["hybrid_key"]
    report_form = client.get("/report").get_data(as_text=True)
    sent = submit_report(client, report_form, {"category": "fraud", "message": MESSAGE})
    assert sent.status_code == 302
    report, _ = only_report(instance)
    assert report.source_public_key == bytes(derived(instance, codename).secret_key.public_key)
    assert "Received" in client.get("/thread").get_data(as_text=True)


@pytest.mark.parametrize(
    ("codename", "expected"),
    [("just some words", "is not a codename"), ("", "is not a codename")],
)
def test_something_that_is_not_a_codename_is_refused_without_a_derivation(
    client: FlaskClient, codename: str, expected: str
) -> None:
    response = login(client, codename)
    assert response.status_code == 400
    assert expected in response.get_data(as_text=True)


def test_unknown_codename_is_refused_plainly(client: FlaskClient) -> None:
    from crypto.codenames import generate

    response = login(client, generate("en"))
    assert response.status_code == 400
    assert "No report matches this codename" in response.get_data(as_text=True)


def test_expired_session_gets_a_clear_page(client: FlaskClient, instance: Instance) -> None:
    _, form = new_codename(client)
    submit_report(client, form, {"category": "fraud", "message": MESSAGE})
    with instance.sessions.begin() as db:
        db.execute(update(SourceSession).values(expires_at=datetime(2000, 1, 1)))
    response = client.get("/thread")
    assert response.status_code == 401
    assert "Your session has ended" in response.get_data(as_text=True)
    with instance.sessions() as db:
        assert db.execute(select(func.count()).select_from(SourceSession)).scalar_one() == 0


def test_csrf_failure_gets_a_clear_page(client: FlaskClient) -> None:
    response = client.post("/login", data={"codename": "x"})
    assert response.status_code == 400
    assert "This form has expired" in response.get_data(as_text=True)


def test_unknown_page_and_wrong_method_get_clear_pages(client: FlaskClient) -> None:
    missing = client.get("/no/such/page")
    assert missing.status_code == 404
    assert "This page does not exist" in missing.get_data(as_text=True)
    wrong = client.get("/logout")
    assert wrong.status_code == 405
    assert "Traceback" not in wrong.get_data(as_text=True)


def test_server_error_gets_a_clear_page_and_no_trace(instance: Instance, office_keys: dict) -> None:
    application = create_app(instance.config, instance)

    @application.get("/boom")
    def boom() -> str:
        raise RuntimeError("secret detail that must not be shown")

    response = application.test_client().get("/boom")
    assert response.status_code == 500
    body = response.get_data(as_text=True)
    assert "Something went wrong on our side" in body
    assert "secret detail" not in body and "Traceback" not in body


def small_upload_app(config: Config, instance: Instance) -> Flask:
    limited = replace(config, source=replace(config.source, max_upload_mib=1))
    application = create_app(limited, instance)
    return application


def test_oversized_upload_gets_a_clear_page_and_leaves_nothing(
    instance: Instance, office_keys: dict
) -> None:
    application = small_upload_app(instance.config, instance)
    client = application.test_client()
    if True:
        _, form = new_codename(client)
        response = submit_report(
            client,
            form,
            {"category": "fraud", "message": MESSAGE},
            [("big.bin", os.urandom(2 * 1024 * 1024))],
        )
    assert response.status_code == 413
    assert "too large" in response.get_data(as_text=True)
    assert count_reports(instance) == 0
    assert list(instance.store.names()) == []
    assert list(instance.store.temp_dir.iterdir()) == []


def test_too_many_codename_attempts_are_slowed_down(instance: Instance, office_keys: dict) -> None:
    from crypto.codenames import generate

    config = replace(instance.config, limits=LimitSettings(codename_attempts_per_minute=3))
    application = create_app(config, instance)
    client = application.test_client()
    # Well-formed codenames: only attempts that cost a derivation count (see
    # tests/test_source_hardening.py for the ones that do not).
    statuses = [login(client, generate("en")).status_code for _ in range(5)]
    assert statuses[:3] == [400, 400, 400]
    assert statuses[3:] == [429, 429]


def test_session_cookie_is_strict_httponly_and_holds_no_codename(client: FlaskClient) -> None:
    codename, _ = new_codename(client)
    cookie = client.get_cookie("dropbox_source")
    assert cookie is not None
    assert cookie.http_only and cookie.same_site == "Strict"
    # The cookie is random base64, so a short codename word ("keg") can turn up in it
    # by chance; the codename, or any two of its words together, cannot.
    # Each dot-separated part is also read as base64 (zlib-compressed or not), the way
    # Flask's own cookie sessions would carry it.
    forms = [cookie.value]
    for part in cookie.value.split("."):
        try:
            raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        except ValueError:
            continue
        forms.append(raw.decode("latin-1"))
        with contextlib.suppress(zlib.error):
            forms.append(zlib.decompress(raw).decode("latin-1"))
    value = "\n".join(forms).casefold()
    words = normalise(codename).split()
    for first, second in itertools.pairwise(words):
        for joined in (
            f"{first} {second}",
            f"{first}+{second}",
            f"{first}%20{second}",
            first + second,
        ):
            assert joined not in value, joined
