"""Issue 13, points 1 and 5: a codename that stays put until confirmed, and a sign-in that
keeps what was typed and names the words that are in no list.

* Point 1. Within one session the codename page shows the same codename on
  reload or Back until it is confirmed (and after, until the report is sent);
  "Give me a different codename" (a POST with the CSRF token) replaces it, and
  only the codename on the screen can be confirmed. It is kept only in the
  session's state, which the store holds sealed under the cookie's key.
* Point 5. A wrong codename at sign-in stays in the box (the page is never
  cached), and the page names the words that are in none of the word lists
  (any language's), saying nothing about whether the codename exists: the
  answer depends only on what was typed, and the derivation runs at most once.
"""

from __future__ import annotations

import html
import itertools
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from crypto import codenames
from dropbox.instance import Instance
from dropbox.models import SourceSession
from dropbox.web.limits import DerivationGate
from tests.source_helpers import CODENAME, csrf_token, login, new_codename, submit_report

MESSAGE = "The stock counts were changed after every audit this spring."
NOT_SHOWN = "The codename on that page can no longer be used"
DIFFERENT = "Here is a different codename"
NOT_A_CODENAME = (
    f"That is not a codename. A codename is the {codenames.WORD_COUNT} words this site gave you "
    f"({codenames.LEGACY_WORD_COUNT} for older codenames). Check each word and try again."
)
ERROR = re.compile(r'<p class="error-message" id="codename-error" role="alert">(.*?)</p>', re.S)


def shown(page: str) -> str:
    """The codename a codename page shows (the one its form would confirm)."""
    match = CODENAME.search(page)
    assert match is not None, "the page shows no codename"
    return html.unescape(match.group(1) or match.group(2))


def words_on_screen(page: str) -> str:
    """The codename as the numbered list shows it to a person."""
    listed = re.search(r'<ol class="codename-words"[^>]*>(.*?)</ol>', page, re.S)
    assert listed is not None
    return " ".join(html.unescape(w).strip() for w in re.findall(r"<li>(.*?)</li>", listed[1]))


def confirm(client: FlaskClient, page: str, codename: str) -> TestResponse:
    """Tick "I have written it down" and continue, with the codename the page's form holds."""
    return client.post(
        "/codename",
        data={"csrf_token": csrf_token(page), "codename": codename, "written_down": "yes"},
    )


def different(client: FlaskClient, page: str) -> TestResponse:
    """Press "Give me a different codename" on a codename page."""
    form = page.split('class="different-codename-form"', 1)[1]
    return client.post("/codename/new", data={"csrf_token": csrf_token(form)})


# --- point 1 ---------------------------------------------------------------------------


def test_reloading_the_codename_page_shows_the_same_codename_until_it_is_confirmed(
    source_app: Flask,
) -> None:
    client = source_app.test_client()
    first = client.get("/codename").get_data(as_text=True)
    codename = shown(first)
    assert words_on_screen(first) == codename
    for _ in range(3):  # reloads, and Back to the page (a new GET: it is never cached)
        again = client.get("/codename")
        assert again.headers["Cache-Control"] == "no-store"
        assert shown(again.get_data(as_text=True)) == codename
    # Another visitor (another session) gets another codename.
    assert shown(source_app.test_client().get("/codename").get_data(as_text=True)) != codename
    # Confirmed, then Back from the report form: still the same one, and it still leads on.
    assert confirm(client, first, codename).headers["Location"] == "/report"
    back = client.get("/codename").get_data(as_text=True)
    assert shown(back) == codename
    assert client.get("/report").status_code == 200


