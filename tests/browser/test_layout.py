"""Every source page at desktop width and at 390 px (Tor Browser for Android).

Each page is saved as tests/artifacts/source-<page>-<width>.png (full page),
and checked, not eyeballed: nothing may be wider than the viewport. Each
page's height is measured and kept in tests/artifacts/source-heights-<width>.json;
on a phone the report form, as most sources see it, must fit in four screens
(issue 13, point 4). The
browser has JavaScript off, as Tor Browser at "Safest"; Playwright's own
measurements run outside the page's scripts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.browser.conftest import Servers
from tests.browser.helpers import (
    DESKTOP,
    PHONE,
    SOURCE_PAGES,
    check_no_horizontal_overflow,
    make_file,
    screenshot_name,
    source_context,
    walk_source_pages,
)

# Issue 13, point 4: the report form as most sources see it, in phone screens.
MAX_FORM_SCREENS = 4


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280px", "390px"])
def test_source_pages_fit_the_screen(
    browser: Browser,
    servers: Servers,
    artifacts: Path,
    tmp_path: Path,
    viewport: dict[str, int],
) -> None:
    width = viewport["width"]
    context = source_context(browser, viewport=viewport)
    page = context.new_page()
    problems: list[str] = []
    heights: dict[str, float] = {}

    def visit(page: Page, name: str) -> None:
        box = page.locator("html").bounding_box()
        assert box is not None
        heights[name] = box["height"]
        path = artifacts / screenshot_name(name, width)
        path.unlink(missing_ok=True)
        page.screenshot(path=path, full_page=True)
        meta = page.locator('meta[name="viewport"]').get_attribute("content") or ""
        if "width=device-width" not in meta:
            problems.append(f"{name}: no viewport meta tag, phones would show it zoomed out")
        try:
            check_no_horizontal_overflow(page, name)
        except AssertionError as exc:
            problems.append(str(exc))

    attachment = make_file(tmp_path, "scan.png", b"\x89PNG\r\n\x1a\n not really an image")
    walk_source_pages(page, servers.source_url, attachment, visit)
    context.close()

    screens = {name: round(h / viewport["height"], 2) for name, h in heights.items()}
    (artifacts / f"source-heights-{width}.json").write_text(
        json.dumps({"viewport": viewport, "pixels": heights, "screens": screens}, indent=2)
    )
    missing = [n for n in SOURCE_PAGES if not (artifacts / screenshot_name(n, width)).exists()]
    assert not missing, f"no screenshot of {missing}"
    assert not problems, "\n".join(problems)
    if viewport == PHONE:
        # The common path: the form before anything optional is opened or chosen.
        assert screens["report"] <= MAX_FORM_SCREENS, (
            f"the report form is {screens['report']} phone screens long "
            f"(at most {MAX_FORM_SCREENS}): {screens}"
        )


def test_the_overflow_check_catches_a_wide_element(browser: Browser) -> None:
    """The check itself: a 600 px box in a 390 px window is caught, a scrolling table is not."""
    context = browser.new_context(viewport=PHONE, java_script_enabled=False)
    page = context.new_page()
    page.set_content(
        '<!doctype html><body style="margin:0"><div style="overflow-x:auto">'
        '<table><tr><td style="min-width:900px">wide table</td></tr></table></div>'
        '<p style="position:absolute;left:-10000px">off-screen helper</p></body>'
    )
    check_no_horizontal_overflow(page, "fits")
    page.set_content('<!doctype html><body><pre style="width:600px">too wide</pre></body>')
    with pytest.raises(AssertionError, match="scrolls sideways"):
        check_no_horizontal_overflow(page, "too wide")
    context.close()
