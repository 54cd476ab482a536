"""Issue 13, points 1 and 5, in the browser (JavaScript off, at 390 and 1280 px).

* Point 1: the codename page shows the same codename on reload and on Back,
  before and after it is confirmed; "Give me a different codename" replaces
  it, and the report goes out under the one on the screen (it signs in).
* Point 4: on a phone, the retaliation questions show only once retaliation
  is chosen, right under that choice (CSS alone: JavaScript is off); the path
  from the landing page to the receipt takes at most five pages. (The form's
  height in phone screens: tests/browser/test_layout.py.)
* Point 5: a wrong codename at sign-in stays in the box, the page names the
  words that are in no word list (in the page's language), and the answer is
  never cached.

Screenshots of each page touched: tests/artifacts/source-<page>-<width>.png.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from crypto import codenames
from tests.browser.conftest import Servers
from tests.browser.helpers import (
    DESKTOP,
    PHONE,
    RETALIATION,
    check_no_horizontal_overflow,
    fill_report,
    read_codename,
    screenshot_name,
    send_report,
    source_context,
    source_login,
)

VIEWPORTS = pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280px", "390px"])


def snap(page: Page, artifacts: Path, name: str, width: int) -> None:
    """Keep a full-page screenshot, and check that nothing sticks out sideways."""
    path = artifacts / screenshot_name(name, width)
    path.unlink(missing_ok=True)
    page.screenshot(path=path, full_page=True)
    check_no_horizontal_overflow(page, name)


def heading(page: Page, text: str) -> None:
    expect(page.get_by_role("heading", level=1)).to_have_text(text)


@VIEWPORTS
def test_the_codename_stays_on_reload_and_back_until_the_source_asks_for_another(
    browser: Browser, servers: Servers, artifacts: Path, viewport: dict[str, int]
) -> None:
    width = viewport["width"]
    page = source_context(browser, viewport=viewport).new_page()
    page.goto(servers.source_url + "/")
    page.get_by_role("link", name="Make a report").first.click()
    heading(page, "Your codename")
    first = read_codename(page)

    page.reload()
    assert read_codename(page) == first
    snap(page, artifacts, "codename-reloaded", width)
    page.goto(servers.source_url + "/")
    page.go_back()
    heading(page, "Your codename")
    assert read_codename(page) == first

    page.get_by_role("button", name="Give me a different codename").click()
    heading(page, "Your codename")
    expect(page.get_by_role("status")).to_contain_text("Here is a different codename")
    second = read_codename(page)
    assert second != first
    snap(page, artifacts, "codename-different", width)
    page.go_back()  # to the page that showed the first one: it now shows the second
    heading(page, "Your codename")
    assert read_codename(page) == second

    page.get_by_label("I have written down my codename").check()
    page.get_by_role("button", name="Continue to the report").click()
    heading(page, "Make a report")
    page.go_back()  # the source checks the paper once more
    heading(page, "Your codename")
    assert read_codename(page) == second
    page.go_forward()
    heading(page, "Make a report")
    fill_report(page, "I am not sure", "The petty cash box was emptied twice this month.")
    send_report(page)

    # The codename on the screen is the one that opens the report; the first one does not.
    later = source_context(browser, viewport=viewport).new_page()
    source_login(later, servers.source_url, second)
    later.goto(servers.source_url + "/login")
    later.get_by_label("Your codename").fill(first)
    later.get_by_role("button", name="Continue").click()
    expect(later.get_by_role("alert")).to_contain_text("No report matches this codename")


@VIEWPORTS
def test_a_mistyped_codename_stays_in_the_box_and_the_unknown_word_is_named(
    browser: Browser, servers: Servers, artifacts: Path, viewport: dict[str, int]
) -> None:
    width = viewport["width"]
    page = source_context(browser, viewport=viewport).new_page()
    words = codenames.generate("en").split()
    misspelt = words[3] + "qq"
    typed = f"{words[0].capitalize()}  {' '.join(words[1:3])} {misspelt} {' '.join(words[4:])}"
    for language, heading_text, expected in (
        ("en", "Come back with your codename", f"not in any of our word lists: {misspelt}."),
        ("fr", None, f"dans aucune de nos listes de mots\u00a0: {misspelt}."),
    ):
        page.goto(f"{servers.source_url}/language/{language}?next=login")
        if heading_text is not None:
            heading(page, heading_text)
        page.locator("textarea#codename").fill(typed)
        with page.expect_response(lambda r: r.request.method == "POST") as answer:
            page.locator("form.login-form button[type=submit]").click()
        assert answer.value.status == 400
        assert answer.value.headers.get("cache-control") == "no-store"
        alert = page.get_by_role("alert")
        expect(alert).to_contain_text(expected)
        expect(page.locator("textarea#codename")).to_have_value(typed)
        snap(page, artifacts, f"login-unknown-words-{language}", width)


# Issue 13, point 4: pages from the landing page to the receipt, and the report
# form's height on a phone in screens, at most.
MAX_PAGES_TO_RECEIPT = 5
MAX_FORM_SCREENS = 4


def test_retaliation_questions_show_only_under_their_choice_on_a_short_path(
    browser: Browser, servers: Servers, artifacts: Path
) -> None:
    page = source_context(browser, viewport=PHONE).new_page()
    pages: list[str] = []
    page.on("load", lambda: pages.append(page.url))
    page.goto(servers.source_url + "/")
    page.get_by_role("link", name="Make a report").first.click()
    page.get_by_label("I have written down my codename").check()
    page.get_by_role("button", name="Continue to the report").click()
    heading(page, "Make a report")

    question = page.get_by_label("What was done or threatened against you?")
    safety = page.get_by_label("My safety is at immediate risk")
    expect(question).to_be_hidden()
    expect(safety).to_be_visible()  # immediate danger is not only a retaliation matter
    page.get_by_label("Harassment", exact=True).check()
    expect(question).to_be_hidden()

    page.get_by_label(RETALIATION, exact=True).check()
    expect(question).to_be_visible()
    # Right under the choice, not far down the page.
    label = page.locator("label", has_text=RETALIATION).bounding_box()
    questions = page.locator("fieldset.retaliation-questions").bounding_box()
    assert label is not None and questions is not None
    gap = questions["y"] - (label["y"] + label["height"])
    assert 0 <= gap < 40, f"the questions start {gap:.0f} px below the retaliation choice"
    snap(page, artifacts, "report-retaliation-chosen", PHONE["width"])

    page.get_by_label("I am not sure", exact=True).check()
    expect(question).to_be_hidden()

    page.get_by_label(RETALIATION, exact=True).check()
    question.fill("I was moved to a desk job.")
    safety.check()
    page.get_by_label("What happened?").fill("My manager punished me for talking to the auditors.")
    send_report(page)
    expect(page.locator(".notice-urgent")).to_be_visible()
    page.wait_for_load_state("load")  # the receipt's load event, which `pages` counts
    assert len(pages) <= MAX_PAGES_TO_RECEIPT, pages
    assert [p.rsplit("/", 1)[-1] for p in pages] == ["", "codename", "report", "receipt"], pages


@pytest.mark.parametrize("language", ["en", "fr", "es"])
def test_the_report_form_fits_four_phone_screens_in_every_language(
    browser: Browser, servers: Servers, artifacts: Path, language: str
) -> None:
    """The common path (nothing optional opened) in each language's longer or shorter words."""
    page = source_context(browser, viewport=PHONE).new_page()
    page.goto(f"{servers.source_url}/language/{language}?next=generate")
    page.locator("#written_down").check()
    page.locator("form.confirm-form button[type=submit]").click()
    expect(page.locator("form.report-form")).to_be_visible()
    box = page.locator("html").bounding_box()
    assert box is not None
    screens = box["height"] / PHONE["height"]
    snap(page, artifacts, f"report-{language}", PHONE["width"])
    assert screens <= MAX_FORM_SCREENS, f"{language}: {screens:.2f} phone screens"