def test_a_different_codename_replaces_the_shown_one_which_can_no_longer_be_confirmed(
    source_app: Flask, instance: Instance
) -> None:
    client = source_app.test_client()
    page = client.get("/codename").get_data(as_text=True)
    assert "Give me a different codename" in page
    old = shown(page)
    answer = different(client, page)
    assert answer.status_code == 302 and answer.headers["Location"] == "/codename"
    new_page = client.get("/codename").get_data(as_text=True)
    new = shown(new_page)
    assert new != old and len(new.split()) == codenames.WORD_COUNT
    assert DIFFERENT in new_page
    assert shown(client.get("/codename").get_data(as_text=True)) == new  # it stays, in turn
    # The old page, still open in another tab: its codename is refused, nothing goes on.
    refused = confirm(client, page, old)
    assert refused.headers["Location"] == "/codename"
    assert NOT_SHOWN in client.get("/codename").get_data(as_text=True)
    assert client.get("/report").status_code == 302
    # The one on the screen is the one that works, and the report goes out under it.
    assert confirm(client, new_page, new).headers["Location"] == "/report"
    form = client.get("/report").get_data(as_text=True)
    assert submit_report(client, form, {"category": "fraud", "message": MESSAGE}).status_code == 302
    assert login(source_app.test_client(), new).headers["Location"] == "/thread"
    assert login(source_app.test_client(), old).status_code == 400


def test_asking_for_a_different_codename_after_confirming_ends_the_pending_confirmation(
    source_app: Flask,
) -> None:
    client = source_app.test_client()
    confirmed, _ = new_codename(client)
    back = client.get("/codename").get_data(as_text=True)
    assert shown(back) == confirmed
    different(client, back)
    # The report form would send under a codename no longer on the screen: it is closed.
    assert client.get("/report").headers["Location"] == "/codename"
    assert shown(client.get("/codename").get_data(as_text=True)) != confirmed


def test_switching_language_gives_a_codename_in_that_language_and_it_stays(
    source_app: Flask,
) -> None:
    client = source_app.test_client()
    english = shown(client.get("/codename").get_data(as_text=True))
    client.get("/language/fr")
    french = shown(client.get("/codename").get_data(as_text=True))
    assert french != english
    assert all(w in codenames._words("fr") for w in french.split())
    assert shown(client.get("/codename").get_data(as_text=True)) == french


def test_a_different_codename_needs_the_forms_token(source_app: Flask) -> None:
    client = source_app.test_client()
    codename = shown(client.get("/codename").get_data(as_text=True))
    for data in ({}, {"csrf_token": "forged"}):
        refused = client.post("/codename/new", data=data)
        assert refused.status_code == 400
        assert "This form has expired" in refused.get_data(as_text=True)
    assert shown(client.get("/codename").get_data(as_text=True)) == codename


