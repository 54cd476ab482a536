"""The reviewer app's reports area, end to end: a real case server, the real source path.

Reports are made through the source interface. The reviewer app runs with
the real case server in-process (`httpx.WSGITransport`), and officers sign
in through its /login form with passphrase and TOTP code: every page and
action below goes reviewer app -> client -> case server -> database and
back, with every decryption on the reviewer app's side.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient
from nacl.public import PrivateKey
from sqlalchemy import func, select, update
from werkzeug.test import TestResponse

from crypto.keys import fingerprint, generate_keypair
from dropbox.instance import Instance
from dropbox.models import AuditEvent, Item, Officer, Report
from tests.case_helpers import BASE_URL, PASSPHRASE, CaseWorld, make_case_world
from tests.conftest import CHEAP_COST
from tests.reviewer_helpers import source_report
from tests.source_helpers import csrf_token, login

pytestmark = pytest.mark.database_engine

PORT = 8181
HOST = f"127.0.0.1:{PORT}"
MESSAGE = "My manager took my project away after I spoke to investigators in May."


@dataclass
class Desk:
    """The case world (offices, officers, case server, source interface) and reviewer apps."""

    world: CaseWorld
    pins: dict[str, str]

    @property
    def instance(self) -> Instance:
        return self.world.instance

    @property
    def source(self) -> Flask:
        return self.world.source

    def reviewer(self, pins: dict[str, str] | None = None) -> Flask:
        """A reviewer app on the case server (its own pins, if given)."""
        from journalist_interface.app import create_reviewer_app
        from journalist_interface.settings import ReviewerSettings

        settings = ReviewerSettings(
            server_url=BASE_URL,
            port=PORT,
            pins=self.pins if pins is None else pins,
            minimum_cost=CHEAP_COST,
            officer_cost=CHEAP_COST,
        )
        app = create_reviewer_app(settings, transport=httpx.WSGITransport(app=self.world.app))
        app.config["TESTING"] = True
        return app

    def signed_in(self, role: str, app: Flask | None = None) -> FlaskClient:
        """A browser signed in as `role` through the reviewer app's /login form."""
        client = (app or self.reviewer()).test_client()
        client.environ_base["HTTP_HOST"] = HOST
        person = self.world.people[role]
        # As if the last code had been used long ago: each sign-in here needs a fresh one.
        with self.instance.sessions.begin() as db:
            db.execute(update(Officer).where(Officer.id == person.id).values(totp_last_counter=0))
        page = client.get("/login").get_data(as_text=True)
        answer = client.post(
            "/login",
            data={
                "csrf_token": csrf_token(page),
                "username": person.username,
                "passphrase": PASSPHRASE,
                "code": pyotp.TOTP(person.totp_secret).now(),
            },
        )
        assert answer.status_code == 302, answer.get_data(as_text=True)
        return client


@pytest.fixture
def desk(instance: Instance, office_keys: dict[str, PrivateKey]) -> Iterator[Desk]:
    world = make_case_world(instance, office_keys)
    pins = {code: fingerprint(key.public_key) for code, key in office_keys.items()}
    yield Desk(world, pins)
    world.close()


# --- helpers -------------------------------------------------------------------------------


def report_ids(instance: Instance) -> set[str]:
    with instance.sessions() as db:
        return set(db.execute(select(Report.id)).scalars())


def make_report(
    desk: Desk,
    category: str,
    message: str = MESSAGE,
    files: list[tuple[str, bytes]] | None = None,
    extra: dict[str, str] | None = None,
) -> tuple[str, str, FlaskClient]:
    """A report made through the source interface: (its id, the codename, the source's browser)."""
    before = report_ids(desk.instance)
    codename, client = source_report(desk.source, category, message, files, extra)
    (made,) = report_ids(desk.instance) - before
    return made, codename, client


def report_row(instance: Instance, rid: str) -> Report | None:
    with instance.sessions() as db:
        return db.get(Report, rid)


