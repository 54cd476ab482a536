"""What a person does in each interface, as Playwright steps; axe, layout and focus checks."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, BrowserContext, Page, expect

from crypto import codenames
from tests.browser.conftest import Officer, Servers, TotpCodes

RETALIATION = "Retaliation for reporting"
SERIOUS = ("serious", "critical")

# Tor Browser for Android is about 390 CSS pixels wide on a common phone.
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


@dataclass
class SentFile:
    """A file a source attaches, and the bytes the office must get back."""

    path: Path
    data: bytes

    @property
    def name(self) -> str:
        return self.path.name


def make_file(directory: Path, name: str, data: bytes) -> SentFile:
    """Write a file to attach."""
    path = directory / name
    path.write_bytes(data)
    return SentFile(path, data)


def source_context(browser: Browser, **options: Any) -> BrowserContext:
    """A source's browser as Tor Browser at "Safest" has it: JavaScript off."""
    return browser.new_context(java_script_enabled=False, **options)


# --- source steps ---------------------------------------------------------------


def get_codename(page: Page, source_url: str) -> str:
    """From the landing page, get a codename; read it off the page; confirm it is written down."""
    page.goto(source_url + "/")
    page.get_by_role("link", name="Make a report").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your codename")
    codename = read_codename(page)
    page.get_by_label("I have written down my codename").check()
    page.get_by_role("button", name="Continue to the report").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Make a report")
    return codename


def read_codename(page: Page) -> str:
    """The codename on the codename page, as a person reads it: the words of the list."""
    words = [w.strip() for w in page.locator("ol.codename-words > li").all_inner_texts()]
    assert len(words) == codenames.WORD_COUNT, words
    codename = " ".join(words)
    assert page.locator("p.codename-line").inner_text().strip() == codename
    assert page.locator('input[name="codename"]').get_attribute("value") == codename
    return codename


def fill_report(
    page: Page,
    category: str,
    message: str,
    files: list[SentFile] | None = None,
    fields: dict[str, str] | None = None,
) -> None:
    """Fill in the report form by its labels (which checks the labels work), without sending."""
    page.get_by_label(category, exact=True).check()
    page.get_by_label("What happened?").fill(message)
    for label, value in (fields or {}).items():
        control = page.get_by_label(label, exact=True)
        # The name and contact fields sit in a closed disclosure: open it as a person would.
        closed = page.locator("details:not([open])", has=control)
        if closed.count():
            closed.locator("summary").click()
        control.fill(value)
    if files:
        page.get_by_label("Choose files").set_input_files([f.path for f in files])


def send_report(page: Page) -> None:
    """Press "Send the report" and wait for the receipt."""
    page.get_by_role("button", name="Send the report").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your report was received")


def source_login(page: Page, source_url: str, codename: str) -> None:
    """A returning source: the landing page, "I have a codename", the codename, the thread."""
    page.goto(source_url + "/")
    page.get_by_role("link", name="I have a codename").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Come back with your codename")
    page.get_by_label("Your codename").fill(codename)
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your report")


def source_status(page: Page) -> str:
    """The status shown on the source's thread page."""
    return page.locator(".status-line .badge").inner_text().strip()


def office_entries(page: Page) -> list[str]:
    """The texts of the office's messages on the source's thread page."""
    return [t.strip() for t in page.locator("li.entry-office .message-text").all_inner_texts()]


# --- officer steps --------------------------------------------------------------


def officer_sign_in(page: Page, servers: Servers, officer: Officer, totp: TotpCodes) -> None:
    """Sign in with username, passphrase and a TOTP code computed now; land in the inbox."""
    page.goto(servers.reviewer_url + "/login")
    page.get_by_label("Username").fill(officer.username)
    page.get_by_label("Passphrase").fill(officer.passphrase)
    page.get_by_label("Code from your authenticator app").fill(totp.code(officer))
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Inbox")