def test_the_shown_codename_is_only_in_the_sealed_session_and_gone_once_the_report_is_sent(
    source_app: Flask, instance: Instance, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = source_app.test_client()
    codename = shown(client.get("/codename").get_data(as_text=True))
    folded = codenames.normalise(codename)
    with instance.readers() as db:
        stored = b"".join(db.execute(select(SourceSession.state)).scalars())
    assert stored, "the session was not stored"
    # Sealed bytes are random, so one short word may appear by chance; two side by side cannot.
    for first, second in itertools.pairwise(folded.split()):
        for joined in (f"{first} {second}", first + second):
            assert joined.encode() not in stored.lower(), joined
    assert codename.encode() not in stored
    with client.session_transaction() as state:
        assert codename in str(dict(state))  # opened with the cookie's key, it is there
    form = client.get("/codename").get_data(as_text=True)
    confirm(client, form, codename)
    report_form = client.get("/report").get_data(as_text=True)
    sent = submit_report(client, report_form, {"category": "fraud", "message": MESSAGE})
    assert sent.status_code == 302
    with client.session_transaction() as state:
        kept = " ".join(str(value) for value in state.values()).casefold()
    # Not the codename, nor any two of its words side by side. A single word can be
    # there by chance: the codename list holds ordinary words ("urgent" is also a
    # session key's name, "report" is in every log line of the form).
    pairs = set(itertools.pairwise(folded.split()))
    logged = caplog.text.casefold()
    for text in (kept, logged):
        side_by_side = set(itertools.pairwise(re.findall(r"\w+", text)))
        assert not pairs & side_by_side, pairs & side_by_side


# --- point 5 ---------------------------------------------------------------------------


class CountingGate(DerivationGate):
    """The real gate, counting the derivations it lets through."""

    def __init__(self, slots: int) -> None:
        super().__init__(slots)
        self.entered = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Count, then take a slot as the gate always does."""
        self.entered += 1
        with super().slot():
            yield


def counting(app: Flask) -> CountingGate:
    gate = CountingGate(2)
    app.extensions["dropbox.gate"] = gate
    return gate


def error_of(response: TestResponse) -> str:
    body = response.get_data(as_text=True)
    match = ERROR.search(body)
    assert match is not None, body[-800:]
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", match[1])).split())


def box_of(response: TestResponse) -> str:
    body = response.get_data(as_text=True)
    match = re.search(r'<textarea name="codename"[^>]*>(.*?)</textarea>', body, re.S)
    assert match is not None
    return html.unescape(match[1])


def a_source_with_a_report(app: Flask) -> str:
    client = app.test_client()
    codename, form = new_codename(client)
    assert submit_report(client, form, {"category": "fraud", "message": MESSAGE}).status_code == 302
    return codename


def test_a_misspelt_word_is_named_and_what_was_typed_stays_in_the_box(
    source_app: Flask,
) -> None:
    gate = counting(source_app)
    words = codenames.generate("en").split()
    typed = "  " + " ".join([words[0].upper(), words[1] + "qq", *words[2:5], "zzqq", words[6]])
    response = login(source_app.test_client(), typed)
    assert response.status_code == 400
    assert response.headers["Cache-Control"] == "no-store"
    assert box_of(response) == typed
    assert error_of(response) == (
        f"Error: These words are not in any of our word lists: {words[1]}qq, zzqq. "
        + NOT_A_CODENAME
    )
    assert gate.entered == 0  # words in no list: free, as before


def test_words_from_every_language_count_as_known(source_app: Flask) -> None:
    english = {codenames.normalise(w) for w in codenames._words("en")}
    french = [w for w in codenames._words("fr") if codenames.normalise(w) not in english]
    spanish = [w for w in codenames._words("es") if codenames.normalise(w) not in english]
    typed = " ".join([french[0], spanish[0], *codenames.generate("en").split()[:4], "qwxz"])
    response = login(source_app.test_client(), typed)
    assert error_of(response).startswith(
        "Error: This word is not in any of our word lists: qwxz. That is not a codename."
    )
    assert box_of(response) == typed


def test_known_words_of_the_wrong_number_are_counted_not_blamed(source_app: Flask) -> None:
    six = " ".join(codenames.generate("en").split()[:6])
    response = login(source_app.test_client(), six)
    message = error_of(response)
    assert message == f"Error: You typed 6 words. {NOT_A_CODENAME}"
    assert box_of(response) == six


def test_the_answer_to_a_wrong_codename_does_not_say_whether_it_exists(
    source_app: Flask,
) -> None:
    real = a_source_with_a_report(source_app)
    made_up = codenames.generate("en")
    gate = counting(source_app)
    # One word misspelt the same way: the same message, no derivation either way.
    answers = []
    for codename in (real, made_up):
        words = codename.split()
        typed = " ".join([*words[:6], "qwxz"])
        response = login(source_app.test_client(), typed)
        assert response.status_code == 400 and box_of(response) == typed
        answers.append(error_of(response))
    assert answers[0] == answers[1]
    assert gate.entered == 0
    # Every word known but wrong: one derivation, and the box keeps it.
    wrong = login(source_app.test_client(), made_up.upper())
    assert "No report matches this codename" in error_of(wrong)
    assert box_of(wrong) == made_up.upper()
    assert gate.entered == 1
    assert login(source_app.test_client(), real).headers["Location"] == "/thread"
    assert gate.entered == 2


def test_the_sign_in_messages_are_translated(source_app: Flask) -> None:
    for language, expected in (("fr", "qwxz"), ("es", "qwxz")):
        client = source_app.test_client()
        client.get(f"/language/{language}")
        typed = " ".join([*codenames.generate("en").split()[:6], "qwxz"])
        message = error_of(login(client, typed))
        assert expected in message and "not in any of our word lists" not in message
