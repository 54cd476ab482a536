"""The whole source journey with the keyboard alone, JavaScript off, never a mouse click.

Only Tab, arrow keys, Space, Enter and typing move the source on. To know
where focus is, the test asks the browser (Playwright's evaluation runs
outside the page's disabled scripts). Every focus stop must be on screen and
show a visible focus indicator.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.browser.conftest import Servers
from tests.browser.helpers import DESKTOP, PHONE, source_context

FOCUSED_JS = """() => {
    const e = document.activeElement;
    if (!e || e === document.body) return null;
    const box = e.getBoundingClientRect();
    const style = getComputedStyle(e);
    const outline = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0;
    const shadow = style.boxShadow && style.boxShadow !== "none";
    return {
        tag: e.tagName.toLowerCase(),
        id: e.id,
        type: e.type || "",
        checked: !!e.checked,
        text: (e.innerText || e.value || "").trim().replace(/\\s+/g, " ").slice(0, 80),
        onScreen: box.width > 0 && box.height > 0 && box.right > 0 && box.bottom > 0
            && box.left < window.innerWidth && box.top < window.innerHeight,
        indicator: outline || shadow,
    };
}"""

Focus = dict[str, Any]


class Keyboard:
    """A source's keyboard: Tab to a control, then act on it, with checks at every stop."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.stops = 0

    def focused(self) -> Focus | None:
        found: Focus | None = self.page.evaluate(FOCUSED_JS)
        return found

    def tab_to(self, what: str, match: Callable[[Focus], bool], limit: int = 80) -> Focus:
        """Press Tab until focus is on the control `match` accepts."""
        for _ in range(limit):
            self.page.keyboard.press("Tab")
            self.stops += 1
            now = self.focused()
            if now is None:
                continue
            assert now["onScreen"], f"focus went to something not on screen: {now}"
            assert now["indicator"], f"no visible focus indicator on {now}"
            if match(now):
                return now
        raise AssertionError(f"{limit} presses of Tab never reached {what}")

    def tab_to_text(self, text: str) -> Focus:
        return self.tab_to(repr(text), lambda f: f["text"] == text)

    def tab_to_id(self, element_id: str) -> Focus:
        return self.tab_to(f"#{element_id}", lambda f: f["id"] == element_id)

    def press(self, key: str) -> None:
        self.page.keyboard.press(key)

    def type(self, text: str) -> None:
        self.page.keyboard.type(text)

    def expect_heading(self, text: str) -> None:
        expect(self.page.get_by_role("heading", level=1)).to_have_text(text)


def test_the_source_journey_works_with_the_keyboard_alone(
    browser: Browser, servers: Servers, tmp_path: Path
) -> None:
    attachment = tmp_path / "contract.txt"
    attachment.write_text("Contract end notice.\n")
    context = source_context(browser, viewport=DESKTOP)
    page = context.new_page()
    keys = Keyboard(page)
    page.goto(servers.source_url + "/")

    # The first stop is the skip link; it moves focus to the main content.
    first = keys.tab_to("the skip link", lambda f: True, limit=1)
    assert first["text"] == "Skip to main content", first
    keys.press("Enter")
    expect(page).to_have_url(servers.source_url + "/#main")
    assert keys.tab_to("the first control of the page", lambda f: True, limit=1)["text"] == (
        "Make a report"
    )
    keys.press("Enter")
    keys.expect_heading("Your codename")

    words = [w.strip() for w in page.locator("ol.codename-words > li").all_inner_texts()]
    codename = " ".join(words)
    keys.tab_to_id("written_down")
    keys.press("Space")
    expect(page.get_by_label("I have written down my codename")).to_be_checked()
    keys.tab_to_text("Continue to the report")
    keys.press("Enter")
    keys.expect_heading("Make a report")

    # A radio group is one Tab stop; the arrow keys choose within it.
    keys.tab_to("the category choices", lambda f: f["type"] == "radio")
    for _ in range(12):
        if (keys.focused() or {}).get("id") == "category-retaliation":
            break
        keys.press("ArrowDown")
    expect(page.get_by_label("Retaliation for reporting", exact=True)).to_be_checked()
    keys.tab_to_id("message")
    keys.type("Keyboard only: I lost my post after I was a witness in an audit.")
    keys.tab_to_id("detrimental_action")
    keys.type("My contract was not renewed.")
    # Space on the file field opens the system's file dialog; the test answers it.
    keys.tab_to_id("files")
    # On a saturated machine Chromium now and then drops the dialog request of a
    # key press; still on the field, a second press is what a person would do too.
    for attempt in range(3):
        assert (keys.focused() or {}).get("id") == "files"
        try:
            with page.expect_file_chooser(timeout=10_000) as chooser:
                keys.press("Space")
            break
        except PlaywrightTimeoutError:
            if attempt == 2:
                raise
    chooser.value.set_files(attachment)
    keys.tab_to_text("Send the report")
    keys.press("Enter")
    keys.expect_heading("Your report was received")

    keys.tab_to_text("See your report")
    keys.press("Enter")
    keys.expect_heading("Your report")
    expect(page.locator(".status-line")).to_contain_text("Received")
    expect(page.get_by_role("heading", name="You sent a file")).to_have_count(1)
    keys.tab_to_text("Log out")
    keys.press("Enter")
    keys.expect_heading("You are logged out")

    # Coming back: the start page, "I have a codename", the codename, the thread.
    keys.tab_to_text("Go to the start page")
    keys.press("Enter")
    keys.expect_heading("Report misconduct safely")
    keys.tab_to_text("I have a codename")
    keys.press("Enter")
    keys.expect_heading("Come back with your codename")
    keys.tab_to_id("codename")
    keys.type(codename)
    keys.tab_to_text("Continue")
    keys.press("Enter")
    keys.expect_heading("Your report")

    keys.tab_to_id("message")
    keys.type("Keyboard only: one more detail.")
    keys.tab_to_text("Send")
    keys.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("Sent.")
    keys.tab_to_text("Delete this message")
    keys.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("The message was deleted")
    expect(page.get_by_role("heading", name="Automatic acknowledgement")).to_have_count(0)
    context.close()


def test_every_focus_stop_is_visible_on_a_phone(browser: Browser, servers: Servers) -> None:
    """At 390 px, Tab through the whole report form: every stop on screen, with an indicator."""
    context = source_context(browser, viewport=PHONE)
    page = context.new_page()
    keys = Keyboard(page)
    page.goto(servers.source_url + "/codename")
    keys.tab_to_id("written_down")
    keys.press("Space")
    keys.tab_to_text("Continue to the report")
    keys.press("Enter")
    keys.expect_heading("Make a report")
    keys.tab_to_text("Send the report")
    assert keys.stops > 20, keys.stops
    context.close()
