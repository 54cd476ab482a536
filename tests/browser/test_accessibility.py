"""axe-core on every source page and the main reviewer pages: no serious or critical violation.

axe is JavaScript, and the real pages forbid scripts (CSP) and sources run
with JavaScript off, so only these checking contexts enable JavaScript and
bypass the CSP; the journeys in the other tests run with the real policy.
Every violation, whatever its impact, is written to tests/artifacts/ as JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from playwright.sync_api import Browser, expect

from tests.browser.conftest import Servers, TotpCodes
from tests.browser.helpers import (
    DESKTOP,
    RETALIATION,
    AxeLog,
    fill_report,
    get_codename,
    make_file,
    officer_sign_in,
    open_report_containing,
    run_axe,
    send_report,
    walk_source_pages,
)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_source_page_passes_axe(
    browser: Browser,
    servers: Servers,
    axe_source: str,
    artifacts: Path,
    tmp_path: Path,
    scheme: Literal["light", "dark"],
) -> None:
    context = browser.new_context(bypass_csp=True, viewport=DESKTOP, color_scheme=scheme)
    page = context.new_page()
    log = AxeLog(axe_source, artifacts / f"axe-source-{scheme}.json")
    attachment = make_file(tmp_path, "photo.jpg", b"\xff\xd8\xff\xe0 not really a photo")
    walk_source_pages(page, servers.source_url, attachment, lambda p, name: log.check(p, name))
    context.close()
    log.finish()


def test_main_reviewer_pages_pass_axe(
    browser: Browser,
    servers: Servers,
    totp: TotpCodes,
    axe_source: str,
    artifacts: Path,
    tmp_path: Path,
) -> None:
    # A retaliation report with a file and identity details, so the report page
    # shows every kind of entry, and an urgent flag.
    source = browser.new_context(java_script_enabled=False)
    page = source.new_page()
    get_codename(page, servers.source_url)
    fill_report(
        page,
        RETALIATION,
        "Axe check: I was moved to a desk job after I spoke to the auditors.",
        files=[make_file(tmp_path, "letter.pdf", b"%PDF-1.4 a letter")],
        fields={"Your name": "A. Person", "How the office can contact you": "a.person@example.org"},
    )
    page.get_by_label("My safety is at immediate risk").check()
    send_report(page)
    source.close()

    context = browser.new_context(bypass_csp=True, viewport=DESKTOP)
    page = context.new_page()
    log = AxeLog(axe_source, artifacts / "axe-reviewer.json")

    def check(name: str) -> None:
        log.check(page, name)
        page.screenshot(path=artifacts / f"reviewer-{name}-1280.png", full_page=True)

    page.goto(servers.reviewer_url + "/login")
    check("login")
    officer = servers.officers["ECO"]
    page.get_by_label("Username").fill(officer.username)
    page.get_by_label("Passphrase").fill("not the passphrase")
    page.get_by_label("Code from your authenticator app").fill("000000")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    check("login-error")
    officer_sign_in(page, servers, officer, totp)
    check("inbox")
    open_report_containing(page, servers, "Axe check: I was moved")
    check("report")
    page.get_by_label("Message", exact=True).fill("Thank you. We have your report.")
    page.get_by_role("button", name="Send to the source").click()
    expect(page.get_by_role("status")).to_be_visible()
    check("report-replied")
    page.get_by_role("link", name="Account").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your account")
    check("account")
    page.get_by_role("link", name="Statistics").click()
    expect(page.locator("svg.chart-svg").first).to_be_visible()
    check("statistics")
    context.close()
    log.finish()


def test_the_axe_check_catches_what_it_should(browser: Browser, axe_source: str) -> None:
    """The harness itself: a page with known faults gives serious or critical violations."""
    context = browser.new_context(bypass_csp=True)
    page = context.new_page()
    page.set_content(
        '<!doctype html><html lang="en"><head><title>t</title></head><body><main>'
        '<img src="data:,"><input type="text" name="q">'
        '<p style="color:#777;background:#888">hard to read</p></main></body></html>'
    )
    found = {v["id"]: v["impact"] for v in run_axe(page, axe_source)}
    context.close()
    assert found.get("image-alt") == "critical", found
    assert found.get("label") == "critical", found
    assert found.get("color-contrast") == "serious", found
