"""Issue 13, points 4, 6 and 7: the report form's shape, its identity part, and advice said once.

Through the Flask test client: what the server sends. How it looks and what
shows on a phone (the retaliation questions appear only under their choice,
the form's height) is checked in the browser suite
(tests/browser/test_source_usability.py, tests/browser/test_layout.py).
"""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from dropbox.instance import Instance
from dropbox.models import Report
from tests.source_helpers import logout, new_codename, submit_report

MESSAGE = "My supervisor moved me off every project after I spoke to the oversight office."


@pytest.fixture
def client(source_app: Flask) -> FlaskClient:
    return source_app.test_client()


def reports_stored(instance: Instance) -> int:
    with instance.sessions() as db:
        return db.scalar(select(func.count()).select_from(Report)) or 0


def retaliation_block(page: str) -> str:
    """The retaliation questions: from their fieldset's opening tag to its end."""
    match = re.search(r'<fieldset class="retaliation-questions[^"]*".*?</fieldset>', page, re.S)
    assert match is not None, "no retaliation questions on the page"
    return match.group(0)


def identity_block(page: str) -> str:
    match = re.search(r'<details class="group identity".*?</details>', page, re.S)
    assert match is not None, "no identity part on the page"
    return match.group(0)


def text_of(page: str) -> str:
    """The page's visible words, roughly: tags dropped, spaces collapsed."""
    body = page.split("<body", 1)[1]
    return " ".join(re.sub(r"<[^>]+>", " ", body).split())


# --- point 4: retaliation questions only under the retaliation choice ---------------


def test_the_retaliation_questions_sit_inside_the_retaliation_choice_closed(
    client: FlaskClient,
) -> None:
    _, form = new_codename(client)
    # The retaliation radio, its label, then the questions, all in one .choice box,
    # so that CSS alone (input:checked ~ questions) shows them, with no script.
    choice = re.search(
        r'<div class="choice">\s*<input type="radio"[^>]*class="is-retaliation"[^>]*>'
        r"\s*<label[^>]*>[^<]*</label>\s*(<fieldset[^>]*>)",
        form,
    )
    assert choice is not None, "the retaliation questions are not right under their choice"
    assert "retaliation-questions-open" not in choice.group(1)
    for name in ("protected_activity", "protected_activity_date", "detrimental_action"):
        assert f'name="{name}"' in retaliation_block(form)
    # Immediate danger is not only a retaliation matter: that tick box is for everyone.
    assert 'name="safety_risk"' not in retaliation_block(form)
    assert form.count('name="safety_risk"') == 1
    # No other question about retaliation anywhere else on the form.
    rest = form.replace(retaliation_block(form), "")
    for name in ("protected_activity", "protected_activity_date", "detrimental_action"):
        assert f'name="{name}"' not in rest


def test_answers_kept_on_an_error_keep_the_retaliation_questions_open(
    client: FlaskClient, instance: Instance
) -> None:
    _, form = new_codename(client)
    answer = submit_report(
        client,
        form,
        {"category": "retaliation", "message": "short", "protected_activity": "Spoke to OIO"},
    )
    assert answer.status_code == 400
    page = answer.get_data(as_text=True)
    block = retaliation_block(page)
    assert "retaliation-questions-open" in block.split(">", 1)[0]
    assert "Spoke to OIO" in block
    assert reports_stored(instance) == 0


def test_retaliation_answers_under_another_subject_are_neither_sent_nor_dropped(
    client: FlaskClient, instance: Instance
) -> None:
    """Typed under retaliation, then another subject chosen: the source is asked, nothing lost."""
    _, form = new_codename(client)
    answer = submit_report(
        client,
        form,
        {"category": "fraud", "message": MESSAGE, "detrimental_action": "Moved to a desk job"},
    )
    assert answer.status_code == 400
    page = answer.get_data(as_text=True)
    assert reports_stored(instance) == 0
    block = retaliation_block(page)
    assert "retaliation-questions-open" in block.split(">", 1)[0]
    assert "Moved to a desk job" in block
    assert 'id="detrimental_action-error"' in block
    assert "Retaliation for reporting" in text_of(page)
    assert MESSAGE in page  # the rest of what was typed is kept too
    # Emptied, the same report goes out.
    sent = submit_report(client, page, {"category": "fraud", "message": MESSAGE})
    assert sent.status_code == 302
    assert reports_stored(instance) == 1


