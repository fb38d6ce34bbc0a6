"""The dashboard in a real browser (Debian's Chromium driven by Playwright), served by uvicorn over a
database that a separate worker engine runs the flows on.

Without Chromium these tests skip; with ``DWARF_REQUIRE_BROWSER=1`` (CI) they fail instead. Playwright
never downloads a browser here: it launches the system's ``/usr/bin/chromium``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from dwarf import Status
from tests.dashboard.conftest import Served, served_dashboard
from tests.dashboard.workflows import DOUBLING, EXPENSE
from tests.engine.graphs import WAIT

CHROMIUM = os.environ.get("DWARF_CHROMIUM", "/usr/bin/chromium")
REQUIRE_BROWSER = os.environ.get("DWARF_REQUIRE_BROWSER") == "1"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "dashboard-flow.png"
UPDATE_SCREENSHOT = os.environ.get("DWARF_UPDATE_SCREENSHOTS") == "1"
"""Set to refresh the documentation's screenshot (otherwise it is taken into the test's temp dir)."""
BROWSER_WAIT_MS = 15_000
"""Upper bound on any wait in the browser, long enough for the workers' poll and a page refresh."""

# One browser serves the whole module (starting Playwright and Chromium takes seconds), so the tests and
# their fixtures share the module's event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture
def backend() -> str:
    """Browser tests run on SQLite: the pages' queries are covered on both backends by test_pages."""
    return "sqlite"


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium executable; a skip (or, under DWARF_REQUIRE_BROWSER=1, a failure) without one."""
    if shutil.which(CHROMIUM) is None:
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if REQUIRE_BROWSER:
            pytest.fail(f"DWARF_REQUIRE_BROWSER=1 but {message}")
        pytest.skip(message)
    return CHROMIUM


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium)
        try:
            yield browser
        finally:
            await browser.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh page in a fresh context; console errors and page errors (CSP violations among them) fail
    the test."""
    problems: list[str] = []
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = await context.new_page()
        page.set_default_timeout(BROWSER_WAIT_MS)
        page.on("console", lambda message: _note_console_error(problems, message.type, message.text))
        page.on("pageerror", lambda error: problems.append(str(error)))
        yield page
    finally:
        await context.close()
    assert not problems, f"the browser reported errors: {problems}"


@pytest_asyncio.fixture(loop_scope="module")
async def served(fresh_dsn: str) -> AsyncIterator[Served]:
    """The live dashboard, its worker engine on the module's loop like the tests that drive it."""
    async with served_dashboard(fresh_dsn) as live:
        yield live


def _note_console_error(problems: list[str], kind: str, text: str) -> None:
    # An error page answered with its HTTP status is logged by Chromium as a failed load; the tests
    # assert those statuses themselves.
    if kind == "error" and not text.startswith("Failed to load resource: the server responded with"):
        problems.append(text)


async def _interrupted_expense(served: Served) -> str:
    key, outcome = await served.workers.run(EXPENSE, {"amount": 42.0}, timeout=WAIT)
    assert outcome.status == Status.INTERRUPTED, outcome.error
    return key


async def test_flow_page_draws_the_history_diagram(served: Served, page: Page, tmp_path: Path) -> None:
    key = await _interrupted_expense(served)
    await page.goto(f"{served.url}/flows/{key}")
    diagram = page.locator("#history-diagram svg")
    await expect(diagram).to_be_visible()
    await expect(diagram.locator("g.node")).to_have_count(2)  # Submit, Approve
    await expect(diagram).to_contain_text("Approve")
    shot = SCREENSHOT if UPDATE_SCREENSHOT else tmp_path / SCREENSHOT.name
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes().startswith(b"\x89PNG")


async def test_list_links_to_the_flow_page(served: Served, page: Page) -> None:
    key, _ = await served.workers.run(DOUBLING, timeout=WAIT)
    await page.goto(f"{served.url}/flows")
    await page.locator("a.flow-link").first.click()
    await expect(page.locator("#flow-key")).to_have_text(key)
    await expect(page.locator("#flow-status")).to_have_text("completed")


async def test_list_filters_from_the_form(served: Served, page: Page) -> None:
    await served.workers.run(DOUBLING, timeout=WAIT)
    waiting = await _interrupted_expense(served)
    await page.goto(f"{served.url}/flows")
    await expect(page.locator("a.flow-link")).to_have_count(2)
    await page.select_option("select[name=status]", "interrupted")
    await page.click("form.filters button")
    await expect(page.locator("a.flow-link")).to_have_count(1)
    await page.locator("a.flow-link").click()
    await expect(page.locator("#flow-key")).to_have_text(waiting)


async def test_resume_from_the_page_lets_the_workers_complete_the_flow(served: Served, page: Page) -> None:
    key = await _interrupted_expense(served)
    await page.goto(f"{served.url}/flows/{key}")
    await page.fill("#resume-form textarea", '{"approved": true, "by": "grace"}')
    await page.click("#resume-form button")
    await expect(page.locator(".notice")).to_contain_text("Resume recorded")
    # The page of a running flow reloads itself; the workers pick the resume up by polling.
    await expect(page.locator("#flow-status")).to_have_text("completed", timeout=BROWSER_WAIT_MS)
    await expect(page.locator("#flow-state")).to_contain_text('"approver": "grace"')
    assert (await served.workers.snapshot(key)).state["paid"] is True


async def test_cancel_from_the_page_shows_the_reason(served: Served, page: Page) -> None:
    key = await _interrupted_expense(served)
    await page.goto(f"{served.url}/flows/{key}")
    await page.fill("#cancel-form input[name=reason]", "duplicate claim")
    await page.click("#cancel-form button")
    await expect(page.locator("#flow-status")).to_have_text("cancelled")
    await expect(page.locator("#cancel-reason")).to_have_text("duplicate claim")
    assert (await served.workers.snapshot(key)).status == Status.CANCELLED


async def test_bad_json_payload_shows_an_error_and_keeps_the_input(served: Served, page: Page) -> None:
    key = await _interrupted_expense(served)
    await page.goto(f"{served.url}/flows/{key}")
    await page.fill("#resume-form textarea", "{approved: yes}")
    async with page.expect_response(lambda response: response.request.method == "POST") as posted:
        await page.click("#resume-form button")
    assert (await posted.value).status == 400
    await expect(page.locator("#error")).to_contain_text("not valid JSON")
    await expect(page.locator("#resume-form textarea")).to_have_value("{approved: yes}")
    await expect(page.locator("#flow-status")).to_have_text("interrupted")
