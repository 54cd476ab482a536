"""Issue 13, point 8: on a phone, what is new from the office is on the first screen, marked New.

A source (JavaScript off, 390 x 844) sends a report with a file; an OIO
officer replies through the real reviewer app; the source comes back to the
thread. The reply is at the top, marked with the word "New", readable without
scrolling; the source's own file is listed without its name and with a size
in the words people use; axe finds nothing serious in light or dark colours;
after a reload the reply is no longer new. The page is saved as
tests/artifacts/source-thread-new-390.png and -1280.png.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from playwright.sync_api import Browser, Locator, Page, ViewportSize, expect

from tests.browser.conftest import Servers, TotpCodes
from tests.browser.helpers import (
    DESKTOP,
    PHONE,
    AxeLog,
    check_no_horizontal_overflow,
    fill_report,
    get_codename,
    make_file,
    officer_sign_in,
    open_report_containing,
    screenshot_name,
    send_report,
    source_context,
    thread_entry,
)

MESSAGE = (
    "Thread check: invoices for cleaning that never happened, signed off monthly. Ref TH-5120."
)
CATEGORY = "Fraud, corruption or misuse of resources"  # the OIO's
FILE_NAME = "cleaning-invoices-2026.pdf"
REPLY = "Thank you. Who signs the invoices off, and since when?"
SIZE = re.compile(r"\d+(\.\d)? (bytes|KB|MB)")


def officer_replies(browser: Browser, servers: Servers, totp: TotpCodes, text: str) -> None:
    """The OIO officer signs in at the reviewer app, finds the report and replies."""
    context = browser.new_context(
        java_script_enabled=False,
        viewport=ViewportSize(width=DESKTOP["width"], height=DESKTOP["height"]),
    )
    officer = context.new_page()
    officer_sign_in(officer, servers, servers.officers["OIO"], totp)
    open_report_containing(officer, servers, "Ref TH-5120")
    officer.get_by_label("Message", exact=True).fill(text)
    officer.get_by_role("button", name="Send to the source").click()
    expect(thread_entry(officer, "Reply to the source", text)).to_have_count(1)
    context.close()


def new_reply(page: Page) -> Locator:
    """The reply in the "New from the office" section."""
    section = page.locator("section").filter(
        has=page.get_by_role("heading", name="New from the office", exact=True)
    )
    return section.locator("li.entry-office").filter(has_text=REPLY)


def shoot(page: Page, artifacts: Path) -> None:
    """Full-page screenshots at both widths; nothing sticks out at phone width."""
    for viewport in (DESKTOP, PHONE):
        page.set_viewport_size(ViewportSize(width=viewport["width"], height=viewport["height"]))
        path = artifacts / screenshot_name("thread-new", viewport["width"])
        path.unlink(missing_ok=True)
        page.screenshot(path=path, full_page=True)
        assert path.exists()
    check_no_horizontal_overflow(page, "thread-new")


def check_axe(
    browser: Browser, servers: Servers, html: str, axe_source: str, artifacts: Path
) -> None:
    """axe on the page as it was shown, light and dark, served again with the real stylesheet.

    Loading /thread again would mark the reply seen, and axe needs JavaScript,
    which the source's browser has off: so a checking context gets the same
    HTML for /thread (everything else comes from the server).
    """
    log = AxeLog(axe_source, artifacts / "axe-source-thread-new.json")
    for scheme in ("light", "dark"):
        context = browser.new_context(
            bypass_csp=True,
            viewport=ViewportSize(width=DESKTOP["width"], height=DESKTOP["height"]),
            color_scheme=scheme,
        )
        page = context.new_page()
        page.route(
            servers.source_url + "/thread",
            lambda route: route.fulfill(
                status=200, content_type="text/html; charset=utf-8", body=html
            ),
        )
        page.goto(servers.source_url + "/thread")
        expect(page.locator(".new-mark")).to_have_text("New")
        log.check(page, f"thread-new-{scheme}")
        context.close()
    log.finish()


def test_a_new_reply_is_on_the_first_phone_screen_marked_new_once(
    browser: Browser,
    servers: Servers,
    totp: TotpCodes,
    axe_source: str,
    artifacts: Path,
    tmp_path: Path,
) -> None:
    evidence = make_file(tmp_path, FILE_NAME, os.urandom(1_400_000))
    source = source_context(browser, viewport=PHONE)
    page = source.new_page()
    get_codename(page, servers.source_url)
    fill_report(page, CATEGORY, MESSAGE, files=[evidence])
    send_report(page)

    officer_replies(browser, servers, totp, REPLY)

    page.goto(servers.source_url + "/thread")
    expect(page.get_by_role("heading", level=1)).to_have_text("Your report")
    reply = new_reply(page)
    expect(reply).to_have_count(1)
    expect(reply.locator(".new-mark")).to_have_text("New")
    expect(reply.locator(".new-mark")).to_be_visible()
    text = reply.locator(".message-text")
    expect(text).to_have_text(REPLY)
    box = text.bounding_box()
    assert box is not None
    assert page.evaluate("window.scrollY") == 0
    assert box["y"] < PHONE["height"], f"the reply starts {box['y']:.0f} px down, below the screen"
    assert box["y"] + box["height"] <= PHONE["height"], "the reply is cut off by the screen's edge"

    own_file = thread_entry(page, "You sent a file")
    expect(own_file).to_have_count(1)
    expect(page.get_by_text("cleaning-invoices")).to_have_count(0)
    assert FILE_NAME not in page.content()
    meta = own_file.locator(".entry-meta").inner_text()
    assert SIZE.search(meta), meta
    assert "1.4 MB" in meta, meta
    shoot(page, artifacts)
    check_axe(browser, servers, page.content(), axe_source, artifacts)

    page.reload()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your report")
    expect(page.get_by_role("heading", name="New from the office")).to_have_count(0)
    expect(page.locator(".new-mark")).to_have_count(0)
    expect(thread_entry(page, "Message from the office", REPLY)).to_have_count(1)
    source.close()