def inbox_reports(page: Page, servers: Servers) -> dict[str, str]:
    """The inbox's reports: designation → report page address."""
    page.goto(servers.reviewer_url + "/")
    links = page.locator("table.inbox-table th.designation a")
    found = {}
    for i in range(links.count()):
        link = links.nth(i)
        href = link.get_attribute("href")
        assert href is not None
        found[link.inner_text().strip()] = servers.reviewer_url + href
    return found


def open_report_containing(page: Page, servers: Servers, text: str) -> str:
    """Open, from the inbox, the report whose thread shows `text`; return its designation.

    Designations are random and reports are dated to the day, so an officer
    (and this test) recognises a report by what it says.
    """
    for designation, url in inbox_reports(page, servers).items():
        page.goto(url)
        if page.get_by_text(text, exact=False).count():
            return designation
    raise AssertionError(f"no report in the inbox shows {text!r}")


def thread_entry(page: Page, title: str, containing: str | None = None) -> Any:
    """A thread entry (an <li>) by its heading, optionally also by a text it contains."""
    entries = page.locator("ol.thread > li").filter(
        has=page.get_by_role("heading", name=title, exact=True)
    )
    if containing is not None:
        entries = entries.filter(has_text=containing)
    return entries


# --- axe ------------------------------------------------------------------------


def run_axe(page: Page, axe_source: str) -> list[dict[str, Any]]:
    """Inject axe-core into the page and return every violation it finds."""
    page.evaluate(axe_source)
    violations: list[dict[str, Any]] = page.evaluate(
        """async () => {
            const results = await axe.run(document, {resultTypes: ["violations"]});
            return results.violations.map(v => ({
                id: v.id,
                impact: v.impact,
                help: v.help,
                nodes: v.nodes.map(n => ({target: n.target.join(" "), summary: n.failureSummary})),
            }));
        }"""
    )
    return violations


class AxeLog:
    """Collects axe results page by page; fails at the end on serious or critical ones."""

    def __init__(self, axe_source: str, report: Path) -> None:
        self.axe_source = axe_source
        self.report = report
        self.pages: dict[str, list[dict[str, Any]]] = {}

    def check(self, page: Page, name: str) -> None:
        self.pages[name] = run_axe(page, self.axe_source)

    def serious(self) -> list[str]:
        problems = []
        for name, violations in self.pages.items():
            for v in violations:
                if v["impact"] in SERIOUS:
                    targets = "; ".join(n["target"] for n in v["nodes"])
                    problems.append(f"{name}: {v['id']} ({v['impact']}): {v['help']} [{targets}]")
        return problems

    def finish(self) -> None:
        self.report.write_text(json.dumps(self.pages, indent=2))
        problems = self.serious()
        assert not problems, "axe found serious or critical violations:\n" + "\n".join(problems)


# --- layout ---------------------------------------------------------------------

OVERFLOW_JS = """() => {
    const root = document.documentElement;
    const width = root.clientWidth;
    const wide = [];
    for (const el of document.body.querySelectorAll("*")) {
        const box = el.getBoundingClientRect();
        if (box.width > 0 && (box.right > width + 0.5 || box.left < -0.5)) {
            let hidden = false;
            for (let p = el.parentElement; p; p = p.parentElement) {
                const o = getComputedStyle(p).overflowX;
                if (o === "hidden" || o === "auto" || o === "scroll" || o === "clip") {
                    hidden = true;
                    break;
                }
            }
            const style = getComputedStyle(el);
            const offscreen = style.position === "absolute" && box.right <= 0;
            if (!hidden && !offscreen) {
                const id = el.id ? "#" + el.id : "";
                const cls = el.classList.length ? "." + [...el.classList].join(".") : "";
                wide.push(el.tagName.toLowerCase() + id + cls + " right=" + Math.round(box.right));
            }
        }
    }
    return {scrollWidth: root.scrollWidth, clientWidth: width, innerWidth: window.innerWidth,
            wide: wide.slice(0, 10)};
}"""