def designation(instance: Instance, rid: str) -> str:
    found = report_row(instance, rid)
    assert found is not None
    return found.designation


def item_ids(instance: Instance, rid: str, kind: str) -> list[str]:
    with instance.sessions() as db:
        return list(
            db.execute(
                select(Item.id).where(Item.report_id == rid, Item.kind == kind).order_by(Item.seq)
            ).scalars()
        )


def actions(instance: Instance, rid: str | None = None) -> list[str]:
    query = select(AuditEvent.action).order_by(AuditEvent.id)
    if rid is not None:
        query = query.where(AuditEvent.report_id == rid)
    with instance.sessions() as db:
        return list(db.execute(query).scalars())


def post(client: FlaskClient, page: str, path: str, data: dict[str, str]) -> TestResponse:
    """POST a form of `page` with that page's CSRF token, as a browser with JavaScript off."""
    text = client.get(page).get_data(as_text=True)
    return client.post(path, data={"csrf_token": csrf_token(text), **data})


def page_text(client: FlaskClient, path: str) -> str:
    answer = client.get(path)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_data(as_text=True)


def followed(client: FlaskClient, answer: TestResponse) -> str:
    """The page a redirect leads to (where the flashed message is shown)."""
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return page_text(client, answer.headers["Location"])


def stored_blobs(instance: Instance) -> bytes:
    """Every blob in the store, concatenated: what the server holds on disk."""
    out = b""
    for name in instance.store.names():
        with instance.store.open(name) as blob:
            out += blob.read()
    return out


# --- sign-in gate --------------------------------------------------------------------------


def test_report_pages_need_a_signed_in_officer(desk: Desk) -> None:
    rid, _, _ = make_report(desk, "fraud", MESSAGE)
    client = desk.reviewer().test_client()
    client.environ_base["HTTP_HOST"] = HOST
    for path in ("/", f"/reports/{rid}", f"/reports/{rid}/delete"):
        answer = client.get(path)
        assert answer.status_code == 302
        assert "/login" in answer.headers["Location"]


# --- inbox ---------------------------------------------------------------------------------


def test_inbox_shows_the_offices_reports_with_filters_sorting_paging_and_due_dates(
    desk: Desk,
) -> None:
    eco_id, _, _ = make_report(desk, "retaliation", MESSAGE, extra={"safety_risk": "yes"})
    oio_id, _, _ = make_report(
        desk, "fraud", "Someone is selling the fuel stock every Friday night."
    )
    eco_name, oio_name = designation(desk.instance, eco_id), designation(desk.instance, oio_id)

    eco = desk.signed_in("eco")
    oio = desk.signed_in("oio")
    eco_page = page_text(eco, "/")
    assert eco_name in eco_page and oio_name not in eco_page
    assert f"/reports/{eco_id}" in eco_page
    row = report_row(desk.instance, eco_id)
    assert row is not None
    assert row.acknowledge_due.isoformat() in eco_page and row.feedback_due.isoformat() in eco_page
    oio_page = page_text(oio, "/")
    assert oio_name in oio_page and eco_name not in oio_page

    # Filters, each against the case server's answer.
    assert eco_name in page_text(eco, "/?urgent=1")
    assert oio_name not in page_text(oio, "/?urgent=1")
    assert oio_name in page_text(oio, "/?category=fraud")
    assert oio_name not in page_text(oio, "/?category=harassment")
    assert oio_name in page_text(oio, "/?status=received")
    assert oio_name not in page_text(oio, "/?status=closed")
    assert oio_name not in page_text(oio, "/?mine=1")
    assert oio_name not in page_text(oio, "/?overdue=1")
    # Sorting and paging keep the other filters; a nonsense value is not an error.
    sorted_page = page_text(oio, "/?sort=feedback_due&category=fraud")
    assert oio_name in sorted_page and 'aria-sort="ascending"' in sorted_page
    assert oio_name in page_text(oio, "/?sort=nonsense&page=abc")
    assert oio_name in page_text(oio, "/?page=2")  # beyond the last page: the last one


