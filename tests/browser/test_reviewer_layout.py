"""Every page of the officers' reviewer app at desktop width and at 390 px (a phone).

The walk, in a browser with JavaScript off, reaches each page as a person
would. A source sends a report with a file and identity details through the
real source interface. The OIO intake officer meets the sign-in page (and
its error), the inbox (and a filter that matches nothing), the report
(unread, after a reply, with the closing fields open, with the identity
revealed), the export for an investigator (and a key refused), the delete
confirmation, the account page, the office's statistics and the 404 page,
and signs out. An administrator, made with `dropbox officer add --admin` as
an operator would, opens the officers page, creates an account (its
enrolment code shown once), reads the audit log and the statistics of all
offices. The new officer enrols with that
code (the enrolment page and its error, the authenticator set-up and its
error), signs in to an empty inbox and an account with no office yet.

Each page is saved as tests/artifacts/reviewer-<page>-<width>.png (full
page) and checked, not eyeballed: nothing may be wider than the viewport; a
table may scroll sideways in its own wrapper on a phone, never on a desktop;
and a username, action or report id in a table never breaks across lines.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect

from tests.browser.conftest import ROOT, Officer, Servers, TotpCodes
from tests.browser.helpers import (
    DESKTOP,
    PHONE,
    check_no_horizontal_overflow,
    fill_report,
    get_codename,
    make_file,
    officer_sign_in,
    open_report_containing,
    send_report,
    source_context,
    thread_entry,
)
from tests.conftest import run_cli

# Every page, in the order the walk meets them.
REVIEWER_PAGES = (
    "login",
    "login-error",
    "inbox",
    "inbox-no-match",
    "report",
    "report-replied",
    "report-closing",
    "report-identity",
    "export",
    "export-error",
    "confirm-delete",
    "account",
    "statistics",
    "not-found",
    "signed-out",
    "officers",
    "officers-invited",
    "audit",
    "statistics-all",
    "enrol",
    "enrol-error",
    "totp-setup",
    "totp-setup-error",
    "enrolled",
    "inbox-empty",
    "account-no-office",
)

CATEGORY = "Fraud, corruption or misuse of resources"  # the OIO's
# Long words and a pasted address, as sources write them: they must wrap on a phone.
MESSAGE = (
    "Layout check: the depot's fuel ledger does not match the pumps. The entries are on "
    "https://intranet.example.org/depot/fuel-ledger/2024/march?entry=0012345&view=full "
    "and the supplier is Transportunternehmensgesellschaftsverwaltung GmbH."
)
FILE_NAME = "minutes-of-the-depot-budget-meeting-2024-03-14-final-signed-version.pdf"
IDENTITY = {
    "identity_name": "Alexandra Konstantinopoulou-Vanderbilt",
    "identity_contact": "alexandra.konstantinopoulou-vanderbilt@private-mail.example",
}
REPLY = "Thank you. We have your report and will look at the ledger."


def reviewer_screenshot_name(page_name: str, width: int) -> str:
    """tests/artifacts/ name of a reviewer page's screenshot (the source's are source-*)."""
    return f"reviewer-{page_name}-{width}.png"


# --- layout checks beyond check_no_horizontal_overflow --------------------------------------

TABLES_JS = """() => [...document.querySelectorAll(".table-wrap")].map(wrap => ({
    label: wrap.getAttribute("aria-labelledby") || "",
    scrollWidth: wrap.scrollWidth,
    clientWidth: wrap.clientWidth,
    broken: [...wrap.querySelectorAll("code")]
        .filter(code => code.getClientRects().length > 1)
        .map(code => code.textContent.trim()),
}))"""


def table_problems(page: Page, name: str, desktop: bool) -> list[str]:
    """What is wrong with the page's tables.

    On a phone a wide table scrolls sideways in its own wrapper, but a username, an
    action or a report id in it must stay on one line: it is read and typed whole. At
    desktop width no table needs that scrolling at all.
    """
    problems = []
    for table in page.evaluate(TABLES_JS):
        if table["broken"]:
            problems.append(f"{name}: {table['label']} breaks {table['broken'][:5]} across lines")
        if desktop and table["scrollWidth"] > table["clientWidth"] + 1:
            problems.append(
                f"{name}: {table['label']} is {table['scrollWidth']} px wide in a "
                f"{table['clientWidth']} px wrapper: it scrolls sideways on a desktop"
            )
    return problems


# --- steps this walk needs beyond tests/browser/helpers.py --------------------------------


def add_administrator(servers: Servers, username: str) -> Officer:
    """An administrator made with `dropbox officer add --admin`, as an operator would."""
    passphrase = f"{username} passphrase for the layout walk"
    result = run_cli(
        "--config",
        str(servers.workdir / "config.toml"),
        "officer",
        "add",
        username,
        "--admin",
        "--name",
        "Layout Check Administrator",
        input=f"{passphrase}\n{passphrase}\n",
        cwd=servers.workdir,
        env={"PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    secret = re.search(r"[?&]secret=([A-Z2-7]+)", result.stdout)
    assert secret is not None, result.stdout
    return Officer(username, passphrase, "", secret.group(1))


def fill_identity(page: Page, fields: dict[str, str]) -> None:
    """Give a name and contact details, opening their section first if it is folded away.

    By the fields' names: their wording on the source side is not what this test checks.
    """
    for name, value in fields.items():
        box = page.locator(f'[name="{name}"]')
        if not box.is_visible():
            page.locator("details", has=box).locator("summary").first.click()
        box.fill(value)


def wrong_code(secret: str) -> str:
    """A six-digit code that the authenticator app for `secret` does not show now."""
    totp = pyotp.TOTP(secret)
    now = time.time()
    valid = {totp.at(now, counter_offset=offset) for offset in (-1, 0, 1)}
    return next(code for code in ("000000", "111111", "222222", "333333") if code not in valid)


def shown_totp_secret(page: Page) -> str:
    """The key the set-up page shows for typing by hand, as a person copies it."""
    return "".join(page.locator("p.secret").inner_text().split())


def walk_reviewer_pages(
    browser: Browser,
    servers: Servers,
    totp: TotpCodes,
    tmp_path: Path,
    viewport: dict[str, int],
    visit: Callable[[Page, str], None],
) -> None:
    """Walk through every page of the reviewer app, calling `visit` on each (see the docstring)."""
    width = viewport["width"]
    size = ViewportSize(width=width, height=viewport["height"])
    seen: list[str] = []

    def at(page: Page, name: str) -> None:
        seen.append(name)
        visit(page, name)

    # A report with a file and identity details, through the real source interface.
    source = source_context(browser)
    page = source.new_page()
    get_codename(page, servers.source_url)
    fill_report(
        page,
        CATEGORY,
        f"{MESSAGE} ({width} px)",
        files=[make_file(tmp_path, FILE_NAME, b"%PDF-1.4 the minutes")],
    )
    fill_identity(page, IDENTITY)
    send_report(page)
    source.close()

    # --- the intake officer ----------------------------------------------------------------
    context = browser.new_context(java_script_enabled=False, viewport=size)
    page = context.new_page()
    page.goto(servers.reviewer_url + "/login")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    at(page, "login")
    # An unknown username: a real officer's failed attempts would count towards a lock.
    page.get_by_label("Username").fill("no-such-officer")
    page.get_by_label("Passphrase").fill("not the passphrase")
    page.get_by_label("Code from your authenticator app").fill("000000")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    at(page, "login-error")

    officer_sign_in(page, servers, servers.officers["OIO"], totp)
    row = page.locator("table.inbox-table tbody tr").filter(has_text=CATEGORY)
    expect(row.first).to_be_visible()
    at(page, "inbox")
    page.get_by_label("Status").select_option(label="Closed")
    page.get_by_label("Urgent").check()
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_text("No report matches these filters.")).to_be_visible()
    at(page, "inbox-no-match")

    open_report_containing(page, servers, f"({width} px)")
    expect(thread_entry(page, "Message from the source", f"({width} px)")).to_have_count(1)
    expect(page.locator(".badge-new").first).to_be_visible()
    at(page, "report")
    page.get_by_label("Message", exact=True).fill(REPLY)
    page.get_by_role("button", name="Send to the source").click()
    expect(page.get_by_role("status")).to_contain_text("Your message was sent to the source.")
    at(page, "report-replied")
    page.get_by_text("Choose the outcome and close").click()
    expect(page.get_by_label("Reason for closing")).to_be_visible()
    at(page, "report-closing")
    page.get_by_label("Why do you need to see them?").fill(
        "To call the source back about the ledger."
    )
    page.get_by_role("button", name="Reveal identity details").click()
    expect(page.get_by_role("heading", name="Revealed identity details")).to_be_visible()
    expect(page.locator(".identity-box")).to_contain_text(IDENTITY["identity_name"])
    at(page, "report-identity")
    page.get_by_role("link", name="Export…").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("for an investigator")
    at(page, "export")
    page.get_by_label("The investigator's public key").fill("not an OpenPGP key at all")
    page.get_by_role("button", name="Check the key").click()
    expect(page.get_by_role("alert")).to_contain_text("This is not an OpenPGP public key.")
    at(page, "export-error")
    page.get_by_role("link", name="Back to the report").click()
    page.get_by_role("link", name="Delete this report…").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Delete report")
    at(page, "confirm-delete")

    page.get_by_role("link", name="Account").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your account")
    at(page, "account")
    page.get_by_role("link", name="Statistics").click()
    expect(page.get_by_role("heading", name="Reports received, by category")).to_be_visible()
    expect(page.locator("svg.chart-svg").first).to_be_visible()
    at(page, "statistics")
    response = page.goto(servers.reviewer_url + "/no-such-page")
    assert response is not None and response.status == 404
    at(page, "not-found")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    at(page, "signed-out")
    context.close()

    # --- an administrator --------------------------------------------------------------------
    admin = add_administrator(servers, f"layout-admin-{width}")
    context = browser.new_context(java_script_enabled=False, viewport=size)
    page = context.new_page()
    officer_sign_in(page, servers, admin, totp)
    page.get_by_role("link", name="Officers").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Officers")
    at(page, "officers")
    newcomer = f"layout-new-{width}"
    page.get_by_label("Username").fill(newcomer)
    page.get_by_label("Full name").fill("Maximiliane Oyelaran-Featherstonehaugh")
    page.locator("#new-code").fill(totp.code(admin))
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name=f"Enrolment code for {newcomer}")).to_be_visible()
    enrolment_code = page.locator(".enrolment-code code").inner_text().strip()
    at(page, "officers-invited")
    page.get_by_role("link", name="Audit log").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Audit log")
    expect(page.get_by_text("The audit log is intact.")).to_be_visible()
    at(page, "audit")
    page.get_by_role("link", name="Statistics").click()
    page.get_by_label("Office", exact=True).select_option(label="All offices")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("All offices")
    at(page, "statistics-all")
    context.close()

    # --- the new officer enrols with that code ------------------------------------------------
    context = browser.new_context(java_script_enabled=False, viewport=size)
    page = context.new_page()
    page.goto(servers.reviewer_url + "/login")
    page.get_by_role("link", name="I have an enrolment code").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Enrol as an officer")
    at(page, "enrol")
    passphrase = f"{newcomer} chose this passphrase"
    page.get_by_label("Username").fill(newcomer)
    page.get_by_label("Enrolment code").fill(enrolment_code)
    page.get_by_label("Passphrase", exact=True).fill(passphrase)
    page.get_by_label("Type the passphrase again").fill(passphrase + " but typed differently")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("alert")).to_have_text(re.compile("The two passphrases differ"))
    at(page, "enrol-error")
    page.get_by_label("Enrolment code").fill(enrolment_code)
    page.get_by_label("Passphrase", exact=True).fill(passphrase)
    page.get_by_label("Type the passphrase again").fill(passphrase)
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Set up your authenticator app")
    page.get_by_text("Show the setup link").click()
    expect(page.locator(".setup-uri")).to_be_visible()
    at(page, "totp-setup")
    new_officer = Officer(newcomer, passphrase, "", shown_totp_secret(page))
    page.get_by_label("The code your app shows now").fill(wrong_code(new_officer.totp_secret))
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("alert")).to_be_visible()
    at(page, "totp-setup-error")
    page.get_by_label("The code your app shows now").fill(totp.code(new_officer))
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("status")).to_contain_text("You are enrolled.")
    at(page, "enrolled")
    officer_sign_in(page, servers, new_officer, totp)
    expect(page.get_by_text("There are no reports for your offices yet.")).to_be_visible()
    at(page, "inbox-empty")
    page.get_by_role("link", name="Account").click()
    expect(page.get_by_text("None yet: ask your administrator")).to_be_visible()
    at(page, "account-no-office")
    context.close()

    assert tuple(seen) == REVIEWER_PAGES, seen


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280px", "390px"])
def test_reviewer_pages_fit_the_screen(
    browser: Browser,
    servers: Servers,
    totp: TotpCodes,
    artifacts: Path,
    tmp_path: Path,
    viewport: dict[str, int],
) -> None:
    width = viewport["width"]
    for name in REVIEWER_PAGES:
        (artifacts / reviewer_screenshot_name(name, width)).unlink(missing_ok=True)
    problems: list[str] = []

    def visit(page: Page, name: str) -> None:
        page.screenshot(path=artifacts / reviewer_screenshot_name(name, width), full_page=True)
        meta = page.locator('meta[name="viewport"]').get_attribute("content") or ""
        if "width=device-width" not in meta:
            problems.append(f"{name}: no viewport meta tag, phones would show it zoomed out")
        try:
            check_no_horizontal_overflow(page, name)
        except AssertionError as exc:
            problems.append(str(exc))
        problems.extend(table_problems(page, name, desktop=width >= DESKTOP["width"]))

    walk_reviewer_pages(browser, servers, totp, tmp_path, viewport, visit)

    missing = [
        n for n in REVIEWER_PAGES if not (artifacts / reviewer_screenshot_name(n, width)).exists()
    ]
    assert not missing, f"no screenshot of {missing}"
    assert not problems, "\n".join(problems)