def check_no_horizontal_overflow(page: Page, name: str) -> None:
    """Nothing is wider than the viewport: no sideways scrolling, no element sticking out."""
    found = page.evaluate(OVERFLOW_JS)
    assert found["scrollWidth"] <= found["clientWidth"], (
        f"{name}: the page scrolls sideways ({found['scrollWidth']} px wide in a "
        f"{found['clientWidth']} px viewport); too wide: {found['wide']}"
    )
    assert not found["wide"], f"{name}: elements stick out of the viewport: {found['wide']}"


def screenshot_name(page_name: str, width: int) -> str:
    return f"source-{page_name}-{width}.png"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# --- every source page, in the order a source meets them ------------------------

SOURCE_PAGES = (
    "landing",
    "codename",
    "report",
    "report-retaliation",
    "report-errors",
    "receipt",
    "thread",
    "thread-answered",
    "logged-out",
    "session-ended",
    "login",
    "login-error",
    "not-found",
    "codename-fr",
)


def walk_source_pages(
    page: Page, source_url: str, attachment: SentFile, visit: Callable[[Page, str], None]
) -> None:
    """Walk through every page of the source interface, calling `visit` on each.

    The report form's error page is reached by switching off the browser's own
    form checks (`novalidate`), as an older browser would, so that the server's
    messages show: no category, no message, and the file that was not kept.
    """
    seen = []

    def at(name: str) -> None:
        seen.append(name)
        visit(page, name)

    page.goto(source_url + "/")
    at("landing")
    page.get_by_role("link", name="Make a report").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your codename")
    at("codename")
    page.get_by_label("I have written down my codename").check()
    page.get_by_role("button", name="Continue to the report").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Make a report")
    at("report")
    # The same form for a source who chose retaliation and opened the identity part.
    page.get_by_label(RETALIATION, exact=True).check()
    page.locator("details.identity summary").click()
    retaliation_question = page.get_by_label("What was done or threatened against you?")
    expect(retaliation_question).to_be_visible()
    at("report-retaliation")
    page.goto(source_url + "/report")
    expect(retaliation_question).to_be_hidden()

    page.locator("form.report-form").evaluate("form => { form.noValidate = true; }")
    page.get_by_label("When did it happen?").fill("Last spring")
    page.get_by_label("Choose files").set_input_files(attachment.path)
    page.get_by_role("button", name="Send the report").click()
    summary = page.locator(".error-summary")
    expect(summary).to_be_visible()
    expect(summary.locator("li")).to_have_count(3)  # category, message, files not kept
    expect(page.get_by_label("When did it happen?")).to_have_value("Last spring")
    at("report-errors")

    fill_report(page, "I am not sure", "My manager asked me to sign for goods never delivered.")
    send_report(page)
    at("receipt")
    page.get_by_role("link", name="See your report").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your report")
    expect(page.get_by_role("heading", name="Automatic acknowledgement")).to_be_visible()
    at("thread")
    page.get_by_label("Your answer").fill("I forgot to say: it happened twice.")
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("Sent.")
    at("thread-answered")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("You are logged out")
    at("logged-out")
    response = page.goto(source_url + "/thread")
    assert response is not None and response.status == 401
    at("session-ended")

    page.goto(source_url + "/")
    page.get_by_role("link", name="I have a codename").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Come back with your codename")
    at("login")
    page.get_by_label("Your codename").fill("this is not my codename")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("alert")).to_be_visible()
    at("login-error")
    response = page.goto(source_url + "/no-such-page")
    assert response is not None and response.status == 404
    at("not-found")
    page.goto(source_url + "/language/fr?next=generate")
    expect(page.locator("ol.codename-words")).to_have_attribute("lang", "fr")
    at("codename-fr")
    assert tuple(seen) == SOURCE_PAGES, seen