def test_inbox_pages_through_many_reports(desk: Desk, monkeypatch: pytest.MonkeyPatch) -> None:
    from dropbox import inbox

    monkeypatch.setattr(inbox, "PAGE_SIZE", 2)  # three reports make two pages
    names = set()
    for n in range(3):
        rid, _, _ = make_report(desk, "fraud", f"Report number {n} with enough words to pass.")
        names.add(designation(desk.instance, rid))
    oio = desk.signed_in("oio")
    first = page_text(oio, "/?category=fraud")
    assert "3 reports match the filters" in first and "Page 1 of 2" in first
    on_first = {name for name in names if name in first}
    assert len(on_first) == 2
    assert 'rel="next"' in first and "page=2" in first and "category=fraud" in first
    second = page_text(oio, "/?category=fraud&page=2")
    assert "Page 2 of 2" in second and 'rel="prev"' in second
    assert {name for name in names if name in second} == names - on_first


# --- report page and downloads ------------------------------------------------------------


def test_report_page_shows_the_thread_downloads_the_file_and_reveal_needs_a_reason(
    desk: Desk,
) -> None:
    big = os.urandom(300_000)
    rid, _, _ = make_report(
        desk,
        "retaliation",
        MESSAGE,
        [("proof — été.pdf", big)],
        extra={"identity_name": "Jamie Doe", "protected_activity": "Interviewed by OIO"},
    )
    eco = desk.signed_in("eco")
    page = page_text(eco, f"/reports/{rid}")
    assert MESSAGE in page and "Interviewed by OIO" in page and "proof — été.pdf" in page
    assert "Jamie Doe" not in page
    assert "report.read" in actions(desk.instance, rid)

    (file_id,) = item_ids(desk.instance, rid, "file")
    download = eco.get(f"/reports/{rid}/files/{file_id}")
    assert download.status_code == 200
    assert download.data == big
    assert download.headers["Content-Type"] == "application/octet-stream"
    assert download.headers["Content-Disposition"].startswith("attachment;")
    assert (
        "filename*=UTF-8''proof%20%E2%80%94%20%C3%A9t%C3%A9.pdf"
        in (download.headers["Content-Disposition"])
    )
    assert download.headers["Content-Length"] == str(len(big))
    assert "file.download" in actions(desk.instance, rid)
    assert eco.get(f"/reports/{rid}/files/not-an-item").status_code == 404

    short = post(eco, f"/reports/{rid}", f"/reports/{rid}/identity", {"reason": "why"})
    assert "at least 10 characters" in followed(eco, short)
    assert "identity.reveal" not in actions(desk.instance, rid)
    reason = "Needed to arrange interim protection measures."
    revealed = post(eco, f"/reports/{rid}", f"/reports/{rid}/identity", {"reason": reason})
    assert revealed.status_code == 200
    text = revealed.get_data(as_text=True)
    assert "Jamie Doe" in text and reason in text
    assert actions(desk.instance, rid).count("identity.reveal") == 1
    # The reason is kept in the thread, sealed: the server's disk never holds it in clear.
    assert reason in page_text(eco, f"/reports/{rid}")
    assert reason.encode() not in stored_blobs(desk.instance)
    assert item_ids(desk.instance, rid, "reveal")
    # Identity details stay hidden on a later reading.
    assert "Jamie Doe" not in page_text(eco, f"/reports/{rid}")


def test_a_damaged_file_is_refused_whole_and_recorded(desk: Desk) -> None:
    rid, _, _ = make_report(desk, "fraud", MESSAGE, [("a.bin", os.urandom(200_000))])
    (file_id,) = item_ids(desk.instance, rid, "file")
    with desk.instance.sessions() as db:
        item = db.get(Item, file_id)
        assert item is not None
        path = desk.instance.store.path(item.blob)
    body = bytearray(path.read_bytes())
    body[-20] ^= 0x01  # the last chunk: damage only a whole-file check finds before sending
    path.write_bytes(bytes(body))
    oio = desk.signed_in("oio")
    answer = oio.get(f"/reports/{rid}/files/{file_id}")
    assert answer.status_code == 422
    assert "damaged" in answer.get_data(as_text=True)
    assert "attachment" not in answer.headers.get("Content-Disposition", "")
    assert "item.damaged" in actions(desk.instance, rid)


