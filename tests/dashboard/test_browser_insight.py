"""The at-a-glance views in a real browser (Debian's Chromium driven by Playwright): a 5,000-branch flow's
page kept small (its render time is printed, not asserted) with its fan-out as one box that opens on a
click, pan and zoom on the diagram, the timeline, and the list's overview.

Run with ``DWARF_UPDATE_SCREENSHOTS=1`` to refresh the documentation's screenshots (docs/images/); without
it they are taken into the test's temp dir. Without Chromium these tests skip; with
``DWARF_REQUIRE_BROWSER=1`` (CI) they fail instead.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from dwarf import Status, WaitReason
from tests.dashboard.conftest import Served
from tests.dashboard.test_browser import (  # the browser fixtures, shared with the other browser tests
    UPDATE_SCREENSHOT,
    backend,
    browser,
    chromium,
    page,
    served,
)
from tests.dashboard.workflows import DOUBLING, EXPENSE, FAILING, RETRY_EVERY, THUMBNAILS
from tests.engine.graphs import WAIT

__all__ = ["backend", "browser", "chromium", "page", "served"]

pytestmark = pytest.mark.asyncio(loop_scope="module")

IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
BRANCHES = 5000
PAGE_BYTES_LIMIT = 100_000
"""The 5,000-branch page's HTML stays under this (measured 19 KB): no wall of rows or nodes."""
SCREENSHOT_LIMIT = 200_000
"""Bytes a documentation screenshot may take."""


def _shot(name: str, tmp_path: Path) -> Path:
    return IMAGES / name if UPDATE_SCREENSHOT else tmp_path / name


