"""A source and two officers, each in their own browser, against the real servers.

The source's browser has JavaScript off (Tor Browser at "Safest"). The ECO
officer's is an ordinary browser. The OIO officer must never see the report.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import Servers, TotpCodes
from tests.browser.helpers import (
    RETALIATION,
    fill_report,
    get_codename,
    inbox_reports,
    make_file,
    office_entries,
    officer_sign_in,
    open_report_containing,
    send_report,
    source_context,
    source_login,
    source_status,
    thread_entry,
)

MESSAGE = (
    "After I told the audit team about the missing funds, my supervisor removed me from "
    "every project and gave me an unfair performance review. Reference BRW-7431."
)
REPLY = "Thank you for your report. Could you tell us the date of the performance review?"
ANSWER = "The review was dated 3 March. The e-mail that announced it is attached."


def download(page: Page, entry_title: str, file_name: str) -> bytes:
    """Press the button that downloads a file entry's original; return the bytes saved."""
    entry = (
        page.locator("ol.thread > li")
        .filter(has_text=file_name)
        .filter(has=page.get_by_role("heading", name=entry_title, exact=True))
    )
    expect(entry).to_have_count(1)
    with page.expect_download() as info:
        entry.get_by_role("link", name=re.compile(r"^Download the original")).click()
    saved = info.value
    assert saved.suggested_filename == file_name
    path = saved.path()
    assert path is not None
    return Path(path).read_bytes()


def test_report_reply_answer_across_source_and_officers(
    browser: Browser, servers: Servers, totp: TotpCodes, tmp_path: Path
) -> None:
    big = make_file(tmp_path, "performance-review.pdf", os.urandom(5 * 1024 * 1024))
    small = make_file(tmp_path, "notes.txt", b"Meeting notes, 12 February.\n")
    later = make_file(tmp_path, "announcement.eml", b"Subject: Your review\n\nSee attached.\n")

    # --- the source's first visit: codename, report with two files, receipt ----------
    source = source_context(browser)
    page = source.new_page()
    codename = get_codename(page, servers.source_url)
    fill_report(
        page,
        RETALIATION,
        MESSAGE,
        files=[big, small],
        fields={"What was done or threatened against you?": "Removed from projects."},
    )
    send_report(page)
    expect(page.get_by_text("Ethics and Conduct Office can read it")).to_be_visible()
    page.get_by_role("link", name="See your report").click()
    expect(page.get_by_role("heading", name="You sent a file")).to_have_count(2)
    assert source_status(page) == "Received"
    source.close()

    # --- the ECO officer reads, downloads, replies and acknowledges ----------------
    eco = browser.new_context(accept_downloads=True)
    officer = eco.new_page()
    officer_sign_in(officer, servers, servers.officers["ECO"], totp)
    designation = open_report_containing(officer, servers, "Reference BRW-7431")
    report_url = officer.url
    expect(officer.get_by_role("heading", level=1)).to_contain_text(designation)
    message = thread_entry(officer, "Message from the source")
    expect(message).to_contain_text(MESSAGE)
    expect(message).to_contain_text("Removed from projects.")
    for sent in (big, small):
        assert download(officer, "File from the source", sent.name) == sent.data, sent.name
    officer.get_by_label("Message", exact=True).fill(REPLY)
    officer.get_by_role("button", name="Send to the source").click()
    expect(thread_entry(officer, "Reply to the source", REPLY)).to_have_count(1)
    # The first reply acknowledged the report too ("Also mark the report acknowledged").
    expect(officer.locator(".case-badges")).to_contain_text("Acknowledged")

    # --- the source comes back: reply, status, answer with a file, delete the reply ---
    source = source_context(browser)
    page = source.new_page()
    source_login(page, servers.source_url, codename)
    assert REPLY in office_entries(page)
    assert source_status(page) == "Acknowledged"
    page.get_by_label("Your answer").fill(ANSWER)
    page.get_by_label("Add files (optional)").set_input_files(later.path)
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("Your message and 1 file are encrypted")
    reply = thread_entry(page, "Message from the office", REPLY)
    reply.get_by_role("button", name="Delete this message").click()
    expect(page.get_by_role("status")).to_contain_text("The message was deleted")
    assert REPLY not in office_entries(page)
    expect(page.get_by_text(REPLY)).to_have_count(0)
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("You are logged out")
    source.close()

    # --- the ECO officer sees the answer and its file --------------------------------
    officer.goto(report_url)
    expect(thread_entry(officer, "Message from the source", ANSWER)).to_have_count(1)
    assert download(officer, "File from the source", later.name) == later.data
    expect(thread_entry(officer, "Reply to the source", REPLY)).to_contain_text(
        "The source deleted this message"
    )
    eco.close()

    # --- the OIO officer never sees it -------------------------------------------------
    oio = browser.new_context()
    other = oio.new_page()
    officer_sign_in(other, servers, servers.officers["OIO"], totp)
    assert designation not in inbox_reports(other, servers)
    response = other.goto(report_url)
    assert response is not None and response.status == 404
    expect(other.get_by_text(MESSAGE)).to_have_count(0)
    oio.close()