# --- reply and notes ------------------------------------------------------------------------


def test_reply_reaches_the_source_and_notes_do_not(desk: Desk) -> None:
    rid, codename, source_client = make_report(desk, "fraud", MESSAGE)
    oio = desk.signed_in("oio")
    path = f"/reports/{rid}"
    sent = post(oio, path, f"{path}/reply", {"message": "Which depot?"})
    assert "Your message was sent to the source." in followed(oio, sent)
    saved = post(oio, path, f"{path}/notes", {"text": "Check depot logs"})
    assert "The note was saved." in followed(oio, saved)
    empty = post(oio, path, f"{path}/reply", {"message": "   "})
    assert "write a message before sending" in followed(oio, empty)
    assert len(item_ids(desk.instance, rid, "reply")) == 1
    assert len(item_ids(desk.instance, rid, "note")) == 1

    thread = source_client.get("/thread").get_data(as_text=True)
    assert "Which depot?" in thread and "Check depot logs" not in thread
    returning = desk.source.test_client()
    assert login(returning, codename).status_code == 302
    assert "Which depot?" in returning.get("/thread").get_data(as_text=True)

    page = page_text(oio, path)
    assert "Which depot?" in page and "Check depot logs" in page
    held = stored_blobs(desk.instance)
    assert b"Which depot?" not in held and b"Check depot logs" not in held


def test_a_swapped_source_key_stops_the_reply_with_a_warning_and_an_event(desk: Desk) -> None:
    rid, _, source_client = make_report(desk, "fraud", MESSAGE)
    with desk.instance.sessions.begin() as db:
        db.execute(
            update(Report)
            .where(Report.id == rid)
            .values(source_public_key=bytes(generate_keypair().public_key))
        )
    oio = desk.signed_in("oio")
    path = f"/reports/{rid}"
    page = page_text(oio, path)
    assert "Replies cannot be sent." in page
    refused = post(oio, path, f"{path}/reply", {"message": "Meant for the source"})
    assert "was not sent" in followed(oio, refused) or "not sent" in followed(oio, refused)
    assert item_ids(desk.instance, rid, "reply") == []
    assert "key.mismatch" in actions(desk.instance, rid)
    assert "Meant for the source" not in source_client.get("/thread").get_data(as_text=True)


# --- assignment and status -----------------------------------------------------------------


def test_assignment(desk: Desk) -> None:
    rid, _, _ = make_report(desk, "retaliation", MESSAGE)
    eco = desk.signed_in("eco")
    path = f"/reports/{rid}"
    second = desk.world.people["eco2"]
    saved = post(eco, path, f"{path}/assign", {"assignee_id": str(second.id)})
    assert "The assignment was saved." in followed(eco, saved)
    found = report_row(desk.instance, rid)
    assert found is not None and found.assignee_id == second.id
    # The second officer finds it under "assigned to me".
    assert designation(desk.instance, rid) in page_text(desk.signed_in("eco2"), "/?mine=1")
    # An officer of another office cannot be assigned; a bad value changes nothing.
    other = post(eco, path, f"{path}/assign", {"assignee_id": str(desk.world.people["oio"].id)})
    assert followed(eco, other)
    bad = post(eco, path, f"{path}/assign", {"assignee_id": "²"})
    assert "Choose an officer" in followed(eco, bad)
    found = report_row(desk.instance, rid)
    assert found is not None and found.assignee_id == second.id
    post(eco, path, f"{path}/assign", {"assignee_id": ""})
    found = report_row(desk.instance, rid)
    assert found is not None and found.assignee_id is None


