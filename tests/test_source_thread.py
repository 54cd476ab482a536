"""The source's thread page: what is new from the office comes first, marked "New", once.

Reports are made through the real source interface and officers reply through
the real case server (tests/case_helpers.py), sealing as the reviewer app does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from babel.dates import format_date
from flask import Flask
from flask.testing import FlaskClient
from nacl.public import PrivateKey
from sqlalchemy import select

from crypto.keys import public_key_from_bytes
from dropbox.instance import Instance
from dropbox.models import Item, ItemKind, Report
from source_interface import formats
from tests.case_helpers import CaseWorld, make_case_world, seal
from tests.source_helpers import csrf_token, new_codename, submit_report

MESSAGE = "Fuel from the north depot is sold off every Friday night."
REPLY = "Thank you. Which depot do you mean, and since when?"
EXPLANATION = "only the office can open it"
NEW_SECTION = re.compile(r'<section class="thread-new".*?</section>', re.DOTALL)
NEW_MARK = '<strong class="new-mark">New</strong>'


@pytest.fixture
def case_world(instance: Instance, office_keys: dict[str, PrivateKey]) -> Iterator[CaseWorld]:
    world = make_case_world(instance, office_keys)
    yield world
    world.close()


def report_by_source(
    world: CaseWorld, files: list[tuple[str, bytes]] | None = None
) -> tuple[FlaskClient, str]:
    """A source sends a fraud report (the OIO's); return their signed-in browser and the id."""
    client = world.source.test_client()
    before = report_ids(world.instance)
    _, form = new_codename(client)
    sent = submit_report(client, form, {"category": "fraud", "message": MESSAGE}, files)
    assert sent.status_code == 302, sent.get_data(as_text=True)
    (report_id,) = report_ids(world.instance) - before
    return client, report_id


def report_ids(instance: Instance) -> set[str]:
    with instance.sessions() as db:
        return set(db.execute(select(Report.id)).scalars())


def officer_replies(world: CaseWorld, report_id: str, text: str) -> str:
    """The OIO officer replies through the case server; return the reply's id."""
    oio = world.client("oio")
    source = public_key_from_bytes(oio.report(report_id).source_public_key)
    reply = seal(report_id, text, ItemKind.REPLY, [world.office_public("OIO"), source])
    oio.add_item(report_id, "reply", reply)
    return reply.item_id


def thread_page(client: FlaskClient) -> str:
    response = client.get("/thread")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def new_section(page: str) -> str | None:
    found = NEW_SECTION.search(page)
    return found.group(0) if found else None


def seen(instance: Instance, item_id: str) -> bool:
    with instance.sessions() as db:
        item = db.get(Item, item_id)
        assert item is not None
        return item.seen_by_source


def test_a_new_reply_is_listed_first_and_marked_new(case_world: CaseWorld) -> None:
    client, report_id = report_by_source(case_world, [("roster.pdf", b"%PDF roster")])
    officer_replies(case_world, report_id, REPLY)

    page = thread_page(client)

    section = new_section(page)
    assert section is not None
    assert "New from the office" in section and REPLY in section and NEW_MARK in section
    assert "Delete this message" in section
    assert page.count(REPLY) == 1  # not listed a second time below
    # Before everything the source sent, and before the acknowledgement.
    assert page.index(REPLY) < page.index("You sent a message") < page.index("You sent a file")
    assert page.index(REPLY) < page.index("Automatic acknowledgement")


def test_a_reply_shown_once_is_no_longer_new_but_still_listed_in_order(
    case_world: CaseWorld,
) -> None:
    client, report_id = report_by_source(case_world)
    reply_id = officer_replies(case_world, report_id, REPLY)
    assert not seen(case_world.instance, reply_id)

    thread_page(client)
    assert seen(case_world.instance, reply_id)
    again = thread_page(client)

    assert new_section(again) is None and NEW_MARK not in again
    assert "New from the office" not in again
    assert again.count(REPLY) == 1
    # Back in its place in the thread: after the source's message and the acknowledgement.
    assert again.index("You sent a message") < again.index("Automatic acknowledgement")
    assert again.index("Automatic acknowledgement") < again.index(REPLY)


def test_only_a_page_that_was_shown_marks_a_reply_seen(case_world: CaseWorld) -> None:
    client, report_id = report_by_source(case_world)
    reply_id = officer_replies(case_world, report_id, REPLY)

    assert client.head("/thread").status_code == 200

    assert not seen(case_world.instance, reply_id)
    assert NEW_MARK in (new_section(thread_page(client)) or "")


def test_the_automatic_acknowledgement_is_never_new(case_world: CaseWorld) -> None:
    client, _ = report_by_source(case_world)

    page = thread_page(client)

    assert "Automatic acknowledgement" in page
    assert new_section(page) is None and NEW_MARK not in page


def test_a_deleted_reply_is_not_shown_even_if_it_was_never_new_on_a_page(
    case_world: CaseWorld,
) -> None:
    client, report_id = report_by_source(case_world)
    token = csrf_token(thread_page(client))  # the page from before the reply
    reply_id = officer_replies(case_world, report_id, REPLY)

    deleted = client.post(f"/thread/messages/{reply_id}/delete", data={"csrf_token": token})
    assert deleted.status_code == 302

    page = thread_page(client)
    assert REPLY not in page
    assert new_section(page) is None and NEW_MARK not in page


def test_own_files_show_no_name_and_the_page_says_why_once(case_world: CaseWorld) -> None:
    client, _ = report_by_source(case_world, [("payroll-march-2026.xlsx", b"columns")])

    page = thread_page(client)

    assert "You sent a file" in page
    assert "payroll-march" not in page
    assert page.count(EXPLANATION) == 1
    assert "your files are listed without their names" in page
    # The sentence it replaced said the same thing a second way.
    assert "even you cannot open it again here" not in page
    # A size is shown for the file, and none for the message: the length of a sealed
    # message tells the source nothing.
    entries = re.findall(r'<li class="entry entry-source.*?</li>', page, re.S)
    sized = {("entry-file" in e, "size " in e) for e in entries}
    assert sized == {(True, True), (False, False)}, entries


@pytest.mark.parametrize(
    ("language", "expected"),
    # French puts a no-break space between a number and its unit.
    [("en", "1.4 MB"), ("fr", "1,4\u00a0Mo"), ("es", "1,4 MB")],
)
def test_sizes_are_in_words_people_use_in_the_pages_language(
    case_world: CaseWorld, language: str, expected: str
) -> None:
    client, _ = report_by_source(case_world, [("scan.pdf", b"x" * 1_400_000)])
    client.get(f"/language/{language}")

    page = thread_page(client)

    assert expected in page
    assert "1400000" not in page and "MiB" not in page


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, "0 bytes"),
        (1, "1 byte"),
        (999, "999 bytes"),
        (1_000, "1 KB"),
        (230_400, "230 KB"),
        (999_960, "1 MB"),  # rounded first: never "1,000 KB"
        (1_400_000, "1.4 MB"),
        (12_345_678, "12.3 MB"),
        (523_000_000, "523 MB"),
        (2_500_000_000, "2.5 GB"),
    ],
)
def test_sizes_read_as_people_say_them(source_app: Flask, size: int, expected: str) -> None:
    with source_app.test_request_context("/thread"):
        assert formats.size_text(size) == expected


