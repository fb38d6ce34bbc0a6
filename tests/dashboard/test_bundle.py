"""The archive server of dashboard/bundle.py on its own: one decompression under concurrent first
requests, and a clear error, on its route only, from a Python built without ``lzma``."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from dwarf.dashboard.bundle import MERMAID_ARCHIVE, ArchiveFiles, pack


def _app(files: ArchiveFiles) -> Starlette:
    return Starlette(
        routes=[
            Route("/static/mermaid/{path:path}", files.serve),
            Route("/other", lambda request: PlainTextResponse("fine")),
        ]
    )


def test_concurrent_first_reads_decompress_once(monkeypatch: pytest.MonkeyPatch) -> None:
    files = ArchiveFiles(MERMAID_ARCHIVE)
    reads: list[int] = []
    read = files._read

    def counted() -> dict[str, object]:
        reads.append(1)
        return read()  # type: ignore[return-value]

    monkeypatch.setattr(files, "_read", counted)
    barrier = threading.Barrier(8)
    seen: list[object] = []

    def first_request() -> None:
        barrier.wait()
        seen.append(files.files())

    threads = [threading.Thread(target=first_request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(reads) == 1
    assert len({id(result) for result in seen}) == 1
    assert "mermaid.esm.min.mjs" in files.files()


async def test_without_lzma_the_route_says_why_and_the_rest_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lzma", None)  # what `import lzma` meets in a Python built without it
    transport = httpx.ASGITransport(app=_app(ArchiveFiles(MERMAID_ARCHIVE)))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        diagram = await client.get("/static/mermaid/mermaid.esm.min.mjs")
        other = await client.get("/other")
    assert diagram.status_code == 500
    assert "needs Python's lzma module" in diagram.text
    assert (other.status_code, other.text) == (200, "fine")


async def test_serves_members_with_their_types_and_skips_unsafe_names(tmp_path: Path) -> None:
    (tmp_path / "dist" / "sub").mkdir(parents=True)
    (tmp_path / "dist" / "a.mjs").write_text("export default 1;")
    (tmp_path / "dist" / "sub" / "b.css").write_text("p{}")
    (tmp_path / "dist" / "LICENSE").write_text("MIT")
    pack(tmp_path / "dist", tmp_path / "bundle.tar.xz")
    transport = httpx.ASGITransport(app=_app(ArchiveFiles(tmp_path / "bundle.tar.xz")))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answers = {
            name: await client.get(f"/static/mermaid/{name}")
            for name in ("a.mjs", "sub/b.css", "LICENSE", "sub")
        }
    assert answers["a.mjs"].headers["content-type"] == "text/javascript; charset=utf-8"
    assert answers["a.mjs"].text == "export default 1;"
    assert answers["sub/b.css"].headers["content-type"] == "text/css; charset=utf-8"
    assert answers["LICENSE"].headers["content-type"] == "text/plain; charset=utf-8"
    assert answers["sub"].status_code == 404  # no directory entries