def test_status_workflow_with_outcome_and_reason_on_closing(desk: Desk) -> None:
    rid, _, source_client = make_report(desk, "fraud", MESSAGE)
    oio = desk.signed_in("oio")
    path = f"/reports/{rid}"

    def status_now() -> str:
        found = report_row(desk.instance, rid)
        assert found is not None
        return found.status

    changed = post(oio, path, f"{path}/status", {"status": "acknowledged"})
    assert "The status was changed." in followed(oio, changed)
    assert status_now() == "acknowledged"
    post(oio, path, f"{path}/status", {"status": "reopened"})
    assert status_now() == "acknowledged"  # not allowed from here
    no_reason = post(oio, path, f"{path}/status", {"status": "closed", "outcome": "substantiated"})
    assert "reason" in followed(oio, no_reason)
    assert status_now() == "acknowledged"
    post(oio, path, f"{path}/status", {"status": "closed", "reason": "Evidence confirmed it."})
    assert status_now() == "acknowledged"  # an outcome is required
    closed = post(
        oio,
        path,
        f"{path}/status",
        {"status": "closed", "outcome": "substantiated", "reason": "Evidence confirmed it."},
    )
    assert "The status was changed." in followed(oio, closed)
    assert status_now() == "closed"
    page = page_text(oio, path)
    assert "Closed (substantiated): Evidence confirmed it." in page
    assert "Evidence confirmed it." not in source_client.get("/thread").get_data(as_text=True)
    post(oio, path, f"{path}/status", {"status": "reopened"})
    assert status_now() == "reopened"


# --- referral ------------------------------------------------------------------------------


def test_referral_moves_access_to_the_other_office(desk: Desk) -> None:
    rid, _, source_client = make_report(desk, "harassment", MESSAGE, [("x.txt", b"evidence")])
    oio = desk.signed_in("oio")
    referred = post(oio, f"/reports/{rid}", f"/reports/{rid}/refer", {"office": "ECO"})
    assert referred.status_code == 302 and referred.headers["Location"].endswith("/")
    assert "The report was referred to" in followed(oio, referred)
    assert oio.get(f"/reports/{rid}").status_code == 404
    eco = desk.signed_in("eco")
    assert MESSAGE in page_text(eco, f"/reports/{rid}")
    (file_id,) = item_ids(desk.instance, rid, "file")
    assert eco.get(f"/reports/{rid}/files/{file_id}").data == b"evidence"
    assert "Ethics and Conduct Office" in source_client.get("/thread").get_data(as_text=True)
    found = report_row(desk.instance, rid)
    assert found is not None and found.office_code == "ECO"


def test_referral_keeping_a_copy_leaves_a_read_only_copy(desk: Desk) -> None:
    rid, _, _ = make_report(desk, "harassment", MESSAGE, extra={"identity_name": "Sam Roe"})
    oio = desk.signed_in("oio")
    path = f"/reports/{rid}"
    referred = post(oio, path, f"{path}/refer", {"office": "ECO", "keep_copy": "yes"})
    assert referred.headers["Location"].endswith(path)
    copy = page_text(oio, path)
    assert MESSAGE in copy and "Read-only copy." in copy
    assert post(oio, path, f"{path}/reply", {"message": "hi"}).status_code == 403
    assert post(oio, path, f"{path}/notes", {"text": "a note"}).status_code == 403
    assert oio.get(f"{path}/delete").status_code == 403
    eco = desk.signed_in("eco")
    assert MESSAGE in page_text(eco, path)
    # The new office writes; the copy was given the items up to the referral only.
    post(eco, path, f"{path}/notes", {"text": "Taken over by ECO"})
    assert "Taken over by ECO" in page_text(eco, path)
    assert "Taken over by ECO" not in page_text(oio, path)
    assert "Not shared with your office" in page_text(oio, path)
    # A copy holder may still reveal, with a reason sealed to both offices.
    reason = "The copy is needed for our own follow-up case."
    revealed = post(oio, path, f"{path}/identity", {"reason": reason})
    assert "Sam Roe" in revealed.get_data(as_text=True)
    assert reason in page_text(eco, path) and reason in page_text(oio, path)


