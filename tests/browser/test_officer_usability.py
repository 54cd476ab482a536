"""What a busy officer sees at a glance (issue 13, points 9 and 10), in Chromium, JavaScript off.

A source sends a report through the real source interface; an officer finds
it in the inbox in bold with its unread count and its deadline in words,
opens it, and replies with "Also mark the report acknowledged" left ticked:
the report is acknowledged in that same step. The inbox and the report page
are saved at 390 and 1280 px as tests/artifacts/reviewer-usability-*.png,
and no page of the reviewer app may log a console error or fail a request
(a missing /favicon.ico did).
"""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    Response,
    ViewportSize,
    expect,
)

from tests.browser.conftest import Servers, TotpCodes
from tests.browser.helpers import (
    DESKTOP as DESKTOP_SIZE,
)
from tests.browser.helpers import (
    PHONE as PHONE_SIZE,
)
from tests.browser.helpers import (
    check_no_horizontal_overflow,
    fill_report,
    get_codename,
    inbox_reports,
    officer_sign_in,
    send_report,
    source_context,
    thread_entry,
)

MESSAGE = "Usability check: the depot's diesel is sold off every Friday night. Ref UX-2291."
CATEGORY = "Fraud, corruption or misuse of resources"  # the OIO's
REPLY = "Thank you. Which depot do you mean?"


PHONE = ViewportSize(width=PHONE_SIZE["width"], height=PHONE_SIZE["height"])
DESKTOP = ViewportSize(width=DESKTOP_SIZE["width"], height=DESKTOP_SIZE["height"])
UNREAD_ROW = re.compile(r"(^|\s)row-unread(\s|$)")


def _row(page: Page, designation: str) -> Locator:
    return page.locator("table.inbox-table tbody tr").filter(
        has=page.get_by_role("link", name=designation, exact=True)
    )


def _shoot(page: Page, artifacts: Path, name: str) -> None:
    """Full-page screenshots at phone and desktop width; the page must fit the phone."""
    for viewport in (PHONE, DESKTOP):
        page.set_viewport_size(viewport)
        path = artifacts / f"reviewer-usability-{name}-{viewport['width']}.png"
        path.unlink(missing_ok=True)
        page.screenshot(path=path, full_page=True)
        assert path.exists()
    page.set_viewport_size(PHONE)
    check_no_horizontal_overflow(page, name)
    page.set_viewport_size(DESKTOP)


def test_an_officer_sees_unread_and_deadlines_at_a_glance_and_a_reply_acknowledges(
    browser: Browser, servers: Servers, totp: TotpCodes, artifacts: Path
) -> None:
    context = browser.new_context(java_script_enabled=False, viewport=DESKTOP)
    officer = context.new_page()
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console error on {officer.url}: {message.text}")

    def on_response(response: Response) -> None:
        if response.status >= 400:
            problems.append(f"{response.status} for {response.url}")

    officer.on("console", on_console)
    officer.on("response", on_response)
    officer_sign_in(officer, servers, servers.officers["OIO"], totp)
    before = set(inbox_reports(officer, servers))

    source = source_context(browser)
    page = source.new_page()
    get_codename(page, servers.source_url)
    fill_report(page, CATEGORY, MESSAGE)
    send_report(page)
    source.close()

    # --- the inbox: the new report stands out, in words as well as in weight -------------
    (designation,) = set(inbox_reports(officer, servers)) - before
    row = _row(officer, designation)
    expect(row).to_have_class(UNREAD_ROW)
    expect(row.locator(".badge-unread")).to_have_text("1 unread")
    weight = row.locator("td").first.evaluate("cell => getComputedStyle(cell).fontWeight")
    assert int(weight) >= 700
    expect(row.locator(".due").first).to_have_text("in 7 days")
    _shoot(officer, artifacts, "inbox")

    # --- the report: one heading per purpose, the acknowledgement is no news ------------
    officer.get_by_role("link", name=designation, exact=True).click()
    expect(officer.get_by_role("heading", level=1)).to_contain_text(designation)
    expect(
        thread_entry(officer, "Message from the source", MESSAGE).locator(".badge-new")
    ).to_have_count(1)
    expect(
        thread_entry(officer, "Acknowledgement to the source").locator(".badge-new")
    ).to_have_count(0)
    expect(officer.get_by_role("heading", name="Write a reply to the source")).to_be_visible()
    status = officer.locator("#new-status option")
    assert status.all_inner_texts() == ["Choose a status", "Acknowledged", "Under assessment"]
    closing = officer.locator("section").filter(
        has=officer.get_by_role("heading", name="Close the report")
    )
    # The closing fields show only once the officer chooses to close.
    expect(closing.get_by_label("Outcome")).to_be_hidden()
    closing.get_by_text("Choose the outcome and close").click()
    expect(closing.get_by_label("Outcome")).to_be_visible()
    expect(closing.get_by_label("Reason for closing")).to_be_visible()
    expect(officer.locator(".status-form").get_by_label("Outcome")).to_have_count(0)
    box = officer.get_by_label("Also mark the report acknowledged")
    expect(box).to_be_checked()
    _shoot(officer, artifacts, "report")

    # --- the first reply acknowledges, in the same step ----------------------------------
    officer.get_by_label("Message", exact=True).fill(REPLY)
    officer.get_by_role("button", name="Send to the source").click()
    expect(officer.get_by_role("status")).to_contain_text("The report is marked acknowledged")
    expect(officer.locator(".case-badges")).to_contain_text("Acknowledged")
    expect(thread_entry(officer, "Reply to the source", REPLY)).to_have_count(1)
    expect(officer.get_by_label("Also mark the report acknowledged")).to_have_count(0)
    _shoot(officer, artifacts, "report-replied")

    officer.goto(servers.reviewer_url + "/")
    row = _row(officer, designation)
    expect(row).not_to_have_class(UNREAD_ROW)
    expect(row.locator(".badge-done")).to_have_text("Done")
    context.close()
    assert not problems, "\n".join(problems)