async def _big_fan_out(served: Served) -> str:
    """A running flow of BRANCHES branches, all but a few done: every RETRY_EVERY-th backs off an hour."""
    key = await served.workers.create(THUMBNAILS, {"n": BRANCHES})
    deadline = time.monotonic() + 120
    while True:
        waits = await served.workers.why(key)
        if [(w.reason, w.steps) for w in waits] == [(WaitReason.RETRYING, BRANCHES // RETRY_EVERY)]:
            return key
        assert time.monotonic() < deadline, waits
        await asyncio.sleep(0.1)


async def _timings(page: Page) -> dict[str, float]:
    """Navigation timing of the page, and when the diagram was ready (ms since the navigation began)."""
    timings: dict[str, float] = await page.evaluate(
        """() => {
            const nav = performance.getEntriesByType("navigation")[0];
            const diagram = document.querySelector("#history-diagram");
            return {
                response: nav.responseEnd,
                dom: nav.domContentLoadedEventEnd,
                html_bytes: nav.encodedBodySize,
                mermaid: Number(diagram.dataset.renderMs),
                ready: Number(diagram.dataset.readyAt),
            };
        }"""
    )
    return timings


async def test_a_5000_branch_flow_page_stays_small_and_draws_grouped(
    served: Served, page: Page, tmp_path: Path
) -> None:
    key = await _big_fan_out(served)
    url = f"{served.url}/flows/{key}"
    await page.goto(url)  # once to warm up: the browser's module cache, the server's first queries
    await expect(page.locator("#history-diagram[data-ready]")).to_be_attached()
    runs = []
    for _ in range(3):
        await page.goto(url)
        await expect(page.locator("#history-diagram[data-ready]")).to_be_attached()
        runs.append(await _timings(page))
    ready = sorted(run["ready"] for run in runs)
    # The render time is reported, not asserted: speed is measured by benchmarks, never by a timed test
    # (about 0.6-0.7 s on the 2-core machine when quiet). What keeps it fast is asserted: a small page.
    print(f"\n5,000-branch flow page, ms from navigation start (3 loads): {runs}; median ready {ready[1]}")
    assert all(run["html_bytes"] < PAGE_BYTES_LIMIT for run in runs), runs

    # One box per fan-out task, and no wall of rows: the table lists the 5 branches still to run.
    diagram = page.locator("#history-diagram svg")
    await expect(diagram.locator("g.node")).to_have_count(3)  # Split, Resize ×5,000, Upload ×4,995
    await expect(diagram).to_contain_text("Resize ×5,000")
    await expect(diagram).to_contain_text("4,995 completed, 5 pending")
    assert await page.locator("table.steps tr.step").count() == 1 + BRANCHES // RETRY_EVERY
    await expect(page.locator("#waits")).to_contain_text("Resize (5 steps) waiting for a retry at")
    shot = _shot("dashboard-fanout.png", tmp_path)
    await page.set_viewport_size({"width": 1280, "height": 1960})  # down to the steps table's groups
    await page.screenshot(path=str(shot))
    await page.set_viewport_size({"width": 1280, "height": 900})
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size < SCREENSHOT_LIMIT

    # A click on the group's box opens it: every branch is listed (up to the table's limit).
    opens = await page.locator("a.group-link", has_text="Resize").get_attribute("href")
    assert opens and "?expand=" in opens
    await diagram.locator("g.node.group-node", has_text="Resize").click()
    await expect(page).to_have_url(served.url + opens)
    await expect(page.locator("table.steps tr.step")).to_have_count(500)
    await expect(page.locator(".group-toggle").first).to_have_text("Close")

    await page.goto(url)
    await page.locator("#timeline-link").click()
    await expect(page.locator("#timeline .gantt-row")).to_have_count(2 + BRANCHES // RETRY_EVERY + 1)
    await expect(page.locator("#timeline")).to_contain_text("Resize ×5,000: 4,995 completed, 5 pending")
    shot = _shot("dashboard-timeline.png", tmp_path)
    await page.locator("main").screenshot(path=str(shot))
    assert shot.stat().st_size < SCREENSHOT_LIMIT


async def test_pan_and_zoom_move_the_diagram(served: Served, page: Page) -> None:
    key, outcome = await served.workers.run(EXPENSE, {"amount": 5.0}, timeout=WAIT)
    assert outcome.status == Status.INTERRUPTED
    await page.goto(f"{served.url}/flows/{key}")
    diagram = page.locator("#history-diagram")
    await expect(diagram).to_have_attribute("data-ready", "1")
    svg = diagram.locator("svg")
    home = await svg.get_attribute("viewBox")
    await diagram.locator("button[data-zoom=in]").click()
    await expect(diagram).to_have_attribute("data-scale", "1.250")
    await diagram.locator("button[data-zoom=in]").click()
    await expect(diagram).to_have_attribute("data-scale", "1.563")
    zoomed = await svg.get_attribute("viewBox")
    await diagram.scroll_into_view_if_needed()
    box = await diagram.bounding_box()
    assert box is not None
    await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    await page.mouse.down()
    await page.mouse.move(box["x"] + box["width"] / 2 + 80, box["y"] + box["height"] / 2 + 40, steps=5)
    await page.mouse.up()
    panned = await svg.get_attribute("viewBox")
    assert panned != zoomed and zoomed != home
    await page.mouse.wheel(0, 300)  # the wheel zooms out around the cursor
    await expect(diagram).to_have_attribute("data-scale", "1.250")
    await diagram.locator("button[data-zoom=reset]").click()
    await expect(diagram).to_have_attribute("data-scale", "1.000")
    assert await svg.get_attribute("viewBox") == home


async def test_the_list_overview_counts_and_charts(served: Served, page: Page) -> None:
    await served.workers.run(DOUBLING, timeout=WAIT)
    await served.workers.run(FAILING, timeout=WAIT)
    await page.goto(f"{served.url}/flows")
    await expect(page.locator("#count-completed")).to_contain_text("1")
    await expect(page.locator("#count-failed")).to_contain_text("1")
    chart = page.locator("#activity-chart")
    await expect(chart).to_be_visible()
    await expect(chart.locator("rect.bar-started")).to_have_count(1)
    await page.locator("#count-failed").click()
    await expect(page.locator("a.flow-link")).to_have_count(1)
    await expect(page.locator("td.workflow")).to_have_text("failing")