def test_referral_to_an_office_whose_key_is_not_the_pinned_one_is_refused(desk: Desk) -> None:
    rid, _, _ = make_report(desk, "harassment", MESSAGE)
    wrong = dict(desk.pins, ECO=fingerprint(generate_keypair().public_key))
    oio = desk.signed_in("oio", desk.reviewer(pins=wrong))
    path = f"/reports/{rid}"
    refused = post(oio, path, f"{path}/refer", {"office": "ECO"})
    assert refused.status_code == 302
    followed(oio, refused)
    found = report_row(desk.instance, rid)
    assert found is not None and found.office_code == "OIO"
    assert "key.mismatch" in actions(desk.instance, rid)
    assert "report.refer" not in actions(desk.instance, rid)


# --- deletion -------------------------------------------------------------------------------


def test_deletion_needs_the_designation_and_leaves_nothing(desk: Desk) -> None:
    rid, _, _ = make_report(desk, "fraud", MESSAGE, [("a.txt", b"evidence")])
    oio = desk.signed_in("oio")
    confirm = f"/reports/{rid}/delete"
    name = designation(desk.instance, rid)
    assert name in page_text(oio, confirm)
    wrong = post(oio, confirm, confirm, {"confirm": "wrong words"})
    assert "Type the designation exactly" in followed(oio, wrong)
    assert report_row(desk.instance, rid) is not None
    done = post(oio, confirm, confirm, {"confirm": name.upper()})
    assert "The report was deleted." in followed(oio, done)
    assert report_row(desk.instance, rid) is None
    with desk.instance.sessions() as db:
        assert db.execute(select(func.count()).select_from(Item)).scalar_one() == 0
    assert "report.delete" in actions(desk.instance)
    assert oio.get(f"/reports/{rid}").status_code == 404


def test_another_offices_report_is_not_found(desk: Desk) -> None:
    rid, _, _ = make_report(desk, "fraud", MESSAGE)
    eco = desk.signed_in("eco")
    assert eco.get(f"/reports/{rid}").status_code == 404
    assert post(eco, "/", f"/reports/{rid}/notes", {"text": "x"}).status_code == 404


# --- what goes over the wire -----------------------------------------------------------------


class RequestLog(httpx.WSGITransport):
    """The real case server in-process, keeping every request body the reviewer app sent."""

    def __init__(self, app: Flask) -> None:
        super().__init__(app=app)
        self.sent: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request.url.query + request.read())
        return super().handle_request(request)


def test_the_case_server_is_sent_no_plaintext_and_no_passphrase(desk: Desk) -> None:
    from journalist_interface.app import create_reviewer_app
    from journalist_interface.settings import ReviewerSettings

    log = RequestLog(desk.world.app)
    settings = ReviewerSettings(
        server_url=BASE_URL, port=PORT, pins=desk.pins, minimum_cost=CHEAP_COST
    )
    app = create_reviewer_app(settings, transport=log)
    app.config["TESTING"] = True
    rid, _, _ = make_report(
        desk, "retaliation", MESSAGE, [("f.txt", b"file canary 7731")], {"identity_name": "Jo Q"}
    )
    eco = desk.signed_in("eco", app)
    path = f"/reports/{rid}"
    secrets_sent = {
        "reply": "reply canary 5521",
        "note": "note canary 6632",
        "reason": "reveal reason canary 9943",
        "closing": "closing canary 1184",
    }
    post(eco, path, f"{path}/reply", {"message": secrets_sent["reply"]})
    post(eco, path, f"{path}/notes", {"text": secrets_sent["note"]})
    revealed = post(eco, path, f"{path}/identity", {"reason": secrets_sent["reason"]})
    assert "Jo Q" in revealed.get_data(as_text=True)
    (file_id,) = item_ids(desk.instance, rid, "file")
    assert eco.get(f"{path}/files/{file_id}").data == b"file canary 7731"
    closing = {"status": "closed", "outcome": "substantiated", "reason": secrets_sent["closing"]}
    post(eco, path, f"{path}/status", closing)
    page = page_text(eco, path)
    for text in secrets_sent.values():
        assert text in page
    assert len(log.sent) > 10
    wire = b"\n".join(log.sent)
    for text in [*secrets_sent.values(), PASSPHRASE, MESSAGE, "file canary 7731", "Jo Q"]:
        assert text.encode() not in wire
        assert base64.b64encode(text.encode()) not in wire