@pytest.mark.parametrize("language", ["en", "fr", "es"])
def test_dates_are_written_out_in_the_pages_language(case_world: CaseWorld, language: str) -> None:
    client, report_id = report_by_source(case_world)
    with case_world.instance.sessions() as db:
        day = (
            db.execute(select(Item.created_at).where(Item.report_id == report_id)).scalars().first()
        )
    assert day is not None
    client.get(f"/language/{language}")

    page = thread_page(client)

    assert format_date(day.date(), format="long", locale=language) in page
    assert day.strftime("%Y-%m-%d") not in page


def test_the_case_server_never_tells_officers_whether_the_source_saw_a_reply(
    case_world: CaseWorld,
) -> None:
    client, report_id = report_by_source(case_world)
    reply_id = officer_replies(case_world, report_id, REPLY)

    def items_as_officers_get_them() -> list[dict[str, object]]:
        with case_world.http("oio") as http:
            response = http.get(f"/reports/{report_id}")
            assert response.status_code == 200
            items: list[dict[str, object]] = response.json()["items"]
            return items

    items_as_officers_get_them()  # the officer's own read marks settle
    before = items_as_officers_get_them()
    thread_page(client)
    assert seen(case_world.instance, reply_id)
    after = items_as_officers_get_them()

    assert after == before
    assert all("seen" not in json.dumps(sorted(item)) for item in after)
