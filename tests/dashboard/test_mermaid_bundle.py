"""The trimmed Mermaid bundle in a real browser: a flowchart like ours draws, and the browser never asks
for a chunk the package does not ship; a label that would be a KaTeX formula draws as its text (KaTeX is
not shipped: escape_label breaks up "$$").

The page loads the dashboard's own ``diagrams.mjs`` from the package's static directory, served as it is
on disk, and Mermaid's modules from the package's archive, as the dashboard serves them. Without Chromium
the test skips; with ``DWARF_REQUIRE_BROWSER=1`` (CI) it fails instead.
"""

from __future__ import annotations

import html
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from dwarf.dashboard.bundle import MERMAID
from dwarf.workflow.mermaid import escape_label

STATIC = Path(__file__).resolve().parents[2] / "src" / "dwarf" / "dashboard" / "static"
CHROMIUM = os.environ.get("DWARF_CHROMIUM", "/usr/bin/chromium")
REQUIRE_BROWSER = os.environ.get("DWARF_REQUIRE_BROWSER") == "1"
BROWSER_WAIT_MS = 15_000

# The shape history_mermaid draws: step classes, a retry, a child flow in a subgraph with a dotted arrow;
# one task name looks like a KaTeX formula, which unescaped would make Mermaid load its KaTeX chunk.
DIAGRAM = f"""flowchart TD
    classDef completed fill:#e8f5e9,stroke:#2e7d32
    classDef failed fill:#ffebee,stroke:#c62828
    s1["Submit<br/>completed"]:::completed
    s2["{escape_label("$$x^2$$")}<br/>attempt 1<br/>failed"]:::failed
    subgraph sg1 ["{escape_label("child <flow>")}"]
        s3["Inner<br/>completed"]:::completed
    end
    s1 --> s2
    s2 -.-> s3
"""
PAGE = f"""<!doctype html><html><body>
<pre class="mermaid">{html.escape(DIAGRAM)}</pre>
<script type="module" src="diagrams.mjs"></script>
</body></html>"""


class _StaticHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the package's static files, Mermaid's archived modules under /mermaid/, and the test page
    at /index.html."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript"}

    def do_GET(self) -> None:
        if self.path.startswith("/mermaid/"):
            archived = MERMAID.files().get(self.path.removeprefix("/mermaid/"))
            if archived is None:
                self.send_error(404)
                return
            body, media_type = archived.body, archived.media_type
        elif self.path == "/index.html":
            body, media_type = PAGE.encode(), "text/html; charset=utf-8"
        else:
            super().do_GET()
            return
        self.send_response(200)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def static_server() -> Iterator[str]:
    """The base URL of a loopback server of the static directory."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_StaticHandler, directory=str(STATIC)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def chromium() -> str:
    if shutil.which(CHROMIUM) is None:
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if REQUIRE_BROWSER:
            pytest.fail(f"DWARF_REQUIRE_BROWSER=1 but {message}")
        pytest.skip(message)
    return CHROMIUM


async def test_flowchart_with_a_formula_like_label_draws_from_the_shipped_chunks(
    static_server: str, chromium: str
) -> None:
    missing: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium)
        try:
            page = await browser.new_page()
            page.set_default_timeout(BROWSER_WAIT_MS)
            page.on(
                "response", lambda response: missing.append(response.url) if response.status >= 400 else None
            )
            await page.goto(f"{static_server}/index.html")
            diagram = page.locator("pre.mermaid svg")
            await expect(diagram).to_be_visible()
            await expect(diagram.locator("g.node")).to_have_count(3)
            await expect(diagram).to_contain_text("child <flow>")
            await expect(diagram).to_contain_text("$\u200b$x^2$\u200b$")
            await expect(diagram.locator(".katex")).to_have_count(0)
            await expect(page.locator("p.problem")).to_have_count(0)
        finally:
            await browser.close()
    assert [url for url in missing if url.endswith(".mjs")] == []