# --- usability of the officer's pages (issue 13, points 9 and 10) --------------------------


def _section(page: str, heading_id: str) -> str:
    """The HTML of the <section> labelled by the heading with this id."""
    start = page.index(f'aria-labelledby="{heading_id}"')
    return page[start : page.index("</section>", start)]


def _entry(page: str, kind: str) -> str:
    """The HTML of the first thread entry of this kind."""
    start = page.index(f'class="entry entry-{kind} ')
    return page[start : page.index("</li>", start)]


def _inbox_row(page: str, designation_text: str) -> str:
    """The inbox table row (<tr>) naming this designation."""
    at = page.index(f">{designation_text}</a>")
    return page[page.rindex("<tr", 0, at) : page.index("</tr>", at)]


def _status_of(desk: Desk, rid: str) -> tuple[str, bool]:
    found = report_row(desk.instance, rid)
    assert found is not None
    return found.status, found.acknowledged_at is not None


def test_a_first_reply_acknowledges_the_report_when_the_box_is_left_ticked(desk: Desk) -> None:
    rid, _, _ = make_report(desk, "fraud", MESSAGE)
    oio = desk.signed_in("oio")
    path = f"/reports/{rid}"
    reply_form = _section(page_text(oio, path), "reply-heading")
    assert 'name="acknowledge" id="reply-acknowledge" value="yes" checked' in reply_form
    assert "Also mark the report acknowledged" in reply_form

    sent = post(oio, path, f"{path}/reply", {"message": "Which depot?", "acknowledge": "yes"})

    shown = followed(oio, sent)
    assert "Your message was sent to the source." in shown
    assert "The report is marked acknowledged" in shown
    assert _status_of(desk, rid) == ("acknowledged", True)
    assert actions(desk.instance, rid).count("report.status") == 1
    # Once acknowledged, the choice is gone, and a second reply changes nothing more.
    assert 'name="acknowledge"' not in _section(page_text(oio, path), "reply-heading")
    again = post(oio, path, f"{path}/reply", {"message": "And when?", "acknowledge": "yes"})
    assert "marked acknowledged" not in followed(oio, again)
    assert actions(desk.instance, rid).count("report.status") == 1
    assert len(item_ids(desk.instance, rid, "reply")) == 2


def test_a_reply_with_the_box_unticked_does_not_acknowledge(desk: Desk) -> None:
    rid, _, _ = make_report(desk, "fraud", MESSAGE)
    oio = desk.signed_in("oio")
    path = f"/reports/{rid}"
    sent = post(oio, path, f"{path}/reply", {"message": "A question before anything else."})
    assert "marked acknowledged" not in followed(oio, sent)
    assert _status_of(desk, rid) == ("received", False)
    assert "report.status" not in actions(desk.instance, rid)
    assert 'name="acknowledge"' in _section(page_text(oio, path), "reply-heading")