def test_any_source_can_say_their_safety_is_at_risk_and_the_report_is_urgent(
    client: FlaskClient, instance: Instance
) -> None:
    _, form = new_codename(client)
    answer = submit_report(
        client, form, {"category": "harassment", "message": MESSAGE, "safety_risk": "yes"}
    )
    assert answer.status_code == 302
    with instance.sessions() as db:
        report = db.scalars(select(Report)).one()
        assert report.urgent and report.category == "harassment"


# --- point 6: the identity part -----------------------------------------------------


def test_the_identity_part_is_closed_and_says_who_sees_it_and_that_contact_may_be_used(
    client: FlaskClient,
) -> None:
    _, form = new_codename(client)
    block = identity_block(form)
    assert " open" not in block.split(">", 1)[0]
    words = text_of("<body>" + block)
    assert "(optional)" in words
    assert "Leave this part empty to stay anonymous" in words
    assert "only after recording a reason" in words
    assert "the office may use them to contact you outside this site" in words
    assert "How the office can contact you" in words
    assert "How to contact you" not in form


def test_the_identity_part_opens_when_it_holds_an_answer(client: FlaskClient) -> None:
    _, form = new_codename(client)
    answer = submit_report(
        client, form, {"category": "fraud", "message": "short", "identity_contact": "a@b.example"}
    )
    assert answer.status_code == 400
    block = identity_block(answer.get_data(as_text=True))
    assert " open" in block.split(">", 1)[0]
    assert 'value="a@b.example"' in block


def test_the_landing_page_no_longer_says_the_office_can_only_reach_the_source_here(
    client: FlaskClient,
) -> None:
    words = text_of(client.get("/").get_data(as_text=True))
    assert "can only reach you through this site" not in words
    assert "unless you choose to give it contact details in your report" in words


# --- point 7: each piece of advice once, where it applies -------------------------------

CLOSE_TOR = re.compile(r"close Tor Browser", re.I)
SESSION_LENGTH = re.compile(r"\b120 minutes\b")


def visit_every_page(client: FlaskClient, instance: Instance) -> dict[str, str]:
    pages = {"landing": client.get("/").get_data(as_text=True)}
    pages["codename"] = client.get("/codename").get_data(as_text=True)
    _, pages["report"] = new_codename(client)
    sent = submit_report(client, pages["report"], {"category": "fraud", "message": MESSAGE})
    assert sent.status_code == 302
    pages["receipt"] = client.get("/receipt").get_data(as_text=True)
    pages["thread"] = client.get("/thread").get_data(as_text=True)
    pages["logged-out"] = logout(client).get_data(as_text=True)
    pages["login"] = client.get("/login").get_data(as_text=True)
    pages["not-found"] = client.get("/no-such-page").get_data(as_text=True)
    return pages


def test_each_piece_of_advice_appears_at_most_once_and_where_it_applies(
    client: FlaskClient, instance: Instance
) -> None:
    pages = visit_every_page(client, instance)
    for name, page in pages.items():
        words = text_of(page)
        assert len(CLOSE_TOR.findall(words)) <= 1, f"{name}: 'close Tor Browser' more than once"
        assert len(SESSION_LENGTH.findall(words)) <= 1, f"{name}: session length more than once"
    # Closing Tor Browser: before starting (the landing page's advice) and at the end.
    assert CLOSE_TOR.search(text_of(pages["landing"]))
    assert CLOSE_TOR.search(text_of(pages["logged-out"]))
    # The session's length: where a session is being used, not before one exists.
    for name in ("landing", "codename", "login", "logged-out", "not-found"):
        assert not SESSION_LENGTH.search(text_of(pages[name])), name
    assert SESSION_LENGTH.search(text_of(pages["report"]))
    assert SESSION_LENGTH.search(text_of(pages["thread"]))
