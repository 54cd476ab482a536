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

A second walk, with axe-core run on each page as well, covers the pages of
issue 15: the officer's e-mail notification settings (as first seen, with a
refused key, and with an OpenPGP key made by the `gpg` program registered),
a report's file entry with its original and cleaned-copy downloads, the
export's form, its error and its key check (an investigator's key made by
`gpg`), the administrators' E-mail page with a mail that failed (`dropbox
notify --once` run against a mail server that is not there), and the
offline app (`dropbox bundle export`, then `dropbox reviewer --bundle`): its
unlock page and error, the reports in the bundle, and a report.

Each page is saved as tests/artifacts/reviewer-<page>-<width>.png (full
page) and checked, not eyeballed: nothing may be wider than the viewport; a
table may scroll sideways in its own wrapper on a phone, never on a desktop;
and a username, action or report id in a table never breaks across lines.
"""

from __future__ import annotations

import contextlib
import re
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect

from tests.browser.conftest import ROOT, Officer, Servers, TotpCodes
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
    send_report,
    source_context,
    thread_entry,
)
from tests.conftest import free_port, run_cli
from tests.served import ReviewerProcess

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


# --- the pages of e-mail notifications, the export's key check, and the offline app ------------

# In the order the second walk meets them.
MORE_PAGES = (
    "notifications",
    "notifications-error",
    "notifications-key",
    "report-file",
    "export-form",
    "export-form-error",
    "export-key",
    "notification-failures",
    "offline-unlock",
    "offline-unlock-error",
    "offline-inbox",
    "offline-report",
)
# A long name and address on the keys, as people have them: they must wrap on a phone.
OFFICER_UID = (
    "Alexandra Konstantinopoulou-Vanderbilt <alexandra.konstantinopoulou@oversight.example.org>"
)
INVESTIGATOR_UID = (
    "Investigations Unit of the Inspectorate <investigations.unit@inspectorate.example.org>"
)
PICTURE = "photograph-of-the-depot-fuel-ledger-page-12-taken-on-2024-03-14.png"


def _gpg(home: Path, *args: str) -> str:
    done = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback",
         "--passphrase", "", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def public_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Armoured OpenPGP public keys made by the gpg program, in a home of the test's own."""
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    keys = {}
    try:
        for name, uid in (("officer", OFFICER_UID), ("investigator", INVESTIGATOR_UID)):
            _gpg(home, "--quick-gen-key", uid, "ed25519", "cert,sign", "2y")
            listing = _gpg(home, "--with-colons", "--list-keys", uid)
            fingerprint = next(
                line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr")
            )
            _gpg(home, "--quick-add-key", fingerprint, "cv25519", "encr", "2y")
            keys[name] = _gpg(home, "--armor", "--export", fingerprint)
        yield keys
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)


def png(width: int, height: int) -> bytes:
    """A small real PNG image (mat2 cleans it), with a text chunk of metadata."""
    rows = b"".join(b"\x00" + bytes([200, 120, 40]) * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"tEXt", b"Author\x00Depot camera 3")
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def fail_the_queued_mails(servers: Servers) -> None:
    """Run `dropbox notify --once` against a mail server that is not there, as a timer would."""
    config = servers.workdir / "config.toml"
    failing = servers.workdir / "config-mail-down.toml"
    failing.write_text(
        config.read_text()
        + f'\n[mail]\nhost = "127.0.0.1"\nport = {free_port()}\nsecurity = "none"\n'
        'from_address = "dropbox@example.org"\n'
    )
    result = run_cli(
        "--config",
        str(failing),
        "notify",
        "--once",
        cwd=servers.workdir,
        env={"PYTHONPATH": str(ROOT)},
    )
    # 1 when a mail failed now; 0 when the officer's mail already waits for its retry
    # (from the walk at the other width), with this report merged into it.
    assert result.returncode in (0, 1), result.stdout + result.stderr
    assert result.stdout.startswith("Notifications: sent 0 mails"), result.stdout


@contextlib.contextmanager
def offline_app(servers: Servers, width: int) -> Iterator[str]:
    """`dropbox bundle export` for the OIO, then `dropbox reviewer --bundle` on it; its address."""
    bundle = servers.workdir / f"OIO-bundle-{width}.zip"
    bundle.unlink(missing_ok=True)
    exported = run_cli(
        "--config", str(servers.workdir / "config.toml"),
        "bundle", "export", "--office", "OIO", "--all", "--out", str(bundle),
        cwd=servers.workdir, env={"PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    port = free_port()
    log = servers.workdir / f"offline-{width}.log"
    command = [sys.executable, "-m", "launcher", "reviewer", "--bundle", str(bundle)]
    command += ["--out", str(servers.workdir / f"OIO-replies-{width}.zip"), "--port", str(port)]
    command += ["--pin", f"OIO={servers.pins['OIO']}"]
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    app = ReviewerProcess(process, port, log)
    try:
        app.wait_until_up()
        yield app.url
    finally:
        text = app.stop()
        assert "Traceback" not in text, text


def walk_more_reviewer_pages(
    browser: Browser,
    servers: Servers,
    totp: TotpCodes,
    tmp_path: Path,
    viewport: dict[str, int],
    keys: dict[str, str],
    visit: Callable[[Page, str], None],
) -> None:
    """The e-mail pages, a file's two downloads, the export's key check, the offline app."""
    width = viewport["width"]
    size = ViewportSize(width=width, height=viewport["height"])
    officer = servers.officers["OIO"]
    seen: list[str] = []

    def at(page: Page, name: str) -> None:
        seen.append(name)
        visit(page, name)

    # JavaScript on and the CSP bypassed, only so that axe can run: the pages have no script.
    context = browser.new_context(bypass_csp=True, viewport=size)
    page = context.new_page()
    officer_sign_in(page, servers, officer, totp)
    page.get_by_role("link", name="Account").click()
    page.get_by_role("link", name="Choose your e-mail notifications").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("E-mail notifications")
    at(page, "notifications")
    mailbox = "alexandra.konstantinopoulou-vanderbilt@oversight-authority.example.org"
    page.get_by_label("E-mail address").fill(mailbox)
    page.get_by_label("An e-mail as soon as something arrives").check()
    page.get_by_label("A new OpenPGP public key (optional)").fill("not an OpenPGP key at all")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.get_by_label("E-mail address")).to_have_value(mailbox)
    at(page, "notifications-error")
    page.get_by_label("A new OpenPGP public key (optional)").fill(keys["officer"])
    page.get_by_role("button", name="Save").click()
    saved = page.get_by_role("status").filter(has_text="Your notification settings were saved.")
    expect(saved).to_be_visible()
    expect(page.locator("#openpgp-fingerprint")).to_be_visible()
    expect(page.get_by_text("Konstantinopoulou-Vanderbilt")).to_be_visible()
    at(page, "notifications-key")

    # A report with a picture through the real source interface: it queues a mail to the officer.
    source = source_context(browser)
    source_page = source.new_page()
    get_codename(source_page, servers.source_url)
    fill_report(
        source_page,
        CATEGORY,
        f"Second layout walk: a picture of the ledger ({width} px).",
        files=[make_file(tmp_path, PICTURE, png(40, 30))],
    )
    send_report(source_page)
    source.close()

    open_report_containing(page, servers, f"a picture of the ledger ({width} px)")
    entry = thread_entry(page, "File from the source", PICTURE)
    expect(entry.get_by_role("link", name="Download the original")).to_be_visible()
    expect(entry.get_by_role("link", name="Download a cleaned copy")).to_be_visible()
    entry.scroll_into_view_if_needed()
    at(page, "report-file")
    page.get_by_role("link", name="Export…").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("for an investigator")
    at(page, "export-form")
    page.get_by_label("The investigator's public key").fill("not an OpenPGP key at all")
    page.get_by_role("button", name="Check the key").click()
    expect(page.get_by_role("alert")).to_contain_text("This is not an OpenPGP public key.")
    at(page, "export-form-error")
    page.get_by_label("The investigator's public key").fill(keys["investigator"])
    page.get_by_role("button", name="Check the key").click()
    expect(page.get_by_role("heading", name="Check the investigator's key")).to_be_visible()
    expect(page.locator("#key-fingerprint")).to_be_visible()
    at(page, "export-key")
    context.close()

    # The mail cannot go out: an administrator sees why on the E-mail page.
    fail_the_queued_mails(servers)
    admin = add_administrator(servers, f"mail-admin-{width}")
    context = browser.new_context(bypass_csp=True, viewport=size)
    page = context.new_page()
    officer_sign_in(page, servers, admin, totp)
    page.get_by_role("link", name="E-mail").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Notification e-mails")
    failed = page.locator("table tbody tr").filter(has_text=officer.username)
    expect(failed.first).to_contain_text("refused the connection")
    at(page, "notification-failures")
    context.close()

    # The offline app over the OIO's export bundle.
    recovery_file, recovery_passphrase = servers.recovery["OIO"]
    with offline_app(servers, width) as url:
        context = browser.new_context(bypass_csp=True, viewport=size)
        page = context.new_page()
        page.goto(url + "/")
        expect(page.get_by_role("heading", level=1)).to_have_text("Unlock the bundle")
        at(page, "offline-unlock")
        page.get_by_label("The office's recovery file").set_input_files(recovery_file)
        page.get_by_label("Its passphrase").fill("not the recovery passphrase")
        page.get_by_role("button", name="Unlock").click()
        expect(page.get_by_role("alert")).to_be_visible()
        at(page, "offline-unlock-error")
        page.get_by_label("The office's recovery file").set_input_files(recovery_file)
        page.get_by_label("Its passphrase").fill(recovery_passphrase)
        page.get_by_role("button", name="Unlock").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Reports in the bundle")
        at(page, "offline-inbox")
        links = page.locator("table.inbox-table th.designation a")
        for i in range(links.count()):
            links.nth(i).click()
            if page.get_by_text(f"a picture of the ledger ({width} px)").count():
                break
            page.go_back()
        expect(thread_entry(page, "File from the source", PICTURE)).to_have_count(1)
        at(page, "offline-report")
        context.close()

    assert tuple(seen) == MORE_PAGES, seen


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280px", "390px"])
def test_more_reviewer_pages_fit_the_screen_and_pass_axe(
    browser: Browser,
    servers: Servers,
    totp: TotpCodes,
    artifacts: Path,
    axe_source: str,
    tmp_path: Path,
    viewport: dict[str, int],
    public_keys: dict[str, str],
) -> None:
    width = viewport["width"]
    for name in MORE_PAGES:
        (artifacts / reviewer_screenshot_name(name, width)).unlink(missing_ok=True)
    problems: list[str] = []
    log = AxeLog(axe_source, artifacts / f"axe-reviewer-more-{width}.json")

    def visit(page: Page, name: str) -> None:
        page.screenshot(path=artifacts / reviewer_screenshot_name(name, width), full_page=True)
        try:
            check_no_horizontal_overflow(page, name)
        except AssertionError as exc:
            problems.append(str(exc))
        problems.extend(table_problems(page, name, desktop=width >= DESKTOP["width"]))
        log.check(page, name)

    walk_more_reviewer_pages(browser, servers, totp, tmp_path, viewport, public_keys, visit)

    assert not problems, "\n".join(problems)
    log.finish()