def test_the_report_page_separates_thread_reply_form_and_closing(desk: Desk) -> None:
    rid, _, _ = make_report(desk, "fraud", MESSAGE)
    oio = desk.signed_in("oio")
    path = f"/reports/{rid}"
    page = page_text(oio, path)
    # The source's message is new to this officer; the automatic acknowledgement is not.
    assert "badge-new" in _entry(page, "message")
    assert "badge-new" not in _entry(page, "acknowledgement")
    assert ">Write a reply to the source</h2>" in _section(page, "reply-heading")
    # The status form moves the report on; closing, with its fields, is a form of its own.
    status_form = _section(page, "status-heading")
    assert 'name="outcome"' not in status_form and 'name="reason"' not in status_form
    assert 'value="closed"' not in status_form
    options = status_form[status_form.index('id="new-status"') :]
    order = [options.index(f'value="{s}"') for s in ("acknowledged", "under assessment")]
    assert order == sorted(order)
    closing = _section(page, "close-heading")
    assert '<input type="hidden" name="status" value="closed">' in closing
    assert 'name="outcome"' in closing and 'name="reason"' in closing
    # The sent reply and the form to write one have different headings.
    post(oio, path, f"{path}/reply", {"message": "Which depot?"})
    replied = page_text(oio, path)
    assert ">Reply to the source</h3>" in _entry(replied, "reply")
    assert ">Reply to the source<" not in _section(replied, "reply-heading")


def test_inbox_marks_unread_reports_in_bold_with_words_and_deadlines_in_words(
    desk: Desk,
) -> None:
    fresh, _, _ = make_report(desk, "fraud", MESSAGE)
    late, _, _ = make_report(desk, "fraud", "The depot's stock is sold on Fridays.")
    urgent, _, _ = make_report(
        desk, "fraud", "Threats against me since Monday.", extra={"safety_risk": "yes"}
    )
    with desk.instance.sessions.begin() as db:
        row = db.get(Report, late)
        assert row is not None
        today = datetime.now(UTC).date()
        row.acknowledge_due = today - timedelta(days=2)
        row2 = db.get(Report, urgent)
        assert row2 is not None
        row2.acknowledge_due = today
    oio = desk.signed_in("oio")
    page_text(oio, f"/reports/{fresh}")  # read: no longer unread

    page = page_text(oio, "/")
    read_row = _inbox_row(page, designation(desk.instance, fresh))
    late_row = _inbox_row(page, designation(desk.instance, late))
    urgent_row = _inbox_row(page, designation(desk.instance, urgent))
    assert "row-unread" not in read_row and "unread</span>" not in read_row
    assert (
        "row-unread" in late_row and '<span class="badge badge-unread">1 unread</span>' in late_row
    )
    assert '<span class="due due-later">in 7 days</span>' in read_row
    assert "2 days overdue</span>" in late_row and "due-overdue" in late_row
    assert '<span class="due due-today">due today</span>' in urgent_row
    assert '<span class="badge badge-urgent">Urgent</span>' in urgent_row
    assert "badge-urgent" not in late_row
    css = oio.get("/static/style.css").get_data(as_text=True)
    assert ".row-unread > td {\n  font-weight: 700;" in css


def test_due_words_say_how_far_a_deadline_is() -> None:
    from datetime import date

    from journalist_interface.reports import due_words

    today = date(2026, 3, 10)
    assert due_words(date(2026, 3, 13), today) == ("in 3 days", "soon")
    assert due_words(date(2026, 3, 30), today) == ("in 20 days", "later")
    assert due_words(date(2026, 3, 11), today) == ("due tomorrow", "soon")
    assert due_words(today, today) == ("due today", "today")
    assert due_words(date(2026, 3, 9), today) == ("1 day overdue", "overdue")
    assert due_words(date(2026, 3, 8), today) == ("2 days overdue", "overdue")
    assert due_words(None, today) == ("", "")


def test_robots_txt_and_favicon_on_the_reviewer_app_and_the_source_interface(
    desk: Desk,
) -> None:
    reviewer = desk.reviewer().test_client()
    reviewer.environ_base["HTTP_HOST"] = HOST
    for client in (reviewer, desk.source.test_client()):
        robots = client.get("/robots.txt")
        assert robots.status_code == 200, robots.get_data(as_text=True)
        assert robots.get_data(as_text=True) == "User-agent: *\nDisallow: /\n"
        assert robots.headers["Content-Type"].startswith("text/plain")
        icon = client.get("/favicon.ico")
        assert icon.status_code == 204 and icon.get_data() == b""
        assert icon.headers["Content-Security-Policy"].startswith("default-src 'none'")
